"""A headless Chromium from Debian's package, for screenshots and browser tests.

Flags that keep it quiet on a machine with a closed network: no background networking,
no component updates, no sync, no first-run page, a fresh profile directory.
"""

from __future__ import annotations

from pathlib import Path

from agent.local.servers import find_binary

HEADLESS_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium() -> str:
    """Debian's chromium; MissingBinary naming the package otherwise."""
    return find_binary("chromium")


def headless_flags(profile: Path, width: int, height: int) -> list[str]:
    """The command-line flags of one headless run with its own profile."""
    return [*HEADLESS_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]
