"""Benchmarks of push: the Alertmanager webhook in front of a running `devops-agent run`.

- push_latency: from the alert turning `firing` in Prometheus to the gateway receiving the
  intent, through a real Alertmanager (`group_wait: 0s`) notifying the agent, with a sweep
  interval of 60 s and a model without latency: target <= 3 s, printed beside the interval.
- webhook_throughput: notifications per second the endpoint accepts on loopback for a
  bounded time while the daemon sweeps every second: target >= 500/s; scheduled cycles
  during the load are compared with an equally long quiet window before it, in number and
  in the median duration of a whole cycle (``cycle_duration_seconds`` of the daemon's
  ``sweep_finished`` events: collection, clearing, opening, dispatch).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

from agent.demo.gateway_sim import GatewaySimulator
from agent.local import LocalPrometheus, MetricsTarget, free_port
from tests.integration.daemon_support import (
    E2E_RULES,
    DaemonProcess,
    agent_env,
    alertmanager_to_agent,
    wait_firing,
    write_config,
)
from tests.llm_fakes import FakeModel

TOKEN = "bench-webhook-token"
HOOK = "/webhook/alertmanager"
LOAD_SECONDS = 10.0
CLIENTS = 8


def test_push_latency(tmp_path: Path) -> None:
    """Print seconds from firing to the intent at the gateway, beside the sweep interval."""
    interval = 60.0
    agent_port = free_port()
    target = MetricsTarget().start()
    target.set("e2e_memory_bytes", 10, service="market-predictor")
    am = alertmanager_to_agent(tmp_path / "am", agent_port, TOKEN)
    prom = LocalPrometheus(
        tmp_path / "prom",
        targets={"services": target.address},
        rules=E2E_RULES.replace("for: 1s", "for: 0s"),
        alertmanager_url=am.url,
    ).start()
    gateway = GatewaySimulator().start()
    model = FakeModel(delay=0.0)
    config = write_config(tmp_path / "agent.toml", schedule={"sweep_interval_seconds": interval})
    env = agent_env(
        tmp_path,
        config,
        prom.url,
        gateway.url,
        OPENAI_BASE_URL=model.base_url,
        METRICS_ADDR=f"127.0.0.1:{agent_port}",
        WEBHOOK_TOKEN=TOKEN,
    )
    daemon = DaemonProcess(env, tmp_path)
    try:
        daemon.wait_for("sweep_finished", timeout=30)
        target.set("e2e_memory_bytes", 5000, service="market-predictor")
        fired_at = wait_firing(prom.url)
        deadline = time.monotonic() + interval - 5
        while not gateway.executions() and time.monotonic() < deadline:
            time.sleep(0.01)
        executions = gateway.executions()
        if executions:  # the dispatch is logged once the gateway answered
            daemon.wait_for("remediation_dispatched", timeout=30)
        triggers = [e["trigger"] for e in daemon.events() if e.get("event") == "sweep_finished"]
    finally:
        daemon.close()
        model.stop()
        gateway.stop()
        prom.stop()
        am.stop()
        target.stop()
    assert executions, "the gateway never received the intent before the next scheduled sweep"
    latency = executions[0].received_at - fired_at
    print(
        f"\nsweep_interval_s={interval:g} push_latency_s={latency:.2f} "
        f"(target <= 3: {'met' if latency <= 3 else 'NOT met'})"
        f"\npush_latency_over_interval={latency / interval:.3f} sweeps_by_trigger="
        f"{ {t: triggers.count(t) for t in sorted(set(triggers))} }"
    )


def _notification(i: int) -> bytes:
    alerts = [
        {
            "status": "firing",
            "labels": {"alertname": "MemoryLeak", "service": f"svc-{i % 12}", "instance": f"i{j}"},
            "annotations": {"summary": "working set grows"},
            "startsAt": "2026-11-24T12:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph",
            "fingerprint": f"{i:08x}{j:08x}",
        }
        for j in range(2)
    ]
    body: dict[str, Any] = {
        "version": "4",
        "groupKey": '{}:{alertname="MemoryLeak"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "devops-agent",
        "groupLabels": {"alertname": "MemoryLeak"},
        "commonLabels": {"alertname": "MemoryLeak"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts,
    }
    return json.dumps(body).encode()


async def _client(host: str, port: int, requests: list[bytes], deadline: float) -> tuple[int, int]:
    """One keep-alive connection sending prepared requests one after another until the
    deadline; reads each answer's status line and drains its body. A plain loop on asyncio
    streams, so the load generator costs little of the CPU the agent shares with it."""
    reader, writer = await asyncio.open_connection(host, port)
    accepted = refused = 0
    i = 0
    try:
        while time.monotonic() < deadline:
            writer.write(requests[i % len(requests)])
            i += 1
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            if status.split(b" ", 2)[1] == b"202":
                accepted += 1
            else:
                refused += 1
    finally:
        writer.close()
    return accepted, refused


async def _load(address: str, seconds: float) -> tuple[int, int]:
    """POST notifications from CLIENTS keep-alive connections until ``seconds`` pass."""
    host, port = address.rsplit(":", 1)
    requests = []
    for i in range(64):
        body = _notification(i)
        head = (
            f"POST {HOOK} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    deadline = time.monotonic() + seconds
    counts = await asyncio.gather(
        *(_client(host, int(port), requests, deadline) for _ in range(CLIENTS))
    )
    return sum(a for a, _ in counts), sum(r for _, r in counts)


def test_webhook_throughput(tmp_path: Path) -> None:
    """Print notifications/s accepted while the daemon sweeps every second, and the
    scheduled sweeps of the loaded window against a quiet window of the same length."""
    target = MetricsTarget().start()
    target.set("e2e_memory_bytes", 10, service="market-predictor")
    prom = LocalPrometheus(
        tmp_path / "prom", targets={"services": target.address}, rules=E2E_RULES
    ).start()
    gateway = GatewaySimulator().start()
    config = write_config(tmp_path / "agent.toml", schedule={"sweep_interval_seconds": 1})
    env = agent_env(tmp_path, config, prom.url, gateway.url, WEBHOOK_TOKEN=TOKEN)
    daemon = DaemonProcess(env, tmp_path)
    try:
        [started] = daemon.wait_for("daemon_started", timeout=30)
        daemon.wait_for("sweep_finished", timeout=30)
        quiet_start = time.monotonic()
        quiet = _count_sweeps(daemon, LOAD_SECONDS)
        quiet_end = time.monotonic()
        loaded_before = _sweep_events(daemon)
        load_start = time.monotonic()
        accepted, refused = asyncio.run(_load(started["metrics_addr"], LOAD_SECONDS))
        load_seconds = time.monotonic() - load_start
        loaded_events = _sweep_events(daemon)[len(loaded_before) :]
    finally:
        daemon.close()
        gateway.stop()
        prom.stop()
        target.stop()
    assert refused == 0, f"{refused} valid notifications refused under load"
    rate = accepted / load_seconds
    loaded = [e for e in loaded_events if e["trigger"] == "schedule"]
    woken = [e for e in loaded_events if e["trigger"] == "webhook"]
    quiet_ms = statistics.median(e["cycle_duration_seconds"] for e in quiet) * 1000
    loaded_ms = (
        statistics.median(e["cycle_duration_seconds"] for e in loaded) * 1000 if loaded else 0
    )
    print(
        f"\nwebhook_accepted_per_s={rate:.0f} over {load_seconds:.1f}s from {CLIENTS} "
        f"connections (target >= 500: {'met' if rate >= 500 else 'NOT met'})"
        f"\nscheduled_sweeps quiet={len(quiet)} in {quiet_end - quiet_start:.1f}s, "
        f"loaded={len(loaded)} in {load_seconds:.1f}s "
        f"(ratio {len(loaded) / max(len(quiet), 1):.2f}); woken sweeps during load={len(woken)}"
        f"\ncycle_duration_median_ms quiet={quiet_ms:.1f} loaded={loaded_ms:.1f} "
        f"(ratio {loaded_ms / quiet_ms if quiet_ms else 0:.2f})"
    )


def _sweep_events(daemon: DaemonProcess) -> list[dict[str, Any]]:
    return [e for e in daemon.events() if e.get("event") == "sweep_finished"]


def _count_sweeps(daemon: DaemonProcess, seconds: float) -> list[dict[str, Any]]:
    before = len(_sweep_events(daemon))
    time.sleep(seconds)
    return [e for e in _sweep_events(daemon)[before:] if e["trigger"] == "schedule"]
