"""Where people look at the report: ``devops-agent report`` (exit codes, one line per
problem, JSON rows and suggestions) and the console's ``/ui/report`` (tables, server-side
SVG, rows linked to their incidents, no script), over a real SQLite store."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from agent.cli.main import main
from agent.console.access import Access
from agent.console.app import Console
from agent.daemon.api import ApprovalApi
from agent.daemon.http import Liveness, build_app
from agent.daemon.notify import Notifier
from agent.daemon.service import Daemon
from agent.daemon.webhook import WebhookIntake
from agent.diagnosis.models import Decision
from agent.hosts import HostPolicy
from agent.runtime import Runtime, open_runtime
from agent.settings import load_settings
from agent.store import open_store
from tests.conftest import BASE_ENV
from tests.unit.test_ledger_store import ASKS, MP, _ended

SENT = Decision("none", MP, "llm", False, proposed="none")


def _store_with_records(url: str, now: datetime) -> None:
    store = open_store(url)
    try:
        for n in range(3):
            _ended(store, n, ASKS, now - timedelta(hours=n + 1))
        _ended(store, 9, SENT, now - timedelta(days=20))
    finally:
        store.close()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A complete environment whose store holds three denied restarts in the last hours
    and one older incident."""
    url = f"sqlite:///{tmp_path / 'agent.db'}"
    _store_with_records(url, datetime.now(UTC))
    values = dict(BASE_ENV, AGENT_STATE_URL=url)
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    return values


def test_report_json_has_rows_and_suggestions(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """--json prints the rows of the range only (the older incident is outside 7d) and
    the suggestions; --service keeps one service."""
    assert main(["report", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(r["service"], r["action"], r["incidents"], r["denied"]) for r in doc["rows"]] == [
        (MP, "restart", 3, 3)
    ]
    assert doc["rows"][0]["tier"] == "auto" and doc["suggestions"] == []
    assert [r["name"] for r in doc["by_name"]] == ["Leak0", "Leak1", "Leak2"]
    assert main(["report", "--json", "--since", "30d", "--service", "nope"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == []
    assert main(["report", "--since", "30d"]) == 0
    text = capsys.readouterr().out
    assert "market-predictor" in text and "restart" in text and "no suggestion" in text


@pytest.mark.parametrize("since", ["7x", "0d", "d", "1.5h"])
def test_report_refuses_a_bad_since_with_one_line(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], since: str
) -> None:
    """Anything but a Prometheus duration is one line on stderr, exit 1."""
    assert main(["report", "--since", since]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--since" in err and "Traceback" not in err


def test_report_never_creates_a_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No store: one line naming where it looked, exit 1, and still no store."""
    where = tmp_path / "missing" / "agent.db"
    for key, value in dict(BASE_ENV, AGENT_STATE_URL=f"sqlite:///{where}").items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    assert main(["report"]) == 1
    err = capsys.readouterr().err.strip()
    assert "no incident store" in err and len(err.splitlines()) == 1
    assert not where.exists()


@pytest.fixture
async def rt(env: dict[str, str]) -> AsyncIterator[Runtime]:
    """A runtime over that store."""
    async with open_runtime(load_settings(env_file=None)) as runtime:
        yield runtime


def _client(rt: Runtime) -> httpx.AsyncClient:
    access = Access(console_token=None, approval_token=None, loopback=True)
    intake = WebhookIntake(lambda _: None, rt.metrics, None, True, 1000, 5)
    api = ApprovalApi(rt, token=None, body_timeout=5)
    app = build_app(
        rt.metrics,
        Liveness(60),
        intake,
        api,
        Console(rt, access).routes(),
        hosts=HostPolicy.of("127.0.0.1"),
    )
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:9464")


async def test_the_console_report_page(rt: Runtime) -> None:
    """/ui/report shows the rows with their figures, draws incidents per day as inline SVG,
    links each row to its incidents, carries no script under a strict CSP; a bad since is
    400 with the reason; the linked list shows exactly those incidents."""
    async with _client(rt) as client:
        page = await client.get("/ui/report")
        assert page.status_code == 200
        html = page.text
        assert (
            "<script" not in html
            and "default-src 'none'" in page.headers["content-security-policy"]
        )
        assert html.count("<svg") >= 1 and "incidents per day per service" in html
        link = "/ui/?service=market-predictor&amp;action=restart"
        assert link in html and "/ui/?name=Leak0" in html
        bad = await client.get("/ui/report", params={"since": "7x"})
        assert bad.status_code == 400 and "is not a duration" in bad.text
        listed = await client.get("/ui/", params={"service": MP, "action": "restart"})
        assert listed.status_code == 200
        assert all(f"inc0000{n}" in listed.text for n in range(3))
        assert "inc00009" not in listed.text
        metrics = (await client.get("/metrics")).text
        assert (
            'devops_agent_outcomes_total{action="restart",result="denied",'
            'service="market-predictor"} 3.0' in metrics
        )


async def test_the_daemon_prunes_old_records_and_keeps_the_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's hourly job drops records older than report.keep_days; outcomes_total
    keeps counting them."""
    url = f"sqlite:///{tmp_path / 'agent.db'}"
    now = datetime.now(UTC)
    store = open_store(url)
    try:
        _ended(store, 1, SENT, now - timedelta(days=100))
        _ended(store, 2, SENT, now - timedelta(days=10))
    finally:
        store.close()
    for key, value in dict(BASE_ENV, AGENT_STATE_URL=url).items():
        monkeypatch.setenv(key, value)
    async with open_runtime(load_settings(env_file=None)) as runtime:
        daemon = Daemon(runtime, Notifier(None), Liveness(60))
        await daemon.prune_job()
        kept = runtime.store.outcomes(now - timedelta(days=365), now)
        assert [o.incident_id for o in kept.outcomes] == ["inc00002"]
        assert runtime.store.outcome_counts()[(MP, "none", "none")] == 2
