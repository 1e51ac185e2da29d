"""Where the safety features meet, as one stateful property: Hypothesis drives cycles of the
real daemon code with random combinations of the things that used to break each other, and
after every step checks the promises that must hold whatever happened.

What varies: dry run or not; the operator's tiers (as shipped, restart on
market-predictor set to ``observe``, or the whole fleet capped at ``observe``); what the
model does for each finding (agrees with the runbook, proposes more, holds back, fails,
answers garbage, is slow past the deadline, targets a related service); where a finding
comes from (Prometheus, or Alertmanager only); human answers (yes, yes pinned to the wrong
action or service, no, twice, late; from the CLI's path or through the MCP server's
approve tool, allowed to answer or not); time
passing (cooldowns, approval deadlines, leases); verification; cycles with the daemon's
background diagnoses or inline; replicas that restart, or crash in the middle of a
diagnosis and are taken over; and reloads of the configuration (restart on
market-predictor made auto, approve or never, or taken from its actions).

What must hold after every step:
- nothing changing is sent without both keys (the model planned it, the runbook names the
  same action and target, the finding rests on Prometheus) or a human's yes to exactly it;
- what is sent after a yes is exactly the action and service that waited when it was given;
- at most one request per incident and action;
- a dry run sends nothing;
- an observed action is never sent and nobody is asked for it; a fleet at ``observe``
  sends nothing at all and asks nobody;
- where the runbook says humans must see a finding, they are told (escalated or asked);
- nothing is sent that the configuration in force refuses (an action now ``never`` or
  removed), nothing changing is sent alone under a tier that is not ``auto``, and no ask
  the configuration refuses outlives the next cycle.

Prometheus, Alertmanager, the model and the gateway are faked at the HTTP boundary with
pytest-httpx; the clock is injected; the store is a real SQLite file.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from pytest_httpx import HTTPXMock

from agent.approvals import Pin, answer_approval, make_answer
from agent.config import AgentConfig, autonomy_of
from agent.daemon.cycle import run_cycle
from agent.daemon.verify import run_verifications
from agent.daemon.work import Diagnoses
from agent.incidents.lifecycle import CONFIG_CHANGED, withdrawal
from agent.incidents.model import Incident
from agent.mcp.desk import STDIO_READ_ONLY, DaemonDesk
from agent.mcp.tools import call
from agent.runtime import Runtime, open_runtime, replica_id
from agent.settings import Settings, load_settings
from tests.conftest import BASE_ENV
from tests.integration.daemon_support import write_config
from tests.llm_fakes import completion, phase_of

PROM, AM, GATEWAY, LLM = (
    "http://prom.test",
    "http://am.test",
    "http://gw.test",
    "http://llm.test/v1",
)
T0 = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
MP, CA = "market-predictor", "coding-ai-agent"
#: The findings in play: alert name, service, and what the shipped runbook says.
FINDINGS = {
    "leak": ("ServiceMemoryLeak", MP, "restart"),
    "disk": ("DiskAlmostFull", CA, "escalate"),
    "latency": ("LatencyHigh", CA, "collect_logs"),
}
BEHAVIOURS = ("agrees", "more", "holds_back", "fails", "garbage", "slow", "related")
#: Drawn more often: a model that agrees with the runbook (the path where the agent acts alone).
DRAWN = ("agrees", "agrees", *BEHAVIOURS)
INTENTS = {
    "restart the service": "restart",
    "start the service": "start",
    "stop the service": "stop",
    "show recent logs": "collect_logs",
    "show memory and CPU usage": "inspect_resources",
    "check if service is healthy": "health_check",
}
CHANGING = frozenset({"restart", "start", "stop"})
CONTEXT_ID = re.compile(r"devops-agent incident ([0-9a-f]{12}):")


@dataclass(frozen=True)
class Sent:
    """One request the gateway received, and whether Prometheus had reported the finding
    of the service it names by then (in the finding's current firing)."""

    incident_id: str
    action: str
    target: str
    purpose: str
    prometheus_saw: frozenset[str]
    #: The action's tier on the service when it was sent, in the configuration then in
    #: force; "refused" when the service or the action was not in it.
    tier: str = "auto"


@dataclass
class World:
    """What the fake peers say and saw."""

    firing: dict[str, str] = field(default_factory=dict)  # finding key -> source
    behaviour: dict[str, str] = field(default_factory=dict)
    sent: list[Sent] = field(default_factory=list)
    planned: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    posts: list[dict[str, Any]] = field(default_factory=list)
    #: (incident, action, target) a human said yes to while it waited.
    approved: set[tuple[str, str, str]] = field(default_factory=set)
    #: The findings Prometheus has reported since they last began to fire.
    prometheus_saw: set[str] = field(default_factory=set)
    #: Peers that answer 503 to everything for now.
    down: set[str] = field(default_factory=set)
    #: The configuration the agent runs on now (reloads change it).
    config: AgentConfig | None = None

    def tier(self, action: str, target: str) -> str:
        """The action's tier on the service now; "refused" when it is not allowed at all."""
        config = self.config
        assert config is not None
        if target not in config.services or action not in config.services[target].actions:
            return "refused"
        return autonomy_of(config, target, action)

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    # -- Prometheus ---------------------------------------------------------------------
    def prometheus(self, request: httpx.Request) -> httpx.Response:
        if "prometheus" in self.down:
            return httpx.Response(503, text="unavailable")
        if request.url.path == "/-/healthy":
            return httpx.Response(200, text="ok")
        if request.url.path == "/api/v1/alerts":
            alerts = [
                {
                    "labels": {"alertname": FINDINGS[k][0], "service": FINDINGS[k][1]},
                    "annotations": {"summary": "it fires"},
                    "state": "firing",
                    "activeAt": T0.isoformat(),
                    "value": "1e+00",
                }
                for k, source in sorted(self.firing.items())
                if source == "prometheus"
            ]
            self.prometheus_saw |= {
                k for k, source in self.firing.items() if source == "prometheus"
            }
            return httpx.Response(200, json={"status": "success", "data": {"alerts": alerts}})
        data = {"groups": []} if request.url.path.endswith("rules") else {"result": []}
        return httpx.Response(200, json={"status": "success", "data": data})

    # -- Alertmanager -------------------------------------------------------------------
    def alertmanager(self, request: httpx.Request) -> httpx.Response:
        if "alertmanager" in self.down:
            return httpx.Response(503, text="unavailable")
        if request.method == "POST":
            self.posts.extend(json.loads(request.read()))
            return httpx.Response(200, json={})
        if request.url.params.get("silenced") == "true":
            return httpx.Response(200, json=[])
        alerts = [
            {
                "labels": {
                    "alertname": FINDINGS[k][0],
                    "service": FINDINGS[k][1],
                    "prometheus": "second",
                },
                "annotations": {},
                "startsAt": T0.isoformat(),
                "status": {"state": "active", "silencedBy": [], "inhibitedBy": []},
            }
            for k, source in sorted(self.firing.items())
            if source == "alertmanager"
        ]
        return httpx.Response(200, json=alerts)

    # -- the model ----------------------------------------------------------------------
    async def model(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.read())
        text = json.dumps(body["messages"])
        key = next(k for k, (name, _, _) in FINDINGS.items() if name in text)
        behaviour = self.behaviour.get(key, "agrees")
        if behaviour == "fails":
            return httpx.Response(500, json={"error": {"message": "the model is down"}})
        if behaviour == "garbage":
            return httpx.Response(200, json=completion("I am not JSON {"))
        if behaviour == "slow":
            await asyncio.Event().wait()  # past the diagnosis deadline
        phase = phase_of(body)
        if phase == "triage":
            actionable = behaviour != "holds_back"
            answer = {"actionable": actionable, "urgency": "high", "reason": "looked"}
            return httpx.Response(200, json=completion(json.dumps(answer)))
        if phase == "investigation":
            return httpx.Response(200, json=completion("I looked at the series."))
        action, target = self._plan(key, behaviour)
        self.planned.setdefault(key, set()).add((action, target))
        plan = {
            "action": action,
            "target": target,
            "confidence": 0.9,
            "root_cause": "x",
            "rationale": "y",
            "evidence": ["z"],
            "verification": "vector(1)",
        }
        return httpx.Response(200, json=completion(json.dumps(plan)))

    def end(self, key: str) -> None:
        """The finding stops firing."""
        self.firing.pop(key, None)
        self.prometheus_saw.discard(key)

    @staticmethod
    def _plan(key: str, behaviour: str) -> tuple[str, str]:
        _, service, runbook = FINDINGS[key]
        if behaviour == "more":
            return ("stop" if service == MP else "start"), service
        if behaviour == "holds_back":
            return "none", service
        if behaviour == "related":
            return "restart", (CA if service == MP else MP)
        return runbook, service

    # -- the gateway --------------------------------------------------------------------
    def gateway(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.read())
        found = CONTEXT_ID.search(body["action_request"]["context"])
        assert found, body
        action = INTENTS[body["action_request"]["intent"]]
        target = body["target_resource"]["name"]
        purpose = request.headers.get("X-Devops-Agent-Purpose", "remediation")
        saw = frozenset(self.prometheus_saw)
        self.sent.append(
            Sent(found.group(1), action, target, purpose, saw, self.tier(action, target))
        )
        if action in ("restart", "start") and target == MP:
            self.end("leak")  # the restart heals the leak
        result = {"status": "SUCCESS", "exit_code": 0, "stdout": "ok", "stderr": ""}
        return httpx.Response(
            200,
            json={
                "request_id": "r",
                "overall_status": "COMPLETED_SUCCESS",
                "execution_details": {
                    "command": f"docker {action} {target}",
                    "execution_result": result,
                },
                "error_details": None,
            },
        )


WORLD = World()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps ahead whenever nothing is ready to run and no work
    is out in a thread: a timer (the diagnosis deadline, a lease renewal) fires at once
    instead of after its seconds. Every peer here answers in-process, so "nothing ready"
    then only means "waiting for a timer": a model that never answers meets its deadline
    without the test waiting, and no example depends on how fast the machine is."""

    def __init__(self) -> None:
        super().__init__()
        self._ahead = 0.0
        self._in_threads = 0  # e.g. the model client's one look at the platform

    def time(self) -> float:
        return super().time() + self._ahead

    def run_in_executor(self, executor: Any, func: Any, *args: Any) -> asyncio.Future[Any]:
        future = super().run_in_executor(executor, func, *args)
        self._in_threads += 1
        future.add_done_callback(self._thread_done)
        return future

    def _thread_done(self, _: object) -> None:
        self._in_threads -= 1

    def _run_once(self) -> None:
        scheduled = self._scheduled  # type: ignore[attr-defined]
        if not self._ready and scheduled and not self._in_threads:  # type: ignore[attr-defined]
            self._ahead += max(0.0, scheduled[0].when() - self.time())
        super()._run_once()  # type: ignore[misc]


#: What the examples did, over the whole run: a property that never reached a path proves
#: nothing about it, so the test also asserts that each path was taken.
SEEN: Counter[str] = Counter()
#: What a reload may do to restart on market-predictor.
RELOADS = ("auto", "approve", "never", "removed", "shipped")


def _reloaded(base: AgentConfig, tier: str) -> AgentConfig:
    """``base`` with restart on market-predictor set to ``tier``, or taken from its actions
    ("removed"), or left as it is ("shipped")."""
    entry = base.services[MP]
    if tier == "shipped":
        return base
    if tier == "removed":
        changed = entry.model_copy(update={"actions": [a for a in entry.actions if a != "restart"]})
    else:
        changed = entry.model_copy(update={"autonomy": {**entry.autonomy, "restart": tier}})
    return base.model_copy(update={"services": {**base.services, MP: changed}})


#: The operator's tiers drawn per example: as shipped, restart on market-predictor set to
#: observe, or the whole fleet capped at observe (policy.default_autonomy).
OBSERVE = ("none", "restart", "fleet")
APPROVAL_ALERT = "DevopsAgentApprovalRequired"


def _settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, observe: str = "none") -> Settings:
    restart = {"autonomy": {"restart": "observe"}} if observe == "restart" else {}
    fleet = {"default_autonomy": "observe"} if observe == "fleet" else {}
    config = write_config(
        tmp_path / f"agent-{observe}.toml",
        schedule={"verify_after_seconds": 60, "lease_seconds": 30, "catch_up_window_seconds": 3600},
        sweep={"sources": ["prometheus", "alertmanager"]},
        policy={
            "storm_min_services": 1000,
            "approval_ttl_seconds": 300,
            "action_cooldown_seconds": 120,
            "max_actions_per_target_per_hour": 100,
            "max_actions_per_hour": 100,
            **fleet,
        },
        diagnosis={"max_retries": 0, "max_steps": 1, "deadline_seconds": 30},
        services={
            MP: {
                "actions": ["restart", "start", "stop", "collect_logs", "inspect_resources"],
                "related": [CA],
                **restart,
            },
            CA: {"actions": ["restart", "start", "collect_logs", "inspect_resources"]},
        },
    )
    env = {
        **BASE_ENV,
        "PROMETHEUS_URL": PROM,
        "ALERTMANAGER_URL": AM,
        "AI_COMMAND_GATEWAY_URL": GATEWAY,
        "OPENAI_BASE_URL": LLM,
        "AGENT_CONFIG": str(config),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings(env_file=None)


class Seams(RuleBasedStateMachine):
    """One agent (and its successors after restarts) on one store, against the fakes."""

    base: Settings
    #: The settings of each tier variant (OBSERVE).
    variants: dict[str, Settings]
    workdir: Path

    def __init__(self) -> None:
        super().__init__()
        WORLD.reset()
        self.loop = VirtualTimeLoop()
        self.now = T0
        self.stack: AsyncExitStack | None = None
        self.rt: Runtime | None = None
        self.dry_run = False
        self.observe = "none"
        self.restart_reloaded = False
        self.store_url = ""
        self.examples = 0
        #: A cycle ran since the last reload: the configuration in force was applied.
        self.cycled = False

    # -- plumbing -----------------------------------------------------------------------
    def run(self, work: Any) -> Any:
        return self.loop.run_until_complete(work)

    def clock(self) -> datetime:
        return self.now

    def _open(self) -> None:
        env = self.base.env.model_copy(update={"agent_state_url": self.store_url})
        settings_ = Settings(env=env, config=self.variants[self.observe].config)

        async def opened() -> tuple[AsyncExitStack, Runtime]:
            stack = AsyncExitStack()
            rt = await stack.enter_async_context(open_runtime(settings_, dry_run=self.dry_run))
            rt.clock = self.clock
            return stack, rt

        self.stack, self.rt = self.run(opened())

    def _close(self) -> None:
        if self.stack is not None:
            self.run(self.stack.aclose())
        self.stack, self.rt = None, None

    def _successor(self) -> None:
        """The agent after a restart: a new replica with nothing in memory (no work in
        hand), on the same store (which keeps the checks' failing series) and peers."""
        rt = self.agent
        self.rt = replace(rt, replica=replica_id(), working=set(), poisoned=set())

    def teardown(self) -> None:
        self._tally()
        self._close()

        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(drain())
        self.run(self.loop.shutdown_asyncgens())
        self.loop.close()

    def _tally(self) -> None:
        for sent in WORLD.sent:
            approved = (sent.incident_id, sent.action, sent.target) in WORLD.approved
            kind = "changing" if sent.action in CHANGING else "read_only"
            SEEN[f"sent_{kind}_{'approved' if approved else 'alone'}"] += 1
        if self.rt is None:
            return
        for incident in self.agent.store.recent(100):
            if isinstance(incident, Incident):
                SEEN[f"state_{incident.state}"] += 1
                if (incident.resolution or "").startswith(CONFIG_CHANGED):
                    SEEN["withdrawn_by_a_reload"] += 1
                SEEN[f"source_{incident.finding.source}"] += 1
                if incident.decision and incident.decision.model_failure:
                    SEEN["model_failed"] += 1
                if incident.observing and incident.decision:
                    SEEN[f"observed_{incident.decision.observed_would}"] += 1
                    if incident.state == "skipped":
                        SEEN["watch_ended"] += 1

    @property
    def agent(self) -> Runtime:
        assert self.rt is not None
        return self.rt

    # -- rules --------------------------------------------------------------------------
    @initialize(dry_run=st.booleans(), n=st.integers(0, 10**9), observe=st.sampled_from(OBSERVE))
    def start(self, dry_run: bool, n: int, observe: str = "none") -> None:
        self.dry_run = dry_run
        self.observe = observe
        self.store_url = f"sqlite:///{self.workdir / f'seams-{n}-{id(self)}.db'}"
        WORLD.config = self.base.config
        self._open()

    @rule(
        key=st.sampled_from(sorted(FINDINGS)),
        source=st.sampled_from(["prometheus", "alertmanager"]),
        behaviour=st.sampled_from(DRAWN),
        background=st.booleans(),
    )
    def fire(self, key: str, source: str, behaviour: str, background: bool) -> None:
        """A finding begins to fire (the model will answer it so), and the daemon sweeps."""
        WORLD.firing.setdefault(key, source)
        WORLD.behaviour[key] = behaviour
        self.cycle(background)

    @rule(key=st.sampled_from(sorted(FINDINGS)))
    def clear(self, key: str) -> None:
        WORLD.end(key)

    @rule(peer=st.sampled_from(["prometheus", "alertmanager"]), down=st.booleans())
    def peer(self, peer: str, down: bool) -> None:
        (WORLD.down.add if down else WORLD.down.discard)(peer)

    @rule(key=st.sampled_from(sorted(FINDINGS)), behaviour=st.sampled_from(BEHAVIOURS))
    def behave(self, key: str, behaviour: str) -> None:
        WORLD.behaviour[key] = behaviour

    @rule(background=st.booleans())
    def cycle(self, background: bool) -> None:
        rt = self.agent
        started: list[asyncio.Future[None]] = []

        def track(work: Any) -> asyncio.Future[None]:
            started.append(asyncio.ensure_future(work))
            return started[-1]

        async def one() -> None:
            diagnoses = Diagnoses(rt, 4, track) if background else None
            await run_cycle(rt, self.now, diagnoses=diagnoses)
            await asyncio.gather(*started)

        self.run(one())
        self.cycled = True

    @rule(tier=st.sampled_from(sorted(RELOADS)))
    def reload(self, tier: str) -> None:
        """The operator reloads agent.toml: restart on market-predictor is now ``tier``
        (auto, approve, never), removed from its actions, or as shipped again."""
        # the example's own tiers (its observe draw) are what the operator edits
        config = _reloaded(self.variants[self.observe].config, tier)
        if tier != "shipped":
            self.restart_reloaded = True  # restart on market-predictor has a tier of its own now
        self.agent.reconfigure(Settings(env=self.agent.settings.env, config=config))
        WORLD.config = config
        self.cycled = False

    @rule()
    def crash_while_diagnosing(self) -> None:
        """A cycle starts background diagnoses and the replica dies before they end."""
        rt = self.agent
        started: list[asyncio.Future[None]] = []

        def track(work: Any) -> asyncio.Future[None]:
            started.append(asyncio.ensure_future(work))
            return started[-1]

        async def one() -> None:
            await run_cycle(rt, self.now, diagnoses=Diagnoses(rt, 4, track))
            for task in started:
                task.cancel()
            await asyncio.gather(*started, return_exceptions=True)

        self.run(one())
        self._successor()

    @rule()
    def restart(self) -> None:
        self._successor()

    @rule(seconds=st.sampled_from([5, 31, 61, 121, 301]), background=st.booleans())
    def advance(self, seconds: int, background: bool) -> None:
        """Time passes, and the daemon sweeps (and verifies) at the end of it."""
        self.now += timedelta(seconds=seconds)
        self.run(run_verifications(self.agent, self.now))
        self.cycle(background)

    @rule()
    def verify(self) -> None:
        self.now += timedelta(seconds=61)
        self.run(run_verifications(self.agent, self.now))

    @precondition(lambda self: self.rt is not None)
    @rule(
        which=st.integers(0, 3),
        kind=st.sampled_from(
            [
                "yes",
                "yes_unpinned",
                "wrong_target",
                "wrong_action",
                "no",
                "twice",
                "mcp_yes",
                "mcp_wrong_target",
                "mcp_closed",
            ]
        ),
    )
    def answer(self, which: int, kind: str) -> None:
        # By name, not by id: ids are random, and the run must not depend on them.
        asking = sorted((i for i in self.agent.store.current() if i.asks), key=lambda i: i.name)
        if not asking:
            return
        incident = asking[which % len(asking)]
        action, target = incident.awaiting or "", incident.awaiting_target or ""
        if kind.startswith("mcp"):
            self._answer_over_mcp(incident, kind, action, target)
            self.cycle(background=False)
            return
        pins = {
            "yes": Pin(action, target),
            "twice": Pin(action, target),
            "yes_unpinned": Pin(),
            "wrong_target": Pin(action, "devops-ai-agent"),
            "wrong_action": Pin("stop" if action != "stop" else "start", target),
            "no": Pin(),
        }
        before = len(WORLD.sent)
        for _ in range(2 if kind == "twice" else 1):
            answer = make_answer(approve=kind != "no", by="alice", reason="r", at=self.now)
            reply = self.run(answer_approval(self.agent, incident.id, answer, pin=pins[kind]))
            if kind.startswith("wrong"):
                assert reply.status == 409, reply
                assert "waiting for approval of" in reply.reason
                assert len(WORLD.sent) == before, "a wrongly pinned answer sent something"
            elif reply.accepted and kind != "no":
                WORLD.approved.add((incident.id, action, target))
            SEEN[f"answer_{reply.status}"] += 1
        self.cycle(background=False)

    def _answer_over_mcp(self, incident: Incident, kind: str, action: str, target: str) -> None:
        """An assistant's approve tool call, through the daemon's desk: pinned to what it
        was shown (or to another service), allowed to answer or not."""
        closed = kind == "mcp_closed"
        desk = DaemonDesk(self.agent, asyncio.ensure_future, STDIO_READ_ONLY if closed else None)
        pinned = "devops-ai-agent" if kind == "mcp_wrong_target" else target
        given = {"id": incident.id, "action": action, "target": pinned, "by": "alice"}
        before = len(WORLD.sent)
        result = self.run(call(desk, "approve", given))
        if kind == "mcp_yes":
            if not result.error:
                WORLD.approved.add((incident.id, action, target))
            SEEN[f"mcp_answer_{'refused' if result.error else 'accepted'}"] += 1
            return
        assert result.error, result
        assert len(WORLD.sent) == before, "a refused tool call sent something"
        if closed:
            assert result.text == STDIO_READ_ONLY
            after = self.agent.store.get(incident.id)
            assert isinstance(after, Incident) and after.version == incident.version
        else:
            assert f"waiting for approval of {action} on {target}" in result.text
        SEEN[f"mcp_answer_{kind}"] += 1

    # -- invariants ---------------------------------------------------------------------
    @invariant()
    def nothing_changing_without_two_keys_or_a_yes(self) -> None:
        for sent in WORLD.sent:
            if sent.action not in CHANGING:
                continue
            if (sent.incident_id, sent.action, sent.target) in WORLD.approved:
                continue
            incident = self.agent.store.get(sent.incident_id)
            assert isinstance(incident, Incident), sent
            key = next(k for k, f in FINDINGS.items() if f[0] == incident.name)
            _, service, runbook = FINDINGS[key]
            assert (sent.action, sent.target) == (runbook, service), (sent, "not the runbook's")
            assert (sent.action, sent.target) in WORLD.planned.get(key, set()), (
                sent,
                "the model never planned it",
            )
            assert key in sent.prometheus_saw, (
                sent,
                "acted alone on a finding only Alertmanager reported",
            )

    @invariant()
    def at_most_one_request_per_incident_and_action(self) -> None:
        counts = Counter(
            (s.incident_id, s.action) for s in WORLD.sent if s.purpose == "remediation"
        )
        assert all(n == 1 for n in counts.values()), counts

    @invariant()
    def a_dry_run_sends_nothing(self) -> None:
        if self.dry_run:
            assert WORLD.sent == []
            assert WORLD.posts == [], "a dry run paged Alertmanager"

    @invariant()
    def nothing_observed_is_sent_or_asked(self) -> None:
        asks = [p["labels"] for p in WORLD.posts if p["labels"].get("alertname") == APPROVAL_ALERT]
        if self.observe == "fleet":
            # after a reload gave restart on market-predictor a tier of its own, that one
            # (action, service) is no longer capped: everything else still is
            freed = {("restart", MP)} if self.restart_reloaded else set()
            sent = [s for s in WORLD.sent if (s.action, s.target) not in freed]
            assert sent == [], "a fleet at observe sent something"
            asked = [a for a in asks if (a["action"], a["service"]) not in freed]
            assert asked == [], "a fleet at observe asked a human"
        if self.observe == "restart" and not self.restart_reloaded:
            restarts = [s for s in WORLD.sent if (s.action, s.target) == ("restart", MP)]
            assert restarts == [], "an observed restart was sent"
            assert not [a for a in asks if (a["action"], a["service"]) == ("restart", MP)], (
                "a human was asked for an observed restart"
            )
        if self.rt is None:
            return
        for incident in self.agent.store.recent(100):
            if not isinstance(incident, Incident) or not incident.observing:
                continue
            d = incident.decision
            assert d is not None
            held = (incident.id, d.observed_action)
            assert held not in {(s.incident_id, s.action) for s in WORLD.sent}, held
            assert held not in {(a.get("incident_id"), a.get("action")) for a in asks}, held
            # escalated: the runbook said humans must see it, which observing never silences
            assert incident.state in ("decided", "acting", "watching", "skipped", "escalated"), (
                incident.state
            )

    @invariant()
    def nothing_the_configuration_refuses_is_sent(self) -> None:
        for sent in WORLD.sent:
            if sent.purpose != "remediation":
                continue
            assert sent.tier not in ("refused", "never"), (sent, "refused by the configuration")
            yes = (sent.incident_id, sent.action, sent.target) in WORLD.approved
            if sent.action in CHANGING and not yes:
                assert sent.tier == "auto", (sent, "sent alone under a tier that needs a human")

    @invariant()
    def no_refused_ask_outlives_a_cycle(self) -> None:
        if self.rt is None or not self.cycled:
            return
        for incident in self.agent.store.current():
            if incident.asks or incident.state == "decided":
                refused = withdrawal(incident, self.agent.config)
                assert refused is None, (incident.id, incident.state, refused)

    @invariant()
    def humans_are_told_where_the_runbook_says_so(self) -> None:
        if self.dry_run or self.rt is None:
            return
        for incident in self.agent.store.recent(100):
            if not isinstance(incident, Incident) or incident.name != FINDINGS["disk"][0]:
                continue
            events = self.agent.store.events(incident.id)
            if not any(e.kind == "decision" for e in events):
                continue
            moved_to = {e.data.get("to") for e in events if e.kind == "transition"}
            cleared = "cleared" in (incident.resolution or "")
            assert moved_to & {"escalated", "awaiting_approval"} or cleared, (
                incident.state,
                incident.resolution,
                moved_to,
            )


def _checked(machine: Seams) -> None:
    for check in (
        machine.nothing_changing_without_two_keys_or_a_yes,
        machine.at_most_one_request_per_incident_and_action,
        machine.a_dry_run_sends_nothing,
        machine.nothing_observed_is_sent_or_asked,
        machine.humans_are_told_where_the_runbook_says_so,
        machine.nothing_the_configuration_refuses_is_sent,
        machine.no_refused_ask_outlives_a_cycle,
    ):
        check()


def _tour(
    n: int, dry_run: bool, *steps: tuple[str, tuple[Any, ...]], observe: str = "none"
) -> None:
    """One fixed walk through the machine, the invariants checked after every step: the
    paths the random walks must cover are taken at least once, whatever they draw."""
    machine = Seams()
    try:
        machine.start(dry_run=dry_run, n=n, observe=observe)
        for name, args in steps:
            getattr(machine, name)(*args)
            _checked(machine)
    finally:
        machine.teardown()


TOURS: list[tuple[bool, tuple[tuple[str, tuple[Any, ...]], ...]]] = [
    # a reload makes the waiting restart never: the ask is withdrawn at the next cycle;
    # restart made approve: the leak waits for a human even with both keys; made never
    # again, a yes given before the next cycle is refused and the ask withdrawn
    (
        False,
        (
            ("fire", ("leak", "prometheus", "fails", False)),
            ("reload", ("never",)),
            ("cycle", (False,)),
            ("reload", ("approve",)),
            ("clear", ("leak",)),
            ("advance", (5, False)),
            ("fire", ("leak", "prometheus", "agrees", True)),
            ("reload", ("never",)),
            ("answer", (0, "yes")),
            ("reload", ("removed",)),
            ("fire", ("latency", "prometheus", "agrees", False)),
            ("advance", (121, True)),
        ),
    ),
    # both keys turn: sent alone, verified; then the leak is back at once and the model
    # fails: the runbook's restart waits, the yes meets the cooldown (202), and is sent later
    (
        False,
        (
            ("fire", ("leak", "prometheus", "agrees", False)),
            ("verify", ()),
            ("fire", ("leak", "prometheus", "fails", True)),
            ("answer", (0, "wrong_target")),
            ("answer", (0, "mcp_closed")),
            ("answer", (0, "mcp_wrong_target")),
            ("answer", (0, "yes")),
            ("advance", (121, False)),
            ("verify", ()),
        ),
    ),
    # the runbook escalates a full disk, the model says none: humans are told; an
    # Alertmanager-only leak waits for a human even with both keys; the model's restart of
    # a related service is approved exactly as shown
    (
        False,
        (
            ("fire", ("disk", "prometheus", "holds_back", False)),
            ("fire", ("latency", "alertmanager", "holds_back", False)),
            ("fire", ("leak", "alertmanager", "related", True)),
            ("answer", (0, "wrong_action")),
            ("answer", (0, "twice")),
            ("peer", ("alertmanager", True)),
            ("advance", (31, True)),
            ("peer", ("alertmanager", False)),
            ("verify", ()),
        ),
    ),
    # an Alertmanager-only leak the model and the runbook agree on still waits for a human
    (
        False,
        (
            ("fire", ("leak", "alertmanager", "agrees", False)),
            ("advance", (5, True)),
            ("answer", (0, "mcp_yes")),
        ),
    ),
    # a dry run sends nothing; a replica dies in a slow diagnosis and is taken over
    (
        True,
        (
            ("fire", ("leak", "prometheus", "agrees", False)),
            ("fire", ("latency", "prometheus", "holds_back", False)),
        ),
    ),
    (
        False,
        (
            ("behave", ("leak", "slow")),
            ("fire", ("leak", "prometheus", "slow", True)),
            ("crash_while_diagnosing", ()),
            ("behave", ("leak", "agrees")),
            ("advance", (31, False)),
            ("advance", (5, False)),
        ),
    ),
]


#: Walks with an observe tier: an observed restart that would have run alone persists past
#: the verify time; one that would have asked clears while watched; a fleet at observe
#: looks at nothing and asks nobody.
OBSERVED_TOURS: list[tuple[str, tuple[tuple[str, tuple[Any, ...]], ...]]] = [
    (
        "restart",
        (
            ("fire", ("leak", "prometheus", "agrees", False)),
            ("advance", (61, False)),
            ("clear", ("leak",)),
            ("cycle", (False,)),
            ("fire", ("leak", "prometheus", "fails", True)),
            ("clear", ("leak",)),
            ("advance", (5, True)),
        ),
    ),
    (
        "fleet",
        (
            ("fire", ("latency", "prometheus", "agrees", False)),
            ("fire", ("leak", "alertmanager", "holds_back", True)),
            ("advance", (61, True)),
        ),
    ),
]


def test_where_the_safety_features_meet(
    httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Random combinations of dry run, observe tiers, model behaviour, source, answers, time
    and replica restarts never send a change without two keys or a matching yes, never
    send twice, never send in a dry run, never send or ask what is observed, and never
    leave humans untold where the runbook says so."""
    for url, callback in (
        (PROM, WORLD.prometheus),
        (AM, WORLD.alertmanager),
        (LLM, WORLD.model),
        (GATEWAY, WORLD.gateway),
    ):
        httpx_mock.add_callback(
            callback, url=re.compile(re.escape(url) + ".*"), is_reusable=True, is_optional=True
        )
    Seams.variants = {o: _settings(tmp_path, monkeypatch, o) for o in OBSERVE}
    Seams.base = Seams.variants["none"]
    Seams.workdir = tmp_path
    SEEN.clear()
    for n, (dry_run, steps) in enumerate(TOURS):
        _tour(n, dry_run, *steps)
    for n, (observe, steps) in enumerate(OBSERVED_TOURS, start=len(TOURS)):
        _tour(n, False, *steps, observe=observe)
    run_state_machine_as_test(
        Seams,
        settings=settings(
            max_examples=120,
            stateful_step_count=40,
            derandomize=True,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
    reached = {
        "sent_changing_alone",
        "sent_changing_approved",
        "sent_read_only_alone",
        "answer_200",
        "answer_202",
        "answer_409",
        "state_escalated",
        "state_awaiting_approval",
        "source_alertmanager",
        "model_failed",
        "mcp_answer_accepted",
        "mcp_answer_mcp_closed",
        "mcp_answer_mcp_wrong_target",
        "observed_send",
        "observed_ask",
        "watch_ended",
        "withdrawn_by_a_reload",
    }
    assert reached <= set(SEEN), f"paths never taken: {sorted(reached - set(SEEN))}; {SEEN}"
