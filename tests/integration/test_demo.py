"""`python -m agent.demo` (what `make demo` runs): resolves the incident, leaves nothing running."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def _processes_under(workdir: Path) -> list[str]:
    """Command lines of live processes that mention the workdir or run from it."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if str(workdir) in cmdline or cwd.startswith(str(workdir)):
            found.append(f"{pid}: {cmdline}")
    return found


@pytest.mark.timeout(300)  # the whole demo, with the local model on 2 cores: minutes
def test_demo_heals_the_leaking_service(tmp_path: Path) -> None:
    """Without a hosted model the demo diagnoses on the local model, shows every phase and
    the decision, asks the on-call when model and runbook disagree (and plays the approval
    visibly), exits 0 with the incident resolved, leaves the screenshot of the healed
    incident's console page the README promises, and stops every process it started."""
    workdir = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LLM_"))}
    result = subprocess.run(
        [sys.executable, "-m", "agent.demo", "--workdir", str(workdir)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "starting the local model (SmolLM2-135M)" in out
    assert "ALERT MemoryLeak firing on market-predictor" in out
    for phase in ("triage", "investigation", "plan"):
        assert f"model, {phase} phase:" in out, out
    assert "(decided by llm" in out and "decided by runbook" not in out
    assert "autonomy: runs alone now:" in out
    if "APPROVAL REQUESTED: restart on market-predictor" in out:
        assert "[on-call]  incident" in out and "approved by demo-oncall: now verifying" in out
    else:
        assert "keys: ['model', 'runbook']" in out
    assert "docker restart market-predictor" in out
    assert "RESOLVED: market-predictor recovered" in out
    assert "time to recovery" in out and "resolved" in out
    shot = workdir / "incident.png"
    assert f"(screenshot {shot})" in out, out[-2000:]
    picture = shot.read_bytes()
    assert picture.startswith(b"\x89PNG\r\n\x1a\n") and len(picture) > 20_000
    assert _processes_under(workdir) == []
