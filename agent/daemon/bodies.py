"""Reading a request body within a size cap and a deadline, for every HTTP surface.

A body is refused as soon as it passes its cap (a ``Content-Length`` over the cap before
any byte is read), and one that does not arrive within the deadline is cut off, so a
slow or huge request can hold neither a worker nor the daemon's memory.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request


class BodyTooLarge(Exception):
    """The request body is larger than its cap."""


async def read_body(request: Request, max_bytes: int, timeout: float) -> bytes:
    """The whole body; BodyTooLarge past ``max_bytes``, TimeoutError past ``timeout``,
    starlette's ClientDisconnect when the client goes away."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async with asyncio.timeout(timeout):
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise BodyTooLarge
            chunks.append(chunk)
    return b"".join(chunks)
