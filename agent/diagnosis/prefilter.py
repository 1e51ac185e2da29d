"""Deterministic triage before any model call: noise and findings outside the scope cost nothing."""

from __future__ import annotations

from agent.config import AgentConfig
from agent.diagnosis.models import Decision
from agent.sweep.findings import Finding


def prefilter(finding: Finding, config: AgentConfig) -> Decision | None:
    """A 'skip' decision with the reason, or None when the finding deserves a diagnosis."""
    reason = None
    if finding.name in config.diagnosis.noise_alerts:
        reason = f"{finding.name} is a known-noise alert"
    elif finding.target is None:
        reason = "no label names the service"
    elif finding.target not in config.services:
        reason = f"service {finding.target!r} is outside the configured scope"
    if reason is None:
        return None
    return Decision(
        action="none",
        target=finding.target,
        decided_by="prefilter",
        actionable=False,
        reason=reason,
        alone=True,
    )
