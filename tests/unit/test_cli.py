"""The command line as a user runs it: a real subprocess, exit codes, no tracebacks."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import BASE_ENV, REPO, run_cli


def _run(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env, cwd=cwd, timeout=60)


def test_check_config_empty_environment_exits_78(tmp_path: Path) -> None:
    """With an empty environment check-config exits 78 and names every missing variable."""
    result = _run("check-config", env={}, cwd=tmp_path)
    assert result.returncode == 78
    output = result.stdout + result.stderr
    for name in ("PROMETHEUS_URL", "OPENAI_API_KEY", "LOG_LEVEL", "ENVIRONMENT", "LLM_MODEL"):
        assert f"{name}: required variable is not set" in output
    assert "Traceback" not in output


def test_check_config_complete_environment_hides_secret(tmp_path: Path) -> None:
    """With a complete environment check-config exits 0 and never prints the API key."""
    env = dict(
        BASE_ENV, OPENAI_API_KEY="sk-test-SECRET123abcdef", AI_COMMAND_GATEWAY_TOKEN="gw-SECRET-9"
    )
    result = _run("check-config", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "configuration OK" in output
    assert "SECRET123" not in output and "gw-SECRET-9" not in output


def test_check_config_broken_toml_exits_78(tmp_path: Path) -> None:
    """A TOML syntax error is one line naming the file, exit 78, no traceback."""
    broken = tmp_path / "agent.toml"
    broken.write_text("[policy]\nmax_actions_per_hour = 'lots'\n[actions\n")
    result = _run("check-config", env=dict(BASE_ENV, AGENT_CONFIG=str(broken)), cwd=tmp_path)
    assert result.returncode == 78
    assert "not valid TOML" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_commands(tmp_path: Path) -> None:
    """`devops-agent --help` lists the subcommands."""
    result = _run("--help", env={}, cwd=REPO)
    assert result.returncode == 0
    assert "check-config" in result.stdout
