"""The ``repeat_failed`` guardrail: an action that did not fix this problem is not tried
again on its own.

A changing action did not resolve the problem when verification said so (the incident
escalated "not recovered"), or when the problem came back within
``policy.recurrence_seconds`` of a success. Such an action never runs alone again within
the history window: it waits for a human, with the history named in the reason (see
``guardrails/autonomy.py``). Pure: past incidents in, one reason per failed action out.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.incidents.history import PastIncident


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def repeat_failures(history: Sequence[PastIncident], recurrence_seconds: float) -> dict[str, str]:
    """For each changing action that did not resolve this problem in the window, why
    (the newest such incident named)."""
    failed: dict[str, str] = {}
    for past in history:  # newest first: the first reason found for an action is kept
        for sent in past.sent:
            if not sent.mutating or sent.action in failed:
                continue
            when = f"{past.opened_at:%Y-%m-%d %H:%M}Z (incident {past.id})"
            if past.verified is False:
                failed[sent.action] = f"{sent.action} at {when} did not resolve it"
            elif (
                past.verified
                and past.quiet_seconds is not None
                and past.quiet_seconds < recurrence_seconds
            ):
                failed[sent.action] = (
                    f"{sent.action} at {when} resolved it, but it was back "
                    f"{_minutes(past.quiet_seconds)} later "
                    f"(policy.recurrence_seconds {recurrence_seconds:g}s)"
                )
    return failed
