"""kill -9 at random points of dispatches, against a real store: never an intent sent twice,
never an incident lost or stuck."""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from agent.demo.gateway_sim import ActResult, GatewaySimulator
from agent.demo.local import LocalPrometheus, MetricsTarget
from tests.conftest import run_cli
from tests.integration.daemon_support import DaemonProcess, agent_env, write_config

pytestmark = pytest.mark.integration

SERVICES = [f"svc-{i:02d}" for i in range(50)]
KILLS = 50
RULES = """
groups:
- name: chaos
  rules:
  - alert: ChaosMemoryLeak
    expr: chaos_memory_bytes > 1000
    labels: {severity: critical}
"""


def chaos_config(path: Path) -> Path:
    """Fast sweeps, short leases, no storm guard, budgets that never bind, the runbook decides."""
    return write_config(
        path,
        diagnosis={"use_llm": False, "max_concurrency": 4},
        schedule={
            "sweep_interval_seconds": 0.3,
            "verify_after_seconds": 1,
            "lease_seconds": 2,
            "shutdown_grace_seconds": 5,
        },
        policy={
            "storm_min_services": 1000,
            "max_actions_per_hour": 10_000,
            "max_actions_per_target_per_hour": 100,
            "recheck_before_dispatch": False,
        },
        services={s: {"actions": ["restart", "collect_logs"]} for s in SERVICES},
    )


def run_kill_loop(tmp_path: Path, env: dict[str, str], kills: int, seed: int) -> list[float]:
    """Start the agent and kill -9 it at a random moment, ``kills`` times; the delays used."""
    rng = random.Random(seed)
    delays = []
    for n in range(kills):
        daemon = DaemonProcess(env, tmp_path, f"killed-{n}")
        try:
            delay = rng.uniform(0.8, 3.0)  # start-up takes ~0.8 s; then sweeps and dispatches
            delays.append(delay)
            time.sleep(delay)
            daemon.proc.send_signal(signal.SIGKILL)
            daemon.wait(10)
        finally:
            daemon.close()
    return delays


def finish(tmp_path: Path, env: dict[str, str], timeout: float = 120) -> list[dict[str, object]]:
    """Run one agent until every incident has ended; the incidents."""
    daemon = DaemonProcess(env, tmp_path, "finisher")
    rows: list[dict[str, object]] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(1)
            listed = run_cli("incidents", "--json", "--limit", "1000", env=env, cwd=tmp_path)
            assert listed.returncode == 0, listed.stderr
            rows = json.loads(listed.stdout)
            if len(rows) >= len(SERVICES) and all(
                r["state"] in ("resolved", "escalated", "skipped") for r in rows
            ):
                break
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(30) == 0, daemon.tail()
    finally:
        daemon.close()
    return rows


def test_kill_9_at_random_points_of_dispatch_never_sends_twice(
    tmp_path: Path, services_target: MetricsTarget
) -> None:
    """50 kill -9s of the agent while it dispatches 50 restarts to a slow, serial gateway
    that ignores Idempotency-Key: 0 intents sent twice, 0 incidents lost or stuck."""
    for service in SERVICES:
        services_target.set("chaos_memory_bytes", 5000, service=service)

    def fix(service: str, command: str) -> ActResult:
        services_target.set("chaos_memory_bytes", 0, service=service)
        return ActResult(stdout=f"{service}\n")

    prom = LocalPrometheus(
        tmp_path / "prom", targets={"svc": services_target.address}, rules=RULES
    ).start()
    gateway = GatewaySimulator(fix, known_services=tuple(SERVICES), delay=0.3).start()
    env = agent_env(tmp_path, chaos_config(tmp_path / "agent.toml"), prom.url, gateway.url)
    env["AI_COMMAND_GATEWAY_TIMEOUT"] = "5"
    try:
        run_kill_loop(tmp_path, env, KILLS, seed=20261124)
        rows = finish(tmp_path, env)
    finally:
        gateway.stop()
        prom.stop()
    sent = Counter(r.body["target_resource"]["name"] for r in gateway.executions())
    twice = {service: n for service, n in sent.items() if n > 1}
    assert twice == {}, f"intents sent twice: {twice}"
    by_service = Counter(str(r["target"]) for r in rows)
    assert set(by_service) == set(SERVICES) and set(by_service.values()) == {1}, by_service
    stuck = [r for r in rows if r["state"] not in ("resolved", "escalated", "skipped")]
    assert stuck == [], f"stuck incidents: {stuck}"
    unknown = [r for r in rows if r["dispatch_outcome"] == "unknown"]
    assert unknown, "no kill landed between a claim and its result: the loop tested nothing"
