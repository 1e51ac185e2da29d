"""The console's pure parts: the plot from a table of inputs, and the access rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agent.console.access import Access
from agent.console.plot import Marker, Series, render, series_from_matrix

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_prometheus_answers_are_read_without_trusting_them() -> None:
    """Malformed entries, non-numbers and non-finite values are skipped."""
    result = [
        {"metric": {"job": "a"}, "values": [[1, "1"], [2, "nan"], [3, "x"], ["4", "4"], [5]]},
        {"metric": "not a dict", "values": [[1, "2"]]},
        {"values": "nope"},
        "garbage",
    ]
    series = series_from_matrix(result)
    assert [s.points for s in series] == [((1.0, 1.0), (4.0, 4.0)), ((1.0, 2.0),)]
    assert series[0].label == "job=a" and series[1].label == "series"
    assert series_from_matrix({"not": "a list"}) == []


def test_the_svg_escapes_text_and_places_markers() -> None:
    """Labels and titles are escaped; the path has one point per sample; markers sit in
    the window; the threshold is drawn."""
    start = NOW - timedelta(minutes=5)
    points = tuple((start.timestamp() + i * 30, float(i)) for i in range(10))
    svg = render(
        [Series('<script>alert("x")</script>', points)],
        threshold=5.0,
        markers=[Marker(NOW - timedelta(minutes=2), "restart <sent>")],
        start=start,
        end=NOW,
        title="a < b",
    )
    assert "<script" not in svg and "&lt;script&gt;" in svg
    assert "restart &lt;sent&gt;" in svg and "<title>a &lt; b</title>" in svg
    path = svg.split('<path d="M ', 1)[1].split('"', 1)[0]
    assert len(path.split(" L ")) == 10
    assert 'class="threshold"' in svg and svg.count('class="marker"') == 1


def test_access_roles_cookies_and_csrf() -> None:
    """Each token logs in to its role; a forged, expired or foreign cookie proves nothing;
    CSRF tokens belong to one session."""
    access = Access(console_token="view-t", approval_token="approve-t", loopback=False)
    assert access.login("nope") is None
    viewer, approver = access.login("view-t", now=1000), access.login("approve-t", now=1000)
    assert viewer and approver
    assert access.role(viewer, now=2000) == "viewer"
    assert access.role(approver, now=2000) == "approver"
    assert access.role(approver.replace("approver", "viewer", 1), now=2000) is None
    assert access.role(viewer.replace("viewer", "approver", 1), now=2000) is None
    assert access.role(approver, now=1000 + 13 * 3600) is None  # expired
    assert access.role(None) is None and access.role("garbage") is None
    assert access.csrf_ok(approver, access.csrf(approver))
    assert not access.csrf_ok(approver, access.csrf(viewer))
    assert not access.csrf_ok(None, access.csrf(None))
    rotated = Access(console_token="view-t", approval_token="new-t", loopback=False)
    assert rotated.role(approver, now=2000) is None  # a new token voids old sessions


def test_without_tokens_the_console_is_off_or_read_only() -> None:
    """No token: off unless on loopback, where everyone may look and nobody approves."""
    assert not Access(None, None, loopback=False).enabled
    local = Access(None, None, loopback=True)
    assert local.enabled and local.open_read_only and local.role(None) == "viewer"
