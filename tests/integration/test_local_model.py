"""A real model server: the shipped SmolLM2 on llama-cpp-python's OpenAI-compatible server
(what `devops-agent local-model` runs), a real Prometheus with a firing alert, and the
agent's whole diagnosis through it. Real servers differ from any fake: this one refuses
``json_schema`` with HTTP 500, and the client must learn that, not fall back.

A missing runtime or model fails these tests: `make test` installs both."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from agent.clients.http import CappedTransport
from agent.clients.llm import LLMClient, LLMOptions, parse_json_object
from agent.clients.prometheus import PrometheusClient
from agent.diagnosis.engine import DiagnosisDeps, diagnose
from agent.diagnosis.models import RecoveryPlan
from agent.diagnosis.safety import refusal
from agent.local import LocalModel, LocalPrometheus, MetricsTarget, free_port
from agent.local.model import ALIAS
from agent.sweep.collector import fetch_alerts
from agent.sweep.findings import Finding
from tests.conftest import MakePrometheus, make_config
from tests.integration.conftest import eventually
from tests.llm_fakes import phase_of

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def local_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalModel]:
    """The shipped model served locally, shared by this module's tests."""
    server = LocalModel(tmp_path_factory.mktemp("model")).start()
    yield server
    server.stop()


class Recording(httpx.AsyncBaseTransport):
    """Keeps every chat request and the server's answer, as the server sent them."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.exchanges: list[tuple[dict[str, Any], int, dict[str, Any]]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        body = await response.aread()
        if request.url.path.endswith("/chat/completions"):
            sent = json.loads(request.content)
            self.exchanges.append((sent, response.status_code, json.loads(body)))
        return httpx.Response(
            response.status_code, headers=response.headers, content=body, request=request
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
async def recorded(local_model: LocalModel) -> AsyncIterator[tuple[LLMClient, Recording]]:
    """A model client for the local server whose every exchange is recorded."""
    recording = Recording()
    http = httpx.AsyncClient(transport=CappedTransport(2_000_000, recording), timeout=180)
    api = openai.AsyncOpenAI(
        api_key=local_model.api_key, base_url=local_model.base_url, http_client=http, max_retries=0
    )
    options = LLMOptions(
        model=ALIAS, temperature=0, max_tokens=512, max_retries=1, request_timeout=180
    )
    yield LLMClient(api=api, options=options), recording
    await http.aclose()


async def _firing(prometheus: PrometheusClient) -> Finding:
    config = make_config()

    async def seen() -> list[Finding]:
        return (await fetch_alerts(prometheus, config.prometheus, datetime.now(UTC))).findings

    [finding] = await eventually(seen, what="the leak alert to fire")
    return finding


async def test_a_whole_diagnosis_on_the_real_local_model(
    recorded: tuple[LLMClient, Recording],
    e2e_prometheus: LocalPrometheus,
    services_target: MetricsTarget,
    make_prometheus: MakePrometheus,
) -> None:
    """Triage, investigation and plan on the shipped model: decided by the model (no
    runbook fallback), a decision the safety checks pass, the per-phase tokens are the
    server's own usage, the transcript holds each phase, and the server's refusal of
    json_schema (two 500s in a row) was learned once."""
    llm, recording = recorded
    services_target.set("e2e_memory_bytes", 5000, service="market-predictor")
    prometheus = make_prometheus(e2e_prometheus.url)
    finding = await _firing(prometheus)
    # The shipped model is tiny and unsure of itself (about 0.5): the confidence floor is
    # policy, not validity, so this test lowers it to see the model's own plan go through.
    config = make_config(diagnosis={"min_confidence": 0.0, "deadline_seconds": 900})
    result = await diagnose(finding, DiagnosisDeps(config, prometheus, llm), datetime.now(UTC))
    decision = result.decision
    assert decision.decided_by == "llm", decision.fallback_reason
    assert decision.fallback_reason == "" and decision.model_failure == ""
    answered = [(sent, body) for sent, status, body in recording.exchanges if status == 200]
    # The model's own plan, as the server sent it (not the decision the agent made of it):
    # a valid plan, naming a catalogue action on a service it may name, and not refused.
    [*_, last_plan] = [body for sent, body in answered if phase_of(sent) == "plan"]
    plan = RecoveryPlan.model_validate(
        parse_json_object(last_plan["choices"][0]["message"]["content"])
    )
    assert refusal(plan.action, plan.target, plan.confidence, finding, config) is None, plan
    assert (decision.action, decision.target) == (plan.action, plan.target)
    assert not decision.reason.startswith("plan refused"), decision.reason
    refused = [status for _, status, _ in recording.exchanges if status != 200]
    # json_schema: refused by a 500, which is learned only when it comes twice in a row;
    # every later call used what was learned.
    assert refused == [500, 500]
    assert llm.features.structured == "json_object_schema"
    by_phase: dict[str, tuple[int, int]] = {}
    for sent, body in answered:
        prompt, completion = by_phase.get(phase_of(sent), (0, 0))
        usage = body["usage"]
        by_phase[phase_of(sent)] = (
            prompt + usage["prompt_tokens"],
            completion + usage["completion_tokens"],
        )
    assert {p: (u.prompt_tokens, u.completion_tokens) for p, u in result.usage.items()} == by_phase
    assert set(by_phase) == {"triage", "investigation", "plan"}
    phases = {m["phase"] for m in result.transcript}
    assert {"context", "triage", "investigation", "plan"} <= phases
    prefixes = {json.dumps(sent["messages"][:2]) for sent, _ in answered}
    assert len(prefixes) == 1  # one stable prefix for every phase


def test_local_model_command_prints_the_url_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`devops-agent local-model` serves on loopback behind a key of its own, prints the
    OPENAI_BASE_URL and the key to use, refuses a request without the key, answers one
    with it, and exits 0 on SIGTERM with nothing left running."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "local-model", "--port", str(port)],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PORT": "1", "API_KEY": "x"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(4)]
        assert lines[1].strip() == f"OPENAI_BASE_URL=http://127.0.0.1:{port}/v1", lines
        assert lines[2].strip() == f"LLM_MODEL={ALIAS}"
        key = lines[3].strip().removeprefix("OPENAI_API_KEY=")
        assert key.startswith("sk-local-") and len(key) > 30, lines
        url = f"http://127.0.0.1:{port}/v1/models"
        assert httpx.get(url, timeout=10).status_code == 401
        wrong = {"Authorization": "Bearer x"}
        assert httpx.get(url, timeout=10, headers=wrong).status_code == 401
        models = httpx.get(url, timeout=10, headers={"Authorization": f"Bearer {key}"}).json()
        assert [m["id"] for m in models["data"]] == [ALIAS]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "model server stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5)
    leftovers = subprocess.run(
        ["pgrep", "-f", f"llama_cpp.server.*--port {port}"], capture_output=True, text=True
    )
    assert leftovers.stdout.strip() == ""


def test_local_model_refuses_a_port_another_process_serves(tmp_path: Path) -> None:
    """Something already answers on the port: one line naming it, exit 1, and never a
    "serving" line (it would have pointed the agent at a stranger's server)."""
    squatter = ThreadingHTTPServer(("127.0.0.1", 0), _AnswersEverything)
    threading.Thread(target=squatter.serve_forever, daemon=True).start()
    port = squatter.server_address[1]
    try:
        result = subprocess.run(
            [sys.executable, "-m", "agent", "local-model", "--port", str(port)],
            cwd=tmp_path,
            env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        squatter.shutdown()
        squatter.server_close()
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"devops-agent: 127.0.0.1:{port} is taken by another process (Address already in "
        "use); stop it or choose another port with --port"
    ]


class _AnswersEverything(BaseHTTPRequestHandler):
    """A squatter that answers 200 to anything, as an OpenAI-compatible server would."""

    def do_GET(self) -> None:
        raw = b'{"object": "list", "data": [{"id": "local"}]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: object) -> None:
        return
