"""The gateway's own words reach the operator: `error_code` and `error_message` of
UNKNOWN_SERVICE and LLM_GENERATION_FAILED in `sweep --json`, the `gateway_request_finished`
log event and `incidents show`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from agent.demo.gateway_sim import GatewaySimulator
from agent.local import LocalPrometheus, MetricsTarget
from tests.conftest import run_cli
from tests.integration.daemon_support import agent_env, write_config

pytestmark = pytest.mark.integration

ALL_ACTIONS = ["restart", "collect_logs"]


def _sweep_until_dispatch(
    env: dict[str, str], cwd: Path
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        result = run_cli("sweep", "--json", env=env, cwd=cwd)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        if report["dispatches"]:
            events = [
                json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")
            ]
            return report, events
        time.sleep(0.5)
    pytest.fail("no dispatch within 45 s")


@pytest.mark.parametrize(
    ("service", "model_down", "status", "code", "message"),
    [
        (
            "billing",
            False,
            "VALIDATION_ERROR",
            "UNKNOWN_SERVICE",
            "Unknown logical service name: billing",
        ),
        (
            "market-predictor",
            True,
            "LLM_GENERATION_FAILED",
            "LLM_ERROR",
            "LLM generation failed: Connection error.",
        ),
    ],
)
def test_gateway_error_message_is_shown(
    tmp_path: Path,
    services_target: MetricsTarget,
    e2e_prometheus: LocalPrometheus,
    service: str,
    model_down: bool,
    status: str,
    code: str,
    message: str,
) -> None:
    """The operator reads what the gateway said, not just a code."""
    services_target.set("e2e_memory_bytes", 5000, service=service)
    gateway = GatewaySimulator().start()
    gateway.model_down = model_down
    config = write_config(
        tmp_path / "agent.toml",
        diagnosis={"use_llm": False},
        services={service: {"actions": ALL_ACTIONS}},
    )
    env = agent_env(tmp_path, config, e2e_prometheus.url, gateway.url)
    try:
        report, events = _sweep_until_dispatch(env, tmp_path)
    finally:
        gateway.stop()
    [dispatch] = report["dispatches"]
    assert (dispatch["status"], dispatch["error_code"], dispatch["error_message"]) == (
        status,
        code,
        message,
    )
    [finished] = [e for e in events if e["event"] == "gateway_request_finished"]
    assert (finished["error_code"], finished["error_message"]) == (code, message)
    shown = run_cli("incidents", "show", dispatch["incident_id"], env=env, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert f"error='{code}: {message}'" in shown.stdout
    assert "escalated" in shown.stdout
