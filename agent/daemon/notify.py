"""sd_notify over ``$NOTIFY_SOCKET``: READY, WATCHDOG, STATUS and STOPPING for systemd.

A dozen lines of socket code instead of a dependency. Outside systemd (no NOTIFY_SOCKET)
every call is a no-op; a send that fails is logged once and never breaks the daemon.
"""

from __future__ import annotations

import os
import socket

from agent.logs import get_logger

log = get_logger("agent.notify")


class Notifier:
    """Sends state lines to systemd's notification socket."""

    def __init__(self, address: str | None) -> None:
        self._address = address
        if address and address.startswith("@"):
            self._address = "\0" + address[1:]  # abstract namespace
        self._warned = False

    @classmethod
    def from_env(cls) -> Notifier:
        """A notifier for the socket systemd gave us, if any."""
        return cls(os.environ.get("NOTIFY_SOCKET"))

    def send(self, *lines: str) -> None:
        """Send one datagram with the given KEY=VALUE lines."""
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self._address)
                sock.sendall("\n".join(lines).encode())
        except OSError as exc:
            if not self._warned:
                log.warning("sd_notify_failed", error=str(exc))
                self._warned = True

    def ready(self, status: str) -> None:
        """Tell systemd start-up is complete."""
        self.send("READY=1", f"STATUS={status}")

    def watchdog(self) -> None:
        """Pet the watchdog."""
        self.send("WATCHDOG=1")

    def status(self, status: str) -> None:
        """Update the status line shown by systemctl status."""
        self.send(f"STATUS={status}")

    def stopping(self) -> None:
        """Tell systemd we are shutting down."""
        self.send("STOPPING=1", "STATUS=stopping")


def watchdog_interval() -> float | None:
    """Half of systemd's watchdog interval in seconds, if the watchdog is on for us."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000
