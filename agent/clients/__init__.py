"""Clients of the upstreams: I/O only, every library exception wrapped into agent.errors."""
