"""Benchmark: a sweep's cost does not grow with the store's history.

sweep_cost_with_history: one sweep with no new findings (20 alerts firing, each with its
current incident already ended) with 10,000 past incidents in the store, over the same
sweep with none: target <= 1.5, on SQLite and on PostgreSQL. Work per sweep should grow
with what changed, not with what is remembered.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.config import Severity
from agent.daemon.cycle import run_cycle
from agent.incidents.lifecycle import on_finding
from agent.local import LocalPrometheus, MetricsTarget
from agent.runtime import open_runtime
from agent.settings import load_settings
from agent.store import open_store
from agent.store.base import StateCopy
from agent.sweep.findings import Finding, fingerprint
from tests.conftest import alert_finding, postgres_schema
from tests.integration.daemon_support import agent_env, write_config

HISTORY = 10_000
ROUNDS = 25
RULES = """
groups:
- name: history
  rules:
  - alert: HistoryMemoryLeak
    expr: history_memory_bytes > 1000
    labels: {severity: critical}
"""


def _past(n: int) -> list:  # type: ignore[type-arg]
    now = datetime.now(UTC) - timedelta(days=3)
    out = []
    for i in range(n):
        labels = {"alertname": f"Old{i % 50}", "service": f"old-{i % 300}", "instance": str(i)}
        finding = Finding(
            kind="alert",
            name=labels["alertname"],
            target=labels["service"],
            severity=Severity.warning,
            labels=labels,
            annotations={"summary": "long gone"},
            value=1.0,
            first_seen=now,
            fingerprint=fingerprint("alert", labels["alertname"], labels, ()),
        )
        step = on_finding(finding, f"past{i:08d}", now)
        out.append(replace(step.incident, state="resolved", cleared_at=now + timedelta(minutes=5)))
    return out


async def _median_sweep(settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> float:
    for key, value in settings_env.items():
        monkeypatch.setenv(key, value)
    async with open_runtime(load_settings(env_file=None)) as rt:
        deadline = time.monotonic() + 60
        while len(rt.store.current()) < 20:  # open the 20 incidents; out of scope, they end
            assert time.monotonic() < deadline, "the 20 alerts never fired"
            await run_cycle(rt, datetime.now(UTC))
            await asyncio.sleep(0.5)
        await run_cycle(rt, datetime.now(UTC))
        times = []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            report = await run_cycle(rt, datetime.now(UTC))
            times.append(time.perf_counter() - started)
            assert not report.decisions and len(report.sweep.findings) == 20
    return statistics.median(times)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sweep_cost_with_history(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Print sweep_cost_with_history = sweep with 10,000 past incidents / sweep with none."""
    target = MetricsTarget().start()
    for i in range(20):
        target.set("history_memory_bytes", 5000, service=f"unknown-{i}")
    prom = LocalPrometheus(tmp_path / "prom", targets={"svc": target.address}, rules=RULES).start()
    config = write_config(tmp_path / "agent.toml", diagnosis={"use_llm": False})
    medians = {}
    try:
        for label, history in (("empty", 0), ("history", HISTORY)):
            if backend == "sqlite":
                url, drop = f"sqlite:///{tmp_path / label / 'agent.db'}", (lambda: None)
            else:
                url, drop = postgres_schema(f"hist_{label}")
            try:
                store = open_store(url)
                store.import_state(StateCopy(_past(history), [], []))
                store.close()
                env = agent_env(tmp_path / label, config, prom.url, "http://127.0.0.1:9")
                env["AGENT_STATE_URL"] = url
                medians[label] = asyncio.run(_median_sweep(env, monkeypatch))
            finally:
                drop()
    finally:
        prom.stop()
        target.stop()
    ratio = medians["history"] / medians["empty"]
    print(
        f"\nbackend={backend} past_incidents={HISTORY} current_incidents=20"
        f"\nsweep_ms_empty={medians['empty'] * 1e3:.1f} sweep_ms_history={medians['history'] * 1e3:.1f}"
        f"\nsweep_cost_with_history={ratio:.2f} (target <= 1.5: {'met' if ratio <= 1.5 else 'NOT met'})"
    )


def _group(n: int, now: datetime) -> list:  # type: ignore[type-arg]
    """``n`` past incidents of one problem, an hour apart, each with its restart."""
    finding = alert_finding("HistoryMemoryLeak", first_seen=now)
    out = []
    for i in range(n):
        opened = now - timedelta(minutes=30 * (i + 1))
        step = on_finding(replace(finding, first_seen=opened), f"grp{i:08d}", opened)
        out.append(
            replace(step.incident, state="resolved", cleared_at=opened + timedelta(minutes=5))
        )
    return out


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_history_query_ratio(backend: str, tmp_path: Path) -> None:
    """Print history_query_ratio = the history query of one problem with 10,000 incidents
    in the store (its own 50 and 9,950 of other problems) / with 10 in all. The two
    stores are asked in turn, so a slower spell of the shared machine falls on both."""
    now = datetime.now(UTC)
    since = now - timedelta(hours=24)
    stores, drops, asks = {}, [], {}
    try:
        for label, mine, others in (("small", 10, 0), ("large", 50, HISTORY - 50)):
            if backend == "sqlite":
                url = f"sqlite:///{tmp_path / label / 'agent.db'}"
            else:
                url, drop = postgres_schema(f"histq_{label}")
                drops.append(drop)
            stores[label] = store = open_store(url)
            group = _group(mine, now)
            store.import_state(StateCopy(group + _past(others), [], []))
            asks[label] = on_finding(group[0].finding, "current0001", now).incident
        times: dict[str, list[float]] = {label: [] for label in stores}
        for i in range(320):  # the first 20 rounds warm the caches of both stores alike
            for label, store in stores.items():
                current = asks[label]
                started = time.perf_counter()
                found = store.history(current.group_key, since=since, before=current)
                if i >= 20:
                    times[label].append(time.perf_counter() - started)
                assert len(found) == 10
        medians = {label: statistics.median(t) for label, t in times.items()}
    finally:
        for store in stores.values():
            store.close()
        for drop in drops:
            drop()
    ratio = medians["large"] / medians["small"]
    print(
        f"\nbackend={backend} history_query_us_10={medians['small'] * 1e6:.0f} "
        f"history_query_us_10000={medians['large'] * 1e6:.0f}"
        f"\nhistory_query_ratio={ratio:.2f} (target <= 1.5: {'met' if ratio <= 1.5 else 'NOT met'})"
    )
