"""One tool call, whatever the transport: check the arguments, read or answer, render.

``call`` is what the stdio server, ``/mcp`` and the tests drive. Every failure a caller
can cause is a ``ToolResult`` marked as an error with one line naming the cause (a bad
argument, an unknown id, answering not allowed here, an answer the approval path refused,
the store unreachable); an unknown tool is ``UnknownTool``, which the transport turns
into a protocol error. Nothing here writes the store: reads go through the desk's
records, answers through the one approval path (``agent/approvals.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from agent.approvals import BadAnswer, Pin, make_answer
from agent.errors import AgentError, StoreError
from agent.incidents.model import Incident
from agent.logs import get_logger
from agent.mcp import args, render
from agent.mcp.catalogue import BY_NAME, RESOURCE_PREFIX, SCAN, TOOLS
from agent.mcp.desk import Desk, Records
from agent.mcp.report import report_text
from agent.store.base import Unreadable
from agent.text import one_line

log = get_logger("agent.mcp")


@dataclass(frozen=True)
class ToolResult:
    """A tool's answer: its text, and whether it is an error (then one line)."""

    text: str
    error: bool = False


class UnknownTool(AgentError):
    """No tool of this name."""


class Refused(AgentError):
    """The call cannot be carried out; the message says why, on one line."""


def _exact(records: Records, incident_id: str) -> Incident:
    """The incident whose id is exactly this (full ids only, as over HTTP)."""
    found = records.get(incident_id)
    if found is None or found.id != incident_id:
        raise Refused(
            f"no incident with id {one_line(incident_id, 64)!r} (full ids only: "
            "list_incidents and pending_approvals show them)"
        )
    if isinstance(found, Unreadable):
        raise Refused(f"incident {found.id} cannot be read: {one_line(found.error, 200)}")
    return found


def select(
    found: Sequence[Incident | Unreadable], query: args.ListQuery, now: datetime
) -> list[Incident | Unreadable]:
    """The incidents a ``list_incidents`` query keeps, newest first, at most its limit;
    unreadable rows only when nothing filters."""
    filtered = query.state or query.service or query.since
    kept: list[Incident | Unreadable] = []
    for item in found:
        if isinstance(item, Unreadable):
            if not filtered:
                kept.append(item)
        elif (
            (query.state is None or item.state == query.state)
            and (query.service is None or item.target == query.service)
            and (query.since is None or item.opened_at >= now - query.since)
        ):
            kept.append(item)
        if len(kept) >= query.limit:
            break
    return kept


def _filters(query: args.ListQuery) -> str:
    parts = [
        f"state {query.state}" if query.state else "",
        "one service" if query.service else "",
        f"opened in the last {query.since}" if query.since else "",
    ]
    return ", ".join(p for p in parts if p)


async def _list_incidents(desk: Desk, given: Mapping[str, object]) -> str:
    query = args.list_query(given)
    with desk.reading() as records:
        found = records.recent(SCAN)
    kept = select(found, query, desk.clock())
    return render.incident_list(kept, _filters(query), desk.vocabulary, searched=len(found))


def incident_answer(desk: Desk, incident_id: str) -> str:
    """``get_incident``'s text, also the ``incident://`` resource's."""
    with desk.reading() as records:
        incident = _exact(records, incident_id)
        events = records.events(incident.id)
    return render.incident_text(incident, events, desk.vocabulary, desk.answering)


async def _get_incident(desk: Desk, given: Mapping[str, object]) -> str:
    return incident_answer(desk, args.incident_id(given))


async def _pending(desk: Desk, given: Mapping[str, object]) -> str:
    with desk.reading() as records:
        waiting = [i for i in records.current() if i.asks]
    return render.pending_text(waiting, desk.vocabulary, desk.answering)


async def _report(desk: Desk, given: Mapping[str, object]) -> str:
    since = args.duration(args.text(given, "since", limit=16))
    service = args.text(given, "service", limit=200)
    with desk.reading() as records:
        return report_text(
            records, desk.config, desk.vocabulary, since=since, service=service, now=desk.clock()
        )


async def _answer(desk: Desk, given: Mapping[str, object], approve: bool) -> str:
    asked = args.answering(given, approve=approve)
    try:
        answer = make_answer(approve=approve, by=asked.by, reason=asked.reason, at=desk.clock())
        pin = Pin.checked(asked.action, asked.target)
    except BadAnswer as exc:
        raise args.BadArgument(str(exc)) from None
    with desk.reading() as records:
        _exact(records, asked.incident_id)
    reply = await desk.answer(asked.incident_id, answer, pin)
    if not reply.accepted:
        done = "approved" if approve else "denied"
        raise Refused(f"not {done}: {one_line(reply.reason, 600)}")
    return render.reply_text(reply, desk.vocabulary)


async def _approve(desk: Desk, given: Mapping[str, object]) -> str:
    return await _answer(desk, given, True)


async def _deny(desk: Desk, given: Mapping[str, object]) -> str:
    return await _answer(desk, given, False)


Handler = Callable[[Desk, Mapping[str, object]], Awaitable[str]]
HANDLERS: dict[str, Handler] = {
    "list_incidents": _list_incidents,
    "get_incident": _get_incident,
    "pending_approvals": _pending,
    "report": _report,
    "approve": _approve,
    "deny": _deny,
}
assert set(HANDLERS) == {tool.name for tool in TOOLS}


async def call(desk: Desk, name: str, arguments: Mapping[str, object] | None) -> ToolResult:
    """Carry out one tool call; UnknownTool when there is no such tool."""
    spec = BY_NAME.get(name)
    if spec is None:
        known = ", ".join(tool.name for tool in TOOLS)
        raise UnknownTool(f"unknown tool {one_line(name, 64)!r}; the tools are {known}")
    try:
        if spec.answers and desk.answering is not None:
            raise Refused(desk.answering)  # before anything else: say how to allow it
        given = args.checked(spec, arguments)
        result = ToolResult(await HANDLERS[name](desk, given))
    except (args.BadArgument, Refused) as exc:
        result = ToolResult(one_line(str(exc), 1000), error=True)
    except StoreError as exc:
        result = ToolResult(one_line(f"the incident store cannot be read: {exc}", 1000), True)
    except AgentError as exc:  # a peer the answer needed (Prometheus, the gateway) failed
        result = ToolResult(one_line(str(exc), 1000), error=True)
    log.info("mcp_tool_called", tool=name, via=desk.via, error=result.error)
    return result


def resource_id(uri: str) -> str:
    """The incident id of an ``incident://ID`` resource; Refused for any other URI."""
    if not uri.startswith(RESOURCE_PREFIX) or len(uri) > len(RESOURCE_PREFIX) + 64:
        raise Refused(f"no such resource {one_line(uri, 80)!r}: resources are incident://ID")
    return uri.removeprefix(RESOURCE_PREFIX)
