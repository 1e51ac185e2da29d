"""devops-agent: a self-healing agent for services that run as Docker containers.

It sweeps Prometheus for trouble, diagnoses each finding with an LLM (or a runbook when
no model is reachable), and asks the AI Command Gateway to act, behind guardrails.
"""

__version__ = "0.1.0"
