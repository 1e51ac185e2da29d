"""Host names as the agent's HTTP surfaces compare them: the defence against DNS rebinding.

A web page on any site can make a browser send requests to ``127.0.0.1:9464`` by giving
its own name a DNS answer of ``127.0.0.1`` (DNS rebinding), also through an ``ssh -L``
tunnel. Such a request carries the page's name in its ``Host`` header, never ours, so the
console, the approval API and the webhook answer only requests whose ``Host`` names the
agent: ``METRICS_ADDR``'s host, ``PUBLIC_URL``'s host, or a loopback name (``localhost``,
``127.0.0.0/8``, ``::1``). When ``METRICS_ADDR`` listens on every address (``0.0.0.0``,
``::``) any IP literal is accepted too: a rebinding attack needs a name, and Alertmanager
may well reach the agent by one of its addresses.

A ``Host`` is compared as a name, not as text: the port is dropped, IPv6 brackets are
removed and the address written in its short form, one trailing dot is dropped, letters
are lowercased. Anything else that is not a plain host name is refused.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

_NAME = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?")
WILDCARDS = frozenset({"0.0.0.0", "::"})


def _address(text: str) -> str | None:
    """``text`` as the short form of an IP address, None when it is not one."""
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) only reaches this machine."""
    name = host_name(host) if host else None
    if name is None:
        return False
    if name == "localhost":
        return True
    address = _address(name)
    return address is not None and ipaddress.ip_address(address).is_loopback


def _bracketed(value: str) -> str | None:
    end = value.find("]")
    if end < 0:
        return None
    rest = value[end + 1 :]
    if rest and not (rest.startswith(":") and rest[1:].isdigit()):
        return None
    return _address(value[1:end])


def host_name(value: str) -> str | None:
    """The host a ``Host`` header (or a ``HOST[:PORT]``) names, normalised; None when it
    is not a host name or an address."""
    value = value.strip()
    if value.startswith("["):
        return _bracketed(value)
    if value.count(":") > 1:  # an IPv6 address written without brackets, as in METRICS_ADDR
        return _address(value)
    name, sep, port = value.partition(":")
    if sep and not port.isdigit():
        return None
    name = name.lower().removesuffix(".")
    if not _NAME.fullmatch(name):
        return None
    return _address(name) or name


@dataclass(frozen=True)
class HostPolicy:
    """The ``Host`` values the guarded surfaces answer."""

    names: frozenset[str]
    #: METRICS_ADDR is a wildcard: any IP literal is one of ours.
    any_address: bool = False

    @classmethod
    def of(cls, metrics_host: str, public_url: str | None = None) -> HostPolicy:
        """The policy for ``METRICS_ADDR``'s host and ``PUBLIC_URL``."""
        names = {"localhost"}
        own = host_name(metrics_host)
        if own is not None and own not in WILDCARDS:
            names.add(own)
        public = host_name(urlsplit(public_url).hostname or "") if public_url else None
        if public is not None:
            names.add(public)
        return cls(frozenset(names), any_address=own in WILDCARDS)

    def allows(self, header: str | None) -> bool:
        """Whether a request with this ``Host`` header is one of ours."""
        name = host_name(header) if header else None
        if name is None:
            return False
        if name in self.names or is_loopback(name):
            return True
        return self.any_address and _address(name) is not None
