"""Autonomy earned by evidence, on real parts: a real Prometheus firing a leak, the gateway
simulator on a socket, the store on SQLite and PostgreSQL, ``devops-agent report`` as a
user runs it.

- restart set to ``observe``: nothing is sent, the incident says what it would have done
  and that the leak persisted, and the report has its row;
- a leak that clears after a restart made by hand (``process_start_time_seconds`` moves)
  while the agent watches is told apart from one that clears on its own;
- five approved restarts that each healed: the report suggests ``auto`` with the TOML to
  paste; once pasted, a restart sent alone that fails: it suggests ``approve`` again.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.approvals import Pin, answer_approval, make_answer
from agent.cli.main import main
from agent.daemon.cycle import run_cycle
from agent.daemon.verify import run_verifications
from agent.demo.gateway_sim import ActResult, GatewaySimulator
from agent.incidents.model import Incident
from agent.local import LocalPrometheus, MetricsTarget
from agent.runtime import Runtime, open_runtime
from agent.settings import Settings, load_settings
from tests.conftest import run_cli
from tests.integration.daemon_support import agent_env, wait_firing, write_config

pytestmark = pytest.mark.integration

MP = "market-predictor"
LEAK = "e2e_memory_bytes"


class Healing:
    """What a restart does to the leak: heals it, or not."""

    def __init__(self, target: MetricsTarget) -> None:
        self.target = target
        self.heals = True

    def __call__(self, service: str, command: str) -> ActResult:
        if command.startswith("docker restart") and self.heals:
            self.target.set(LEAK, 100, service=service)
        return ActResult(stdout=f"{service}\n")


@pytest.fixture
def healing(services_target: MetricsTarget) -> Healing:
    """Restarts heal the leak until told otherwise."""
    return Healing(services_target)


@pytest.fixture
def gateway(healing: Healing) -> Iterator[GatewaySimulator]:
    """The gateway simulator, counting every request."""
    sim = GatewaySimulator(healing).start()
    yield sim
    sim.stop()


def _settings(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prom: LocalPrometheus,
    gateway: GatewaySimulator,
    store_url: str,
    restart: str,
    name: str = "agent.toml",
) -> tuple[Settings, dict[str, str]]:
    """Runbook-only decisions (one key, the operator's), restart on market-predictor at
    ``restart``, cooldown and recurrence small so that one leak after another may be
    restarted and none counts as coming back."""
    config = write_config(
        tmp_path / name,
        diagnosis={"use_llm": False},
        policy={
            "action_cooldown_seconds": 0,
            "recurrence_seconds": 1,
            "max_actions_per_target_per_hour": 100,
            "max_actions_per_hour": 100,
            "approval_ttl_seconds": 600,
        },
        services={MP: {"actions": ["restart", "collect_logs"], "autonomy": {"restart": restart}}},
    )
    env = agent_env(tmp_path, config, prom.url, gateway.url, AGENT_STATE_URL=store_url)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings(env_file=None), env


def _report(env: dict[str, str], cwd: Path, *args: str) -> dict[str, Any]:
    done = run_cli("report", "--json", "--since", "1h", *args, env=env, cwd=cwd)
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def _row(doc: dict[str, Any]) -> dict[str, Any]:
    rows = [r for r in doc["rows"] if (r["service"], r["action"]) == (MP, "restart")]
    assert len(rows) == 1, doc["rows"]
    return rows[0]


def _alerts(prom: LocalPrometheus) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{prom.url}/api/v1/alerts", timeout=5) as response:
        alerts: list[dict[str, Any]] = json.load(response)["data"]["alerts"]
    return alerts


async def _until_quiet(prom: LocalPrometheus, timeout: float = 30.0) -> None:
    """Wait until Prometheus no longer reports the leak's alert."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alerts(prom):
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the alert never resolved")


async def _cycle_until(rt: Runtime, state: str, timeout: float = 30.0) -> Incident:
    """Cycles (diagnoses inline) until the leak's current incident is in ``state``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await run_cycle(rt, datetime.now(UTC))
        found = [i for i in rt.store.current() if i.state == state]
        if found:
            return found[0]
        await asyncio.sleep(0.3)
    raise AssertionError(f"no incident came to {state}")


def _later(rt: Runtime) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=rt.config.schedule.verify_after_seconds + 1)


async def test_an_observed_restart_sends_nothing_and_the_leak_persists(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    store_url: str,
    e2e_prometheus: LocalPrometheus,
    services_target: MetricsTarget,
    gateway: GatewaySimulator,
) -> None:
    """restart = observe on a leaking service: 0 requests reach the gateway, nobody is
    asked, the incident says it would have sent restart on market-predictor and that the
    leak was still firing at the verify time; report --json has its row."""
    settings, env = _settings(tmp_path, monkeypatch, e2e_prometheus, gateway, store_url, "observe")
    services_target.set(LEAK, 5000, service=MP)
    wait_firing(e2e_prometheus.url)
    async with open_runtime(settings) as rt:
        watching = await _cycle_until(rt, "watching")
        assert watching.asks is False
        assert await run_verifications(rt, _later(rt)) == 1
        ended = rt.store.get(watching.id)
    assert isinstance(ended, Incident) and ended.state == "skipped"
    assert gateway.executions() == []
    monkeypatch.chdir(tmp_path)
    assert main(["incidents", "show", watching.id]) == 0
    shown = capsys.readouterr().out
    assert "would have sent restart on market-predictor" in shown
    assert "still firing" in shown
    row = _row(_report(env, tmp_path))
    assert (row["incidents"], row["observed"], row["sent"], row["tier"]) == (1, 1, 0, "observe")
    assert row["observed_persisted_rate"] == 1.0 and row["alone_today"] == 0


@pytest.mark.parametrize("by_hand", [True, False], ids=["restarted-by-hand", "cleared-alone"])
async def test_a_restart_by_hand_while_watched_is_another_hand(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    e2e_prometheus: LocalPrometheus,
    services_target: MetricsTarget,
    gateway: GatewaySimulator,
    by_hand: bool,
) -> None:
    """The leak clears right after the service's process restarted (by hand, not by the
    agent): the watch ends 'after a restart of market-predictor', not 'on its own'. The
    same leak clearing with the process start time unchanged ends 'on its own'."""
    url = f"sqlite:///{tmp_path / 'state' / 'agent.db'}"
    settings, env = _settings(tmp_path, monkeypatch, e2e_prometheus, gateway, url, "observe")
    services_target.set("process_start_time_seconds", 1_000, service=MP)
    services_target.set(LEAK, 5000, service=MP)
    wait_firing(e2e_prometheus.url)
    async with open_runtime(settings) as rt:
        watching = await _cycle_until(rt, "watching")
        if by_hand:
            services_target.set("process_start_time_seconds", 2_000, service=MP)  # docker restart
        services_target.set(LEAK, 100, service=MP)
        await _until_quiet(e2e_prometheus)
        await run_cycle(rt, datetime.now(UTC))
        ended = rt.store.get(watching.id)
    assert isinstance(ended, Incident) and ended.state == "skipped", ended
    says = "after a restart of market-predictor" if by_hand else "cleared on its own"
    assert says in (ended.resolution or ""), ended.resolution
    assert ended.cleared_at is not None and gateway.executions() == []
    row = _row(_report(env, tmp_path))
    assert row["observed_other_hand_rate"] == (1.0 if by_hand else 0.0)
    assert row["time_to_recovery_p50_seconds"]


async def _approved_restart(rt: Runtime, prom: LocalPrometheus, target: MetricsTarget) -> None:
    """One leak: it fires, the restart waits, a human approves it, it heals, verified."""
    target.set(LEAK, 5000, service=MP)
    wait_firing(prom.url)
    waiting = await _cycle_until(rt, "awaiting_approval")
    answer = make_answer(approve=True, by="alice", reason="leak", at=datetime.now(UTC))
    reply = await answer_approval(rt, waiting.id, answer, pin=Pin("restart", MP))
    assert reply.ok, reply
    await _until_quiet(prom)
    assert await run_verifications(rt, _later(rt)) == 1
    healed = rt.store.get(waiting.id)
    assert isinstance(healed, Incident) and healed.state == "resolved", healed


async def test_healed_approvals_earn_auto_and_failures_lose_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    store_url: str,
    e2e_prometheus: LocalPrometheus,
    services_target: MetricsTarget,
    gateway: GatewaySimulator,
    healing: Healing,
) -> None:
    """Five approved restarts that each healed: report suggests auto with the exact TOML;
    with it pasted, a restart sent alone that does not heal: report suggests approve."""
    settings, env = _settings(tmp_path, monkeypatch, e2e_prometheus, gateway, store_url, "approve")
    async with open_runtime(settings) as rt:
        for _ in range(5):
            await _approved_restart(rt, e2e_prometheus, services_target)
    assert len(gateway.executions()) == 5
    doc = _report(env, tmp_path)
    row = _row(doc)
    assert (row["approved"], row["success_rate"], row["recurrence_rate"]) == (5, 1.0, 0.0)
    assert row["approval_latency_p50_seconds"] is not None
    [promote] = doc["suggestions"]
    assert (promote["service"], promote["action"], promote["from"], promote["to"]) == (
        MP,
        "restart",
        "approve",
        "auto",
    )
    assert promote["toml"] == '[services.market-predictor]\nautonomy = { restart = "auto" }'
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--since", "1h"]) == 0
    text = capsys.readouterr().out
    assert 'autonomy = { restart = "auto" }' in text and "approve -> auto" in text

    # The operator pastes the line: restart is auto; the next restart does not heal.
    settings, env = _settings(
        tmp_path, monkeypatch, e2e_prometheus, gateway, store_url, "auto", "pasted.toml"
    )
    healing.heals = False
    async with open_runtime(settings) as rt:
        services_target.set(LEAK, 5000, service=MP)
        wait_firing(e2e_prometheus.url)
        await _cycle_until(rt, "verifying")
        assert await run_verifications(rt, _later(rt)) == 1
    assert len(gateway.executions()) == 6
    doc = _report(env, tmp_path)
    row = _row(doc)
    assert (row["sent"], row["approved"], row["tier"], row["alone_today"]) == (1, 5, "auto", 6)
    [demote] = doc["suggestions"]
    assert (demote["from"], demote["to"]) == ("auto", "approve")
    assert "1 of 1 restart sent alone" in demote["evidence"]
    assert demote["toml"] == '[services.market-predictor]\nautonomy = { restart = "approve" }'
