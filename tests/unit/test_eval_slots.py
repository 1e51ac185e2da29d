"""The model's own time per run, apart from the wait for a free model slot: a one-slot
gate driven by an injected clock, and when eval warns about it."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from agent.eval.slots import ModelTime, SlotTransport, default_slots, model_time, slot_warning


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
    arrived: dict[str, asyncio.Event] = {"a": asyncio.Event(), "b": asyncio.Event()}
    release: dict[str, asyncio.Event] = {"a": asyncio.Event(), "b": asyncio.Event()}

    async def model(request: httpx.Request) -> httpx.Response:
        name = request.url.path.strip("/")
        arrived[name].set()
        await release[name].wait()
        return httpx.Response(200, json={})

    transport = SlotTransport(1, httpx.MockTransport(model), clock=clock)
    async with httpx.AsyncClient(transport=transport, base_url="http://model.test") as http:

        async def run(name: str) -> ModelTime:
            with model_time() as spent:
                await http.post(f"/{name}")
            return spent

        first = asyncio.create_task(run("a"))
        await arrived["a"].wait()
        second = asyncio.create_task(run("b"))
        while clock.reads < 3:  # a: asked, began; b: asked (at 0), then it waits
            await asyncio.sleep(0)
        clock.now = 5.0
        release["a"].set()
        await arrived["b"].wait()  # b got the slot at 5
        clock.now = 7.0
        release["b"].set()
        a, b = await first, await second
    assert (a.calls, a.waited, a.seconds) == (1, 0.0, 5.0)
    assert (b.calls, b.waited, b.seconds) == (1, 5.0, 2.0)


async def test_without_a_limit_nothing_waits_and_outside_a_run_nothing_is_counted() -> None:
    """No slot limit: requests go at once; a request outside any run is not counted."""
    transport = SlotTransport(None, httpx.MockTransport(lambda r: httpx.Response(200)))
    async with httpx.AsyncClient(transport=transport) as http:
        await http.get("http://model.test/")
        with model_time() as spent:
            await asyncio.gather(http.get("http://model.test/"), http.get("http://model.test/"))
    assert spent.calls == 2 and spent.waited == 0.0


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
