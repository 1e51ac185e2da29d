"""The model's own time per diagnosis, apart from the time spent waiting for it.

A local model server answers one request at a time (llama-cpp-python's does; llama.cpp's
``llama-server`` as many as its ``--parallel`` slots). With ``--concurrency 4`` against
it, four diagnoses queue for one model, and a run's wall time is mostly the others' turn:
measured that way the shipped model looked six times slower than it is. So eval sends
the model's requests through a gate of ``--model-slots`` places (one by default for a
model on loopback, unbounded for a remote one) and times each request in two parts: the
wait for a free slot, and the model answering (from the request leaving to the answer's
headers: a chat completion is sent whole once it is generated). Each run adds its
requests up in a ``ModelTime`` of its own, found through a context variable, so runs that
overlap never mix their figures.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from agent.hosts import is_loopback


@dataclass
class ModelTime:
    """What one run's model requests took: answering, and waiting for a free slot."""

    calls: int = 0
    seconds: float = 0.0
    waited: float = 0.0


_RUN: ContextVar[ModelTime | None] = ContextVar("eval_model_time", default=None)


@contextmanager
def model_time() -> Iterator[ModelTime]:
    """Collect the model requests made inside the block (and in tasks it starts)."""
    spent = ModelTime()
    token = _RUN.set(spent)
    try:
        yield spent
    finally:
        _RUN.reset(token)


class SlotTransport(httpx.AsyncBaseTransport):
    """Sends at most ``slots`` requests at once (any number when None) and adds each
    request's wait and answering time to the run it belongs to."""

    def __init__(
        self,
        slots: int | None,
        inner: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._inner = inner or httpx.AsyncHTTPTransport()
        self._slots = asyncio.Semaphore(slots) if slots else None
        self._clock = clock

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Wait for a slot, then forward the request; both times are recorded."""
        asked = self._clock()
        if self._slots is None:
            return await self._timed(request, asked, asked)
        async with self._slots:
            return await self._timed(request, asked, self._clock())

    async def _timed(self, request: httpx.Request, asked: float, began: float) -> httpx.Response:
        try:
            return await self._inner.handle_async_request(request)
        finally:
            spent = _RUN.get()
            if spent is not None:
                spent.calls += 1
                spent.waited += began - asked
                spent.seconds += self._clock() - began

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self._inner.aclose()


def default_slots(base_url: str | None) -> int | None:
    """How many requests the model serves at once when the operator does not say: one
    for a server on this machine (a local model), no limit for any other."""
    host = urlsplit(base_url).hostname if base_url else None
    return 1 if host and is_loopback(host) else None


def slot_warning(concurrency: int, slots: int | None, base_url: str | None) -> str | None:
    """The warning for more runs at once than the model serves at once, else None."""
    if slots is None or concurrency <= slots:
        return None
    where = base_url or "the model"
    return (
        f"--concurrency {concurrency} is more than the {slots} request(s) the model at "
        f"{where} serves at once (--model-slots): runs wait for it, and runs taking turns "
        "lose its prompt cache; the model's time is reported apart from the wait"
    )
