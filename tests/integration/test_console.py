"""The console in process, over ASGI: who may see and answer, the plot drawn from a real
Prometheus (and "no data" when it is down), every hostile value rendered as text, and an
approval through the form sending exactly one request."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from pytest_httpx import HTTPXMock

from agent.console.access import Access
from agent.console.app import Console
from agent.daemon.cycle import run_cycle
from agent.daemon.http import Liveness, build_app
from agent.daemon.webhook import WebhookIntake
from agent.demo.gateway_sim import GatewaySimulator
from agent.hosts import HostPolicy
from agent.incidents.lifecycle import on_finding
from agent.incidents.model import Incident
from agent.local import LocalPrometheus, MetricsTarget, free_port
from agent.runtime import Runtime, open_runtime
from agent.settings import load_settings
from agent.sweep.findings import Finding
from tests.conftest import alert_finding
from tests.integration.daemon_support import agent_env, write_config
from tests.llm_fakes import CHAT_URL, LLM_BASE, completion, phase_of, plan, triage

pytestmark = [
    pytest.mark.integration,
    pytest.mark.httpx_mock(should_mock=lambda request: request.url.host == "llm.test"),
]

HOSTILE = '<script>alert("x")</script>'
VIEW, APPROVE = "console-view-token", "console-approve-token"


def _none(request: httpx.Request) -> httpx.Response:
    phase = phase_of(json.loads(request.read()))
    if phase == "triage":
        return httpx.Response(200, json=triage(actionable=False))
    if phase == "investigation":
        return httpx.Response(200, json=completion(f"Nothing to see {HOSTILE}"))
    return httpx.Response(200, json=plan(action="none"))


@asynccontextmanager
async def _client(rt: Runtime, access: Access) -> AsyncIterator[httpx.AsyncClient]:
    intake = WebhookIntake(lambda _: None, rt.metrics, None, True, 1000, 5)
    app = build_app(
        rt.metrics,
        Liveness(60),
        intake,
        console=Console(rt, access).routes(),
        hosts=HostPolicy.of("agent.test"),
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://agent.test"
    ) as client:
        yield client


async def _page_with_points(client: httpx.AsyncClient, page: str, points: int) -> str:
    """The incident page once its plot has ``points`` points (scrapes take a moment)."""
    deadline = time.monotonic() + 30
    while True:
        html = (await client.get(page)).text
        path = re.search(r'<path d="M ([^"]+)"', html)
        if path and len(path.group(1).split(" L ")) >= points or time.monotonic() > deadline:
            return html
        await asyncio.sleep(0.5)


async def _both_waiting(rt: Runtime) -> dict[str, Incident]:
    """Cycle until both leaking services' restarts wait for approval."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        await run_cycle(rt, datetime.now(UTC))
        waiting = {i.target or "": i for i in rt.store.current() if i.state == "awaiting_approval"}
        if len(waiting) == 2:
            return waiting
        await asyncio.sleep(0.3)
    raise AssertionError("both restarts never came to wait for approval")


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "no CSRF field in the form"
    return found.group(1)


async def test_console_access_plot_escaping_and_approval(
    httpx_mock: HTTPXMock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    e2e_prometheus: LocalPrometheus,
    services_target: MetricsTarget,
) -> None:
    """Login per role, the list and its filters, the incident page with its plot, hostile
    text shown as text, CSRF checked, the form's approval sends one restart, and the form's
    denial of another service's restart escalates it with who and why, sending nothing."""
    httpx_mock.add_callback(_none, url=CHAT_URL, is_reusable=True)
    services_target.set("e2e_memory_bytes", 5000, service="market-predictor", note=HOSTILE)
    services_target.set("e2e_memory_bytes", 5000, service="coding-ai-agent")
    gateway = GatewaySimulator().start()
    config = write_config(tmp_path / "agent.toml")
    env = agent_env(tmp_path, config, e2e_prometheus.url, gateway.url, OPENAI_BASE_URL=LLM_BASE)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    access = Access(console_token=VIEW, approval_token=APPROVE, loopback=False)
    try:
        async with open_runtime(load_settings(env_file=None)) as rt:
            both = await _both_waiting(rt)
            waiting, other = both["market-predictor"], both["coding-ai-agent"]
            page = f"/ui/incidents/{waiting.id}"
            async with _client(rt, access) as client:
                assert (await client.get("/ui/")).status_code == 303  # to the login form
                refused = await client.post("/ui/login", data={"token": "wrong", "next": "/ui/"})
                assert refused.status_code == 401
                viewer = await client.post("/ui/login", data={"token": VIEW, "next": page})
                assert viewer.status_code == 303 and viewer.headers["location"] == page
                cookie = viewer.headers["set-cookie"].lower()
                assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
                listing = (await client.get("/ui/?state=awaiting_approval")).text
                assert waiting.id in listing and "restart market-predictor?" in listing
                assert waiting.id not in (await client.get("/ui/?state=resolved")).text
                html = await _page_with_points(client, page, 3)
                assert "<script" not in html.lower()
                assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
                assert 'class="approve"' not in html  # a viewer may not answer
                svg = re.search(r"<svg.*?</svg>", html, re.DOTALL)
                assert svg is not None
                path = re.search(r'<path d="M ([^"]+)"', svg.group())
                assert path is not None and len(path.group(1).split(" L ")) >= 3
                assert 'class="threshold"' in svg.group() and "threshold 1k" in svg.group()
                assert ">opened</text>" in svg.group()
                forbidden = await client.post(f"{page}/approve", data={"by": "v", "csrf": "00"})
                assert forbidden.status_code == 403

                await client.post("/ui/login", data={"token": APPROVE, "next": page})
                html = (await client.get(page)).text
                assert 'class="approve"' in html
                csrf = _csrf(html)
                no_csrf = await client.post(f"{page}/approve", data={"by": "alice"})
                assert no_csrf.status_code == 403 and gateway.executions() == []
                done = await client.post(
                    f"{page}/approve",
                    data={"by": HOSTILE, "reason": "the graph", "csrf": csrf, "action": "restart"},
                )
                assert done.status_code == 303 and "message=approved" in done.headers["location"]
                after = (await client.get(done.headers["location"])).text
                assert "approved" in after and "&lt;script&gt;" in after
                again = await client.post(f"{page}/approve", data={"by": "bob", "csrf": csrf})
                assert "not+approved" in again.headers["location"]
                denied = await client.post(
                    f"/ui/incidents/{other.id}/deny",
                    data={
                        "by": "carol",
                        "reason": "deploy running",
                        "csrf": csrf,
                        "action": "restart",
                        "target": "coding-ai-agent",
                    },
                )
                assert denied.status_code == 303 and "message=denied" in denied.headers["location"]
            after_deny = rt.store.get(other.id)
            await_stop = gateway.executions()
    finally:
        gateway.stop()
    assert isinstance(after_deny, Incident) and after_deny.state == "escalated"
    assert after_deny.resolution == "approval denied by carol: deploy running"
    assert len(await_stop) == 1
    assert await_stop[0].body["target_resource"]["name"] == "market-predictor"
    assert await_stop[0].body["action_request"]["intent"] == "restart the service"
    assert "script" not in json.dumps(await_stop[0].body)


def _hostile_finding() -> Finding:
    return alert_finding(
        first_seen=datetime.now(UTC),
        annotations={"summary": HOSTILE_IMG},
        extra_labels={"x": HOSTILE_IMG},
    )


HOSTILE_IMG = "<img src=x onerror=alert(1)>"


async def test_console_off_read_only_and_no_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No token and not on loopback: off (404). No token on loopback: read-only, no
    login needed, no forms. Prometheus down: the page says "no data: ..." instead."""
    config = write_config(tmp_path / "agent.toml", diagnosis={"use_llm": False})
    env = agent_env(tmp_path, config, f"http://127.0.0.1:{free_port()}", "http://127.0.0.1:9")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    async with open_runtime(load_settings(env_file=None)) as rt:
        step = on_finding(_hostile_finding(), "console000001", datetime.now(UTC))
        rt.store.insert(step)
        off = Access(console_token=None, approval_token=None, loopback=False)
        async with _client(rt, off) as client:
            assert (await client.get("/ui/")).status_code == 404
        local = Access(console_token=None, approval_token=None, loopback=True)
        async with _client(rt, local) as client:
            listing = await client.get("/ui/")
            assert listing.status_code == 200 and "read-only" in listing.text
            html = (await client.get("/ui/incidents/console000001")).text
            assert "no data: Prometheus at http://127.0.0.1:" in html
            assert "unreachable: connection refused" in html
            assert "&lt;img src=x onerror=alert(1)&gt;" in html and "<img" not in html
            posted = await client.post("/ui/incidents/console000001/approve", data={"by": "x"})
            assert posted.status_code == 403
            missing = await client.get("/ui/incidents/nope")
            assert missing.status_code == 404 and "no such incident" in missing.text
