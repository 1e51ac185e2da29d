"""The model's own time per diagnosis, apart from the time spent waiting for it.

A local model server answers one request at a time (llama-cpp-python's does; llama.cpp's
``llama-server`` as many as its ``--parallel`` slots). With ``--concurrency 4`` against
it, four diagnoses queue for one model, and a run's wall time is mostly the others' turn:
measured that way the shipped model looked five times slower than it is, and a request
queued at the server spent its ``diagnosis.request_timeout_seconds`` waiting, so the
runbook decided instead of the model. So eval hands the model client a gate
(``LLMClient.gate``) of ``--model-slots`` places (one by default for a model on
loopback, unbounded for a remote one): each request waits for a free place *before* its
deadline starts, and is timed in two parts, the wait and the model answering. Each run
adds its requests up in a ``ModelTime`` of its own, found through a context variable, so
runs that overlap never mix their figures.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from urllib.parse import urlsplit

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


class SlotGate:
    """Lets at most ``slots`` model requests run at once (any number when None) and adds
    each request's wait and answering time to the run it belongs to."""

    def __init__(self, slots: int | None, clock: Callable[[], float] = time.perf_counter) -> None:
        self._slots = asyncio.Semaphore(slots) if slots else None
        self._clock = clock

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[None]:
        """Around one request: wait for a place, hold it while the model answers."""
        asked = self._clock()
        if self._slots is not None:
            await self._slots.acquire()
        began = self._clock()
        try:
            yield
        finally:
            if self._slots is not None:
                self._slots.release()
            spent = _RUN.get()
            if spent is not None:
                spent.calls += 1
                spent.waited += began - asked
                spent.seconds += self._clock() - began


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
