"""Hostile inputs, one at a time: odd text in logs and on terminals, absurd numbers in the
settings, wild tool arguments and model replies, answers larger than their caps."""

from __future__ import annotations

import io
import json
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pytest_httpx import HTTPXMock

from agent.cli.render import render_incidents, render_timeline
from agent.clients.llm import LLMOptions, build_llm_client
from agent.config import Severity
from agent.diagnosis.engine import DiagnosisDeps, diagnose
from agent.diagnosis.tools import Toolbox
from agent.errors import ConfigError, PrometheusPermanentError
from agent.incidents.lifecycle import on_finding
from agent.incidents.model import Event
from agent.logs import LINE_MAX, configure_logging, get_logger
from agent.settings import load_settings
from agent.sweep.alerts import parse_alerts
from agent.sweep.findings import Finding, fingerprint
from tests.conftest import MakePrometheus, Sleeps, make_config
from tests.llm_fakes import CHAT_URL, LLM_BASE, completion, plan, triage

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
PROM = "http://prom.test"


def _lines(buffer: io.StringIO) -> list[str]:
    return [line for line in buffer.getvalue().splitlines() if line]


def test_a_huge_label_makes_a_bounded_log_line() -> None:
    """A 100 KB label, a 1,000-item list, deep nesting and a lone surrogate: one JSON object
    per line, every line under the cap, long fields clipped with the marker."""
    buffer = io.StringIO()
    configure_logging("INFO", "json", stream=buffer)
    nested: dict[str, Any] = {}
    cursor = nested
    for _ in range(30):
        cursor["deeper"] = {}
        cursor = cursor["deeper"]
    get_logger("test").info(
        "hostile_event",
        label="x" * 100_000,
        items=list(range(1000)),
        nested=nested,
        surrogate="bad \ud800 text",
        **{f"field{i}": "y" * 1900 for i in range(40)},
    )
    [line] = _lines(buffer)
    assert len(line.encode()) <= LINE_MAX
    event = json.loads(line)
    assert event["event"] == "hostile_event"
    assert "truncated" in event or "chars]" in event["label"]


def test_every_field_is_clipped_even_when_the_line_is_short() -> None:
    """A single long field is clipped to FIELD_MAX with the marker naming the cut."""
    buffer = io.StringIO()
    configure_logging("INFO", "json", stream=buffer)
    get_logger("test").info("one_long_field", label="z" * 10_000)
    event = json.loads(_lines(buffer)[0])
    assert len(event["label"]) <= 2000 and event["label"].endswith(" chars]")


def test_console_logs_escape_terminal_controls() -> None:
    """On a terminal (console rendering) an escape sequence in a field is shown escaped."""
    buffer = io.StringIO()
    configure_logging("INFO", "console", stream=buffer)
    get_logger("test").info("console_event", label="\x1b[2J\x1b[31mred")
    out = buffer.getvalue()
    assert "\x1b" not in out and "\\x1b[2J" in out


def _finding(**labels: str) -> Finding:
    all_labels = {"alertname": "Leak", "service": "market-predictor", **labels}
    return Finding(
        kind="alert",
        name=all_labels["alertname"],
        target=all_labels["service"],
        severity=Severity.critical,
        labels=all_labels,
        annotations={"summary": "\x1b]0;owned\x07 summary"},
        value=1.0,
        first_seen=NOW,
        fingerprint=fingerprint("alert", all_labels["alertname"], all_labels, ()),
    )


def test_incident_listing_and_timeline_escape_controls() -> None:
    """`incidents` and `incidents show` never print raw control characters from labels."""
    finding = _finding(alertname="Leak\x1b[31m", service="svc\r\x1b[2K")
    incident = on_finding(finding, "abc123", NOW).incident
    table = render_incidents([incident.row()])
    timeline = render_timeline(incident, [Event(NOW, "note", {"text": "\x1b[31m\u202eevil"})])
    for text in (table, timeline):
        assert "\x1b" not in text and "\r" not in text and "\u202e" not in text
    assert "\\x1b[31m" in table


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SWEEP_INTERVAL_SECONDS", "inf"),
        ("SWEEP_INTERVAL_SECONDS", "1e300"),
        ("VERIFY_AFTER_SECONDS", "nan"),
        ("ACTION_COOLDOWN_SECONDS", "-inf"),
        ("AI_COMMAND_GATEWAY_TIMEOUT", "1e300"),
        ("LLM_TEMPERATURE", "nan"),
        ("LLM_MAX_TOKENS", "100000000000000000000"),
    ],
)
def test_absurd_numbers_in_the_environment_are_refused(
    base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """inf, nan and 1e300 are configuration problems naming the variable, not a crash later."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=None)
    assert any(p.startswith(f"{name}:") for p in info.value.problems), info.value.problems


def test_absurd_numbers_in_the_toml_file_are_each_reported(
    base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every infinite or out-of-range number of the TOML file is one named problem."""
    original = (Path(base_env["AGENT_CONFIG"])).read_text()
    broken = original.replace("sweep_interval_seconds = 30", "sweep_interval_seconds = inf")
    broken = broken.replace("max_actions_per_hour = 10 ", "max_actions_per_hour = 1000000000000 ")
    broken = broken.replace("z_threshold = 3.0", "z_threshold = nan")
    broken = broken.replace("request_timeout_seconds = 30", "request_timeout_seconds = 1e300")
    path = tmp_path / "agent.toml"
    path.write_text(broken)
    monkeypatch.setenv("AGENT_CONFIG", str(path))
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=None)
    joined = "\n".join(info.value.problems)
    for key in (
        "schedule.sweep_interval_seconds",
        "policy.max_actions_per_hour",
        "checks.anomaly[0].z_threshold",
        "diagnosis.request_timeout_seconds",
    ):
        assert key in joined, joined


@pytest.fixture
def prometheus(make_prometheus: MakePrometheus) -> Any:
    """A Prometheus client for a host that pytest-httpx answers for."""
    return make_prometheus(PROM, timeout=2, max_bytes=50_000)


@pytest.mark.parametrize(
    ("name", "arguments", "expected"),
    [
        (
            "prom_range",
            '{"expr": "up", "minutes": 1e400}',
            "minutes must be a number from 1 to 360",
        ),
        ("prom_range", '{"expr": "up", "minutes": -5}', "minutes must be a number from 1 to 360"),
        ("prom_range", '{"expr": "up", "minutes": true}', "minutes must be a number from 1 to 360"),
        (
            "prom_range",
            '{"expr": "up", "minutes": "NaN"}',
            "minutes must be a number from 1 to 360",
        ),
        ("prom_query", '{"expr": ' + "9" * 5000 + "}", "error: bad arguments"),
        ("prom_query", "[" * 5000 + "]" * 5000, "error: bad arguments"),
        ("prom_query", '{"expr": ""}', "expr must be a non-empty string"),
        ("prom_query", '{"expr": 42}', "expr must be a non-empty string"),
        ("prom_query", json.dumps({"expr": "x" * 3000}), "expr is over 2000 characters"),
        ("alert_rule", '{"alertname": null}', "alertname must be a non-empty string"),
        ("no_such_tool\x1b", "{}", "error: unknown tool"),
        ("prom_query", "not json", "error: bad arguments"),
    ],
)
async def test_tool_arguments_are_checked_not_trusted(
    prometheus: Any, name: str, arguments: str, expected: str
) -> None:
    """Enormous, infinite, negative, mistyped or nested arguments get a tool error back."""
    result = await Toolbox(prometheus, 1500, NOW).run(name, arguments)
    assert expected in result and result.startswith(("error", "refused"))


async def test_odd_prometheus_answers_are_tool_errors_not_crashes(
    httpx_mock: HTTPXMock, prometheus: Any
) -> None:
    """A result list of non-objects, and a rules answer of the wrong shape, are read safely."""
    httpx_mock.add_response(
        url=f"{PROM}/api/v1/query",
        json={"status": "success", "data": {"result": [1, "x", None, {"metric": {}, "value": 3}]}},
    )
    httpx_mock.add_response(
        url=f"{PROM}/api/v1/rules?type=alert", json={"status": "success", "data": {"groups": "?"}}
    )
    box = Toolbox(prometheus, 1500, NOW)
    assert json.loads(await box.run("prom_query", '{"expr": "up"}')) == [
        {"labels": {}, "value": None}
    ]
    assert "no alerting rule" in await box.run("alert_rule", '{"alertname": "A"}')


async def test_an_answer_over_the_cap_is_refused_while_read(
    httpx_mock: HTTPXMock, prometheus: Any
) -> None:
    """An alerts answer larger than prometheus.max_answer_bytes is a permanent error."""
    httpx_mock.add_response(url=f"{PROM}/api/v1/alerts", content=b"x" * 200_000)
    with pytest.raises(PrometheusPermanentError, match="50000-byte cap"):
        await prometheus.alerts_payload()


@pytest.fixture
async def deps(
    sleeps: Sleeps, prometheus: Any, httpx_mock: HTTPXMock
) -> AsyncIterator[DiagnosisDeps]:
    """Diagnosis deps with a small cap on model answers and tight output bounds; Prometheus
    knows no alerting rule (the agent's own evidence says so)."""
    httpx_mock.add_response(
        url=f"{PROM}/api/v1/rules?type=alert",
        json={"status": "success", "data": {"groups": []}},
        is_optional=True,
        is_reusable=True,
    )
    options = LLMOptions(
        model="gpt-4o", temperature=0, max_tokens=500, max_retries=0, request_timeout=5
    )
    llm, http = build_llm_client(
        api_key="sk-test-key123456", base_url=LLM_BASE, options=options, max_answer_bytes=100_000
    )
    llm.sleep = sleeps
    config = make_config(
        diagnosis={
            "max_steps": 3,
            "reply_max_chars": 500,
            "max_tool_calls_per_reply": 3,
            "max_tool_calls": 4,
        }
    )
    yield DiagnosisDeps(config=config, prometheus=prometheus, llm=llm)
    await http.aclose()


async def test_a_model_answer_over_the_cap_falls_back_to_the_runbook(
    httpx_mock: HTTPXMock, deps: DiagnosisDeps
) -> None:
    """A reply of 300 KB is refused while read; the runbook decides."""
    httpx_mock.add_response(url=CHAT_URL, json=completion("z" * 300_000))
    result = await diagnose(_finding(alertname="MemoryLeak"), deps, NOW)
    assert result.decision.decided_by == "runbook"
    assert "100000-byte cap" in result.decision.fallback_reason


async def test_model_output_is_bounded_before_it_is_kept_or_sent_back(
    httpx_mock: HTTPXMock, deps: DiagnosisDeps
) -> None:
    """A reply with 100 tool calls runs 3; the diagnosis runs at most 4 in all; long
    content is clipped in the transcript and in what is sent back to the model."""
    httpx_mock.add_response(
        url=f"{PROM}/api/v1/query",
        json={"status": "success", "data": {"result": []}},
        is_reusable=True,
    )
    many = [("prom_query", {"expr": f"up{i}"}) for i in range(100)]
    for answer in (
        triage(),
        completion("w" * 20_000, many),
        completion("v" * 20_000, many),
        completion("done"),
        plan(),
    ):
        httpx_mock.add_response(url=CHAT_URL, json=answer)
    result = await diagnose(_finding(), deps, NOW)
    assert result.decision.decided_by == "llm"
    tool_answers = [m for m in result.transcript if m.get("role") == "tool"]
    assert len(tool_answers) == 4
    kept = [m for m in result.transcript if m.get("role") == "assistant" and m.get("tool_calls")]
    assert [len(m["tool_calls"]) for m in kept] == [3, 1]
    assert all(
        len(m.get("content") or "") <= 500
        for m in result.transcript
        if m.get("role") == "assistant"
    )
    sent = [json.loads(r.read()) for r in httpx_mock.get_requests(url=CHAT_URL)]
    assert all(
        len(m.get("content") or "") <= 500
        for body in sent
        for m in body["messages"]
        if m["role"] == "assistant"
    )
    assert "tools" not in sent[3]  # the tool budget is spent: no tools offered any more


def test_lone_surrogates_and_odd_types_in_alerts_become_storable_text() -> None:
    """Label text that cannot be encoded, numbers and nested objects become plain strings."""
    entry = {
        "state": "firing",
        "labels": {"alertname": "Leak\ud800", "service": "svc", "n": 5, "deep": [[[[1]]]]},
        "annotations": {"summary": {"nested": True}},
        "activeAt": 12,
        "value": "1e309",
    }
    [finding] = parse_alerts(
        [entry], now=NOW, target_labels=["service"], volatile_labels=[]
    ).findings
    assert finding.name == "Leak\ufffd"
    assert finding.labels["n"] == "5" and finding.labels["deep"] == "<list>"
    assert finding.annotations["summary"] == "<dict>"
    assert finding.value is not None and math.isinf(finding.value)
    json.dumps(finding.to_dict()).encode("utf-8")


async def test_deeply_nested_json_from_prometheus_is_a_failed_read(
    httpx_mock: HTTPXMock, prometheus: Any
) -> None:
    """JSON nested deeper than the parser's recursion is refused with a clear error."""
    httpx_mock.add_response(url=f"{PROM}/api/v1/alerts", content=b"[" * 20_000 + b"]" * 20_000)
    with pytest.raises(PrometheusPermanentError, match="malformed JSON"):
        await prometheus.alerts_payload()


async def test_deeply_nested_json_from_the_model_hands_over_to_the_runbook(
    httpx_mock: HTTPXMock, deps: DiagnosisDeps
) -> None:
    """A model answer that would exhaust the JSON parser's recursion: the runbook decides."""
    httpx_mock.add_response(
        url=CHAT_URL,
        content=b'{"choices": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
        headers={"Content-Type": "application/json"},
    )
    result = await diagnose(_finding(alertname="MemoryLeak"), deps, NOW)
    assert result.decision.decided_by == "runbook"
    assert result.decision.fallback_reason
