"""Fleets for tests and benchmarks: several agent processes on one store, a fake model, a
gateway simulator that fixes what it restarts, and the kill -9 loop."""

from __future__ import annotations

import json
import random
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

from agent.demo.gateway_sim import ActResult, GatewaySimulator
from agent.local import LocalPrometheus, MetricsTarget
from tests.conftest import run_cli
from tests.integration.daemon_support import DaemonProcess, agent_env, write_config
from tests.llm_fakes import FakeModel

RULES = """
groups:
- name: fleet
  rules:
  - alert: FleetMemoryLeak
    expr: fleet_memory_bytes > 1000
    labels: {severity: critical}
"""
TERMINAL = ("resolved", "escalated", "skipped")


def fleet_config(
    path: Path,
    services: list[str],
    *,
    budget: int,
    use_llm: bool = True,
    sweep: float = 0.5,
    lease: float = 2,
    **diagnosis: Any,
) -> Path:
    """A config for fleet runs: fast sweeps, short leases, no storm guard, no re-check.

    Verification waits 4 s: Prometheus (scraping and evaluating every second) needs up to
    two seconds to see that a restart fixed the service.
    """
    return write_config(
        path,
        diagnosis={"use_llm": use_llm, "max_concurrency": 4, "max_steps": 2, **diagnosis},
        schedule={
            "sweep_interval_seconds": sweep,
            "verify_after_seconds": 4,
            "lease_seconds": lease,
            "shutdown_grace_seconds": 5,
        },
        policy={
            "storm_min_services": 100_000,
            "max_actions_per_hour": budget,
            "max_actions_per_target_per_hour": 100,
            "recheck_before_dispatch": False,
        },
        services={s: {"actions": ["restart", "collect_logs"]} for s in services},
    )


class Fleet:
    """Prometheus, a fake model, a fixing gateway and ``replicas`` agents on one store."""

    def __init__(
        self,
        tmp_path: Path,
        target: MetricsTarget,
        store: str,
        services: list[str],
        *,
        budget: int,
        replicas: int = 3,
        model_delay: float = 0.2,
        gateway_delay: float = 0.0,
        start: bool = True,
        **config: Any,
    ) -> None:
        self.tmp_path, self.services = tmp_path, services
        for service in services:
            target.set("fleet_memory_bytes", 5000, service=service)

        def fix(service: str, command: str) -> ActResult:
            target.set("fleet_memory_bytes", 0, service=service)
            return ActResult(stdout=f"{service}\n")

        self.prom = LocalPrometheus(
            tmp_path / "prom", targets={"svc": target.address}, rules=RULES
        ).start()
        self.model = FakeModel(delay=model_delay)
        self.gateway = GatewaySimulator(
            fix, known_services=tuple(services), delay=gateway_delay
        ).start()
        path = fleet_config(tmp_path / "agent.toml", services, budget=budget, **config)
        self.env = agent_env(
            tmp_path, path, self.prom.url, self.gateway.url, OPENAI_BASE_URL=self.model.base_url
        )
        self.env["AGENT_STATE_URL"] = store
        self.replicas: list[DaemonProcess] = []
        if start:
            self.start(replicas)

    def wait_firing(self, count: int, timeout: float = 60) -> None:
        """Wait until Prometheus reports ``count`` alerts firing."""

        def firing() -> bool:
            with urllib.request.urlopen(f"{self.prom.url}/api/v1/alerts", timeout=5) as answer:
                alerts = json.load(answer)["data"]["alerts"]
            return sum(a["state"] == "firing" for a in alerts) >= count

        self.wait(firing, timeout, f"{count} alerts firing")

    def start(self, replicas: int) -> None:
        """Start the agent processes."""
        self.replicas = [
            DaemonProcess(self.env, self.tmp_path, f"replica-{n}") for n in range(replicas)
        ]

    def events(self, name: str) -> list[dict[str, Any]]:
        """Every event of that name logged by any replica so far."""
        return [e for r in self.replicas for e in r.events() if e.get("event") == name]

    def wait(self, predicate: Any, timeout: float, what: str) -> None:
        """Poll ``predicate`` until true; fail with every replica's log tail on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.3)
        tails = "\n".join(r.tail(10) for r in self.replicas)
        raise AssertionError(f"timed out waiting for {what}\n{tails}")

    def stop(self) -> None:
        """Stop everything this fleet started."""
        for replica in self.replicas:
            replica.close()
        self.gateway.stop()
        self.model.stop()
        self.prom.stop()


def run_kill_loop(tmp_path: Path, env: dict[str, str], kills: int, seed: int) -> list[float]:
    """Start the agent and kill -9 it at a random moment after it said it started (so a
    slow start on a busy machine does not spend the kill), ``kills`` times; the delays."""
    rng = random.Random(seed)
    delays = []
    for n in range(kills):
        daemon = DaemonProcess(env, tmp_path, f"killed-{n}")
        try:
            delay = rng.uniform(0.0, 2.2)  # after the start: sweeps, claims and dispatches
            delays.append(delay)
            daemon.wait_for("daemon_started", timeout=60)
            time.sleep(delay)
            daemon.proc.send_signal(signal.SIGKILL)
            daemon.wait(10)
        finally:
            daemon.close()
    return delays


def finish(
    tmp_path: Path, env: dict[str, str], expected: int, timeout: float = 120
) -> list[dict[str, Any]]:
    """Run one agent until ``expected`` incidents have all ended; the incidents."""
    daemon = DaemonProcess(env, tmp_path, "finisher")
    rows: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(1)
            listed = run_cli("incidents", "--json", "--limit", "1000", env=env, cwd=tmp_path)
            assert listed.returncode == 0, listed.stderr
            rows = json.loads(listed.stdout)
            if len(rows) >= expected and all(r["state"] in TERMINAL for r in rows):
                break
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(30) == 0, daemon.tail()
    finally:
        daemon.close()
    return rows
