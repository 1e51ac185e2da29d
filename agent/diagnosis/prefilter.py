"""Deterministic triage before any model call: noise, scope and duplicates cost nothing."""

from __future__ import annotations

from collections.abc import Container

from agent.config import AgentConfig
from agent.diagnosis.models import Decision
from agent.sweep.findings import Finding


def prefilter(
    finding: Finding, config: AgentConfig, open_fingerprints: Container[str]
) -> Decision | None:
    """A 'skip' decision with the reason, or None when the finding deserves a diagnosis."""
    reason = None
    if finding.name in config.diagnosis.noise_alerts:
        reason = f"{finding.name} is a known-noise alert"
    elif finding.target is None:
        reason = "no label names the service"
    elif finding.target not in config.services:
        reason = f"service {finding.target!r} is outside the configured scope"
    elif finding.fingerprint in open_fingerprints:
        reason = "duplicate of an open incident"
    if reason is None:
        return None
    return Decision(
        action="none",
        target=finding.target,
        decided_by="prefilter",
        actionable=False,
        reason=reason,
    )
