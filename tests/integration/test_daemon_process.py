"""`devops-agent run` as a real process: restarts, outages, signals and systemd notify."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agent.demo.gateway_sim import GatewaySimulator
from agent.local import LocalPrometheus, MetricsTarget
from tests.conftest import run_cli
from tests.integration.daemon_support import (
    DaemonProcess,
    NotifySocket,
    agent_env,
    write_config,
)
from tests.llm_fakes import FakeModel

pytestmark = pytest.mark.integration


@pytest.fixture
def target(services_target: MetricsTarget) -> MetricsTarget:
    """A scrape target with a leaking service that nobody fixes."""
    services_target.set("e2e_memory_bytes", 5000, service="market-predictor")
    return services_target


@pytest.fixture
def prom(target: MetricsTarget, e2e_prometheus: LocalPrometheus) -> LocalPrometheus:
    """A real Prometheus with the e2e rules, seeing the leak."""
    return e2e_prometheus


@pytest.fixture
def gateway() -> Iterator[GatewaySimulator]:
    """A gateway simulator whose restarts change nothing."""
    sim = GatewaySimulator().start()
    yield sim
    sim.stop()


def _runbook_env(
    tmp_path: Path, prom: LocalPrometheus, gateway: GatewaySimulator, **extra: str
) -> dict[str, str]:
    config = write_config(
        tmp_path / "agent.toml", diagnosis={"use_llm": False}, schedule={"verify_after_seconds": 60}
    )
    return agent_env(tmp_path, config, prom.url, gateway.url, **extra)


def test_no_second_request_after_sigkill_and_restart(
    tmp_path: Path, prom: LocalPrometheus, gateway: GatewaySimulator
) -> None:
    """Killed right after dispatch and restarted while the alert fires: no second request."""
    env = _runbook_env(tmp_path, prom, gateway)
    first = DaemonProcess(env, tmp_path, "first")
    try:
        first.wait_for("remediation_dispatched", timeout=45)
        deadline = time.monotonic() + 10
        while not gateway.executions() and time.monotonic() < deadline:
            time.sleep(0.01)
        first.proc.kill()  # right after the gateway received the intent
        first.wait(10)
    finally:
        first.close()
    assert len(gateway.executions()) == 1
    second = DaemonProcess(env, tmp_path, "second")
    try:
        second.wait_for("sweep_finished", where=lambda e: e["findings"] == 1, count=4, timeout=45)
        events = {e["event"] for e in second.events()}
    finally:
        second.close()
    assert len(gateway.executions()) == 1
    assert "remediation_dispatched" not in events


def test_prometheus_outage_is_survived(
    tmp_path: Path, prom: LocalPrometheus, gateway: GatewaySimulator
) -> None:
    """Prometheus stops mid-run: sweeps fail and are logged, the daemon lives and recovers."""
    daemon = DaemonProcess(_runbook_env(tmp_path, prom, gateway), tmp_path)
    try:
        daemon.wait_for("sweep_finished", where=lambda e: not e["failed_sources"], timeout=30)
        prom.stop()
        daemon.wait_for("sweep_source_failed", count=2, timeout=30)
        failed = daemon.wait_for(
            "sweep_finished", where=lambda e: bool(e["failed_sources"]), timeout=30
        )
        assert daemon.proc.poll() is None
        prom.start()
        seen = len(daemon.events())
        daemon.wait_for(
            "sweep_finished",
            where=lambda e: not e["failed_sources"] and daemon.events().index(e) >= seen,
            timeout=45,
        )
    finally:
        daemon.close()
    assert failed[0]["failed_sources"] == ["alerts"]


def test_sigterm_during_diagnosis_exits_cleanly(
    tmp_path: Path, prom: LocalPrometheus, gateway: GatewaySimulator
) -> None:
    """SIGTERM while the model is thinking (a request is at the model): STOPPING=1, the
    diagnosis in flight is waited for and finishes inside the grace period (its own log
    events say so), nothing is cancelled, exit 0."""
    model = FakeModel(delay=2.0)
    notify = NotifySocket(tmp_path / "notify.sock")
    grace = 15
    config = write_config(tmp_path / "agent.toml", schedule={"shutdown_grace_seconds": grace})
    env = agent_env(
        tmp_path,
        config,
        prom.url,
        gateway.url,
        OPENAI_BASE_URL=model.base_url,
        NOTIFY_SOCKET=str(notify.path),
    )
    daemon = DaemonProcess(env, tmp_path)
    try:
        daemon.wait_for("incident_opened", timeout=45)
        deadline = time.monotonic() + 30
        while model.started == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert model.started >= 1, "no request reached the model"
        daemon.signal(signal.SIGTERM)
        code = daemon.wait(timeout=60)
        notify.wait_for("STOPPING=1", timeout=5)
        events = daemon.events()
    finally:
        daemon.close()
        model.stop()
        notify.close()
    assert code == 0, daemon.tail()
    names = [e["event"] for e in events]
    assert "job_crashed" not in names and "daemon_cancelled_inflight" not in names
    stopping = names.index("daemon_stopping")
    assert events[stopping]["inflight"] >= 1  # the diagnosis was in flight at SIGTERM
    assert "diagnosis_finished" in names[stopping:]  # ... and finished before the exit
    assert names[-1] == "daemon_stopped"
    took = datetime.fromisoformat(events[-1]["timestamp"]) - datetime.fromisoformat(
        events[stopping]["timestamp"]
    )
    assert took.total_seconds() < grace, took  # the daemon's own clock: within the grace


def test_sigint_stops_the_daemon_like_sigterm(
    tmp_path: Path, prom: LocalPrometheus, gateway: GatewaySimulator
) -> None:
    """Ctrl-C in a terminal (SIGINT): STOPPING=1, the same orderly stop, exit 0, no
    traceback."""
    notify = NotifySocket(tmp_path / "notify.sock")
    env = _runbook_env(tmp_path, prom, gateway, NOTIFY_SOCKET=str(notify.path))
    daemon = DaemonProcess(env, tmp_path)
    try:
        notify.wait_for("READY=1", timeout=30)
        daemon.wait_for("sweep_finished", timeout=30)
        daemon.signal(signal.SIGINT)
        code = daemon.wait(timeout=30)
        notify.wait_for("STOPPING=1", timeout=5)
        names = [e["event"] for e in daemon.events()]
        text = daemon.log_path.read_text()
    finally:
        daemon.close()
        notify.close()
    assert code == 0, text[-2000:]
    assert "daemon_stopping" in names and names[-1] == "daemon_stopped"
    assert "Traceback" not in text and "KeyboardInterrupt" not in text


def test_sd_notify_ready_watchdog_status(
    tmp_path: Path, prom: LocalPrometheus, gateway: GatewaySimulator
) -> None:
    """READY=1, WATCHDOG=1 and STATUS= arrive on a real unix datagram socket."""
    notify = NotifySocket(tmp_path / "notify.sock")
    env = _runbook_env(
        tmp_path, prom, gateway, NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="1000000"
    )
    daemon = DaemonProcess(env, tmp_path)
    try:
        notify.wait_for("READY=1")
        notify.wait_for("WATCHDOG=1")
        daemon.wait_for("sweep_finished", timeout=30)
        [started] = daemon.wait_for("daemon_started")
        base = f"http://{started['metrics_addr']}"
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
            assert response.status == 200 and json.load(response)["status"] == "ok"
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            exposition = response.read().decode()
        assert 'devops_agent_sweeps_total{result="ok",trigger="schedule"}' in exposition
        assert "devops_agent_findings_total" in exposition
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
            "STATUS=last sweep" in m for m in notify.drain()
        ):
            time.sleep(0.2)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
        notify.wait_for("STOPPING=1", timeout=5)
    finally:
        daemon.close()
        notify.close()
    assert any("STATUS=last sweep" in m for m in notify.messages)
    assert sum("WATCHDOG=1" in m for m in notify.messages) >= 2


def test_sweep_dry_run_then_real_sweep_and_incidents(
    tmp_path: Path, prom: LocalPrometheus, gateway: GatewaySimulator
) -> None:
    """`sweep --dry-run --json` decides and writes nothing; a real `sweep` then acts; `incidents` shows it."""
    env = _runbook_env(tmp_path, prom, gateway)
    deadline = time.monotonic() + 45
    report: dict[str, Any] = {}
    while time.monotonic() < deadline:
        result = run_cli("sweep", "--dry-run", "--json", env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        if report["decisions"]:
            break
        time.sleep(0.5)
    assert [d["action"] for d in report["decisions"]] == ["restart"]
    assert report["dispatches"] == []
    assert [s["reason"] for s in report["skips"]] == ["dry_run"]
    assert gateway.executions() == []
    nothing = run_cli("incidents", "--json", env=env, cwd=tmp_path)
    assert nothing.returncode == 1 and "no incident store at" in nothing.stderr, "dry run wrote"

    dispatches: list[dict[str, Any]] = []
    deadline = time.monotonic() + 45
    while not dispatches and time.monotonic() < deadline:  # a stale scrape can hide the alert once
        real = run_cli("sweep", "--json", env=env, cwd=tmp_path)
        assert real.returncode == 0, real.stderr
        dispatches = json.loads(real.stdout)["dispatches"]
    [dispatch] = dispatches
    assert (dispatch["action"], dispatch["outcome"]) == ("restart", "succeeded")
    assert len(gateway.executions()) == 1
    [row] = json.loads(run_cli("incidents", "--json", env=env, cwd=tmp_path).stdout)
    assert {"id", "fingerprint", "target", "state", "action", "opened_at", "updated_at"} <= set(row)
    assert (row["state"], row["action"], row["target"]) == (
        "verifying",
        "restart",
        "market-predictor",
    )
    shown = run_cli("incidents", "show", row["id"][:6], env=env, cwd=tmp_path)
    assert shown.returncode == 0 and "timeline:" in shown.stdout
    assert "command='docker restart market-predictor'" in shown.stdout
    assert row["id"] in run_cli("incidents", env=env, cwd=tmp_path).stdout
    missing = run_cli("incidents", "show", "nope", env=env, cwd=tmp_path)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr

    again = json.loads(run_cli("sweep", "--json", env=env, cwd=tmp_path).stdout)
    assert again["dispatches"] == [] and len(gateway.executions()) == 1
