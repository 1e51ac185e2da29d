"""What every local part shares: free loopback ports, finding a Debian binary, waiting for
a server to answer, a child process that is stopped (terminate, then kill) on the way out.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol


class MissingBinary(RuntimeError):
    """A Debian package the local parts need is not installed."""


class PortTaken(RuntimeError):
    """Another process listens on the port a local server was to serve on."""


def ensure_free(port: int, host: str = "127.0.0.1") -> None:
    """Raise PortTaken when something listens on ``host:port`` (a socket waiting in
    TIME_WAIT does not count: the server binds with SO_REUSEADDR too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise PortTaken(
                f"{host}:{port} is taken by another process ({exc.strerror}); "
                "stop it or choose another port with --port"
            ) from exc


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


def wait_http(
    url: str,
    timeout: float = 30.0,
    proc: subprocess.Popen[bytes] | None = None,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Poll ``url`` (with ``headers``) until it answers 200; RuntimeError with the reason
    on timeout, or as soon as ``proc`` exits."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} was ready")
        try:
            request = urllib.request.Request(url, headers=dict(headers or {}))
            with urllib.request.urlopen(request, timeout=2) as response:
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

    def _spawn(
        self,
        argv: Sequence[str],
        ready_path: str,
        ready_timeout: float = 30.0,
        *,
        env: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "server.log").open("ab")
        self.proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, env=env
        )
        log.close()
        try:
            wait_http(self.url + ready_path, ready_timeout, self.proc, headers)
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


class Stoppable(Protocol):
    """Anything local that can be stopped."""

    def stop(self) -> None:
        """Stop it; nothing is left running."""


@contextlib.contextmanager
def running(*servers: Stoppable) -> Iterator[None]:
    """Stop every server on exit, whatever happened."""
    try:
        yield
    finally:
        for server in reversed(servers):
            server.stop()
