"""The long-running daemon: explicit start-up, schedule, push wake-ups and graceful shutdown.

Start-up: build the runtime, serve ``/metrics``, ``/healthz`` and the Alertmanager webhook,
schedule the sweep (first run at once) and the verification job with ``coalesce=True,
max_instances=1`` and a misfire grace time, then tell systemd READY=1. A webhook
notification wakes a sweep: a burst is absorbed for ``webhook.coalesce_seconds`` and
wakes one. Scheduled and woken sweeps take one lock, so they never overlap.

Shutdown on SIGTERM/SIGINT: STOPPING=1, stop the scheduler and the waker so no new work
starts, let in-flight jobs finish within the grace period, cancel what is left, stop
serving, close the clients.

Reload on SIGHUP (``daemon/reload.py``): the TOML file is read again; a good one applies
from the next job (each job runs on a pinned copy of the runtime, so one in flight
finishes on the configuration it started with), a changed schedule reschedules the jobs
(the next sweep comes one new interval after the reload: never a second one at once), a
bad one changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from agent.config import Schedule
from agent.console.access import Access
from agent.console.app import Console
from agent.daemon.api import ApprovalApi
from agent.daemon.cycle import run_cycle
from agent.daemon.http import HttpEndpoint, Liveness, build_app, is_loopback
from agent.daemon.notify import Notifier, watchdog_interval
from agent.daemon.reload import Reloader
from agent.daemon.verify import run_verifications
from agent.daemon.webhook import Notice, WebhookIntake
from agent.daemon.work import Diagnoses
from agent.errors import AgentError
from agent.hosts import HostPolicy
from agent.logs import get_logger
from agent.mcp.http import McpEndpoint
from agent.runtime import Runtime, open_runtime
from agent.settings import Settings, reveal

log = get_logger("agent.daemon")

VERIFY_TICK_SECONDS = 5.0
T = TypeVar("T")


def _now() -> datetime:
    return datetime.now(UTC)


class Waker:
    """Turns webhook notifications into sweeps: the first of a burst opens a short window,
    the rest of the burst lands in it, and one sweep follows. The burst is logged once,
    as ``webhook_received`` with its totals, not once per notification."""

    def __init__(
        self, window: float, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    ) -> None:
        self.window = window
        self._sleep = sleep  # injected by tests: the window as a clock they drive
        self._wanted = asyncio.Event()
        self._burst = Counter[str]()

    def wake(self, notice: Notice) -> None:
        """A notification came: a sweep is wanted soon."""
        self._burst.update(notifications=1, firing=notice.firing, resolved=notice.resolved)
        self._wanted.set()

    async def run(self, sweep: Callable[[], Awaitable[None]], stopping: asyncio.Event) -> None:
        """Until stopping: wait for a wake-up, absorb the burst, sweep once."""
        while not stopping.is_set():
            await self._wanted.wait()
            await self._sleep(self.window)
            self._wanted.clear()
            burst, self._burst = self._burst, Counter()
            log.info("webhook_received", **{k: burst[k] for k in _BURST_FIELDS})
            if not stopping.is_set():
                await sweep()


_BURST_FIELDS = ("notifications", "firing", "resolved")


class Daemon:
    """Owns the scheduler, the in-flight jobs and the systemd conversation."""

    def __init__(self, rt: Runtime, notifier: Notifier, liveness: Liveness) -> None:
        self.rt = rt
        self.notifier = notifier
        self.liveness = liveness
        self.inflight: set[asyncio.Task[Any]] = set()
        self.stopping = asyncio.Event()
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.waker = Waker(rt.config.webhook.coalesce_seconds)
        self._sweeping = asyncio.Lock()
        #: Diagnoses run beside the schedule, never in its way (``daemon/work.py``).
        self.diagnoses = Diagnoses(rt, rt.config.diagnosis.max_concurrency, self.track)
        self.reloader = Reloader(
            lambda: self.rt.settings,
            self.reconfigure,
            rt.metrics,
            has_model=rt.diagnosis.llm is not None,
            status=notifier.status,
        )
        rt.metrics.sweep_interval.set(rt.config.schedule.sweep_interval_seconds)

    async def _guarded(self, name: str, job: Callable[[], Awaitable[str | None]]) -> None:
        if self.stopping.is_set():
            return
        task = asyncio.current_task()
        assert task is not None
        self.inflight.add(task)
        try:
            status = await job()
            if status:
                self.notifier.status(status)
        except AgentError as exc:
            log.error("job_failed", job=name, error=str(exc))
        except Exception as exc:  # a bug in one sweep must not stop the daemon; say so loudly
            log.exception("job_crashed", job=name, error=f"{type(exc).__name__}: {exc}")
            self.rt.metrics.sweeps.labels(result="error", trigger=name).inc()
        finally:
            self.inflight.discard(task)

    def track(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``work`` as an in-flight task: shutdown waits for it like for a sweep."""
        task = asyncio.ensure_future(work)
        self.inflight.add(task)
        task.add_done_callback(self.inflight.discard)
        return task

    async def sweep_job(self, trigger: str = "schedule") -> None:
        """One cycle, as scheduled or woken by a notification."""

        async def run() -> str:
            async with self._sweeping:
                rt = self.rt.pinned()  # a reload meanwhile applies from the next cycle
                report = await run_cycle(rt, _now(), trigger=trigger, diagnoses=self.diagnoses)
            self.liveness.sweep_finished()
            failed = (
                f", failed: {','.join(report.sweep.failed_sources)}"
                if report.sweep.failed_sources
                else ""
            )
            stale = "" if self.reloader.ok else "; the last reload failed: previous configuration"
            return (
                f"last sweep {report.sweep.started_at:%H:%M:%S}Z: {len(report.sweep.findings)} findings, "
                f"{len(report.dispatches)} dispatches{failed}{stale}"
            )

        await self._guarded(trigger, run)

    async def verify_job(self) -> None:
        """Verify incidents whose time has come."""

        async def run() -> None:
            await run_verifications(self.rt.pinned(), _now())

        await self._guarded("verify", run)

    async def prune_job(self) -> None:
        """Drop outcome records older than ``report.keep_days`` (the counts stay)."""

        async def run() -> None:
            keep = timedelta(days=self.rt.config.report.keep_days)
            dropped = self.rt.store.prune_outcomes(_now() - keep)
            if dropped:
                log.info("outcomes_pruned", dropped=dropped, keep_days=keep.days)

        await self._guarded("prune", run)

    def schedule(self) -> None:
        """Add the jobs; the sweep runs at once, then on its interval; the ledger is
        pruned at start and then hourly."""
        sched = self.rt.config.schedule
        common = {
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": int(sched.misfire_grace_seconds),
        }
        self.scheduler.add_job(
            self.sweep_job,
            "interval",
            seconds=sched.sweep_interval_seconds,
            next_run_time=_now(),
            id="sweep",
            **common,
        )
        tick = _verify_tick(sched)
        self.scheduler.add_job(self.verify_job, "interval", seconds=tick, id="verify", **common)
        self.scheduler.add_job(
            self.prune_job, "interval", hours=1, next_run_time=_now(), id="prune", **common
        )
        self.scheduler.start()

    def reconfigure(self, settings: Settings) -> None:
        """Apply a reloaded configuration: from the next job on, and to what the daemon
        holds itself (the schedule, the webhook's window, the diagnoses' limit, /healthz)."""
        old = self.rt.config.schedule
        self.rt.reconfigure(settings)
        config = settings.config
        self.waker.window = config.webhook.coalesce_seconds
        self.diagnoses.limit = config.diagnosis.max_concurrency
        self.liveness.max_age = _max_sweep_age(config.schedule)
        self.rt.metrics.sweep_interval.set(config.schedule.sweep_interval_seconds)
        if config.schedule != old:
            self._reschedule(old, config.schedule)

    def _reschedule(self, old: Schedule, new: Schedule) -> None:
        """A changed interval restarts the job's clock at the reload: its next run is one
        new interval away (no sweep at once, none twice); a sweep in flight finishes."""
        grace = int(new.misfire_grace_seconds)
        for job, before, after in (
            ("sweep", old.sweep_interval_seconds, new.sweep_interval_seconds),
            ("verify", _verify_tick(old), _verify_tick(new)),
        ):
            if self.scheduler.get_job(job) is None:
                continue  # not scheduled (yet): schedule() reads the new values
            self.scheduler.modify_job(job, misfire_grace_time=grace)
            if after != before:
                self.scheduler.reschedule_job(job, trigger="interval", seconds=after)
        log.info(
            "schedule_changed",
            sweep_interval_seconds=new.sweep_interval_seconds,
            verify_tick_seconds=_verify_tick(new),
        )

    async def watchdog(self, interval: float) -> None:
        """Pet systemd's watchdog from the running loop."""
        while not self.stopping.is_set():
            self.notifier.watchdog()
            try:
                await asyncio.wait_for(self.stopping.wait(), timeout=interval)
            except TimeoutError:
                continue

    async def shutdown(self) -> None:
        """Stop taking work, wait for in-flight jobs within the grace period, then cancel."""
        grace = self.rt.config.schedule.shutdown_grace_seconds
        self.notifier.stopping()
        self.scheduler.shutdown(wait=False)
        pending = set(self.inflight)
        log.info("daemon_stopping", inflight=len(pending), grace_seconds=grace)
        if pending:
            _, late = await asyncio.wait(pending, timeout=grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=5)
                log.warning("daemon_cancelled_inflight", cancelled=len(late))


def _verify_tick(sched: Schedule) -> float:
    return min(VERIFY_TICK_SECONDS, sched.verify_after_seconds)


def _max_sweep_age(sched: Schedule) -> float:
    """How old the last sweep may be while /healthz says ok."""
    return 3 * sched.sweep_interval_seconds + sched.misfire_grace_seconds


def _endpoint(settings: Settings, rt: Runtime, liveness: Liveness, daemon: Daemon) -> HttpEndpoint:
    host, port = settings.env.metrics_host_port
    token = reveal(settings.env.webhook_token)
    options = settings.config.webhook
    intake = WebhookIntake(
        wake=daemon.waker.wake,
        metrics=rt.metrics,
        token=token,
        enabled=token is not None or is_loopback(host),
        max_body_bytes=options.max_body_bytes,
        body_timeout=options.body_timeout_seconds,
    )
    api = ApprovalApi(
        rt,
        token=reveal(settings.env.approval_token),
        body_timeout=options.body_timeout_seconds,
        run=daemon.track,
    )
    env = settings.env
    access = Access(
        console_token=reveal(env.console_token),
        approval_token=reveal(env.approval_token),
        loopback=is_loopback(host),
        secure_cookie=env.tls is not None or (env.public_url or "").startswith("https://"),
    )
    console = Console(rt, access, run=daemon.track).routes()
    mcp = McpEndpoint(
        rt,
        console_token=reveal(env.console_token),
        approval_token=reveal(env.approval_token),
        body_timeout=options.body_timeout_seconds,
        run=daemon.track,
    )
    hosts = HostPolicy.of(host, env.public_url)
    app = build_app(
        rt.metrics,
        liveness,
        intake,
        api,
        console,
        hosts=hosts,
        mcp=mcp if mcp.enabled else None,
    )
    try:
        return HttpEndpoint(app, host, port, tls=env.tls)
    except OSError as exc:
        raise AgentError(
            f"METRICS_ADDR {settings.env.metrics_addr}: cannot listen: {exc.strerror}"
        ) from exc


async def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code (0 on a clean stop)."""
    loop = asyncio.get_running_loop()
    notifier = Notifier.from_env()
    sched = settings.config.schedule
    liveness = Liveness(max_age_seconds=_max_sweep_age(sched))
    # A SIGHUP while the store opens must neither kill the process (the default) nor be lost.
    early_hup = asyncio.Event()
    loop.add_signal_handler(signal.SIGHUP, early_hup.set)
    async with open_runtime(settings) as rt:
        daemon = Daemon(rt, notifier, liveness)
        daemon.reloader.started()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, daemon.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, daemon.reloader.request)
        if early_hup.is_set():
            daemon.reloader.request()
        endpoint = await _endpoint(settings, rt, liveness, daemon).start()
        daemon.schedule()
        waker = asyncio.create_task(
            daemon.waker.run(lambda: daemon.sweep_job("webhook"), daemon.stopping)
        )
        reloads = asyncio.create_task(daemon.reloader.run(daemon.stopping))
        interval = watchdog_interval()
        dog = asyncio.create_task(daemon.watchdog(interval)) if interval else None
        notifier.ready(f"sweeping every {sched.sweep_interval_seconds:g}s")
        log.info(
            "daemon_started",
            sweep_interval_seconds=sched.sweep_interval_seconds,
            dry_run=rt.dry_run,
            metrics_addr=f"{settings.env.metrics_host_port[0]}:{endpoint.port}",
            replica=rt.replica,
            model=settings.env.llm_model if rt.diagnosis.llm else "runbook only",
        )
        try:
            await daemon.stopping.wait()
            # The waker is not cancelled first: a woken sweep in flight gets the grace
            # period like any other, and the waker's loop ends on its own once it is done.
            await daemon.shutdown()
        finally:
            for task in (waker, reloads, dog):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await endpoint.stop()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
    log.info("daemon_stopped")
    return 0
