"""Structured logging: events with fixed snake_case names and key-value fields.

JSON lines when the output is not a terminal (journald, files, pipes) or when asked to;
a readable key=value rendering on a terminal. A redaction processor runs last before
rendering so that no API key or bearer token reaches a log line, whoever logged it.
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

_SECRET_PATTERNS = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"),
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]{6,}"),
)
_SECRET_KEYS = re.compile(r"(?i)(api_?key|token|secret|password|authorization)")
REDACTED = "<redacted>"


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
        Redactor(secrets),
        renderer,
    ]
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
