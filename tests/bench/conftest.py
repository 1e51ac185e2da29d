"""Benchmarks print figures, not log events."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from agent.logs import configure_logging


@pytest.fixture(autouse=True)
def quiet_logs() -> Iterator[None]:
    """Send log events nowhere while a benchmark runs."""
    configure_logging("ERROR", "json", stream=io.StringIO())
    yield
