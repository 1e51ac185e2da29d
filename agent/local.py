"""Start a real Prometheus or Alertmanager (Debian packages) on a free loopback port.

Each server gets its own directory for config, rules and storage, is started as a child
process and is stopped (terminate, then kill) by ``stop()``; nothing is left running.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class MissingBinary(RuntimeError):
    """A Debian package the local parts need is not installed."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_binary(*names: str) -> str:
    """The first of ``names`` on PATH; MissingBinary naming the Debian package otherwise."""
    for name in names:
        if path := shutil.which(name):
            return path
    raise MissingBinary(f"{names[0]} is not installed (run `make install`)")


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers 200; RuntimeError with the reason on timeout."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout:g}s: {last}")


class LocalServer:
    """A child process serving HTTP on 127.0.0.1:port."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, argv: Sequence[str], ready_path: str) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "server.log").open("ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        log.close()
        try:
            wait_http(self.url + ready_path, proc=self.proc)
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        """Terminate the process, kill it if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


class LocalPrometheus(LocalServer):
    """A real Prometheus scraping the given targets every second, with the given rules."""

    def __init__(
        self,
        workdir: Path,
        *,
        targets: dict[str, str],
        rules: str = "groups: []\n",
        alertmanager_url: str | None = None,
        port: int | None = None,
        external_labels: dict[str, str] | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(workdir, port or free_port())
        self.extra_args = tuple(extra_args)
        self.targets = targets  # job name -> host:port
        self.rules = rules
        self.alertmanager_url = alertmanager_url
        self.external_labels = external_labels or {}

    def config(self) -> dict[str, object]:
        """The prometheus.yml content (JSON is valid YAML)."""
        cfg: dict[str, object] = {
            "global": {
                "scrape_interval": "1s",
                "evaluation_interval": "1s",
                "external_labels": self.external_labels,
            },
            "rule_files": [str(self.workdir / "rules.yml")],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [addr]}]}
                for job, addr in self.targets.items()
            ],
        }
        if self.alertmanager_url:
            host = self.alertmanager_url.split("://", 1)[1]
            cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [host]}]}]}
        return cfg

    def start(self) -> LocalPrometheus:
        """Write config and rules, start the server, wait until it is ready."""
        binary = find_binary("prometheus")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "rules.yml").write_text(self.rules)
        (self.workdir / "prometheus.yml").write_text(json.dumps(self.config(), indent=2))
        self._spawn(
            [
                binary,
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
                *self.extra_args,
            ],
            "/-/ready",
        )
        return self


class LocalAlertmanager(LocalServer):
    """A real Alertmanager: one catch-all route, to nowhere or to a webhook receiver."""

    def __init__(
        self,
        workdir: Path,
        port: int,
        *,
        webhook_url: str | None = None,
        webhook_token: str | None = None,
    ) -> None:
        super().__init__(workdir, port)
        self.webhook_url = webhook_url
        self.webhook_token = webhook_token

    def config(self) -> dict[str, object]:
        """The alertmanager.yml content (JSON is valid YAML)."""
        if self.webhook_url is None:
            return {
                "route": {"receiver": "null", "group_wait": "1s"},
                "receivers": [{"name": "null"}],
            }
        hook: dict[str, object] = {"url": self.webhook_url, "max_alerts": 100}
        if self.webhook_token is not None:
            hook["http_config"] = {
                "authorization": {"type": "Bearer", "credentials": self.webhook_token}
            }
        return {
            "route": {
                "receiver": "devops-agent",
                "group_by": ["alertname", "service"],
                "group_wait": "0s",
                "group_interval": "1s",
                "repeat_interval": "1h",
            },
            "receivers": [{"name": "devops-agent", "webhook_configs": [hook]}],
        }

    def start(self) -> LocalAlertmanager:
        """Write config, start the server (clustering off), wait until ready."""
        binary = find_binary("prometheus-alertmanager", "alertmanager")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.config()
        (self.workdir / "alertmanager.yml").write_text(json.dumps(config))
        self._spawn(
            [
                binary,
                f"--config.file={self.workdir / 'alertmanager.yml'}",
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            "/-/ready",
        )
        return self


class MetricsTarget:
    """A scrape target whose exposition text the caller sets; runs in a thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._series: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = target.exposition().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        """host:port to scrape."""
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def set(self, name: str, value: float, /, **labels: str) -> None:
        """Set one gauge sample."""
        with self._lock:
            self._series[(name, tuple(sorted(labels.items())))] = value

    def remove(self, name: str, /, **labels: str) -> None:
        """Drop one sample from the exposition."""
        with self._lock:
            self._series.pop((name, tuple(sorted(labels.items()))), None)

    def exposition(self) -> str:
        """The current samples in the text exposition format."""
        with self._lock:
            items = list(self._series.items())
        lines = []
        for (name, labels), value in items:
            rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(f"{name}{{{rendered}}} {value!r}")
        return "\n".join(lines) + "\n"

    def start(self) -> MetricsTarget:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


@contextlib.contextmanager
def running(*servers: LocalServer | MetricsTarget) -> Iterator[None]:
    """Stop every server on exit, whatever happened."""
    try:
        yield
    finally:
        for server in reversed(servers):
            server.stop()
