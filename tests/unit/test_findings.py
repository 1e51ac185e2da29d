"""Findings: fingerprints, targets, severities and alert parsing from tables of odd input."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from agent.config import Severity
from agent.sweep.alerts import (
    alerts_from_payload,
    match_suppression,
    new_from_alertmanager,
    parse_alertmanager_alerts,
    parse_alerts,
    parse_suppressions,
)
from agent.sweep.findings import (
    canonical_json,
    dedupe,
    fingerprint,
    parse_severity,
    parse_value,
    resolve_target,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TARGETS = ["service", "container", "name", "job"]
VOLATILE = ["alertstate", "__name__"]


def _alert(state: str = "firing", **labels: Any) -> dict[str, Any]:
    return {
        "labels": {"alertname": "MemoryLeak", "service": "market-predictor", **labels},
        "annotations": {"summary": "memory grows"},
        "state": state,
        "activeAt": "2026-11-23T11:58:00.5Z",
        "value": "4.2e+01",
    }


def _parse(alerts: list[Any]) -> Any:
    return parse_alerts(alerts, now=NOW, target_labels=TARGETS, volatile_labels=VOLATILE)


def test_fingerprint_ignores_volatile_labels_and_label_order() -> None:
    """Volatile labels and dict order do not change a fingerprint; identifying labels do."""
    a = fingerprint("alert", "X", {"a": "1", "b": "2", "alertstate": "firing"}, VOLATILE)
    b = fingerprint("alert", "X", {"b": "2", "a": "1", "alertstate": "pending"}, VOLATILE)
    c = fingerprint("alert", "X", {"a": "1", "b": "3"}, VOLATILE)
    assert a == b != c
    assert fingerprint("health", "X", {"a": "1", "b": "2"}, VOLATILE) != a


def test_fingerprint_has_a_fixed_value() -> None:
    """Fingerprints are pinned: an orjson or xxhash upgrade that changed one would split
    every open incident in two, so it has to fail here first."""
    labels = {"service": "api", "alertstate": "firing", "pod": 'é\n"x'}
    assert (
        fingerprint("alert", "MemoryLeak", labels, VOLATILE) == "0f7d1ee81271ab94ef08e1c0da1361e7"
    )
    # A lone surrogate takes the standard-library encoder; that value is pinned too.
    assert fingerprint("alert", "A", {"x": "\ud800"}, []) == "cc5e60984b01d1aa48a46d0b88c0f4dd"


ODD_TEXT = [
    "",
    "plain",
    'quote " and \\ backslash',
    "new\nline\ttab\rcr\bbs\fff",
    "\x00\x01\x1f\x7f\x80\x9f",
    "é ☃ 😀 𝄞",
    "\u2028\u2029\ufeff\ufffd\uffff\U0010ffff",
    "</script>&<>'",
    "x" * 10_000,
]


@pytest.mark.parametrize("text", ODD_TEXT)
def test_orjson_writes_the_reference_canonical_text(text: str) -> None:
    """The fast encoder gives byte for byte the standard library's canonical JSON."""
    labels = {text: text, "a": text, "z" + text: "v", "": ""}
    fast = orjson.dumps(("alert", text, labels), option=orjson.OPT_SORT_KEYS)
    assert fast == canonical_json("alert", text, labels).encode()


def test_orjson_matches_the_reference_on_random_text() -> None:
    """Random label maps over control, Latin, BMP and astral characters: same bytes."""
    rng = random.Random(20261123)
    alphabet = [chr(c) for c in [*range(0x80), 0xA0, 0xE9, 0x7FF, 0x800, 0x2028, 0xFFFF, 0x1F600]]
    for _ in range(3000):
        labels = {
            "".join(rng.choices(alphabet, k=rng.randint(0, 4))): "".join(
                rng.choices(alphabet, k=rng.randint(0, 8))
            )
            for _ in range(rng.randint(0, 6))
        }
        fast = orjson.dumps(("health", "N", labels), option=orjson.OPT_SORT_KEYS)
        assert fast == canonical_json("health", "N", labels).encode(), labels


@pytest.mark.parametrize(
    ("labels_a", "labels_b"),
    [
        ({"a": "1b=2"}, {"a": "1", "b": "2"}),  # separators inside values cannot collide
        ({"ab": "c"}, {"a": "bc"}),
        ({"a": ""}, {}),
    ],
)
def test_fingerprint_has_no_separator_collisions(
    labels_a: dict[str, str], labels_b: dict[str, str]
) -> None:
    """Label sets that would concatenate to the same text get different fingerprints."""
    assert fingerprint("alert", "N", labels_a, []) != fingerprint("alert", "N", labels_b, [])


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"service": "svc", "job": "j"}, "svc"),
        ({"service": "", "container": "c"}, "c"),
        ({"job": "j"}, "j"),
        ({"instance": "x"}, None),
    ],
)
def test_resolve_target_follows_label_order(labels: dict[str, str], expected: str | None) -> None:
    """The first non-empty label in the configured order names the service."""
    assert resolve_target(labels, TARGETS) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("critical", Severity.critical),
        ("CRITICAL ", Severity.critical),
        ("page", Severity.critical),
        ("warn", Severity.warning),
        ("info", Severity.info),
        ("bogus", Severity.warning),
        (None, Severity.warning),
        (3, Severity.warning),
    ],
)
def test_parse_severity(raw: object, expected: Severity) -> None:
    """Severity labels map onto three levels; anything else is a warning."""
    assert parse_severity(raw) is expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1e+00", 1.0),
        ("42", 42.0),
        (7, 7.0),
        ("+Inf", math.inf),
        ("x", None),
        (None, None),
        (True, None),
    ],
)
def test_parse_value(raw: object, expected: float | None) -> None:
    """Sample values arrive as strings; unreadable ones become None."""
    assert parse_value(raw) == expected


def test_parse_value_nan() -> None:
    """NaN is a valid sample value and stays NaN."""
    value = parse_value("NaN")
    assert value is not None and math.isnan(value)


def test_firing_alert_becomes_finding() -> None:
    """A firing alert carries name, target, severity, labels, annotations, value, activeAt."""
    parsed = _parse([_alert(severity="critical")])
    [finding] = parsed.findings
    assert finding.kind == "alert"
    assert finding.name == "MemoryLeak"
    assert finding.target == "market-predictor"
    assert finding.severity is Severity.critical
    assert finding.annotations == {"summary": "memory grows"}
    assert finding.value == 42.0
    assert finding.first_seen == datetime(2026, 11, 23, 11, 58, 0, 500000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("entry", "malformed"),
    [
        (_alert(state="pending"), 0),
        (_alert(state="inactive"), 0),
        (_alert(state="weird"), 1),
        ({"state": "firing"}, 1),  # no labels
        ({"state": "firing", "labels": {"severity": "x"}}, 1),  # no alertname
        ({"state": "firing", "labels": "nope"}, 1),
        ("not a dict", 1),
        (None, 1),
    ],
)
def test_unusable_alert_entries_are_counted_not_raised(entry: Any, malformed: int) -> None:
    """Pending and inactive entries yield no finding; malformed ones are counted, not raised."""
    parsed = _parse([entry])
    assert parsed.findings == []
    assert parsed.malformed == malformed


def test_odd_fields_still_parse() -> None:
    """Missing annotations, a bad activeAt, a non-string label and a NaN value are tolerated."""
    entry = {
        "state": "firing",
        "labels": {"alertname": "A", "job": 5},
        "activeAt": "yesterday",
        "value": "NaN",
    }
    [finding] = _parse([entry]).findings
    assert finding.annotations == {}
    assert finding.first_seen == NOW
    assert finding.target == "5"
    assert finding.value is not None and math.isnan(finding.value)


def test_untrusted_label_values_survive() -> None:
    """Unicode, quotes, newlines and 10 kB values parse and fingerprint without trouble."""
    huge = "x" * 10_000
    entry = _alert(service='sérvice "quoted"\nnew line ☃', blob=huge)
    [finding] = _parse([entry]).findings
    assert finding.target == 'sérvice "quoted"\nnew line ☃'
    assert finding.labels["blob"] == huge
    # pinned: the same labels must give the same fingerprint on every machine and release
    assert finding.fingerprint == "b4f95926cddd3457011e52d23294fd69"
    assert finding.to_dict()["labels"]["blob"] == huge  # type: ignore[index]


def test_lone_surrogate_does_not_break_fingerprint() -> None:
    """A label value with a lone surrogate (possible from JSON) still fingerprints, to the
    pinned value, and differs from the replacement character's."""
    assert fingerprint("alert", "A", {"x": "\ud800"}, []) == "cc5e60984b01d1aa48a46d0b88c0f4dd"
    assert fingerprint("alert", "A", {"x": "\ufffd"}, []) != fingerprint(
        "alert", "A", {"x": "\ud800"}, []
    )


@pytest.mark.parametrize(
    "payload",
    [
        {"status": "error", "errorType": "bad_data", "error": "boom"},
        {"status": "success", "data": {}},
        {"status": "success", "data": {"alerts": "x"}},
        [],
        None,
        "<html>",
    ],
)
def test_error_envelopes_raise_value_error(payload: object) -> None:
    """An envelope without an alerts list is a ValueError for the sweep to record."""
    with pytest.raises(ValueError):
        alerts_from_payload(payload)


def test_empty_alert_list_is_fine() -> None:
    """A success envelope with no alerts yields no findings."""
    assert _parse(alerts_from_payload({"status": "success", "data": {"alerts": []}})).findings == []


def test_dedupe_keeps_earliest() -> None:
    """Duplicate fingerprints collapse into one finding with the earliest first-seen."""
    early = dict(_alert(), activeAt="2026-11-23T10:00:00Z")
    parsed = _parse([_alert(), early, _alert(alertstate="firing")])
    [finding] = dedupe(parsed.findings)
    assert finding.first_seen.hour == 10


def _storm(n: int) -> list[dict[str, Any]]:
    """A varied payload: target fallbacks, missing severity, volatile labels, unicode,
    pending and inactive entries, and duplicates that differ only in a volatile label."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        labels = {"alertname": f"Alert{i % 7}", "instance": f"10.0.0.{i % 9}:9100 ☃"}
        labels |= [
            {"service": f"svc-{i % 5}"},
            {"service": "", "container": f"c-{i % 3}"},
            {"job": "node"},
            {"service": "", "job": ""},
            {},
        ][i % 5]
        if i % 3:
            labels["severity"] = ["critical", "WARN", "page", "bogus"][i % 4]
        if i % 5 == 0:
            labels["alertstate"] = "firing"
        entry = {
            "labels": labels,
            "annotations": {"summary": f"trouble {i}", "q": 'a "b"\n'} if i % 2 else {},
            "state": ["firing", "firing", "pending", "firing", "inactive", "firing"][i % 6],
            "activeAt": f"2026-11-23T11:5{i % 4}:00.123456789Z",
            "value": f"{i}e-01",
        }
        out.append(entry)
        if i % 11 == 0:  # the same alert again, seen earlier and without alertstate
            twin = {"alertstate": "pending"} | {
                k: v for k, v in labels.items() if k != "alertstate"
            }
            out.append(entry | {"labels": twin, "activeAt": "2026-11-23T09:00:00Z"})
    return out


def test_storm_parse_dedupes_and_counts() -> None:
    """A varied storm keeps firing entries only, falls back through the target labels,
    folds severity spellings, and collapses volatile-label twins with the earliest time."""
    payload = _storm(400)
    parsed = _parse(payload)
    firing = [e for e in payload if e["state"] == "firing"]
    assert len(parsed.findings) == len(firing) and parsed.malformed == 0
    by_target = {f.target for f in parsed.findings}
    assert {"svc-0", "c-0", "node", None} <= by_target
    deduped = dedupe(parsed.findings)
    assert len(deduped) < len(parsed.findings)
    twins = [f for f in deduped if f.first_seen.hour == 9]
    assert twins, "the earlier twin's activeAt wins"
    mixed = _parse([*payload, None])
    assert mixed.findings == parsed.findings and mixed.malformed == 1


def test_parse_leaves_labels_untouched() -> None:
    """Volatile labels stay on the finding and in the payload; only the fingerprint skips them."""
    payload = _storm(20)
    before = [dict(e["labels"]) for e in payload]
    findings = _parse(payload).findings
    assert [e["labels"] for e in payload] == before
    assert any("alertstate" in f.labels for f in findings)


def test_suppression_matches_label_subset() -> None:
    """An Alertmanager alert with extra (external) labels still matches the finding."""
    [finding] = _parse([_alert()]).findings
    am = [
        {"labels": {"alertname": "Other"}, "status": {"silencedBy": ["s0"], "inhibitedBy": []}},
        {
            "labels": {**finding.labels, "cluster": "eu-1"},
            "status": {"state": "suppressed", "silencedBy": ["s1"], "inhibitedBy": []},
        },
        {"labels": dict(finding.labels), "status": {"silencedBy": [], "inhibitedBy": []}},
        "junk",
    ]
    suppressions = parse_suppressions(am)
    assert len(suppressions) == 2
    hit = match_suppression(finding, suppressions, frozenset(VOLATILE))
    assert hit is not None and hit.silenced_by == ("s1",)


def test_suppressions_payload_must_be_a_list() -> None:
    """A non-list answer from Alertmanager is a ValueError."""
    with pytest.raises(ValueError):
        parse_suppressions({"error": "x"})


def _am_alert(state: str = "active", **labels: Any) -> dict[str, Any]:
    return {
        "labels": {"alertname": "MemoryLeak", "service": "market-predictor", **labels},
        "annotations": {"summary": "memory grows"},
        "startsAt": "2026-11-23T11:58:00Z",
        "status": {"state": state, "silencedBy": [], "inhibitedBy": []},
    }


def _parse_am(payload: object) -> Any:
    return parse_alertmanager_alerts(
        payload, now=NOW, target_labels=TARGETS, volatile_labels=VOLATILE
    )


def test_alertmanager_alert_has_the_fingerprint_of_the_same_prometheus_alert() -> None:
    """An alert read from Alertmanager is the finding Prometheus' alert would be: same
    name, target and fingerprint; it fired at startsAt and has no value."""
    [from_am] = _parse_am([_am_alert(severity="critical")]).findings
    [from_prom] = _parse([_alert(severity="critical")]).findings
    assert from_am.fingerprint == from_prom.fingerprint
    assert (from_am.name, from_am.target) == ("MemoryLeak", "market-predictor")
    assert from_am.first_seen == datetime(2026, 11, 23, 11, 58, tzinfo=UTC)
    assert from_am.value is None
    assert (from_am.source, from_prom.source) == ("alertmanager", "prometheus")


@pytest.mark.parametrize(
    ("entry", "findings", "malformed"),
    [
        (_am_alert(state="suppressed"), 0, 0),
        (_am_alert(state="unprocessed"), 0, 0),
        (_am_alert(state="odd"), 0, 1),
        (_am_alert(alertname="DevopsAgentEscalation"), 0, 0),
        (_am_alert(alertname="DevopsAgentSweepsStalled", service="market-predictor"), 0, 0),
        ({"labels": {"alertname": "X"}}, 0, 1),
        ("not a dict", 0, 1),
        (_am_alert(), 1, 0),
    ],
)
def test_alertmanager_entries_other_than_active_alerts_are_not_findings(
    entry: Any, findings: int, malformed: int
) -> None:
    """Suppressed and unprocessed alerts and the agent's own escalations are left out;
    broken entries are counted."""
    parsed = _parse_am([entry])
    assert (len(parsed.findings), parsed.malformed) == (findings, malformed)


def test_alertmanager_answer_that_is_not_a_list_raises() -> None:
    """An error envelope is a failed source, not an empty one."""
    with pytest.raises(ValueError, match="list"):
        _parse_am({"error": "boom"})


def test_alert_seen_through_both_sources_is_kept_once() -> None:
    """Alertmanager adds the sending Prometheus' external labels: still the same alert.
    A different service, or an alert only Alertmanager knows, is new."""
    prometheus = _parse([_alert()]).findings
    alertmanager = _parse_am(
        [
            _am_alert(cluster="eu-1", prometheus="monitoring/k8s"),
            _am_alert(service="coding-ai-agent"),
            _am_alert(alertname="DiskFull"),
        ]
    ).findings
    new = new_from_alertmanager(prometheus, alertmanager, frozenset(VOLATILE))
    assert sorted((f.name, f.target) for f in new) == [
        ("DiskFull", "market-predictor"),
        ("MemoryLeak", "coding-ai-agent"),
    ]


def test_alerts_about_the_agent_itself_are_never_findings() -> None:
    """Prometheus' DevopsAgent* alerts (config/prometheus-rules.yml) are for the humans who
    run the agent: not findings, not malformed; an alert merely mentioning it is one."""
    parsed = _parse(
        [
            _alert(alertname="DevopsAgentCircuitBreakerOpen", job="devops-agent"),
            _alert(alertname="DevopsAgentDown", state="pending"),
            _alert(alertname="MemoryLeakDevopsAgent"),
        ]
    )
    assert [f.name for f in parsed.findings] == ["MemoryLeakDevopsAgent"]
    assert parsed.malformed == 0
