"""Benchmarks of the diagnosis: prompt tokens per diagnosis, and concurrency efficiency.

- Median prompt tokens per whole diagnosis (all phases) over representative findings,
  target <= 6,000, with tool calls answered by a real Prometheus.
- 50 findings with a model that takes 500 ms per call: elapsed time over the ideal time
  for the configured concurrency, target <= 1.2.
"""

from __future__ import annotations

import math
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from agent.clients.llm import LLMOptions, build_llm_client
from agent.clients.prometheus import PrometheusClient
from agent.config import Severity
from agent.demo.local import LocalPrometheus, MetricsTarget
from agent.diagnosis.engine import DiagnosisDeps, diagnose, diagnose_many
from agent.sweep.findings import Finding, fingerprint
from tests.conftest import make_config
from tests.llm_fakes import FakeModel

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


def test_prompt_tokens_per_diagnosis(tmp_path: Path) -> None:
    """Print the median prompt tokens of a whole diagnosis over five findings."""
    import asyncio

    target = MetricsTarget().start()
    for i in range(4):
        target.set("bench_memory_bytes", 2.1e8 + i * 7e7, service="market-predictor", pod=f"p{i}")
    prometheus = LocalPrometheus(tmp_path / "prom", targets={"bench": target.address}).start()
    model = FakeModel()
    try:
        time.sleep(3)  # a few scrapes, so the tools see data
        tokens = asyncio.run(_diagnose_all(model.base_url, prometheus.url))
    finally:
        model.stop()
        prometheus.stop()
        target.stop()
    median = statistics.median(tokens)
    print(
        f"\nprompt_tokens_per_diagnosis={tokens}"
        f"\nmedian_prompt_tokens={median:.0f} (target <= 6000: {'met' if median <= 6000 else 'NOT met'})"
    )
    assert len(tokens) == len(FINDINGS)


async def _diagnose_all(base_url: str, prom_url: str) -> list[int]:
    options = LLMOptions(model="gpt-4o", temperature=0, max_tokens=800)
    llm, http = build_llm_client(
        api_key="sk-bench-000000", base_url=base_url, timeout=10, options=options
    )
    client = PrometheusClient(prom_url, timeout=5)
    deps = DiagnosisDeps(config=make_config(), prometheus=client, llm=llm)
    try:
        results = []
        for finding in FINDINGS:
            decision = await diagnose(finding, deps, datetime.now(UTC))
            assert decision.decided_by == "llm", decision.fallback_reason
            results.append(decision.prompt_tokens)
        return results
    finally:
        await http.aclose()
        client.close()


def test_concurrency_efficiency() -> None:
    """Print elapsed / ideal for 50 findings with a 500 ms model at the configured concurrency."""
    import asyncio

    delay, count = 0.5, 50
    config = make_config(diagnosis={"max_steps": 1, "max_concurrency": 4})
    model = FakeModel(delay=delay)
    try:
        elapsed, calls = asyncio.run(_run_many(model, config, count))
    finally:
        model.stop()
    per_diagnosis = calls / count
    ideal = math.ceil(count / config.diagnosis.max_concurrency) * per_diagnosis * delay
    ratio = elapsed / ideal
    print(
        f"\nfindings={count} concurrency={config.diagnosis.max_concurrency} calls={calls} "
        f"model_delay_s={delay}\nelapsed_s={elapsed:.2f} ideal_s={ideal:.2f}"
        f"\nconcurrency_ratio={ratio:.3f} (target <= 1.2: {'met' if ratio <= 1.2 else 'NOT met'})"
    )
    assert calls == 3 * count


async def _run_many(model: FakeModel, config: object, count: int) -> tuple[float, int]:
    options = LLMOptions(model="gpt-4o", temperature=0, max_tokens=800)
    llm, http = build_llm_client(
        api_key="sk-bench-000000", base_url=model.base_url, timeout=10, options=options
    )
    client = PrometheusClient("http://127.0.0.1:9", timeout=1)
    deps = DiagnosisDeps(config=config, prometheus=client, llm=llm)  # type: ignore[arg-type]
    findings = [
        _finding(f"ContainerMemoryLeak{i}", "alert", {"summary": "leak"}, replica=str(i))
        for i in range(count)
    ]
    try:
        start = time.perf_counter()
        results = await diagnose_many(findings, deps, datetime.now(UTC))
        elapsed = time.perf_counter() - start
    finally:
        await http.aclose()
        client.close()
    assert all(d.decided_by == "llm" for _, d in results)
    return elapsed, model.calls
