"""The soak: three `devops-agent run` replicas on one PostgreSQL schema for SOAK_MINUTES
against a real Prometheus and Alertmanager, a dozen services leaking, crashing and
recovering at random, while

- a replica (the second or the third, in turn) is killed with SIGKILL every few minutes
  and started again; the first lives the whole run, for the memory figure;
- Prometheus is restarted once (at a third of the run), and so is PostgreSQL (at
  three fifths): the machine's own cluster, `pg_ctlcluster --skip-systemctl-redirect
  VERSION main restart`, once and quickly, since other test runs may use it;
- the gateway fails a share of its requests, and the model is now and then too slow;
- a human on call answers most asks for approval through the API (some are left to
  expire) and fixes by hand, a few minutes later, what the agent escalated.

Near the end no new fault begins; then every fault is healed and the fleet settles. It
prints the incidents opened and ended, duplicates, incidents stuck past their state's
bound, resident memory growth per replica, open file descriptors at start and end, p95
from firing to action, and which of the agent's own alerts fired; it exits 1 when a goal
is missed (duplicates 0, stuck 0, memory growth under 5 MB per hour).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import AgentError
from agent.incidents.model import Incident
from agent.local import LocalAlertmanager, MetricsTarget, free_port
from agent.store import open_store
from agent.store.base import IncidentStore
from tests.conftest import POSTGRES, REPO, postgres_schema
from tests.integration.daemon_support import DaemonProcess, agent_env, write_config
from tests.llm_fakes import FakeModel
from tests.soak.figures import (
    TERMINAL,
    Opened,
    attribute,
    duplicate_actions,
    growth_mb_per_hour,
    median,
    p95,
    stuck,
)
from tests.soak.world import RULES, SERVICES, FailingGateway, OnCall, Services, SoakPrometheus

GOAL_MB_PER_HOUR = 5.0
#: The approval API's token: the on-call human answers through it.
APPROVAL_TOKEN = "soak-approval-token-8c1f0e2d"
APPLICATION = "devops-agent-soak"
#: Resident memory before this is the process filling its caches, not a leak.
WARMUP = 180.0
SWEEP, VERIFY, LEASE, TTL, DEADLINE, GATEWAY_DEADLINE = 5, 20, 15, 90, 15, 30
#: How long an incident may stay in each non-final state before it counts as stuck: its
#: own timer (approval, verification, diagnosis deadline, gateway deadline, cooldown)
#: plus a lease that may have to expire (a killed replica) and a few sweeps.
SLACK = LEASE + 4 * SWEEP
BOUNDS = {
    "open": 60.0 + SLACK,
    "diagnosing": DEADLINE + SLACK,
    "decided": 120.0 + SLACK,
    "awaiting_approval": TTL + SLACK,
    "approved": TTL + SLACK,
    "acting": GATEWAY_DEADLINE + SLACK,
    "verifying": VERIFY + SLACK,
}
#: Alerts fire 5 s after they begin (the rules' `for`).
FOR_SECONDS = 5.0


def soak_config(path: Path) -> Path:
    """The agents' agent.toml: the twelve services, sweeps every 5 s, Alertmanager as a
    second source, short timers so that every path turns over many times in a run."""
    return write_config(
        path,
        schedule={
            "sweep_interval_seconds": SWEEP,
            "verify_after_seconds": VERIFY,
            "misfire_grace_seconds": 5,
            "shutdown_grace_seconds": 5,
            "lease_seconds": LEASE,
        },
        sweep={"sources": ["prometheus", "alertmanager"]},
        policy={
            "action_cooldown_seconds": 30,
            "max_actions_per_target_per_hour": 100,
            "max_actions_per_hour": 1000,
            "storm_min_services": 100,
            "approval_ttl_seconds": TTL,
            "recurrence_seconds": 60,
        },
        diagnosis={
            "max_concurrency": 4,
            "max_steps": 2,
            "deadline_seconds": DEADLINE,
            "request_timeout_seconds": 10,
            "max_retries": 0,
        },
        gateway={"deadline_seconds": GATEWAY_DEADLINE, "backoff_max_seconds": 4},
        services={
            s: {"actions": ["restart", "start", "collect_logs", "inspect_resources"]}
            for s in SERVICES
        },
    )


@dataclass
class Slot:
    """One replica's place: its port, the processes that held it, their memory samples."""

    n: int
    port: int
    process: DaemonProcess | None = None
    generations: int = 0
    #: (pid, seconds since the run began, resident bytes), every sample.
    rss: list[tuple[int, float, float]] = field(default_factory=list)
    #: pid -> (seconds since the run began, open file descriptors), every sample.
    fds: dict[int, list[tuple[float, int]]] = field(default_factory=dict)


class Soak:
    """Everything the run holds, and what it recorded."""

    def __init__(self, workdir: Path, minutes: float, seed: int, share: float) -> None:
        self.workdir, self.seconds, self.rng = workdir, minutes * 60, random.Random(seed)
        self.share = share
        self.stack = ExitStack()
        self.began = time.time()
        self.slots = [Slot(n, free_port()) for n in range(3)]
        self.stuck: dict[str, tuple[str, float]] = {}
        self.self_alerts: Counter[str] = Counter()
        self.restarts: list[str] = []
        self.kills = 0
        self.restart_db = True
        self.store: IncidentStore | None = None

    # -- set-up -------------------------------------------------------------------------
    def start(self) -> None:
        url, drop = postgres_schema("soak")
        self.stack.callback(drop)
        self.stack.callback(self._close_store)
        # named, so that a short run can cut the agents' connections instead of restarting
        self.url = url = f"{url}&application_name={APPLICATION}"
        target = MetricsTarget().start()
        self.stack.callback(target.stop)
        self.services = Services(target, self.rng, mean_gap=150)
        self.alertmanager = LocalAlertmanager(self.workdir / "alertmanager", free_port()).start()
        self.stack.callback(self.alertmanager.stop)
        self.prometheus = SoakPrometheus(
            self.workdir / "prometheus",
            agents=[f"127.0.0.1:{s.port}" for s in self.slots],
            targets={"services": target.address},
            rules=RULES,
            alertmanager_url=self.alertmanager.url,
        ).start()
        self.stack.callback(self.prometheus.stop)
        self.model = FakeModel(delay=0.2, delay_for=self._model_delay)
        # a slow answer the agent gave up on meets a closed socket: expected, not news
        self.model.server.handle_error = _quiet  # type: ignore[method-assign]
        self.stack.callback(self.model.stop)
        self.gateway = FailingGateway(self.services, self.rng, self.share, delay=0.05).start()
        self.stack.callback(self.gateway.stop)
        config = soak_config(self.workdir / "agent.toml")
        self.env = agent_env(
            self.workdir,
            config,
            self.prometheus.url,
            self.gateway.url,
            OPENAI_BASE_URL=self.model.base_url,
            ALERTMANAGER_URL=self.alertmanager.url,
            AGENT_STATE_URL=url,
            APPROVAL_TOKEN=APPROVAL_TOKEN,
        )
        self.oncall = OnCall(self.services, self.rng, APPROVAL_TOKEN)
        for slot in self.slots:
            self._spawn(slot)
        self.stack.callback(self._stop_replicas)

    def _model_delay(self, body: dict[str, Any]) -> float:
        # one call in twenty-five outlasts the request timeout: the runbook decides
        return 12.0 if self.rng.random() < 0.04 else 0.2

    def _spawn(self, slot: Slot) -> None:
        env = {**self.env, "METRICS_ADDR": f"127.0.0.1:{slot.port}"}
        slot.process = DaemonProcess(
            env, self.workdir, f"replica-{slot.n}-{slot.generations}", log_dir=self.workdir
        )
        slot.generations += 1

    def _stop_replicas(self) -> None:
        for slot in self.slots:
            if slot.process is not None:
                slot.process.signal(signal.SIGTERM)
        for slot in self.slots:
            if slot.process is not None:
                try:
                    slot.process.wait(timeout=30)
                finally:
                    slot.process.close()

    # -- faults -------------------------------------------------------------------------
    def kill_one(self) -> None:
        """SIGKILL the second or third replica, in turn, and start it again."""
        slot = self.slots[1 + self.kills % 2]
        self.kills += 1
        assert slot.process is not None
        slot.process.proc.send_signal(signal.SIGKILL)
        slot.process.wait(10)
        slot.process.close()
        self._note(f"killed replica {slot.n} (SIGKILL)")
        time.sleep(self.rng.uniform(1, 4))
        self._spawn(slot)

    def restart_prometheus(self) -> None:
        """Stop Prometheus, leave it down a few seconds, start it again on its data."""
        self.prometheus.stop()
        self._note("Prometheus stopped")
        time.sleep(5)
        self.prometheus.start()
        self._note("Prometheus started again")

    def restart_postgres(self) -> None:
        """Restart the machine's PostgreSQL cluster once (other runs use it: quickly)."""
        version = sorted(os.listdir("/etc/postgresql"))[0]
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
            check=True,
            timeout=120,
            capture_output=True,
        )
        self._note(f"PostgreSQL {version} restarted")

    def cut_connections(self) -> None:
        """Short runs: cut the agents' PostgreSQL connections, as a restart does, without
        touching anyone else's."""
        import psycopg

        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            cut = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (APPLICATION,),
            ).fetchone()
        self._note(f"PostgreSQL connections of the agents cut ({cut[0] if cut else 0})")

    def _note(self, what: str) -> None:
        at = time.time() - self.began
        self.restarts.append(f"{at:6.0f}s  {what}")
        print(f"[{at:6.0f}s] {what}", flush=True)

    # -- sampling -----------------------------------------------------------------------
    def sample_processes(self) -> None:
        """Resident memory of each replica; its open file descriptors."""
        at = time.time() - self.began
        for slot in self.slots:
            if slot.process is None or slot.process.proc.poll() is not None:
                continue
            pid = slot.process.proc.pid
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                fds = len(os.listdir(f"/proc/{pid}/fd"))
            except OSError:
                continue
            rss = next(
                int(line.split()[1]) * 1024
                for line in status.splitlines()
                if line.startswith("VmRSS:")
            )
            slot.rss.append((pid, at, float(rss)))
            slot.fds.setdefault(pid, []).append((at, fds))

    def sample_incidents(self) -> None:
        """Incidents past their state's bound (kept: the first time each was seen so); the
        on-call human looks at them too."""
        store = self._store()
        if store is None:
            return
        now = time.time()
        try:
            current = store.current()
            live = [
                f"127.0.0.1:{slot.port}"
                for slot in self.slots
                if slot.process is not None and slot.process.proc.poll() is None
            ]
            self.oncall.look(current, live, now)
            for incident in current:
                if incident.state in TERMINAL or incident.id in self.stuck:
                    continue
                since = self._since(store, incident)
                if stuck(incident.state, since, now, BOUNDS):
                    self.stuck[incident.id] = (incident.state, now - since)
                    print(
                        f"  stuck: {incident.id} {incident.state} for {now - since:.0f}s",
                        flush=True,
                    )
        except AgentError:
            return  # PostgreSQL restarting: the next sample reads again

    def _since(self, store: IncidentStore, incident: Incident) -> float:
        moved = [
            e.at
            for e in store.events(incident.id)
            if e.kind == "transition" and e.data.get("to") == incident.state
        ]
        return (moved[-1] if moved else incident.opened_at).timestamp()

    def _close_store(self) -> None:
        if self.store is not None:
            self.store.close()

    def _store(self) -> IncidentStore | None:
        if self.store is None:
            try:
                self.store = open_store(self.url, create=False)
            except AgentError:
                return None
        return self.store

    def sample_self_alerts(self) -> None:
        """The rules for the agent itself that fire in the soak's Prometheus."""
        try:
            with urllib.request.urlopen(f"{self.prometheus.url}/api/v1/alerts", timeout=5) as a:
                alerts = json.load(a)["data"]["alerts"]
        except OSError:
            return
        for alert in alerts:
            name = alert["labels"].get("alertname", "")
            if name.startswith("DevopsAgent") and alert["state"] == "firing":
                self.self_alerts[name] += 1

    # -- the run ------------------------------------------------------------------------
    def run(self) -> None:
        """The timeline: faults, kills, the two restarts, the quiet end, the settling."""
        settle = min(120.0, self.seconds / 5)
        quiet_at = self.seconds - settle
        kill_every = min(180.0, self.seconds / 6)
        next_kill = kill_every
        events = {
            "prometheus": self.seconds / 3,
            "postgres": self.seconds * 3 / 5,
        }
        healed = False
        tick = 0
        while (elapsed := time.time() - self.began) < self.seconds:
            self.services.tick(time.time(), new_faults=30 <= elapsed < quiet_at)
            if elapsed >= next_kill and elapsed < quiet_at:
                self.kill_one()
                next_kill += kill_every + self.rng.uniform(-20, 20)
            if "prometheus" in events and elapsed >= events["prometheus"]:
                events.pop("prometheus")
                self.restart_prometheus()
            if "postgres" in events and elapsed >= events["postgres"]:
                events.pop("postgres")
                if self.restart_db:
                    self.restart_postgres()
                else:
                    self.cut_connections()
            if not healed and elapsed >= quiet_at + settle / 2:
                self.services.heal_all(time.time())
                healed = True
                self._note("every remaining fault healed")
            if tick % 15 == 0:
                self.sample_processes()
            if tick % 10 == 0:
                self.sample_incidents()
                self.sample_self_alerts()
            if tick % 60 == 0:
                print(
                    f"[{elapsed:6.0f}s] faulty services: {self.services.faulty()}, "
                    f"gateway requests: {len(self.gateway.received)}",
                    flush=True,
                )
            tick += 1
            time.sleep(1)
        self.sample_processes()
        self.sample_incidents()

    # -- figures ------------------------------------------------------------------------
    def figures(self) -> tuple[list[str], list[str]]:
        """The report's lines, and the goals missed."""
        store = self._store()
        assert store is not None, "the store cannot be read at the end"
        incidents = [i for i in store.recent(100_000) if isinstance(i, Incident)]
        lines, missed = [], []
        ended = [i for i in incidents if i.state in TERMINAL]
        states = Counter(i.state for i in incidents)
        lines.append(
            f"incidents opened: {len(incidents)}, ended: {len(ended)} "
            f"({', '.join(f'{k} {v}' for k, v in sorted(states.items()))})"
        )
        lines.append(
            f"fault episodes: {len(self.services.episodes)} ("
            + ", ".join(
                f"{k} {v}"
                for k, v in sorted(
                    Counter(e.ended_by or "open" for e in self.services.episodes).items()
                )
            )
            + ")"
        )
        opened = [
            Opened(i.id, i.target or "", i.name, i.opened_at.timestamp())
            for i in incidents
            if i.kind == "alert"
        ]
        found = attribute(self.services.episodes, opened)
        doubled = found.duplicates
        remediations = [r for r in self.gateway.received if r.purpose == "remediation"]
        repeated = duplicate_actions(
            (r.incident_id, r.action)
            for r in remediations
            if r.answered != "http_503" and r.answered != "execution_error"
        )
        lines.append(
            f"duplicates: {len(doubled)} incidents for one fault, {repeated} "
            "actions sent twice (goal 0)"
        )
        if doubled or repeated:
            missed.append(f"duplicates: {doubled} incidents, {repeated} actions")
        by_id = {i.id: i for i in incidents}
        sources = Counter(by_id[p].finding.source for p in found.phantoms)
        lines.append(
            f"incidents opened for a fault already over: {len(found.phantoms)}"
            + (
                f" (reported by {', '.join(f'{k} {v}' for k, v in sorted(sources.items()))})"
                if sources
                else ""
            )
        )
        self._dump(incidents)
        lines.append(f"stuck past their state's bound: {len(self.stuck)} (goal 0)")
        for incident_id, (state, seconds) in sorted(self.stuck.items()):
            lines.append(f"  {incident_id}: {state} for {seconds:.0f}s")
        if self.stuck:
            missed.append(f"{len(self.stuck)} incidents stuck")
        lines += self._memory(missed)
        lines.append(self._latency(incidents, remediations))
        answered = Counter(r.answered for r in self.gateway.received)
        lines.append(
            f"gateway requests: {len(self.gateway.received)} "
            f"({', '.join(f'{k} {v}' for k, v in sorted(answered.items()))})"
        )
        answers = Counter(f"{verdict} {status}" for _, verdict, status in self.oncall.answers)
        lines.append(
            f"on-call answers through the API: {len(self.oncall.answers)} "
            f"({', '.join(f'{k}: {v}' for k, v in sorted(answers.items()))})"
        )
        fired = ", ".join(f"{k} ({v} samples)" for k, v in sorted(self.self_alerts.items()))
        lines.append(f"rules for the agent itself that fired: {fired or 'none'}")
        lines.append(f"replica kills (SIGKILL, then started again): {self.kills}")
        lines += [f"  {event}" for event in self.restarts if "killed" not in event]
        return lines, missed

    def _dump(self, incidents: list[Incident]) -> None:
        """What the figures were computed from, for a post-mortem: records.json."""
        records = {
            "episodes": [vars(e) for e in self.services.episodes],
            "requests": [vars(r) for r in self.gateway.received],
            "incidents": [
                {
                    **i.row(),
                    "source": i.finding.source,
                    "first_seen": i.finding.first_seen.isoformat(),
                }
                for i in incidents
            ],
            "stuck": self.stuck,
            "processes": {s.n: {"rss": s.rss, "fds": s.fds} for s in self.slots},
            "events": self.restarts,
        }
        (self.workdir / "records.json").write_text(json.dumps(records, indent=1, default=str))

    def _memory(self, missed: list[str]) -> list[str]:
        lines = []
        for slot in self.slots:
            by_pid: dict[int, list[tuple[float, float]]] = {}
            for pid, at, rss in slot.rss:
                by_pid.setdefault(pid, []).append((at, rss))
            if not by_pid:
                continue
            pid, samples = max(by_pid.items(), key=lambda kv: kv[1][-1][0] - kv[1][0][0])
            lived = samples[-1][0] - samples[0][0]
            warmup = min(WARMUP, lived / 4)
            growth = growth_mb_per_hour(samples, warmup=warmup)
            warm = [v for t, v in samples if t >= samples[0][0] + warmup] or [samples[-1][1]]
            counts = slot.fds.get(pid, [(0.0, 0)])
            fds = [n for t, n in counts if t >= counts[0][0] + warmup] or [counts[-1][1]]
            shown = "n/a" if growth is None else f"{growth:+.2f} MB/h"
            goal = f" (goal < {GOAL_MB_PER_HOUR:g})" if slot.n == 0 else ""
            lines.append(
                f"replica {slot.n}: {slot.generations} process(es); the longest lived "
                f"{lived / 60:.1f} min: resident {warm[0] / 2**20:.0f} MB after "
                f"{warmup:.0f}s of warm-up, {samples[-1][1] / 2**20:.0f} MB at the end, "
                f"growth {shown}{goal}; open fds {fds[0]} after warm-up, {fds[-1]} at the end"
            )
            if growth is not None and growth >= GOAL_MB_PER_HOUR and slot.n == 0:
                missed.append(f"replica {slot.n} grows {growth:.1f} MB/h")
        return lines

    def _latency(self, incidents: list[Incident], remediations: list[Any]) -> str:
        """p95 (and median) from firing to the action's request: alone, after a human's yes."""
        first: dict[str, float] = {}
        for request in remediations:
            first.setdefault(request.incident_id, request.at)
        by_id = {i.id: i for i in incidents}
        delays: dict[bool, list[float]] = {False: [], True: []}
        for incident_id, at in first.items():
            if (incident := by_id.get(incident_id)) is None:
                continue
            approved = bool(incident.decision and incident.decision.approved_by)
            fired = incident.finding.first_seen.timestamp() + FOR_SECONDS
            delays[approved].append(at - fired)
        parts = []
        for approved, what in ((False, "alone"), (True, "after a human's yes")):
            worst, middle = p95(delays[approved]), median(delays[approved])
            shown = "n/a" if worst is None else f"p95 {worst:.1f}s, median {middle:.1f}s"
            parts.append(f"{what}: {shown} over {len(delays[approved])} actions")
        return "firing to action: " + "; ".join(parts)


def _quiet(request: object, address: object) -> None:
    """socketserver's handle_error, silenced."""


def main(argv: list[str] | None = None) -> int:
    """Run the soak; 0 when every goal is met."""
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__)
    parser.add_argument(
        "--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES") or 20)
    )
    parser.add_argument("--seed", type=int, default=34)
    parser.add_argument(
        "--gateway-failures",
        type=float,
        default=0.15,
        help="share of gateway requests that fail (default 0.15)",
    )
    parser.add_argument("--workdir", type=Path, default=REPO / ".run" / "soak")
    parser.add_argument(
        "--no-postgres-restart",
        action="store_true",
        help="cut the agents' PostgreSQL connections instead of restarting the machine's "
        "cluster (short runs while developing)",
    )
    args = parser.parse_args(argv)
    workdir: Path = args.workdir / time.strftime("%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True)
    soak = Soak(workdir, args.minutes, args.seed, args.gateway_failures)
    soak.restart_db = not args.no_postgres_restart
    print(
        f"soak: {args.minutes:g} minutes, 3 replicas on PostgreSQL, {len(SERVICES)} services, "
        f"{args.gateway_failures:.0%} of gateway requests failing; logs in {workdir}",
        flush=True,
    )
    with soak.stack:
        soak.start()
        soak.run()
        lines, missed = soak.figures()
    print("\n".join(["", "soak figures:", *(f"  {line}" for line in lines)]))
    if missed:
        print("GOALS MISSED: " + "; ".join(missed))
        return 1
    print("every goal met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
