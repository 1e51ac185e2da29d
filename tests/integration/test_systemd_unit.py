"""The systemd units (the agent's, and the local model's example) pass `systemd-analyze
verify` and rate 2.0 or better on security."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration

UNIT = REPO / "systemd" / "devops-agent.service"
MODEL_UNIT = REPO / "systemd" / "devops-agent-model.service"


@pytest.fixture(params=[UNIT, MODEL_UNIT], ids=lambda p: p.name)
def unit_copy(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A unit with ExecStart pointed at this checkout's virtualenv, as install-service does."""
    unit: Path = request.param
    text = unit.read_text().replace("/opt/devops-agent/.venv/bin", str(Path(sys.executable).parent))
    text = text.replace("/opt/devops-agent", str(REPO))
    path = tmp_path / unit.name
    path.write_text(text)
    return path


def _analyze() -> str:
    found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze is missing (Debian package systemd; run `make install`)"
    return found


def test_unit_verifies(unit_copy: Path) -> None:
    """systemd-analyze verify reports nothing."""
    result = subprocess.run(
        [_analyze(), "verify", str(unit_copy)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


def test_unit_security_rating(unit_copy: Path) -> None:
    """The exposure level is 2.0 or lower."""
    result = subprocess.run(
        [_analyze(), "security", "--offline=true", "--no-pager", str(unit_copy)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr
    assert float(match.group(1)) <= 2.0


def test_unit_has_the_operational_contract() -> None:
    """Type=notify, watchdog, reload by SIGHUP, restart policy, exit 78 respected, a longer
    stop timeout, and an environment file only systemd reads, with the TOML file next to it."""
    text = UNIT.read_text()
    for line in (
        "ExecStart=/opt/devops-agent/.venv/bin/devops-agent --no-env-file "
        "--config ${CONFIGURATION_DIRECTORY}/agent.toml run",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ConfigurationDirectory=devops-agent",
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
        "EnvironmentFile=/etc/devops-agent/agent.env",
        "DynamicUser=yes",
        "StateDirectory=devops-agent",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
    ):
        assert line in text
    settings = [line for line in text.splitlines() if not line.startswith("#")]
    assert not [line for line in settings if "AGENT_CONFIG" in line]
    stop = int(re.search(r"TimeoutStopSec=(\d+)s", text).group(1))  # type: ignore[union-attr]
    config = (REPO / "config" / "agent.toml").read_text()
    grace = float(re.search(r"shutdown_grace_seconds = (\d+)", config).group(1))  # type: ignore[union-attr]
    assert stop > grace


def test_model_unit_serves_the_local_model_on_loopback() -> None:
    """The example model unit runs `devops-agent local-model` and allows loopback only."""
    text = MODEL_UNIT.read_text()
    assert "ExecStart=/opt/devops-agent/.venv/bin/devops-agent local-model --port 8081" in text
    assert "IPAddressDeny=any" in text and "IPAddressAllow=localhost" in text
    assert "OPENAI_BASE_URL=http://127.0.0.1:8081/v1" in text
