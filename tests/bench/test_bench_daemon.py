"""Benchmarks of `devops-agent run` as a process.

- Idle footprint between sweeps: resident memory (target <= 80 MB) and CPU share over a
  quiet minute (target < 1 %), and time from process start to READY=1 (target <= 2 s).
- Alert to action: from the alert turning `firing` in Prometheus to the gateway receiving
  the intent, as a ratio to the sweep interval (target <= 1 + 1 s / interval).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from agent.demo.gateway_sim import GatewaySimulator
from agent.local import LocalPrometheus, MetricsTarget
from tests.integration.daemon_support import (
    E2E_RULES,
    DaemonProcess,
    NotifySocket,
    agent_env,
    wait_firing,
    write_config,
)
from tests.llm_fakes import FakeModel

QUIET_SECONDS = 60


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_idle_footprint_and_ready_time(tmp_path: Path) -> None:
    """Print RSS and CPU share over a quiet minute, and seconds from start to READY=1."""
    target = MetricsTarget().start()
    target.set("e2e_memory_bytes", 10, service="market-predictor")
    prom = LocalPrometheus(
        tmp_path / "prom", targets={"services": target.address}, rules=E2E_RULES
    ).start()
    gateway = GatewaySimulator().start()
    notify = NotifySocket(tmp_path / "notify.sock")
    config = write_config(tmp_path / "agent.toml", schedule={"sweep_interval_seconds": 15})
    env = agent_env(tmp_path, config, prom.url, gateway.url, NOTIFY_SOCKET=str(notify.path))
    started = time.monotonic()
    daemon = DaemonProcess(env, tmp_path)
    try:
        notify.wait_for("READY=1", timeout=30)
        ready_s = time.monotonic() - started
        daemon.wait_for("sweep_finished", timeout=30)
        time.sleep(2)
        pid = daemon.proc.pid
        cpu0, t0 = _cpu_seconds(pid), time.monotonic()
        time.sleep(QUIET_SECONDS)
        cpu_share = (_cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
        rss = _rss_mb(pid)
        sweeps = len(daemon.wait_for("sweep_finished"))
    finally:
        daemon.close()
        notify.close()
        gateway.stop()
        prom.stop()
        target.stop()
    print(
        f"\nready_seconds={ready_s:.2f} (target <= 2: {'met' if ready_s <= 2 else 'NOT met'})"
        f"\nidle_rss_mb={rss:.1f} (target <= 80: {'met' if rss <= 80 else 'NOT met'})"
        f"\nidle_cpu_share={cpu_share * 100:.2f}% over {QUIET_SECONDS}s with {sweeps} sweeps "
        f"(target < 1%: {'met' if cpu_share < 0.01 else 'NOT met'})"
    )


def test_alert_to_action_ratio(tmp_path: Path) -> None:
    """Print (gateway receives intent - alert firing) / sweep interval."""
    interval = 5.0
    target = MetricsTarget().start()
    target.set("e2e_memory_bytes", 10, service="market-predictor")
    rules = E2E_RULES.replace("for: 1s", "for: 0s")
    prom = LocalPrometheus(
        tmp_path / "prom", targets={"services": target.address}, rules=rules
    ).start()
    gateway = GatewaySimulator().start()
    model = FakeModel(delay=0.0)
    config = write_config(tmp_path / "agent.toml", schedule={"sweep_interval_seconds": interval})
    env = agent_env(tmp_path, config, prom.url, gateway.url, OPENAI_BASE_URL=model.base_url)
    daemon = DaemonProcess(env, tmp_path)
    try:
        daemon.wait_for("sweep_finished", timeout=30)
        time.sleep(interval / 3)  # land the alert somewhere inside an interval
        target.set("e2e_memory_bytes", 5000, service="market-predictor")
        fired_at = wait_firing(prom.url)
        deadline = time.monotonic() + 4 * interval
        while not gateway.executions() and time.monotonic() < deadline:
            time.sleep(0.02)
        executions = gateway.executions()
    finally:
        daemon.close()
        model.stop()
        gateway.stop()
        prom.stop()
        target.stop()
    assert executions, "the gateway never received the intent"
    latency = executions[0].received_at - fired_at
    ratio = latency / interval
    limit = 1 + 1 / interval
    print(
        f"\nsweep_interval_s={interval:g} alert_to_action_s={latency:.2f}"
        f"\nalert_to_action_ratio={ratio:.2f} (target <= {limit:.2f}: {'met' if ratio <= limit else 'NOT met'})"
    )
