"""The demo service: a small process that really leaks memory until it is restarted.

It exposes Prometheus metrics (the default process collector, so
``process_resident_memory_bytes`` is its real resident memory) on ``--port`` and grows
by ``--rate-mb`` megabytes per second, up to ``--cap-mb``. Run:
``python -m agent.demo.leaky --port 9105``.
"""

from __future__ import annotations

import argparse
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Gauge, generate_latest

LEAKED = Gauge("demo_leaked_bytes", "Bytes the demo service has leaked on purpose")


class Handler(BaseHTTPRequestHandler):
    """Serves /metrics from the default registry."""

    def do_GET(self) -> None:
        body = generate_latest(REGISTRY) if self.path.startswith("/metrics") else b"ok\n"
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


def leak(rate_mb: float, cap_mb: float, stop: threading.Event) -> None:
    """Hold on to ``rate_mb`` more megabytes every second, touching every page."""
    hoard: list[bytearray] = []
    chunk = int(rate_mb * 1024 * 1024 / 10)
    while not stop.wait(0.1):
        if len(hoard) * chunk < cap_mb * 1024 * 1024:
            hoard.append(bytearray(b"\x01" * chunk))
            LEAKED.set(len(hoard) * chunk)


def main() -> None:
    """Serve metrics and leak until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate-mb", type=float, default=8.0)
    parser.add_argument("--cap-mb", type=float, default=400.0)
    args = parser.parse_args()
    stop = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    threading.Thread(target=leak, args=(args.rate_mb, args.cap_mb, stop), daemon=True).start()
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
