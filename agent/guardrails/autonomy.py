"""May a decision act without a human? Two keys, the operator's tiers, and the history.

A model can be wrong, confused or steered by alert text, and inside the catalogue every
action is "allowed". So a changing action (restart, start, stop) runs on its own only when
two keys turn: the model's plan and the operator's runbook rule for the same finding name
the same action and target, and the action's tier (``autonomy``) is ``auto``. Every
disagreement goes to a human:

- the model proposes more than the runbook (another changing action, or one where no
  rule says to act): the model's proposal waits for approval;
- the model proposes less (none, escalate, a read-only action) where the runbook would
  act: the read-only step runs, and the runbook's action waits for approval, with the
  model's doubt in the record.

A runbook-only decision (no model configured, or the model failed) is one key, the one the
operator wrote: it runs within its tier. Read-only actions and escalations run alone (a
read-only action set to ``approve`` waits too). ``never`` refuses and escalates. An action
that did not resolve this problem recently (``repeat_failed``) never runs again on its own.

Pure: a decision, the runbook's decision for the same finding, the configuration and the
recent failures in; the decision with its verdict out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType

from agent.config import AgentConfig, autonomy_of
from agent.diagnosis.models import Decision

PASSIVE = frozenset({"none", "escalate"})
NO_FAILURES: Mapping[str, str] = MappingProxyType({})


def _changing(config: AgentConfig, action: str) -> bool:
    entry = config.actions.get(action)
    return entry is not None and entry.mutating


def _ask(
    decision: Decision, action: str, target: str | None, why: str, now: str = "none"
) -> Decision:
    """The decision with ``action`` on ``target`` waiting for a human; ``now`` runs alone."""
    return replace(
        decision,
        action=now,
        approval_action=action,
        approval_target=target or "",
        autonomy=why,
    )


def _refused(decision: Decision, action: str, target: str | None) -> Decision:
    why = f"{action} on {target} is set to autonomy 'never': refused"
    return replace(decision, action="escalate", autonomy=why, reason=f"{why}; {decision.reason}")


def _one_key(decision: Decision, config: AgentConfig, failures: Mapping[str, str]) -> Decision:
    """A runbook-only decision: the operator's own key, within the action's tier."""
    action, target = decision.action, decision.target
    decision = replace(decision, keys=("runbook",), runbook_action=action)
    if action in PASSIVE:
        return decision
    tier = autonomy_of(config, target, action)
    if tier == "never":
        return _refused(decision, action, target)
    if action in failures and _changing(config, action):
        return _ask(decision, action, target, f"repeat_failed: {failures[action]}")
    if tier == "approve":
        return _ask(decision, action, target, f"{action} on {target} needs approval (autonomy)")
    return replace(decision, autonomy=f"runbook only: {action} runs within its tier (auto)")


def _model_acts(
    model: Decision, runbook: Decision, config: AgentConfig, failures: Mapping[str, str]
) -> Decision:
    """The model proposes a changing action: it runs alone only with the runbook's key."""
    action, target = model.action, model.target
    agree = runbook.action == action and runbook.target == target
    model = replace(model, keys=("model", "runbook") if agree else ("model",))
    tier = autonomy_of(config, target, action)
    if tier == "never":
        return _refused(model, action, target)
    said = _runbook_said(runbook)
    if action in failures:
        return _ask(model, action, target, f"repeat_failed: {failures[action]}")
    if not agree:
        why = f"the model proposes {action} on {target}, the runbook {said}: a human decides"
        return _ask(model, action, target, why)
    if tier == "approve":
        return _ask(model, action, target, f"{action} on {target} needs approval (autonomy)")
    return replace(model, autonomy=f"two keys: the model and the runbook ({said}) agree")


def _model_holds_back(
    model: Decision, runbook: Decision, config: AgentConfig, failures: Mapping[str, str]
) -> Decision:
    """The model proposes none, escalate or a read-only action."""
    action = model.action
    now = _read_only(model, config)
    if now.action == "escalate" and action != "escalate":
        return now  # the read-only step itself is refused
    if not _changing(config, runbook.action):
        return now
    wanted, where = runbook.action, runbook.target
    if autonomy_of(config, where, wanted) == "never":
        return replace(now, autonomy=f"{now.autonomy}; the runbook's {wanted} is set to 'never'")
    doubt = f"the model proposes {action}" + (f" ({model.reason})" if model.reason else "")
    why = f"the runbook would {wanted} {where}, but {doubt}: a human decides"
    if wanted in failures:
        why = f"{why}; repeat_failed: {failures[wanted]}"
    step = now.action if now.action not in PASSIVE and not now.approval_action else "none"
    # The model's verification expression belongs to its own proposal, not to the
    # runbook's action: once that is approved, the finding's own presence decides.
    # What waits is the runbook's action: its key is the one that turned for it.
    held = replace(now, keys=("runbook",), verification="")
    return _ask(held, wanted, where, why, now=step)


def _read_only(model: Decision, config: AgentConfig) -> Decision:
    """A passive or read-only proposal within its tier."""
    action, target = model.action, model.target
    decision = replace(model, keys=("model",))
    if action in PASSIVE:
        return replace(decision, autonomy=f"{action} runs alone")
    tier = autonomy_of(config, target, action)
    if tier == "never":
        return _refused(decision, action, target)
    if tier == "approve":
        return _ask(decision, action, target, f"{action} on {target} needs approval (autonomy)")
    return replace(decision, autonomy=f"{action} is read-only and runs alone")


def _runbook_said(runbook: Decision) -> str:
    if runbook.reason.startswith("no runbook rule"):
        return "has no rule for this finding"
    return f"says {runbook.action}" + (f" {runbook.target}" if runbook.target else "")


def judge(
    decision: Decision,
    runbook: Decision,
    config: AgentConfig,
    failures: Mapping[str, str] = NO_FAILURES,
) -> Decision:
    """The decision with its autonomy verdict: what runs alone now (``action``), what waits
    for a human (``approval_action``), which keys turned for it (``keys``) and why.

    ``runbook`` is the runbook's decision for the same finding; ``failures`` maps an action
    to why it did not resolve this problem recently (the ``repeat_failed`` guardrail).
    """
    if decision.decided_by == "prefilter":
        return decision
    if decision.decided_by == "runbook":
        return _one_key(decision, config, failures)
    decision = replace(decision, runbook_action=runbook.action)
    if _changing(config, decision.action):
        return _model_acts(decision, runbook, config, failures)
    return _model_holds_back(decision, runbook, config, failures)
