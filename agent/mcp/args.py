"""A tool call's arguments, checked: bounded, typed, and refused in one line each.

The calling model writes the arguments, so nothing is assumed: the whole set is capped
in size before anything is read (a 10 MB argument is refused whole), unknown names are
refused naming the ones the tool takes, and each value is checked against the bounds the
tool's schema states (``catalogue.py``). Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from agent.errors import AgentError
from agent.incidents.model import STATES, State
from agent.mcp.catalogue import (
    ARGUMENTS_MAX_CHARS,
    ID_MAX,
    LIMIT_DEFAULT,
    LIMIT_MAX,
    NAME_MAX,
    REASON_MAX,
    SINCE_MAX_DAYS,
    ToolSpec,
)
from agent.text import one_line

_DURATION = re.compile(r"([0-9]{1,7})(s|m|h|d|w)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
SINCE_MAX = timedelta(days=SINCE_MAX_DAYS)


class BadArgument(AgentError):
    """An argument the tool cannot take; the message says which and why, on one line."""


def _shown(value: object) -> str:
    return one_line(repr(value), 40)


def checked(spec: ToolSpec, arguments: Mapping[str, object] | None) -> dict[str, object]:
    """The arguments as given, once their size and names pass."""
    given = dict(arguments or {})
    try:
        size = len(json.dumps(given, ensure_ascii=False, default=str))
    except (TypeError, ValueError) as exc:
        raise BadArgument(f"the arguments cannot be read: {one_line(str(exc), 100)}") from None
    if size > ARGUMENTS_MAX_CHARS:
        raise BadArgument(
            f"the arguments of {spec.name} are {size} characters, over the "
            f"{ARGUMENTS_MAX_CHARS}-character cap"
        )
    unknown = sorted(set(given) - set(spec.arguments))
    if unknown:
        takes = ", ".join(spec.arguments) or "no arguments"
        raise BadArgument(
            f"{spec.name} takes {takes}; not {', '.join(one_line(n, 40) for n in unknown)}"
        )
    return given


def text(
    args: Mapping[str, object], name: str, *, limit: int, required: bool = False
) -> str | None:
    """A string argument of at most ``limit`` characters (surrounding spaces dropped)."""
    value = args.get(name)
    if value is None:
        if required:
            raise BadArgument(f"'{name}' is required")
        return None
    if not isinstance(value, str):
        raise BadArgument(f"'{name}' must be a string, got {_shown(value)}")
    if len(value) > limit:
        raise BadArgument(f"'{name}' is over {limit} characters")
    value = value.strip()
    if not value:
        raise BadArgument(f"'{name}' must not be empty")
    return value


def duration(value: str | None) -> timedelta | None:
    """``30m``, ``6h``, ``7d``, ``2w`` as a positive span of at most ``SINCE_MAX``."""
    if value is None:
        return None
    found = _DURATION.fullmatch(value)
    if found is None:
        raise BadArgument(
            f"'since' must be a duration such as 30m, 6h, 7d or 2w, got {_shown(value)}"
        )
    span = timedelta(seconds=int(found.group(1)) * _UNITS[found.group(2)])
    if not timedelta(0) < span <= SINCE_MAX:
        raise BadArgument(f"'since' must be more than 0 and at most {SINCE_MAX_DAYS}d")
    return span


def limit(args: Mapping[str, object]) -> int:
    """``limit``: an integer in [1, LIMIT_MAX], LIMIT_DEFAULT when absent."""
    value = args.get("limit")
    if value is None:
        return LIMIT_DEFAULT
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadArgument(f"'limit' must be an integer, got {_shown(value)}")
    if not 1 <= value <= LIMIT_MAX:
        raise BadArgument(f"'limit' must be between 1 and {LIMIT_MAX}, got {value}")
    return value


def state(args: Mapping[str, object]) -> State | None:
    """``state``: one of the lifecycle states."""
    value = text(args, "state", limit=40)
    if value is None:
        return None
    for known in STATES:
        if value == known:
            return known
    raise BadArgument(f"'state' must be one of {', '.join(STATES)}; not {_shown(value)}")


def incident_id(args: Mapping[str, object]) -> str:
    """``id``: an incident's full id (at most ID_MAX characters)."""
    value = text(args, "id", limit=ID_MAX, required=True)
    assert value is not None
    return value


@dataclass(frozen=True)
class ListQuery:
    """What ``list_incidents`` is asked for."""

    state: State | None
    service: str | None
    since: timedelta | None
    limit: int


def list_query(args: Mapping[str, object]) -> ListQuery:
    """``list_incidents``' arguments."""
    return ListQuery(
        state=state(args),
        service=text(args, "service", limit=NAME_MAX),
        since=duration(text(args, "since", limit=16)),
        limit=limit(args),
    )


@dataclass(frozen=True)
class Answering:
    """What ``approve`` or ``deny`` is asked: the incident, who, why, and (for a yes) the
    action and service the human means."""

    incident_id: str
    approve: bool
    by: str
    reason: str
    action: str | None
    target: str | None


def answering(args: Mapping[str, object], *, approve: bool) -> Answering:
    """``approve``'s or ``deny``'s arguments (the approval path checks them again)."""
    return Answering(
        incident_id=incident_id(args),
        approve=approve,
        by=text(args, "by", limit=NAME_MAX, required=True) or "",
        reason=text(args, "reason", limit=REASON_MAX, required=not approve) or "",
        action=text(args, "action", limit=NAME_MAX, required=approve),
        target=text(args, "target", limit=NAME_MAX, required=approve),
    )
