"""The runbook engine: deterministic rules that decide when no model can.

It serves when no model is configured or reachable, when the model fails, and when its
answer cannot be validated. First matching rule wins; no match means escalate.
"""

from __future__ import annotations

import re

from agent.config import AgentConfig
from agent.diagnosis.models import Decision
from agent.diagnosis.safety import refusal
from agent.sweep.findings import Finding


def runbook_decide(finding: Finding, config: AgentConfig, fallback_reason: str = "") -> Decision:
    """The runbook's decision for a finding, checked by the same safety rules as a plan."""
    for rule in config.runbook:
        if finding.kind in rule.kinds and re.search(rule.match, finding.name):
            action, reason = rule.action, f"runbook rule {rule.name!r} matched {finding.name!r}"
            break
    else:
        action, reason = "escalate", f"no runbook rule matches {finding.name!r}"
    refused = refusal(action, finding.target, 1.0, finding, config)
    if refused:
        action, reason = "escalate", f"{reason}, but {refused}"
    return Decision(
        action=action,
        target=finding.target,
        decided_by="runbook",
        actionable=action not in ("none",),
        reason=reason,
        confidence=1.0,
        root_cause=finding.annotations.get("summary", "")[:300] if finding.annotations else "",
        fallback_reason=fallback_reason,
    )
