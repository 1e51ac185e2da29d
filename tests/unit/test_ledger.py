"""The outcome ledger from tables: the record an ended incident leaves, the report folded
from records, the tiers the evidence supports, and the durations ``--since`` takes."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent.config import AgentConfig, Autonomy
from agent.console.charts import daily_bars, recovery_bars
from agent.diagnosis.models import Decision
from agent.guardrails.ladder import suggest, toml_for
from agent.incidents.lifecycle import on_finding
from agent.incidents.model import Event, Incident
from agent.ledger.record import Outcome, loads, outcome_of
from agent.ledger.report import fold, quantile, recurrences
from agent.reporting import BadDuration, parse_duration
from tests.conftest import alert_finding, make_config

T0 = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
MP, CA = "market-predictor", "coding-ai-agent"
RESTART = Decision(
    "restart",
    MP,
    "llm",
    True,
    keys=("model", "runbook"),
    proposed="restart",
    runbook_action="restart",
    runbook_rule="memory",
    alone=True,
)


def _incident(**changes: Any) -> Incident:
    opened = on_finding(alert_finding("MemoryLeak", MP, first_seen=T0), "inc0001", T0).incident
    return replace(opened, updated_at=T0 + timedelta(minutes=5), **changes)


def _decided(at: datetime, usage: dict[str, Any] | None = None, cost: Any = 0.0) -> Event:
    data = {"usage": usage or {}, "cost": cost}
    return Event(at, "decision", data)


ASKED = Event(T0 + timedelta(seconds=10), "transition", {"to": "awaiting_approval"})
ANSWERED = Event(T0 + timedelta(seconds=70), "approval", {"result": "granted"})
USAGE = {
    "triage": {"calls": 1, "prompt_tokens": 300, "completion_tokens": 20},
    "plan": {"calls": 2, "prompt_tokens": 700, "completion_tokens": 80},
}


@pytest.mark.parametrize(
    ("changes", "events", "approval", "expected"),
    [
        # sent alone, verified recovered
        (
            {"state": "resolved", "acted_at": T0, "decision": RESTART},
            [_decided(T0, USAGE, 0.01)],
            None,
            {
                "result": "sent",
                "verification": "recovered",
                "recovery_seconds": 300.0,
                "model_calls": 3,
                "prompt_tokens": 1000,
                "completion_tokens": 100,
                "cost": 0.01,
                "alone": True,
                "rule": "memory",
            },
        ),
        # approved after a minute, then not recovered
        (
            {
                "state": "escalated",
                "acted_at": T0,
                "resolution": "not recovered 60s after restart",
                "decision": replace(RESTART, approved_by="alice", keys=("runbook", "human")),
            },
            [_decided(T0), ASKED, ANSWERED],
            "granted",
            {"result": "approved", "verification": "not_recovered", "approval_seconds": 60.0},
        ),
        # denied: the action is the one that waited, never verified
        (
            {
                "state": "escalated",
                "decision": replace(RESTART, action="none", approval_action="restart"),
            },
            [_decided(T0), ASKED, replace(ANSWERED, data={"result": "denied"})],
            "denied",
            {"result": "denied", "action": "restart", "verification": None},
        ),
        ({"state": "escalated", "decision": RESTART}, [], "expired", {"result": "expired"}),
        ({"state": "skipped", "decision": RESTART}, [], "cleared", {"result": "cleared"}),
        # decided, never sent, cleared before anything could be
        (
            {"state": "skipped", "decision": RESTART, "cleared_at": T0 + timedelta(minutes=5)},
            [],
            None,
            {"result": "cleared"},
        ),
        # a final guardrail (dry run, a stale incident, an open breaker)
        ({"state": "skipped", "decision": RESTART}, [], None, {"result": "blocked"}),
        # nothing to do
        (
            {"state": "skipped", "decision": replace(RESTART, action="none")},
            [],
            None,
            {"result": "none", "action": "none"},
        ),
        # observed: the action held back, the watch's end, time to clearing
        (
            {
                "state": "skipped",
                "cleared_at": T0 + timedelta(minutes=5),
                "decision": replace(
                    RESTART,
                    action="none",
                    observed_action="restart",
                    observed_target=MP,
                    observed_would="send",
                ),
            },
            [Event(T0, "transition", {"to": "skipped", "watch": "cleared_alone"})],
            None,
            {"result": "observed", "watch": "cleared_alone", "recovery_seconds": 300.0},
        ),
        # a model whose price is unknown: the cost is unknown, not zero
        (
            {"state": "skipped", "decision": replace(RESTART, action="none")},
            [_decided(T0, USAGE, None)],
            None,
            {"cost": None, "prompt_tokens": 1000},
        ),
        # no decision at all (a failure before one)
        ({"state": "escalated"}, [], None, {"result": "none", "decided_by": "", "keys": ()}),
    ],
)
def test_the_record_an_incident_leaves(
    changes: dict[str, Any], events: list[Event], approval: str | None, expected: dict[str, Any]
) -> None:
    """outcome_of reads the ended incident and its timeline into one typed record."""
    outcome = outcome_of(_incident(**changes), events, approval)
    got = {k: getattr(outcome, k) for k in expected}
    assert got == expected
    assert loads(outcome.dumps()) == outcome


@pytest.mark.parametrize(
    "change",
    [
        {"incident_id": 3},
        {"result": "exploded"},
        {"opened_at": "yesterday"},
        {"keys": "model"},
        {"prompt_tokens": -1},
        {"cost": "cheap"},
        {"service": None},
    ],
)
def test_a_record_that_cannot_be_read_is_refused(change: dict[str, Any]) -> None:
    """loads raises ValueError (never anything else) for what is not a record."""
    data = {**outcome_of(_incident(state="skipped"), [], None).to_dict(), **change}
    with pytest.raises(ValueError):
        loads(json.dumps(data))
    for text in ("[]", "{}", "not json"):
        with pytest.raises(ValueError):
            loads(text)


def _o(n: int, **kw: Any) -> Outcome:
    """A record of incident n, ended n hours after T0, restart on market-predictor."""
    base = Outcome(
        incident_id=f"i{n}",
        group_key=kw.pop("group_key", f"g{n}"),
        opened_at=T0 + timedelta(hours=n),
        ended_at=T0 + timedelta(hours=n, minutes=5),
        service=MP,
        name="MemoryLeak",
        kind="alert",
        source="prometheus",
        rule="memory",
        action="restart",
        decided_by="llm",
        keys=("model", "runbook"),
        result="sent",
        proposed="restart",
        runbook_action="restart",
        alone=True,
    )
    return replace(base, **kw)


def _fold(
    outcomes: list[Outcome],
    openings: list[tuple[str, datetime]] | None = None,
    tier: Autonomy = "approve",
    **kw: Any,
) -> Any:
    config = make_config()
    return fold(
        outcomes,
        openings or [(o.group_key, o.opened_at) for o in outcomes],
        since=T0,
        until=T0 + timedelta(days=2),
        tier_of=lambda s, a: tier,
        services=config.services,
        recurrence_seconds=3600,
        **kw,
    )


def test_the_fold_counts_rates_and_quantiles() -> None:
    """Rows per (service, action) and per finding: counts by result, success after acting,
    time to recovery p50/p90, answer latency, agreement, tokens and cost per recovery."""
    outcomes = [
        _o(0, verification="recovered", recovery_seconds=100, prompt_tokens=900, cost=0.02),
        _o(1, verification="recovered", recovery_seconds=300, completion_tokens=100, cost=0.02),
        _o(2, verification="not_recovered"),
        _o(
            3,
            result="approved",
            verification="recovered",
            recovery_seconds=200,
            approval_seconds=40,
        ),
        _o(4, result="denied", approval_seconds=20, proposed="none"),
        _o(5, result="observed", watch="persisted"),
        _o(6, result="observed", watch="cleared_alone", recovery_seconds=50),
        _o(7, service=CA, action="collect_logs", decided_by="runbook", result="sent"),
    ]
    report = _fold(outcomes, tier="auto")
    rows = {(r.service, r.action): r.to_dict() for r in report.rows}
    mp = rows[(MP, "restart")]
    assert (mp["incidents"], mp["sent"], mp["approved"], mp["denied"], mp["observed"]) == (
        7,
        3,
        1,
        1,
        2,
    )
    assert mp["success_rate"] == 3 / 4
    assert (mp["time_to_recovery_p50_seconds"], mp["time_to_recovery_p90_seconds"]) == (
        100,
        300,
    )
    assert mp["approval_latency_p50_seconds"] == 20
    assert mp["agreement_rate"] == 6 / 7
    assert (mp["tokens_per_recovery"], mp["cost_per_recovery"]) == (1000 / 3, 0.04 / 3)
    assert (mp["observed_persisted_rate"], mp["observed_cleared_alone_rate"]) == (0.5, 0.5)
    assert mp["alone_today"] == 7 and mp["tier"] == "auto" and mp["configured"]
    assert rows[(CA, "collect_logs")]["agreement_rate"] is None
    assert [r.name for r in report.by_name] == ["MemoryLeak"]
    assert report.by_name[0].tally.incidents == 8
    assert report.per_day == {"2026-11-24": {MP: 7, CA: 1}}


def test_an_unknown_price_makes_the_cost_unknown_and_old_names_stay() -> None:
    """One record without a cost makes the row's cost unknown, never zero; a service no
    longer configured keeps its row, marked so; --service keeps one service."""
    report = _fold(
        [
            _o(0, verification="recovered", prompt_tokens=10, cost=None),
            _o(1, service="old-name", verification="recovered"),
        ]
    )
    rows = {r.service: r.to_dict() for r in report.rows}
    assert rows[MP]["cost"] is None and rows[MP]["cost_per_recovery"] is None
    assert rows["old-name"]["configured"] is False
    assert rows[MP]["alone_today"] == 0  # approve today: nothing would run alone
    only = _fold([_o(0), _o(1, service="old-name")], service="old-name")
    assert [r.service for r in only.rows] == ["old-name"]


def test_a_recurrence_is_the_next_incident_of_the_same_problem() -> None:
    """The next incident of the group opening within recurrence_seconds of the end (even
    one still open) is a recurrence; later, or of another group, it is not."""
    first = _o(0, group_key="g", verification="recovered")
    back_soon = ("g", first.ended_at + timedelta(minutes=30))
    back_late = ("g", first.ended_at + timedelta(hours=2))
    other = ("h", first.ended_at + timedelta(minutes=1))
    assert recurrences([first], [back_soon], 3600) == {"i0"}
    assert recurrences([first], [back_late, other], 3600) == set()
    report = _fold([first], [("g", first.opened_at), back_soon])
    assert report.rows[0].to_dict()["recurrence_rate"] == 1.0


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([], 0.5, None), ([7.0], 0.9, 7.0), ([1, 2, 3, 4], 0.5, 2), ([1, 2, 3, 4, 5], 0.9, 5)],
)
def test_quantile(values: list[float], q: float, expected: float | None) -> None:
    """Nearest-rank quantiles; none of nothing."""
    assert quantile(values, q) == expected


def _config(restart: str) -> AgentConfig:
    return make_config(
        services={
            MP: {
                "actions": ["restart", "collect_logs"],
                "autonomy": {"restart": restart, "collect_logs": "auto"},
            },
            CA: {"actions": ["restart"]},
        }
    )


def _suggest(outcomes: list[Outcome], restart: str, openings: Any = None) -> list[Any]:
    config = _config(restart)
    from agent.config import autonomy_of

    report = fold(
        outcomes,
        openings if openings is not None else [(o.group_key, o.opened_at) for o in outcomes],
        since=T0,
        until=T0 + timedelta(days=2),
        tier_of=lambda s, a: autonomy_of(config, s, a),
        services=config.services,
        recurrence_seconds=config.policy.recurrence_seconds,
    )
    return [s.to_dict() for s in suggest(report.rows, config)]


HEALED = [_o(n, result="approved", verification="recovered") for n in range(5)]
TOML_AUTO = '[services.market-predictor]\nautonomy = { restart = "auto", collect_logs = "auto" }'


@pytest.mark.parametrize(
    ("outcomes", "tier", "expected"),
    [
        # five approvals that healed: promote to auto, with the line to paste
        (HEALED, "approve", [("approve", "auto", "5 approved restart healed")]),
        # four are not enough
        (HEALED[:4], "approve", []),
        # one denial holds the promotion back
        ([*HEALED, _o(9, result="denied")], "approve", []),
        # observed problems that persisted where the runbook says restart
        (
            [_o(n, result="observed", watch="persisted") for n in range(5)],
            "observe",
            [("observe", "auto", "5 observed restart persisted")],
        ),
        # ... but not those that cleared by themselves
        ([_o(n, result="observed", watch="cleared_alone") for n in range(5)], "observe", []),
        # sent alone and failing: demote to approve
        (
            [_o(0, verification="not_recovered"), _o(1, verification="recovered")],
            "auto",
            [("auto", "approve", "1 of 2 restart sent alone")],
        ),
        # sent alone and healing: nothing to say
        ([_o(n, verification="recovered") for n in range(4)], "auto", []),
        # never is the operator's: no suggestion
        ([*HEALED], "never", []),
    ],
)
def test_the_ladder_suggests_from_evidence(
    outcomes: list[Outcome], tier: str, expected: list[tuple[str, str, str]]
) -> None:
    """promote_after healed approvals (or persisting observations the runbook agreed with),
    no denial, no recurrence: auto; failures or recurrences above demote_share: approve."""
    found = _suggest(outcomes, tier)
    assert [(s["from"], s["to"]) for s in found] == [(f, t) for f, t, _ in expected]
    for got, (_, to, evidence) in zip(found, expected, strict=True):
        assert got["service"] == MP and got["action"] == "restart"
        assert evidence in got["evidence"]
        assert got["toml"] == TOML_AUTO.replace('restart = "auto"', f'restart = "{to}"')


def test_a_recurrence_holds_a_promotion_back_and_unknown_services_get_none() -> None:
    """A healed approval whose problem came back within the hour is no evidence for auto;
    a service no longer configured keeps its rows but gets no suggestion."""
    back = [("g0", HEALED[0].ended_at + timedelta(minutes=5))]
    healed = [replace(o, group_key=f"g{i}") for i, o in enumerate(HEALED)]
    openings = [(o.group_key, o.opened_at) for o in healed] + back
    assert _suggest(healed, "approve", openings) == []
    assert _suggest([replace(o, service="gone") for o in HEALED], "approve") == []


def test_the_toml_line_keeps_other_overrides_and_quotes_odd_names() -> None:
    """The line to paste keeps the service's other tiers; odd names are quoted."""
    config = make_config(
        services={"svc.one": {"actions": ["restart", "stop"], "autonomy": {"stop": "never"}}}
    )
    assert toml_for(config, "svc.one", "restart", "auto") == (
        '[services."svc.one"]\nautonomy = { stop = "never", restart = "auto" }'
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90m", 5400),
        ("7d", 604800),
        ("1h30m", 5400),
        ("2w", 1209600),
        ("1y", 31536000),
        ("500ms", 0.5),
    ],
)
def test_since_takes_prometheus_durations(text: str, seconds: float) -> None:
    """Prometheus-style durations, units combined."""
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "7", "7x", "d7", "-1d", "0d", "7 d", "1.5h", "30y", "7d;"])
def test_since_refuses_anything_else(text: str) -> None:
    """Anything but a positive duration of at most 20y is refused with one line."""
    with pytest.raises(BadDuration) as caught:
        parse_duration(text)
    assert "\n" not in str(caught.value) and "--since" in str(caught.value)


def test_the_charts_escape_labels_and_draw_one_bar_per_value() -> None:
    """Stacked daily bars and recovery bars: labels escaped, one rect per nonzero value,
    nothing drawn without data."""
    svg = daily_bars(
        {"2026-11-23": {"<b>": 2, MP: 1}, "2026-11-24": {MP: 3}},
        T0.date() - timedelta(days=2),
        T0.date(),
    )
    assert "<b>" not in svg and "&lt;b&gt;" in svg
    assert svg.count("<rect") == 1 + 3 + 2  # frame, bars, legend
    assert daily_bars({}, T0.date(), T0.date()) == ""
    bars = recovery_bars([("mp <restart>", 60.0, 240.0), ("ca start", None, None)])
    assert "mp &lt;restart&gt;" in bars and "ca start" not in bars
    assert bars.count('class="p50"') == 1 and bars.count('class="p90"') == 1
    assert recovery_bars([("x", None, None)]) == ""
