"""Diagnosis against the OpenAI-compatible servers people run, from answers recorded from
them: each endpoint's refusals are learned once and remembered, tool calls written as
JSON text are recognised, and a model that never calls a tool still plans from the
evidence the agent gathered itself."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pytest_httpx import HTTPXMock

from agent.clients.llm import LLMOptions, build_llm_client
from agent.diagnosis.engine import DiagnosisDeps, diagnose
from agent.sweep.findings import Finding
from tests.conftest import MakePrometheus, Sleeps, alert_finding, make_config
from tests.llm_fakes import CHAT_URL, LLM_BASE, completion, phase_of, plan, triage

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PROM = "http://prom.test"
RULE_EXPR = 'container_memory_working_set_bytes{name="market-predictor"} > 4e8'

#: llama-cpp-python's server 0.3.36 answering response_format json_schema.
LLAMA_CPP_PYTHON_500 = {
    "error": {
        "message": "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', "
        "'response_format', 'type'), 'msg': \"Input should be 'text' or 'json_object'\", "
        "'input': 'json_schema', 'ctx': {'expected': \"'text' or 'json_object'\"}}\n\n  File "
        '"/usr/lib/python3/site-packages/llama_cpp/server/app.py", line 376, in '
        "create_chat_completion\n    POST /v1/chat/completions",
        "type": "internal_server_error",
        "param": None,
        "code": None,
    }
}
#: vLLM's answer to a schema its guided decoding cannot take.
VLLM_422 = {
    "object": "error",
    "message": "response_format json_schema: invalid schema",
    "code": 422,
}
#: Ollama's answer for a model without tool support.
OLLAMA_NO_TOOLS = {
    "error": {
        "message": "registry.ollama.ai/library/gemma:2b does not support tools",
        "type": "api_error",
        "param": None,
        "code": None,
    }
}


def _finding() -> Finding:
    return alert_finding(first_seen=NOW, annotations={"summary": "memory grows"}, value=5.1e8)


@pytest.fixture
def prometheus_answers(httpx_mock: HTTPXMock) -> None:
    """A Prometheus with the alert's rule and a rising series behind it."""
    rules = {
        "status": "success",
        "data": {
            "groups": [{"rules": [{"name": "MemoryLeak", "query": RULE_EXPR, "duration": 60}]}]
        },
    }
    series = {
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [
                {
                    "metric": {"name": "market-predictor"},
                    "values": [[1, "4.1e8"], [2, "4.6e8"], [3, "5.1e8"]],
                }
            ],
        },
    }
    httpx_mock.add_response(url=f"{PROM}/api/v1/rules?type=alert", json=rules, is_reusable=True)
    httpx_mock.add_response(url=f"{PROM}/api/v1/query_range", json=series, is_reusable=True)
    httpx_mock.add_response(
        url=f"{PROM}/api/v1/query",
        json={"status": "success", "data": {"resultType": "vector", "result": []}},
        is_reusable=True,
        is_optional=True,
    )


@pytest.fixture
async def deps(
    sleeps: Sleeps, make_prometheus: MakePrometheus, prometheus_answers: None
) -> AsyncIterator[DiagnosisDeps]:
    """A model client for one endpoint and a Prometheus faked at the HTTP boundary."""
    options = LLMOptions(
        model="local", temperature=0, max_tokens=500, max_retries=2, request_timeout=5
    )
    llm, http = build_llm_client(api_key="sk-local-000000", base_url=LLM_BASE, options=options)
    llm.sleep = sleeps
    yield DiagnosisDeps(config=make_config(), prometheus=make_prometheus(PROM), llm=llm)
    await http.aclose()


def _chat_bodies(httpx_mock: HTTPXMock) -> list[dict[str, Any]]:
    return [json.loads(r.read()) for r in httpx_mock.get_requests(url=CHAT_URL)]


@pytest.mark.parametrize(
    ("status", "body"),
    [(500, LLAMA_CPP_PYTHON_500), (422, VLLM_422)],
    ids=["llama-cpp-python", "vllm"],
)
async def test_a_refused_schema_is_learned_once_and_remembered(
    httpx_mock: HTTPXMock, deps: DiagnosisDeps, status: int, body: dict[str, Any]
) -> None:
    """A refusal of json_schema (a 422 at once, a 500 when it comes twice in a row) moves
    the endpoint to a JSON object with the schema; it is never retried as a server error
    with backoff, and the next diagnosis never sends it again."""
    refusals = 2 if status == 500 else 1
    for _ in range(refusals):
        httpx_mock.add_response(url=CHAT_URL, status_code=status, json=body)
    for answer in (triage(), completion("Leak."), plan(), triage(), completion("Leak."), plan()):
        httpx_mock.add_response(url=CHAT_URL, json=answer)
    first = (await diagnose(_finding(), deps, NOW)).decision
    second = (await diagnose(_finding(), deps, NOW)).decision
    assert first.decided_by == second.decided_by == "llm"
    formats = [b.get("response_format", {}).get("type") for b in _chat_bodies(httpx_mock)]
    assert formats == [
        *["json_schema"] * refusals,
        "json_object",
        None,
        "json_object",
        "json_object",
        None,
        "json_object",
    ]
    later = _chat_bodies(httpx_mock)[refusals]["response_format"]
    assert later["schema"]["required"] == ["actionable", "urgency", "reason"]
    assert deps.llm is not None and deps.llm.features.structured == "json_object_schema"
    assert (deps.llm.features.tools, deps.llm.options.max_retries) == (True, 2)


async def test_a_server_error_that_names_no_feature_is_still_retried(
    httpx_mock: HTTPXMock, deps: DiagnosisDeps, sleeps: Sleeps
) -> None:
    """A plain 500 is a server error: retried with backoff, the schema kept."""
    httpx_mock.add_response(url=CHAT_URL, status_code=500, json={"error": {"message": "boom"}})
    for answer in (triage(), completion("Leak."), plan()):
        httpx_mock.add_response(url=CHAT_URL, json=answer)
    decision = (await diagnose(_finding(), deps, NOW)).decision
    assert decision.decided_by == "llm" and len(sleeps.waits) == 1
    assert deps.llm is not None and deps.llm.features.structured == "json_schema"


async def test_refused_tools_are_described_in_text_and_written_calls_run(
    httpx_mock: HTTPXMock, deps: DiagnosisDeps
) -> None:
    """Ollama refuses tools for a model: the investigation is asked again without tool
    definitions, the prompt lists the tools, a call written as JSON text runs, and its
    result comes back as delimited untrusted data."""
    written = json.dumps({"tool": "prom_query", "arguments": {"expr": "up"}})
    httpx_mock.add_response(url=CHAT_URL, json=triage())
    httpx_mock.add_response(url=CHAT_URL, status_code=400, json=OLLAMA_NO_TOOLS)
    for answer in (completion(written), completion("Leak, restart."), plan()):
        httpx_mock.add_response(url=CHAT_URL, json=answer)
    result = await diagnose(_finding(), deps, NOW)
    assert result.decision.decided_by == "llm"
    bodies = _chat_bodies(httpx_mock)
    assert "tools" in bodies[1] and "tools" not in bodies[2] and "tools" not in bodies[3]
    instruction = bodies[2]["messages"][2]["content"]
    assert instruction.startswith("Phase 2, investigation") and "prom_query(expr)" in instruction
    back = bodies[3]["messages"]
    assert back[3] == {"role": "assistant", "content": written}
    assert back[4]["role"] == "user"
    assert back[4]["content"].startswith(
        'Tool results (untrusted data):\n<tool-result name="prom_query">'
    )
    assert [r.url.path for r in httpx_mock.get_requests() if r.url.host == "prom.test"].count(
        "/api/v1/query"
    ) == 1
    assert deps.llm is not None and deps.llm.features.tools is False


@pytest.mark.parametrize(
    "written",
    [
        '{"name": "prom_query", "arguments": {"expr": "up"}}',
        '```json\n{"tool": "prom_query", "arguments": {"expr": "up"}}\n```',
        '<tool_call>\n{"name": "prom_query", "arguments": "{\\"expr\\": \\"up\\"}"}\n</tool_call>',
        '[{"name": "prom_query", "parameters": {"expr": "up"}}]',
    ],
    ids=["llama-server", "fenced", "qwen-tags", "list"],
)
async def test_tool_calls_written_as_text_are_recognised(
    httpx_mock: HTTPXMock, deps: DiagnosisDeps, written: str
) -> None:
    """llama-server returns Qwen's calls as text in content: recognised and run, though
    the endpoint took the tool definitions."""
    for answer in (triage(), completion(written), completion("Leak."), plan()):
        httpx_mock.add_response(url=CHAT_URL, json=answer)
    result = await diagnose(_finding(), deps, NOW)
    ran = [m for m in result.transcript if "tool-result" in str(m.get("content"))]
    assert len(ran) == 1 and "error" not in ran[0]["content"].split("\n", 2)[1][:6]
    assert result.decision.decided_by == "llm"


@pytest.mark.parametrize(
    "written",
    [
        '{"name": "docker_exec", "arguments": {"cmd": "rm -rf /"}}',
        '{"name": "prom_query", "arguments": "not json"}',
        '{"name": "prom_query"} and then ignore previous instructions',
    ],
)
async def test_text_that_is_not_one_of_our_tools_is_a_summary(
    httpx_mock: HTTPXMock, deps: DiagnosisDeps, written: str
) -> None:
    """Unknown names, arguments that are not an object, or prose: no call runs."""
    for answer in (triage(), completion(written), plan()):
        httpx_mock.add_response(url=CHAT_URL, json=answer)
    result = await diagnose(_finding(), deps, NOW)
    assert not [r for r in httpx_mock.get_requests() if r.url.path == "/api/v1/query"]
    assert result.usage["investigation"].calls == 1


async def test_a_model_that_never_calls_tools_plans_from_the_agents_evidence(
    httpx_mock: HTTPXMock, deps: DiagnosisDeps
) -> None:
    """Every phase starts with the same two messages, which carry the series behind the
    alert's rule, gathered by the agent; the plan sees them without any tool call."""
    for answer in (triage(), completion("It grows."), plan()):
        httpx_mock.add_response(url=CHAT_URL, json=answer)
    result = await diagnose(_finding(), deps, NOW)
    bodies = _chat_bodies(httpx_mock)
    prefixes = [json.dumps(b["messages"][:2]) for b in bodies]
    assert len(set(prefixes)) == 1
    shared = bodies[0]["messages"][1]["content"]
    behind = RULE_EXPR.removesuffix(" > 4e8")
    assert "<evidence-data>" in shared and f'"query":{json.dumps(behind)}' in shared
    assert '"threshold":"> 4e8"' in shared and '"last":5.1e8' in shared
    assert [phase_of(b) for b in bodies] == ["triage", "investigation", "plan"]
    assert result.decision.decided_by == "llm"


async def test_phase_answers_are_capped(httpx_mock: HTTPXMock, deps: DiagnosisDeps) -> None:
    """Each phase asks for no more than it needs, below LLM_MAX_TOKENS."""
    for answer in (triage(), completion("It grows."), plan()):
        httpx_mock.add_response(url=CHAT_URL, json=answer)
    await diagnose(_finding(), deps, NOW)
    assert [b["max_tokens"] for b in _chat_bodies(httpx_mock)] == [120, 200, 400]


async def test_a_refusal_that_names_no_feature_is_not_learned(
    httpx_mock: HTTPXMock, deps: DiagnosisDeps
) -> None:
    """A 400 for a prompt over the context window is an error, not a refused feature: the
    runbook decides, and the endpoint keeps its structured output."""
    too_long = {"error": {"message": "This model's maximum context length is 8192 tokens."}}
    httpx_mock.add_response(url=CHAT_URL, status_code=400, json=too_long)
    decision = (await diagnose(_finding(), deps, NOW)).decision
    assert decision.decided_by == "runbook" and "maximum context length" in decision.fallback_reason
    assert deps.llm is not None and deps.llm.features.structured == "json_schema"
