"""The checks a recovery plan must pass, enforced in code whatever the prompt said.

A model can be wrong, confused or manipulated through alert text. None of that may turn
into an action on a service it was not asked about, an action the catalogue does not
allow for that service, or a low-confidence guess: such plans become ``escalate``.
"""

from __future__ import annotations

from agent.config import AgentConfig
from agent.sweep.findings import Finding

PASSIVE = frozenset({"escalate", "none"})


def allowed_targets(finding: Finding, config: AgentConfig) -> list[str]:
    """The finding's own service, plus those its catalogue entry names as related."""
    if finding.target is None or finding.target not in config.services:
        return []
    return [finding.target, *config.services[finding.target].related]


def refusal(
    action: str, target: str | None, confidence: float, finding: Finding, config: AgentConfig
) -> str | None:
    """Why the plan may not run as proposed, or None if it may."""
    if action not in config.actions:
        return f"action {action!r} is not in the catalogue"
    if action in PASSIVE:
        return None
    if target not in allowed_targets(finding, config):
        return f"target {target!r} is not the finding's service {finding.target!r}"
    service = config.services[target]
    if action not in service.actions:
        return f"action {action!r} is not allowed for {target!r}"
    if confidence < config.diagnosis.min_confidence:
        return f"confidence {confidence:.2f} below {config.diagnosis.min_confidence:.2f}"
    return None
