"""The command line in process: exit codes, one line per problem, no tracebacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli.main import main
from tests.conftest import BASE_ENV, REPO, run_cli


def _run(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    *args: str,
) -> tuple[int, str]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture(autouse=True)
def _in_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Run every command from an empty directory, so no .env file is picked up."""
    monkeypatch.chdir(tmp_path)


def test_check_config_empty_environment_exits_78(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With an empty environment check-config exits 78 and names every missing variable."""
    code, output = _run(monkeypatch, capsys, {}, "check-config")
    assert code == 78
    for name in ("PROMETHEUS_URL", "OPENAI_API_KEY", "LOG_LEVEL", "ENVIRONMENT", "LLM_MODEL"):
        assert f"{name}: required variable is not set" in output
    assert "Traceback" not in output


def test_check_config_complete_environment_hides_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With a complete environment check-config exits 0 and never prints the API key."""
    env = dict(
        BASE_ENV, OPENAI_API_KEY="sk-test-SECRET123abcdef", AI_COMMAND_GATEWAY_TOKEN="gw-SECRET-9"
    )
    code, output = _run(monkeypatch, capsys, env, "check-config")
    assert code == 0, output
    assert "configuration OK" in output
    assert "SECRET123" not in output and "gw-SECRET-9" not in output


def test_check_config_prints_each_services_tiers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The effective autonomy tier of every action of every service, overrides applied."""
    text = (
        (REPO / "config" / "agent.toml")
        .read_text()
        .replace(
            "[services.coding-ai-agent]\n",
            '[services.coding-ai-agent]\nautonomy = { restart = "never" }\n',
        )
    )
    config = tmp_path / "agent.toml"
    config.write_text(text)
    code, output = _run(
        monkeypatch, capsys, dict(BASE_ENV, AGENT_CONFIG=str(config)), "check-config"
    )
    assert code == 0, output
    assert "market-predictor: restart=auto, start=auto, stop=approve, collect_logs=auto" in output
    assert "coding-ai-agent: restart=never, start=auto" in output


def test_approval_token_must_differ_from_webhook_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One token for waking sweeps and for restarting services is refused."""
    env = dict(BASE_ENV, WEBHOOK_TOKEN="same-token", APPROVAL_TOKEN="same-token")
    code, output = _run(monkeypatch, capsys, env, "check-config")
    assert code == 78 and "APPROVAL_TOKEN: must differ from WEBHOOK_TOKEN" in output
    assert "same-token" not in output


def test_answers_without_a_name_are_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`incidents deny` needs --reason; an empty --by is one line, exit 1."""
    with pytest.raises(SystemExit) as exc:
        _run(monkeypatch, capsys, BASE_ENV, "incidents", "deny", "abc", "--by", "x")
    assert exc.value.code == 2
    code, output = _run(monkeypatch, capsys, BASE_ENV, "incidents", "approve", "abc", "--by", " ")
    assert code == 1 and "'by' must name who answers" in output


def test_check_config_broken_toml_exits_78(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A TOML syntax error is one line naming the file, exit 78, no traceback."""
    broken = tmp_path / "agent.toml"
    broken.write_text("[policy]\nmax_actions_per_hour = 'lots'\n[actions\n")
    code, output = _run(
        monkeypatch, capsys, dict(BASE_ENV, AGENT_CONFIG=str(broken)), "check-config"
    )
    assert code == 78
    assert "not valid TOML" in output
    assert "Traceback" not in output


@pytest.mark.integration
def test_help_lists_commands() -> None:
    """`devops-agent --help`, run as a user runs it, lists the subcommands."""
    result = run_cli("--help", env={}, cwd=REPO, timeout=60)
    assert result.returncode == 0
    assert "check-config" in result.stdout
