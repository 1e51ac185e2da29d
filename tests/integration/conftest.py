"""Real parts: Prometheus and Alertmanager from Debian's packages, on loopback ports.

A missing binary is a failure, not a skip: `make test` installs them, and CI must not go
green without having run these tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from agent.demo.gateway_sim import ActResult, GatewaySimulator
from agent.local import LocalAlertmanager, LocalPrometheus, MetricsTarget, free_port
from tests.integration.daemon_support import E2E_RULES

T = TypeVar("T")

SWEEP_RULES = """
groups:
- name: sweep-tests
  rules:
  - alert: TestMemoryLeak
    expr: test_leak_bytes > 100
    for: 3s
    labels: {severity: critical}
    annotations: {summary: 'leak on {{ $labels.service }}'}
  - alert: TestSilenced
    expr: test_silenced_flag > 0
    labels: {severity: warning}
  - alert: TestLoud
    expr: test_loud_flag > 0
    labels: {severity: warning}
"""


@pytest.fixture(scope="module")
def metrics_target() -> Iterator[MetricsTarget]:
    """A scrape target whose samples the test sets."""
    target = MetricsTarget().start()
    yield target
    target.stop()


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAlertmanager]:
    """A real Alertmanager."""
    server = LocalAlertmanager(tmp_path_factory.mktemp("alertmanager"), free_port()).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory,
    metrics_target: MetricsTarget,
    alertmanager: LocalAlertmanager,
) -> Iterator[LocalPrometheus]:
    """A real Prometheus scraping the test target every second, sending to Alertmanager."""
    server = LocalPrometheus(
        Path(tmp_path_factory.mktemp("prometheus")),
        targets={"testtarget": metrics_target.address},
        rules=SWEEP_RULES,
        alertmanager_url=alertmanager.url,
    ).start()
    yield server
    server.stop()


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, timeout: float = 45.0, what: str = "condition"
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await probe()
        if result:
            return result
        await asyncio.sleep(0.25)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what}")


@pytest.fixture
def services_target() -> Iterator[MetricsTarget]:
    """A fresh scrape target standing in for the monitored services."""
    target = MetricsTarget().start()
    yield target
    target.stop()


@pytest.fixture
def gateway(services_target: MetricsTarget) -> Iterator[GatewaySimulator]:
    """A gateway simulator whose restart of a service ends that service's leak on
    ``services_target`` (a module that needs another gateway defines its own ``gateway``)."""

    def fix(service: str, command: str) -> ActResult:
        if command.startswith("docker restart"):
            services_target.set("e2e_memory_bytes", 100, service=service)
        return ActResult(stdout=f"{service}\n")

    sim = GatewaySimulator(fix).start()
    yield sim
    sim.stop()


@pytest.fixture
def e2e_prometheus(tmp_path: Path, services_target: MetricsTarget) -> Iterator[LocalPrometheus]:
    """A real Prometheus with the e2e rules, scraping ``services_target``."""
    server = LocalPrometheus(
        tmp_path / "prom", targets={"services": services_target.address}, rules=E2E_RULES
    ).start()
    yield server
    server.stop()
