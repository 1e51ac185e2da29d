"""The MCP server itself, on the official ``mcp`` SDK's low-level ``Server``.

Its handlers only translate: a tool call goes to ``tools.call``, a resource read to the
same text as ``get_incident``. An unknown tool or resource is a protocol error with one
line; every other failure a caller can cause is a tool result marked as an error (one
line); a bug in a handler is logged with its traceback and answered "internal error"
without taking the server down. Every text passes the log redactor on its way out, so no
configured secret (a token, an API key, the store's password) can appear in an answer.

``serve_http`` answers one streamable-HTTP request statelessly (JSON, no session, no
stream): any replica can serve any request, and a request that ends ends everything it
started but an answer already on its way (that runs as the daemon's own task).

Imported only when a server is asked for: a daemon nobody asks over MCP never loads the SDK.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from mcp import types
from mcp.server.lowlevel import Server
from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.shared.exceptions import McpError
from starlette.types import Receive, Scope, Send

from agent import __version__
from agent.errors import AgentError
from agent.logs import get_logger
from agent.mcp.catalogue import RESOURCE_TEMPLATE, TOOLS
from agent.mcp.desk import Desk
from agent.mcp.render import NOTE
from agent.mcp.tools import Refused, UnknownTool, call, incident_answer, resource_id
from agent.text import one_line

log = get_logger("agent.mcp")

INSTRUCTIONS = (
    "devops-agent heals Docker services: it sweeps Prometheus, diagnoses findings with a "
    "model, and acts only through the AI Command Gateway, asking a human where it may not "
    "act alone. These tools read its records: what it did, why, and what waits for a "
    "human. " + NOTE + " Approve or deny only on a human's explicit decision."
)
#: The JSON-RPC code for an unknown resource (the MCP specification's).
RESOURCE_NOT_FOUND = -32002
#: Recent incidents listed as resources.
RESOURCES_LISTED = 20

Redact = Callable[[str], str]
Handler = Callable[[Any], Awaitable[types.ServerResult]]


def _error(code: int, message: str) -> McpError:
    return McpError(types.ErrorData(code=code, message=one_line(message, 1000)))


def build_server(desk: Desk, redact: Redact) -> Server[Any, Any]:
    """An MCP server whose tools read and answer through ``desk``."""
    server: Server[Any, Any] = Server("devops-agent", __version__, INSTRUCTIONS)
    handlers: dict[type, Handler] = {
        types.ListToolsRequest: _list_tools,
        types.CallToolRequest: _call_tool(desk, redact),
        types.ListResourcesRequest: _list_resources(desk),
        types.ListResourceTemplatesRequest: _list_templates,
        types.ReadResourceRequest: _read_resource(desk, redact),
    }
    server.request_handlers.update(handlers)
    return server


async def _list_tools(_: Any) -> types.ServerResult:
    tools = [
        types.Tool(name=t.name, description=t.description, inputSchema=t.schema) for t in TOOLS
    ]
    return types.ServerResult(types.ListToolsResult(tools=tools))


def _call_tool(desk: Desk, redact: Redact) -> Handler:
    async def handle(request: types.CallToolRequest) -> types.ServerResult:
        name = request.params.name
        try:
            result = await call(desk, name, request.params.arguments)
            text, error = result.text, result.error
        except UnknownTool as exc:
            raise _error(types.INVALID_PARAMS, str(exc)) from None
        except Exception as exc:  # a bug must not take the server down; say so loudly
            log.exception("mcp_tool_crashed", tool=one_line(name, 64), error=repr(exc))
            text, error = f"internal error in {one_line(name, 64)}: see the agent's log", True
        content = [types.TextContent(type="text", text=redact(text))]
        return types.ServerResult(types.CallToolResult(content=content, isError=error))

    return handle


def _list_resources(desk: Desk) -> Handler:
    async def handle(_: Any) -> types.ServerResult:
        try:
            with desk.reading() as records:
                recent = records.recent(RESOURCES_LISTED)
        except AgentError as exc:
            raise _error(
                types.INTERNAL_ERROR, f"the incident store cannot be read: {exc}"
            ) from None
        resources = [
            types.Resource(
                uri=f"incident://{incident.id}",
                name=f"incident {incident.id}",
                description="one incident, as get_incident shows it",
                mimeType="text/plain",
            )
            for incident in recent
        ]
        return types.ServerResult(types.ListResourcesResult(resources=resources))

    return handle


async def _list_templates(_: Any) -> types.ServerResult:
    template = types.ResourceTemplate(
        uriTemplate=RESOURCE_TEMPLATE,
        name="incident",
        description="one incident by its full id, as get_incident shows it",
        mimeType="text/plain",
    )
    return types.ServerResult(types.ListResourceTemplatesResult(resourceTemplates=[template]))


def _read_resource(desk: Desk, redact: Redact) -> Handler:
    async def handle(request: types.ReadResourceRequest) -> types.ServerResult:
        uri = str(request.params.uri)
        try:
            text = incident_answer(desk, resource_id(uri))
        except Refused as exc:
            raise _error(RESOURCE_NOT_FOUND, str(exc)) from None
        except AgentError as exc:
            raise _error(types.INTERNAL_ERROR, f"cannot read {uri}: {exc}") from None
        except Exception as exc:  # a bug must not take the server down
            log.exception("mcp_resource_crashed", error=repr(exc))
            raise _error(types.INTERNAL_ERROR, f"cannot read {uri}: see the agent's log") from None
        contents = types.TextResourceContents(
            uri=request.params.uri, text=redact(text), mimeType="text/plain"
        )
        return types.ServerResult(types.ReadResourceResult(contents=[contents]))

    return handle


async def serve_http(server: Server[Any, Any], scope: Scope, receive: Receive, send: Send) -> None:
    """Answer one streamable-HTTP request with a server run of its own (stateless, JSON)."""
    transport = StreamableHTTPServerTransport(mcp_session_id=None, is_json_response_enabled=True)
    options = server.create_initialization_options()
    async with transport.connect() as (read, write), anyio.create_task_group() as group:

        async def run() -> None:
            await server.run(read, write, options, stateless=True)

        group.start_soon(run)
        try:
            await transport.handle_request(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await transport.terminate()
            group.cancel_scope.cancel()
