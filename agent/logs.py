"""Structured logging: events with fixed snake_case names and key-value fields.

JSON lines when the output is not a terminal (journald, files, pipes) or when asked to;
a readable key=value rendering on a terminal. A redaction processor runs last before
rendering so that no API key or bearer token reaches a log line, whoever logged it.

Fields may carry text from alerts and peers, so every event is bounded before it is
rendered: each string clipped (``FIELD_MAX``) and made encodable, nesting and lists cut
short, and the whole line kept under ``LINE_MAX`` (journald splits lines over 48 KiB,
which breaks ``journalctl -o cat | jq``). On a terminal, control characters are escaped.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from agent.text import clip, encodable, printable

_SECRET_PATTERNS = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"),
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]{6,}"),
)
_SECRET_KEYS = re.compile(r"(?i)(api_?key|token|secret|password|authorization)")
REDACTED = "<redacted>"
#: Longest string field, longest traceback, most list items, deepest nesting, longest line.
FIELD_MAX = 2000
TRACEBACK_MAX = 12000
ITEMS_MAX = 50
DEPTH_MAX = 6
LINE_MAX = 16 * 1024
_CORE = ("timestamp", "level", "event", "logger")


def bounded(value: object, depth: int = 0, limit: int = FIELD_MAX) -> object:
    """A log field cut to size: strings clipped and encodable, containers shortened."""
    if isinstance(value, str):
        return clip(encodable(value), limit)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth >= DEPTH_MAX:
        return "<nested>"
    if isinstance(value, dict):
        items = list(value.items())
        out = {clip(encodable(str(k)), 100): bounded(v, depth + 1) for k, v in items[:ITEMS_MAX]}
        if len(items) > ITEMS_MAX:
            out["…"] = f"+{len(items) - ITEMS_MAX} keys"
        return out
    if isinstance(value, list | tuple | set | frozenset):
        seq = list(value)
        out_list = [bounded(v, depth + 1) for v in seq[:ITEMS_MAX]]
        if len(seq) > ITEMS_MAX:
            out_list.append(f"…[+{len(seq) - ITEMS_MAX} items]")
        return out_list
    return clip(encodable(str(value)), limit)


def _bound_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    for key in list(event_dict):
        limit = TRACEBACK_MAX if key == "traceback" else FIELD_MAX
        event_dict[key] = bounded(event_dict[key], limit=limit)
    return event_dict


#: Characters str.splitlines (and some log viewers) break lines at that JSON leaves as
#: they are; each is written as its JSON escape, which reads back as the same text.
_BREAKS = frozenset("\x85\u2028\u2029")
_ESCAPED_BREAKS = {ord(c): f"\\u{ord(c):04x}" for c in _BREAKS}


class _LineCap:
    """Renders with ``renderer``; a line still over LINE_MAX is rendered again with every
    field but the core ones clipped short, and failing that with the core ones only."""

    def __init__(self, renderer: Processor) -> None:
        self._renderer = renderer

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> Any:
        line = self._render(logger, name, dict(event_dict))
        if len(line) <= LINE_MAX:
            return line
        short = {k: v if k in _CORE else bounded(v, limit=200) for k, v in event_dict.items()}
        short["truncated"] = True
        line = self._render(logger, name, dict(short))
        if len(line) <= LINE_MAX:
            return line
        core = {k: event_dict[k] for k in _CORE if k in event_dict}
        return self._render(logger, name, {**core, "truncated": True})

    def _render(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        """One line: the characters that some readers take for a line break (NEL and the
        Unicode line and paragraph separators; JSON escapes the rest) written as escapes."""
        line = str(self._renderer(logger, name, event_dict))
        if _BREAKS.isdisjoint(line):
            return line
        return line.translate(_ESCAPED_BREAKS)


def _printable_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """For a terminal: no field may move the cursor or recolour the screen."""
    for key, value in list(event_dict.items()):
        if isinstance(value, str):
            event_dict[key] = printable(value)
    return event_dict


class Redactor:
    """Replaces known secret values and anything shaped like a key or bearer token."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = tuple(sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True))

    def text(self, value: str) -> str:
        """Redact one string."""
        for secret in self._secrets:
            value = value.replace(secret, REDACTED)
        for pattern in _SECRET_PATTERNS:
            value = pattern.sub(REDACTED, value)
        return value

    def value(self, value: object) -> object:
        """Redact strings inside any nesting of dicts, lists and tuples."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self._field(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def _field(self, key: str, value: object) -> object:
        if _SECRET_KEYS.search(key) and isinstance(value, str) and value:
            return REDACTED
        return self.value(value)

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        for key in list(event_dict):
            event_dict[key] = self._field(key, event_dict[key])
        return event_dict


def _add_logger_default(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    event_dict["logger"] = event_dict.pop("logger_name", None) or event_dict.get("logger", "agent")
    return event_dict


def _exc_one_line(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # Expected failures carry their cause as a field; a stray exc_info still stays one line.
    # An unexpected crash (log.exception) also gets its traceback, as one JSON string.
    exc = event_dict.pop("exc_info", None)
    if exc is True:
        exc = sys.exc_info()[1]
        if exc is not None:
            event_dict["traceback"] = "".join(traceback.format_exception(exc))
    if isinstance(exc, BaseException):
        event_dict.setdefault("error", f"{type(exc).__name__}: {exc}")
    return event_dict


class _StdlibBridge(logging.Handler):
    """Hands records of libraries that log through ``logging`` (APScheduler, httpx) to
    structlog, so every line on stdout is one of our JSON events."""

    def emit(self, record: logging.LogRecord) -> None:
        logger: FilteringBoundLogger = structlog.get_logger(logger_name=record.name)
        logger.log(record.levelno, "library_log", message=record.getMessage()[:2000])


def configure_logging(
    level: str = "INFO",
    fmt: Literal["auto", "json", "console"] = "auto",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Set up structlog once per process; call again to reconfigure (tests, CLI)."""
    out = stream if stream is not None else sys.stdout
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _add_logger_default,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        _exc_one_line,
        _bound_fields,
        Redactor(secrets),
    ]
    if not use_json:
        processors.append(_printable_fields)
    processors.append(_LineCap(renderer))
    root = logging.getLogger()
    root.handlers = [_StdlibBridge()]
    root.setLevel(logging.WARNING)  # libraries speak only when something is wrong
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> FilteringBoundLogger:
    """A logger that stamps its events with ``logger=name``."""
    # Lazy proxy: the configuration in force when the event is logged applies, not the one at
    # import time. `logger` itself cannot be an initial value (get_logger's own argument).
    logger: FilteringBoundLogger = structlog.get_logger(logger_name=name)
    return logger


def bind_context(**fields: Any) -> Mapping[str, Any]:
    """Bind fields (sweep_id, incident_id, fingerprint, target) to every event in this task."""
    return structlog.contextvars.bind_contextvars(**fields)
