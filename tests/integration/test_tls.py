"""`devops-agent run` serving HTTPS itself (TLS_CERT_FILE, TLS_KEY_FILE) with a throwaway
certificate made by Debian's openssl: the console and the approval API answer over TLS
only, the session cookie is Secure, and the Host check holds there too."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from agent.local import free_port
from tests.integration.daemon_support import DaemonProcess, agent_env, write_config
from tests.tls import make_certificate

pytestmark = pytest.mark.integration

VIEW, APPROVE = "tls-console-view-token", "tls-console-approve-token"


def test_the_console_and_the_approval_api_over_tls(tmp_path: Path) -> None:
    """HTTPS with the certificate answers; plain HTTP on the same port gets nothing; a
    login sets a Secure cookie that opens the console; the API authenticates its bearer
    token over TLS and takes full ids only; a foreign Host is refused."""
    cert, key = make_certificate(tmp_path)
    port = free_port()
    config = write_config(tmp_path / "agent.toml", diagnosis={"use_llm": False})
    env = agent_env(
        tmp_path,
        config,
        f"http://127.0.0.1:{free_port()}",
        "http://127.0.0.1:9",
        METRICS_ADDR=f"127.0.0.1:{port}",
        TLS_CERT_FILE=str(cert),
        TLS_KEY_FILE=str(key),
        CONSOLE_TOKEN=VIEW,
        APPROVAL_TOKEN=APPROVE,
    )
    daemon = DaemonProcess(env, tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    base = f"https://127.0.0.1:{port}"
    try:
        daemon.wait_for("daemon_started", timeout=60)
        with httpx.Client(base_url=base, verify=trust, timeout=10) as client:
            assert client.get("/healthz").status_code in (200, 503)
            assert client.get("/ui/").status_code == 303
            login = client.post("/ui/login", data={"token": VIEW, "next": "/ui/"})
            assert login.status_code == 303
            assert "secure" in login.headers["set-cookie"].lower()
            assert client.get("/ui/").status_code == 200
            auth = {"Authorization": f"Bearer {APPROVE}"}
            answer = client.post(
                "/api/incidents/0123456789ab/approve", headers=auth, json={"by": "a"}
            )
            assert answer.status_code == 404 and "full ids" in answer.json()["error"]
            wrong = client.post(
                "/api/incidents/0123456789ab/approve",
                headers={"Authorization": "Bearer nope"},
                json={"by": "a"},
            )
            assert wrong.status_code == 401
            rebound = client.get("/ui/", headers={"Host": f"rebind.attacker.example:{port}"})
            assert rebound.status_code == 400
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        with pytest.raises(httpx.ConnectError):  # a certificate nobody vouched for
            httpx.get(f"{base}/healthz", timeout=5)
    finally:
        daemon.close()
