"""Reloading the TOML file (SIGHUP): what a good and a bad file do, which keys wait for a
restart, that signals are neither lost nor overlapping, that a cycle in flight finishes on
the configuration it started with, and that a new interval reschedules without a second
sweep.

Prometheus is faked at the HTTP boundary (pytest-httpx); the daemon's own objects (the
runtime, the scheduler, the reloader) and a SQLite store are real.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pytest_httpx import HTTPXMock
from structlog.testing import capture_logs

from agent.config import GatewayOptions
from agent.daemon.http import Liveness
from agent.daemon.notify import Notifier
from agent.daemon.reload import AT_START, Reloader, changed_sections, keep_start_bound
from agent.daemon.service import Daemon
from agent.errors import ConfigError
from agent.metrics import AgentMetrics
from agent.runtime import open_runtime
from agent.settings import Settings, load_settings, reload_settings
from tests.conftest import BASE_ENV, CONFIG, make_config
from tests.integration.daemon_support import write_config

PROM = "http://prom.test"
#: A fleet storm at one firing service: the cycle's storm check shows which configuration
#: it ran on.
STORMY = {"storm_min_services": 1, "storm_share": 0.01}
CALM = {"storm_min_services": 1000}


def _settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for key, value in {
        **BASE_ENV,
        "PROMETHEUS_URL": PROM,
        "AGENT_CONFIG": str(tmp_path / "agent.toml"),
        "AGENT_STATE_URL": f"sqlite:///{tmp_path / 'agent.db'}",
        **env,
    }.items():
        monkeypatch.setenv(key, value)
    return load_settings(env_file=None)


def _config(tmp_path: Path, **sections: Any) -> Path:
    sections.setdefault("diagnosis", {"use_llm": False})
    return write_config(tmp_path / "agent.toml", **sections)


def _reloader(settings: Settings, applied: list[Settings], **kwargs: Any) -> Reloader:
    return Reloader(
        lambda: applied[-1] if applied else settings,
        applied.append,
        kwargs.pop("metrics", AgentMetrics()),
        has_model=kwargs.pop("has_model", False),
        **kwargs,
    )


def test_keys_read_at_start_keep_their_running_values_until_a_restart() -> None:
    """A reload applies the policy at once and keeps the clients' timeouts, the gateway's
    options and the webhook's limits as they run, naming each one the file changed."""
    running = make_config()
    new = make_config(
        prometheus={"query_timeout_seconds": 3, "target_labels": ["service"]},
        gateway={"max_attempts": 2},
        webhook={"max_body_bytes": 4096, "coalesce_seconds": 2},
        policy={"action_cooldown_seconds": 60},
    )
    config, kept = keep_start_bound(running, new, has_model=True)
    assert kept == [
        "prometheus.query_timeout_seconds",
        "webhook.max_body_bytes",
        "gateway.max_attempts",
    ]
    assert config.prometheus.query_timeout_seconds == running.prometheus.query_timeout_seconds
    assert config.prometheus.target_labels == ["service"]
    assert config.webhook.coalesce_seconds == 2 and config.webhook.max_body_bytes == 1_000_000
    assert config.gateway == running.gateway
    assert config.policy.action_cooldown_seconds == 60
    assert changed_sections(running, config) == ["prometheus", "webhook", "policy"]


def test_the_shipped_file_marks_the_keys_read_at_start() -> None:
    """config/agent.toml marks "(restart)" exactly the keys a reload keeps until a restart."""
    marked: set[str] = set()
    section = ""
    for line in CONFIG.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif "(restart) every key of this section" in line:
            marked |= {f"{section}.{key}" for key in GatewayOptions.model_fields}
        elif "(restart)" in line and "=" in line:
            marked.add(f"{section}.{line.lstrip('# ').split('=')[0].strip()}")
    assert marked == {f"{s}.{k}" for s, keys in AT_START.items() for k in keys}


@pytest.mark.parametrize(
    ("running", "file", "has_model", "use_llm", "kept"),
    [
        (True, False, True, False, []),  # turning the model off applies at once
        (False, True, True, True, []),  # ... and on again, while its client is there
        (False, True, False, False, ["diagnosis.use_llm"]),  # no client: at the next restart
    ],
)
def test_the_model_is_turned_off_at_once_and_on_only_where_a_client_exists(
    running: bool, file: bool, has_model: bool, use_llm: bool, kept: list[str]
) -> None:
    """use_llm follows the file unless turning it on needs a client the process lacks."""
    config, names = keep_start_bound(
        make_config(diagnosis={"use_llm": running}),
        make_config(diagnosis={"use_llm": file}),
        has_model=has_model,
    )
    assert (config.diagnosis.use_llm, names) == (use_llm, kept)


def test_a_reload_reads_the_file_and_keeps_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is read again; a variable that overrides one of its keys still wins, and
    a change of the environment since start-up is not read."""
    _config(tmp_path, policy={"action_cooldown_seconds": 900})
    settings = _settings(tmp_path, monkeypatch, SWEEP_INTERVAL_SECONDS="7")
    _config(tmp_path, policy={"action_cooldown_seconds": 60}, schedule={"lease_seconds": 9})
    monkeypatch.setenv("SWEEP_INTERVAL_SECONDS", "99")
    fresh = reload_settings(settings)
    assert fresh.env is settings.env
    assert fresh.config.policy.action_cooldown_seconds == 60
    assert fresh.config.schedule.lease_seconds == 9
    assert fresh.config.schedule.sweep_interval_seconds == 7


def test_a_broken_file_keeps_the_running_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every problem of a broken file is one log line; nothing is applied, the gauge says
    0; the next good file applies and says 1 with the time of that success."""
    _config(tmp_path)
    settings = _settings(tmp_path, monkeypatch)
    metrics = AgentMetrics()
    applied: list[Settings] = []
    reloader = _reloader(settings, applied, metrics=metrics)
    reloader.started(at=1.0)
    text = (tmp_path / "agent.toml").read_text()
    assert "storm_share = 0.5\n" in text
    broken = text.replace("storm_share = 0.5\n", "storm_share = 5\nno_such_key = 1\n", 1)
    (tmp_path / "agent.toml").write_text(broken)
    with capture_logs() as logs:
        assert reloader.reload() is False
    failed = [e for e in logs if e["event"] == "config_reload_failed"]
    assert sorted(e["problem"].split(": ", 1)[1] for e in failed) == [
        "policy.no_such_key: Extra inputs are not permitted",
        "policy.storm_share: Input should be less than or equal to 1",
    ]
    assert applied == [] and reloader.ok is False
    assert metrics.config_reload_ok._value.get() == 0
    assert metrics.config_reload_at._value.get() == 1.0

    (tmp_path / "agent.toml").write_text(text.replace("storm_share = 0.5", "storm_share = 0.8"))
    with capture_logs() as logs:
        assert reloader.reload() is True
    [reloaded] = [e for e in logs if e["event"] == "config_reloaded"]
    assert reloaded["changed"] == ["policy"]
    assert applied[-1].config.policy.storm_share == 0.8 and reloader.ok is True
    assert metrics.config_reload_ok._value.get() == 1
    assert metrics.config_reload_at._value.get() > 1.0


def test_a_file_that_vanished_keeps_the_running_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file gone between the check and the read is one problem naming it; the running
    configuration stays."""
    _config(tmp_path)
    settings = _settings(tmp_path, monkeypatch)
    (tmp_path / "agent.toml").unlink()
    with pytest.raises(ConfigError) as caught:
        reload_settings(settings)
    assert list(caught.value.problems) == [f"AGENT_CONFIG: no such file {tmp_path / 'agent.toml'}"]
    applied: list[Settings] = []
    assert _reloader(settings, applied).reload() is False and applied == []


async def _until(done: Callable[[], bool], what: str) -> None:
    """Let the loop run until ``done``: a bounded number of turns, no wall clock."""
    for _ in range(1000):
        if done():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never: {what}")


async def test_a_sighup_during_a_reload_is_followed_by_exactly_one_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two SIGHUPs in a row: one reload, then the next; none lost, none overlapping, and
    a burst that arrives during one reload asks for one more, not one each."""
    _config(tmp_path)
    settings = _settings(tmp_path, monkeypatch)
    applied: list[Settings] = []
    running = 0

    def apply(fresh: Settings) -> None:
        nonlocal running
        running += 1
        assert running == 1, "two reloads overlap"
        applied.append(fresh)
        if len(applied) == 1:
            reloader.request()
            reloader.request()
        running -= 1

    reloader = Reloader(lambda: settings, apply, AgentMetrics(), has_model=False)
    stopping = asyncio.Event()
    task = asyncio.create_task(reloader.run(stopping))
    reloader.request()
    await _until(lambda: reloader.done == 2, "the second reload")
    for _ in range(50):
        await asyncio.sleep(0)
    stopping.set()
    task.cancel()
    assert reloader.done == 2 and len(applied) == 2


def _alerts(request: httpx.Request) -> dict[str, Any]:
    since = (datetime.now(UTC) - timedelta(minutes=2)).isoformat()
    alert = {
        "state": "firing",
        "labels": {"alertname": "DiskAlmostFull", "service": "market-predictor"},
        "annotations": {},
        "activeAt": since,
        "value": "1e+00",
    }
    return {"status": "success", "data": {"alerts": [alert]}}


def _prometheus(hold: Callable[[], Awaitable[None]]) -> Callable[..., Any]:
    async def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/alerts":
            await hold()
            return httpx.Response(200, json=_alerts(request))
        if request.url.path == "/-/healthy":
            return httpx.Response(200, text="ok")
        return httpx.Response(200, json={"status": "success", "data": {"result": []}})

    return answer


async def _drained(daemon: Daemon) -> None:
    await asyncio.gather(*list(daemon.inflight))


async def test_a_cycle_in_flight_finishes_on_the_configuration_it_started_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, httpx_mock: HTTPXMock
) -> None:
    """SIGHUP while a cycle waits on Prometheus: that cycle decides on the old
    configuration (a storm at one service), the next one on the new (no storm: it ends)."""
    entered, release = asyncio.Event(), asyncio.Event()
    first = True

    async def hold() -> None:
        nonlocal first
        if first:
            first = False
            entered.set()
            await release.wait()

    httpx_mock.add_callback(
        _prometheus(hold), url=re.compile(re.escape(PROM) + ".*"), is_reusable=True
    )
    _config(tmp_path, policy=STORMY)
    settings = _settings(tmp_path, monkeypatch)
    async with open_runtime(settings) as rt:
        daemon = Daemon(rt, Notifier(None), Liveness(60))
        cycle = asyncio.create_task(daemon.sweep_job())
        await entered.wait()
        _config(tmp_path, policy=CALM)
        assert daemon.reloader.reload()
        assert rt.config.policy.storm_min_services == 1000
        release.set()
        await cycle
        [storm] = [i for i in rt.store.current() if i.kind == "storm"]
        assert storm.state == "watching"
        await daemon.sweep_job()
        await _drained(daemon)
        ended = rt.store.get(storm.id)
        assert ended is not None and getattr(ended, "state", None) == "resolved"
        [leak] = [i for i in rt.store.current() if i.kind == "alert"]
        assert leak.state == "escalated"  # released from the storm, diagnosed: the runbook


async def test_a_new_interval_reschedules_the_sweep_without_a_second_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, httpx_mock: HTTPXMock
) -> None:
    """A reload that changes the interval restarts the sweep's clock at the reload: the
    next sweep is one new interval later, none runs because of the reload, one job stays;
    the daemon's window, limit and /healthz bound follow the file too."""

    async def hold() -> None:
        return None

    httpx_mock.add_callback(
        _prometheus(hold),
        url=re.compile(re.escape(PROM) + ".*"),
        is_reusable=True,
        is_optional=True,
    )
    _config(tmp_path, schedule={"sweep_interval_seconds": 300}, policy=CALM)
    settings = _settings(tmp_path, monkeypatch)
    async with open_runtime(settings) as rt:
        daemon = Daemon(rt, Notifier(None), Liveness(60))
        daemon.schedule()
        try:
            await _until(lambda: daemon.liveness.last_sweep is not None, "the first sweep")
            await _drained(daemon)
            sweeps = rt.metrics.sweeps.labels(result="ok", trigger="schedule")._value.get()
            assert sweeps == 1
            _config(
                tmp_path,
                schedule={"sweep_interval_seconds": 45, "misfire_grace_seconds": 7},
                policy=CALM,
                webhook={"coalesce_seconds": 3},
                diagnosis={"use_llm": False, "max_concurrency": 2},
            )
            before = datetime.now(UTC)
            assert daemon.reloader.reload()
            after = datetime.now(UTC)
            for _ in range(50):
                await asyncio.sleep(0)
            [job] = [j for j in daemon.scheduler.get_jobs() if j.id == "sweep"]
            assert job.trigger.interval == timedelta(seconds=45)
            assert job.misfire_grace_time == 7
            assert before + timedelta(seconds=45) <= job.next_run_time
            assert job.next_run_time <= after + timedelta(seconds=45)
            assert rt.metrics.sweeps.labels(result="ok", trigger="schedule")._value.get() == sweeps
            assert daemon.liveness.max_age == 3 * 45 + 7
            assert daemon.waker.window == 3 and daemon.diagnoses.limit == 2
            assert rt.metrics.sweep_interval._value.get() == 45
        finally:
            daemon.scheduler.shutdown(wait=False)
