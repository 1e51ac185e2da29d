"""Helpers for daemon tests: a test config file, the daemon as a subprocess, a notify socket."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agent.local import LocalAlertmanager, free_port
from tests.conftest import BASE_ENV, CONFIG

E2E_RULES = """
groups:
- name: e2e
  rules:
  - alert: ServiceMemoryLeak
    expr: e2e_memory_bytes > 1000
    for: 1s
    labels: {severity: critical}
    annotations: {summary: 'memory leak on {{ $labels.service }}'}
"""


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _toml(data: dict[str, Any], prefix: str = "") -> list[str]:
    lines: list[str] = []
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict) and not _is_table_list(v)}
    lines += [f"{json.dumps(k) if '-' in k else k} = {_toml_value(v)}" for k, v in scalars.items()]
    for key, value in data.items():
        name = f'{prefix}"{key}"' if "-" in key else f"{prefix}{key}"
        if isinstance(value, dict):
            lines += ["", f"[{name}]", *_toml(value, name + ".")]
        elif _is_table_list(value):
            for item in value:
                lines += ["", f"[[{name}]]", *_toml(item, name + ".")]
    return lines


def _is_table_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def write_config(path: Path, **sections: dict[str, Any] | list[Any]) -> Path:
    """The shipped config with sections merged in (dicts) or replaced (lists), as a file."""
    data = tomllib.loads(CONFIG.read_text())
    data["checks"] = {}
    data["schedule"].update(
        sweep_interval_seconds=1,
        verify_after_seconds=2,
        misfire_grace_seconds=5,
        shutdown_grace_seconds=10,
    )
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    path.write_text("\n".join(_toml(data)) + "\n")
    tomllib.loads(path.read_text())  # the writer must produce valid TOML
    return path


async def until_waiting(rt: Any, timeout: float = 45.0) -> Any:
    """Run cycles until an incident waits for approval; that incident."""
    from datetime import UTC, datetime

    from agent.daemon.cycle import run_cycle

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await run_cycle(rt, datetime.now(UTC))
        found = [i for i in rt.store.current() if i.state == "awaiting_approval"]
        if found:
            return found[0]
        await asyncio.sleep(0.3)
    raise AssertionError("no incident came to wait for approval")


def wait_firing(prom_url: str, timeout: float = 30.0) -> float:
    """Poll Prometheus until an alert is firing; the monotonic time it was first seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{prom_url}/api/v1/alerts", timeout=2) as response:
            alerts = json.load(response)["data"]["alerts"]
        if any(a["state"] == "firing" for a in alerts):
            return time.monotonic()
        time.sleep(0.02)
    raise AssertionError("alert never fired")


def alertmanager_to_agent(workdir: Path, agent_port: int, token: str) -> LocalAlertmanager:
    """A started Alertmanager whose receiver is the agent's webhook on ``agent_port``."""
    return LocalAlertmanager(
        workdir,
        free_port(),
        webhook_url=f"http://127.0.0.1:{agent_port}/webhook/alertmanager",
        webhook_token=token,
    ).start()


def agent_env(
    tmp_path: Path, config: Path, prometheus: str, gateway: str, **extra: str
) -> dict[str, str]:
    """A complete environment for the agent under test."""
    return {
        **BASE_ENV,
        "PROMETHEUS_URL": prometheus,
        "AI_COMMAND_GATEWAY_URL": gateway,
        "AGENT_CONFIG": str(config),
        "AGENT_STATE_URL": f"sqlite:///{tmp_path / 'state' / 'agent.db'}",
        "METRICS_ADDR": "127.0.0.1:0",
        "LOG_FORMAT": "json",
        **extra,
    }


class DaemonProcess:
    """`devops-agent run` as a child process whose JSON log lines the test can read."""

    def __init__(
        self,
        env: dict[str, str],
        workdir: Path,
        name: str = "daemon",
        *,
        argv: Sequence[str] | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.log_path = (log_dir or workdir) / f"{name}.log"
        full_env = {
            "PATH": os.environ["PATH"],
            "HOME": str(workdir),
            "DEVOPS_AGENT_ROOT": str(workdir / "no-service-install"),
            **env,
        }
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            list(argv) if argv is not None else [sys.executable, "-m", "agent", "run"],
            env=full_env,
            cwd=workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def events(self) -> list[dict[str, Any]]:
        """Every JSON log event so far."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def wait_for(
        self,
        event: str,
        timeout: float = 30.0,
        where: Callable[[dict[str, Any]], bool] = lambda e: True,
        count: int = 1,
    ) -> list[dict[str, Any]]:
        """Wait until ``count`` events named ``event`` (matching ``where``) were logged."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.events() if e.get("event") == event and where(e)]
            if len(found) >= count:
                return found
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited {self.proc.returncode} before {event}:\n{self.tail()}"
                )
            time.sleep(0.1)
        raise AssertionError(f"no {count}x {event} within {timeout:g}s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        """The end of the daemon's log."""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def signal(self, sig: signal.Signals) -> None:
        """Send a signal."""
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for exit and return the code."""
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        """Kill if still running and close the log."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()


class NotifySocket:
    """A unix datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        """Read everything that arrived so far."""
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                return self.messages

    def wait_for(self, line: str, timeout: float = 20.0) -> None:
        """Wait until a message containing ``line`` arrives."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(line in m.splitlines() for m in self.drain()):
                return
        raise AssertionError(f"{line} not received; got {self.messages}")

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()
