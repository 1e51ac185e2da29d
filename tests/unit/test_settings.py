"""Settings: required variables, validation, overrides, redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.settings import load_settings, redacted_summary
from tests.conftest import BASE_ENV, CONFIG

REQUIRED = [
    "PROMETHEUS_URL",
    "AI_COMMAND_GATEWAY_URL",
    "AI_COMMAND_GATEWAY_TIMEOUT",
    "AI_COMMAND_GATEWAY_SOURCE_ID",
    "OPENAI_API_KEY",
    "LLM_MODEL",
    "LLM_TEMPERATURE",
    "LLM_MAX_TOKENS",
    "LOG_LEVEL",
    "ENVIRONMENT",
]


def test_valid_environment_loads(base_env: dict[str, str]) -> None:
    """A complete environment gives typed settings with the TOML file attached."""
    settings = load_settings(env_file=None)
    assert settings.env.prometheus_url == "http://127.0.0.1:9090"
    assert settings.env.ai_command_gateway_timeout == 5.0
    assert settings.env.dry_run is False
    assert settings.env.metrics_host_port == ("127.0.0.1", 9464)
    assert "restart" in settings.config.actions


def test_empty_environment_names_every_required_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """With nothing set, every required variable is reported, each on its own line."""
    monkeypatch.setenv("AGENT_CONFIG", str(CONFIG))
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=None)
    for name in REQUIRED:
        assert f"{name}: required variable is not set" in info.value.problems
    assert len(info.value.problems) == len(REQUIRED)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("PROMETHEUS_URL", "ftp://example.org", "PROMETHEUS_URL: must be an http"),
        ("PROMETHEUS_URL", "http://", "PROMETHEUS_URL: must name a host"),
        ("ALERTMANAGER_URL", "localhost:9093", "ALERTMANAGER_URL: must be an http"),
        ("AI_COMMAND_GATEWAY_TIMEOUT", "0", "AI_COMMAND_GATEWAY_TIMEOUT: Input should be greater"),
        ("LLM_TEMPERATURE", "2.5", "LLM_TEMPERATURE: Input should be less than or equal to 2"),
        ("LLM_MAX_TOKENS", "-1", "LLM_MAX_TOKENS: Input should be greater than or equal to 1"),
        ("LOG_LEVEL", "loud", "LOG_LEVEL: Input should be"),
        ("ENVIRONMENT", "prod", "ENVIRONMENT: Input should be"),
        ("METRICS_ADDR", "9464", "METRICS_ADDR: must be HOST:PORT"),
        (
            "AGENT_STATE_URL",
            "mysql://x/db",
            "AGENT_STATE_URL: must be sqlite:///PATH or postgresql://",
        ),
        ("DRY_RUN", "perhaps", "DRY_RUN: Input should be a valid boolean"),
    ],
)
def test_invalid_value_is_named(
    base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    """Each invalid variable produces one problem line that starts with its name."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=None)
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith(expected)


def test_log_level_is_case_insensitive(
    base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`warn` and `debug` are accepted and normalised."""
    monkeypatch.setenv("LOG_LEVEL", "warn")
    assert load_settings(env_file=None).env.log_level == "WARNING"


def test_empty_optional_values_count_as_unset(
    base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`.env.example` leaves optional values empty; that must mean unset, not invalid."""
    monkeypatch.setenv("ALERTMANAGER_URL", "")
    monkeypatch.setenv("AI_COMMAND_GATEWAY_TOKEN", "")
    env = load_settings(env_file=None).env
    assert env.alertmanager_url is None
    assert env.ai_command_gateway_token is None


def test_env_overrides_replace_toml_values(
    base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The three schedule and policy variables win over the TOML file."""
    monkeypatch.setenv("SWEEP_INTERVAL_SECONDS", "7")
    monkeypatch.setenv("VERIFY_AFTER_SECONDS", "11")
    monkeypatch.setenv("ACTION_COOLDOWN_SECONDS", "0")
    config = load_settings(env_file=None).config
    assert config.schedule.sweep_interval_seconds == 7
    assert config.schedule.verify_after_seconds == 11
    assert config.policy.action_cooldown_seconds == 0


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    """Values come from the .env file when the environment does not set them."""
    env_file = tmp_path / "agent.env"
    env_file.write_text("\n".join(f"{k}={v}" for k, v in BASE_ENV.items()) + "\nDRY_RUN=true\n")
    settings = load_settings(env_file=env_file)
    assert settings.env.dry_run is True


def test_problems_in_env_and_toml_are_reported_together(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A broken environment does not hide a broken TOML file, and vice versa."""
    bad = tmp_path / "agent.toml"
    bad.write_text("[schedule]\nsweep_interval_seconds = -1\n")
    monkeypatch.setenv("AGENT_CONFIG", str(bad))
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=None)
    text = "\n".join(info.value.problems)
    assert "PROMETHEUS_URL: required variable is not set" in text
    assert "schedule.sweep_interval_seconds" in text


def test_summary_hides_secrets(base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The redacted summary shows that secrets are set but never their values."""
    monkeypatch.setenv("AI_COMMAND_GATEWAY_TOKEN", "gw-token-abcdef")
    rows = dict(redacted_summary(load_settings(env_file=None)))
    assert rows["OPENAI_API_KEY"] == "<set, hidden>"
    assert rows["AI_COMMAND_GATEWAY_TOKEN"] == "<set, hidden>"
    assert "SECRET1234567890" not in repr(rows)
    assert "gw-token-abcdef" not in repr(rows)


def test_env_example_mirrors_the_settings_and_suits_systemd() -> None:
    """.env.example names every variable the settings read, no other, each with a comment
    above it and no inline comment (systemd's EnvironmentFile= would keep it in the value)."""
    from agent.settings import EnvSettings
    from tests.conftest import REPO

    lines = (REPO / ".env.example").read_text().splitlines()
    names = []
    for number, line in enumerate(lines):
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep and " #" not in value, f"line {number + 1}: {line!r}"
        assert lines[number - 1].startswith("#"), f"{name} has no comment above it"
        names.append(name)
    assert sorted(names) == sorted(f.upper() for f in EnvSettings.model_fields)


def test_every_problem_is_reported_in_one_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A broken variable does not hide the checks across settings: the tokens, the state
    directory and what the TOML file needs of the environment are reported in the same run."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    config = tmp_path / "agent.toml"
    text = CONFIG.read_text().replace(
        "[prometheus]\n", '[prometheus]\nca_bundle = "/nonexistent/ca.pem"\n', 1
    )
    config.write_text(text.replace('sources = ["prometheus"]', 'sources = ["alertmanager"]'))
    for key, value in BASE_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AGENT_CONFIG", str(config))
    monkeypatch.setenv("LLM_TEMPERATURE", "9")
    monkeypatch.setenv("WEBHOOK_TOKEN", "same")
    monkeypatch.setenv("APPROVAL_TOKEN", "same")
    monkeypatch.setenv("AGENT_STATE_URL", f"sqlite:///{blocker / 'sub' / 'agent.db'}")
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=None)
    text = "\n".join(info.value.problems)
    assert len(info.value.problems) == 5, text
    for part in (
        "LLM_TEMPERATURE",
        "APPROVAL_TOKEN: must differ from WEBHOOK_TOKEN",
        "AGENT_STATE_URL: state directory",
        '"alertmanager" needs ALERTMANAGER_URL',
        "prometheus.ca_bundle: no such file",
    ):
        assert part in text
