"""A full diagnosis whose tool calls run against a real Prometheus."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from pytest_httpx import HTTPXMock

from agent.clients.llm import LLMOptions, build_llm_client
from agent.config import Severity
from agent.diagnosis.engine import DiagnosisDeps, diagnose
from agent.local import LocalPrometheus, MetricsTarget
from agent.sweep.collector import fetch_alerts
from agent.sweep.findings import Finding, fingerprint
from tests.conftest import MakePrometheus, make_config
from tests.integration.conftest import eventually
from tests.llm_fakes import CHAT_URL, LLM_BASE, completion, plan, triage

pytestmark = pytest.mark.integration


@pytest.mark.httpx_mock(should_mock=lambda request: request.url.host == "llm.test")
async def test_full_run_with_tool_calls(
    httpx_mock: HTTPXMock,
    prometheus: LocalPrometheus,
    metrics_target: MetricsTarget,
    make_prometheus: MakePrometheus,
) -> None:
    """Triage, two investigation steps with four real tool calls, then a validated plan."""
    metrics_target.set("test_diag_bytes", 123456, service="market-predictor")
    metrics_target.set("test_leak_bytes", 500, service="market-predictor")  # TestMemoryLeak
    client = make_prometheus(prometheus.url, timeout=5)

    async def firing() -> bool:
        return any(
            f.name == "TestMemoryLeak"
            for f in (
                await fetch_alerts(client, make_config().prometheus, datetime.now(UTC))
            ).findings
        )

    await eventually(firing, what="TestMemoryLeak to fire")

    async def scraped() -> bool:
        # At least 2 s of history: the library rounds a range query's end to whole seconds.
        at = datetime.now(UTC) - timedelta(seconds=2)
        return bool(await client.query('test_diag_bytes{service="market-predictor"}', at=at))

    await eventually(scraped, what="test_diag_bytes scraped 2 s ago")
    httpx_mock.add_response(url=CHAT_URL, json=triage())
    httpx_mock.add_response(
        url=CHAT_URL,
        json=completion(
            None,
            [
                # last_over_time: a scrape that times out on a loaded machine marks the
                # series stale at once; the tool plumbing, not staleness, is under test.
                (
                    "prom_query",
                    {"expr": 'last_over_time(test_diag_bytes{service="market-predictor"}[5m])'},
                ),
                ("prom_range", {"expr": "test_diag_bytes", "minutes": 5}),
            ],
        ),
    )
    httpx_mock.add_response(
        url=CHAT_URL,
        json=completion(
            None,
            [
                ("alert_rule", {"alertname": "TestMemoryLeak"}),
                ("service_alerts", {"service": "market-predictor"}),
            ],
        ),
    )
    httpx_mock.add_response(url=CHAT_URL, json=completion("Memory at 123456 bytes and rising."))
    httpx_mock.add_response(url=CHAT_URL, json=plan())
    options = LLMOptions(model="gpt-4o", temperature=0, max_tokens=500)
    llm, http = build_llm_client(api_key="sk-test-abcdef123", base_url=LLM_BASE, options=options)
    labels = {"alertname": "TestMemoryLeak", "service": "market-predictor"}
    finding = Finding(
        kind="alert",
        name="TestMemoryLeak",
        target="market-predictor",
        severity=Severity.critical,
        labels=labels,
        annotations={"summary": "leak"},
        value=123456.0,
        first_seen=datetime.now(UTC),
        fingerprint=fingerprint("alert", "TestMemoryLeak", labels, []),
    )
    deps = DiagnosisDeps(config=make_config(), prometheus=client, llm=llm)
    try:
        result = await diagnose(finding, deps, datetime.now(UTC))
    finally:
        await http.aclose()
    assert (result.decision.decided_by, result.decision.action) == ("llm", "restart")
    assert result.usage["investigation"].calls == 3
    tools = {m["name"]: m["content"] for m in result.transcript if m.get("role") == "tool"}
    assert set(tools) == {"prom_query", "prom_range", "alert_rule", "service_alerts"}
    assert json.loads(tools["prom_query"])[0]["value"] == "123456"
    summary = json.loads(tools["prom_range"])[0]
    assert summary["max"] == 123456 and summary["points"] >= 1
    assert json.loads(tools["alert_rule"])["expr"] == "test_leak_bytes > 100"
    # the alerts firing for the service, as Prometheus lists them: the leak among them
    listed = json.loads(tools["service_alerts"])
    assert {"alertname": "TestMemoryLeak", "state": "firing"} in listed, listed
    assert all(set(a) == {"alertname", "state"} for a in listed), listed
    # The tool results went back to the model in the next request.
    last_investigation = json.loads(httpx_mock.get_requests(url=CHAT_URL)[3].read())
    assert sum(m["role"] == "tool" for m in last_investigation["messages"]) == 4
