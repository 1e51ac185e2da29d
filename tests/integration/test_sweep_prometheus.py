"""The sweep against a real Prometheus and Alertmanager, with a scrape target we control."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from agent.clients.alertmanager import AlertmanagerClient
from agent.config import AgentConfig
from agent.errors import StoreError
from agent.local import LocalAlertmanager, LocalPrometheus, MetricsTarget
from agent.metrics import AgentMetrics
from agent.sweep.collector import SweepDeps, SweepReport, sweep
from tests.conftest import MakePrometheus, alertmanager_client, make_config
from tests.integration.conftest import eventually

pytestmark = pytest.mark.integration


def _deps(
    make: MakePrometheus,
    url: str,
    config: AgentConfig,
    am: AlertmanagerClient | None = None,
    timeout: float = 5,
) -> SweepDeps:
    return SweepDeps(
        config=config,
        prometheus=make(url, timeout=timeout),
        metrics=AgentMetrics(),
        alertmanager=am,
    )


def _now() -> datetime:
    return datetime.now(UTC)


def _checks(**checks: object) -> AgentConfig:
    return make_config(checks=checks)


async def test_alert_goes_pending_then_firing_and_is_one_finding(
    prometheus: LocalPrometheus, metrics_target: MetricsTarget, make_prometheus: MakePrometheus
) -> None:
    """A pending alert is no finding; once firing it is exactly one finding."""
    deps = _deps(make_prometheus, prometheus.url, _checks())
    metrics_target.set("test_leak_bytes", 500, service="market-predictor")

    async def pending_seen() -> SweepReport | None:
        payload = await deps.prometheus.alerts_payload()
        states = {a["labels"]["alertname"]: a["state"] for a in payload["data"]["alerts"]}  # type: ignore[index]
        if states.get("TestMemoryLeak") != "pending":
            return None
        return await sweep(deps, _now())

    report = await eventually(pending_seen, what="TestMemoryLeak pending")
    assert [f for f in report.findings if f.name == "TestMemoryLeak"] == []

    async def firing() -> SweepReport | None:
        rep = await sweep(deps, _now())
        return rep if any(f.name == "TestMemoryLeak" for f in rep.findings) else None

    report = await eventually(firing, what="TestMemoryLeak firing")
    [finding] = [f for f in report.findings if f.name == "TestMemoryLeak"]
    assert finding.kind == "alert"
    assert finding.target == "market-predictor"
    assert finding.severity.value == "critical"
    assert finding.annotations["summary"] == "leak on market-predictor"
    assert finding.value == 500
    again = await sweep(deps, _now())
    assert [f.fingerprint for f in again.findings if f.name == "TestMemoryLeak"] == [
        finding.fingerprint
    ]
    metrics_target.remove("test_leak_bytes", service="market-predictor")


async def test_health_check_fires_on_bad_series_only(
    prometheus: LocalPrometheus, metrics_target: MetricsTarget, make_prometheus: MakePrometheus
) -> None:
    """A health check yields a finding for the failing series and none for the healthy one."""
    config = _checks(
        health=[{"name": "TestUp", "expr": "test_up_flag == 0", "target_label": "service"}]
    )
    deps = _deps(make_prometheus, prometheus.url, config)
    metrics_target.set("test_up_flag", 0, service="sick")
    metrics_target.set("test_up_flag", 1, service="well")

    async def fired() -> SweepReport | None:
        rep = await sweep(deps, _now())
        return rep if any(f.name == "TestUp" for f in rep.findings) else None

    report = await eventually(fired, what="health check finding")
    assert [f.target for f in report.findings if f.name == "TestUp"] == ["sick"]
    assert all(s.ok for s in report.sources)


class _StoreDown:
    """A store that cannot say when series started failing."""

    def track_failing(self, failing: object, known: object, now: datetime) -> dict[str, Any]:
        raise StoreError("incident store (sqlite): disk I/O error")


async def test_a_check_with_for_seconds_is_pending_first_and_unknown_without_its_store(
    prometheus: LocalPrometheus, metrics_target: MetricsTarget, make_prometheus: MakePrometheus
) -> None:
    """A failing series is reported pending (not a finding) until it has failed for
    for_seconds, then a finding that started when it first failed; when the store cannot
    tell, the check counts as failed: no finding, nothing pending, a partial sweep."""
    check = {"name": "SlowUp", "expr": "test_slow_flag == 0", "target_label": "service"}
    config = _checks(health=[{**check, "for_seconds": 2}])
    deps = _deps(make_prometheus, prometheus.url, config)
    metrics_target.set("test_slow_flag", 0, service="sick")

    async def pending() -> SweepReport | None:
        rep = await sweep(deps, _now())
        return rep if rep.pending else None

    first = await eventually(pending, what="a pending series")
    assert first.findings == [] and [f.target for f in first.pending] == ["sick"]
    assert first.to_dict()["pending"][0]["name"] == "SlowUp"

    async def ready() -> SweepReport | None:
        rep = await sweep(deps, _now())
        return rep if rep.findings else None

    later = await eventually(ready, what="the series to fail for 2s")
    [finding] = later.findings
    assert finding.first_seen == first.pending[0].first_seen and later.pending == []

    blind = await sweep(replace(deps, pending=_StoreDown()), _now())
    assert blind.findings == [] and blind.pending == []
    assert blind.failed_sources == ["check:SlowUp"]
    assert "disk I/O error" in (blind.sources[-1].error or "")


async def test_anomaly_check_fires_on_jump_not_on_flat_noise(
    prometheus: LocalPrometheus, metrics_target: MetricsTarget, make_prometheus: MakePrometheus
) -> None:
    """A real jump is an anomaly; a flat series with tiny noise never is."""
    config = _checks(
        anomaly=[
            {
                "name": "TestMemJump",
                "selector": "test_mem_bytes",
                "target_label": "name",
                "baseline_window": "30s",
                "z_threshold": 2.0,
                "min_abs_change": 500,
                "direction": "up",
            }
        ]
    )
    deps = _deps(make_prometheus, prometheus.url, config)
    quiet_reports = []
    for i in range(24):  # 12 s of baseline at 2 samples/s, noise of a few units
        noise = (i % 3) - 1
        metrics_target.set("test_mem_bytes", 1000 + 3 * noise, name="leaky")
        metrics_target.set("test_mem_bytes", 1000 + noise, name="flat")
        if i % 6 == 5:
            quiet_reports.append(await sweep(deps, _now()))
        time.sleep(0.5)
    assert all(not r.findings for r in quiet_reports), "anomaly fired on the baseline"
    metrics_target.set("test_mem_bytes", 6000, name="leaky")

    async def fired() -> SweepReport | None:
        rep = await sweep(deps, _now())
        assert not any(f.target == "flat" for f in rep.findings)
        return rep if any(f.target == "leaky" for f in rep.findings) else None

    report = await eventually(fired, timeout=20, what="anomaly finding")
    [finding] = report.findings
    assert finding.kind == "anomaly" and finding.name == "TestMemJump"
    assert finding.value is not None and finding.value > 2.0


async def test_alertmanager_silence_suppresses_alert(
    prometheus: LocalPrometheus,
    alertmanager: LocalAlertmanager,
    metrics_target: MetricsTarget,
    make_prometheus: MakePrometheus,
) -> None:
    """An alert silenced in Alertmanager is skipped with the silence id; others pass."""
    start = datetime.now(UTC)
    silence = {
        "matchers": [{"name": "alertname", "value": "TestSilenced", "isRegex": False}],
        "startsAt": start.isoformat(),
        "endsAt": (start + timedelta(hours=1)).isoformat(),
        "createdBy": "tests",
        "comment": "maintenance",
    }
    async with httpx.AsyncClient(base_url=alertmanager.url) as http:
        created = await http.post("/api/v2/silences", json=silence)
        assert created.status_code == 200, created.text
        silence_id = created.json()["silenceID"]
        deps = _deps(make_prometheus, prometheus.url, _checks(), alertmanager_client(http))
        metrics_target.set("test_silenced_flag", 1, service="quiet-svc")
        metrics_target.set("test_loud_flag", 1, service="loud-svc")

        async def skipped() -> SweepReport | None:
            rep = await sweep(deps, _now())
            return rep if any(s.name == "TestSilenced" for s in rep.skipped) else None

        report = await eventually(skipped, what="silenced alert skipped")
    [skip] = [s for s in report.skipped if s.name == "TestSilenced"]
    assert skip.reason == "silenced" and skip.detail == silence_id
    assert not any(f.name == "TestSilenced" for f in report.findings)
    assert any(f.name == "TestLoud" for f in report.findings)


async def test_unreachable_alertmanager_does_not_stop_sweep(
    prometheus: LocalPrometheus, metrics_target: MetricsTarget, make_prometheus: MakePrometheus
) -> None:
    """With Alertmanager down the sweep still returns Prometheus findings and says so."""
    metrics_target.set("test_loud_flag", 1, service="loud-svc")
    async with httpx.AsyncClient(base_url="http://127.0.0.1:9", timeout=1) as http:
        deps = _deps(make_prometheus, prometheus.url, _checks(), alertmanager_client(http))

        async def found() -> SweepReport | None:
            rep = await sweep(deps, _now())
            return rep if any(f.name == "TestLoud" for f in rep.findings) else None

        report = await eventually(found, what="TestLoud finding")
    assert report.failed_sources == ["alertmanager"]


class _BadPrometheus:
    """An HTTP server that answers every request with a configured status, body and delay."""

    def __init__(self, status: int, body: bytes, delay: float = 0.0) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.do_GET()

            def do_GET(self) -> None:
                outer.headers.append(dict(self.headers.items()))
                time.sleep(outer.delay)
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.status, self.body, self.delay = status, body, delay
        self.headers: list[dict[str, str]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def bad_prometheus(request: pytest.FixtureRequest) -> Iterator[_BadPrometheus]:
    """A misbehaving Prometheus stand-in, configured by the test's parameter."""
    status, body, delay = request.param
    server = _BadPrometheus(status, body, delay)
    yield server
    server.server.shutdown()
    server.server.server_close()


ERROR_BODY = json.dumps({"status": "error", "errorType": "bad_data", "error": "parse error"})


@pytest.mark.parametrize(
    "bad_prometheus",
    [
        (200, b"{not json", 0.0),
        (200, b'{"status": "success", "data": {}}', 0.0),
        (400, ERROR_BODY.encode(), 0.0),
        (503, b"overloaded", 0.0),
        (200, b"[]", 2.5),  # slower than the 1 s query timeout
    ],
    indirect=True,
    ids=["malformed-json", "no-result", "error-envelope", "http-503", "timeout"],
)
async def test_broken_prometheus_answers_fail_sources_not_the_sweep(
    bad_prometheus: _BadPrometheus,
    make_prometheus: MakePrometheus,
) -> None:
    """Every source fails on its own, is counted, and the sweep returns a report."""
    config = _checks(health=[{"name": "H", "expr": "up == 0", "target_label": "job"}])
    deps = _deps(make_prometheus, bad_prometheus.url, config, timeout=1)
    report = await sweep(deps, _now())
    assert report.findings == []
    assert sorted(report.failed_sources) == ["alerts", "check:H"]
    failures = deps.metrics.registry.get_sample_value(
        "devops_agent_sweep_source_failures_total", {"source": "alerts"}
    )
    assert failures == 1


async def test_unreachable_prometheus_fails_sources(make_prometheus: MakePrometheus) -> None:
    """Connection refused is a failed source with the cause, not an exception."""
    deps = _deps(make_prometheus, "http://127.0.0.1:9", _checks(), timeout=1)
    report = await sweep(deps, _now())
    [source] = report.sources
    assert not source.ok and source.error and "unreachable" in source.error


@pytest.mark.parametrize(
    "bad_prometheus", [(200, b'{"status": "success", "data": {"alerts": []}}', 0.0)], indirect=True
)
async def test_bearer_token_is_sent_to_prometheus(
    bad_prometheus: _BadPrometheus, make_prometheus: MakePrometheus
) -> None:
    """PROMETHEUS_BEARER_TOKEN goes out as an Authorization header on every request."""
    config = _checks(health=[{"name": "H", "expr": "up == 0", "target_label": "job"}])
    deps = SweepDeps(
        config=config,
        prometheus=make_prometheus(bad_prometheus.url, timeout=2, token="prom-token-123"),
        metrics=AgentMetrics(),
    )
    await sweep(deps, _now())
    assert len(bad_prometheus.headers) == 2
    assert {h["Authorization"] for h in bad_prometheus.headers} == {"Bearer prom-token-123"}
