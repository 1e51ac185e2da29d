"""A dry run on real parts: a real Prometheus firing a leak and a full disk, a real
Alertmanager configured, the gateway simulator on a socket, and a model (faked on a
socket) that asks for the logs first. Two `sweep --dry-run` runs and a DRY_RUN=true
daemon for 30 s send nothing to the gateway and post nothing to Alertmanager, and say
what they would have sent and posted."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.demo.gateway_sim import GatewaySimulator
from agent.local import LocalAlertmanager, LocalPrometheus, MetricsTarget, free_port
from agent.store import open_store
from agent.store.base import Breaker, StateCopy
from tests.conftest import run_cli
from tests.integration.daemon_support import DaemonProcess, agent_env, write_config
from tests.llm_fakes import FakeModel, answer_reading_logs_first

pytestmark = pytest.mark.integration

RULES = """
groups:
- name: dry-run
  rules:
  - alert: ServiceMemoryLeak
    expr: e2e_memory_bytes > 1000
    for: 1s
    labels: {severity: critical}
  - alert: DiskFull
    expr: e2e_disk_free_ratio < 0.05
    for: 1s
    labels: {severity: critical}
"""
DAEMON_SECONDS = 30.0


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[LocalPrometheus, LocalAlertmanager]]:
    """A real Prometheus seeing a leak and a full disk, and a real Alertmanager."""
    target = MetricsTarget().start()
    target.set("e2e_memory_bytes", 5000, service="market-predictor")
    target.set("e2e_disk_free_ratio", 0.01, service="coding-ai-agent")
    prometheus = LocalPrometheus(
        tmp_path / "prom", targets={"services": target.address}, rules=RULES
    ).start()
    alertmanager = LocalAlertmanager(tmp_path / "am", free_port()).start()
    try:
        yield prometheus, alertmanager
    finally:
        alertmanager.stop()
        prometheus.stop()
        target.stop()


def _posted(alertmanager: LocalAlertmanager) -> tuple[list[Any], float]:
    """Alertmanager's alerts now, and how many it ever received (its own counter)."""
    with urllib.request.urlopen(f"{alertmanager.url}/api/v2/alerts", timeout=5) as response:
        alerts = json.load(response)
    with urllib.request.urlopen(f"{alertmanager.url}/metrics", timeout=5) as response:
        text = response.read().decode()
    received = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("alertmanager_alerts_received_total")
    )
    return alerts, received


def _dump(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return list(db.iterdump())


def _both_decided(env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """`sweep --dry-run --json` until both problems fire and are decided (scrapes and the
    rules' `for` take a moment); the last report."""
    deadline = time.monotonic() + 60
    report: dict[str, Any] = {}
    while time.monotonic() < deadline:
        result = run_cli("sweep", "--dry-run", "--json", env=env, cwd=cwd)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        if len(report["decisions"]) == 2:
            return report
        time.sleep(0.5)
    pytest.fail(f"the leak and the full disk were never both decided: {report}")


def test_a_dry_run_sends_nothing_and_pages_nobody(
    tmp_path: Path, parts: tuple[LocalPrometheus, LocalAlertmanager]
) -> None:
    """0 gateway requests and 0 alerts posted by two `sweep --dry-run` runs and a
    DRY_RUN=true daemon for 30 s; each report names the restart and the log reads it
    would have sent and the escalation it would have posted; the real store is as it was."""
    prometheus, alertmanager = parts
    gateway = GatewaySimulator().start()
    model = FakeModel(responder=answer_reading_logs_first)
    config = write_config(tmp_path / "agent.toml")
    env = agent_env(
        tmp_path,
        config,
        prometheus.url,
        gateway.url,
        ALERTMANAGER_URL=alertmanager.url,
        OPENAI_BASE_URL=model.base_url,
    )
    store_path = tmp_path / "state" / "agent.db"
    store = open_store(f"sqlite:///{store_path}")
    store.import_state(StateCopy([], [], [Breaker("devops-ai-agent", 1, False, datetime.now(UTC))]))
    store.close()
    before = _dump(store_path)
    try:
        first = _both_decided(env, tmp_path)
        second = run_cli("sweep", "--dry-run", env=env, cwd=tmp_path)
        assert second.returncode == 0, second.stderr
        after_sweeps = _dump(store_path)

        daemon = DaemonProcess({**env, "DRY_RUN": "true"}, tmp_path)
        started = time.monotonic()
        try:
            daemon.wait_for("would_escalate", timeout=DAEMON_SECONDS)
            daemon.wait_for("would_send", where=lambda e: e["action"] == "restart")
            time.sleep(max(0.0, DAEMON_SECONDS - (time.monotonic() - started)))
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(30) == 0
            events = daemon.events()
        finally:
            daemon.close()
        executions = gateway.executions()
        alerts, received = _posted(alertmanager)
    finally:
        gateway.stop()
        model.stop()

    assert executions == []
    assert alerts == [] and received == 0
    assert after_sweeps == before
    sent = sorted((w["action"], w["target"]) for w in first["would_send"])
    assert sent == [
        ("collect_logs", "coding-ai-agent"),
        ("collect_logs", "market-predictor"),
        ("restart", "market-predictor"),
    ]
    assert [(w["alert"], w["service"]) for w in first["would_escalate"]] == [
        ("DevopsAgentEscalation", "coding-ai-agent")
    ]
    text = second.stdout
    assert "would send restart ('restart the service') for market-predictor" in text
    assert "would post DevopsAgentEscalation for coding-ai-agent" in text
    assert text.count("would send collect_logs") == 2
    names = [e["event"] for e in events]
    assert "escalation_delivery_failed" not in names and "incident_failed" not in names
    assert {e["target"] for e in events if e["event"] == "would_send"} == {
        "market-predictor",
        "coding-ai-agent",
    }
