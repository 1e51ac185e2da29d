"""The gateway client against a real HTTP server on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.clients.gateway import GatewayClient, build_http_client
from agent.config import GatewayOptions
from agent.demo.gateway_sim import GatewaySimulator, Scripted
from agent.gateway.request import GatewayRequest, idempotency_key
from tests.conftest import BASE_ENV, run_cli

pytestmark = pytest.mark.integration


@pytest.fixture
def simulator() -> Iterator[GatewaySimulator]:
    """A real gateway simulator on a free loopback port."""
    sim = GatewaySimulator().start()
    yield sim
    sim.stop()


async def _no_sleep(_: float) -> None:
    return None


async def test_two_503_then_success_is_three_requests_one_key(simulator: GatewaySimulator) -> None:
    """503, 503, then success: exactly three requests, all with one Idempotency-Key."""
    simulator.script = [Scripted(503, {"detail": "busy"}), Scripted(503, {"detail": "busy"})]
    request = GatewayRequest(
        source_id="devops-ai-agent",
        target="market-predictor",
        action="restart",
        intent="restart the service",
        context="test",
        priority="NORMAL",
        idempotency_key=idempotency_key("inc-42", "restart"),
    )
    async with build_http_client(simulator.url, 5.0, "tok") as http:
        result = await GatewayClient(http, GatewayOptions(), sleep=_no_sleep).execute(request)
    assert result.outcome == "succeeded" and result.attempts == 3
    executions = simulator.executions()
    assert len(executions) == 3
    assert {r.headers["Idempotency-Key"] for r in executions} == {request.idempotency_key}
    assert result.command == "docker restart market-predictor"


def test_gateway_check_healthy(simulator: GatewaySimulator, tmp_path: Path) -> None:
    """gateway-check prints healthy and exits 0 against a healthy gateway."""
    result = run_cli(
        "gateway-check", env=dict(BASE_ENV, AI_COMMAND_GATEWAY_URL=simulator.url), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "healthy (version 1.0.0)" in result.stdout


def test_gateway_check_unreachable(tmp_path: Path) -> None:
    """gateway-check exits 1 with the reason when nothing listens, with no traceback."""
    env = dict(
        BASE_ENV, AI_COMMAND_GATEWAY_URL="http://127.0.0.1:9", AI_COMMAND_GATEWAY_TIMEOUT="2"
    )
    result = run_cli("gateway-check", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "NOT healthy: unreachable" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
