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
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx


class AnswerTooLarge(Exception):
    """The peer's answer is larger than the configured cap."""


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
