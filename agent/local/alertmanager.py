"""A real Alertmanager (Debian's package) on a loopback port: one catch-all route, to
nowhere or to a webhook receiver, optional inhibit rules, clustering off."""

from __future__ import annotations

import json
from pathlib import Path

from agent.local.servers import LocalServer, find_binary


class LocalAlertmanager(LocalServer):
    """A real Alertmanager: one catch-all route, to nowhere or to a webhook receiver."""

    def __init__(
        self,
        workdir: Path,
        port: int,
        *,
        webhook_url: str | None = None,
        webhook_token: str | None = None,
        inhibit_rules: list[dict[str, object]] | None = None,
    ) -> None:
        super().__init__(workdir, port)
        self.webhook_url = webhook_url
        self.webhook_token = webhook_token
        self.inhibit_rules = inhibit_rules or []

    def config(self) -> dict[str, object]:
        """The alertmanager.yml content (JSON is valid YAML)."""
        inhibit = {"inhibit_rules": self.inhibit_rules} if self.inhibit_rules else {}
        if self.webhook_url is None:
            return {
                "route": {"receiver": "null", "group_wait": "1s"},
                "receivers": [{"name": "null"}],
                **inhibit,
            }
        hook: dict[str, object] = {"url": self.webhook_url, "max_alerts": 100}
        if self.webhook_token is not None:
            hook["http_config"] = {
                "authorization": {"type": "Bearer", "credentials": self.webhook_token}
            }
        return {
            "route": {
                "receiver": "devops-agent",
                "group_by": ["alertname", "service"],
                "group_wait": "0s",
                "group_interval": "1s",
                "repeat_interval": "1h",
            },
            "receivers": [{"name": "devops-agent", "webhook_configs": [hook]}],
            **inhibit,
        }

    def start(self) -> LocalAlertmanager:
        """Write config, start the server (clustering off), wait until ready."""
        binary = find_binary("prometheus-alertmanager", "alertmanager")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.config()
        (self.workdir / "alertmanager.yml").write_text(json.dumps(config))
        self._spawn(
            [
                binary,
                f"--config.file={self.workdir / 'alertmanager.yml'}",
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            "/-/ready",
        )
        return self
