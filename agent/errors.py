"""The agent's own error tree.

Library exceptions (httpx, requests, openai, sqlite3) never leave the module that talks
to the library: they are wrapped with ``raise ... from exc`` into one of these, so callers
decide on retry or give-up by type alone::

    AgentError
    ├── ConfigError                  bad environment or TOML file; exit 78
    ├── PrometheusError
    │   ├── PrometheusTransientError unreachable, timeout, 5xx
    │   └── PrometheusPermanentError bad query, 4xx, malformed answer
    ├── AlertmanagerError
    ├── LLMError
    │   ├── LLMTransientError        429, 5xx, connection refused
    │   └── LLMPermanentError        401/403/400, timeout, output that fails validation
    ├── GatewayError
    │   ├── GatewayTransientError    never ran: refused connection, 429, 502/503/504, EXECUTION_ERROR
    │   ├── GatewayPermanentError    never will: 401/403/422, VALIDATION_ERROR
    │   └── GatewayOutcomeUnknown    may have run: read timeout, lost answer, 500, INTERNAL_ERROR
    └── StoreError                   the incident store failed
        └── NoStore                  there is no store where one was to be read
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.text import one_line


def brief(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, capped, for wrapping into our own errors."""
    return one_line(str(exc), limit)


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""


class ConfigError(AgentError):
    """The configuration is unusable; carries every problem found, one line each."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__("; ".join(self.problems) or "invalid configuration")


class PrometheusError(AgentError):
    """Prometheus could not answer a question."""


class PrometheusTransientError(PrometheusError):
    """Prometheus is unreachable, slow or failing; asking again later may work."""


class PrometheusPermanentError(PrometheusError):
    """Prometheus rejected the question or answered something unreadable."""


class AlertmanagerError(AgentError):
    """Alertmanager could not be read or written."""


class LLMError(AgentError):
    """The chat model could not produce a usable answer."""


class LLMTransientError(LLMError):
    """Rate limit, server error or connection failure; ``retry_after`` is the server's wish."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LLMPermanentError(LLMError):
    """Authentication, a rejected request, a timeout, or output that does not validate.

    A timeout is not retried: a slow model at 3 a.m. hands over to the runbook.
    """


class GatewayError(AgentError):
    """The AI Command Gateway could not carry out a request."""


class GatewayTransientError(GatewayError):
    """Nothing ran, worth retrying: the request never reached the gateway (connection
    refused, connect timeout, 429, 502/503/504) or the gateway could not reach the host."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class GatewayPermanentError(GatewayError):
    """Never retried, never ran: 401/403/422 and other 4xx, VALIDATION_ERROR."""


class GatewayOutcomeUnknown(GatewayError):
    """The request reached the gateway and its answer was lost or unreadable: the command
    may have run. A mutating action is never sent again; verification decides."""


class StoreError(AgentError):
    """The incident store failed to read or write."""


class NoStore(StoreError):
    """A command that only reads or answers found no incident store (it never makes one)."""
