"""What the soak's agents watch and talk to: a dozen services that leak, crash and
recover at random (a scrape target), a gateway that fixes what it restarts and fails a
share of requests, a model that is sometimes too slow, and a Prometheus that also
scrapes the agents and evaluates the rules for the agent itself."""

from __future__ import annotations

import json
import random
import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.demo.gateway_sim import ActResult, GatewaySimulator
from agent.local import LocalPrometheus, MetricsTarget
from tests.conftest import REPO
from tests.soak.figures import Episode

SERVICES = tuple(f"svc-{n:02d}" for n in range(1, 13))
LEAK, DOWN = "SoakMemoryLeak", "SoakServiceDown"
#: The monitored services' alerts: a leak and a crash, each firing after 5 s.
RULES = f"""
groups:
- name: soak
  rules:
  - alert: {LEAK}
    expr: soak_memory_bytes > 1000
    for: 5s
    labels: {{severity: critical}}
  - alert: {DOWN}
    expr: soak_up == 0
    for: 5s
    labels: {{severity: critical}}
"""
INTENTS = {
    "restart the service": "restart",
    "start the service": "start",
    "stop the service": "stop",
    "show recent logs": "collect_logs",
    "show memory and CPU usage": "inspect_resources",
    "check if service is healthy": "health_check",
}
INCIDENT_ID = re.compile(r"incident ([0-9a-f]{12})")


class Services:
    """The monitored services: each is well, leaking (memory over the alert's threshold and
    growing) or down (``up`` 0). Faults begin at random; some go away by themselves after
    a while, the others wait for a restart. Every fault is an ``Episode``."""

    def __init__(self, target: MetricsTarget, rng: random.Random, mean_gap: float) -> None:
        self.target, self.rng, self.mean_gap = target, rng, mean_gap
        self.episodes: list[Episode] = []
        self._lock = threading.Lock()
        self._open: dict[str, tuple[Episode, float | None]] = {}  # service -> (episode, heals at)
        for service in SERVICES:
            self._well(service)

    def _well(self, service: str) -> None:
        self.target.set("soak_memory_bytes", 100, service=service)
        self.target.set("soak_up", 1, service=service)

    def tick(self, now: float, *, new_faults: bool) -> None:
        """One second of the world: faults begin, grow, and some go away by themselves."""
        with self._lock:
            for service in SERVICES:
                found = self._open.get(service)
                if found is None:
                    if new_faults and self.rng.random() < 1 / self.mean_gap:
                        self._begin(service, now)
                    continue
                episode, heals_at = found
                if heals_at is not None and now >= heals_at:
                    self._end(service, now, "itself")
                elif episode.alert == LEAK:
                    grown = 5000 + 50 * (now - episode.start)
                    self.target.set("soak_memory_bytes", grown, service=service)

    def _begin(self, service: str, now: float) -> None:
        alert = LEAK if self.rng.random() < 0.6 else DOWN
        episode = Episode(service, alert, start=now)
        self.episodes.append(episode)
        # a quarter of the faults go away by themselves, some before anyone could act
        heals_at = now + self.rng.uniform(8, 90) if self.rng.random() < 0.25 else None
        self._open[service] = (episode, heals_at)
        if alert == LEAK:
            self.target.set("soak_memory_bytes", 5000, service=service)
        else:
            self.target.set("soak_up", 0, service=service)

    def _end(self, service: str, now: float, by: str) -> None:
        episode, _ = self._open.pop(service)
        episode.end, episode.ended_by = now, by
        self._well(service)

    def fix(self, service: str, command: str) -> bool:
        """A command ran on ``service``: a restart ends any fault, a start ends a crash."""
        with self._lock:
            found = self._open.get(service)
            if found is None:
                return False
            restart = " restart " in f" {command} "
            if restart or (" start " in f" {command} " and found[0].alert == DOWN):
                self._end(service, time.time(), "gateway")
                return True
            return False

    def fix_by_hand(self, service: str, now: float) -> bool:
        """A human fixed ``service`` (after the agent escalated it); False when it was well."""
        with self._lock:
            if service not in self._open:
                return False
            self._end(service, now, "human")
            return True

    def heal_all(self, now: float) -> None:
        """End every fault (the end of the run)."""
        with self._lock:
            for service in list(self._open):
                self._end(service, now, "harness")

    def faulty(self) -> int:
        """How many services are in a fault now."""
        with self._lock:
            return len(self._open)


@dataclass(frozen=True)
class Request:
    """One execute request the gateway received."""

    at: float
    incident_id: str
    action: str
    target: str
    purpose: str
    answered: str


class FailingGateway(GatewaySimulator):
    """The gateway simulator, fixing what it restarts, failing a share of requests the
    ways a gateway fails: 503 and EXECUTION_ERROR before anything ran (retried), a
    command that ran and failed (the service stays broken), an INTERNAL_ERROR after the
    command ran (the agent cannot tell: verification decides)."""

    FAILURES = ("http_503", "execution_error", "completed_failure", "internal_error")

    def __init__(self, services: Services, rng: random.Random, share: float, **kwargs: Any) -> None:
        super().__init__(self._act, known_services=SERVICES, **kwargs)
        self.services, self.rng, self.share = services, rng, share
        self.received: list[Request] = []
        self._pending_purpose = threading.local()

    def _act(self, target: str, command: str) -> ActResult:
        self.services.fix(target, command)
        return ActResult(stdout=f"{target}\n")

    def _route(
        self, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        self._pending_purpose.value = headers.get("X-Devops-Agent-Purpose", "remediation")
        return super()._route(method, path, headers, raw)

    def answer(self, body: Any) -> tuple[int, Any]:
        """Fail a share of the requests, else answer (and act) as the gateway does."""
        failure = self.rng.choice(self.FAILURES) if self.rng.random() < self.share else ""
        status, answer = self._answer(body, failure)
        self._record(body, failure or str(status))
        return status, answer

    def _answer(self, body: Any, failure: str) -> tuple[int, Any]:
        if failure == "http_503":
            return 503, {"detail": "Service Unavailable"}
        if failure == "execution_error":
            return self._error("EXECUTION_ERROR", "DOCKER_ERROR", "docker daemon busy")
        if failure == "completed_failure":
            target = str(body["target_resource"]["name"])
            ran = ActResult(exit_code=1, stderr="Error response from daemon: failed to restart")
            return 200, self._result(f"docker restart {target}", ran)
        status, answer = super().answer(body)
        if failure == "internal_error":
            return self._error("INTERNAL_ERROR", "INTERNAL", "the answer was lost after running")
        return status, answer

    def _record(self, body: Any, answered: str) -> None:
        try:
            context = body["action_request"].get("context") or ""
            found = INCIDENT_ID.search(context)
            request = Request(
                at=time.time(),
                incident_id=found.group(1) if found else "",
                action=INTENTS.get(body["action_request"]["intent"], "?"),
                target=str(body["target_resource"]["name"]),
                purpose=getattr(self._pending_purpose, "value", "remediation"),
                answered=answered,
            )
        except (KeyError, TypeError, AttributeError):
            return
        with self._record_lock:
            self.received.append(request)


class SoakPrometheus(LocalPrometheus):
    """The soak's Prometheus: the services' rules, and the agents scraped as the
    `devops-agent` job with the rules for the agent itself loaded."""

    def __init__(self, workdir: Path, agents: list[str], **kwargs: Any) -> None:
        super().__init__(workdir, **kwargs)
        self.agents = agents

    def config(self) -> dict[str, object]:
        """The services' scrape, plus the agents' and their rules."""
        cfg = super().config()
        rule_files = cfg["rule_files"]
        assert isinstance(rule_files, list)
        rule_files.append(str(REPO / "config" / "prometheus-rules.yml"))
        scrapes = cfg["scrape_configs"]
        assert isinstance(scrapes, list)
        scrapes.append(
            {
                "job_name": "devops-agent",
                "scrape_interval": "5s",
                "static_configs": [{"targets": self.agents}],
            }
        )
        return cfg


class OnCall:
    """The human on call, through the agent's approval API: answers most asks after a
    while (yes more often than no, some left to expire), and fixes by hand, a few minutes
    later, a service whose incident was escalated while its fault goes on."""

    def __init__(self, services: Services, rng: random.Random, token: str) -> None:
        self.services, self.rng, self.token = services, rng, token
        self.answers: list[tuple[str, str, int]] = []  # incident, yes/no, HTTP status
        #: (incident, state) -> when the human will look at it in that state
        self._seen: dict[tuple[str, str], float] = {}
        self._left: set[str] = set()

    def look(self, incidents: list[Any], replicas: list[str], now: float) -> None:
        """Look at the current incidents once: answer or fix what is due."""
        for incident in incidents:
            # an ask is answered within its time (90 s), a fix by hand takes minutes
            delay = self.rng.uniform(10, 60) if incident.asks else self.rng.uniform(60, 180)
            due = self._seen.setdefault((incident.id, incident.state), now + delay)
            if now < due or incident.id in self._left:
                continue
            if incident.state == "awaiting_approval" and replicas:
                self._answer(incident, self.rng.choice(replicas))
            elif incident.state == "escalated" and incident.cleared_at is None:
                if self.services.fix_by_hand(incident.target or "", now):
                    self._left.add(incident.id)

    def _answer(self, incident: Any, replica: str) -> None:
        roll = self.rng.random()
        if roll < 0.2:
            self._left.add(incident.id)  # nobody answers: it expires
            return
        verdict = "approve" if roll < 0.75 else "deny"
        body = {
            "by": "soak-oncall",
            "reason": "looked at the graph",
            "action": incident.awaiting,
            "target": incident.awaiting_target,
        }
        request = urllib.request.Request(
            f"http://{replica}/api/incidents/{incident.id}/{verdict}",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                status = answer.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError:
            return  # that replica is down (killed): ask another next time
        self.answers.append((incident.id, verdict, status))
        self._left.add(incident.id)
