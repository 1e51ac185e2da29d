"""Fakes of an OpenAI-compatible chat-completions API: canned bodies for pytest-httpx, and
a real-socket server (FakeModel) for subprocess tests and benchmarks. The server estimates
prompt tokens from the request it received (characters / 4).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LLM_BASE = "http://llm.test/v1"
CHAT_URL = f"{LLM_BASE}/chat/completions"


def completion(
    content: str | None = None,
    tool_calls: list[tuple[str, dict[str, Any]]] | None = None,
    prompt_tokens: int = 300,
    completion_tokens: int = 40,
) -> dict[str, Any]:
    """A chat.completion body with optional tool calls (name, arguments)."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            for i, (name, args) in enumerate(tool_calls)
        ]
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1764000000,
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if tool_calls else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def triage(actionable: bool = True) -> dict[str, Any]:
    """A triage answer."""
    return completion(
        json.dumps(
            {
                "actionable": actionable,
                "urgency": "high",
                "reason": "memory grows",
            }
        )
    )


def plan(
    action: str = "restart", target: str = "market-predictor", confidence: float = 0.9
) -> dict[str, Any]:
    """A plan answer."""
    return completion(
        json.dumps(
            {
                "action": action,
                "target": target,
                "confidence": confidence,
                "root_cause": "memory leak in the model cache",
                "rationale": "working set grew steadily; a restart frees it",
                "evidence": ["memory +38% in 20 min"],
                "verification": 'demo_memory_bytes{service="market-predictor"} > 4e8',
            }
        )
    )


def phase_of(body: dict[str, Any]) -> str:
    """The phase a request belongs to, from its last instruction (every phase shares the
    system prompt and the finding, then says which phase it is)."""
    for message in reversed(body["messages"]):
        content = message.get("content") or ""
        if message["role"] != "user":
            continue
        if content.startswith("Phase 1, triage"):
            return "triage"
        if content.startswith("Phase 2, investigation"):
            return "investigation"
        if content.startswith(("Phase 3, plan", "Your answer was not valid")):
            return "plan"
    raise AssertionError("no phase instruction in the request")


def estimate_tokens(body: dict[str, Any]) -> int:
    """Characters / 4 over messages and tool definitions."""
    text = json.dumps(body.get("messages", [])) + json.dumps(body.get("tools", []))
    return math.ceil(len(text) / 4)


def answer(body: dict[str, Any], *, read_logs: bool = False) -> dict[str, Any]:
    """The canned answer for the phase the request belongs to; ``read_logs`` also asks
    for the service's logs where the tool is offered."""
    phase = phase_of(body)
    tokens = estimate_tokens(body)
    if phase == "triage":
        reply = triage()
    elif phase == "investigation":
        used_tools = any(m.get("role") == "tool" for m in body["messages"])
        if "tools" in body and not used_tools:
            calls: list[tuple[str, dict[str, Any]]] = [
                ("prom_query", {"expr": "bench_memory_bytes"}),
                ("prom_range", {"expr": "bench_memory_bytes", "minutes": 30}),
            ]
            if read_logs and "recent_logs" in {t["function"]["name"] for t in body["tools"]}:
                calls.append(("recent_logs", {"service": "market-predictor", "lines": 100}))
            reply = completion(None, calls)
        else:
            reply = completion(
                "Working-set memory rose from 210 MB to 480 MB over 25 minutes with no "
                "traffic change; GC pauses grew; a leak in the request cache is likely."
            )
    else:
        # Follow the schema as a compliant model does: the target is the finding's own service.
        schema = body.get("response_format", {}).get("json_schema", {}).get("schema", {})
        targets = schema.get("properties", {}).get("target", {}).get("enum") or ["market-predictor"]
        reply = plan(target=targets[0])
    reply["usage"]["prompt_tokens"] = tokens
    return reply


def answer_reading_logs(body: dict[str, Any]) -> dict[str, Any]:
    """``answer``, with one read of the logs in the investigation."""
    return answer(body, read_logs=True)


def answer_reading_logs_first(body: dict[str, Any]) -> dict[str, Any]:
    """A model that asks for its finding's service's logs first, offered or not, then
    restarts a memory leak and escalates anything else (the finding names the service:
    market-predictor or coding-ai-agent)."""
    finding = body["messages"][1]["content"]
    service = next(s for s in ("market-predictor", "coding-ai-agent") if s in finding)
    phase = phase_of(body)
    if phase == "triage":
        return triage()
    if phase == "investigation":
        if any(m["role"] == "tool" for m in body["messages"]):
            return completion("Looked at the logs and the metrics.")
        return completion(None, [("recent_logs", {"service": service, "lines": 50})])
    return plan(action="restart" if "MemoryLeak" in finding else "escalate", target=service)


class FakeModel:
    """Serves chat completions on 127.0.0.1, each after ``delay`` seconds (or what
    ``delay_for`` says for that request body); ``responder`` writes each answer from the
    request body (``answer`` by default)."""

    def __init__(
        self,
        delay: float = 0.0,
        responder: Callable[[dict[str, Any]], dict[str, Any]] = answer,
        delay_for: Callable[[dict[str, Any]], float] | None = None,
    ) -> None:
        self.delay = delay
        self.responder = responder
        self.delay_for = delay_for
        #: Requests received (counted on arrival) and answered (counted once answered).
        self.started = 0
        self.calls = 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                listing = {"object": "list", "data": [{"id": "gpt-4o", "object": "model"}]}
                raw = json.dumps(listing).encode()
                self.send_response(200 if self.path.endswith("/models") else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    outer.started += 1
                time.sleep(outer.delay_for(body) if outer.delay_for else outer.delay)
                with lock:
                    outer.calls += 1
                raw = json.dumps(outer.responder(body)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        """The OpenAI base URL to configure."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
