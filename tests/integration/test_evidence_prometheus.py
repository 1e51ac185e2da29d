"""On a real Prometheus: the evidence the model receives is the series behind the alert,
its rise included, not the few points above the threshold."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pytest_httpx import HTTPXMock

from agent.clients.llm import LLMOptions, build_llm_client
from agent.clients.prometheus import PrometheusClient
from agent.diagnosis.engine import DiagnosisDeps, diagnose
from agent.local import LocalPrometheus, MetricsTarget
from agent.sweep.collector import fetch_alerts
from agent.sweep.findings import Finding
from tests.conftest import MakePrometheus, make_config
from tests.llm_fakes import CHAT_URL, LLM_BASE, completion, plan, triage

pytestmark = pytest.mark.integration

THRESHOLD = 1.5e8
RULES = """
groups:
- name: evidence
  rules:
  - alert: EvidenceMemoryLeak
    expr: evidence_leak_bytes{service="market-predictor"} > 1.5e+08
    for: 5s
    labels: {severity: critical}
"""
#: The leak grows this much a second: it reaches the threshold after 50 s of rising.
GROWTH = 1e6
START = 1.0e8


@pytest.fixture
def leaky(tmp_path: Path) -> Iterator[tuple[MetricsTarget, LocalPrometheus]]:
    """A scrape target and a Prometheus with the leak's alerting rule."""
    target = MetricsTarget().start()
    server = LocalPrometheus(tmp_path / "prom", targets={"leaky": target.address}, rules=RULES)
    try:
        server.start()
        yield target, server
    finally:
        server.stop()
        target.stop()


async def _rise_until_firing(target: MetricsTarget, prometheus: PrometheusClient) -> Finding:
    """Raise the leak by GROWTH every second, from below the threshold, until its alert
    fires (about a minute: 50 s to cross the threshold, then the rule's ``for``)."""
    opts = make_config().prometheus
    for second in range(110):
        value = START + second * GROWTH
        target.set("evidence_leak_bytes", value, service="market-predictor")
        target.set("evidence_leak_bytes", 5e7, service="coding-ai-agent")
        if value > THRESHOLD:
            found = (await fetch_alerts(prometheus, opts, datetime.now(UTC))).findings
            if found:
                return found[0]
        await asyncio.sleep(1)
    raise AssertionError("the leak's alert never fired")


@pytest.mark.httpx_mock(should_mock=lambda request: request.url.host == "llm.test")
async def test_a_leak_rising_for_a_minute_reaches_the_model_as_a_rising_series(
    httpx_mock: HTTPXMock,
    leaky: tuple[MetricsTarget, LocalPrometheus],
    make_prometheus: MakePrometheus,
) -> None:
    """A leak that rose for a minute before its alert fired: the first request to the
    model carries the series behind the alert (no comparison), for the finding's service
    only, with at least 10 points, a positive slope and the rule's threshold."""
    target, server = leaky
    prometheus = make_prometheus(server.url, timeout=5)
    finding = await _rise_until_firing(target, prometheus)
    for answer in (triage(), completion("Memory rises steadily: a leak."), plan()):
        httpx_mock.add_response(url=CHAT_URL, json=answer)
    options = LLMOptions(model="gpt-4o", temperature=0, max_tokens=500)
    llm, http = build_llm_client(api_key="sk-test-abcdef123", base_url=LLM_BASE, options=options)
    try:
        await diagnose(finding, DiagnosisDeps(make_config(), prometheus, llm), datetime.now(UTC))
    finally:
        await http.aclose()
    first = json.loads(httpx_mock.get_requests(url=CHAT_URL)[0].read())
    shared = first["messages"][1]["content"]
    block = re.search(r"<evidence-data>\n(.*?)\n</evidence-data>", shared, re.DOTALL)
    assert block is not None, shared
    evidence = json.loads(block.group(1))
    assert evidence["query"] == 'evidence_leak_bytes{service="market-predictor"}'
    assert evidence["threshold"] == "> 1.5e8"
    [series] = evidence["series"]  # the other service's series is not the finding's
    points = series.get("points") or series["points_x1e8"]
    assert len(points) >= 10
    assert series["slope_per_min"] > 0
    assert series["first"] < THRESHOLD < series["last"]
    assert series["min_past_threshold"] > 0
