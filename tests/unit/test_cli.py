"""The command line in process: exit codes, one line per problem, no tracebacks."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.cli.main import main
from agent.cli.probe import probe_store
from agent.settings import load_settings
from agent.store import open_store
from agent.store.base import Breaker, StateCopy
from agent.store.sql import MIGRATIONS
from tests.conftest import BASE_ENV, POSTGRES, REPO, run_cli


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


def test_commands_that_only_read_never_create_a_store(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`incidents`, `pending`, `show`, `reset-breaker` against a mistyped store path: one line
    naming it, exit 1, and no file or directory made."""
    path = tmp_path / "typo" / "agent.db"
    env = dict(BASE_ENV, AGENT_STATE_URL=f"sqlite:///{path}")
    for args in (
        ("incidents",),
        ("incidents", "pending"),
        ("incidents", "show", "abc"),
        ("incidents", "reset-breaker", "market-predictor", "--by", "alice"),
    ):
        code, output = _run(monkeypatch, capsys, env, *args)
        assert (code, output.strip()) == (
            1,
            f"devops-agent: no incident store at {path} (AGENT_STATE_URL)",
        )
    assert not path.parent.exists()


def test_reset_breaker_refuses_unknown_services_and_records_who(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A service the agent does not know is refused; a known one's breaker is closed with
    who did it kept beside it."""
    url = f"sqlite:///{tmp_path / 'agent.db'}"
    store = open_store(url)
    opened = Breaker("market-predictor", 3, True, datetime(2026, 11, 24, tzinfo=UTC))
    store.import_state(StateCopy([], [], [opened]))
    env = dict(BASE_ENV, AGENT_STATE_URL=url)
    code, output = _run(
        monkeypatch, capsys, env, "incidents", "reset-breaker", "nosuch-service", "--by", "bob"
    )
    assert code == 1 and "unknown service 'nosuch-service'" in output
    code, output = _run(
        monkeypatch, capsys, env, "incidents", "reset-breaker", "coding-ai-agent", "--by", "bob"
    )
    assert code == 0 and "never counted a failure: nothing to reset" in output
    code, output = _run(
        monkeypatch, capsys, env, "incidents", "reset-breaker", "market-predictor", "--by", "bob"
    )
    assert code == 0
    assert "reset by bob (it was open after 3 failure(s))" in output
    breaker = store.breaker("market-predictor")
    store.close()
    assert breaker is not None and (breaker.is_open, breaker.reset_by) == (False, "bob")


def test_check_config_says_which_files_it_read(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """check-config names the environment file and the store first, also when it fails;
    an environment file named but missing is one line, exit 78."""
    env_file = tmp_path / "agent.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in BASE_ENV.items()))
    code, output = _run(monkeypatch, capsys, {}, "--env-file", str(env_file), "check-config")
    assert code == 0, output
    lines = output.splitlines()
    assert lines[0] == f"environment file: {env_file} (--env-file)"
    assert lines[1].startswith("incident store: sqlite:///")
    missing = tmp_path / "nope.env"
    code, output = _run(monkeypatch, capsys, {}, "--env-file", str(missing), "check-config")
    assert code == 78
    assert f"config: environment file {missing} does not exist" in output
    code, output = _run(monkeypatch, capsys, {}, "check-config")
    assert code == 78 and output.startswith("environment file: none (no --env-file,")


def test_probe_reads_the_store_without_making_it(base_env: dict[str, str], tmp_path: Path) -> None:
    """--probe's store line: none yet (nothing made) is fine; an existing store shows its
    schema version and that it takes a write."""
    url = f"sqlite:///{tmp_path / 'state' / 'agent.db'}"
    settings = load_settings(env_file=None, agent_state_url=url)
    check = probe_store(settings)
    assert check.ok and "none yet" in check.detail
    assert not (tmp_path / "state").exists()
    open_store(url).close()
    check = probe_store(settings)
    assert check.ok and check.detail == f"schema version {len(MIGRATIONS)}, writable"


@pytest.mark.integration
def test_probe_names_a_store_that_refuses_the_role(base_env: dict[str, str]) -> None:
    """A PostgreSQL role that does not exist fails the probe with the server's reason."""
    url = POSTGRES.replace("root@", "no_such_role@")
    settings = load_settings(env_file=None, agent_state_url=url)
    check = probe_store(settings)
    assert not check.ok
    assert 'role "no_such_role" does not exist' in check.detail
    assert check.detail.startswith("cannot open incident store postgresql://no_such_role@")
