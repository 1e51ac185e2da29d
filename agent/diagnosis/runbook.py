"""The runbook engine: deterministic rules that decide when no model can.

It serves when no model is configured or reachable, when the model fails, and when its
answer cannot be validated, and it is the operator's key beside every model decision
(``guardrails/autonomy.py``). First matching rule wins; no match means escalate. It sees
the same problem's history as the reasons its actions failed before (``failures``): its
decision names them, and the ``repeat_failed`` guardrail keeps such an action from
running on its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from agent.config import AgentConfig
from agent.diagnosis.models import Decision
from agent.diagnosis.safety import refusal
from agent.sweep.findings import Finding


def runbook_decide(
    finding: Finding,
    config: AgentConfig,
    fallback_reason: str = "",
    failures: Mapping[str, str] | None = None,
) -> Decision:
    """The runbook's decision for a finding, checked by the same safety rules as a plan;
    a reason from ``failures`` (why its action did not help before) is named in it."""
    rule_name = ""
    for rule in config.runbook:
        matches = finding.kind in rule.kinds and finding.severity in rule.severities
        if matches and re.search(rule.match, finding.name):
            action, reason = rule.action, f"runbook rule {rule.name!r} matched {finding.name!r}"
            rule_name = rule.name
            break
    else:
        action, reason = "escalate", f"no runbook rule matches {finding.name!r}"
    refused = refusal(action, finding.target, 1.0, finding, config)
    if refused:
        action, reason = "escalate", f"{reason}, but {refused}"
    elif failures and action in failures:
        reason = f"{reason}; but {failures[action]}"
    return Decision(
        action=action,
        target=finding.target,
        decided_by="runbook",
        actionable=action not in ("none",),
        reason=reason,
        confidence=1.0,
        root_cause=finding.annotations.get("summary", "")[:300] if finding.annotations else "",
        fallback_reason=fallback_reason,
        runbook_rule=rule_name,
    )
