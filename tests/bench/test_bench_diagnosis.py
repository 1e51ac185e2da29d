"""Benchmark of the diagnosis: prompt tokens per diagnosis.

Median prompt tokens per whole diagnosis (all phases) over representative findings, with
tool calls answered by a real Prometheus: target <= 6,000; and with the same problem's
history (three past incidents) and one read of the logs (4,000 characters from the
gateway): target <= 2,500. (How diagnoses run concurrently is measured through the
daemon's cycle in ``test_bench_replicas.py``.)
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.clients.llm import LLMOptions, build_llm_client
from agent.clients.prometheus import PrometheusClient
from agent.clients.prometheus import build_http_client as prometheus_http
from agent.config import Severity
from agent.diagnosis.engine import DiagnosisDeps, diagnose
from agent.incidents.history import PastIncident, SentAction
from agent.local import LocalPrometheus, MetricsTarget
from agent.sweep.findings import Finding, fingerprint
from tests.conftest import make_config
from tests.llm_fakes import FakeModel, answer_reading_logs

NOW = datetime.now(UTC)


def _finding(name: str, kind: str, annotations: dict[str, str], **labels: str) -> Finding:
    full = {"alertname": name, "service": "market-predictor", **labels}
    return Finding(
        kind=kind,  # type: ignore[arg-type]
        name=name,
        target="market-predictor",
        severity=Severity.critical,
        labels=full,
        annotations=annotations,
        value=4.8e8,
        first_seen=NOW,
        fingerprint=fingerprint(kind, name, full, []),
    )


FINDINGS = [
    _finding(
        "ContainerMemoryLeak",
        "alert",
        {
            "summary": "market-predictor memory grew 38% in 20 minutes",
            "description": "Working set of container market-predictor is 480MB and rising "
            "(container_memory_working_set_bytes). Check for leaks in the model cache.",
            "runbook_url": "https://runbooks.example.com/memory-leak",
        },
        container="market-predictor",
        instance="10.0.3.17:8080",
        job="cadvisor",
        severity="critical",
    ),
    _finding(
        "TargetDown",
        "health",
        {"description": "Prometheus cannot scrape the service"},
        job="market-predictor",
    ),
    _finding(
        "MemoryGrowth",
        "anomaly",
        {"description": "Working-set memory far above baseline", "z_score": "4.10"},
    ),
    _finding(
        "HighRequestLatency",
        "alert",
        {
            "summary": "p99 latency above 2s for 10 minutes",
            "description": "histogram_quantile(0.99, rate(http_request_duration_seconds_bucket[5m])) "
            "is 2.7s on market-predictor; upstream model server may be saturated. " * 3,
        },
        route="/predict",
        severity="warning",
    ),
    _finding(
        "DiskAlmostFull",
        "alert",
        {"summary": "volume /data 93% full", "description": "Predicted to fill within 6 hours."},
        mountpoint="/data",
        device="/dev/vdb",
    ),
]


def _history() -> list[PastIncident]:
    return [
        PastIncident(
            id=f"past{i:08x}",
            opened_at=NOW - timedelta(hours=i + 1),
            state="resolved" if i else "escalated",
            decided_by="llm",
            decided="restart",
            sent=(SentAction("restart", "succeeded", True),),
            verified=bool(i),
            ended_at=NOW - timedelta(hours=i + 1) + timedelta(minutes=6),
            quiet_seconds=3000.0 + i,
        )
        for i in range(3)
    ]


async def _logs(service: str, lines: int) -> str:
    return "\n".join(
        f"2026-11-23T12:0{i % 10}:00Z WARN cache size {200 + i} MB, gc pause {i * 3} ms"
        for i in range(80)
    )[:4000]


def test_prompt_tokens_per_diagnosis(tmp_path: Path) -> None:
    """Print the median prompt tokens of a whole diagnosis over five findings, without and
    with history and a log read."""
    import asyncio

    target = MetricsTarget().start()
    for i in range(4):
        target.set("bench_memory_bytes", 2.1e8 + i * 7e7, service="market-predictor", pod=f"p{i}")
    prometheus = LocalPrometheus(tmp_path / "prom", targets={"bench": target.address}).start()
    model = FakeModel(responder=answer_reading_logs)
    try:
        time.sleep(3)  # a few scrapes, so the tools see data
        plain = asyncio.run(_diagnose_all(model.base_url, prometheus.url))
        fuller = asyncio.run(_diagnose_all(model.base_url, prometheus.url, evidence=True))
    finally:
        model.stop()
        prometheus.stop()
        target.stop()
    median = statistics.median(plain)
    with_both = statistics.median(fuller)
    print(
        f"\nprompt_tokens_per_diagnosis={plain}"
        f"\nmedian_prompt_tokens={median:.0f} (target <= 6000: {'met' if median <= 6000 else 'NOT met'})"
        f"\nprompt_tokens_with_history_and_logs={fuller}"
        f"\nmedian_prompt_tokens_with_history_and_logs={with_both:.0f} (target <= 2500: "
        f"{'met' if with_both <= 2500 else 'NOT met'}; the last round measured 1,663 without either)"
    )
    assert len(plain) == len(fuller) == len(FINDINGS)


async def _diagnose_all(base_url: str, prom_url: str, *, evidence: bool = False) -> list[int]:
    options = LLMOptions(model="gpt-4o", temperature=0, max_tokens=800)
    llm, http = build_llm_client(api_key="sk-bench-000000", base_url=base_url, options=options)
    prom_http = prometheus_http(prom_url, timeout=5, bearer_token=None, verify=True)
    client = PrometheusClient(prom_http, timeout=5, max_bytes=50_000_000)
    deps = DiagnosisDeps(config=make_config(), prometheus=client, llm=llm)
    try:
        results = []
        for finding in FINDINGS:
            extra: dict[str, Any] = {"history": _history(), "logs": _logs} if evidence else {}
            result = await diagnose(finding, deps, datetime.now(UTC), **extra)
            assert result.decision.decided_by == "llm", result.decision.fallback_reason
            results.append(result.prompt_tokens)
        return results
    finally:
        await http.aclose()
        await prom_http.aclose()
