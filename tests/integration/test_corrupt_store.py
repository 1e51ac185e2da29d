"""One corrupt row in the store: listing, JSON and the next sweep still work, and that
incident is reported as unreadable and quarantined."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from agent.local import LocalPrometheus, MetricsTarget
from tests.conftest import run_cli
from tests.integration.daemon_support import agent_env, write_config

pytestmark = pytest.mark.integration


def _incidents(env: dict[str, str], cwd: Path) -> list[dict[str, object]]:
    listed = run_cli("incidents", "--json", env=env, cwd=cwd)
    assert listed.returncode == 0, listed.stderr
    rows: list[dict[str, object]] = json.loads(listed.stdout)
    return rows


def test_a_corrupt_incident_is_reported_and_quarantined(
    tmp_path: Path, services_target: MetricsTarget, e2e_prometheus: LocalPrometheus
) -> None:
    """`incidents`, `incidents --json`, `incidents show` and `sweep` keep working; the corrupt
    incident is shown as unreadable and its still-firing problem gets a new incident."""
    services_target.set("e2e_memory_bytes", 5000, service="outside-scope")
    config = write_config(tmp_path / "agent.toml", diagnosis={"use_llm": False})
    env = agent_env(tmp_path, config, e2e_prometheus.url, "http://127.0.0.1:9")
    deadline = time.monotonic() + 45
    # the first sweep makes the store; `incidents` only reads one
    assert run_cli("sweep", "--json", env=env, cwd=tmp_path).returncode == 0
    while not _incidents(env, tmp_path) and time.monotonic() < deadline:
        assert run_cli("sweep", "--json", env=env, cwd=tmp_path).returncode == 0
        time.sleep(0.5)
    [row] = _incidents(env, tmp_path)
    db = sqlite3.connect(tmp_path / "state" / "agent.db")
    db.execute("UPDATE incidents SET finding_json = '{broken' WHERE id = ?", [row["id"]])
    db.commit()
    db.close()

    listed = run_cli("incidents", env=env, cwd=tmp_path)
    assert listed.returncode == 0 and f"incident {row['id']} cannot be read" in listed.stdout
    [unreadable] = _incidents(env, tmp_path)
    assert unreadable["state"] == "unreadable" and "JSONDecodeError" in str(unreadable["error"])
    shown = run_cli("incidents", "show", str(row["id"]), env=env, cwd=tmp_path)
    assert shown.returncode == 1 and "cannot be read" in shown.stderr
    assert "Traceback" not in shown.stderr + listed.stderr

    swept = run_cli("sweep", "--json", env=env, cwd=tmp_path)
    assert swept.returncode == 0, swept.stderr
    logged = [json.loads(line) for line in swept.stderr.splitlines() if line.startswith("{")]
    assert [e["incident_id"] for e in logged if e["event"] == "incident_unreadable"] == [row["id"]]
    states = {str(r["id"]): r["state"] for r in _incidents(env, tmp_path)}
    assert states.pop(str(row["id"])) == "unreadable"
    assert list(states.values()) == ["skipped"], "the problem, still firing, has a new incident"
    again = run_cli("sweep", "--json", env=env, cwd=tmp_path)
    assert '"incident_unreadable"' not in again.stderr, "a quarantined row is reported once"
