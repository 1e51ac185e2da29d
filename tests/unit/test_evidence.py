"""The evidence the model is shown: the series behind a finding, summarised (from tables),
and asked of Prometheus (faked at the HTTP boundary)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import pytest
from pytest_httpx import HTTPXMock

from agent.diagnosis.evidence import (
    POINTS_MAX,
    Series,
    dump,
    evidence_json,
    of_finding,
    parse_matrix,
    spaced,
    summarize,
)
from agent.diagnosis.tools import Toolbox
from agent.promql import Comparison
from tests.conftest import MakePrometheus, alert_finding

END = 1_800_000_000.0


def _series(values: list[float], step: float = 60.0, ended: float = 0.0, **labels: str) -> Series:
    """Samples ``step`` apart, the last one ``ended`` seconds before END."""
    start = END - ended - step * (len(values) - 1)
    return Series(labels, tuple((start + i * step, v) for i, v in enumerate(values)))


@pytest.mark.parametrize(
    ("series", "comparison", "step", "expected"),
    [
        (  # a leak: rising, past the threshold for the last three samples
            _series([100, 110, 120, 130, 140, 150]),
            Comparison(">", 125),
            60.0,
            {
                "span_min": 5.0,
                "first": 100,
                "last": 150,
                "min": 100,
                "max": 150,
                "slope_per_min": 10,
                "min_past_threshold": 3.0,
                "points": [100, 110, 120, 130, 140, 150],
            },
        ),
        (  # flat: no slope; a check with no comparison has no threshold time
            _series([5, 5, 5], step=30.0),
            None,
            30.0,
            {
                "span_min": 1.0,
                "first": 5,
                "last": 5,
                "min": 5,
                "max": 5,
                "slope_per_min": 0,
                "points": [5, 5, 5],
            },
        ),
        (  # a disk filling from below: the time spent below the line
            _series([0.2, 0.1, 0.04, 0.03], step=15.0),
            Comparison("<", 0.05),
            15.0,
            {
                "span_min": 0.8,
                "first": 0.2,
                "last": 0.03,
                "min": 0.03,
                "max": 0.2,
                "slope_per_min": -0.228,
                "min_past_threshold": 0.5,
                "points": [0.2, 0.1, 0.04, 0.03],
            },
        ),
        (  # one sample: no slope, no span
            _series([42.0]),
            Comparison(">", 40),
            60.0,
            {
                "span_min": 0.0,
                "first": 42,
                "last": 42,
                "min": 42,
                "max": 42,
                "slope_per_min": 0,
                "min_past_threshold": 1.0,
                "points": [42],
            },
        ),
        (  # bytes: the points share a power of ten, the statistics keep four digits
            _series([2.1e8, 2.345e8, 2.6e8], step=60.0),
            Comparison(">", 2.5e8),
            60.0,
            {
                "span_min": 2.0,
                "first": 2.1e8,
                "last": 2.6e8,
                "min": 2.1e8,
                "max": 2.6e8,
                "slope_per_min": 2.5e7,
                "min_past_threshold": 1.0,
                "points_x1e8": [2.1, 2.35, 2.6],
            },
        ),
        (  # a series that stopped ten minutes ago says so
            _series([1, 0, 0], step=60.0, ended=600.0),
            Comparison("==", 0),
            60.0,
            {
                "span_min": 2.0,
                "ended_min_ago": 10.0,
                "first": 1,
                "last": 0,
                "min": 0,
                "max": 1,
                "slope_per_min": -0.5,
                "min_past_threshold": 2.0,
                "points": [1, 0, 0],
            },
        ),
    ],
)
def test_a_series_summary(
    series: Series, comparison: Comparison | None, step: float, expected: dict[str, Any]
) -> None:
    """First, last, min, max, slope per minute, time past the threshold and the points."""
    got = summarize(series, comparison=comparison, step_seconds=step, end=END, shown={})
    assert got == expected


def test_at_most_twenty_points_evenly_spaced_first_and_last_included() -> None:
    """A long series is shown as POINTS_MAX values spread over all of it."""
    values = [float(i) for i in range(121)]
    shown = spaced(values)
    assert len(shown) == POINTS_MAX == 20
    assert shown[0] == 0 and shown[-1] == 120
    gaps = {round(b - a) for a, b in zip(shown, shown[1:], strict=False)}
    assert gaps <= {6, 7}
    assert spaced([1.0, 2.0]) == [1.0, 2.0]


def test_labels_the_finding_shows_are_left_out() -> None:
    """Only the labels that tell this series apart are shown; the metric name never."""
    series = _series([1, 2], __name__="mem", service="a", pod="p1")
    got = summarize(series, comparison=None, step_seconds=60, end=END, shown={"service": "a"})
    assert got["labels"] == {"pod": "p1"}
    alone = summarize(
        _series([1, 2], service="a"),
        comparison=None,
        step_seconds=60,
        end=END,
        shown={"service": "a"},
    )
    assert "labels" not in alone


def test_the_findings_own_series_are_kept() -> None:
    """Series that disagree with the finding's labels go; none agreeing keeps them all."""
    mine = _series([1], __name__="mem", service="a", pod="p1")
    other = _series([2], service="b")
    unlabelled = _series([3])
    assert of_finding([mine, other, unlabelled], {"service": "a", "alertname": "Leak"}) == [
        mine,
        unlabelled,
    ]
    assert of_finding([other], {"service": "a"}) == [other]


def test_prometheus_answers_are_read_without_trusting_them() -> None:
    """Malformed entries and non-finite samples are skipped; samples come in time order."""
    result = [
        {"metric": {"job": "a"}, "values": [[3, "3"], [1, "1"], [2, "nan"], [4, "x"], [5]]},
        {"metric": "not a dict", "values": [[1, "2"]]},
        {"metric": {"job": "empty"}, "values": []},
        {"values": "nope"},
        "garbage",
    ]
    assert parse_matrix(result) == [
        Series({"job": "a"}, ((1.0, 1.0), (3.0, 3.0))),
        Series({}, ((1.0, 2.0),)),
    ]
    assert parse_matrix({"not": "a list"}) == []


def test_the_evidence_names_query_threshold_window_and_fits_its_size() -> None:
    """Series that do not fit are counted, not cut; the JSON always reads back."""
    many = [_series([float(i)] * 30, pod=f"pod-{i}") for i in range(8)]
    text = evidence_json(
        "mem",
        many,
        comparison=Comparison(">", 1.5e8),
        minutes=30,
        step_seconds=60,
        end=END,
        shown={},
        max_chars=600,
    )
    data = json.loads(text)
    assert len(text) <= 600
    assert (data["query"], data["threshold"], data["window_min"]) == ("mem", "> 1.5e8", 30)
    assert 1 <= len(data["series"]) < 8
    assert len(data["series"]) + data["more_series"] == 8


@pytest.mark.parametrize(
    ("value", "written"),
    [
        (210000000.0, "2.1e8"),
        (123456789.0, "123456789"),
        (1234.0, "1234"),
        (30.0, "30"),
        (0.05, "0.05"),
        (1.5e-5, "1.5e-5"),
        (-3.25e9, "-3.25e9"),
        (float("inf"), "null"),
    ],
)
def test_numbers_are_short_and_exact(value: float, written: str) -> None:
    """The shorter of plain and scientific notation that reads back as the same number."""
    assert dump(value) == written
    if written != "null":
        assert json.loads(written) == value


PROM = "http://prom.test"
NOW = datetime.fromtimestamp(END, UTC)


def _matrix(*series: tuple[dict[str, str], list[tuple[float, float]]]) -> dict[str, Any]:
    result = [
        {"metric": labels, "values": [[t, str(v)] for t, v in samples]}
        for labels, samples in series
    ]
    return {"status": "success", "data": {"resultType": "matrix", "result": result}}


async def test_a_series_that_began_a_minute_ago_is_asked_again_at_a_finer_step(
    httpx_mock: HTTPXMock, make_prometheus: MakePrometheus
) -> None:
    """The rule's expression is asked without its comparison; when the finding's own
    series covers a minute of the half hour (another service's covers all of it), it is
    asked again from its first sample at a step that gives it its points."""
    rules = {
        "status": "success",
        "data": {
            "groups": [
                {
                    "rules": [
                        {"name": "MemoryLeak", "query": 'mem{job="x"} > 1.5e+08', "duration": 60}
                    ]
                }
            ]
        },
    }
    httpx_mock.add_response(url=f"{PROM}/api/v1/rules?type=alert", json=rules)
    mine = {"__name__": "mem", "service": "market-predictor"}
    other = {"__name__": "mem", "service": "coding-ai-agent"}
    coarse = [(END - 60, 1.2e8), (END - 30, 1.4e8), (END, 1.6e8)]
    long = [(END - 1800 + 30 * i, 5e7) for i in range(61)]
    fine = [(END - 90 + i, 1.1e8 + i * 5e5) for i in range(91)]
    httpx_mock.add_response(
        url=f"{PROM}/api/v1/query_range", json=_matrix((mine, coarse), (other, long))
    )
    httpx_mock.add_response(
        url=f"{PROM}/api/v1/query_range", json=_matrix((mine, fine), (other, long[-4:]))
    )
    toolbox = Toolbox(make_prometheus(PROM), 1500, NOW)
    text = await toolbox.evidence(alert_finding(first_seen=NOW), [])
    first, second = [
        dict(parse_qsl(r.content.decode()))
        for r in httpx_mock.get_requests(url=f"{PROM}/api/v1/query_range")
    ]
    assert first["query"] == second["query"] == 'mem{job="x"}'
    assert (first["step"], float(first["start"])) == ("30s", END - 1800)
    assert (second["step"], float(second["start"])) == ("1s", END - 90)
    data = json.loads(text)
    [series] = data["series"]
    assert data["threshold"] == "> 1.5e8" and "labels" not in series
    assert len(series["points_x1e8"]) == POINTS_MAX and series["slope_per_min"] > 0
