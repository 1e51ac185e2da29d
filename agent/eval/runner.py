"""Run cases: backfill their history into throwaway Prometheus servers, run the agent's
real diagnosis, guardrails and dispatcher on each, record what would have been sent.

One Prometheus serves many cases: each case's history is moved to its own window in the
past (``WINDOW`` apart, more than the investigation tools can look back), and the case is
diagnosed "as of" the end of its window, so its PromQL sees its own history only. Cases
whose alerting rules disagree (one name, two rules) get a Prometheus of their own.

Each run has its own throwaway store (cooldowns and budgets start empty), the case's
scope as the service catalogue, no Alertmanager, and a stand-in gateway (an
``httpx.MockTransport``) that records each request and answers as the case says.
Nothing goes to a real gateway.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from agent.clients.gateway import PURPOSE_HEADER, GatewayClient, build_http_client
from agent.clients.llm import LLMClient
from agent.clients.prometheus import PrometheusClient
from agent.config import AgentConfig, Service
from agent.daemon.cycle import CycleReport, carry
from agent.diagnosis.engine import DiagnosisDeps
from agent.diagnosis.models import Decision
from agent.dispatch.dispatcher import FleetView
from agent.errors import AgentError
from agent.eval import history
from agent.eval.case import Case, CaseError, CaseGateway, Loaded
from agent.eval.scoring import Outcome, Score, Tally, score
from agent.eval.slots import SlotGate, model_time, slot_warning
from agent.incidents.history import NOT_RECOVERED
from agent.incidents.lifecycle import on_finding
from agent.incidents.model import Incident, State, group_of
from agent.local import LocalPrometheus, MissingBinary, find_binary
from agent.metrics import AgentMetrics
from agent.runtime import Runtime, build_llm, build_prometheus
from agent.settings import Settings
from agent.store import open_store
from agent.store.base import ActionRecord, StateCopy, Unreadable
from agent.sweep.collector import SweepDeps, SweepReport
from agent.sweep.findings import Finding

#: How far back a case's history reaches (the investigation tools look back at most 6 h).
HISTORY = timedelta(hours=6)
#: The distance between two cases' windows in one Prometheus: history, plus Prometheus'
#: 5-minute lookback, plus a margin.
WINDOW = HISTORY + timedelta(minutes=15)
GATEWAY_URL = "http://gateway.eval.invalid"

Progress = Callable[[int, int, str], None]


class EvalError(AgentError):
    """The evaluation could not run (promtool or Prometheus missing or failing)."""


@dataclass
class StandIn:
    """The stand-in gateway: records what it is sent, answers as the case says."""

    answer: CaseGateway
    #: The catalogue's intents and their actions: the wire carries the intent only.
    intents: dict[str, str]
    sent: list[tuple[str, str]] = field(default_factory=list)
    #: The investigation's reads of the logs (not actions of the agent), and every
    #: context that went on the wire.
    reads: list[tuple[str, str]] = field(default_factory=list)
    contexts: list[str] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        target = str(body.get("target_resource", {}).get("name", ""))
        intent = str(body.get("action_request", {}).get("intent", ""))
        action = self.intents.get(intent, f"unknown intent {intent[:80]!r}")
        self.contexts.append(str(body.get("action_request", {}).get("context", "")))
        if request.headers.get(PURPOSE_HEADER) == "diagnosis":
            self.reads.append((action, target))
            return httpx.Response(200, json=self._body(action, target, self.answer.logs))
        self.sent.append((action, target))
        return httpx.Response(200, json=self._body(action, target))

    def _body(self, action: str, target: str, logs: str | None = None) -> dict[str, Any]:
        status = "COMPLETED_SUCCESS" if logs is not None else self.answer.status
        body: dict[str, Any] = {
            "request_id": f"eval-{uuid.uuid4().hex[:8]}",
            "timestamp_processed_utc": datetime.now(UTC).isoformat(),
            "overall_status": status,
            "execution_details": None,
            "error_details": None,
        }
        if status.startswith("COMPLETED"):
            ok = status == "COMPLETED_SUCCESS"
            body["execution_details"] = {
                "command": f"docker {action} {target}",
                "execution_result": {
                    "status": "SUCCESS" if ok else "FAILURE",
                    "exit_code": 0 if ok else 1,
                    "stdout": self.answer.stdout if logs is None else logs,
                    "stderr": self.answer.stderr,
                },
            }
        else:
            body["error_details"] = {"error_code": status, "error_message": self.answer.stderr}
        return body


class _Fixed:
    """A fleet view that is the same for every question: healthy, one service firing."""

    async def view(self) -> FleetView:
        return FleetView(prometheus_healthy=True, silences_known=True, firing=1)


def _compatible(group: list[Case], case: Case) -> bool:
    rules = {r.alert: r for c in group for r in c.rules}
    return all(rules.get(r.alert, r) == r for r in case.rules)


def group_cases(cases: Sequence[Case]) -> list[list[Case]]:
    """Cases that can share one Prometheus: no alert name with two different rules."""
    groups: list[list[Case]] = []
    for case in cases:
        home = next((g for g in groups if _compatible(g, case)), None)
        if home is None:
            groups.append([case])
        else:
            home.append(case)
    return groups


class Backend:
    """One throwaway Prometheus over the moved histories of some cases."""

    def __init__(self, workdir: Path, cases: list[Case], end: datetime) -> None:
        self.workdir = workdir
        self.cases = cases
        #: Where each case's incident time lands.
        self.at = {case.id: end - i * WINDOW for i, case in enumerate(cases)}
        self.server: LocalPrometheus | None = None

    @property
    def url(self) -> str:
        """The Prometheus base URL (after ``start``)."""
        assert self.server is not None
        return self.server.url

    def _openmetrics(self, cases: list[Case]) -> str:
        moved = []
        for case in cases:
            families = history.parse(case.history)
            start = (case.at - HISTORY).timestamp()
            by = (self.at[case.id] - case.at).total_seconds()
            history.shift(families, by, keep_from=start, keep_until=case.at.timestamp())
            moved.append(families)
        return history.merge(moved)

    def _backfill(self) -> None:
        """promtool writes the blocks: one process per CPU, each for a share of the cases
        (its cost is per block, and the cases' windows are apart)."""
        data = self.workdir / "data"
        shares = max(1, min(os.cpu_count() or 1, len(self.cases)))
        runs = []
        for i in range(shares):
            source = self.workdir / f"history-{i}.om"
            source.write_text(self._openmetrics(self.cases[i::shares]), encoding="utf-8")
            argv = [find_binary("promtool"), "tsdb", "create-blocks-from", "openmetrics", "-q"]
            runs.append(
                subprocess.Popen(
                    [*argv, str(source), str(data)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        for run in runs:
            output, _ = run.communicate(timeout=600)
            if run.returncode != 0:
                detail = output.strip().splitlines()
                raise EvalError(
                    f"promtool could not backfill: {detail[-1] if detail else 'failed'}"
                )

    def start(self) -> Backend:
        """Backfill with promtool, then start Prometheus over the blocks (blocking)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._backfill()
        groups = [c.rule_group() for c in self.cases if c.rules]
        days = 2 + int(len(self.cases) * WINDOW / timedelta(days=1))
        self.server = LocalPrometheus(
            self.workdir,
            targets={},
            rules=json.dumps({"groups": groups}),
            extra_args=[f"--storage.tsdb.retention.time={days}d"],
        )
        try:
            self.server.start()
        except RuntimeError as exc:
            raise EvalError(f"the throwaway Prometheus did not start: {exc}") from exc
        return self

    def stop(self) -> None:
        """Stop Prometheus."""
        if self.server is not None:
            self.server.stop()


@dataclass
class CaseResult:
    """A case and its runs."""

    loaded: Loaded
    runs: list[tuple[Outcome, Score]] = field(default_factory=list)

    def tally(self) -> Tally:
        """Sums over this case's runs."""
        out = Tally()
        for outcome, result in self.runs:
            out.add(self.loaded.case, outcome, result)
        return out


@dataclass
class EvalResult:
    """Every case's runs, in the order the cases were given, and how they were run."""

    cases: list[CaseResult]
    model: str
    wall_seconds: float = 0.0
    concurrency: int = 1
    #: Model requests served at once (None: no limit).
    model_slots: int | None = None
    warnings: list[str] = field(default_factory=list)

    def total(self) -> Tally:
        """Sums over every run."""
        out = Tally()
        for result in self.cases:
            for outcome, scored in result.runs:
                out.add(result.loaded.case, outcome, scored)
        return out


def check_scope(settings: Settings, loaded: Sequence[Loaded]) -> None:
    """Every action a case's scope allows must be in the configured catalogue."""
    catalogue = settings.config.actions
    problems = [
        f"{item.path}: scope.{service}.actions: {action!r} is not in the action catalogue"
        for item in loaded
        for service, entry in item.case.scope.items()
        for action in entry.actions
        if action not in catalogue
    ]
    if problems:
        raise CaseError(problems)


def settings_for_case(settings: Settings, case: Case, state: Path) -> Settings:
    """The settings one run works with: the case's scope as the catalogue, its own store,
    no Alertmanager, the stand-in gateway, no re-check (the finding is given), and no
    observe tier (judged as auto: eval measures what the agent would do)."""
    env = settings.env.model_copy(
        update={
            "alertmanager_url": None,
            "agent_state_url": f"sqlite:///{state}",
            "dry_run": False,
            "ai_command_gateway_url": GATEWAY_URL,
            "ai_command_gateway_token": None,
        }
    )
    config = settings.config
    config = config.model_copy(
        update={
            "services": {
                name: Service(actions=list(s.actions), related=list(s.related))
                for name, s in case.scope.items()
            },
            "policy": config.policy.model_copy(
                update={"recheck_before_dispatch": False, "default_autonomy": None}
            ),
            # eval measures what the agent would do: an observe tier is judged as auto
            "actions": {
                name: a.model_copy(update={"autonomy": "auto"}) if a.autonomy == "observe" else a
                for name, a in config.actions.items()
            },
        }
    )
    return Settings(env=env, config=config)


@dataclass
class Shared:
    """What every run of one evaluation shares: the model client, one Prometheus client
    per throwaway Prometheus, the metrics. Built once: a TLS context per client and run
    would cost more than a diagnosis."""

    settings: Settings
    metrics: AgentMetrics
    llm: LLMClient | None
    prometheus: dict[str, PrometheusClient]


@asynccontextmanager
async def shared_clients(
    settings: Settings, backends: Sequence[Backend], model_slots: int | None = None
) -> AsyncIterator[Shared]:
    """Open the shared clients (the model's requests through ``model_slots`` places, each
    timed); close them on exit."""
    metrics = AgentMetrics()
    async with AsyncExitStack() as stack:
        built = build_llm(settings, metrics, SlotGate(model_slots))
        if built is not None:
            stack.push_async_callback(built[1].aclose)
        clients: dict[str, PrometheusClient] = {}
        for backend in backends:
            client, http = build_prometheus(backend.url, settings, bearer_token=None, verify=True)
            stack.push_async_callback(http.aclose)
            clients[backend.url] = client
        yield Shared(settings, metrics, built[0] if built else None, clients)


async def run_case(
    shared: Shared, case: Case, at: datetime, prometheus: str, state: Path, iteration: int
) -> Outcome:
    """One run of one case: the finding at ``at``, carried as far as the agent would, with
    its own store and a stand-in gateway."""
    settings = settings_for_case(shared.settings, case, state)
    config = settings.config
    intents = {a.intent: name for name, a in config.actions.items() if a.intent}
    stand_in = StandIn(case.gateway, intents)
    client = shared.prometheus[prometheus]
    timeout = settings.env.ai_command_gateway_timeout
    store = open_store(settings.env.state_url)
    try:
        async with build_http_client(
            GATEWAY_URL, timeout, None, httpx.MockTransport(stand_in)
        ) as gateway_http:
            rt = Runtime(
                settings=settings,
                store=store,
                metrics=shared.metrics,
                prometheus=client,
                gateway=GatewayClient(
                    gateway_http, config.gateway, timeout=timeout, metrics=shared.metrics
                ),
                sweep_deps=SweepDeps(config=config, prometheus=client, metrics=shared.metrics),
                diagnosis=DiagnosisDeps(config=config, prometheus=client, llm=shared.llm),
                alertmanager=None,
                dry_run=False,
                clock=case_clock(at),
            )
            return await _carry(rt, case, at, stand_in, iteration)
    finally:
        store.close()


def case_clock(at: datetime) -> Callable[[], datetime]:
    """The run's clock: the case's own time, moving on as the run takes real time (claims,
    leases and the catch-up window are measured in the case's time, not today's)."""
    started = time.monotonic()
    return lambda: at + timedelta(seconds=time.monotonic() - started)


def past_state(case: Case, finding: Finding, at: datetime, config: AgentConfig) -> StateCopy:
    """The store's start for a case: its past incidents of the same problem, each with
    what was decided, sent and answered, and what verification said."""
    incidents: list[Incident] = []
    actions: list[ActionRecord] = []
    for i, past in enumerate(case.past):
        opened = at - timedelta(minutes=past.ago_minutes)
        ended = opened + timedelta(minutes=past.lasted_minutes)
        state, resolution = _ending(past.verification, past.decided)
        target = finding.target or ""
        decision = Decision(past.decided, target, past.decided_by, past.decided != "none")
        incidents.append(
            Incident(
                id=f"past{i:02d}{uuid.uuid4().hex[:6]}",
                group_key=group_of(finding),
                state=state,
                opened_at=opened,
                updated_at=ended,
                finding=replace(finding, first_seen=opened),
                decision=decision,
                action_target=target if past.sent else None,
                dispatch_outcome=past.outcome if past.sent else None,
                acted_at=opened + timedelta(minutes=1) if past.sent else None,
                cleared_at=ended,
                resolution=resolution,
            )
        )
        actions += [
            ActionRecord(
                incidents[-1].id,
                target,
                action,
                opened + timedelta(minutes=1),
                past.outcome,
                action in config.actions and config.actions[action].mutating,
            )
            for action in past.sent
        ]
    return StateCopy(incidents, actions, [])


def _ending(verification: str, decided: str) -> tuple[State, str]:
    if verification == "recovered":
        return "resolved", f"recovered after {decided}"
    if verification == "not_recovered":
        return "escalated", f"{NOT_RECOVERED} after {decided}"
    return "skipped", "ended without verification"


async def _carry(
    rt: Runtime, case: Case, at: datetime, stand_in: StandIn, iteration: int
) -> Outcome:
    finding = case.to_finding(at, rt.config.prometheus.target_labels)
    if case.past:
        rt.store.import_state(past_state(case, finding, at, rt.config))
    step = on_finding(finding, uuid.uuid4().hex[:12], at)
    rt.store.insert(step)
    cycle = CycleReport(sweep=SweepReport(sweep_id=f"eval-{case.id}", started_at=at))
    started = time.perf_counter()
    error = None
    with model_time() as spent:
        try:
            await carry(rt, step.incident, finding, _Fixed(), at, cycle)
        except AgentError as exc:
            error = str(exc)
    latency = time.perf_counter() - started
    final = rt.store.get(step.incident.id)
    state_name = final.state if isinstance(final, Incident) else "unknown"
    if isinstance(final, Unreadable):
        error = error or f"the incident could not be read back: {final.error}"
    decision: dict[str, Any] = cycle.decisions[0] if cycle.decisions else {}
    usage = decision.get("usage", {})
    if not decision and error is None:
        error = "no decision was made"
    return Outcome(
        case_id=case.id,
        iteration=iteration,
        sent=tuple(stand_in.sent),
        decided_action=str(decision.get("action", "none")),
        decided_target=decision.get("target"),
        decided_by=str(decision.get("decided_by", "")),
        final_state=state_name,
        root_cause=f"{decision.get('root_cause', '')} {decision.get('rationale', '')}".strip(),
        blocked=cycle.skips[0]["reason"] if cycle.skips else None,
        model_calls=sum(u["calls"] for u in usage.values()),
        prompt_tokens=sum(u["prompt_tokens"] for u in usage.values()),
        completion_tokens=sum(u["completion_tokens"] for u in usage.values()),
        latency_seconds=latency,
        model_seconds=spent.seconds,
        model_wait_seconds=spent.waited,
        error=error,
        awaiting=final.awaiting if isinstance(final, Incident) else None,
        awaiting_target=(decision.get("approval_target") or None),
        autonomy=str(decision.get("autonomy", "")),
        reads=tuple(stand_in.reads),
    )


async def _start_backends(workdir: Path, cases: list[Case]) -> list[Backend]:
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    backends = [
        Backend(workdir / f"prometheus-{i}", group, end)
        for i, group in enumerate(group_cases(cases))
    ]
    started: list[Backend] = []
    try:
        for backend in await asyncio.gather(
            *(asyncio.to_thread(b.start) for b in backends), return_exceptions=True
        ):
            if isinstance(backend, BaseException):
                raise backend
            started.append(backend)
    except BaseException:
        for backend in backends:
            backend.stop()
        raise
    return started


async def run_eval(
    settings: Settings,
    loaded: list[Loaded],
    *,
    iterations: int = 1,
    concurrency: int = 4,
    model_slots: int | None = None,
    progress: Progress | None = None,
) -> EvalResult:
    """Run every case ``iterations`` times, ``concurrency`` runs at a time, the model
    answering ``model_slots`` requests at once (None: no limit)."""
    check_scope(settings, loaded)
    try:
        find_binary("promtool")
        find_binary("prometheus")
    except MissingBinary as exc:
        raise EvalError(
            f"{exc}: eval backfills metric history into a throwaway Prometheus"
        ) from exc
    use_llm = settings.config.diagnosis.use_llm
    model = settings.env.llm_model if use_llm else "runbook only"
    result = EvalResult(
        cases=[CaseResult(item) for item in loaded],
        model=model,
        concurrency=concurrency,
        model_slots=model_slots,
    )
    base_url = str(settings.env.openai_base_url) if settings.env.openai_base_url else None
    warning = slot_warning(concurrency, model_slots, base_url) if use_llm else None
    result.warnings += [warning] if warning else []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="devops-agent-eval-") as tmp:
        workdir = Path(tmp)
        backends = await _start_backends(workdir, [item.case for item in loaded])
        try:
            async with shared_clients(settings, backends, model_slots) as shared:
                await _run_all(shared, result, backends, workdir, iterations, concurrency, progress)
        finally:
            for backend in backends:
                backend.stop()
    for entry in result.cases:
        entry.runs.sort(key=lambda run: run[0].iteration)
    result.wall_seconds = time.perf_counter() - started
    return result


async def _run_all(
    shared: Shared,
    result: EvalResult,
    backends: list[Backend],
    workdir: Path,
    iterations: int,
    concurrency: int,
    progress: Progress | None,
) -> None:
    home = {case.id: b for b in backends for case in b.cases}
    gate = asyncio.Semaphore(concurrency)
    total = len(result.cases) * iterations
    done = 0
    (workdir / "state").mkdir(exist_ok=True)
    use_llm = shared.settings.config.diagnosis.use_llm

    async def one(entry: CaseResult, iteration: int) -> None:
        nonlocal done
        case = entry.loaded.case
        backend = home[case.id]
        state = workdir / "state" / f"{case.id}-{iteration}.db"
        async with gate:
            outcome = await run_case(
                shared, case, backend.at[case.id], backend.url, state, iteration
            )
        entry.runs.append((outcome, score(case, outcome, model_configured=use_llm)))
        done += 1
        if progress is not None:
            progress(done, total, case.id)

    await asyncio.gather(*(one(entry, i) for i in range(iterations) for entry in result.cases))
