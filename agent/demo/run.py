"""`make demo`: the whole loop on local parts, healing a leaking service end to end.

Starts, on loopback ports: a real Prometheus and Alertmanager, the leaking demo service,
a gateway simulator that really restarts the demo service, a local model server (the
shipped SmolLM2-135M on llama-cpp-python) unless OPENAI_API_KEY names a hosted model, and
``devops-agent run``. It shows the agent's log events as a readable live view: each
model call of the triage, the investigation and the plan, the decision and who made it,
and the autonomy verdict. Where the model and the runbook agree the agent acts alone;
where they disagree (the tiny model often does) the agent asks for approval, and the demo
plays the on-call engineer who approves it with the real command, visibly. It stops when
the incident is resolved (or escalated, or three minutes pass), prints the incident's
timeline, and stops every process it started.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.cli.render import render_timeline
from agent.demo.gateway_sim import ActResult, GatewaySimulator
from agent.incidents.model import Incident
from agent.local import (
    LocalAlertmanager,
    LocalModel,
    LocalPrometheus,
    MissingBinary,
    free_port,
    wait_http,
)
from agent.local.browser import chromium, headless_flags
from agent.local.model import ALIAS
from agent.store import open_store

SERVICE = "market-predictor"
TIME_LIMIT = 170.0
SWEEP_SECONDS = 3
VERIFY_SECONDS = 5
# The restarted service must stay under the alert threshold until it is verified: from
# ~25 MB at 5 MB/s it crosses 100 MB after ~15 s (+3 s `for`), while verification runs
# 5 s after the restart plus at most one 5 s verification tick.
LEAK_MB_PER_SECOND = 5
#: After the resolution, the demo waits this long for samples after the drop, then
#: screenshots the console's incident page.
SCREENSHOT_AFTER = 4.0

RULES = f"""
groups:
- name: demo
  rules:
  - alert: MemoryLeak
    expr: process_resident_memory_bytes{{job="{SERVICE}"}} > 100e6
    for: 3s
    labels: {{severity: critical}}
    annotations:
      summary: "{SERVICE} resident memory above 100 MB"
      description: "Resident memory of {SERVICE} is {{{{ $value | humanize1024 }}}}B and growing."
"""

CONFIG = """
[schedule]
sweep_interval_seconds = {sweep}
verify_after_seconds = {verify}
misfire_grace_seconds = 5
shutdown_grace_seconds = 10
catch_up_window_seconds = 600

[diagnosis]
use_llm = true
max_concurrency = 1
request_timeout_seconds = 120
max_steps = 3

[policy]
action_cooldown_seconds = 300
approval_ttl_seconds = 120

[actions.restart]
intent = "restart the service"
mutating = true
[actions.start]
intent = "start the service"
mutating = true
[actions.stop]
intent = "stop the service"
mutating = true
[actions.collect_logs]
intent = "show recent logs"
[actions.inspect_resources]
intent = "show memory and CPU usage"
[actions.health_check]
intent = "check if service is healthy"
[actions.escalate]
[actions.none]

[services.{service}]
actions = ["restart", "collect_logs", "inspect_resources", "health_check"]

[[runbook]]
name = "memory"
match = "(?i)memory|leak"
action = "restart"
"""


def say(text: str) -> None:
    """One line of the live view."""
    print(f"{datetime.now():%H:%M:%S}  {text}", flush=True)


class DemoService:
    """The leaking service process; the gateway simulator restarts it."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir, self.port = workdir, port
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start (or start again) the process and wait for its metrics."""
        log = (self.workdir / "demo-service.log").open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent.demo.leaky",
                "--port",
                str(self.port),
                "--rate-mb",
                str(LEAK_MB_PER_SECOND),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,  # so that a leftover is found by where it runs
        )
        log.close()
        wait_http(f"http://127.0.0.1:{self.port}/metrics", timeout=20, proc=self.proc)

    def stop(self) -> None:
        """Terminate the process."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def act(self, target: str, command: str) -> ActResult:
        """What the simulated `docker` does for one command."""
        with self._lock:
            if command.startswith("docker restart"):
                self.stop()
                self.start()
                self.restarts += 1
                say(
                    f"[gateway]  docker restart {target}: new process {self.proc.pid if self.proc else '?'}"
                )
                return ActResult(stdout=f"{target}\n")
            return ActResult(stdout="running\n")


_VIEW: dict[str, str] = {
    "daemon_started": "started: sweeping every {sweep_interval_seconds}s, diagnosis by {model}",
    "incident_opened": "ALERT {name} firing on {target}: incident {incident_id} opened",
    "llm_call": "model, {phase} phase: {prompt_tokens} prompt + {completion_tokens} answer "
    "tokens in {seconds}s, {tool_calls} tool call(s)",
    "investigation_step": "investigation step {step}: the model asked {tools}",
    "triage_overruled": "triage said no action ({reason}), but the runbook would act: the "
    "model investigates and plans anyway",
    "llm_feature_unsupported": "the model server refused {feature}; now asking with {now}",
    "plan_refused": "the model's plan ({action} {plan_target}) was refused: {reason}",
    "diagnosis_finished": "decision: {action} on {target} (decided by {decided_by}: {reason})",
    "autonomy_verdict": "autonomy: runs alone now: {incident_action}; waits for a human: "
    "{awaiting_approval}; keys: {keys} ({reason})",
    "approval_requested": "APPROVAL REQUESTED: {action} on {target} (until {until})",
    "approval_ended": "approval of {action} on {target}: {result}",
    "guardrail_blocked": "guardrail held the action back: {reason} ({detail})",
    "remediation_dispatched": "dispatching to the gateway: '{intent}' for {target}",
    "gateway_request_finished": "gateway answered: {status} after {attempts} attempt(s)",
    "incident_resolved": "RESOLVED: {target} recovered {time_to_recovery_seconds}s after the incident opened",
    "incident_escalated": "ESCALATED to humans: {reason}",
    "sweep_source_failed": "a sweep source failed: {source}: {error}",
    "diagnosis_fell_back_to_runbook": "model unusable, runbook decides: {reason}",
    "job_failed": "a job failed: {error}",
    "job_crashed": "a job crashed: {error}",
}


class _Missing(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"


def _describe(event: dict[str, Any]) -> str | None:
    template = _VIEW.get(str(event.get("event")))
    return "[agent]    " + template.format_map(_Missing(event)) if template else None


class Demo:
    """Starts the parts, follows the agent, cleans up."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.agent: subprocess.Popen[bytes] | None = None
        self.parts: list[Any] = []
        self.outcome: str | None = None
        self.env: dict[str, str] = {}
        self.model_url: str | None = None
        self.model_key = "sk-no-local-model"  # the local model's own key, once it runs
        self.approved: set[str] = set()
        self.incident_id: str | None = None

    def _agent_env(self, prometheus: str, alertmanager: str, gateway: str) -> dict[str, str]:
        key = os.environ.get("OPENAI_API_KEY", "")
        config = self.workdir / "agent.toml"
        config.write_text(
            CONFIG.format(sweep=SWEEP_SECONDS, verify=VERIFY_SECONDS, service=SERVICE)
        )
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", str(self.workdir)),
            "PROMETHEUS_URL": prometheus,
            "ALERTMANAGER_URL": alertmanager,
            "AI_COMMAND_GATEWAY_URL": gateway,
            "AI_COMMAND_GATEWAY_TIMEOUT": "20",
            "AI_COMMAND_GATEWAY_SOURCE_ID": "devops-ai-agent",
            "OPENAI_API_KEY": key or self.model_key,
            "LLM_MODEL": os.environ.get("LLM_MODEL", "gpt-4o") if key else ALIAS,
            "LLM_TEMPERATURE": "0.1" if key else "0",
            "LLM_MAX_TOKENS": "800",
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "json",
            "ENVIRONMENT": "development",
            "AGENT_CONFIG": str(config),
            "AGENT_STATE_URL": f"sqlite:///{self.workdir / 'state' / 'agent.db'}",
            "METRICS_ADDR": f"127.0.0.1:{free_port()}",
        }
        if key and os.environ.get("OPENAI_BASE_URL"):
            env["OPENAI_BASE_URL"] = os.environ["OPENAI_BASE_URL"]
        elif self.model_url is not None:
            env["OPENAI_BASE_URL"] = self.model_url
        return env

    def _model(self) -> None:
        """The hosted model named by the environment, or the shipped one served locally."""
        if os.environ.get("OPENAI_API_KEY"):
            model = os.environ.get("LLM_MODEL", "gpt-4o")
            say(f"[demo]     OPENAI_API_KEY is set: diagnosis uses the model {model}")
            return
        say("[demo]     OPENAI_API_KEY is not set: starting the local model (SmolLM2-135M)")
        server = LocalModel(self.workdir / "model").start()
        self.parts.append(server)
        self.model_url = server.base_url
        self.model_key = server.api_key
        say(f"[demo]     local model server (llama-cpp-python) on {server.base_url}")

    def start(self) -> None:
        """Start every part on loopback."""
        self._model()
        service = DemoService(self.workdir, free_port())
        service.start()
        self.parts.append(service)
        say(
            f"[demo]     demo service {SERVICE} leaking memory, metrics on 127.0.0.1:{service.port}"
        )
        alertmanager = LocalAlertmanager(self.workdir / "alertmanager", free_port()).start()
        self.parts.append(alertmanager)
        prometheus = LocalPrometheus(
            self.workdir / "prometheus",
            targets={SERVICE: f"127.0.0.1:{service.port}"},
            rules=RULES,
            alertmanager_url=alertmanager.url,
        ).start()
        self.parts.append(prometheus)
        say(f"[demo]     Prometheus {prometheus.url}, Alertmanager {alertmanager.url}")
        gateway = GatewaySimulator(service.act).start()
        self.parts.append(gateway)
        say(f"[demo]     gateway simulator {gateway.url}")
        log = (self.workdir / "agent.log").open("wb")
        self.env = self._agent_env(prometheus.url, alertmanager.url, gateway.url)
        self.agent = subprocess.Popen(
            # the demo's own environment only: never a service's installed on this host
            [sys.executable, "-m", "agent", "--no-env-file", "run"],
            env=self.env,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def follow(self) -> None:
        """Print the agent's events as they come, until resolved/escalated or time is up."""
        deadline = time.monotonic() + TIME_LIMIT
        offset = 0
        path = self.workdir / "agent.log"
        while time.monotonic() < deadline and self.outcome is None:
            assert self.agent is not None
            if self.agent.poll() is not None:
                say(f"[demo]     the agent exited with {self.agent.returncode}; see {path}")
                return
            data = path.read_bytes()
            lines, offset = data[offset:].split(b"\n"), offset + data[offset:].rfind(b"\n") + 1
            for line in lines[:-1]:
                self._show(line)
            time.sleep(0.2)
        if self.outcome is None:
            say(f"[demo]     no resolution within {TIME_LIMIT:.0f}s")

    def _show(self, line: bytes) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            return
        text = _describe(event)
        if text:
            say(text)
        if event.get("event") == "approval_requested":
            self.approve(str(event.get("incident_id")))
        if event.get("event") == "incident_opened" and self.incident_id is None:
            self.incident_id = str(event.get("incident_id"))
        if event.get("event") == "incident_resolved":
            self.outcome = "resolved"
        elif event.get("event") == "incident_escalated":
            self.outcome = "escalated"

    def approve(self, incident_id: str) -> None:
        """Play the on-call engineer: look at the request, approve it with the real command."""
        if incident_id in self.approved:
            return
        self.approved.add(incident_id)
        argv = [
            "devops-agent",
            "incidents",
            "approve",
            incident_id,
            "--by",
            "demo-oncall",
            "--reason",
            "memory keeps growing on the graph; a restart frees it",
        ]
        say(
            f"[on-call]  the page arrives; after a look, the on-call runs: {' '.join(argv[:6])} ..."
        )
        done = subprocess.run(
            [sys.executable, "-m", "agent", "--no-env-file", *argv[1:]],
            env={**self.env, "LOG_LEVEL": "WARNING"},
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        for line in (done.stdout + done.stderr).splitlines():
            if line.strip() and not line.startswith("{"):
                say(f"[on-call]  {line.strip()}")

    def screenshot(self) -> None:
        """The console's page of the incident, as a picture: the leak rising, the restart
        and the drop (the daemon serves the console read-only on loopback)."""
        try:
            browser = chromium()
        except MissingBinary:
            browser = None
        if browser is None or self.incident_id is None or self.outcome != "resolved":
            say("[demo]     no screenshot of the console (chromium missing, or no resolution)")
            return
        time.sleep(SCREENSHOT_AFTER)  # a few more samples after the drop
        page = f"http://{self.env['METRICS_ADDR']}/ui/incidents/{self.incident_id}"
        shot = self.workdir / "incident.png"
        done = subprocess.run(
            [
                browser,
                *headless_flags(self.workdir / "chromium", 1280, 1100),
                f"--screenshot={shot}",
                page,
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if done.returncode == 0 and shot.exists():
            say(f"[demo]     the console's incident page: {page} (screenshot {shot})")
        else:
            say(f"[demo]     chromium could not take the screenshot (exit {done.returncode})")

    def summary(self) -> None:
        """Print the incident's timeline from the store."""
        store = open_store(f"sqlite:///{self.workdir / 'state' / 'agent.db'}")
        try:
            incidents = [i for i in store.recent(5) if isinstance(i, Incident)]
            print()
            if not incidents:
                print("no incident was opened")
            for incident in incidents:
                print(render_timeline(incident, store.events(incident.id)))
                ttr = (incident.updated_at - incident.opened_at).total_seconds()
                print(
                    f"  what was done: {incident.action}; outcome: {incident.state}; time to recovery: {ttr:.1f}s\n"
                )
        finally:
            store.close()

    def stop(self) -> None:
        """Stop the agent (SIGTERM, then kill) and every part, newest first."""
        if self.agent is not None and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGTERM)
            try:
                self.agent.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait()
        for part in reversed(self.parts):
            part.stop()


def main(argv: list[str] | None = None) -> int:
    """Run the demo; exit 0 when the incident was resolved."""
    parser = argparse.ArgumentParser(prog="python -m agent.demo", description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path(".run/demo"))
    args = parser.parse_args(argv)
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    args.workdir.mkdir(parents=True)
    demo = Demo(args.workdir.resolve())
    started = datetime.now(UTC)
    try:
        demo.start()
        demo.follow()
        demo.screenshot()
        demo.stop()
        demo.summary()
    except MissingBinary as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        say("[demo]     interrupted; stopping everything")
        return 130
    finally:
        demo.stop()
    elapsed = (datetime.now(UTC) - started).total_seconds()
    if demo.outcome == "resolved":
        print(
            f"demo finished in {elapsed:.0f}s: the leaking service was healed; all processes stopped"
        )
        return 0
    print(
        f"demo finished in {elapsed:.0f}s without a resolution ({demo.outcome or 'timed out'}); logs in {args.workdir}"
    )
    return 1
