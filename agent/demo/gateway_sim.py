"""A local AI Command Gateway that behaves like the deployed one (``src/gateway/`` of the
open-source gateway), for ``make demo`` and the tests.

What it copies from the deployed gateway:

- **one request at a time**: the deployed handler is ``async`` but calls its model and
  the docker command synchronously, so its event loop serves nothing else meanwhile
  (``/health`` included); here one lock is held for every request;
- ``Idempotency-Key`` is ignored (only recorded), and a request whose client gave up is
  still carried out to the end;
- the command comes from a *command writer* fed with the intent and the ``context``: the
  deployed one is a model whose prompt pastes the context under the intent, so an
  explicit docker command in the context wins here too, the way a gullible model would
  follow it;
- the writer's command passes the deployed gateway's own check (``docker`` plus an allowed
  subcommand, a few dangerous patterns refused), which lets ``docker system prune`` and
  ``docker exec ... sh -c`` through; a refused command answers ``LLM_GENERATION_FAILED``
  with ``error_code: LLM_ERROR``;
- answers carry ``error_details = {error_code, error_message}``: ``VALIDATION_ERROR`` /
  ``UNKNOWN_SERVICE`` for a name outside its fixed set, HTTP 422 with FastAPI's
  ``{"detail": [...]}`` for a malformed body, ``/openapi.json`` describing its answers.

Optional: slowness (``delay`` seconds of "model time" per execute request), a token it
requires (401 without, 403 wrong), the first answer generation, a model that is down, and
scripted answers served before anything else. Every request is recorded, and every
command that "ran".
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KNOWN_SERVICES = ("market-predictor", "coding-ai-agent", "devops-ai-agent")
#: The deployed gateway's check: these subcommands pass, these patterns do not.
ALLOWED_SUBCOMMANDS = frozenset(
    {"restart", "start", "stop", "logs", "exec", "ps", "inspect", "stats", "top", "port"}
    | {"diff", "commit", "images", "version", "info", "system"}
)
DANGEROUS = ("rm -rf", "rmi -f", "--privileged", "sudo su", "mkfs", "fdisk")
_DOCKER_IN_TEXT = re.compile(r"docker\s+[^\n;\"']+")


@dataclass
class ActResult:
    """What the simulated command did."""

    exit_code: int = 0
    stdout: str = ""
    stderr: str = ""


@dataclass
class Recorded:
    """One request the simulator received."""

    path: str
    headers: dict[str, str]
    body: Any
    received_at: float = field(default_factory=time.monotonic)
    #: When its turn came (the simulator serves one request at a time), and when it ended.
    started_at: float | None = None
    finished_at: float | None = None


@dataclass
class Scripted:
    """A canned answer served before anything else."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def write_command(intent: str, container: str, context: str) -> str:
    """The command a gullible model would write for this intent and context."""
    if found := _DOCKER_IN_TEXT.search(context):
        return found.group().strip()
    text = intent.lower()
    for words, command in (
        (("restart",), f"docker restart {container}"),
        (("stop",), f"docker stop {container}"),
        (("start",), f"docker start {container}"),
        (("log",), f"docker logs --tail 50 {container}"),
        (("memory", "cpu", "resource"), f"docker stats --no-stream {container}"),
        (("health", "running"), f"docker ps --filter name={container}"),
    ):
        if any(w in text for w in words):
            return command
    return f"echo cannot turn {intent!r} into a docker command"


def passes_check(command: str) -> bool:
    """The deployed gateway's check of a generated command, rule for rule."""
    parts = command.strip().split()
    if len(parts) < 2 or parts[0] != "docker" or parts[1] not in ALLOWED_SUBCOMMANDS:
        return False
    if parts[1] == "exec" and len(parts) < 4:
        return False
    lowered = command.lower()
    return not any(p in lowered for p in DANGEROUS)


def _default_act(target: str, command: str) -> ActResult:
    return ActResult(stdout=f"{target}\n")


def _openapi(generation: int) -> dict[str, Any]:
    result: dict[str, Any] = (
        {"$ref": "#/components/schemas/ExecutionResult"}
        if generation == 2
        else {"type": "string", "title": "Execution Result"}
    )
    return {
        "openapi": "3.1.0",
        "info": {"title": "AI Command Gateway", "version": "1.0.0"},
        "paths": {"/execute-docker-command": {"post": {}}, "/health": {"get": {}}},
        "components": {
            "schemas": {
                "ExecutionDetails": {
                    "type": "object",
                    "properties": {"command": {"type": "string"}, "execution_result": result},
                }
            }
        },
    }


class GatewaySimulator:
    """Serves the gateway contract on 127.0.0.1 in a background thread, one request at a time."""

    def __init__(
        self,
        act: Callable[[str, str], ActResult] = _default_act,
        *,
        known_services: tuple[str, ...] = KNOWN_SERVICES,
        delay: float = 0.0,
        token: str | None = None,
        generation: int = 2,
        port: int = 0,
    ) -> None:
        self.act = act
        self.known_services = known_services
        self.delay = delay
        self.token = token
        self.generation = generation
        self.model_down = False
        self.requests: list[Recorded] = []
        self.commands: list[str] = []
        self.script: list[Scripted] = []
        self._record_lock = threading.Lock()
        self._serial = threading.Lock()  # the deployed gateway serves one request at a time
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> GatewaySimulator:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def executions(self) -> list[Recorded]:
        """The execute requests received so far."""
        with self._record_lock:
            return [r for r in self.requests if r.path == "/execute-docker-command"]

    def ran(self) -> list[str]:
        """Every command that ran, in order."""
        with self._record_lock:
            return list(self.commands)

    def _envelope(self, status: str, **fields: Any) -> dict[str, Any]:
        return {
            "request_id": str(uuid.uuid4()),
            "timestamp_processed_utc": datetime.now(UTC).replace(tzinfo=None).isoformat(),
            "overall_status": status,
            "execution_details": None,
            "error_details": None,
            **fields,
        }

    def _error(self, status: str, code: str, message: str) -> tuple[int, Any]:
        details = {"error_code": code, "error_message": message}
        return 200, self._envelope(status, error_details=details)

    def answer(self, body: Any) -> tuple[int, Any]:
        """The gateway's answer to one execute request (called with the serial lock held)."""
        try:
            target = body["target_resource"]["name"]
            intent = body["action_request"]["intent"]
            context = body["action_request"].get("context") or ""
            if not all(isinstance(v, str) for v in (body["source_id"], target, intent, context)):
                raise TypeError
        except (KeyError, TypeError):
            detail = [{"type": "missing", "loc": ["body"], "msg": "Field required"}]
            return 422, {"detail": detail}
        if target not in self.known_services:
            return self._error(
                "VALIDATION_ERROR", "UNKNOWN_SERVICE", f"Unknown logical service name: {target}"
            )
        time.sleep(self.delay)  # the gateway's model at work
        if self.model_down:
            return self._error(
                "LLM_GENERATION_FAILED", "LLM_ERROR", "LLM generation failed: Connection error."
            )
        command = write_command(intent, target, context)
        if not passes_check(command):
            return self._error(
                "LLM_GENERATION_FAILED",
                "LLM_ERROR",
                f"Generated command failed validation: {command}",
            )
        with self._record_lock:
            self.commands.append(command)
        return 200, self._result(command, self.act(target, command))

    def _result(self, command: str, result: ActResult) -> dict[str, Any]:
        ok = result.exit_code == 0
        if self.generation == 1:
            return {
                "overall_status": "success" if ok else "error",
                "execution_details": {
                    "command": command,
                    "execution_result": result.stdout + result.stderr,
                    "execution_time_ms": 5,
                },
            }
        return self._envelope(
            "COMPLETED_SUCCESS" if ok else "COMPLETED_FAILURE",
            execution_details={
                "command": command,
                "execution_result": {
                    "status": "SUCCESS" if ok else "FAILURE",
                    "exit_code": result.exit_code,
                    "stdout": result.stdout,
                    "stderr": result.stderr,
                },
            },
        )

    def _auth(self, headers: dict[str, str]) -> tuple[int, Any] | None:
        if self.token is None:
            return None
        given = headers.get("Authorization", "")
        if not given:
            return 401, {"detail": "Not authenticated"}
        if given != f"Bearer {self.token}":
            return 403, {"detail": "Invalid token"}
        return None

    def _route(
        self, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        with self._record_lock:
            scripted = self.script.pop(0) if self.script else None
        if scripted is not None:
            return scripted.status, scripted.body, scripted.headers
        if method == "GET" and path == "/health":
            now = datetime.now(UTC).isoformat()
            return (
                200,
                {"status": "healthy", "timestamp": now, "version": "1.0.0", "checks": {}},
                {},
            )
        if method == "GET" and path == "/openapi.json":
            return 200, _openapi(self.generation), {}
        if method != "POST" or path != "/execute-docker-command":
            return 404, {"detail": "Not Found"}, {}
        denied = self._auth(headers)
        if denied is not None:
            return (*denied, {})
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        return (*self.answer(body), {})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        sim = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                record = Recorded(self.path, dict(self.headers.items()), body)
                with sim._record_lock:
                    sim.requests.append(record)
                with sim._serial:
                    record.started_at = time.monotonic()
                    status, answer, headers = sim._route(
                        method, self.path, dict(self.headers.items()), raw
                    )
                    record.finished_at = time.monotonic()
                self._send(status, answer, headers)

            def _send(self, status: int, body: Any, headers: dict[str, str]) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up; the work was done all the same

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def log_message(self, format: str, *args: object) -> None:
                return

        return Handler
