"""The agent's own metrics, scraped from ``METRICS_ADDR``.

Built on an explicit ``CollectorRegistry`` so tests and a second agent in one process
never share counters. Most count what this process did; ``approvals_total`` and
``outcomes_total`` count from the store what every process did (an answer given with ``devops-agent incidents approve``
on the host is the CLI's doing, and must still show on the daemon's ``/metrics``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.errors import AgentError
from agent.logs import get_logger

log = get_logger("agent.metrics")


class StoredCounter(Collector):
    """A counter by one label whose values are read from the store at each scrape; the
    last values read stand while the store cannot answer."""

    def __init__(
        self,
        name: str,
        documentation: str,
        label: str,
        values: tuple[str, ...],
        registry: CollectorRegistry,
    ) -> None:
        self._name, self._doc, self._label = name, documentation, label
        self._last: dict[str, int] = dict.fromkeys(values, 0)
        #: Where the counts come from; set once the store is open.
        self.read: Callable[[], Mapping[str, int]] | None = None
        registry.register(self)

    def describe(self) -> Iterator[Metric]:
        """The family, without asking the store (at registration)."""
        yield CounterMetricFamily(self._name, self._doc, labels=[self._label])

    def collect(self) -> Iterator[Metric]:
        """The family with the store's counts."""
        if self.read is not None:
            try:
                self._last.update(self.read())
            except AgentError as exc:
                log.warning("metric_unreadable", metric=self._name, error=str(exc))
        family = CounterMetricFamily(self._name, self._doc, labels=[self._label])
        for value, count in sorted(self._last.items()):
            family.add_metric([value], count)
        yield family

    def value(self, label_value: str) -> int:
        """One count as the last scrape (or this call) read it."""
        for metric in self.collect():
            for sample in metric.samples:
                if sample.labels.get(self._label) == label_value:
                    return int(sample.value)
        return 0


class StoredCounters(Collector):
    """A counter by several labels whose values are read from the store at each scrape
    (every label combination the store knows); the last values read stand while the store
    cannot answer."""

    def __init__(
        self, name: str, documentation: str, labels: tuple[str, ...], registry: CollectorRegistry
    ) -> None:
        self._name, self._doc, self._labels = name, documentation, labels
        self._last: dict[tuple[str, ...], int] = {}
        #: Where the counts come from; set once the store is open.
        self.read: Callable[[], Mapping[tuple[str, ...], int]] | None = None
        registry.register(self)

    def describe(self) -> Iterator[Metric]:
        """The family, without asking the store (at registration)."""
        yield CounterMetricFamily(self._name, self._doc, labels=list(self._labels))

    def collect(self) -> Iterator[Metric]:
        """The family with the store's counts."""
        if self.read is not None:
            try:
                self._last.update(self.read())
            except AgentError as exc:
                log.warning("metric_unreadable", metric=self._name, error=str(exc))
        family = CounterMetricFamily(self._name, self._doc, labels=list(self._labels))
        for values, count in sorted(self._last.items()):
            family.add_metric(list(values), count)
        yield family


class StoredBreakers(Collector):
    """``devops_agent_circuit_breaker_open{service}``: 1 for an open breaker, 0 for one that
    counted failures and is closed, read from the store at each scrape (a breaker opened by
    another replica, or reset with the CLI, shows on every replica); the last values read
    stand while the store cannot answer."""

    NAME = "devops_agent_circuit_breaker_open"
    DOC = "Circuit breakers by service: 1 open (humans must look), 0 closed, from the store"

    def __init__(self, registry: CollectorRegistry) -> None:
        self._last: dict[str, bool] = {}
        #: Where the breakers come from (service -> open); set once the store is open.
        self.read: Callable[[], Mapping[str, bool]] | None = None
        registry.register(self)

    def describe(self) -> Iterator[Metric]:
        """The family, without asking the store."""
        yield GaugeMetricFamily(self.NAME, self.DOC, labels=["service"])

    def collect(self) -> Iterator[Metric]:
        """The family with the store's breakers."""
        if self.read is not None:
            try:
                self._last = dict(self.read())
            except AgentError as exc:
                log.warning("metric_unreadable", metric=self.NAME, error=str(exc))
        family = GaugeMetricFamily(self.NAME, self.DOC, labels=["service"])
        for service, is_open in sorted(self._last.items()):
            family.add_metric([service], 1.0 if is_open else 0.0)
        yield family


class NextDeadline(Collector):
    """``devops_agent_approval_deadline_timestamp_seconds``: when the oldest wait for a
    human's approval ends (the earliest deadline among the incidents that ask), present
    only while one waits, so a rule needs no sentinel value."""

    NAME = "devops_agent_approval_deadline_timestamp_seconds"
    DOC = "Unix time the earliest wait for a human's approval ends; absent when none waits"

    def __init__(self, registry: CollectorRegistry) -> None:
        #: Set by each cycle from the store's current incidents.
        self.at: float | None = None
        registry.register(self)

    def describe(self) -> Iterator[Metric]:
        """The family."""
        yield GaugeMetricFamily(self.NAME, self.DOC)

    def collect(self) -> Iterator[Metric]:
        """The family, with a sample only while an approval waits."""
        family = GaugeMetricFamily(self.NAME, self.DOC)
        if self.at is not None:
            family.add_metric([], self.at)
        yield family


#: How a diagnosis was decided: by the model, by the runbook after the model failed, by
#: the runbook with no model configured, or by the free prefilter.
DIAGNOSIS_OUTCOMES = ("model", "fallback", "runbook", "prefilter")


class AgentMetrics:
    """Every metric the agent exports; pass one instance to whatever records."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.sweeps = Counter(
            "devops_agent_sweeps",
            "Sweeps run, by result and by what started them (schedule, webhook)",
            ["result", "trigger"],
            registry=r,
        )
        self.sweep_duration = Histogram(
            "devops_agent_sweep_duration_seconds",
            "Time one sweep's collection took (the sources, not the work after it)",
            registry=r,
        )
        self.cycle_duration = Histogram(
            "devops_agent_cycle_duration_seconds",
            "Time one cycle took: collection, clearing, dispatch, and diagnoses unless they "
            "run in the background (the daemon's do)",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.diagnosis_duration = Histogram(
            "devops_agent_diagnosis_duration_seconds",
            "Time one diagnosis took, every phase and tool call together",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 90, 120, 300),
            registry=r,
        )
        self.diagnoses_running = Gauge(
            "devops_agent_diagnoses_running",
            "Diagnoses running in the background now (at most diagnosis.max_concurrency)",
            registry=r,
        )
        self.source_failures = Counter(
            "devops_agent_sweep_source_failures",
            "Sweep sources (alerts, alertmanager, a check) that failed",
            ["source"],
            registry=r,
        )
        self.findings = Counter(
            "devops_agent_findings", "Findings produced by sweeps, by kind", ["kind"], registry=r
        )
        self.suppressed = Counter(
            "devops_agent_findings_suppressed",
            "Findings dropped because Alertmanager silences or inhibits them",
            registry=r,
        )
        self.incidents = Gauge(
            "devops_agent_incidents", "Incidents by current state", ["state"], registry=r
        )
        self.llm_calls = Counter(
            "devops_agent_llm_calls", "Chat-completion calls by phase", ["phase"], registry=r
        )
        self.llm_tokens = Counter(
            "devops_agent_llm_tokens",
            "LLM tokens by kind (prompt, completion)",
            ["kind"],
            registry=r,
        )
        self.gateway_requests = Counter(
            "devops_agent_gateway_requests",
            "Gateway HTTP requests by outcome",
            ["outcome"],
            registry=r,
        )
        self.remediations = Counter(
            "devops_agent_remediations", "Remediations by result", ["result"], registry=r
        )
        self.guardrail_blocks = Counter(
            "devops_agent_guardrail_blocks",
            "Actions blocked by a guardrail",
            ["reason"],
            registry=r,
        )
        self.time_to_recovery = Histogram(
            "devops_agent_time_to_recovery_seconds",
            "From incident opened to verified recovery",
            buckets=(30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
            registry=r,
        )
        self.webhook_notifications = Counter(
            "devops_agent_webhook_notifications",
            "Alertmanager webhook notifications, by result (accepted, unauthorized, ...)",
            ["result"],
            registry=r,
        )
        self.approvals = StoredCounter(
            "devops_agent_approvals",
            "Waits for a human's approval that ended, by result (granted, denied, expired, "
            "cleared, blocked: approved but refused by a guardrail or not sent in time), "
            "counted from the store: every replica's and the CLI's answers",
            "result",
            ("granted", "denied", "expired", "cleared", "blocked", "withdrawn"),
            r,
        )
        self.outcomes = StoredCounters(
            "devops_agent_outcomes",
            "Incidents that ended, by the service the action runs on, the action and what "
            "happened to it (sent, approved, denied, expired, cleared, observed, blocked, "
            "none), counted from the store: every replica's and the CLI's",
            ("service", "action", "result"),
            r,
        )
        self.last_sweep = Gauge(
            "devops_agent_last_sweep_timestamp_seconds",
            "Unix time the last sweep finished",
            registry=r,
        )
        self.sweep_interval = Gauge(
            "devops_agent_sweep_interval_seconds",
            "The sweep interval in force (schedule.sweep_interval_seconds)",
            registry=r,
        )
        self.diagnoses = Counter(
            "devops_agent_diagnoses",
            "Diagnoses by how they were decided: model, fallback (the model failed and the "
            "runbook decided), runbook (no model configured), prefilter",
            ["outcome"],
            registry=r,
        )
        for outcome in DIAGNOSIS_OUTCOMES:
            self.diagnoses.labels(outcome=outcome)
        self.breakers = StoredBreakers(r)
        self.approval_deadline = NextDeadline(r)
        self.approval_ttl = Gauge(
            "devops_agent_approval_ttl_seconds",
            "How long a wait for a human's approval lasts (policy.approval_ttl_seconds)",
            registry=r,
        )
        self.config_reload_ok = Gauge(
            "devops_agent_config_last_reload_successful",
            "1 when the last load of the TOML file (at start or on SIGHUP) succeeded, 0 when "
            "the last reload failed and the previous configuration runs on",
            registry=r,
        )
        self.config_reload_at = Gauge(
            "devops_agent_config_last_reload_success_timestamp_seconds",
            "Unix time the TOML file was last loaded successfully",
            registry=r,
        )
