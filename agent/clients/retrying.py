"""What the retrying clients share: how long to wait before the next attempt, and a log
event before every wait.

A peer that says how long to wait (HTTP 429/503 with ``Retry-After``, as seconds or as an
HTTP date) is believed, up to a cap; otherwise the wait is exponential backoff with full
jitter. The error a client raises for a retryable failure carries the peer's wish as
``retry_after`` (see ``agent.errors``).
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable
from datetime import UTC, datetime

from structlog.typing import FilteringBoundLogger
from tenacity import RetryCallState, wait_random_exponential


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent
    or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def retry_wait(
    initial: float, maximum: float, *, retry_after_cap: float
) -> Callable[[RetryCallState], float]:
    """A tenacity ``wait``: the failure's ``retry_after`` (capped) if it has one, else
    exponential backoff with full jitter between 0 and ``maximum``."""
    jitter = wait_random_exponential(multiplier=initial, max=maximum)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        after = getattr(exc, "retry_after", None)
        if isinstance(after, float | int):
            return min(float(after), retry_after_cap)
        return float(jitter(state))

    return wait


def log_before_sleep(log: FilteringBoundLogger, event: str) -> Callable[[RetryCallState], None]:
    """A tenacity ``before_sleep`` hook logging attempt number, wait and cause."""

    def hook(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            event,
            attempt=state.attempt_number,
            wait_seconds=round(state.upcoming_sleep, 3),
            cause=str(exc),
        )

    return hook
