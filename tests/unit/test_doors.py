"""check-config refuses the settings that would leave a door open: every refusal in one
run, one line each, exit 78, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli.main import main
from tests.conftest import BASE_ENV, CONFIG, REPO
from tests.tls import make_certificate

LONG = "0123456789abcdef-long-enough"


def _check(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: dict[str, str]
) -> tuple[int, list[str]]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code = main(["check-config"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    problems = [
        line.removeprefix("devops-agent: config: ")
        for line in captured.err.splitlines()
        if line.startswith("devops-agent: config: ")
    ]
    return code, problems


@pytest.fixture(autouse=True)
def _in_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Run from an empty directory, so no .env file is picked up."""
    monkeypatch.chdir(tmp_path)


def test_every_open_door_is_refused_in_one_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A related service that is not configured, a short token, a padded token, the
    template's API key, an open console behind PUBLIC_URL and a lone TLS certificate:
    each named on its own line, all in one run, exit 78."""
    text = CONFIG.read_text().replace(
        'actions = ["collect_logs", "inspect_resources", "health_check"]',
        'actions = ["collect_logs", "inspect_resources", "health_check"]\n'
        'related = ["no-such-service"]',
        1,
    )
    config = tmp_path / "agent.toml"
    config.write_text(text)
    env = dict(
        BASE_ENV,
        AGENT_CONFIG=str(config),
        OPENAI_API_KEY="sk-change-me",
        WEBHOOK_TOKEN="short-token",
        AI_COMMAND_GATEWAY_TOKEN=f" {LONG}",
        PUBLIC_URL="https://agent.example.org",
        TLS_CERT_FILE=str(tmp_path / "cert.pem"),
    )
    code, problems = _check(monkeypatch, capsys, env)
    assert code == 78
    assert sorted(problems) == sorted(
        [
            f"{config}: services.devops-ai-agent.related: 'no-such-service' is not a "
            "configured service",
            "OPENAI_API_KEY: still the placeholder 'sk-change-me'; set the real secret",
            "WEBHOOK_TOKEN: 11 characters is too short to resist guessing; use at least 16 "
            "(e.g. `openssl rand -hex 24`)",
            "AI_COMMAND_GATEWAY_TOKEN: has leading or trailing whitespace; remove it",
            "PUBLIC_URL: the console would be open to whoever reaches "
            "https://agent.example.org (a proxy on this host makes every request come from "
            "loopback); set CONSOLE_TOKEN or APPROVAL_TOKEN",
            "TLS_CERT_FILE, TLS_KEY_FILE: set both or neither",
        ]
    )


@pytest.mark.parametrize("name", ["WEBHOOK_TOKEN", "APPROVAL_TOKEN", "CONSOLE_TOKEN"])
def test_each_http_token_needs_16_characters(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """15 characters are refused, 16 pass."""
    code, problems = _check(monkeypatch, capsys, dict(BASE_ENV, **{name: "x" * 15}))
    assert code == 78 and [p.split(":")[0] for p in problems] == [name]
    code, problems = _check(monkeypatch, capsys, dict(BASE_ENV, **{name: "x" * 16}))
    assert (code, problems) == (0, [])


def test_every_placeholder_of_the_template_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each secret that .env.example ships with a value is refused with that value."""
    from agent.settings import EnvSettings

    secrets = {
        name.upper()
        for name, field in EnvSettings.model_fields.items()
        if "SecretStr" in str(field.annotation)
    }
    shipped = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#") and name in secrets and value:
            shipped[name] = value
    assert shipped, "the template ships no placeholder: nothing checked"
    for name, value in shipped.items():
        code, problems = _check(monkeypatch, capsys, dict(BASE_ENV, **{name: value}))
        assert code == 78 and problems == [
            f"{name}: still the placeholder {value!r}; set the real secret"
        ]


@pytest.mark.parametrize(
    ("extra", "refused"),
    [
        ({}, True),
        ({"ALLOW_PLAIN_HTTP": "true"}, False),
        ({"PUBLIC_URL": "https://agent.example.org"}, False),
        ({"PUBLIC_URL": "http://agent.example.org"}, True),
        ({"TLS": "yes"}, False),
    ],
)
def test_tokens_off_loopback_need_tls_or_a_word_from_the_operator(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    extra: dict[str, str],
    refused: bool,
) -> None:
    """METRICS_ADDR off loopback with a token: refused in plain HTTP, accepted with TLS,
    an https PUBLIC_URL, or ALLOW_PLAIN_HTTP=true."""
    env = dict(BASE_ENV, METRICS_ADDR="0.0.0.0:9464", APPROVAL_TOKEN=LONG, **extra)
    if env.pop("TLS", None):
        cert, key = make_certificate(tmp_path)
        env.update(TLS_CERT_FILE=str(cert), TLS_KEY_FILE=str(key))
    code, problems = _check(monkeypatch, capsys, env)
    if refused:
        assert code == 78 and problems == [
            "METRICS_ADDR: 0.0.0.0:9464 is not loopback, so APPROVAL_TOKEN and the console's "
            "cookie would cross the network in plain HTTP; set TLS_CERT_FILE and "
            "TLS_KEY_FILE, or an https PUBLIC_URL (a TLS proxy), or ALLOW_PLAIN_HTTP=true"
        ]
    else:
        assert (code, problems) == (0, [])


def test_a_certificate_that_does_not_load_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A key that is not the certificate's, or a missing file: one line naming both."""
    cert, _ = make_certificate(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _, wrong_key = make_certificate(other)
    code, problems = _check(
        monkeypatch,
        capsys,
        dict(BASE_ENV, TLS_CERT_FILE=str(cert), TLS_KEY_FILE=str(wrong_key)),
    )
    assert code == 78 and len(problems) == 1
    assert problems[0].startswith(f"TLS_CERT_FILE, TLS_KEY_FILE: cannot load {cert} with")
    code, problems = _check(
        monkeypatch,
        capsys,
        dict(BASE_ENV, TLS_CERT_FILE=str(tmp_path / "nope.pem"), TLS_KEY_FILE=str(wrong_key)),
    )
    assert code == 78 and problems == [
        f"TLS_CERT_FILE, TLS_KEY_FILE: no such file {tmp_path / 'nope.pem'}"
    ]


def test_local_model_refuses_a_weak_key_before_starting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """LOCAL_MODEL_API_KEY shorter than 16 characters (or padded): one line, exit 78,
    nothing started."""
    for given in ("short", f" {LONG}"):
        monkeypatch.setenv("LOCAL_MODEL_API_KEY", given)
        assert main(["local-model", "--port", "1"]) == 78
        err = capsys.readouterr().err
        assert err.splitlines() == [
            "devops-agent: config: LOCAL_MODEL_API_KEY: at least 16 characters, without "
            "surrounding whitespace (e.g. `openssl rand -hex 24`)"
        ]
