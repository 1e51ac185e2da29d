"""Benchmarks of the local model (the shipped SmolLM2 on llama-cpp-python's server).

- ``local_diagnosis_reuse`` = wall time of one whole diagnosis ÷ wall time of answering
  its largest prompt once, cold (target <= 1.5), each the median of three runs from a cold
  cache, taken in turn (a single run swings by a fifth on a shared machine). The phases share one prefix, so the
  server evaluates only each later phase's new tokens; beside it, the same ratio with
  every phase's prompt answered cold (what it would be without the shared prefix).
- ``local_model_rss_mb``: the server's resident memory (peak and after the diagnosis)
  with the shipped model (target <= 600 MB).
- ``local_first_decision_s``: from the alert firing in Prometheus to the decision, through
  the daemon's own cycle on the local model (printed, no target yet).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.clients.llm import LLMOptions, build_llm_client
from agent.clients.prometheus import PrometheusClient
from agent.clients.prometheus import build_http_client as prometheus_http
from agent.daemon.cycle import run_cycle
from agent.diagnosis.engine import DiagnosisDeps, diagnose
from agent.local import LocalModel, LocalPrometheus, MetricsTarget
from agent.local.model import ALIAS
from agent.runtime import open_runtime
from agent.settings import load_settings
from agent.sweep.collector import fetch_alerts
from tests.conftest import make_config
from tests.integration.daemon_support import E2E_RULES, agent_env, wait_firing, write_config

#: The local model server's API key in these benchmarks.
KEY = "sk-bench-local-model-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalModel]:
    """The shipped model, served locally."""
    server = LocalModel(tmp_path_factory.mktemp("model"), api_key=KEY).start()
    yield server
    server.stop()


def _rss_mb(pid: int) -> tuple[float, float]:
    """(peak, current) resident memory of a process, in MB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return (int(fields["VmHWM"].split()[0]) / 1024, int(fields["VmRSS"].split()[0]) / 1024)


def _answer(base_url: str, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    response = httpx.post(f"{base_url}/chat/completions", json=body, timeout=300, headers=AUTH)
    assert response.status_code == 200, response.text[:300]
    return time.perf_counter() - started


def _flush(base_url: str) -> None:
    """Make the server cold: a prompt that shares nothing with the diagnosis replaces its
    cached context."""
    flush = {
        "model": ALIAS,
        "messages": [{"role": "user", "content": "Name three colours. " * 60}],
        "max_tokens": 1,
    }
    _answer(base_url, flush)


async def _diagnoses(
    base_url: str, prom_url: str, runs: int = 3
) -> tuple[list[float], list[float], list[str], list[dict[str, Any]]]:
    """The wall times of ``runs`` whole diagnoses and, in turn with them (so a slower
    spell of the shared machine falls on both), of answering the diagnosis' largest prompt,
    each from a cold cache; what each diagnosis spent per phase (calls, prompt and answer
    tokens); and the requests of the last diagnosis."""
    sent: list[dict[str, Any]] = []

    async def keep(request: httpx.Request) -> None:
        if request.url.path.endswith("/chat/completions"):
            sent.append(json.loads(request.content))

    options = LLMOptions(model=ALIAS, temperature=0, max_tokens=512, request_timeout=300)
    llm, http = build_llm_client(api_key=KEY, base_url=base_url, options=options)
    http.event_hooks["request"].append(keep)
    prom_http = prometheus_http(prom_url, timeout=10, bearer_token=None, verify=True)
    prometheus = PrometheusClient(prom_http, timeout=10, max_bytes=50_000_000)
    config = make_config()
    try:
        findings: list[Any] = []
        while not findings:
            findings = (
                await fetch_alerts(prometheus, config.prometheus, datetime.now(UTC))
            ).findings
            await asyncio.sleep(0.5)
        deps = DiagnosisDeps(config=config, prometheus=prometheus, llm=llm)
        await diagnose(findings[0], deps, datetime.now(UTC))  # learns the server's features
        walls, colds, spent = [], [], []
        for _ in range(runs):
            _flush(base_url)
            sent.clear()
            started = time.perf_counter()
            result = await diagnose(findings[0], deps, datetime.now(UTC))
            walls.append(time.perf_counter() - started)
            assert result.decision.decided_by == "llm", result.decision.fallback_reason
            spent.append(
                " ".join(
                    f"{phase}:{u.calls}x{u.prompt_tokens}+{u.completion_tokens}"
                    for phase, u in result.usage.items()
                )
            )
            largest = max(sent, key=lambda body: len(json.dumps(body["messages"])))
            colds.append(_cold(base_url, largest))
        return walls, colds, spent, sent

    finally:
        await http.aclose()
        await prom_http.aclose()


def _cold(base_url: str, body: dict[str, Any]) -> float:
    """The time to answer ``body`` from a cold cache."""
    _flush(base_url)
    return _answer(base_url, body)


def test_local_diagnosis_reuse_and_memory(tmp_path: Path, model: LocalModel) -> None:
    """Print local_diagnosis_reuse (with and without the shared prefix) and the server's
    resident memory."""
    target = MetricsTarget().start()
    target.set("e2e_memory_bytes", 5000, service="market-predictor")
    prometheus = LocalPrometheus(
        tmp_path / "prom", targets={"services": target.address}, rules=E2E_RULES
    ).start()
    try:
        walls, colds, spent, sent = asyncio.run(_diagnoses(model.base_url, prometheus.url))
    finally:
        prometheus.stop()
        target.stop()
    cold_largest = statistics.median(colds)
    cold_each = sum(_cold(model.base_url, body) for body in sent)
    assert model.proc is not None
    peak, now = _rss_mb(model.proc.pid)
    wall = statistics.median(walls)
    reuse = wall / cold_largest
    print(
        f"\nlocal_diagnosis_reuse={reuse:.2f} (target <= 1.5: {'met' if reuse <= 1.5 else 'NOT met'})"
        f"  [diagnosis {wall:.1f}s over {len(sent)} calls (median of "
        f"{', '.join(f'{w:.1f}' for w in walls)}); its largest prompt cold "
        f"{cold_largest:.1f}s (median of {', '.join(f'{c:.1f}' for c in colds)}); every prompt cold {cold_each:.1f}s = ratio "
        f"{cold_each / cold_largest:.2f} without reuse]"
        f"\nlocal_model_rss_mb={now:.0f} peak {peak:.0f} "
        f"(target <= 600: {'met' if peak <= 600 else 'NOT met'})"
    )
    print("local_diagnosis_tokens per run (phase:calls x prompt+answer): " + " | ".join(spent))
    assert len(sent) >= 3


def test_local_first_decision(
    tmp_path: Path, model: LocalModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Print local_first_decision_s: firing alert to decision, on the daemon's cycle."""
    target = MetricsTarget().start()
    prometheus = LocalPrometheus(
        tmp_path / "prom", targets={"services": target.address}, rules=E2E_RULES
    ).start()
    config = write_config(tmp_path / "agent.toml", diagnosis={"request_timeout_seconds": 300})
    env = agent_env(
        tmp_path,
        config,
        prometheus.url,
        "http://127.0.0.1:9",
        OPENAI_BASE_URL=model.base_url,
        OPENAI_API_KEY=KEY,
        LLM_MODEL=ALIAS,
        LLM_TEMPERATURE="0",
        LLM_MAX_TOKENS="512",
        DRY_RUN="true",
    )
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    async def first_decision() -> tuple[float, dict[str, Any]]:
        async with open_runtime(load_settings(env_file=None)) as rt:
            await run_cycle(rt, datetime.now(UTC))  # nothing fires yet
            target.set("e2e_memory_bytes", 5000, service="market-predictor")
            fired = await asyncio.to_thread(wait_firing, prometheus.url)
            while True:
                report = await run_cycle(rt, datetime.now(UTC))
                if report.decisions:
                    return time.monotonic() - fired, report.decisions[0]
                await asyncio.sleep(0.2)

    try:
        seconds, decision = asyncio.run(first_decision())
    finally:
        prometheus.stop()
        target.stop()
    print(
        f"\nlocal_first_decision_s={seconds:.1f} (alert firing to the decision on the local model)"
    )
    # the figure is the local model's: a decision the runbook made after the model failed
    # (a deadline, an unusable answer) would be timing something else
    assert decision["decided_by"] == "llm" and not decision["model_failure"], decision
