"""The layering contract: pure logic imports no I/O and touches no process-wide state,
clients import no higher layer.

A small stand-in for an import-linter contract, read from the source with ``ast``.
"""

from __future__ import annotations

import ast
import re
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
    "guardrails/ladder.py",
    "ledger/record.py",
    "ledger/report.py",
    "console/charts.py",
    "guardrails/asks.py",
    "diagnosis/models.py",
    "diagnosis/safety.py",
    "diagnosis/runbook.py",
    "diagnosis/prefilter.py",
    "diagnosis/prompts.py",
    "diagnosis/evidence.py",
    "promql.py",
    "gateway/request.py",
    "gateway/response.py",
    "incidents/model.py",
    "incidents/lifecycle.py",
    "text.py",
    "eval/case.py",
    "eval/history.py",
    "eval/scoring.py",
    "mcp/args.py",
    "mcp/catalogue.py",
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


def _architecture_entries() -> dict[str, str]:
    """The README architecture's entries under ``agent/``: each top-level module
    (``text.py``) or package (``daemon/``) with the text that describes it."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    block = section.split("\nagent/\n", 1)[1].split("\nconfig/", 1)[0]
    entries: dict[str, str] = {}
    name = ""
    for line in block.splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            name, _, text = line.strip().partition(" ")
            entries[name] = text
        elif name:
            entries[name] += " " + line.strip()
    return entries


def test_readme_architecture_names_every_module() -> None:
    """Each module under agent/ is in the README's architecture by its path: a top-level
    module as its own entry, a package's module named (``work.py``) in its package's
    entry; and every module the section names exists."""
    entries = _architecture_entries()
    missing, named = [], set()
    for path in sorted(AGENT.rglob("*.py")):
        rel = path.relative_to(AGENT)
        if rel.name in ("__init__.py", "__main__.py") or "demo" in rel.parts:
            continue
        if len(rel.parts) == 1:
            if rel.name not in entries:
                missing.append(str(rel))
            continue
        package = f"{rel.parts[0]}/"
        if not re.search(rf"(?<![\w/.]){re.escape(rel.name)}", entries.get(package, "")):
            missing.append(str(rel))
    for entry, text in entries.items():
        if entry.endswith(".py"):
            named.add(entry)
        elif entry.endswith("/") and entry != "demo/":
            named |= {f"{entry}{m}" for m in re.findall(r"(?<![\w/.])([a-z_]+\.py)", text)}
    stale = sorted(n for n in named if not (AGENT / n).is_file())
    assert missing == [], f"README architecture does not name {missing}"
    assert stale == [], f"README architecture names modules that do not exist: {stale}"


#: The surfaces that answer approvals: they parse, authorise and render.
ANSWERING = [
    "cli/main.py",
    "daemon/api.py",
    "console/app.py",
    *sorted(str(p.relative_to(AGENT)) for p in (AGENT / "mcp").glob("*.py")),
]
#: What turns an answer into a step and commits it: agent/approvals.py's business only.
STEP_MAKERS = ("agent.daemon.steps", "agent.daemon.effects", "agent.dispatch")
STORE_WRITES = frozenset({"apply", "insert", "decide_under_lock", "note"})


def _step_uses(path: Path) -> set[str]:
    """Step-making modules and step constructors imported, and store writes called."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if _under(node.module, STEP_MAKERS):
                found.add(node.module)
            if node.module == "agent.incidents.lifecycle":
                found |= {a.name for a in node.names if a.name.startswith("on_")}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if _under(a.name, STEP_MAKERS)}
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in STORE_WRITES:
                found.add(f".{node.func.attr}()")
    return found


@pytest.mark.parametrize("module", ANSWERING)
def test_surfaces_answer_through_the_one_approval_path(module: str) -> None:
    """The CLI, the approval API, the console and the MCP server make no lifecycle step
    and write no incident themselves: answers go through agent/approvals.py."""
    assert _step_uses(AGENT / module) == set(), module


def test_the_approval_path_check_can_fail(tmp_path: Path) -> None:
    """The detector finds a step constructor, a step-making module and a store write."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from agent.incidents.lifecycle import Answer, on_approval_denied\n"
        "from agent.daemon.steps import commit\n"
        "store.apply(step)\nstore.get('x')\n"
    )
    assert _step_uses(sample) == {"on_approval_denied", "agent.daemon.steps", ".apply()"}


def test_every_surface_imports_the_approval_path_from_its_own_room() -> None:
    """Those that answer import agent.approvals; the daemon keeps no approvals module."""
    for module in ("cli/main.py", "daemon/api.py", "console/app.py", "mcp/tools.py"):
        assert "agent.approvals" in _imports(AGENT / module), module
    assert not (AGENT / "daemon" / "approvals.py").exists()
