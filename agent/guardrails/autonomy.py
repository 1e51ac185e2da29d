"""May a decision act without a human? Two keys, the operator's tiers, and the history.

A model can be wrong, confused or steered by alert text, and inside the catalogue every
action is "allowed". So a changing action (restart, start, stop) runs on its own only when
two keys turn: the model's plan and the operator's runbook rule for the same finding name
the same action and target, and the action's tier (``autonomy``) is ``auto``. The more
cautious answer wins every disagreement: acting alone needs both keys, telling humans
needs only one.

- the model proposes more than the runbook (another changing action, or one where no
  rule says to act): the model's proposal waits for approval;
- the model proposes less (none, escalate, a read-only action) where the runbook would
  act: the read-only step runs, and the runbook's action waits for approval, with the
  model's doubt in the record;
- the model says ``none`` where the runbook escalates or takes a read-only step: the
  runbook's step still happens (humans are told; the read-only step runs within its
  tier), and the record says the model disagreed.

A runbook-only decision with no model configured is one key, the one the operator wrote:
it runs within its tier. With a model configured, a diagnosis whose model failed is one
key missing, not a model that agreed: the runbook's changing action waits for a human
(``policy.model_failure = "approve"``, the default; ``"runbook"`` runs it within its tier).
A finding that only Alertmanager reports (anyone who can reach its API can post one) has
no Prometheus behind it: a changing action for it waits for a human unless
``[sweep] trust_alertmanager``. Read-only actions and escalations run alone (a read-only
action set to ``approve`` waits too). ``never`` refuses and escalates. An action that did
not resolve this problem recently (``repeat_failed``) never runs again on its own.

``observe`` decides as ``auto`` would and then holds the action back: nothing is sent and
nobody is asked, and the decision records what would have happened (``send``: it would
have run alone; ``ask``: a human would still have been asked). A read-only step with a
tier of its own (``auto``) still runs first. Every verdict also records whether its action
would run alone were its tier ``auto`` (``alone``): the keys, the source and the history
allow it, only the operator's tier holds it; ``report`` counts such incidents under
today's tiers (``guardrails/ladder.py`` suggests tiers from them).

Pure: a decision, the runbook's decision for the same finding, the configuration, the
recent failures and the finding's source in; the decision with its verdict out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from types import MappingProxyType

from agent.config import AgentConfig, Autonomy, FindingSource, autonomy_of
from agent.diagnosis.models import Decision
from agent.text import one_line

PASSIVE = frozenset({"none", "escalate"})
NO_FAILURES: Mapping[str, str] = MappingProxyType({})
#: The tier of (target, action) a verdict is computed with.
Tiers = Callable[[str | None, str], Autonomy]


def _acting(config: AgentConfig) -> Tiers:
    """The operator's tiers, ``observe`` judged as ``auto`` (held back afterwards)."""

    def tier(target: str | None, action: str) -> Autonomy:
        found = autonomy_of(config, target, action)
        return "auto" if found == "observe" else found

    return tier


def _lenient(_: AgentConfig) -> Tiers:
    """Every tier ``auto``: would anything but the operator's tier hold the action?"""

    def tier(target: str | None, action: str) -> Autonomy:
        return "auto"

    return tier


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


def _one_key(
    decision: Decision, config: AgentConfig, failures: Mapping[str, str], tiers: Tiers
) -> Decision:
    """A runbook-only decision: the operator's own key, within the action's tier."""
    action, target = decision.action, decision.target
    decision = replace(decision, keys=("runbook",), runbook_action=action)
    if action in PASSIVE:
        return decision
    tier = tiers(target, action)
    if tier == "never":
        return _refused(decision, action, target)
    if action in failures and _changing(config, action):
        return _ask(decision, action, target, f"repeat_failed: {failures[action]}")
    failed = decision.model_failure
    if failed and _changing(config, action) and config.policy.model_failure == "approve":
        why = (
            f"the model failed ({one_line(failed, 200)}): only the runbook's key turned, "
            f"so {action} on {target} waits for a human (policy.model_failure)"
        )
        return _ask(decision, action, target, why)
    if tier == "approve":
        return _ask(decision, action, target, f"{action} on {target} needs approval (autonomy)")
    if failed:
        return replace(
            decision,
            autonomy=f"the model failed; runbook only: {action} runs within its tier "
            "(policy.model_failure = runbook)",
        )
    return replace(decision, autonomy=f"runbook only: {action} runs within its tier (auto)")


def _model_acts(
    model: Decision, runbook: Decision, tiers: Tiers, failures: Mapping[str, str]
) -> Decision:
    """The model proposes a changing action: it runs alone only with the runbook's key."""
    action, target = model.action, model.target
    agree = runbook.action == action and runbook.target == target
    model = replace(model, keys=("model", "runbook") if agree else ("model",))
    tier = tiers(target, action)
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
    model: Decision,
    runbook: Decision,
    config: AgentConfig,
    failures: Mapping[str, str],
    tiers: Tiers,
) -> Decision:
    """The model proposes none, escalate or a read-only action."""
    action = model.action
    now = _read_only(model, tiers)
    if now.action == "escalate" and action != "escalate":
        return now  # the read-only step itself is refused
    if not _changing(config, runbook.action):
        return _not_silenced(now, runbook, tiers)
    wanted, where = runbook.action, runbook.target
    if tiers(where, wanted) == "never":
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


def _not_silenced(now: Decision, runbook: Decision, tiers: Tiers) -> Decision:
    """Where the runbook escalates or takes a read-only step and the model says ``none``,
    the runbook's step happens: humans are told, or the step runs within its tier."""
    if now.action != "none" or now.approval_action or runbook.action == "none":
        return now
    doubt = f"the model proposes none ({now.reason})" if now.reason else "the model proposes none"
    if runbook.action == "escalate":
        why = f"the runbook escalates, {doubt}: humans are told"
        return replace(
            now,
            action="escalate",
            actionable=True,
            keys=("runbook",),
            autonomy=why,
            reason=f"{runbook.reason}; {doubt}",
        )
    step = _read_only(replace(now, action=runbook.action, target=runbook.target), tiers)
    why = f"the runbook takes {runbook.action}, {doubt}: {step.autonomy}"
    return replace(step, actionable=True, keys=("runbook",), autonomy=why)


def _unconfirmed(decision: Decision, config: AgentConfig, source: FindingSource) -> Decision:
    """A changing action for a finding only Alertmanager reports waits for a human."""
    action, target = decision.action, decision.target
    if source != "alertmanager" or config.sweep.trust_alertmanager:
        return decision
    if not _changing(config, action):
        return decision
    why = (
        f"{action} on {target}: the finding rests on Alertmanager alone (no queried "
        "Prometheus reports it, and anyone who reaches Alertmanager's API can post an "
        "alert): a human decides (sweep.trust_alertmanager)"
    )
    return _ask(decision, action, target, why)


def _read_only(model: Decision, tiers: Tiers) -> Decision:
    """A passive or read-only proposal within its tier."""
    action, target = model.action, model.target
    decision = replace(model, keys=("model",))
    if action in PASSIVE:
        return replace(decision, autonomy=f"{action} runs alone")
    tier = tiers(target, action)
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
    *,
    source: FindingSource = "prometheus",
) -> Decision:
    """The decision with its autonomy verdict: what runs alone now (``action``), what waits
    for a human (``approval_action``), which keys turned for it (``keys``) and why.

    ``runbook`` is the runbook's decision for the same finding; ``failures`` maps an action
    to why it did not resolve this problem recently (the ``repeat_failed`` guardrail);
    ``source`` is who reported the finding.
    """
    if decision.decided_by == "prefilter":
        return decision
    decision = replace(decision, proposed=decision.action, runbook_rule=runbook.runbook_rule)
    verdict = _verdict(decision, runbook, config, failures, source, _acting(config))
    lenient = _verdict(decision, runbook, config, failures, source, _lenient(config))
    return _observe(replace(verdict, alone=not lenient.approval_action), config)


def _verdict(
    decision: Decision,
    runbook: Decision,
    config: AgentConfig,
    failures: Mapping[str, str],
    source: FindingSource,
    tiers: Tiers,
) -> Decision:
    """The verdict with ``tiers`` for the operator's tiers."""
    if decision.decided_by == "runbook":
        judged = _one_key(decision, config, failures, tiers)
    else:
        decision = replace(decision, runbook_action=runbook.action)
        if _changing(config, decision.action):
            judged = _model_acts(decision, runbook, tiers, failures)
        else:
            judged = _model_holds_back(decision, runbook, config, failures, tiers)
    return _unconfirmed(judged, config, source)


def _runbook_still_told(verdict: Decision, config: AgentConfig) -> Decision:
    """The ask an ``observe`` tier held back would have told humans; where the runbook
    says humans must see the finding (escalate) or look first (a read-only step in its
    own ``auto`` tier), that still happens: observing never silences the runbook."""
    runbook, target = verdict.runbook_action, verdict.target
    if verdict.action != "none" or not runbook or runbook in ("none",):
        return verdict
    if runbook == "escalate":
        return replace(
            verdict,
            action="escalate",
            actionable=True,
            autonomy=f"{verdict.autonomy}; the runbook escalates: humans are told",
        )
    if not _changing(config, runbook) and autonomy_of(config, target, runbook) == "auto":
        return replace(
            verdict,
            action=runbook,
            actionable=True,
            autonomy=f"{verdict.autonomy}; the runbook's {runbook} runs within its tier",
        )
    return verdict


def _observe(verdict: Decision, config: AgentConfig) -> Decision:
    """Hold back what an ``observe`` tier covers: the action that waits for a human (nobody
    is asked) or the one that would run alone (nothing is sent); a read-only step of
    another tier still runs first. What would have happened is recorded."""
    asked = verdict.approval_action
    where = verdict.approval_target or verdict.target
    if asked and autonomy_of(config, where, asked) == "observe":
        verdict = replace(
            verdict,
            approval_action="",
            approval_target="",
            observed_action=asked,
            observed_target=where or "",
            observed_would="ask",
        )
        verdict = replace(verdict, autonomy=f"observe: {verdict.observed} ({verdict.autonomy})")
        verdict = _runbook_still_told(verdict, config)
    now, target = verdict.action, verdict.target
    if now in PASSIVE or autonomy_of(config, target, now) != "observe":
        return verdict
    if verdict.observed_action or verdict.approval_action:
        why = f"{verdict.autonomy}; {now} on {target} is observed too: not run"
        return replace(verdict, action="none", autonomy=why)
    verdict = replace(
        verdict,
        action="none",
        observed_action=now,
        observed_target=target or "",
        observed_would="send",
    )
    return replace(verdict, autonomy=f"observe: {verdict.observed} ({verdict.autonomy})")
