"""`check-config --probe`: ask every configured peer one harmless question.

A new install is right when its configuration is valid *and* every peer answers: this
asks Prometheus for its build info, Alertmanager for its status, the gateway for its
health (nothing is run) and the model endpoint for its list of models, each within its
own configured deadline, all at once; then it opens the incident store without creating
or migrating it, reads its schema version and commits a write that changes nothing. Each
answer becomes one line: ``ok`` with what the peer said, or the cause naming the peer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from contextlib import AsyncExitStack
from dataclasses import dataclass

from agent.clients.alertmanager import AlertmanagerClient
from agent.clients.alertmanager import build_http_client as alertmanager_http
from agent.clients.gateway import GatewayClient
from agent.clients.gateway import build_http_client as gateway_http
from agent.errors import AgentError, NoStore, StoreError
from agent.runtime import build_llm, build_prometheus
from agent.settings import Settings, reveal
from agent.store import open_store
from agent.store.sql import MIGRATIONS
from agent.text import redact_url


@dataclass(frozen=True)
class PeerCheck:
    """What one peer answered: ok with a detail, or the cause of the failure."""

    peer: str
    ok: bool
    detail: str

    def line(self) -> str:
        """One line for the terminal."""
        return f"{self.peer}: ok ({self.detail})" if self.ok else self.detail


async def _ask(peer: str, question: Awaitable[str]) -> PeerCheck:
    try:
        return PeerCheck(peer, True, await question)
    except AgentError as exc:
        return PeerCheck(peer, False, str(exc))


async def _prometheus_version(settings: Settings, stack: AsyncExitStack) -> PeerCheck:
    env, opts = settings.env, settings.config.prometheus
    bundle = opts.ca_bundle
    client, http = build_prometheus(
        env.prometheus_url,
        settings,
        bearer_token=reveal(env.prometheus_bearer_token),
        verify=str(bundle) if bundle else opts.tls_verify,
    )
    stack.push_async_callback(http.aclose)

    async def version() -> str:
        return f"version {await client.version()}"

    return await _ask(str(client.peer), version())


async def _alertmanager_version(url: str, settings: Settings, stack: AsyncExitStack) -> PeerCheck:
    opts = settings.config.alertmanager
    http = alertmanager_http(url, opts.timeout_seconds)
    stack.push_async_callback(http.aclose)
    client = AlertmanagerClient(http, timeout=opts.timeout_seconds, max_bytes=opts.max_answer_bytes)

    async def version() -> str:
        return f"version {await client.version()}"

    return await _ask(str(client.peer), version())


async def _gateway_health(settings: Settings, stack: AsyncExitStack) -> PeerCheck:
    env = settings.env
    timeout = env.ai_command_gateway_timeout
    http = gateway_http(env.ai_command_gateway_url, timeout, reveal(env.ai_command_gateway_token))
    stack.push_async_callback(http.aclose)
    client = GatewayClient(http, settings.config.gateway, timeout=timeout)
    health = await client.health()
    if health.healthy:
        return PeerCheck(str(client.peer), True, f"healthy, version {health.version or 'unknown'}")
    if health.reason.startswith("unreachable"):
        return PeerCheck(str(client.peer), False, f"{client.peer} {health.reason}")
    return PeerCheck(str(client.peer), False, f"{client.peer}: {health.reason}")


async def _model_listing(settings: Settings, stack: AsyncExitStack) -> PeerCheck | None:
    built = build_llm(settings, None)
    if built is None:
        return None
    llm, http = built
    stack.push_async_callback(http.aclose)
    return await _ask(str(llm.peer), llm.probe())


async def probe_peers(settings: Settings) -> list[PeerCheck]:
    """Ask each configured peer once, all at once; one result per peer, in a fixed order."""
    async with AsyncExitStack() as stack:
        asks = [_prometheus_version(settings, stack)]
        if settings.env.alertmanager_url:
            asks.append(_alertmanager_version(settings.env.alertmanager_url, settings, stack))
        asks.append(_gateway_health(settings, stack))
        model = _model_listing(settings, stack)
        checks = await asyncio.gather(*asks, model)
    return [c for c in checks if c is not None]


def probe_store(settings: Settings) -> PeerCheck:
    """Connect to the incident store, read its schema version, commit a harmless write;
    a store not made yet is fine (the daemon makes it on its first start)."""
    peer = f"incident store {redact_url(settings.env.state_url)}"
    try:
        store = open_store(settings.env.state_url, create=False, migrate=False)
    except NoStore:
        return PeerCheck(peer, True, "none yet: the daemon creates it when it first starts")
    except StoreError as exc:
        return PeerCheck(peer, False, str(exc))
    try:
        version = store.schema_version
        store.check_writable()
    except StoreError as exc:
        return PeerCheck(peer, False, f"{peer}: {exc}")
    finally:
        store.close()
    latest = len(MIGRATIONS)
    if version > latest:
        detail = f"schema version {version} is newer than this agent's ({latest}): upgrade it"
        return PeerCheck(peer, False, f"{peer}: {detail}")
    later = f", migrated to {latest} when the agent next starts" if version < latest else ""
    return PeerCheck(peer, True, f"schema version {version}{later}, writable")
