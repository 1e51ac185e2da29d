"""`systemctl reload` on a running daemon: SIGHUP to `devops-agent run` against a real
Prometheus and Alertmanager, a gateway simulator, the runbook deciding."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.demo.gateway_sim import GatewaySimulator
from agent.local import LocalAlertmanager, LocalPrometheus, MetricsTarget
from tests.integration.daemon_support import DaemonProcess, NotifySocket, agent_env, write_config

pytestmark = pytest.mark.integration

MP = "market-predictor"
ACTIONS = ["restart", "start", "stop", "collect_logs", "inspect_resources", "health_check"]


@pytest.fixture
def gateway() -> Iterator[GatewaySimulator]:
    """A gateway simulator; nothing may reach it in these tests."""
    sim = GatewaySimulator().start()
    yield sim
    sim.stop()


def _config(path: Path, restart: str | None) -> Path:
    autonomy = {"autonomy": {"restart": restart}} if restart else {}
    return write_config(
        path,
        diagnosis={"use_llm": False},
        services={MP: {"actions": ACTIONS, **autonomy}},
    )


def _metrics(base: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("devops_agent_config_last_reload"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def _approval_alerts(alertmanager: LocalAlertmanager) -> list[dict[str, Any]]:
    url = f"{alertmanager.url}/api/v2/alerts?filter=alertname%3D%22DevopsAgentApprovalRequired%22"
    with urllib.request.urlopen(url, timeout=5) as answer:
        alerts: list[dict[str, Any]] = json.load(answer)
    return alerts


def _after(daemon: DaemonProcess, mark: int, event: str, **match: Any) -> list[dict[str, Any]]:
    """Wait for ``event`` (with fields equal to ``match``) logged after the ``mark``-th line."""

    def fits(e: dict[str, Any]) -> bool:
        return daemon.events().index(e) >= mark and all(e.get(k) == v for k, v in match.items())

    return daemon.wait_for(event, timeout=45, where=fits)


def test_reload_keeps_a_broken_file_out_then_asks_then_withdraws(
    tmp_path: Path,
    services_target: MetricsTarget,
    e2e_prometheus: LocalPrometheus,
    alertmanager: LocalAlertmanager,
    gateway: GatewaySimulator,
) -> None:
    """A broken file plus SIGHUP: alive, sweeping, gauge 0, one line per problem, said in
    systemd's status after each sweep. A good
    file adding restart = approve: gauge 1, and a leak's restart waits for approval. That
    restart set to never: the ask is withdrawn (its alert ends), the incident escalated,
    nothing ever sent."""
    services_target.set("e2e_memory_bytes", 0, service=MP)
    config = _config(tmp_path / "agent.toml", restart=None)
    notify = NotifySocket(tmp_path / "notify.sock")
    env = agent_env(
        tmp_path,
        config,
        e2e_prometheus.url,
        gateway.url,
        ALERTMANAGER_URL=alertmanager.url,
        NOTIFY_SOCKET=str(notify.path),
    )
    daemon = DaemonProcess(env, tmp_path)
    try:
        [started] = daemon.wait_for("daemon_started")
        base = f"http://{started['metrics_addr']}"
        daemon.wait_for("sweep_finished")
        at_start = _metrics(base)
        assert at_start["devops_agent_config_last_reload_successful"] == 1

        good = config.read_text()
        config.write_text(
            good.replace("storm_share = 0.5\n", "storm_share = 5\n") + "\n[policyy]\nx = 1\n"
        )
        mark = len(daemon.events())
        daemon.signal(signal.SIGHUP)
        failed = daemon.wait_for("config_reload_failed", count=2)
        assert sorted(e["problem"].split(": ", 1)[1] for e in failed) == [
            "policy.storm_share: Input should be less than or equal to 1",
            "policyy: Extra inputs are not permitted",
        ]
        _after(daemon, len(daemon.events()), "sweep_finished")  # still sweeping
        assert daemon.proc.poll() is None
        assert _metrics(base)["devops_agent_config_last_reload_successful"] == 0
        notify.wait_for(
            "STATUS=reload of " + str(config) + " failed (2 problems): running on "
            "the previous configuration"
        )
        deadline = time.monotonic() + 30
        while not any("the last reload failed" in m for m in notify.drain()):
            assert time.monotonic() < deadline, notify.messages[-5:]

        _config(config, restart="approve")
        mark = len(daemon.events())
        daemon.signal(signal.SIGHUP)
        [reloaded] = _after(daemon, mark, "config_reloaded")
        assert reloaded["changed"] == ["services"]
        values = _metrics(base)
        assert values["devops_agent_config_last_reload_successful"] == 1
        assert (
            values["devops_agent_config_last_reload_success_timestamp_seconds"]
            > at_start["devops_agent_config_last_reload_success_timestamp_seconds"]
        )

        services_target.set("e2e_memory_bytes", 5000, service=MP)
        [asked] = _after(daemon, mark, "approval_requested")
        assert (asked["action"], asked["target"]) == ("restart", MP)
        [alert] = _approval_alerts(alertmanager)
        assert alert["labels"]["incident_id"] == asked["incident_id"]

        _config(config, restart="never")
        mark = len(daemon.events())
        daemon.signal(signal.SIGHUP)
        _after(daemon, mark, "config_reloaded")
        [ended] = _after(daemon, mark, "approval_ended", incident_id=asked["incident_id"])
        assert ended["result"] == "withdrawn"
        [escalated] = _after(daemon, mark, "incident_escalated", incident_id=asked["incident_id"])
        assert escalated["reason"] == (
            "configuration changed: restart on market-predictor is now set to autonomy 'never'"
        )
        assert _approval_alerts(alertmanager) == []
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0, daemon.tail()
    finally:
        daemon.close()
        notify.close()
    assert gateway.executions() == []
