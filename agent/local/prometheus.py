"""A real Prometheus (Debian's package) on a free loopback port, with the given scrape
targets and rule files, its own directory for config, rules and storage."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from agent.local.servers import LocalServer, find_binary, free_port


class LocalPrometheus(LocalServer):
    """A real Prometheus scraping the given targets every second, with the given rules."""

    def __init__(
        self,
        workdir: Path,
        *,
        targets: dict[str, str],
        rules: str = "groups: []\n",
        alertmanager_url: str | None = None,
        port: int | None = None,
        external_labels: dict[str, str] | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(workdir, port or free_port())
        self.extra_args = tuple(extra_args)
        self.targets = targets  # job name -> host:port
        self.rules = rules
        self.alertmanager_url = alertmanager_url
        self.external_labels = external_labels or {}

    def config(self) -> dict[str, object]:
        """The prometheus.yml content (JSON is valid YAML)."""
        cfg: dict[str, object] = {
            "global": {
                "scrape_interval": "1s",
                "evaluation_interval": "1s",
                "external_labels": self.external_labels,
            },
            "rule_files": [str(self.workdir / "rules.yml")],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [addr]}]}
                for job, addr in self.targets.items()
            ],
        }
        if self.alertmanager_url:
            host = self.alertmanager_url.split("://", 1)[1]
            cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [host]}]}]}
        return cfg

    def start(self) -> LocalPrometheus:
        """Write config and rules, start the server, wait until it is ready."""
        binary = find_binary("prometheus")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "rules.yml").write_text(self.rules)
        (self.workdir / "prometheus.yml").write_text(json.dumps(self.config(), indent=2))
        self._spawn(
            [
                binary,
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
                *self.extra_args,
            ],
            "/-/ready",
        )
        return self
