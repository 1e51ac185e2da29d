"""Scripted models for `devops-agent eval`: one that answers every shipped case as its
expectation says (the oracle), one that restarts whatever fires. Each recognises the
case a request belongs to by the finding block in the prompt, and the tests work out,
from the case files alone, the scores each script must get."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

from agent.config import AgentConfig
from agent.eval import history
from agent.eval.case import NO_GATEWAY, Case
from tests.llm_fakes import completion


def _key(kind: str, name: str, service: str, labels: dict[str, str], value: object) -> str:
    return json.dumps([kind, name, service, labels, value], sort_keys=True)


def _finding_data(body: dict[str, Any]) -> dict[str, Any]:
    for message in body["messages"]:
        content = message.get("content") or ""
        if message["role"] == "user" and "<finding-data>" in content:
            raw = content.split("<finding-data>\n", 1)[1].split("\n</finding-data>", 1)[0]
            data: dict[str, Any] = json.loads(raw)
            return data
    raise AssertionError("no finding block in the request")


def prefiltered(case: Case, config: AgentConfig) -> bool:
    """Whether the agent decides this case without asking a model."""
    finding = case.to_finding(case.at, config.prometheus.target_labels)
    return (
        finding.name in config.diagnosis.noise_alerts
        or finding.target is None
        or finding.target not in case.scope
    )


class ScriptedModel:
    """Answers triage, investigation and plan for the case the request is about."""

    def __init__(self, cases: Sequence[Case], config: AgentConfig, *, wrong: bool) -> None:
        self.wrong = wrong
        self.by_key: dict[str, Case] = {}
        for case in cases:
            f = case.to_finding(case.at, config.prometheus.target_labels)
            key = _key(f.kind, f.name, f.target or "", dict(f.labels), f.value)
            assert key not in self.by_key, f"{case.id} and {self.by_key[key].id} look alike"
            self.by_key[key] = case
        self.tool_results: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def case_of(self, body: dict[str, Any]) -> Case:
        """The case a request is about."""
        data = _finding_data(body)
        key = _key(data["kind"], data["name"], data["service"], data["labels"], data["value"])
        return self.by_key[key]

    def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        case = self.case_of(body)
        system = body["messages"][0]["content"]
        right = case.expect.actions[0]
        if system.startswith("You triage"):
            actionable = self.wrong or right != "none"
            verdict = {"actionable": actionable, "urgency": "high", "reason": case.description}
            return completion(json.dumps(verdict))
        if system.startswith("You investigate"):
            return self._investigate(case, body)
        schema = body["response_format"]["json_schema"]["schema"]["properties"]
        own = schema["target"]["enum"][0]
        if self.wrong:
            action, target = "restart", own
        else:
            action, target = right, case.expect.target or own
        plan = {
            "action": action,
            "target": target,
            "confidence": 0.9,
            "root_cause": " ".join(["scripted:", *case.expect.root_cause_mentions]),
            "rationale": case.description,
            "evidence": [],
            "verification": "",
        }
        return completion(json.dumps(plan))

    def _investigate(self, case: Case, body: dict[str, Any]) -> dict[str, Any]:
        results = [m["content"] for m in body["messages"] if m.get("role") == "tool"]
        if results or "tools" not in body:
            with self._lock:
                self.tool_results[case.id] = results
            return completion("The metrics agree with the alert.")
        family = history.parse(case.history)[0].name
        return completion(None, [("prom_query", {"expr": family})])


def expected_calls(case: Case, config: AgentConfig, *, wrong: bool) -> int:
    """Model calls the script makes for one run: triage, then two investigation turns
    (a tool call, a summary) and the plan when triage says actionable."""
    if prefiltered(case, config):
        return 0
    actionable = wrong or case.expect.actions[0] != "none"
    return 4 if actionable else 1


def wrong_outcome(case: Case, config: AgentConfig) -> tuple[str, bool]:
    """What the always-restart script gets: (the action done in effect, unsafe)."""
    if prefiltered(case, config):
        return "none", False
    finding = case.to_finding(case.at, config.prometheus.target_labels)
    assert finding.target is not None
    if "restart" not in case.scope[finding.target].actions:
        return "escalate", False  # the safety checks refuse the plan
    return "restart", "restart" in case.expect.forbidden


def wrong_passes(case: Case, config: AgentConfig) -> bool:
    """Whether the always-restart script's run passes the case."""
    action, unsafe = wrong_outcome(case, config)
    finding = case.to_finding(case.at, config.prometheus.target_labels)
    right = action in case.expect.actions and (
        action in NO_GATEWAY or finding.target == case.expect.target
    )
    # The script's root cause names the words a case asks for; a prefiltered case has none.
    mentions = not case.expect.root_cause_mentions or not prefiltered(case, config)
    return right and not unsafe and mentions
