"""Benchmark of the diagnosis: prompt tokens per diagnosis, counted by a real tokenizer.

Five representative findings (alerts with their rules loaded, a health check, an anomaly
check) over a real Prometheus that has scraped a rising leak for twenty seconds, so the
evidence the agent gathers itself holds real series. The model is a fake that answers
every phase (two PromQL tool calls, then a plan); the prompt tokens of every request it
receives are counted with the shipped SmolLM2's own tokenizer and chat template
(``agent.local.tokens``), offline. Printed: the median prompt tokens of a whole diagnosis
(all phases), without and with the same problem's history (three past incidents) and one
read of the logs (4,000 characters from the gateway), the largest single prompt beside
the local model's context, and the diagnosis' token budget they must stay within.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.clients.llm import LLMOptions, build_llm_client
from agent.clients.prometheus import PrometheusClient
from agent.clients.prometheus import build_http_client as prometheus_http
from agent.config import Severity
from agent.diagnosis.engine import DiagnosisDeps, diagnose
from agent.diagnosis.tools import LogAccess, ServiceLogs
from agent.incidents.history import PastIncident, SentAction
from agent.local import LocalPrometheus, MetricsTarget
from agent.local.model import CONTEXT_TOKENS
from agent.local.tokens import TOKENIZER_NAME, PromptTokens
from agent.sweep.findings import Finding, fingerprint
from tests.conftest import make_config
from tests.llm_fakes import FakeModel, answer_reading_logs

SERVICE = "market-predictor"
RULES = """
groups:
- name: bench
  rules:
  - alert: ContainerMemoryLeak
    expr: container_memory_working_set_bytes{name="market-predictor"} > 3e+08
    for: 5s
  - alert: HighRequestLatency
    expr: bench_request_latency_seconds{route="/predict"} > 2
  - alert: DiskAlmostFull
    expr: bench_volume_used_ratio{mountpoint="/data"} > 0.9
"""
#: Seconds of rising data Prometheus scrapes before the diagnoses run.
RISE_SECONDS = 20


def _finding(name: str, kind: str, annotations: dict[str, str], /, **labels: str) -> Finding:
    full = {"alertname": name, "service": SERVICE, **labels} if kind == "alert" else labels
    return Finding(
        kind=kind,  # type: ignore[arg-type]
        name=name,
        target=SERVICE,
        severity=Severity.critical,
        labels=full,
        annotations=annotations,
        value=4.8e8,
        first_seen=datetime.now(UTC),
        fingerprint=fingerprint(kind, name, full, []),
    )


def _findings(instance: str) -> list[Finding]:
    """The findings as the sweep would make them from the bench target's series."""
    scraped = {"instance": instance, "job": "bench"}
    return [
        _finding(
            "ContainerMemoryLeak",
            "alert",
            {
                "summary": "market-predictor memory grew 38% in 20 minutes",
                "description": "Working set of container market-predictor is 480MB and "
                "rising (container_memory_working_set_bytes). Check for leaks in the model "
                "cache.",
                "runbook_url": "https://runbooks.example.com/memory-leak",
            },
            name=SERVICE,
            severity="critical",
            **scraped,
        ),
        _finding(
            "TargetDown",
            "health",
            {"description": "Prometheus cannot scrape the service"},
            **scraped,
        ),
        _finding(
            "MemoryGrowth",
            "anomaly",
            {"description": "Working-set memory far above baseline", "z_score": "4.10"},
            name=SERVICE,
            service=SERVICE,
            **scraped,
        ),
        _finding(
            "HighRequestLatency",
            "alert",
            {
                "summary": "p99 latency above 2s for 10 minutes",
                "description": "histogram_quantile(0.99, rate(http_request_duration_seconds"
                "_bucket[5m])) is 2.7s on market-predictor; upstream model server may be "
                "saturated. " * 3,
            },
            route="/predict",
            severity="warning",
            **scraped,
        ),
        _finding(
            "DiskAlmostFull",
            "alert",
            {
                "summary": "volume /data 93% full",
                "description": "Predicted to fill within 6 hours.",
            },
            mountpoint="/data",
            device="/dev/vdb",
            **scraped,
        ),
    ]


def _history() -> list[PastIncident]:
    now = datetime.now(UTC)
    return [
        PastIncident(
            id=f"past{i:08x}",
            opened_at=now - timedelta(hours=i + 1),
            state="resolved" if i else "escalated",
            decided_by="llm",
            decided="restart",
            sent=(SentAction("restart", "succeeded", True),),
            verified=bool(i),
            ended_at=now - timedelta(hours=i + 1) + timedelta(minutes=6),
            quiet_seconds=3000.0 + i,
        )
        for i in range(3)
    ]


async def _read_logs(service: str, lines: int) -> ServiceLogs:
    return ServiceLogs(
        "\n".join(
            f"2026-11-23T12:0{i % 10}:00Z WARN cache size {200 + i} MB, gc pause {i * 3} ms"
            for i in range(80)
        )[:4000]
    )


class Counted:
    """The fake model's answers, each with the prompt tokens the real tokenizer counts
    for the request it answers; the largest prompt is kept."""

    def __init__(self, tokens: PromptTokens, responder: Callable[[dict[str, Any]], Any]) -> None:
        self.tokens = tokens
        self.responder = responder
        self.largest = 0

    def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        reply: dict[str, Any] = self.responder(body)
        counted = self.tokens.request(body)
        self.largest = max(self.largest, counted)
        reply["usage"]["prompt_tokens"] = counted
        reply["usage"]["total_tokens"] = counted + reply["usage"]["completion_tokens"]
        return reply


def _rise(target: MetricsTarget) -> None:
    """A leak and its neighbours, scraped every second for RISE_SECONDS."""
    for i in range(RISE_SECONDS):
        labels = {"name": SERVICE, "service": SERVICE}
        target.set("container_memory_working_set_bytes", 2.1e8 + i * 1.4e7, **labels)
        target.set("bench_request_latency_seconds", 1.6 + i * 0.06, route="/predict")
        target.set("bench_volume_used_ratio", 0.88 + i * 0.0025, mountpoint="/data")
        time.sleep(1)


def test_prompt_tokens_per_diagnosis(tmp_path: Path) -> None:
    """Print the median prompt tokens of a whole diagnosis over five findings, without and
    with history and a log read, counted by the shipped model's own tokenizer."""
    tokens = PromptTokens()
    target = MetricsTarget().start()
    prometheus = LocalPrometheus(
        tmp_path / "prom", targets={"bench": target.address}, rules=RULES
    ).start()
    counted = Counted(tokens, answer_reading_logs)
    model = FakeModel(responder=counted)
    try:
        _rise(target)
        findings = _findings(target.address)
        plain = asyncio.run(_diagnose_all(model.base_url, prometheus.url, findings))
        fuller = asyncio.run(_diagnose_all(model.base_url, prometheus.url, findings, True))
    finally:
        model.stop()
        prometheus.stop()
        target.stop()
    budget = make_config().diagnosis.token_budget
    median, with_both = statistics.median(plain), statistics.median(fuller)
    print(
        f"\nprompt tokens counted by the {TOKENIZER_NAME}"
        f"\nprompt_tokens_per_diagnosis={plain}"
        f"\nmedian_prompt_tokens={median:.0f}"
        f"\nprompt_tokens_with_history_and_logs={fuller}"
        f"\nmedian_prompt_tokens_with_history_and_logs={with_both:.0f}"
        f"\nlargest_single_prompt={counted.largest} (the local model's context: "
        f"{CONTEXT_TOKENS} tokens)"
        f"\nlargest_diagnosis={max(fuller)} (diagnosis.token_budget: {budget}, prompt and "
        "completion)"
    )
    assert len(plain) == len(fuller) == len(findings)
    assert max(fuller) < budget and counted.largest < CONTEXT_TOKENS


async def _diagnose_all(
    base_url: str, prom_url: str, findings: list[Finding], evidence: bool = False
) -> list[int]:
    options = LLMOptions(model="gpt-4o", temperature=0, max_tokens=800)
    llm, http = build_llm_client(api_key="sk-bench-000000", base_url=base_url, options=options)
    prom_http = prometheus_http(prom_url, timeout=5, bearer_token=None, verify=True)
    client = PrometheusClient(prom_http, timeout=5, max_bytes=50_000_000)
    deps = DiagnosisDeps(config=make_config(), prometheus=client, llm=llm)
    logs = LogAccess(_read_logs, frozenset({SERVICE}))
    try:
        results = []
        for finding in findings:
            extra: dict[str, Any] = {"history": _history(), "logs": logs} if evidence else {}
            result = await diagnose(finding, deps, datetime.now(UTC), **extra)
            assert result.decision.decided_by == "llm", result.decision.fallback_reason
            results.append(result.prompt_tokens)
        return results
    finally:
        await http.aclose()
        await prom_http.aclose()
