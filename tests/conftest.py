"""Shared fixtures: a clean environment for every test and a valid baseline of settings."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import structlog

from agent.clients.alertmanager import AlertmanagerClient
from agent.clients.prometheus import PrometheusClient
from agent.clients.prometheus import build_http_client as prometheus_http
from agent.config import AgentConfig, Severity, parse_config
from agent.sweep.findings import Finding, fingerprint

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "config" / "agent.toml"
#: The PostgreSQL the tests use (trust auth, database `test`); read before the environment
#: is cleared for each test.
POSTGRES = os.environ.get("TEST_POSTGRES_URL", "postgresql://root@127.0.0.1:5432/test")

#: A complete, valid environment; tests copy it and change what they test.
BASE_ENV = {
    "PROMETHEUS_URL": "http://127.0.0.1:9090",
    "AI_COMMAND_GATEWAY_URL": "http://127.0.0.1:8003",
    "AI_COMMAND_GATEWAY_TIMEOUT": "5",
    "AI_COMMAND_GATEWAY_SOURCE_ID": "devops-ai-agent",
    "OPENAI_API_KEY": "sk-test-SECRET1234567890",
    "LLM_MODEL": "gpt-4o",
    "LLM_TEMPERATURE": "0.1",
    "LLM_MAX_TOKENS": "800",
    "LOG_LEVEL": "INFO",
    "ENVIRONMENT": "development",
    "AGENT_CONFIG": str(CONFIG),
}

_KEEP = {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT", "CI"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Every test starts from an environment with none of the agent's variables."""
    for name in list(os.environ):
        if name not in _KEEP and not name.startswith("PYTEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    # a service installed on the test machine is never the one a test's command finds
    monkeypatch.setenv("DEVOPS_AGENT_ROOT", str(tmp_path / "no-service-install"))
    yield
    structlog.reset_defaults()


@pytest.fixture
def base_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Set the complete valid environment and return it."""
    for key, value in BASE_ENV.items():
        monkeypatch.setenv(key, value)
    return dict(BASE_ENV)


def alert_finding(
    name: str = "MemoryLeak",
    service: str = "market-predictor",
    *,
    first_seen: datetime,
    annotations: Mapping[str, str] | None = None,
    value: float = 1.0,
    extra_labels: Mapping[str, str] | None = None,
) -> Finding:
    """A critical alert finding on ``service``, fingerprinted as the sweep would."""
    labels = {"alertname": name, "service": service, **(extra_labels or {})}
    return Finding(
        kind="alert",
        name=name,
        target=service,
        severity=Severity.critical,
        labels=labels,
        annotations=dict(annotations or {}),
        value=value,
        first_seen=first_seen,
        fingerprint=fingerprint("alert", name, labels, ()),
    )


def make_config(**sections: object) -> AgentConfig:
    """The shipped config/agent.toml with whole sections replaced."""
    data = tomllib.loads(CONFIG.read_text())
    data.update(sections)
    return parse_config(data, "test-config")


class Sleeps:
    """A fake sleep for tenacity: records the waits it is asked for, sleeps for none."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    """Waits recorded, never slept."""
    return Sleeps()


def run_cli(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m agent ARGS` with exactly ``env`` (plus PATH and HOME, and no service
    install to find unless ``env`` names one), as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(cwd),
            "DEVOPS_AGENT_ROOT": str(cwd / "no-service-install"),
            **env,
        },
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def postgres_schema(prefix: str = "t") -> tuple[str, Callable[[], None]]:
    """A fresh schema in the test database: its store URL, and a function that drops it.

    No PostgreSQL is a failure, not a skip: `make test` starts the local cluster.
    """
    import psycopg

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")

    def drop() -> None:
        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

    return f"{POSTGRES}?options=-csearch_path%3D{schema}", drop


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty store URL of each backend: a new SQLite file, a new PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state' / 'agent.db'}"
        return
    url, drop = postgres_schema()
    try:
        yield url
    finally:
        drop()


MakePrometheus = Callable[..., PrometheusClient]


@pytest.fixture
async def make_prometheus() -> AsyncIterator[MakePrometheus]:
    """Build Prometheus clients as the runtime does; they are closed after the test."""
    made: list[httpx.AsyncClient] = []

    def make(
        url: str, *, timeout: float = 5.0, token: str | None = None, max_bytes: int = 50_000_000
    ) -> PrometheusClient:
        http = prometheus_http(url, timeout=timeout, bearer_token=token, verify=True)
        made.append(http)
        return PrometheusClient(http, timeout=timeout, max_bytes=max_bytes)

    yield make
    for http in made:
        await http.aclose()


def alertmanager_client(http: httpx.AsyncClient, timeout: float = 5.0) -> AlertmanagerClient:
    """An Alertmanager client over an httpx client the test owns."""
    return AlertmanagerClient(http, timeout=timeout, max_bytes=20_000_000)
