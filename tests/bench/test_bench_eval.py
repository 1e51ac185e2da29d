"""Benchmark of `devops-agent eval` (eval_overhead).

The wall time of an evaluation of every shipped case with a model that answers at once
(backfill, throwaway Prometheus, a store and a stand-in gateway per run, scoring), over
the time the same diagnoses take alone: the agent's `diagnose` on each case's finding,
one after another, against a Prometheus already holding the histories. Target <= 1.5.
Also printed: the same ratio for ``--iterations 5``.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import pytest

from agent.clients.llm import LLMOptions, build_llm_client
from agent.clients.prometheus import PrometheusClient
from agent.clients.prometheus import build_http_client as prometheus_http
from agent.diagnosis.engine import DiagnosisDeps, diagnose
from agent.eval.case import Case, load_cases
from agent.eval.runner import _start_backends, run_eval, settings_for_case
from agent.settings import Settings, load_settings
from tests.conftest import BASE_ENV
from tests.eval_fakes import ScriptedModel
from tests.llm_fakes import FakeModel


async def _alone(settings: Settings, cases: list[Case], workdir: Path) -> tuple[float, int]:
    """Seconds the diagnoses take by themselves (Prometheus started beforehand)."""
    backends = await _start_backends(workdir, cases)
    env, config = settings.env, settings.config
    options = LLMOptions(
        model=env.llm_model,
        temperature=env.llm_temperature,
        max_tokens=env.llm_max_tokens,
        max_retries=0,
        request_timeout=30,
    )
    llm, llm_http = build_llm_client(
        api_key=env.openai_api_key.get_secret_value(), base_url=env.openai_base_url, options=options
    )
    diagnosed = 0
    try:
        started = time.perf_counter()
        for backend in backends:
            async with prometheus_http(
                backend.url, timeout=10, bearer_token=None, verify=True
            ) as http:
                prometheus = PrometheusClient(http, timeout=10, max_bytes=50_000_000)
                for case in backend.cases:
                    scoped = settings_for_case(settings, case, workdir / "unused.db").config
                    deps = DiagnosisDeps(config=scoped, prometheus=prometheus, llm=llm)
                    at = backend.at[case.id]
                    finding = case.to_finding(at, config.prometheus.target_labels)
                    await diagnose(finding, deps, at)
                    diagnosed += 1
        return time.perf_counter() - started, diagnosed
    finally:
        await llm_http.aclose()
        for backend in backends:
            backend.stop()


def test_eval_overhead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Print eval's wall time over the diagnoses' own time, for every shipped case."""
    for key, value in BASE_ENV.items():
        monkeypatch.setenv(key, value)
    loaded = load_cases([])
    cases = [item.case for item in loaded]
    script = ScriptedModel(cases, load_settings(env_file=None).config, pattern="oracle")
    model = FakeModel(delay=0.0, responder=script)
    monkeypatch.setenv("OPENAI_BASE_URL", model.base_url)
    settings = load_settings(env_file=None)
    try:
        with tempfile.TemporaryDirectory() as tmp:  # warm up: imports, first connections
            asyncio.run(_alone(settings, cases, Path(tmp)))
        started = time.perf_counter()
        result = asyncio.run(run_eval(settings, loaded, iterations=1, concurrency=1))
        eval_seconds = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as tmp:
            alone_seconds, diagnosed = asyncio.run(_alone(settings, cases, Path(tmp)))
        started = time.perf_counter()
        asyncio.run(run_eval(settings, loaded, iterations=5, concurrency=1))
        five_seconds = time.perf_counter() - started
    finally:
        model.stop()
    total = result.total()
    assert total.runs == diagnosed == len(cases) and total.unsafe == 0
    ratio = eval_seconds / alone_seconds
    print(
        f"\ncases={len(cases)} model_calls={total.model_calls}"
        f"\neval_seconds={eval_seconds:.2f} diagnoses_alone_seconds={alone_seconds:.2f}"
        f"\neval_overhead={ratio:.2f} (target <= 1.5: {'met' if ratio <= 1.5 else 'NOT met'})"
        f"\nwith --iterations 5: eval_seconds={five_seconds:.2f} "
        f"eval_overhead={five_seconds / (5 * alone_seconds):.2f} (the backfill and the "
        "Prometheus start are paid once per evaluation)"
    )
