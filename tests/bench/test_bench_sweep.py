"""Benchmark: turning 10,000 firing alerts into deduplicated findings.

Target: parse + fingerprint + dedupe costs no more than twice ``json.loads`` of the same
response (ratio <= 2.0), measured in one run, with the single plain parser. Also prints the
peak memory of the parse.
"""

from __future__ import annotations

import json
import statistics
import time
import tracemalloc
from datetime import UTC, datetime

from agent.sweep.alerts import alerts_from_payload, parse_alerts
from agent.sweep.findings import dedupe

N_ALERTS = 10_000
ROUNDS = 7
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _response() -> bytes:
    alerts = []
    for i in range(N_ALERTS):
        svc = f"svc-{i % 50}"
        alerts.append(
            {
                "labels": {
                    "alertname": f"Alert{i % 40}",
                    "service": svc,
                    "instance": f"10.0.{i % 250}.{(i // 250) % 250}:9100",
                    "job": "node",
                    "severity": ["critical", "warning", "info"][i % 3],
                    "alertstate": "firing",
                    "pod": f"{svc}-{i % 300}",
                },
                "annotations": {
                    "summary": f"{svc} is in trouble ({i})",
                    "description": "Something has been wrong for a while. " * 3,
                    "runbook_url": "https://runbooks.example/alert",
                },
                "state": "firing",
                "activeAt": f"2026-11-23T11:5{i % 10}:00.123456789Z",
                "value": f"{i}e+00",
            }
        )
    return json.dumps({"status": "success", "data": {"alerts": alerts}}).encode()


def _convert(payload: object) -> int:
    parsed = parse_alerts(
        alerts_from_payload(payload),
        now=NOW,
        target_labels=["service", "container", "name", "job"],
        volatile_labels=["alertstate", "__name__"],
    )
    return len(dedupe(parsed.findings))


def test_findings_ratio() -> None:
    """Print findings_ratio = (parse + fingerprint + dedupe) / json.loads, and peak memory."""
    raw = _response()
    loads_times, convert_times = [], []
    count = 0
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        payload = json.loads(raw)
        t1 = time.perf_counter()
        count = _convert(payload)
        t2 = time.perf_counter()
        loads_times.append(t1 - t0)
        convert_times.append(t2 - t1)
    tracemalloc.start()
    payload = json.loads(raw)
    decoded, loads_peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    _convert(payload)
    _, convert_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    loads, convert = statistics.median(loads_times), statistics.median(convert_times)
    ratio = convert / loads
    print(
        f"\nalerts={N_ALERTS} findings={count} response_bytes={len(raw)}"
        f"\njson_loads_ms={loads * 1e3:.1f} convert_ms={convert * 1e3:.1f}"
        f"\nfindings_ratio={ratio:.2f} (target <= 2.0: {'met' if ratio <= 2.0 else 'NOT met'})"
        f"\npeak_memory_mb={max(loads_peak, convert_peak) / 2**20:.1f}"
        f" (decoded payload {decoded / 2**20:.1f}, json.loads peak {loads_peak / 2**20:.1f},"
        f" the conversion adds at most {(convert_peak - decoded) / 2**20:.1f})"
    )
    assert count == N_ALERTS
