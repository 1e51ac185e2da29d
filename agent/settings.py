"""The agent's settings: one typed object, validated once, passed explicitly.

Two sources feed it. The environment (and an optional ``.env`` file) carries where the
upstreams are and the secrets; the TOML file named by ``AGENT_CONFIG`` carries the
schedule, the checks, the guardrail policy and the action catalogue. ``load_settings``
reads both and reports *every* problem at once as a ``ConfigError``, whichever check
finds it (a variable, the TOML file, or a check across them), so an operator fixes a
broken deployment in one round instead of one restart per typo.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    TypeAdapter,
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
from agent.host import ServiceInstall, current_user, env_file_problem
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


@dataclass(frozen=True)
class _Facts:
    """What the checks across settings need of the environment, known even when other
    variables are invalid (an invalid one is None here: it is reported already)."""

    state_url: str | None
    approval: str | None
    webhook: str | None
    console: str | None
    alertmanager_url: str | None


def _facts(env: EnvSettings) -> _Facts:
    return _Facts(
        env.state_url,
        reveal(env.approval_token),
        reveal(env.webhook_token),
        reveal(env.console_token),
        env.alertmanager_url,
    )


def _raw_environment(env_file: Path | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The variables as the settings read them (the file, then the environment, then the
    overrides; empty values unset), before validation."""
    raw: dict[str, Any] = {}
    if env_file is not None:
        raw.update((k.lower(), v) for k, v in dotenv_values(env_file).items() if v)
    raw.update((k.lower(), v) for k, v in os.environ.items() if v)
    raw.update(overrides)
    return raw


def _valid(name: str, raw: Mapping[str, Any]) -> Any:
    """One variable validated on its own; None when unset or invalid."""
    if raw.get(name) is None:
        return None
    annotation = EnvSettings.model_fields[name].annotation
    assert annotation is not None
    try:
        return TypeAdapter(annotation).validate_python(raw[name])
    except ValidationError:
        return None


def _raw_facts(raw: Mapping[str, Any], service: ServiceInstall | None) -> _Facts:
    state = _valid("agent_state_url", raw)
    unset = raw.get("agent_state_url") is None
    return _Facts(
        _default_state_url(service) if unset else state,
        reveal(_valid("approval_token", raw)),
        reveal(_valid("webhook_token", raw)),
        reveal(_valid("console_token", raw)),
        _valid("alertmanager_url", raw),
    )


def _default_state_url(service: ServiceInstall | None) -> str:
    state_dir = service.state_dir if service is not None else default_state_dir()
    return f"sqlite:///{state_dir / 'agent.db'}"


def _state_dir_problem(state_url: str) -> str | None:
    if not state_url.startswith("sqlite:///"):
        return None
    state_dir = Path(state_url.removeprefix("sqlite:///")).parent
    probe = state_dir
    try:
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
    except PermissionError:
        return f"AGENT_STATE_URL: state directory {state_dir} cannot be reached by {current_user()}"
    if not probe.is_dir():
        return f"AGENT_STATE_URL: state directory {state_dir} cannot be created: {probe} is a file"
    if not os.access(probe, os.W_OK):
        return f"AGENT_STATE_URL: state directory {state_dir} cannot be created"
    return None


def _token_problems(facts: _Facts) -> list[str]:
    problems = []
    if facts.approval is not None and facts.approval == facts.webhook:
        problems.append("APPROVAL_TOKEN: must differ from WEBHOOK_TOKEN")
    if facts.console is not None and facts.console in (facts.approval, facts.webhook):
        problems.append("CONSOLE_TOKEN: must differ from APPROVAL_TOKEN and WEBHOOK_TOKEN")
    return problems


def _cross_problems(
    facts: _Facts, config: AgentConfig | None, config_path: Path, service: ServiceInstall | None
) -> list[str]:
    """Problems that span variables, or the environment and the TOML file: each is checked
    whenever what it needs is valid, so one run reports them all."""
    problems = _token_problems(facts)
    # The service's own state directory is systemd's to create (StateDirectory=), and
    # root's alone to enter: not a problem for a member of the admin group.
    own_state = service is not None and facts.state_url == _default_state_url(service)
    if facts.state_url is not None and not own_state:
        problems += filter(None, [_state_dir_problem(facts.state_url)])
    if config is None:
        return problems
    return problems + _config_problems(facts, config, config_path)


def _config_problems(facts: _Facts, config: AgentConfig, config_path: Path) -> list[str]:
    """Problems of the TOML file that only the environment (or the host) can show."""
    problems = []
    if "alertmanager" in config.sweep.sources and not facts.alertmanager_url:
        problems.append(f'{config_path}: sweep.sources: "alertmanager" needs ALERTMANAGER_URL')
    bundle = config.prometheus.ca_bundle
    if bundle is not None and not bundle.is_file():
        problems.append(f"{config_path}: prometheus.ca_bundle: no such file {bundle}")
    return problems


def _service_defaults(env: EnvSettings, service: ServiceInstall | None) -> EnvSettings:
    """On a service host, the service's TOML file and state directory unless set."""
    if service is None:
        return env
    updates: dict[str, Any] = {}
    if "agent_config" not in env.model_fields_set:
        updates["agent_config"] = service.config_file
    if env.agent_state_url is None:
        updates["agent_state_url"] = _default_state_url(service)
    return env.model_copy(update=updates) if updates else env


def load_settings(
    env_file: Path | None = None,
    *,
    config: Path | None = None,
    service: ServiceInstall | None = None,
    **overrides: Any,
) -> Settings:
    """Read and validate the environment and the TOML file; raise ConfigError listing every
    problem, whichever check finds it. ``config`` (``--config``) wins over AGENT_CONFIG;
    ``service`` gives the service's TOML file and state directory as defaults."""
    if env_file is not None and (unreadable := env_file_problem(env_file)):
        raise ConfigError([unreadable])
    if config is not None:
        overrides["agent_config"] = config
    problems: list[str] = []
    env: EnvSettings | None = None
    try:
        env = _service_defaults(EnvSettings(_env_file=env_file, **overrides), service)
    except ValidationError as exc:
        problems.extend(env_problems(exc))
    raw = _raw_environment(env_file, overrides) if env is None else {}
    config_path = env.agent_config if env else _config_path_fallback(raw, service)
    agent_config: AgentConfig | None = None
    try:
        agent_config = load_config(config_path)
    except ConfigError as exc:
        problems.extend(exc.problems)
    facts = _facts(env) if env is not None else _raw_facts(raw, service)
    problems.extend(_cross_problems(facts, agent_config, config_path, service))
    if env is not None:
        problems.extend(door_problems(env))
    if problems or env is None or agent_config is None:
        raise ConfigError(problems)
    return Settings(env=env, config=_apply_overrides(env, agent_config))


def reload_settings(settings: Settings) -> Settings:
    """The settings with the TOML file read and validated again (SIGHUP); the environment
    stays as the process started with it, and its overrides still apply. ConfigError
    listing every problem, whichever check finds it, when the file will not do."""
    env = settings.env
    config = load_config(env.agent_config)
    problems = _config_problems(_facts(env), config, env.agent_config)
    if problems:
        raise ConfigError(problems)
    return Settings(env=env, config=_apply_overrides(env, config))


def _config_path_fallback(raw: Mapping[str, Any], service: ServiceInstall | None) -> Path:
    """AGENT_CONFIG (or --config) as given even when other variables are broken, to check
    the file too."""
    value = raw.get("agent_config")
    if value:
        return Path(value)
    return service.config_file if service is not None else Path("config/agent.toml")


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
