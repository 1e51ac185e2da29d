"""The console in a real headless Chromium (Debian's chromium and chromedriver, driven by
Selenium; nothing downloads a browser): the daemon runs as a process on real Prometheus,
its model (a fake on a real socket) proposes to restart a related service for a leak on
market-predictor, so the restart waits; a human logs in, sees on the list, the pending
page and the incident page that the restart would run on the related service, finds the
plot, sees a hostile label as text, approves exactly what is shown, and the gateway
receives exactly one request, for that service. Screenshots are kept under .run/console/
for humans. A missing browser fails the test."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from agent.demo.gateway_sim import GatewaySimulator
from agent.local import LocalPrometheus, MetricsTarget, free_port
from agent.local.browser import chromium, headless_flags
from tests.conftest import REPO
from tests.integration.daemon_support import DaemonProcess, agent_env, write_config
from tests.llm_fakes import FakeModel, completion, phase_of, plan, triage

pytestmark = pytest.mark.integration

SHOTS = REPO / ".run" / "console"
APPROVE = "browser-approve-token"
HOSTILE = "<script>document.title='owned'</script>"


RELATED = "coding-ai-agent"


def _related(body: dict[str, Any]) -> dict[str, Any]:
    phase = phase_of(body)
    if phase == "triage":
        return triage()
    if phase == "investigation":
        return completion("The cache in coding-ai-agent holds the memory, I think.")
    return plan(action="restart", target=RELATED)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    """A headless Chromium with a fresh profile and no background network; Debian's
    chromium and chromedriver, or the test fails (make install)."""
    driver = shutil.which("chromedriver")
    assert driver, "chromium-driver is missing: run `make install`"
    options = Options()
    options.binary_location = chromium()
    for flag in headless_flags(tmp_path / "chromium", 1280, 2200):
        options.add_argument(flag)
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    chrome.set_page_load_timeout(60)
    yield chrome
    chrome.quit()


def test_a_human_approves_from_the_console(
    browser: webdriver.Chrome,
    tmp_path: Path,
    e2e_prometheus: LocalPrometheus,
    services_target: MetricsTarget,
) -> None:
    """Log in, list, incident page with its plot, a hostile label as text, approve: one
    request at the gateway."""
    services_target.set("e2e_memory_bytes", 5000, service="market-predictor", team=HOSTILE)
    gateway = GatewaySimulator().start()
    model = FakeModel(responder=_related)
    port = free_port()
    services = {
        "market-predictor": {"actions": ["restart", "collect_logs"], "related": [RELATED]},
        RELATED: {"actions": ["restart", "collect_logs"]},
    }
    config = write_config(tmp_path / "agent.toml", services=services)
    env = agent_env(
        tmp_path,
        config,
        e2e_prometheus.url,
        gateway.url,
        OPENAI_BASE_URL=model.base_url,
        METRICS_ADDR=f"127.0.0.1:{port}",
        APPROVAL_TOKEN=APPROVE,
        CONSOLE_TOKEN="browser-view-token",
    )
    daemon = DaemonProcess(env, tmp_path)
    SHOTS.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{port}"
    try:
        [asked] = daemon.wait_for("approval_requested", timeout=60)
        incident_id = asked["incident_id"]
        browser.get(f"{base}/ui/")
        assert "/ui/login" in browser.current_url
        browser.find_element(By.NAME, "token").send_keys(APPROVE)
        browser.find_element(By.CSS_SELECTOR, "form.login button").click()
        assert browser.current_url.endswith("/ui/")
        assert f"restart {RELATED}?" in browser.find_element(By.TAG_NAME, "body").text
        browser.save_screenshot(str(SHOTS / "list.png"))
        browser.get(f"{base}/ui/pending")
        row = browser.find_element(By.CSS_SELECTOR, "table.incidents tbody tr").text
        assert "market-predictor" in row and RELATED in row, row
        browser.get(f"{base}/ui/")
        browser.find_element(By.LINK_TEXT, incident_id).click()
        assert browser.current_url.endswith(f"/ui/incidents/{incident_id}")
        svg = browser.find_element(By.CSS_SELECTOR, "svg.plot")
        path = svg.find_element(By.CSS_SELECTOR, "path.series").get_attribute("d") or ""
        deadline = time.monotonic() + 30
        while len(path.split(" L ")) < 3 and time.monotonic() < deadline:
            time.sleep(1)
            browser.refresh()
            path = (
                browser.find_element(By.CSS_SELECTOR, "svg.plot path.series").get_attribute("d")
                or ""
            )
        assert path.startswith("M ") and len(path.split(" L ")) >= 3, path
        assert browser.find_elements(By.CSS_SELECTOR, "svg.plot line.threshold")
        assert browser.find_elements(By.TAG_NAME, "script") == []
        assert (
            browser.title != "owned" and HOSTILE in browser.find_element(By.TAG_NAME, "body").text
        )
        heading = browser.find_element(By.CSS_SELECTOR, "section.ask h2").text
        assert heading == f"Waiting for approval: restart on {RELATED}", heading
        warning = browser.find_element(By.CSS_SELECTOR, "section.ask p.warn").text
        assert f"This runs on {RELATED}, not on market-predictor" in warning, warning
        browser.save_screenshot(str(SHOTS / "incident-waiting.png"))

        form = browser.find_element(By.CSS_SELECTOR, f"form[action$='/{incident_id}/approve']")
        form.find_element(By.NAME, "by").send_keys("alice")
        form.find_element(By.NAME, "reason").send_keys("the leak is real on the graph")
        pinned = form.find_element(By.NAME, "target").get_attribute("value")
        assert pinned == RELATED
        assert form.find_element(By.CSS_SELECTOR, "button.approve").text == (
            f"approve restart on {RELATED}"
        )
        form.find_element(By.CSS_SELECTOR, "button.approve").click()
        message = browser.find_element(By.CSS_SELECTOR, "p.message").text
        assert message == "approved", message
        browser.save_screenshot(str(SHOTS / "incident-approved.png"))
        daemon.wait_for("remediation_dispatched", timeout=30)
        time.sleep(1)
        executions = gateway.executions()
    finally:
        daemon.close()
        model.stop()
        gateway.stop()
    assert len(executions) == 1
    assert executions[0].body["action_request"]["intent"] == "restart the service"
    assert executions[0].body["target_resource"]["name"] == RELATED
    assert "alice" not in json.dumps(executions[0].body)
    assert (SHOTS / "incident-approved.png").stat().st_size > 10_000
