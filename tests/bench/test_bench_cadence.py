"""Benchmark: the schedule with a slow model.

A model that answers every call in 20 s (inside its 30 s request timeout) diagnoses one
leak over about a minute. The daemon's diagnoses run in the background, so the sweeps go
on: ``sweep_cadence_slow_model`` is the sweeps done during that diagnosis divided by the
sweeps the schedule called for in the same time (goal >= 0.9), read from the daemon's own
log timestamps.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.demo.gateway_sim import GatewaySimulator
from agent.local import LocalPrometheus, MetricsTarget
from tests.integration.daemon_support import E2E_RULES, DaemonProcess, agent_env, write_config
from tests.llm_fakes import FakeModel

CALL_SECONDS = 20.0
INTERVAL = 2.0


def _at(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["timestamp"])


def test_sweep_cadence_with_a_slow_model(tmp_path: Path) -> None:
    """Print sweeps done / sweeps scheduled while a 20 s-per-call model diagnoses."""
    target = MetricsTarget().start()
    target.set("e2e_memory_bytes", 5000, service="market-predictor")
    prom = LocalPrometheus(
        tmp_path / "prom", targets={"services": target.address}, rules=E2E_RULES
    ).start()
    gateway = GatewaySimulator().start()
    model = FakeModel(delay=CALL_SECONDS)
    config = write_config(tmp_path / "agent.toml", schedule={"sweep_interval_seconds": INTERVAL})
    env = agent_env(tmp_path, config, prom.url, gateway.url, OPENAI_BASE_URL=model.base_url)
    daemon = DaemonProcess(env, tmp_path)
    try:
        [opened] = daemon.wait_for("incident_opened", timeout=60)
        [finished] = daemon.wait_for("diagnosis_finished", timeout=4 * CALL_SECONDS + 30)
        time.sleep(0.5)
        events = daemon.events()
    finally:
        daemon.close()
        model.stop()
        gateway.stop()
        prom.stop()
        target.stop()
    start, end = _at(opened), _at(finished)
    sweeps = [e for e in events if e.get("event") == "sweep_finished" and start < _at(e) <= end]
    window = (end - start).total_seconds()
    ratio = len(sweeps) / (window / INTERVAL)
    print(
        f"\nmodel_call_s={CALL_SECONDS:g} sweep_interval_s={INTERVAL:g} "
        f"diagnosis_s={window:.1f} sweeps_done={len(sweeps)}"
        f"\nsweep_cadence_slow_model={ratio:.2f} (goal >= 0.9: {'met' if ratio >= 0.9 else 'NOT met'})"
    )
