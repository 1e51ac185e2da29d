"""Who may use the console, and how a browser proves it.

``CONSOLE_TOKEN`` lets a human look; ``APPROVAL_TOKEN`` lets a human look and answer
approval requests. The login form takes either and sets one cookie (HttpOnly,
SameSite=Strict, Path=/ui, Secure behind TLS or an https ``PUBLIC_URL``) that carries the
role, an expiry, a random session id and an HMAC keyed by that role's token: valid across
replicas and restarts, void as soon as the token changes (rotating a token ends every
session made with it). Logging out ends that session on the server: its id is recorded
in the store (``ended_sessions``) until it would have expired, and every replica refuses
it. Every form carries a CSRF token derived from the cookie.

``/ui/login`` takes at most ``LOGIN_FAILURES`` wrong tokens per ``LOGIN_WINDOW_SECONDS``
from one client address; after that it answers 429 with ``Retry-After`` without looking
at the token. The count is per process: each replica counts its own.

Without any token the console is off, unless ``METRICS_ADDR`` is a loopback address: then
it is read-only, for whoever can reach the host (``check-config`` refuses that together
with a ``PUBLIC_URL``, where "whoever" is anyone).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Role = Literal["viewer", "approver"]
COOKIE = "devops_agent_console"
SESSION_SECONDS = 12 * 3600
LOGIN_FAILURES = 10
LOGIN_WINDOW_SECONDS = 60.0
#: Client addresses whose failures are remembered at once, at most (a flood from many
#: addresses costs memory up to this, then the oldest are forgotten).
LOGIN_ADDRESSES = 10_000


def _sign(key: str, message: str) -> str:
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Session:
    """A logged-in browser: its role, its id, and when it expires (epoch seconds)."""

    role: Role
    id: str
    expires: int


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

    def _token(self, role: str) -> str | None:
        if role == "approver":
            return self.approval_token
        return self.console_token if role == "viewer" else None

    def login(self, given: str, now: float | None = None) -> str | None:
        """The cookie value of a new session for a correct token, None for a wrong one."""
        roles: tuple[Role, ...] = ("approver", "viewer")
        for role in roles:
            token = self._token(role)
            if token and hmac.compare_digest(given.encode(), token.encode()):
                expires = int((now or time.time()) + SESSION_SECONDS)
                message = f"{role}:{expires}:{secrets.token_hex(16)}"
                return f"{message}:{_sign(token, message)}"
        return None

    def session(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie proves (signed by its role's current token, not expired);
        None otherwise. Whether it was ended by a logout is the store's to say."""
        parts = (cookie or "").split(":")
        if len(parts) != 4:
            return None
        role, expires, session_id, signature = parts
        token = self._token(role)
        if not token or not expires.isdigit() or int(expires) <= (now or time.time()):
            return None
        expected = _sign(token, f"{role}:{expires}:{session_id}")
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            return None
        return Session("approver" if role == "approver" else "viewer", session_id, int(expires))

    def role(self, cookie: str | None, now: float | None = None) -> Role | None:
        """The role a cookie proves (or the open read-only role), None otherwise."""
        session = self.session(cookie, now)
        if session is not None:
            return session.role
        return "viewer" if self.open_read_only else None

    def csrf(self, cookie: str | None) -> str:
        """The CSRF token of a session (forms carry it; a POST must match it)."""
        return _sign(cookie or "no-session", "csrf")[:32]

    def csrf_ok(self, cookie: str | None, given: str) -> bool:
        """Whether a form's CSRF token belongs to this session."""
        return bool(cookie) and hmac.compare_digest(given.encode(), self.csrf(cookie).encode())


class LoginThrottle:
    """Wrong tokens per client address in a sliding window; ``clock`` is monotonic."""

    def __init__(
        self,
        failures: int = LOGIN_FAILURES,
        window: float = LOGIN_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.window = window
        self._clock = clock
        self._seen: dict[str, deque[float]] = {}

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self._seen.get(address, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def retry_after(self, address: str) -> int | None:
        """Whole seconds until ``address`` may try again; None when it may now."""
        now = self._clock()
        times = self._recent(address, now)
        if len(times) < self.failures:
            return None
        return max(1, math.ceil(times[0] + self.window - now))

    def failed(self, address: str) -> None:
        """Count one wrong token from ``address``."""
        now = self._clock()
        times = self._recent(address, now)
        times.append(now)
        self._seen.pop(address, None)
        self._seen[address] = times  # newest last: the oldest go first when full
        while len(self._seen) > LOGIN_ADDRESSES:
            self._seen.pop(next(iter(self._seen)))

    def succeeded(self, address: str) -> None:
        """A right token: forget the address's failures."""
        self._seen.pop(address, None)
