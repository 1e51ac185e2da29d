"""A scrape target whose exposition text the caller sets, served from a thread: the
monitored services of tests and benchmarks."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


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
