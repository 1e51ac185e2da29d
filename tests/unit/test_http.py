"""The agent's own endpoint in process (httpx's ASGI transport, no socket): /metrics,
/healthz, and every answer of the Alertmanager webhook."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from agent.daemon.http import HttpEndpoint, Liveness, build_app, is_loopback
from agent.daemon.service import Waker
from agent.daemon.webhook import Notice, WebhookIntake, parse_notification
from agent.hosts import HostPolicy
from agent.metrics import AgentMetrics

TOKEN = "wh-secret-token"
#: The names these tests' clients use, as PUBLIC_URL's host would be.
HOSTS = HostPolicy(frozenset({"a", "agent"}))


def _notification(alerts: int = 2, status: str = "firing") -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="MemoryLeak"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "devops-agent",
        "groupLabels": {"alertname": "MemoryLeak"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [
            {
                "status": status,
                "labels": {"alertname": "MemoryLeak", "service": f"svc-{i}"},
                "annotations": {"summary": "ignore this text"},
                "startsAt": "2026-11-24T12:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "",
                "fingerprint": f"{i:016x}",
            }
            for i in range(alerts)
        ],
    }


class Woken:
    """Collects the notices the intake passed on."""

    def __init__(self) -> None:
        self.notices: list[Notice] = []

    def __call__(self, notice: Notice) -> None:
        self.notices.append(notice)


def _app(
    woken: Woken, *, token: str | None = TOKEN, enabled: bool = True, timeout: float = 5
) -> Any:
    liveness = Liveness(max_age_seconds=3600)
    liveness.sweep_finished()
    intake = WebhookIntake(
        wake=woken,
        metrics=AgentMetrics(),
        token=token,
        enabled=enabled,
        max_body_bytes=1_000_000,
        body_timeout=timeout,
    )
    return build_app(AgentMetrics(), liveness, intake, hosts=HOSTS)


@pytest.fixture
async def client() -> AsyncIterator[tuple[httpx.AsyncClient, Woken]]:
    """A client of the app with a webhook token set."""
    woken = Woken()
    transport = httpx.ASGITransport(app=_app(woken))
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as http:
        yield http, woken


AUTH = {"Authorization": f"Bearer {TOKEN}"}
URL = "/webhook/alertmanager"


@pytest.mark.parametrize(("max_age", "status", "body"), [(3600.0, 200, "ok"), (-1.0, 503, "stale")])
async def test_healthz_follows_last_sweep(max_age: float, status: int, body: str) -> None:
    """/healthz is 200 while sweeps are recent and 503 once they are not; /metrics serves."""
    liveness = Liveness(max_age_seconds=max_age)
    liveness.sweep_finished()
    intake = WebhookIntake(Woken(), AgentMetrics(), None, False, 1000, 1)
    metrics = AgentMetrics()
    app = build_app(metrics, liveness, intake, hosts=HOSTS)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://a"
    ) as http:
        health = await http.get("/healthz")
        exposition = (await http.get("/metrics")).text
    assert (health.status_code, health.json()["status"]) == (status, body)
    assert "devops_agent_sweep_duration_seconds" in exposition


async def test_a_valid_notification_is_accepted_and_wakes(
    client: tuple[httpx.AsyncClient, Woken],
) -> None:
    """A version-4 notification with the right token: 202, and a wake-up with its counts."""
    http, woken = client
    answer = await http.post(URL, json=_notification(3), headers=AUTH)
    assert (answer.status_code, answer.json()) == (202, {"status": "accepted"})
    assert woken.notices == [Notice("firing", 3, 0)]


async def test_ten_thousand_alerts_are_accepted(client: tuple[httpx.AsyncClient, Woken]) -> None:
    """A notification of 10,000 alerts that fits the default 1 MB cap is accepted."""
    http, woken = client
    body = _notification(0)
    body["alerts"] = [
        {"status": "firing", "labels": {"alertname": "Leak", "service": f"s{i}"}}
        for i in range(10_000)
    ]
    raw = json.dumps(body, separators=(",", ":")).encode()
    assert 600_000 < len(raw) < 1_000_000
    answer = await http.post(URL, content=raw, headers=AUTH)
    assert answer.status_code == 202 and woken.notices[0].firing == 10_000


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}]
)
async def test_missing_or_wrong_token_is_401(
    client: tuple[httpx.AsyncClient, Woken], headers: dict[str, str]
) -> None:
    """No token, a wrong token, or the token without its scheme: 401, nothing woken."""
    http, woken = client
    answer = await http.post(URL, json=_notification(), headers=headers)
    assert answer.status_code == 401 and answer.headers["WWW-Authenticate"] == "Bearer"
    assert woken.notices == []


async def test_a_20_mb_body_is_413(client: tuple[httpx.AsyncClient, Woken]) -> None:
    """A body over the cap is refused, declared or streamed without a length."""
    http, woken = client
    declared = await http.post(URL, content=b"x" * 20_000_000, headers=AUTH)

    async def endless_chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"y" * 500_000

    streamed = await http.post(URL, content=endless_chunks(), headers=AUTH)
    assert declared.status_code == streamed.status_code == 413
    assert woken.notices == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "the body is not JSON"),
        (b"[]", "not a JSON object"),
        (json.dumps({**_notification(), "version": "3"}).encode(), 'version must be "4"'),
        (json.dumps({**_notification(), "alerts": "many"}).encode(), "alerts must be a list"),
        (json.dumps({**_notification(), "status": "odd"}).encode(), "status must be"),
        (b"[" * 50_000, "the body is not JSON"),
    ],
)
async def test_malformed_is_400_with_a_reason(
    client: tuple[httpx.AsyncClient, Woken], body: bytes, reason: str
) -> None:
    """Not JSON, deeply nested, or not a version-4 notification: 400 with a JSON reason."""
    http, woken = client
    answer = await http.post(URL, content=body, headers=AUTH)
    assert answer.status_code == 400 and reason in answer.json()["error"]
    assert woken.notices == []


async def test_a_body_that_never_ends_is_cut_off() -> None:
    """A body that trickles on is answered 408 once webhook.body_timeout_seconds passes."""
    woken = Woken()
    app = _app(woken, timeout=0.3)

    async def trickle() -> AsyncIterator[bytes]:
        while True:
            yield b"{"
            await asyncio.sleep(0.05)

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://a"
    ) as http:
        answer = await http.post(URL, content=trickle(), headers=AUTH)
    assert answer.status_code == 408 and woken.notices == []


async def test_the_webhook_is_off_without_a_token_off_loopback() -> None:
    """With no token and not on loopback the endpoint is off; on loopback it needs none."""
    woken = Woken()
    off = _app(woken, token=None, enabled=False)
    on = _app(woken, token=None, enabled=True)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=off), base_url="http://a"
    ) as http:
        assert (await http.post(URL, json=_notification())).status_code == 404
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=on), base_url="http://a"
    ) as http:
        assert (await http.post(URL, json=_notification())).status_code == 202
    assert len(woken.notices) == 1
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5")


def test_parse_notification_counts_firing_and_resolved() -> None:
    """The notice holds numbers only: firing and resolved alerts of the notification."""
    body = _notification(3)
    body["alerts"][0]["status"] = "resolved"
    assert parse_notification(body) == Notice("firing", 2, 1)


async def test_a_burst_of_notifications_wakes_one_sweep() -> None:
    """The first notification opens the window; 99 more land while it is open (the test
    drives the window's clock): one sweep follows, not 100."""
    stopping = asyncio.Event()
    windows: list[float] = []

    async def window(seconds: float) -> None:
        windows.append(seconds)
        if len(windows) == 1:
            for _ in range(99):  # the rest of the burst arrives while the window is open
                waker.wake(Notice("firing", 1, 0))

    waker = Waker(window=0.5, sleep=window)
    swept: list[int] = []

    async def sweep() -> None:
        swept.append(1)

    waker.wake(Notice("firing", 1, 0))
    running = asyncio.create_task(waker.run(sweep, stopping))
    for _ in range(500):  # let the waker do all it wants to with the burst
        await asyncio.sleep(0)
    stopping.set()
    waker.wake(Notice("resolved", 0, 1))  # release the waker so that it sees it must stop
    await asyncio.wait_for(running, timeout=30)
    assert swept == [1] and windows[0] == 0.5


async def test_a_notification_during_a_sweep_wakes_another() -> None:
    """A resolved notification that lands while a sweep runs is not lost: one more sweep."""
    waker = Waker(window=0.0)
    stopping = asyncio.Event()
    swept: list[str] = []

    async def sweep() -> None:
        swept.append("sweep")
        if len(swept) == 1:
            waker.wake(Notice("resolved", 0, 1))
        else:
            stopping.set()

    waker.wake(Notice("firing", 1, 0))
    await asyncio.wait_for(waker.run(sweep, stopping), timeout=30)
    assert swept == ["sweep", "sweep"]


async def test_a_flood_of_refusals_is_counted_not_logged_one_by_one(
    client: tuple[httpx.AsyncClient, Woken],
) -> None:
    """50 requests with a wrong token: 50 answers of 401, one log line."""
    from structlog.testing import capture_logs

    http, _ = client
    with capture_logs() as logs:
        answers = [
            (await http.post(URL, json=_notification(1), headers={"Authorization": "x"}))
            for _ in range(50)
        ]
    assert [a.status_code for a in answers] == [401] * 50
    [refused] = [e for e in logs if e["event"] == "webhook_refused"]
    assert refused["result"] == "unauthorized"


async def test_a_burst_is_logged_once_with_its_totals() -> None:
    """The waker writes one webhook_received line per burst, with the burst's totals."""
    from structlog.testing import capture_logs

    waker = Waker(window=0.0)
    stopping = asyncio.Event()

    async def sweep() -> None:
        stopping.set()

    for notice in (Notice("firing", 2, 0), Notice("resolved", 0, 3), Notice("firing", 1, 1)):
        waker.wake(notice)
    with capture_logs() as logs:
        await asyncio.wait_for(waker.run(sweep, stopping), timeout=30)
    [burst] = [e for e in logs if e["event"] == "webhook_received"]
    assert (burst["notifications"], burst["firing"], burst["resolved"]) == (3, 3, 4)


async def test_the_endpoint_serves_on_its_socket_with_nagle_off() -> None:
    """On a real loopback socket: answers come back, and the connection has TCP_NODELAY
    (without it every kept-alive request waits ~40 ms for a delayed ACK)."""
    import socket

    endpoint = await HttpEndpoint(_app(Woken()), "127.0.0.1", 0).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        status = await reader.readline()
        [connection] = list(endpoint._server.server_state.connections)
        server_socket = connection.transport.get_extra_info("socket")
        nodelay = server_socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        writer.close()
    finally:
        await endpoint.stop()
    assert status.startswith(b"HTTP/1.1 200")
    assert nodelay != 0
