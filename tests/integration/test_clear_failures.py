"""What a new user sees when a peer is wrong: `sweep` run against a refused, unknown,
hanging or oversized Prometheus exits 1 with one line naming the URL and the cause (and
the setting to change when a limit was hit), and `check-config --probe` asks every
configured peer, real ones and dead ports."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agent.demo.gateway_sim import GatewaySimulator
from agent.local import LocalAlertmanager, LocalPrometheus, free_port
from tests.conftest import BASE_ENV, CONFIG, run_cli
from tests.llm_fakes import FakeModel

pytestmark = pytest.mark.integration


def _config(tmp_path: Path, **prometheus: object) -> Path:
    """The shipped config with [prometheus] keys changed."""
    text = CONFIG.read_text()
    for key, value in prometheus.items():
        text = text.replace(f"\n{key} = ", f"\n{key} = {value}  # test\n# was: ", 1)
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def _sweep(tmp_path: Path, prometheus_url: str, config: Path | None = None) -> tuple[int, str]:
    env = {
        **BASE_ENV,
        "PROMETHEUS_URL": prometheus_url,
        "AGENT_STATE_URL": f"sqlite:///{tmp_path / 'agent.db'}",
        "AGENT_CONFIG": str(config or CONFIG),
        "LOG_LEVEL": "ERROR",
    }
    done = run_cli("sweep", env=env, cwd=tmp_path)
    return done.returncode, done.stderr


@pytest.fixture
def hanging() -> Iterator[str]:
    """A TCP server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


@pytest.fixture
def oversized() -> Iterator[str]:
    """A Prometheus stand-in whose every answer is a 100 kB JSON document."""
    body = json.dumps({"status": "success", "data": {"result": [], "pad": "x" * 100_000}})

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            raw = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert "Traceback" not in stderr
    return lines[0]


def test_sweep_against_refused_prometheus_exits_1_naming_url(tmp_path: Path) -> None:
    """Nothing listens: exit 1, one line with the URL and 'connection refused'."""
    port = free_port()
    code, err = _sweep(tmp_path, f"http://127.0.0.1:{port}")
    assert code == 1
    assert _one_line(err) == (
        "devops-agent: sweep saw nothing, every source failed: "
        f"Prometheus at http://127.0.0.1:{port} unreachable: connection refused"
    )


def test_sweep_against_unknown_host_names_dns(tmp_path: Path) -> None:
    """A host name that does not resolve: exit 1, the URL and the DNS failure."""
    code, err = _sweep(tmp_path, "http://prometheus.invalid:9090")
    assert code == 1
    line = _one_line(err)
    assert line.startswith(
        "devops-agent: sweep saw nothing, every source failed: "
        "Prometheus at http://prometheus.invalid:9090 unreachable: DNS lookup failed ("
    ), line


def test_sweep_credentials_never_shown(tmp_path: Path) -> None:
    """A URL with user and password is named without them."""
    port = free_port()
    code, err = _sweep(tmp_path, f"http://admin:hunter2@127.0.0.1:{port}")
    assert code == 1
    line = _one_line(err)
    assert f"Prometheus at http://127.0.0.1:{port} unreachable" in line
    assert "hunter2" not in err and "admin" not in err


def test_sweep_against_hanging_prometheus_names_timeout_setting(
    tmp_path: Path, hanging: str
) -> None:
    """A server that never answers: exit 1, the deadline and the setting that sets it."""
    config = _config(tmp_path, query_timeout_seconds=1)
    code, err = _sweep(tmp_path, hanging, config)
    assert code == 1
    line = _one_line(err)
    assert f"Prometheus at {hanging} (/api/v1/alerts): no whole answer within 1s" in line
    assert "(prometheus.query_timeout_seconds)" in line


def test_sweep_against_oversized_answers_names_size_setting(tmp_path: Path, oversized: str) -> None:
    """Answers over the cap: exit 1, the cap and the setting to raise, also in --json."""
    config = _config(tmp_path, max_answer_bytes=2048)
    code, err = _sweep(tmp_path, oversized, config)
    assert code == 1
    line = _one_line(err)
    assert "bytes is over the 2048-byte cap (prometheus.max_answer_bytes)" in line
    assert f"Prometheus at {oversized} (/api/v1/alerts)" in line
    env = {
        **BASE_ENV,
        "PROMETHEUS_URL": oversized,
        "AGENT_STATE_URL": f"sqlite:///{tmp_path / 'agent.db'}",
        "AGENT_CONFIG": str(config),
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "json",
    }
    done = run_cli("sweep", "--json", env=env, cwd=tmp_path)
    assert done.returncode == 1
    report = json.loads(done.stdout)
    errors = [s["error"] for s in report["sources"] if not s["ok"]]
    assert errors and all("(prometheus.max_answer_bytes)" in e for e in errors)
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    failed = [e for e in events if e.get("event") == "sweep_source_failed"]
    assert failed and all("(prometheus.max_answer_bytes)" in e["error"] for e in failed)


def test_sweep_with_one_source_answering_exits_0(tmp_path: Path) -> None:
    """Prometheus answers but Alertmanager is down: exit 0, the failed source listed."""
    prometheus = LocalPrometheus(tmp_path / "prom", targets={}).start()
    try:
        env = {
            **BASE_ENV,
            "PROMETHEUS_URL": prometheus.url,
            "ALERTMANAGER_URL": f"http://127.0.0.1:{free_port()}",
            "AGENT_STATE_URL": f"sqlite:///{tmp_path / 'agent.db'}",
            "LOG_LEVEL": "ERROR",
        }
        done = run_cli("sweep", env=env, cwd=tmp_path)
    finally:
        prometheus.stop()
    assert done.returncode == 0, done.stderr
    assert "failed sources: alertmanager" in done.stdout


def test_probe_real_peers_ok_and_dead_ports_fail(tmp_path: Path) -> None:
    """--probe against a real Prometheus, Alertmanager, gateway simulator and model, and a
    store not made yet: five ok lines, exit 0; the same with dead ports: a line per peer
    naming each URL, exit 1."""
    alertmanager = LocalAlertmanager(tmp_path / "am", free_port()).start()
    prometheus = LocalPrometheus(tmp_path / "prom", targets={}).start()
    gateway = GatewaySimulator().start()
    model = FakeModel()
    env = {
        **BASE_ENV,
        "PROMETHEUS_URL": prometheus.url,
        "ALERTMANAGER_URL": alertmanager.url,
        "AI_COMMAND_GATEWAY_URL": gateway.url,
        "OPENAI_BASE_URL": model.base_url,
    }
    try:
        good = run_cli("check-config", "--probe", env=env, cwd=tmp_path)
    finally:
        model.stop()
        gateway.stop()
        prometheus.stop()
        alertmanager.stop()
    assert good.returncode == 0, good.stdout + good.stderr
    ok = [line.strip() for line in good.stdout.splitlines() if line.strip().startswith("ok")]
    assert len(ok) == 5, good.stdout
    assert "ok (none yet: the daemon creates it when it first starts)" in good.stdout
    assert f"Prometheus at {prometheus.url}: ok (version " in good.stdout
    assert f"Alertmanager at {alertmanager.url}: ok (version " in good.stdout
    assert f"gateway at {gateway.url}: ok (healthy" in good.stdout
    assert f"model at {model.base_url}: ok (serves gpt-4o)" in good.stdout

    dead = {k: f"http://127.0.0.1:{free_port()}" for k in ("p", "a", "g", "m")}
    env.update(
        PROMETHEUS_URL=dead["p"],
        ALERTMANAGER_URL=dead["a"],
        AI_COMMAND_GATEWAY_URL=dead["g"],
        OPENAI_BASE_URL=dead["m"] + "/v1",
    )
    bad = run_cli("check-config", "--probe", env=env, cwd=tmp_path)
    assert bad.returncode == 1
    failed = [line.strip() for line in bad.stdout.splitlines() if line.strip().startswith("FAIL")]
    assert failed == [
        f"FAIL  Prometheus at {dead['p']} unreachable: connection refused",
        f"FAIL  Alertmanager at {dead['a']} unreachable: connection refused",
        f"FAIL  gateway at {dead['g']} unreachable: connection refused",
        f"FAIL  model at {dead['m']}/v1 unreachable: connection refused",
    ]
    assert _one_line(bad.stderr).startswith("devops-agent: 4 of 5 probes failed: ")
