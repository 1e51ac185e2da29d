"""What the retrying clients share: one log event before every backoff sleep."""

from __future__ import annotations

from collections.abc import Callable

from structlog.typing import FilteringBoundLogger
from tenacity import RetryCallState


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
