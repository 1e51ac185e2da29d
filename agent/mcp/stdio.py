"""``devops-agent mcp``: the MCP server over stdio, for an assistant that starts it.

The protocol owns the process's stdout: it is moved to a descriptor of its own at start,
and descriptor 1 is pointed at stderr, so nothing else (a stray print, a library, the
logs) can ever write into the protocol; the logs go to stderr. Messages are read one per
line up to ``MESSAGE_MAX`` bytes: a longer line is dropped, and refused with a protocol
error when its request id can be read from its first bytes.

The store is opened read-only for every read; answers (``--allow-answers``) go through
the one approval path. The server ends when the client closes stdin, or on SIGTERM or
SIGINT; either way an answer already being carried out is waited for (up to
``schedule.shutdown_grace_seconds``), so a client that disconnects mid-call leaves
nothing half-done.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp import types
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from agent.logs import Redactor, get_logger
from agent.mcp.desk import ProcessDesk
from agent.mcp.server import build_server
from agent.settings import Settings, secret_values
from agent.text import one_line, redact_url

log = get_logger("agent.mcp")

#: One message (one line), at most: a 10 MB argument is still read, and refused by the tool.
MESSAGE_MAX = 32 * 1024 * 1024
CHUNK = 65536
#: How long the last answers may take to be written once the server is done.
FLUSH_SECONDS = 5.0
_REQUEST_ID = re.compile(rb'"id"\s*:\s*(-?[0-9]{1,18}|"[^"\\]{0,64}")')


@dataclass(frozen=True)
class Oversized:
    """A line over ``MESSAGE_MAX`` bytes, dropped: its first bytes, to find its id."""

    head: bytes


Read = Callable[[], Awaitable[bytes]]


async def lines(read: Read, limit: int = MESSAGE_MAX) -> AsyncIterator[bytes | Oversized]:
    """The lines ``read`` gives (without their newline), each at most ``limit`` bytes;
    a longer one is dropped whole and given as ``Oversized``."""
    buffer = bytearray()
    dropping: bytes | None = None
    while chunk := await read():
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            piece = chunk[start:end]
            start = end + 1
            if dropping is None and len(buffer) + len(piece) > limit:
                dropping = bytes((buffer + piece)[:1024])
            if dropping is not None:
                yield Oversized(dropping)
            else:
                yield bytes(buffer + piece)
            buffer.clear()
            dropping = None
        rest = chunk[start:]
        if dropping is None and len(buffer) + len(rest) > limit:
            dropping = bytes((buffer + rest)[:1024])
            buffer.clear()
        elif dropping is None:
            buffer += rest
    if buffer and dropping is None:
        yield bytes(buffer)


def request_id(head: bytes) -> int | str | None:
    """The JSON-RPC id in the first bytes of a message, if it can be read there."""
    found = _REQUEST_ID.search(head)
    if found is None:
        return None
    raw = found.group(1).decode("utf-8", "replace")
    return raw.strip('"') if raw.startswith('"') else int(raw)


class Pipes:
    """The protocol's input (stdin) and output (stdout moved to a descriptor of its own)."""

    def __init__(
        self, read: Read, write: Callable[[bytes], Awaitable[None]], fds: tuple[int, int]
    ) -> None:
        self.read = read
        self.write = write
        self._fds = fds

    @classmethod
    async def open(cls) -> Pipes:
        """Take stdin and stdout for the protocol; point descriptor 1 at stderr."""
        out_fd = os.dup(1)
        os.dup2(2, 1)
        loop = asyncio.get_running_loop()
        return cls(await _reader(loop), await _writer(loop, out_fd), (0, out_fd))

    def release(self) -> None:
        """Leave stdin and stdout blocking again (a terminal shares them with its shell)."""
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.set_blocking(fd, True)


async def _reader(loop: asyncio.AbstractEventLoop) -> Read:
    reader = asyncio.StreamReader(limit=CHUNK)
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except ValueError:  # a regular file: reading it never waits long
        fd = sys.stdin.fileno()
        return lambda: asyncio.to_thread(os.read, fd, CHUNK)
    return lambda: reader.read(CHUNK)


async def _writer(loop: asyncio.AbstractEventLoop, fd: int) -> Callable[[bytes], Awaitable[None]]:
    target = os.fdopen(fd, "wb", buffering=0)
    try:
        transport, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, target
        )
    except ValueError:  # a regular file: writing it never waits long

        async def write_file(data: bytes) -> None:
            target.write(data)

        return write_file
    stream = asyncio.StreamWriter(transport, protocol, None, loop)

    async def write_pipe(data: bytes) -> None:
        stream.write(data)
        await stream.drain()

    return write_pipe


def _refusal(rid: int | str, message: str) -> SessionMessage:
    error = types.ErrorData(code=types.INVALID_REQUEST, message=message)
    return SessionMessage(
        types.JSONRPCMessage(types.JSONRPCError(jsonrpc="2.0", id=rid, error=error))
    )


async def _pump_in(
    pipes: Pipes,
    sink: MemoryObjectSendStream[SessionMessage | Exception],
    replies: MemoryObjectSendStream[SessionMessage],
) -> None:
    """Messages from stdin to the server, until the client closes it."""
    async with sink, replies:
        async for line in lines(pipes.read):
            if isinstance(line, Oversized):
                rid = request_id(line.head)
                log.warning("mcp_message_too_large", max_bytes=MESSAGE_MAX, request_id=rid)
                if rid is not None:
                    await replies.send(_refusal(rid, f"message over {MESSAGE_MAX} bytes: refused"))
                continue
            if not line.strip():
                continue
            try:
                message = types.JSONRPCMessage.model_validate_json(line)
            except ValidationError as exc:
                log.warning("mcp_message_unreadable", error=one_line(str(exc), 300))
                continue
            await sink.send(SessionMessage(message))


async def _pump_out(source: MemoryObjectReceiveStream[SessionMessage], pipes: Pipes) -> None:
    """Messages from the server to stdout, one per line, until the server is done."""
    async with source:
        async for message in source:
            data = message.message.model_dump_json(by_alias=True, exclude_none=True)
            try:
                await pipes.write(data.encode() + b"\n")
            except (BrokenPipeError, ConnectionResetError):
                log.info("mcp_client_gone")
                return


async def _stop_on(stopping: asyncio.Event, scope: anyio.CancelScope) -> None:
    await stopping.wait()
    log.info("mcp_stopping", reason="signal")
    scope.cancel()


async def serve_stdio(settings: Settings, *, allow_answers: bool) -> int:
    """Serve MCP over stdin and stdout until the client leaves or a signal comes."""
    pipes = await Pipes.open()
    desk = ProcessDesk(settings, allow_answers=allow_answers)
    server = build_server(desk, Redactor(secret_values(settings.env)).text)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    log.info(
        "mcp_started",
        via="stdio",
        answers=allow_answers,
        store=redact_url(settings.env.state_url),
    )
    into, received = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    out, outgoing = anyio.create_memory_object_stream[SessionMessage](0)
    options: Any = server.create_initialization_options()
    try:
        async with anyio.create_task_group() as writing:
            writing.start_soon(_pump_out, outgoing, pipes)
            async with anyio.create_task_group() as reading:
                reading.start_soon(_pump_in, pipes, into, out.clone())
                reading.start_soon(_stop_on, stopping, reading.cancel_scope)
                async with out:
                    await server.run(received, out, options)
                reading.cancel_scope.cancel()
            # the server is done: what it said is written out, unless nobody reads it
            writing.cancel_scope.deadline = anyio.current_time() + FLUSH_SECONDS
        # a signal now changes nothing: answers in flight are waited for, within the grace
        await desk.drain(settings.config.schedule.shutdown_grace_seconds)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(sig)
        pipes.release()
    log.info("mcp_stopped")
    return 0
