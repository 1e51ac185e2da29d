"""Bounded HTTP exchanges, shared by every client.

httpx's timeouts bound each network operation, not the request: a peer that sends its
answer one byte every few seconds never trips a read timeout. So every exchange runs
under one ``asyncio.timeout`` for the whole request, and the body is read as a stream
and refused as soon as it passes a size cap (a ``Content-Length`` over the cap is
refused before any byte is read). The cap counts decoded bytes; the clients ask for
``Accept-Encoding: identity`` so that well-behaved peers send nothing to decode. Decoding
JSON refuses nesting deep enough to exhaust the parser's recursion.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from agent.text import clip, public_url


class AnswerTooLarge(Exception):
    """The peer's answer is larger than the configured cap."""


@dataclass(frozen=True)
class Peer:
    """Who a client talks to and the settings that bound each exchange with it, so that
    every failure names the peer's URL (without credentials), the cause, and the setting
    to change when a limit was hit: ``Prometheus at http://127.0.0.1:9090 unreachable:
    connection refused``."""

    name: str
    url: str
    timeout: float
    timeout_setting: str
    max_bytes: int
    size_setting: str

    @classmethod
    def of(
        cls,
        name: str,
        url: str,
        *,
        timeout: float,
        timeout_setting: str,
        max_bytes: int,
        size_setting: str,
    ) -> Peer:
        """A peer whose URL is kept without credentials."""
        return cls(name, public_url(url), timeout, timeout_setting, max_bytes, size_setting)

    def __str__(self) -> str:
        return f"{self.name} at {self.url}"

    def cause(self, exc: BaseException) -> str:
        """Why an exchange failed, without the peer's name: ``unreachable: connection
        refused``, ``no whole answer within 10s (prometheus.query_timeout_seconds)``."""
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return f"unreachable: {connect_cause(exc)}"
        if isinstance(exc, TimeoutError | httpx.TimeoutException):
            return f"no whole answer within {self.timeout:g}s ({self.timeout_setting})"
        if isinstance(exc, AnswerTooLarge):
            return f"{exc} ({self.size_setting})"
        if isinstance(exc, httpx.HTTPError):
            return f"connection lost: {type(exc).__name__}: {clip(str(exc), 200)}"
        return f"{type(exc).__name__}: {clip(str(exc), 200)}"

    def failure(self, exc: BaseException, what: str = "") -> str:
        """One line: the peer, what was asked (``what``, e.g. a path) and why it failed."""
        cause = self.cause(exc)
        if cause.startswith("unreachable"):
            return f"{self} {cause}"
        return f"{self} ({what}): {cause}" if what else f"{self}: {cause}"


def connect_cause(exc: BaseException) -> str:
    """Why a connection could not be made, in words: refused, DNS, TLS, timeout."""
    if isinstance(exc, httpx.ConnectTimeout):
        return "connection timed out"
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, socket.gaierror):
            return f"DNS lookup failed ({seen.strerror or seen})"
        if isinstance(seen, ssl.SSLError):
            return f"TLS failed ({clip(seen.reason or str(seen), 200)})"
        if isinstance(seen, OSError) and seen.errno is not None and seen.strerror:
            return seen.strerror.lower()
        seen = seen.__cause__ or seen.__context__
    return clip(str(exc), 200) or type(exc).__name__


@dataclass(frozen=True)
class Answer:
    """A whole HTTP answer, read within the deadline and the size cap."""

    status_code: int
    headers: httpx.Headers
    content: bytes

    @property
    def text(self) -> str:
        """The body as text (undecodable bytes replaced)."""
        return self.content.decode("utf-8", "replace")


async def exchange(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    deadline: float,
    max_bytes: int,
    **kwargs: Any,
) -> Answer:
    """Send one request and read the whole answer within ``deadline`` seconds.

    Raises httpx.HTTPError for transport failures, TimeoutError when the deadline passes,
    AnswerTooLarge when the body passes ``max_bytes``.
    """
    async with asyncio.timeout(deadline):
        request = http.build_request(method, url, **kwargs)
        response = await http.send(request, stream=True)
        try:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise AnswerTooLarge(f"answer of {declared} bytes is over the {max_bytes}-byte cap")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise AnswerTooLarge(f"answer is over the {max_bytes}-byte cap")
                chunks.append(chunk)
        finally:
            await response.aclose()
    return Answer(response.status_code, response.headers, b"".join(chunks))


def decode_json(content: bytes) -> object:
    """The JSON value in ``content``; ValueError when it is not JSON or nests too deeply."""
    try:
        return json.loads(content)
    except RecursionError as exc:
        raise ValueError("JSON nests too deeply") from exc


class NotInDryRun(RuntimeError):
    """A request a dry run must never send reached a client: a bug, made loud instead of
    sent (the incident it was for fails with this reason)."""


class DryRunTransport(httpx.AsyncBaseTransport):
    """The transport of a dry run's gateway and Alertmanager clients: requests that read
    (``reads``, e.g. GET) go through; any other is refused before it touches the network.

    The decision paths already send nothing in a dry run; this is the backstop that makes
    a missed path fail loudly rather than restart a service or page someone."""

    def __init__(
        self, reads: frozenset[str] = frozenset(), inner: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._reads = reads
        self._inner = inner or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Forward a read; refuse anything else."""
        if request.method not in self._reads:
            raise NotInDryRun(f"dry run: {request.method} {request.url.path} was not sent")
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self._inner.aclose()


class CappedTransport(httpx.AsyncBaseTransport):
    """A transport whose answers fail once their body passes ``max_bytes``, while being read:
    for clients that read bodies themselves (the openai package), so a huge answer is never
    held whole in memory."""

    def __init__(self, max_bytes: int, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self._max_bytes = max_bytes
        self._inner = inner or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Forward the request; wrap the answer's body in a counting stream."""
        response = await self._inner.handle_async_request(request)
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            await response.aclose()
            raise AnswerTooLarge(
                f"answer of {declared} bytes is over the {self._max_bytes}-byte cap"
            )
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_CappedStream(response.stream, self._max_bytes),
            extensions=response.extensions,
            request=request,
        )

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self._inner.aclose()


class _CappedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream | httpx.AsyncByteStream, max_bytes: int) -> None:
        self._inner = inner
        self._max_bytes = max_bytes

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        assert isinstance(self._inner, httpx.AsyncByteStream)
        async for chunk in self._inner:
            size += len(chunk)
            if size > self._max_bytes:
                raise AnswerTooLarge(f"answer is over the {self._max_bytes}-byte cap")
            yield chunk

    async def aclose(self) -> None:
        if isinstance(self._inner, httpx.AsyncByteStream):
            await self._inner.aclose()
