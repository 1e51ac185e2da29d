"""The evaluation report: a table for a terminal, a JSON document for machines."""

from __future__ import annotations

from typing import Any

from agent.eval.runner import CaseResult, EvalResult
from agent.eval.scoring import Tally, verdict
from agent.text import one_line


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def per_incident(
    tally: Tally, prices: tuple[float | None, float | None]
) -> tuple[float | None, float | None]:
    """What one incident (one run) cost, and how long its diagnosis and dispatch took, on
    average: None without runs (cost: without prices)."""
    if not tally.runs:
        return None, None
    cost = tally.cost(*prices)
    return (
        None if cost is None else cost / tally.runs,
        sum(tally.latencies) / tally.runs,
    )


def _tally_dict(tally: Tally, prices: tuple[float | None, float | None]) -> dict[str, Any]:
    cost_each, latency_each = per_incident(tally, prices)
    return {
        "cost_per_incident": cost_each,
        "latency_per_incident_seconds": (None if latency_each is None else round(latency_each, 4)),
        "runs": tally.runs,
        "scored": tally.scored,
        "passed": tally.passed,
        "pass_rate": tally.pass_rate,
        "right_action_rate": tally.right_rate,
        "held_for_approval": tally.held,
        "held_for_approval_rate": tally.held_rate,
        "asked_forbidden": tally.asked_forbidden,
        "unsafe": tally.unsafe,
        "escalation_precision": tally.escalation_precision,
        "escalation_recall": tally.escalation_recall,
        "runbook_fallbacks": tally.fallbacks,
        "errors": tally.errors,
        "model_calls": tally.model_calls,
        "prompt_tokens": tally.prompt_tokens,
        "completion_tokens": tally.completion_tokens,
        "latency_p50_seconds": round(tally.latency(0.5), 4),
        "latency_p95_seconds": round(tally.latency(0.95), 4),
        "model_seconds_p50": round(tally.model_time(0.5), 4),
        "model_seconds_p95": round(tally.model_time(0.95), 4),
        "model_wait_seconds_p50": round(tally.model_wait(0.5), 4),
        "model_wait_seconds_p95": round(tally.model_wait(0.95), 4),
        "cost": tally.cost(*prices),
    }


def as_json(
    result: EvalResult, min_pass: float, prices: tuple[float | None, float | None]
) -> dict[str, Any]:
    """The whole report as one JSON document."""
    total = result.total()
    ok, why = verdict(total, min_pass)
    return {
        "model": result.model,
        "passed": ok,
        "verdict": why,
        "min_pass": min_pass,
        "concurrency": result.concurrency,
        "model_slots": result.model_slots,
        "warnings": result.warnings,
        "wall_seconds": round(result.wall_seconds, 3),
        "overall": _tally_dict(total, prices),
        "cases": [
            {
                "id": entry.loaded.case.id,
                "file": str(entry.loaded.path),
                "expected": entry.loaded.case.expect.actions,
                "confirmed": entry.loaded.case.expect.confirmed,
                **_tally_dict(entry.tally(), prices),
                "runs": [
                    {
                        "iteration": outcome.iteration,
                        "did": outcome.action,
                        "target": outcome.target,
                        "held_for_approval": outcome.held,
                        "awaiting": outcome.awaiting,
                        "asked_forbidden": scored.asked_forbidden,
                        "autonomy": outcome.autonomy,
                        "read_logs": [list(r) for r in outcome.reads],
                        "sent": [list(s) for s in outcome.sent],
                        "decided_by": outcome.decided_by,
                        "state": outcome.final_state,
                        "passed": scored.passed,
                        "unsafe": scored.unsafe,
                        "why": scored.why,
                        "model_calls": outcome.model_calls,
                        "latency_seconds": round(outcome.latency_seconds, 4),
                        "model_seconds": round(outcome.model_seconds, 4),
                        "model_wait_seconds": round(outcome.model_wait_seconds, 4),
                    }
                    for outcome, scored in entry.runs
                ],
            }
            for entry in result.cases
        ],
    }


HEADER = (
    "case",
    "expected",
    "did",
    "pass",
    "held",
    "asked forbidden",
    "unsafe",
    "calls",
    "tokens",
    "model s",
    "wait s",
    "why",
)


def _row(entry: CaseResult) -> tuple[str, ...]:
    """One case's line: what it expects, what was done, and the p50 of the model's own
    time and of the wait for it (over the runs that called the model)."""
    tally = entry.tally()
    case = entry.loaded.case
    did = sorted({o.did for o, _ in entry.runs})
    whys = sorted({s.why for _, s in entry.runs if not s.passed})
    return (
        case.id,
        "/".join(case.expect.actions) + ("" if case.expect.confirmed else " (unconfirmed)"),
        ", ".join(did),
        f"{tally.passed}/{tally.scored}" if tally.scored else "-",
        str(tally.held),
        str(tally.asked_forbidden),
        str(tally.unsafe),
        str(tally.model_calls),
        str(tally.prompt_tokens + tally.completion_tokens),
        f"{tally.model_time(0.5):.2f}",
        f"{tally.model_wait(0.5):.2f}",
        one_line("; ".join(whys), 70) if whys else "",
    )


def _totals(
    result: EvalResult, min_pass: float, prices: tuple[float | None, float | None]
) -> list[str]:
    total = result.total()
    ok, why = verdict(total, min_pass)
    cost = total.cost(*prices)
    cost_each, latency_each = per_incident(total, prices)
    slots = "no limit" if result.model_slots is None else str(result.model_slots)
    return [
        f"model: {result.model}   runs: {total.runs}   concurrency: {result.concurrency}   "
        f"model slots: {slots}   wall time: {result.wall_seconds:.1f}s",
        f"pass rate: {_pct(total.pass_rate)} ({total.passed}/{total.scored} scored runs)   "
        f"right action: {_pct(total.right_rate)}   held for approval: {total.held} "
        f"({_pct(total.held_rate)})   asked forbidden: {total.asked_forbidden}   "
        f"unsafe: {total.unsafe}",
        f"per incident: cost {'unknown (no prices)' if cost_each is None else f'{cost_each:.6f}'}"
        f", latency {0.0 if latency_each is None else latency_each:.2f}s",
        f"escalation precision: {_pct(total.escalation_precision)}   "
        f"recall: {_pct(total.escalation_recall)}   runbook fallbacks: {total.fallbacks}   "
        f"errors: {total.errors}",
        f"model calls: {total.model_calls}   tokens: {total.prompt_tokens} prompt + "
        f"{total.completion_tokens} completion" + ("" if cost is None else f"   cost: {cost:.4f}"),
        f"model time per diagnosis p50 {total.model_time(0.5):.2f}s "
        f"p95 {total.model_time(0.95):.2f}s   waiting for the model p50 "
        f"{total.model_wait(0.5):.2f}s p95 {total.model_wait(0.95):.2f}s   "
        f"whole run p50 {total.latency(0.5):.2f}s p95 {total.latency(0.95):.2f}s",
        *(f"warning: {w}" for w in result.warnings),
        f"{'PASS' if ok else 'FAIL'}: {why}",
    ]


def as_table(result: EvalResult, min_pass: float, prices: tuple[float | None, float | None]) -> str:
    """The report as a readable table, one row per case, then the totals."""
    rows = [HEADER, *(_row(entry) for entry in result.cases)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([*lines, "", *_totals(result, min_pass, prices)])
