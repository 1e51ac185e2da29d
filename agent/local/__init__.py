"""Local parts for the demo, `devops-agent eval`, `devops-agent local-model` and the tests:
real servers on loopback ports, each started as a child process and stopped on the way
out. The daemon never imports this package: in production its peers are the operator's.

- ``servers``: free ports, Debian binaries, waiting until a server answers, stopping;
- ``prometheus``, ``alertmanager``: Prometheus and Alertmanager from Debian's packages;
- ``target``: a scrape target whose samples the caller sets;
- ``model``: llama-cpp-python's OpenAI-compatible server with a small GGUF model.
"""

from agent.local.alertmanager import LocalAlertmanager
from agent.local.model import LocalModel, MissingModel, shipped_model
from agent.local.prometheus import LocalPrometheus
from agent.local.servers import (
    LocalServer,
    MissingBinary,
    PortTaken,
    ensure_free,
    find_binary,
    free_port,
    running,
    wait_http,
)
from agent.local.target import MetricsTarget

__all__ = [
    "LocalAlertmanager",
    "LocalModel",
    "LocalPrometheus",
    "LocalServer",
    "MetricsTarget",
    "MissingBinary",
    "MissingModel",
    "PortTaken",
    "ensure_free",
    "find_binary",
    "free_port",
    "running",
    "shipped_model",
    "wait_http",
]
