"""Benchmarks of several replicas on PostgreSQL.

- replicas_speedup: 200 incidents, a model that answers in 500 ms: the time one replica
  takes to diagnose and dispatch them all over the time three take (target >= 2.5). The
  clock starts when Prometheus reports the 200 alerts firing and the replicas start; it
  includes their start-up.
- concurrency_ratio: one replica's time over the ideal, ceil(200 / max_concurrency)
  rounds of the calls one diagnosis makes (no target; it shows where the time goes).
- duplicates_under_chaos: intents sent twice over 50 kill -9s on PostgreSQL (target 0).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path

from agent.local import MetricsTarget
from tests.conftest import postgres_schema
from tests.integration.fleet import TERMINAL, Fleet, finish, run_kill_loop

INCIDENTS = 200
MODEL_DELAY = 0.5
CALLS_PER_DIAGNOSIS = 4  # triage, investigation with tools, its summary, plan


def _time_to_dispatch_all(tmp_path: Path, replicas: int) -> tuple[float, int]:
    target = MetricsTarget().start()
    url, drop = postgres_schema("bench")
    services = [f"svc-{i:03d}" for i in range(INCIDENTS)]
    fleet = Fleet(
        tmp_path,
        target,
        url,
        services,
        budget=10_000,
        replicas=0,
        model_delay=MODEL_DELAY,
        lease=10,
        sweep=1,
    )
    fleet.wait_firing(INCIDENTS)  # the clock measures the replicas, not Prometheus' first rule run
    started = time.monotonic()
    fleet.start(replicas)
    try:
        fleet.wait(lambda: len(fleet.gateway.executions()) >= INCIDENTS, 600, "every dispatch")
        elapsed = time.monotonic() - started
        calls = fleet.model.calls
    finally:
        fleet.stop()
        target.stop()
        drop()
    return elapsed, calls


def test_replicas_speedup(tmp_path: Path) -> None:
    """Print replicas_speedup = time with 1 replica / time with 3, and one replica's
    concurrency ratio."""
    one, calls_one = _time_to_dispatch_all(tmp_path / "one", 1)
    three, calls_three = _time_to_dispatch_all(tmp_path / "three", 3)
    speedup = one / three
    ideal = math.ceil(INCIDENTS / 4) * CALLS_PER_DIAGNOSIS * MODEL_DELAY
    print(
        f"\nincidents={INCIDENTS} model_delay_s={MODEL_DELAY} max_concurrency=4"
        f"\none_replica_s={one:.1f} three_replicas_s={three:.1f}"
        f" model_calls={calls_one}/{calls_three}"
        f"\nreplicas_speedup={speedup:.2f} (target >= 2.5: {'met' if speedup >= 2.5 else 'NOT met'})"
        f"\nconcurrency_ratio={one / ideal:.2f} (one replica over the ideal {ideal:.0f}s; no target)"
    )
    assert calls_one >= INCIDENTS * 3 and calls_three >= INCIDENTS * 3


def test_duplicates_under_chaos(tmp_path: Path) -> None:
    """Print duplicates_under_chaos: intents sent twice over 50 kill -9s, on PostgreSQL."""
    target = MetricsTarget().start()
    url, drop = postgres_schema("chaos")
    services = [f"svc-{i:02d}" for i in range(50)]
    fleet = Fleet(
        tmp_path,
        target,
        url,
        services,
        budget=10_000,
        replicas=0,
        gateway_delay=0.3,
        use_llm=False,
        sweep=0.3,
    )
    fleet.env["AI_COMMAND_GATEWAY_TIMEOUT"] = "5"
    try:
        started = time.monotonic()
        run_kill_loop(tmp_path, fleet.env, 50, seed=1124)
        rows = finish(tmp_path, fleet.env, expected=len(services))
        elapsed = time.monotonic() - started
    finally:
        fleet.stop()
        target.stop()
        drop()
    # A kill -9 while the body is being written leaves a request the gateway cannot read
    # (and so never runs): only whole requests count.
    whole = [r for r in fleet.gateway.executions() if isinstance(r.body, dict)]
    partial = len(fleet.gateway.executions()) - len(whole)
    sent = Counter(r.body["target_resource"]["name"] for r in whole)
    duplicates = sum(n - 1 for n in sent.values() if n > 1)
    stuck = sum(r["state"] not in TERMINAL for r in rows)
    outcomes = Counter(str(r["dispatch_outcome"]) for r in rows)
    print(
        f"\nkills=50 incidents={len(rows)} intents={sum(sent.values())} "
        f"cut_off_mid_body={partial} seconds={elapsed:.0f}"
        f"\ndispatch_outcomes={dict(outcomes)} stuck={stuck}"
        f"\nduplicates_under_chaos={duplicates} (target 0: {'met' if duplicates == 0 else 'NOT met'})"
    )
    assert stuck == 0
    assert duplicates == 0, f"intents sent twice: { {k: n for k, n in sent.items() if n > 1} }"
