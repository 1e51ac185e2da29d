"""Where the MCP tools read and answer: the daemon's store, or a process of their own.

A desk gives the tools three things: the records to read (``reading``), the one approval
path to answer through (``answer``, which calls ``agent/approvals.py`` like every other
surface: no tool writes the store itself), and whether answering is allowed here, with
the one line that says how to allow it when it is not.

- ``DaemonDesk`` (``/mcp`` on ``METRICS_ADDR``): the daemon's runtime; an answer runs as
  the daemon's own task (``run``), so a client that goes away mid-call leaves nothing
  half-done: the answer is carried out, or was refused before anything was written.
- ``ProcessDesk`` (``devops-agent mcp``): every read opens the store read-only (the
  database refuses writes on that connection) and closes it; an answer opens the runtime
  as ``devops-agent incidents approve`` does, as a task the server waits for before it
  exits, whatever the client did meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, Protocol

from agent.approvals import Pin, Reply, answer_approval
from agent.config import AgentConfig
from agent.incidents.lifecycle import Answer
from agent.incidents.model import Event, Incident
from agent.logs import get_logger
from agent.mcp.render import Vocabulary
from agent.runtime import Runtime, open_runtime
from agent.settings import Settings, secret_values
from agent.store import open_store
from agent.store.base import LedgerRead, Unreadable

log = get_logger("agent.mcp")

Runner = Callable[[Coroutine[Any, Any, Reply]], "asyncio.Future[Reply]"]

#: Why a stdio server refuses answers, and how to allow them.
STDIO_READ_ONLY = (
    "answering is off: this MCP server was started without --allow-answers "
    "(run `devops-agent mcp --allow-answers` to allow approve and deny)"
)
#: Why an HTTP connection made with CONSOLE_TOKEN refuses answers.
HTTP_VIEWER = (
    "answering is off for this connection: it uses CONSOLE_TOKEN; connect to /mcp with "
    "APPROVAL_TOKEN as the bearer token to approve or deny"
)
HTTP_NO_APPROVAL_TOKEN = (
    "answering is off: the agent has no APPROVAL_TOKEN (set it, then connect to /mcp with it "
    "as the bearer token to approve or deny)"
)


class Records(Protocol):
    """What the tools read of the store."""

    def get(self, incident_id: str) -> Incident | Unreadable | None:
        """One incident by id (or unique prefix)."""

    def recent(self, limit: int) -> list[Incident | Unreadable]:
        """The newest incidents first."""

    def current(self) -> list[Incident]:
        """Incidents whose findings are still seen, oldest first."""

    def events(self, incident_id: str) -> list[Event]:
        """An incident's timeline, oldest first."""

    def outcomes(self, since: datetime, until: datetime) -> LedgerRead:
        """The outcome ledger over a time range (the report's one query)."""


class Desk(Protocol):
    """What the tools stand on."""

    vocabulary: Vocabulary

    @property
    def config(self) -> AgentConfig:
        """The configuration the report's tiers and suggestions are read against."""
        ...

    #: None: answers are allowed; otherwise why not, and how to allow them.
    answering: str | None
    #: Which transport, for the logs: stdio or http.
    via: str

    def clock(self) -> datetime:
        """Now."""

    def reading(self) -> AbstractContextManager[Records]:
        """The records to read, for one call."""

    async def answer(self, incident_id: str, answer: Answer, pin: Pin) -> Reply:
        """Carry out one answer through the one approval path."""


class DaemonDesk:
    """The daemon's runtime, for ``/mcp``."""

    via = "http"

    def __init__(self, rt: Runtime, run: Runner, answering: str | None) -> None:
        self.rt = rt
        self.run = run
        self.answering = answering
        self.vocabulary = Vocabulary.of(rt.config, secret_values(rt.settings.env))

    @property
    def config(self) -> AgentConfig:
        """The daemon's configuration as it stands (a reload changes it)."""
        return self.rt.config

    def clock(self) -> datetime:
        """The daemon's clock."""
        return self.rt.clock()

    @contextlib.contextmanager
    def reading(self) -> Iterator[Records]:
        """The daemon's own store (left open: the daemon owns it)."""
        yield self.rt.store

    async def answer(self, incident_id: str, answer: Answer, pin: Pin) -> Reply:
        """The answer as the daemon's task: shielded from the caller going away."""
        work = answer_approval(self.rt, incident_id, answer, pin=pin)
        return await asyncio.shield(self.run(_logged(work, self.via, incident_id, answer)))


class ProcessDesk:
    """A process of its own, for ``devops-agent mcp``: the store read-only except for
    answers, which open the runtime as the CLI's ``incidents approve`` does."""

    via = "stdio"

    def __init__(self, settings: Settings, *, allow_answers: bool) -> None:
        self.settings = settings
        self.answering = None if allow_answers else STDIO_READ_ONLY
        self.vocabulary = Vocabulary.of(settings.config, secret_values(settings.env))
        self._answers: set[asyncio.Task[Reply]] = set()

    @property
    def config(self) -> AgentConfig:
        """The configuration this server was started with."""
        return self.settings.config

    def clock(self) -> datetime:
        """The wall clock, in UTC."""
        return datetime.now(UTC)

    @contextlib.contextmanager
    def reading(self) -> Iterator[Records]:
        """The store opened read-only for this call; NoStore or StoreError naming it."""
        store = open_store(self.settings.env.state_url, read_only=True)
        try:
            yield store
        finally:
            store.close()

    async def answer(self, incident_id: str, answer: Answer, pin: Pin) -> Reply:
        """The answer as a task of its own, which ``drain`` waits for."""

        async def carry_out() -> Reply:
            async with open_runtime(self.settings, create_store=False) as rt:
                work = answer_approval(rt, incident_id, answer, pin=pin)
                return await _logged(work, self.via, incident_id, answer)

        task = asyncio.ensure_future(carry_out())
        self._answers.add(task)
        task.add_done_callback(self._finished)
        return await asyncio.shield(task)

    def _finished(self, task: asyncio.Task[Reply]) -> None:
        """Forget a finished answer; one that failed after its caller left is logged."""
        self._answers.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.warning("mcp_answer_failed", error=f"{type(error).__name__}: {error}")

    async def drain(self, timeout: float) -> None:
        """Wait for answers still being carried out (a client that left mid-call)."""
        pending = set(self._answers)
        if not pending:
            return
        log.info("mcp_answers_draining", answers=len(pending), grace_seconds=timeout)
        _, late = await asyncio.wait(pending, timeout=timeout)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=5)
            log.warning("mcp_answers_cancelled", answers=len(late))


async def _logged(
    work: Coroutine[Any, Any, Reply], via: str, incident_id: str, answer: Answer
) -> Reply:
    """Carry out an answer and log how it went, whether or not its caller is still there."""
    reply = await work
    log.info(
        "approval_answered",
        incident_id=incident_id,
        approve=answer.approve,
        by=answer.by,
        status=reply.status,
        via=f"mcp-{via}",
    )
    return reply
