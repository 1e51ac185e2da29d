"""Local stand-ins for a real deployment: Prometheus, Alertmanager, a leaking service and a
gateway simulator, all on loopback. Used by ``make demo`` and by the integration tests;
never imported by the agent's own runtime path.
"""
