"""Structured logs: JSON lines with the fixed fields, and secrets never printed."""

from __future__ import annotations

import io
import json

from agent.logs import REDACTED, Redactor, bind_context, configure_logging, get_logger


def test_json_lines_carry_fixed_fields() -> None:
    """A JSON event has timestamp (UTC ISO 8601), level, event, logger and bound context."""
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    bind_context(sweep_id="s-1")
    try:
        get_logger("agent.sweep").info("sweep_finished", findings=3)
    finally:
        import structlog

        structlog.contextvars.clear_contextvars()
    record = json.loads(out.getvalue())
    assert record["event"] == "sweep_finished"
    assert record["level"] == "info"
    assert record["logger"] == "agent.sweep"
    assert record["sweep_id"] == "s-1"
    assert record["findings"] == 3
    assert record["timestamp"].endswith("Z")


def test_level_filters_events() -> None:
    """Events below LOG_LEVEL are dropped."""
    out = io.StringIO()
    configure_logging("WARNING", "json", stream=out)
    get_logger("t").info("quiet")
    get_logger("t").warning("loud")
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["loud"]


def test_secrets_are_redacted_everywhere() -> None:
    """Configured secrets, key-shaped strings, bearer tokens and secret-named fields are hidden."""
    out = io.StringIO()
    configure_logging("INFO", "json", secrets=["hunter2-long-secret"], stream=out)
    get_logger("t").info(
        "request_sent",
        detail="auth failed for hunter2-long-secret",
        nested={"headers": ["Authorization: Bearer abcdef123456"]},
        api_key="whatever",
        note="key sk-proj-ABCDEF123456 leaked",
    )
    text = out.getvalue()
    for secret in ("hunter2-long-secret", "abcdef123456", "whatever", "sk-proj-ABCDEF123456"):
        assert secret not in text
    assert REDACTED in text


def test_redactor_leaves_plain_text_alone() -> None:
    """Ordinary text, numbers and short words pass through unchanged."""
    redactor = Redactor(["abc"])  # shorter than 4 characters: never treated as a secret
    assert redactor.value({"msg": "restart the service abc", "n": 3}) == {
        "msg": "restart the service abc",
        "n": 3,
    }


def test_console_format_is_key_value() -> None:
    """On a terminal (or LOG_FORMAT=console) events are readable key=value lines, not JSON."""
    out = io.StringIO()
    configure_logging("INFO", "console", stream=out)
    get_logger("t").info("sweep_started", sweep_id="abc")
    line = out.getvalue()
    assert "sweep_started" in line and "sweep_id=abc" in line
    assert not line.startswith("{")


def test_module_level_logger_follows_later_configuration() -> None:
    """A logger created before configure_logging (at import time) uses the later config."""
    logger = get_logger("agent.early")
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    logger.info("late_event")
    assert json.loads(out.getvalue())["logger"] == "agent.early"


def test_library_logging_becomes_json_events() -> None:
    """A warning logged through the stdlib (e.g. by APScheduler) comes out as a JSON event."""
    import logging

    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    logging.getLogger("apscheduler.executors").warning("Run time of job %s was missed", "sweep")
    logging.getLogger("httpx").info("HTTP Request: POST /x")  # below WARNING: dropped
    [record] = [json.loads(line) for line in out.getvalue().splitlines()]
    assert record["event"] == "library_log"
    assert record["logger"] == "apscheduler.executors"
    assert record["message"] == "Run time of job sweep was missed"
    assert record["level"] == "warning"


def test_a_field_with_line_separators_stays_one_line() -> None:
    """NEL, U+2028 and U+2029 (which JSON leaves raw and some readers split lines at) are
    written as escapes: one event is one line, and the text reads back unchanged."""
    import io
    import json

    from agent.logs import configure_logging, get_logger

    buffer = io.StringIO()
    configure_logging("INFO", "json", stream=buffer)
    get_logger("test").info("odd", text="a\u2028b\x85c\u2029d")
    [line] = buffer.getvalue().splitlines()
    assert json.loads(line)["text"] == "a\u2028b\x85c\u2029d"
