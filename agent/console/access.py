"""Who may use the console, and how a browser proves it.

``CONSOLE_TOKEN`` lets a human look; ``APPROVAL_TOKEN`` lets a human look and answer
approval requests. The login form takes either and sets one cookie (HttpOnly,
SameSite=Strict, Path=/ui, Secure behind an https ``PUBLIC_URL``) that carries the role,
an expiry and an HMAC keyed by that role's token: no session store, valid across replicas
and restarts, void as soon as the token changes. Every form carries a CSRF token derived
from the cookie. Without any token the console is off, unless ``METRICS_ADDR`` is a
loopback address: then it is read-only, for whoever can reach the host.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Literal

Role = Literal["viewer", "approver"]
COOKIE = "devops_agent_console"
SESSION_SECONDS = 12 * 3600


def _sign(key: str, message: str) -> str:
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Access:
    """The console's tokens and where it listens."""

    console_token: str | None
    approval_token: str | None
    loopback: bool
    secure_cookie: bool = False

    @property
    def enabled(self) -> bool:
        """Whether the console is served at all."""
        return bool(self.console_token or self.approval_token or self.loopback)

    @property
    def open_read_only(self) -> bool:
        """No token configured, on loopback: everyone who reaches it may look."""
        return not (self.console_token or self.approval_token) and self.loopback

    def _token(self, role: Role) -> str | None:
        return self.approval_token if role == "approver" else self.console_token

    def login(self, given: str, now: float | None = None) -> str | None:
        """The cookie value for a correct token, None for a wrong one."""
        roles: tuple[Role, ...] = ("approver", "viewer")
        for role in roles:
            token = self._token(role)
            if token and hmac.compare_digest(given.encode(), token.encode()):
                expires = int((now or time.time()) + SESSION_SECONDS)
                message = f"{role}:{expires}"
                return f"{message}:{_sign(token, message)}"
        return None

    def role(self, cookie: str | None, now: float | None = None) -> Role | None:
        """The role a cookie proves (or the open read-only role), None otherwise."""
        if cookie:
            role, _, rest = cookie.partition(":")
            expires, _, signature = rest.partition(":")
            token = self._token(role) if role in ("viewer", "approver") else None  # type: ignore[arg-type]
            if token and expires.isdigit() and int(expires) > (now or time.time()):
                expected = _sign(token, f"{role}:{expires}")
                if hmac.compare_digest(signature.encode(), expected.encode()):
                    return role  # type: ignore[return-value]
        return "viewer" if self.open_read_only else None

    def csrf(self, cookie: str | None) -> str:
        """The CSRF token of a session (forms carry it; a POST must match it)."""
        return _sign(cookie or "no-session", "csrf")[:32]

    def csrf_ok(self, cookie: str | None, given: str) -> bool:
        """Whether a form's CSRF token belongs to this session."""
        return bool(cookie) and hmac.compare_digest(given.encode(), self.csrf(cookie).encode())
