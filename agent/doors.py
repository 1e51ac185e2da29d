"""The settings that would leave a door open, refused before anything starts.

``check-config`` (and ``run``, ``sweep``) report every one of these at once, one line
each, exit 78:

- a secret with surrounding whitespace (refused, never trimmed silently), or still the
  placeholder ``.env.example`` ships;
- a bearer token of the HTTP surfaces (``WEBHOOK_TOKEN``, ``APPROVAL_TOKEN``,
  ``CONSOLE_TOKEN``) shorter than ``TOKEN_MIN_CHARS``;
- ``PUBLIC_URL`` set while the console would be open without a token: behind a reverse
  proxy on the same host every request comes from loopback, so "loopback only" no longer
  means "this machine only" (off loopback a console without a token is off already);
- ``METRICS_ADDR`` off loopback with a token set and neither TLS (``TLS_CERT_FILE``,
  ``TLS_KEY_FILE``) nor an ``https`` ``PUBLIC_URL``: the tokens and the console's cookie
  would cross the network in plain HTTP, unless ``ALLOW_PLAIN_HTTP=true`` says the
  operator knows (a private network, TLS terminated elsewhere);
- a TLS certificate without its key, or a pair Python cannot load.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from pydantic import SecretStr

from agent.hosts import is_loopback

if TYPE_CHECKING:
    from agent.settings import EnvSettings

#: The bearer tokens of the agent's own HTTP surfaces, at least this long.
TOKEN_MIN_CHARS = 16
HTTP_TOKENS = ("webhook_token", "approval_token", "console_token")
#: Values shipped in ``.env.example`` (and the usual spellings of "fill me in"): a secret
#: that still holds one was never set.
PLACEHOLDERS = frozenset({"sk-change-me", "change-me", "changeme", "replace-me", "your-key-here"})


def _secrets(env: EnvSettings) -> list[tuple[str, str]]:
    """Every secret that is set, as (variable, value)."""
    out = []
    for name, value in env:
        if isinstance(value, SecretStr):
            out.append((name.upper(), value.get_secret_value()))
    return out


def _placeholder(value: str) -> bool:
    lowered = value.lower()
    return lowered in PLACEHOLDERS or "change-me" in lowered or "changeme" in lowered


def secret_problems(env: EnvSettings) -> list[str]:
    """Secrets with surrounding whitespace, left at a placeholder, or too short."""
    problems = []
    for name, value in _secrets(env):
        if value != value.strip():
            problems.append(f"{name}: has leading or trailing whitespace; remove it")
        elif _placeholder(value):
            problems.append(f"{name}: still the placeholder {value!r}; set the real secret")
        elif name.lower() in HTTP_TOKENS and len(value) < TOKEN_MIN_CHARS:
            problems.append(
                f"{name}: {len(value)} characters is too short to resist guessing; use at "
                f"least {TOKEN_MIN_CHARS} (e.g. `openssl rand -hex 24`)"
            )
    return problems


def console_open(env: EnvSettings) -> bool:
    """Whether the console would answer without a token: the read-only open console, on
    a loopback METRICS_ADDR only (elsewhere, without a token, it is off)."""
    tokens = env.console_token is not None or env.approval_token is not None
    return not tokens and is_loopback(env.metrics_host_port[0])


def exposure_problems(env: EnvSettings) -> list[str]:
    """An open console reachable from elsewhere, tokens over plain HTTP."""
    problems = []
    loopback = is_loopback(env.metrics_host_port[0])
    if console_open(env) and env.public_url:
        problems.append(
            f"PUBLIC_URL: the console would be open to whoever reaches {env.public_url} (a "
            "proxy on this host makes every request come from loopback); set CONSOLE_TOKEN "
            "or APPROVAL_TOKEN"
        )
    tokens = [n.upper() for n in HTTP_TOKENS if getattr(env, n) is not None]
    https = (env.public_url or "").startswith("https://")
    if not loopback and tokens and not env.tls and not https and not env.allow_plain_http:
        problems.append(
            f"METRICS_ADDR: {env.metrics_addr} is not loopback, so {', '.join(tokens)} and "
            "the console's cookie would cross the network in plain HTTP; set TLS_CERT_FILE "
            "and TLS_KEY_FILE, or an https PUBLIC_URL (a TLS proxy), or ALLOW_PLAIN_HTTP=true"
        )
    return problems


def tls_problems(env: EnvSettings) -> list[str]:
    """A certificate without its key (or the reverse), or a pair that does not load."""
    cert, key = env.tls_cert_file, env.tls_key_file
    if cert is None and key is None:
        return []
    if cert is None or key is None:
        return ["TLS_CERT_FILE, TLS_KEY_FILE: set both or neither"]
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        return [f"TLS_CERT_FILE, TLS_KEY_FILE: no such file {exc.filename or cert}"]
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        return [f"TLS_CERT_FILE, TLS_KEY_FILE: cannot load {cert} with {key}: {reason}"]
    return []


def door_problems(env: EnvSettings) -> list[str]:
    """Every open door, one line each."""
    return [*secret_problems(env), *exposure_problems(env), *tls_problems(env)]
