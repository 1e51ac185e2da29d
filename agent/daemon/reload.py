"""Reloading the TOML file on SIGHUP, the way Prometheus and Alertmanager do.

``systemctl reload devops-agent`` sends SIGHUP. The file named at start-up (``--config``
or ``AGENT_CONFIG``) is read and validated again with every check ``check-config`` runs on
it; the environment stays as the process started with it (its overrides still apply).

- A file that will not do (a typo, a bad value, a file that vanished) changes nothing: the
  running configuration stays, each problem is logged on its own line
  (``config_reload_failed``) and ``devops_agent_config_last_reload_successful`` is 0.
- A good file applies from the next job: a cycle or a verification pass already running
  finishes on the configuration it started with (it holds a ``Runtime.pinned`` copy),
  the next one runs on the new one. ``config_reloaded`` names the sections that changed;
  the gauge is 1 and ``..._success_timestamp_seconds`` says when.
- A few keys are read once, into the clients and the HTTP endpoint, when the process
  starts (``AT_START``): a reload keeps their running values and names the ones the file
  changed (``config_keys_need_restart``); they apply at the next restart.
- Signals are not lost and never overlap: a SIGHUP asks for a reload; one that comes
  while a reload runs asks for the next one, which reads the file again.

What the reload means for incidents already under way (an ask for approval of an action
the new file refuses) is the cycle's business: it re-checks them against the
configuration in force every time (``guardrails/asks.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from agent.config import AgentConfig, GatewayOptions
from agent.errors import ConfigError
from agent.logs import get_logger
from agent.metrics import AgentMetrics
from agent.settings import Settings, reload_settings

log = get_logger("agent.reload")

#: Keys read once when the process starts (into the HTTP clients, the webhook intake and
#: the approval API): a reload keeps their running values until a restart.
AT_START: Mapping[str, tuple[str, ...]] = {
    "prometheus": ("query_timeout_seconds", "max_answer_bytes", "tls_verify", "ca_bundle"),
    "alertmanager": ("timeout_seconds", "max_answer_bytes"),
    "webhook": ("max_body_bytes", "body_timeout_seconds"),
    "gateway": tuple(GatewayOptions.model_fields),
    "diagnosis": ("request_timeout_seconds", "max_retries", "max_answer_bytes"),
}


def keep_start_bound(
    running: AgentConfig, new: AgentConfig, *, has_model: bool
) -> tuple[AgentConfig, list[str]]:
    """``new`` with the keys read at start-up kept at their running values, and the names
    of those the file changed. Turning the model on needs a restart when the process
    started without one (no client was built); turning it off applies at once."""
    kept: list[str] = []
    updates: dict[str, Any] = {}
    for section, keys in AT_START.items():
        before, after = getattr(running, section), getattr(new, section)
        changed = [k for k in keys if getattr(before, k) != getattr(after, k)]
        if changed:
            updates[section] = after.model_copy(update={k: getattr(before, k) for k in changed})
            kept += [f"{section}.{k}" for k in changed]
    if new.diagnosis.use_llm and not has_model:
        diagnosis = updates.get("diagnosis", new.diagnosis)
        updates["diagnosis"] = diagnosis.model_copy(update={"use_llm": False})
        kept.append("diagnosis.use_llm")
    return (new.model_copy(update=updates) if updates else new), kept


def changed_sections(old: AgentConfig, new: AgentConfig) -> list[str]:
    """The top-level sections whose values differ, in the file's order."""
    return [name for name in AgentConfig.model_fields if getattr(old, name) != getattr(new, name)]


class Reloader:
    """Turns SIGHUPs into reloads, one at a time: ``request`` (the signal handler) asks,
    ``run`` carries each out, ``reload`` is one reload (tests call it directly)."""

    def __init__(
        self,
        current: Callable[[], Settings],
        apply: Callable[[Settings], None],
        metrics: AgentMetrics,
        *,
        has_model: bool,
        status: Callable[[str], None] = lambda _: None,
    ) -> None:
        self._current = current
        self._apply = apply
        self._metrics = metrics
        self._has_model = has_model
        self._status = status
        self._wanted = asyncio.Event()
        #: Reloads carried out so far, good or bad.
        self.done = 0
        #: False from a failed reload until the next good one.
        self.ok = True

    def started(self, at: float | None = None) -> None:
        """The configuration the process started with counts as a successful load."""
        self._metrics.config_reload_ok.set(1)
        self._metrics.config_reload_at.set(time.time() if at is None else at)

    def request(self) -> None:
        """SIGHUP: a reload is wanted (one already running is followed by another)."""
        self._wanted.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Until stopping: wait for a request, reload once."""
        while not stopping.is_set():
            await self._wanted.wait()
            self._wanted.clear()
            if not stopping.is_set():
                self.reload()

    def reload(self) -> bool:
        """Read the file again and apply it, or keep the running configuration; True when
        the new file was applied."""
        self.done += 1
        running = self._current()
        path = running.env.agent_config
        try:
            fresh = reload_settings(running)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("config_reload_failed", config=str(path), problem=problem)
            self._metrics.config_reload_ok.set(0)
            self.ok = False
            self._status(
                f"reload of {path} failed ({len(exc.problems)} problems): "
                "running on the previous configuration"
            )
            return False
        config, kept = keep_start_bound(running.config, fresh.config, has_model=self._has_model)
        changed = changed_sections(running.config, config)
        self._apply(Settings(env=fresh.env, config=config))
        self._metrics.config_reload_ok.set(1)
        self._metrics.config_reload_at.set(time.time())
        self.ok = True
        log.info("config_reloaded", config=str(path), changed=changed)
        if kept:
            log.warning("config_keys_need_restart", config=str(path), keys=kept)
        self._status(f"configuration reloaded from {path}")
        return True
