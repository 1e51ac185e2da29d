"""Misbehaving peers on loopback, for tests: a server that answers one byte at a time."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class SlowDrip:
    """Answers every request with 200 and a JSON body sent one byte every ``interval``
    seconds, without end (or until the client goes away)."""

    def __init__(self, interval: float = 0.5) -> None:
        self.requests: list[str] = []
        drip = self

        class Handler(BaseHTTPRequestHandler):
            def _drip(self) -> None:
                drip.requests.append(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"status": "success", "data": "')
                    while True:
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(interval)
                except (BrokenPipeError, ConnectionResetError):
                    return

            def do_GET(self) -> None:
                self._drip()

            def do_POST(self) -> None:
                self._drip()

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
