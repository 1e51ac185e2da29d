"""The model's own time per run, apart from the wait for a free model slot: the gate from
an injected clock, the model client waiting at it before a request is sent, and when eval
warns about it."""

from __future__ import annotations

import asyncio

import pytest
from pytest_httpx import HTTPXMock

from agent.clients.llm import LLMOptions, build_llm_client
from agent.eval.slots import ModelTime, SlotGate, default_slots, model_time, slot_warning
from tests.llm_fakes import CHAT_URL, LLM_BASE, completion


class Clock:
    """A clock the test moves by hand; it counts how often it was read."""

    def __init__(self) -> None:
        self.now = 0.0
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


async def test_each_run_gets_its_own_model_time_and_its_wait() -> None:
    """Two runs share one slot: the second waits while the first is answered; each run's
    figures hold its own requests only."""
    clock = Clock()
    gate = SlotGate(1, clock=clock)
    inside = {"a": asyncio.Event(), "b": asyncio.Event()}
    release = {"a": asyncio.Event(), "b": asyncio.Event()}

    async def run(name: str) -> ModelTime:
        with model_time() as spent:
            async with gate():
                inside[name].set()
                await release[name].wait()
        return spent

    first = asyncio.create_task(run("a"))
    await inside["a"].wait()
    second = asyncio.create_task(run("b"))
    while clock.reads < 3:  # a: asked, began; b: asked (at 0), then it waits
        await asyncio.sleep(0)
    clock.now = 5.0
    release["a"].set()
    await inside["b"].wait()  # b got the slot at 5
    clock.now = 7.0
    release["b"].set()
    a, b = await first, await second
    assert (a.calls, a.waited, a.seconds) == (1, 0.0, 5.0)
    assert (b.calls, b.waited, b.seconds) == (1, 5.0, 2.0)


async def test_a_request_waits_for_a_free_slot_before_it_is_sent(httpx_mock: HTTPXMock) -> None:
    """While the one slot is taken the model client sends nothing (the wait comes before
    the request and its deadline); once it is free the request goes and is counted."""
    httpx_mock.add_response(url=CHAT_URL, json=completion("ok"))
    gate = SlotGate(1)
    options = LLMOptions(model="local", temperature=0, max_tokens=100, max_retries=0)
    llm, http = build_llm_client(
        api_key="sk-test-abcdef123", base_url=LLM_BASE, options=options, gate=gate
    )
    try:
        with model_time() as spent:
            async with gate():  # another run holds the model
                asked = asyncio.create_task(
                    llm.chat([{"role": "user", "content": "hi"}], phase="triage")
                )
                for _ in range(50):
                    await asyncio.sleep(0)
                assert httpx_mock.get_requests() == [] and not asked.done()
            reply = await asked
    finally:
        await http.aclose()
    assert reply.content == "ok" and len(httpx_mock.get_requests()) == 1
    assert spent.calls == 2  # the test's own hold, and the request


async def test_without_a_limit_nothing_waits_and_outside_a_run_nothing_is_counted() -> None:
    """No slot limit: requests go at once; a request outside any run is not counted."""
    clock = Clock()
    gate = SlotGate(None, clock=clock)
    async with gate():
        pass
    with model_time() as spent:
        async with gate(), gate():
            clock.now = 1.0
    assert (spent.calls, spent.waited, spent.seconds) == (2, 0.0, 2.0)


@pytest.mark.parametrize(
    ("base_url", "slots"),
    [
        ("http://127.0.0.1:8081/v1", 1),
        ("http://localhost:8081/v1", 1),
        ("http://[::1]:8081/v1", 1),
        ("https://api.openai.com/v1", None),
        ("http://10.0.0.5:8000/v1", None),
        (None, None),
    ],
)
def test_a_model_on_this_machine_serves_one_request_at_a_time(
    base_url: str | None, slots: int | None
) -> None:
    """By default a model on loopback gets one slot; any other no limit."""
    assert default_slots(base_url) == slots


def test_eval_warns_when_more_runs_than_model_slots() -> None:
    """The warning names the concurrency, the slots and the model, and says what is
    reported; none when the model can serve every run at once."""
    warning = slot_warning(4, 1, "http://127.0.0.1:8081/v1")
    assert warning is not None
    assert "--concurrency 4" in warning and "1 request(s)" in warning
    assert "http://127.0.0.1:8081/v1" in warning and "--model-slots" in warning
    assert slot_warning(1, 1, "http://127.0.0.1:8081/v1") is None
    assert slot_warning(8, None, "https://api.openai.com/v1") is None
