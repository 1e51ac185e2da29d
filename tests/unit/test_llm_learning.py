"""Learning what a model server supports: into the endpoint's current state under a lock,
never from a pre-call snapshot; a 400/422 that names a feature is learned at once, a 500
only when it comes twice in a row, and a feature learned from 500s is tried again after
ten minutes. The server is faked at the HTTP boundary (pytest-httpx)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pytest_httpx import HTTPXMock

from agent.clients.llm import (
    RETRY_LEARNED_SECONDS,
    Features,
    Learning,
    LLMClient,
    LLMOptions,
    ToolsRefused,
    build_llm_client,
)
from agent.diagnosis.models import TRIAGE_SCHEMA
from agent.diagnosis.tools import TOOLS
from tests.conftest import Sleeps
from tests.llm_fakes import CHAT_URL, LLM_BASE, completion

MESSAGES = [{"role": "user", "content": "hello"}]
NO_TOOLS = {"error": {"message": "this model does not support tools"}}
NO_SCHEMA = {"error": {"message": "response_format json_schema is not supported"}}


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def llm(sleeps: Sleeps) -> AsyncIterator[tuple[LLMClient, Clock]]:
    """A client for one endpoint, with a clock the test moves."""
    options = LLMOptions(model="m", temperature=0, max_tokens=100, max_retries=0)
    client, http = build_llm_client(api_key="sk-test-000000", base_url=LLM_BASE, options=options)
    clock = Clock()
    client.sleep = sleeps
    client.learning = Learning(clock=clock)
    yield client, clock
    await http.aclose()


def _sent(httpx_mock: HTTPXMock) -> list[dict[str, Any]]:
    return [json.loads(r.read()) for r in httpx_mock.get_requests(url=CHAT_URL)]


async def test_concurrent_refusals_are_both_learned(
    httpx_mock: HTTPXMock, llm: tuple[LLMClient, Clock]
) -> None:
    """Two calls sent in the same form: one is refused its tools, the other, answered
    later, its schema. The endpoint ends with neither, and the late learner does not
    write back the tools its snapshot still had."""
    client, _ = llm
    arrived: list[dict[str, Any]] = []
    both_in = asyncio.Event()
    tools_learned = asyncio.Event()

    async def server(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.read())
        arrived.append(body)
        if len(arrived) == 2:
            both_in.set()
        await both_in.wait()
        if len(arrived) > 2:
            return httpx.Response(200, json=completion('{"ok": true}'))
        if "tools" in body:
            return httpx.Response(400, json=NO_TOOLS)
        await tools_learned.wait()
        return httpx.Response(400, json=NO_SCHEMA)

    httpx_mock.add_callback(server, url=CHAT_URL, is_reusable=True)
    with_tools = asyncio.create_task(client.chat(MESSAGES, phase="investigation", tools=TOOLS))
    with_schema = asyncio.create_task(client.chat(MESSAGES, phase="triage", schema=TRIAGE_SCHEMA))
    with pytest.raises(ToolsRefused):
        await with_tools
    tools_learned.set()
    await with_schema
    assert client.features == Features(structured="json_object_schema", tools=False)
    assert arrived[2]["response_format"]["type"] == "json_object" and "tools" not in arrived[2]


async def test_a_late_refusal_of_an_older_form_does_not_bring_it_back(
    llm: tuple[LLMClient, Clock],
) -> None:
    """The endpoint has moved past json_object_schema; a refusal of json_schema that
    arrives late leaves it where it is (a snapshot would re-enable a refused form)."""
    client, _ = llm
    learning = client.learning
    first = learning.current()
    assert learning.refused(first, "structured", 422) == "learned"
    assert learning.refused(learning.current(), "structured", 400) == "learned"
    assert learning.current().structured == "json_object"
    assert learning.refused(first, "structured", 400) == "learned"  # the late one
    assert learning.current().structured == "json_object"


async def test_one_500_that_names_a_feature_is_a_fluke(
    httpx_mock: HTTPXMock, llm: tuple[LLMClient, Clock], sleeps: Sleeps
) -> None:
    """A single 500 mentioning "tool": the same form is sent again at once and answered,
    nothing is learned; two in a row are learned; ten minutes later tools are sent again."""
    client, clock = llm
    flaky = {"error": {"message": "tool parser crashed"}}
    httpx_mock.add_response(url=CHAT_URL, status_code=500, json=flaky)
    httpx_mock.add_response(url=CHAT_URL, json=completion("fine"))
    await client.chat(MESSAGES, phase="investigation", tools=TOOLS)
    assert client.features.tools is True
    assert ["tools" in b for b in _sent(httpx_mock)] == [True, True] and sleeps.waits == []

    httpx_mock.add_response(url=CHAT_URL, status_code=500, json=flaky)
    httpx_mock.add_response(url=CHAT_URL, status_code=500, json=flaky)
    with pytest.raises(ToolsRefused):
        await client.chat(MESSAGES, phase="investigation", tools=TOOLS)
    assert client.features.tools is False

    clock.now += RETRY_LEARNED_SECONDS - 1
    assert client.features.tools is False
    clock.now += 1
    httpx_mock.add_response(url=CHAT_URL, json=completion("fine"))
    await client.chat(MESSAGES, phase="investigation", tools=TOOLS)
    assert client.features.tools is True and "tools" in _sent(httpx_mock)[-1]


async def test_a_400_is_learned_for_good(
    httpx_mock: HTTPXMock, llm: tuple[LLMClient, Clock]
) -> None:
    """A 400 that names the schema is learned at the first refusal and not tried again."""
    client, clock = llm
    httpx_mock.add_response(url=CHAT_URL, status_code=400, json=NO_SCHEMA)
    httpx_mock.add_response(url=CHAT_URL, json=completion('{"ok": true}'))
    await client.chat(MESSAGES, phase="triage", schema=TRIAGE_SCHEMA)
    clock.now += 10 * RETRY_LEARNED_SECONDS
    assert client.features.structured == "json_object_schema"
    assert [b["response_format"]["type"] for b in _sent(httpx_mock)] == [
        "json_schema",
        "json_object",
    ]
