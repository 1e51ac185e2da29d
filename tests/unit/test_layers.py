"""The layering contract: pure logic imports no I/O and touches no process-wide state,
clients import no higher layer.

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
    "guardrails/autonomy.py",
    "guardrails/asks.py",
    "diagnosis/models.py",
    "diagnosis/safety.py",
    "diagnosis/runbook.py",
    "diagnosis/prefilter.py",
    "diagnosis/prompts.py",
    "gateway/request.py",
    "gateway/response.py",
    "incidents/model.py",
    "incidents/lifecycle.py",
    "text.py",
    "eval/case.py",
    "eval/history.py",
    "eval/scoring.py",
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
    "agent.dispatch",
    "agent.runtime",
    "psycopg",
)
#: Modules whose use changes the whole process: the collector, signal handlers.
PROCESS_WIDE = ("gc", "signal")
#: Calls that change the environment of the whole process.
ENV_WRITES = {"putenv", "unsetenv", "update", "pop", "setdefault", "clear", "popitem"}
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


def _env_writes(path: Path) -> list[int]:
    """Lines that assign to, delete from or call a mutating method of ``os.environ``."""
    tree = ast.parse(path.read_text(), filename=str(path))

    def is_environ(node: ast.AST) -> bool:
        return ast.unparse(node) in ("os.environ", "environ")

    lines = []
    for node in ast.walk(tree):
        targets: list[ast.AST] = []
        if isinstance(node, ast.Assign | ast.AugAssign):
            targets = list(node.targets) if isinstance(node, ast.Assign) else [node.target]
        elif isinstance(node, ast.Delete):
            targets = list(node.targets)
        if any(isinstance(t, ast.Subscript) and is_environ(t.value) for t in targets):
            lines.append(node.lineno)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            func = node.func
            if func.attr in ENV_WRITES and (
                is_environ(func.value) or ast.unparse(func) in ("os.putenv", "os.unsetenv")
            ):
                lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_touch_no_process_wide_state(module: str) -> None:
    """Pure modules neither import gc or signal nor write os.environ."""
    path = AGENT / module
    bad = {n for n in _imports(path) if n.split(".")[0] in PROCESS_WIDE}
    assert bad == set(), f"{module} imports {bad}"
    assert _env_writes(path) == [], f"{module} writes os.environ"


def test_the_side_effect_check_can_fail(tmp_path: Path) -> None:
    """The environment-write detector finds each form of write it claims to find."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\nos.environ['A'] = '1'\ndel os.environ['A']\nos.environ.update(B='2')\n"
        "os.putenv('C', '3')\nx = os.environ.get('D')\n"
    )
    assert _env_writes(sample) == [2, 3, 4, 5]


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


def test_the_daemon_never_imports_local_parts() -> None:
    """Local servers (a throwaway Prometheus, the local model) are for the demo, eval and
    tests: nothing on the daemon's path imports them."""
    daemon_path = [
        AGENT / "runtime.py",
        *(
            path
            for part in (
                "daemon",
                "dispatch",
                "clients",
                "diagnosis",
                "guardrails",
                "sweep",
                "store",
            )
            for path in (AGENT / part).glob("*.py")
        ),
    ]
    for path in daemon_path:
        assert not {n for n in _imports(path) if _under(n, ("agent.local",))}, path


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("dispatch", ("agent.daemon", "agent.cli")),
        (
            "store",
            ("agent.daemon", "agent.dispatch", "agent.runtime", "agent.clients", "agent.cli"),
        ),
        ("incidents", ("agent.daemon", "agent.dispatch", "agent.runtime", "agent.store")),
    ],
)
def test_lower_layers_do_not_reach_up(package: str, forbidden: tuple[str, ...]) -> None:
    """dispatch never imports the daemon; the store and the lifecycle import neither."""
    for path in sorted((AGENT / package).glob("*.py")):
        bad = {n for n in _imports(path) if _under(n, forbidden)}
        assert bad == set(), f"{path.name} imports {bad}"


def _under(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_runtime_wires_without_reaching_up() -> None:
    """The runtime builds the clients and the store; it knows nothing of the cycle."""
    bad = {
        n
        for n in _imports(AGENT / "runtime.py")
        if _under(n, ("agent.daemon", "agent.dispatch", "agent.cli"))
    }
    assert bad == set()


def test_readme_architecture_names_every_module() -> None:
    """Each package and module under agent/ appears in the README's architecture section."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    missing = []
    for path in sorted(AGENT.rglob("*.py")):
        rel = path.relative_to(AGENT)
        if rel.name in ("__init__.py", "__main__.py") or "demo" in rel.parts:
            continue
        if rel.parent.parts and f"{rel.parent.parts[0]}/" not in section:
            missing.append(f"{rel.parent.parts[0]}/")
        if rel.stem not in section:
            missing.append(str(rel))
    assert missing == [], f"README architecture does not mention {sorted(set(missing))}"
