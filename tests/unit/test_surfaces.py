"""The HTTP surfaces' doors: the Host check against DNS rebinding, full incident ids only,
login throttling, sessions that end on logout and on a token's rotation.

The app is the daemon's own (``build_app``) over a real SQLite store, asked through
httpx's ASGI transport; no peer is contacted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from agent.console.access import COOKIE, Access, LoginThrottle
from agent.console.app import Console
from agent.daemon.api import ApprovalApi
from agent.daemon.http import Liveness, build_app
from agent.daemon.webhook import WebhookIntake
from agent.hosts import HostPolicy, host_name
from agent.incidents.lifecycle import on_finding
from agent.runtime import Runtime, open_runtime
from agent.settings import load_settings
from tests.conftest import BASE_ENV, alert_finding

VIEW, APPROVE = "console-view-token-0123", "console-approve-token-0123"
INCIDENT = "3a4b5c6d7e8f"


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("127.0.0.1:9464", "127.0.0.1"),
        ("LocalHost.:9464", "localhost"),
        ("[0:0:0:0:0:0:0:1]:9464", "::1"),
        ("[::1]", "::1"),
        ("Agent.Example.ORG.", "agent.example.org"),
        ("agent.example.org:443", "agent.example.org"),
        ("agent.example.org:https", None),
        ("[::1", None),
        ("evil.example/x", None),
        ("", None),
        ("a b", None),
    ],
)
def test_a_host_header_is_read_as_a_host_name(header: str, name: str | None) -> None:
    """Port, brackets, one trailing dot and case do not matter; anything else is no name."""
    assert host_name(header) == name


@pytest.mark.parametrize(
    ("metrics", "public", "header", "allowed"),
    [
        ("127.0.0.1", None, "127.0.0.1:9464", True),
        ("127.0.0.1", None, "localhost:9464", True),  # ssh -L to localhost
        ("127.0.0.1", None, "[::1]:9464", True),
        ("127.0.0.1", None, "rebind.attacker.example:9464", False),
        ("127.0.0.1", None, "localhost.attacker.example", False),
        ("127.0.0.1", None, None, False),
        ("127.0.0.1", "https://Agent.Example.org/", "agent.example.org.", True),
        ("127.0.0.1", "https://agent.example.org", "agent.example.org.evil", False),
        ("10.0.0.5", None, "10.0.0.5:9464", True),
        ("10.0.0.5", None, "10.0.0.6:9464", False),
        ("0.0.0.0", None, "10.0.0.6:9464", True),  # a wildcard: any address, no names
        ("0.0.0.0", None, "[fe80::1]:9464", True),
        ("0.0.0.0", None, "attacker.example", False),
        ("::", "https://agent.example.org", "agent.example.org", True),
    ],
)
def test_the_host_policy(
    metrics: str, public: str | None, header: str | None, allowed: bool
) -> None:
    """Ours: METRICS_ADDR's host, PUBLIC_URL's host, loopback; with a wildcard bind any
    IP literal too. Never another name."""
    assert HostPolicy.of(metrics, public).allows(header) is allowed


@pytest.fixture
async def rt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Runtime]:
    """A runtime over a fresh SQLite store holding one open incident."""
    env = dict(BASE_ENV, AGENT_STATE_URL=f"sqlite:///{tmp_path / 'agent.db'}")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    async with open_runtime(load_settings(env_file=None)) as runtime:
        now = datetime.now(UTC)
        runtime.store.insert(on_finding(alert_finding(first_seen=now), INCIDENT, now))
        yield runtime


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _app(rt: Runtime, access: Access, throttle: LoginThrottle | None = None) -> httpx.AsyncClient:
    intake = WebhookIntake(lambda _: None, rt.metrics, None, True, 1000, 5)
    api = ApprovalApi(rt, token=APPROVE, body_timeout=5)
    console = Console(rt, access, throttle=throttle).routes()
    app = build_app(
        rt.metrics, Liveness(60), intake, api, console, hosts=HostPolicy.of("127.0.0.1")
    )
    transport = httpx.ASGITransport(app=app, client=("192.0.2.7", 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:9464")


async def _page(client: httpx.AsyncClient, cookie: str) -> httpx.Response:
    """GET /ui/ with exactly this session cookie."""
    client.cookies.clear()
    return await client.get("/ui/", headers={"Cookie": f"{COOKIE}={cookie}"})


ACCESS = Access(console_token=VIEW, approval_token=APPROVE, loopback=True)


async def test_a_rebinding_host_reaches_no_surface_but_metrics(rt: Runtime) -> None:
    """Host rebind.attacker.example: 400 from the console, the approval API and the
    webhook; /metrics and /healthz answer any Host."""
    async with _app(rt, ACCESS) as client:
        evil = {"Host": "rebind.attacker.example:9464"}
        auth = {**evil, "Authorization": f"Bearer {APPROVE}"}
        assert (await client.get("/ui/", headers=evil)).status_code == 400
        assert (
            await client.post("/ui/login", headers=evil, data={"token": VIEW})
        ).status_code == 400
        approve = await client.post(
            f"/api/incidents/{INCIDENT}/approve", headers=auth, json={"by": "x"}
        )
        assert approve.status_code == 400
        assert (
            await client.post("/webhook/alertmanager", headers=evil, json={})
        ).status_code == 400
        assert (await client.get("/metrics", headers=evil)).status_code == 200
        assert (await client.get("/healthz", headers=evil)).status_code == 200
        assert (await client.get("/ui/", headers={"Host": "LOCALHOST.:9464"})).status_code == 303


async def test_the_http_surfaces_take_full_ids_only(rt: Runtime) -> None:
    """A prefix that the command line resolves is unknown over HTTP (404); the full id
    reaches the incident (409: it does not wait for approval)."""
    async with _app(rt, ACCESS) as client:
        auth = {"Authorization": f"Bearer {APPROVE}"}
        prefix = await client.post("/api/incidents/3/approve", headers=auth, json={"by": "x"})
        full = await client.post(
            f"/api/incidents/{INCIDENT}/approve", headers=auth, json={"by": "x"}
        )
        assert rt.store.get("3") is not None  # the CLI would have taken it
        assert prefix.status_code == 404 and "full ids" in prefix.json()["error"]
        assert full.status_code == 409 and "not waiting" in full.json()["error"]
        await client.post("/ui/login", data={"token": VIEW})
        assert (await client.get("/ui/incidents/3a4b")).status_code == 404
        assert (await client.get(f"/ui/incidents/{INCIDENT}")).status_code == 200


async def test_login_allows_ten_failures_a_minute_per_address(rt: Runtime) -> None:
    """Ten wrong tokens: 401 each; the eleventh try, even with the right token, is 429
    with Retry-After; a minute later the right token logs in."""
    clock = Clock()
    async with _app(rt, ACCESS, LoginThrottle(clock=clock)) as client:
        for _ in range(10):
            assert (await client.post("/ui/login", data={"token": "wrong"})).status_code == 401
            clock.now += 1
        blocked = await client.post("/ui/login", data={"token": VIEW})
        assert blocked.status_code == 429 and blocked.headers["retry-after"] == "50"
        assert COOKIE not in blocked.headers.get("set-cookie", "")
        clock.now += 50
        assert (await client.post("/ui/login", data={"token": VIEW})).status_code == 303


async def test_logout_ends_the_session_on_every_replica(rt: Runtime) -> None:
    """The cookie of a logged-out session no longer opens a page, here or on another
    replica sharing the store; a token's rotation ends the sessions made with it."""
    access = Access(console_token=VIEW, approval_token=APPROVE, loopback=False)
    async with _app(rt, access) as client:
        login = await client.post("/ui/login", data={"token": VIEW})
        cookie = login.cookies[COOKIE]
        assert (await _page(client, cookie)).status_code == 200
        second = await client.post("/ui/login", data={"token": VIEW})
        other = second.cookies[COOKIE]
        client.cookies.clear()
        await client.post("/ui/logout", headers={"Cookie": f"{COOKIE}={cookie}"})
        assert (await _page(client, cookie)).status_code == 303
        assert (await _page(client, other)).status_code == 200
    async with _app(rt, access) as replica:
        assert (await _page(replica, cookie)).status_code == 303
        assert (await _page(replica, other)).status_code == 200
    rotated = Access(
        console_token="console-view-token-ROTATED", approval_token=APPROVE, loopback=False
    )
    async with _app(rt, rotated) as client:
        assert (await _page(client, other)).status_code == 303
