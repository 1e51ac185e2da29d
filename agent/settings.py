"""The agent's settings: one typed object, validated once, passed explicitly.

Two sources feed it. The environment (and an optional ``.env`` file) carries where the
upstreams are and the secrets; the TOML file named by ``AGENT_CONFIG`` carries the
schedule, the checks, the guardrail policy and the action catalogue. ``load_settings``
reads both and reports *every* problem at once as a ``ConfigError``, so an operator fixes
a broken deployment in one round instead of one restart per typo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from agent.config import (
    AgentConfig,
    Loc,
    Seconds,
    WaitSeconds,
    load_config,
    validation_problems,
)
from agent.doors import door_problems
from agent.errors import ConfigError
from agent.text import redact_url


def reveal(secret: SecretStr | None) -> str | None:
    """The plain value of an optional secret, for the one client that needs it."""
    return secret.get_secret_value() if secret is not None else None


def secret_values(env: EnvSettings) -> list[str]:
    """Every configured secret value, for the log redactor."""
    values = (
        env.openai_api_key,
        env.ai_command_gateway_token,
        env.prometheus_bearer_token,
        env.webhook_token,
        env.approval_token,
        env.console_token,
    )
    secrets = [v.get_secret_value() for v in values if v is not None]
    password = urlsplit(env.agent_state_url).password if env.agent_state_url else None
    return [*secrets, password] if password else secrets


def _http_url(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
    if not parts.hostname:
        raise ValueError(f"must name a host, got {value!r}")
    return value.strip().rstrip("/")


def _log_level(value: object) -> object:
    if isinstance(value, str):
        name = value.strip().upper()
        return "WARNING" if name == "WARN" else name
    return value


def _host_port(value: str) -> str:
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"must be HOST:PORT, e.g. 127.0.0.1:9464, got {value!r}")
    return value.strip()


def _state_url(value: str) -> str:
    value = value.strip()
    if value.startswith("sqlite:///") and len(value) > len("sqlite:///"):
        return value
    if value.startswith(("postgresql://", "postgres://")) and urlsplit(value).hostname:
        return value
    raise ValueError(
        "must be sqlite:///PATH or postgresql://USER@HOST[:PORT]/DATABASE, "
        f"got {value.split('@')[-1]!r}"
    )


HttpUrl = Annotated[str, AfterValidator(_http_url)]
LogLevel = Annotated[
    Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_log_level)
]


def default_state_dir() -> Path:
    """Where the SQLite store lives when AGENT_STATE_URL is not set."""
    if state := os.environ.get("STATE_DIRECTORY"):  # set by systemd's StateDirectory=
        return Path(state.split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "devops-agent"


class EnvSettings(BaseSettings):
    """Variables read from the environment and ``.env``; names match the env var names."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
    )

    # Prometheus, the source of findings.
    prometheus_url: HttpUrl
    prometheus_bearer_token: SecretStr | None = None
    alertmanager_url: HttpUrl | None = None

    # The AI Command Gateway, the only way the agent acts.
    ai_command_gateway_url: HttpUrl
    ai_command_gateway_timeout: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)]
    ai_command_gateway_source_id: Annotated[str, Field(min_length=1)]
    ai_command_gateway_token: SecretStr | None = None

    # The chat model used for diagnosis.
    openai_api_key: SecretStr
    openai_base_url: HttpUrl | None = None
    llm_model: Annotated[str, Field(min_length=1)]
    llm_temperature: Annotated[float, Field(ge=0.0, le=2.0, allow_inf_nan=False)]
    llm_max_tokens: Annotated[int, Field(ge=1, le=1_000_000)]

    # Runtime.
    log_level: LogLevel
    log_format: Literal["auto", "json", "console"] = "auto"
    environment: Literal["development", "staging", "production"]
    agent_config: Path = Path("config/agent.toml")
    agent_state_url: Annotated[str, AfterValidator(_state_url)] | None = None
    dry_run: bool = False
    metrics_addr: Annotated[str, AfterValidator(_host_port)] = "127.0.0.1:9464"
    webhook_token: SecretStr | None = None
    #: Bearer token of the approval API (and the console's approving login); without it
    #: the API is off.
    approval_token: SecretStr | None = None
    #: The console's read-only login (APPROVAL_TOKEN also logs in, and may approve).
    console_token: SecretStr | None = None
    #: Where humans reach METRICS_ADDR (a reverse proxy, a tunnel): links to the console.
    public_url: HttpUrl | None = None
    #: METRICS_ADDR served over HTTPS (PEM files: the certificate chain and its key).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    #: Tokens may cross the network in plain HTTP (METRICS_ADDR off loopback, no TLS).
    allow_plain_http: bool = False

    # Overrides of the TOML file's schedule and policy.
    sweep_interval_seconds: Seconds | None = None
    verify_after_seconds: Seconds | None = None
    action_cooldown_seconds: WaitSeconds | None = None

    @property
    def state_url(self) -> str:
        """The incident store's URL: AGENT_STATE_URL, else a SQLite file in the state dir."""
        return self.agent_state_url or f"sqlite:///{default_state_dir() / 'agent.db'}"

    @property
    def state_path(self) -> Path | None:
        """The SQLite file of the incident store; None when it is PostgreSQL."""
        url = self.state_url
        return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None

    @property
    def tls(self) -> tuple[Path, Path] | None:
        """The certificate and key files when METRICS_ADDR serves HTTPS."""
        if self.tls_cert_file is None or self.tls_key_file is None:
            return None
        return self.tls_cert_file, self.tls_key_file

    @property
    def metrics_host_port(self) -> tuple[str, int]:
        """METRICS_ADDR split into host and port."""
        host, _, port = self.metrics_addr.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(frozen=True)
class Settings:
    """Everything the agent is told: the environment plus the TOML file, overrides applied."""

    env: EnvSettings
    config: AgentConfig


def _variable(loc: Loc) -> str:
    return ".".join(str(part) for part in loc).upper() or "environment"


def env_problems(exc: ValidationError) -> list[str]:
    """One line per invalid or missing environment variable, naming it."""
    return validation_problems(exc, _variable, missing="required variable is not set")


def _apply_overrides(env: EnvSettings, config: AgentConfig) -> AgentConfig:
    schedule: dict[str, Any] = {}
    if env.sweep_interval_seconds is not None:
        schedule["sweep_interval_seconds"] = env.sweep_interval_seconds
    if env.verify_after_seconds is not None:
        schedule["verify_after_seconds"] = env.verify_after_seconds
    updates: dict[str, Any] = {}
    if schedule:
        updates["schedule"] = config.schedule.model_copy(update=schedule)
    if env.action_cooldown_seconds is not None:
        updates["policy"] = config.policy.model_copy(
            update={"action_cooldown_seconds": env.action_cooldown_seconds}
        )
    return config.model_copy(update=updates) if updates else config


def _path_problems(env: EnvSettings, config: AgentConfig) -> list[str]:
    problems = []
    if env.state_path is not None:
        state_dir = env.state_path.parent
        probe = state_dir
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not os.access(probe, os.W_OK):
            problems.append(f"AGENT_STATE_URL: state directory {state_dir} cannot be created")
    approval, webhook = reveal(env.approval_token), reveal(env.webhook_token)
    console = reveal(env.console_token)
    if approval is not None and approval == webhook:
        problems.append("APPROVAL_TOKEN: must differ from WEBHOOK_TOKEN")
    if console is not None and console in (approval, webhook):
        problems.append("CONSOLE_TOKEN: must differ from APPROVAL_TOKEN and WEBHOOK_TOKEN")
    if "alertmanager" in config.sweep.sources and not env.alertmanager_url:
        problems.append(f'{env.agent_config}: sweep.sources: "alertmanager" needs ALERTMANAGER_URL')
    bundle = config.prometheus.ca_bundle
    if bundle is not None and not bundle.is_file():
        problems.append(f"{env.agent_config}: prometheus.ca_bundle: no such file {bundle}")
    return problems


def load_settings(env_file: Path | None = Path(".env"), **overrides: Any) -> Settings:
    """Read and validate the environment and the TOML file; raise ConfigError listing all."""
    problems: list[str] = []
    env: EnvSettings | None = None
    try:
        env = EnvSettings(_env_file=env_file, **overrides)
    except ValidationError as exc:
        problems.extend(env_problems(exc))
    config_path = env.agent_config if env else _config_path_fallback(env_file)
    config: AgentConfig | None = None
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        problems.extend(exc.problems)
    if env is not None:
        problems.extend(door_problems(env))
    if env is not None and config is not None:
        problems.extend(_path_problems(env, config))
    if problems or env is None or config is None:
        raise ConfigError(problems)
    return Settings(env=env, config=_apply_overrides(env, config))


def _config_path_fallback(env_file: Path | None) -> Path:
    """AGENT_CONFIG as given even when other variables are broken, to check the file too."""
    value = os.environ.get("AGENT_CONFIG")
    if value is None and env_file is not None and env_file.is_file():
        for line in env_file.read_text(encoding="utf-8", errors="replace").splitlines():
            key, sep, raw = line.partition("=")
            if sep and key.strip().removeprefix("export ").strip().upper() == "AGENT_CONFIG":
                value = raw.strip().strip("'\"")
    return Path(value) if value else Path("config/agent.toml")


def redacted_summary(settings: Settings) -> list[tuple[str, str]]:
    """The settings as (name, value) rows, secrets shown only as set or unset."""
    rows: list[tuple[str, str]] = []
    for name, value in settings.env:
        if isinstance(value, SecretStr):
            shown = "<set, hidden>"
        elif value is None:
            shown = "<unset>"
        elif name == "agent_state_url":
            shown = redact_url(str(value))
        else:
            shown = str(value)
        rows.append((name.upper(), shown))
    rows.append(("(incident store)", redact_url(settings.env.state_url)))
    cfg = settings.config
    rows.append(
        (
            "(config file)",
            f"{settings.env.agent_config}: {len(cfg.checks.health)} health checks, "
            f"{len(cfg.checks.anomaly)} anomaly checks, {len(cfg.actions)} actions, "
            f"{len(cfg.services)} services, {len(cfg.runbook)} runbook rules, "
            f"sweep every {cfg.schedule.sweep_interval_seconds:g}s",
        )
    )
    return rows
