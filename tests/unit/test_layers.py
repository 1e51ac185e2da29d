"""The layering contract: pure logic imports no I/O, clients import no higher layer.

A small stand-in for an import-linter contract, read from the source with ``ast``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

AGENT = REPO / "agent"

#: Modules that must stay pure: no network library, no client, no store, no daemon.
PURE = [
    "config.py",
    "errors.py",
    "sweep/findings.py",
    "sweep/alerts.py",
    "sweep/checks.py",
    "guardrails/policy.py",
    "diagnosis/models.py",
    "diagnosis/safety.py",
    "diagnosis/runbook.py",
    "diagnosis/prefilter.py",
    "diagnosis/prompts.py",
    "dispatch/intent.py",
    "dispatch/response.py",
]
IO_MODULES = (
    "httpx",
    "requests",
    "openai",
    "prometheus_api_client",
    "sqlite3",
    "agent.clients",
    "agent.store",
    "agent.daemon",
)
#: Clients do I/O and nothing else: they never reach up into the decision layers.
HIGHER = (
    "agent.sweep.collector",
    "agent.diagnosis",
    "agent.guardrails",
    "agent.daemon",
    "agent.store",
    "agent.demo",
)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_do_no_io(module: str) -> None:
    """Pure modules import no network library, client, store or daemon module."""
    bad = {n for n in _imports(AGENT / module) if n.startswith(IO_MODULES)}
    assert bad == set(), f"{module} imports {bad}"


@pytest.mark.parametrize("path", sorted((AGENT / "clients").glob("*.py")), ids=lambda p: p.name)
def test_clients_import_no_higher_layer(path: Path) -> None:
    """Clients depend on config, errors, logs, metrics and pure models only."""
    bad = {n for n in _imports(path) if n.startswith(HIGHER)}
    assert bad == set(), f"{path.name} imports {bad}"


def test_runtime_never_imports_the_demo() -> None:
    """The demo's helpers never leak into the agent's own runtime path."""
    for path in AGENT.rglob("*.py"):
        if "demo" in path.parts:
            continue
        assert not {n for n in _imports(path) if n.startswith("agent.demo")}, path
