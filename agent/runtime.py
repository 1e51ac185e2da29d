"""Everything the daemon holds for its lifetime: clients, store, metrics, and who it is.

Built once at start-up by ``open_runtime`` and closed on the way out, in that order; one
``httpx.AsyncClient`` per upstream. Tests and the one-shot ``sweep`` command use the same
builder, so what runs in production is what is tested.

Several replicas may share one store. Each is a ``replica`` (host, pid and a random
suffix) that works an incident only under a lease it renews while it works; the
``LeaseKeeper`` renews the leases of the incidents this process is working on, and only
those, so a lease left behind by a crashed coroutine still expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import httpx

from agent.clients.alertmanager import AlertmanagerClient
from agent.clients.alertmanager import build_http_client as alertmanager_http
from agent.clients.gateway import GatewayClient, build_http_client
from agent.clients.http import DryRunTransport
from agent.clients.llm import Gate, LLMClient, LLMOptions, build_llm_client
from agent.clients.prometheus import PrometheusClient
from agent.clients.prometheus import build_http_client as prometheus_http
from agent.config import AgentConfig
from agent.diagnosis.engine import DiagnosisDeps
from agent.dry_run import Withheld
from agent.errors import StoreError
from agent.logs import get_logger
from agent.metrics import AgentMetrics
from agent.settings import Settings, reveal
from agent.store import open_store
from agent.store.base import IncidentStore
from agent.sweep.collector import SweepDeps

log = get_logger("agent.runtime")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The wall clock, in UTC."""
    return datetime.now(UTC)


def replica_id() -> str:
    """This process's name among replicas: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class Runtime:
    """The daemon's dependencies, passed explicitly to every job."""

    settings: Settings
    store: IncidentStore
    metrics: AgentMetrics
    prometheus: PrometheusClient
    gateway: GatewayClient
    sweep_deps: SweepDeps
    diagnosis: DiagnosisDeps
    alertmanager: AlertmanagerClient | None
    dry_run: bool
    replica: str = field(default_factory=replica_id)
    clock: Clock = utc_now
    #: Incidents some coroutine of this process is working on right now.
    working: set[str] = field(default_factory=set)
    #: Incidents whose work raised and that could not even be escalated: left alone by
    #: this process so that one poison incident is logged once, not every sweep.
    poisoned: set[str] = field(default_factory=set)
    #: What a dry run did not send or post (see ``agent/dry_run.py``).
    withheld: Withheld = field(default_factory=Withheld)

    @property
    def config(self) -> AgentConfig:
        """The TOML configuration with overrides applied."""
        return self.settings.config

    def console_url(self, incident_id: str) -> str | None:
        """The console's page of an incident, when ``PUBLIC_URL`` says where it is."""
        base = self.settings.env.public_url
        return f"{base}/ui/incidents/{incident_id}" if base else None

    def lease_until(self) -> datetime:
        """When a lease taken now expires unless renewed."""
        return self.clock() + timedelta(seconds=self.config.schedule.lease_seconds)

    def pinned(self) -> Runtime:
        """This runtime with its configuration fixed as it is now: a job (a cycle, a
        verification pass) runs on one configuration from start to end even when a reload
        swaps this one's meanwhile. Everything else (clients, store, the work in hand) is
        shared."""
        return replace(self)

    def reconfigure(self, settings: Settings) -> None:
        """Use ``settings`` from now on (a reload); jobs already running keep theirs."""
        self.settings = settings
        self.sweep_deps = replace(self.sweep_deps, config=settings.config)
        self.diagnosis = replace(self.diagnosis, config=settings.config)


class LeaseKeeper:
    """Renews the leases of the incidents this process works on, every third of a lease."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    async def run(self) -> None:
        """Renew until cancelled; a failed renewal is logged and tried again."""
        while True:
            # read each round: a reload may change lease_seconds
            await asyncio.sleep(self._rt.config.schedule.lease_seconds / 3)
            working = sorted(self._rt.working)
            if not working:
                continue
            try:
                self._rt.store.renew_leases(self._rt.replica, working, self._rt.lease_until())
            except StoreError as exc:
                log.warning("lease_renewal_failed", error=str(exc), incidents=len(working))


def build_prometheus(
    url: str, settings: Settings, *, bearer_token: str | None, verify: bool | str
) -> tuple[PrometheusClient, httpx.AsyncClient]:
    """The Prometheus client for ``url`` and the httpx client under it (the caller
    closes the latter)."""
    opts = settings.config.prometheus
    http = prometheus_http(
        url, timeout=opts.query_timeout_seconds, bearer_token=bearer_token, verify=verify
    )
    client = PrometheusClient(
        http, timeout=opts.query_timeout_seconds, max_bytes=opts.max_answer_bytes
    )
    return client, http


def build_llm(
    settings: Settings, metrics: AgentMetrics | None, gate: Gate | None = None
) -> tuple[LLMClient, httpx.AsyncClient] | None:
    """The model client and the httpx client under it (the caller closes the latter);
    None when the diagnosis does not use a model. ``gate``: see ``LLMClient.gate``."""
    env, config = settings.env, settings.config
    if not config.diagnosis.use_llm:
        return None
    options = LLMOptions(
        model=env.llm_model,
        temperature=env.llm_temperature,
        max_tokens=env.llm_max_tokens,
        max_retries=config.diagnosis.max_retries,
        request_timeout=config.diagnosis.request_timeout_seconds,
    )
    return build_llm_client(
        api_key=env.openai_api_key.get_secret_value(),
        base_url=env.openai_base_url,
        options=options,
        metrics=metrics,
        max_answer_bytes=config.diagnosis.max_answer_bytes,
        gate=gate,
    )


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    dry_run: bool | None = None,
    metrics: AgentMetrics | None = None,
    create_store: bool = True,
) -> AsyncIterator[Runtime]:
    """Create the clients and the store, start renewing leases; close them all on exit.
    Without ``create_store`` (a command that answers) a missing store is ``NoStore``."""
    env, config = settings.env, settings.config
    metrics = metrics or AgentMetrics()
    dry_run = env.dry_run if dry_run is None else dry_run
    async with AsyncExitStack() as stack:
        bundle = config.prometheus.ca_bundle
        prometheus, prom_http = build_prometheus(
            env.prometheus_url,
            settings,
            bearer_token=reveal(env.prometheus_bearer_token),
            verify=str(bundle) if bundle else config.prometheus.tls_verify,
        )
        stack.push_async_callback(prom_http.aclose)
        alertmanager = None
        if env.alertmanager_url:
            am = config.alertmanager
            # A dry run reads silences and alerts, and posts nothing (see agent/dry_run.py).
            reads = DryRunTransport(frozenset({"GET"})) if dry_run else None
            am_http = alertmanager_http(env.alertmanager_url, am.timeout_seconds, reads)
            stack.push_async_callback(am_http.aclose)
            alertmanager = AlertmanagerClient(
                am_http, timeout=am.timeout_seconds, max_bytes=am.max_answer_bytes
            )
        gw_http = build_http_client(
            env.ai_command_gateway_url,
            env.ai_command_gateway_timeout,
            reveal(env.ai_command_gateway_token),
            DryRunTransport() if dry_run else None,
        )
        stack.push_async_callback(gw_http.aclose)
        llm = None
        built = build_llm(settings, metrics)
        if built is not None:
            llm, llm_http = built
            stack.push_async_callback(llm_http.aclose)
        store = open_store(env.state_url, create=create_store)
        stack.callback(store.close)
        metrics.approvals.read = store.approval_counts
        stack.callback(setattr, metrics.approvals, "read", None)
        metrics.outcomes.read = store.outcome_counts
        stack.callback(setattr, metrics.outcomes, "read", None)
        metrics.breakers.read = store.breakers
        stack.callback(setattr, metrics.breakers, "read", None)
        rt = Runtime(
            settings=settings,
            store=store,
            metrics=metrics,
            prometheus=prometheus,
            gateway=GatewayClient(
                gw_http, config.gateway, timeout=env.ai_command_gateway_timeout, metrics=metrics
            ),
            sweep_deps=SweepDeps(
                config=config,
                prometheus=prometheus,
                metrics=metrics,
                alertmanager=alertmanager,
                pending=store,
            ),
            diagnosis=DiagnosisDeps(config=config, prometheus=prometheus, llm=llm),
            alertmanager=alertmanager,
            dry_run=dry_run,
        )
        keeper = asyncio.create_task(LeaseKeeper(rt).run())
        try:
            yield rt
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
