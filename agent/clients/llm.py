"""Chat-completions client for any OpenAI-compatible server (OpenAI, Azure, vLLM, Ollama).

The ``openai`` package's own retries are off: 429 and 5xx are retried here with tenacity
(Retry-After honoured, a log line before each wait), so that the number of attempts and
the fallback to the runbook are under the agent's control. A timeout is not retried: a
slow model at 3 a.m. should hand over to the runbook, not stall the incident. Servers that
reject JSON-schema structured output are asked again in JSON mode, once, and remembered.

Each call runs under one deadline for the whole request, however slowly the answer
arrives, and its body is refused while being read once it passes a size cap
(``CappedTransport``): a broken or hostile server can neither hold a diagnosis nor fill
the agent's memory.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from agent.clients.http import AnswerTooLarge, CappedTransport, Peer
from agent.clients.retrying import log_before_sleep, parse_retry_after, retry_wait
from agent.errors import LLMError, LLMPermanentError, LLMTransientError, brief
from agent.logs import get_logger
from agent.metrics import AgentMetrics
from agent.text import clip, encodable

log = get_logger("agent.llm")

Sleep = Callable[[float], Awaitable[None]]
#: A Retry-After longer than this is not waited for in full: the runbook takes over sooner.
RETRY_AFTER_CAP_SECONDS = 60.0


@dataclass(frozen=True)
class ToolCall:
    """One function call the model asked for."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ChatReply:
    """The model's answer to one request, with its token usage."""

    content: str
    tool_calls: tuple[ToolCall, ...]
    prompt_tokens: int
    completion_tokens: int

    def as_message(self) -> dict[str, Any]:
        """The assistant message to append to the conversation."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in self.tool_calls
            ]
        return message


@dataclass
class LLMOptions:
    """How the client calls the model."""

    model: str
    temperature: float
    max_tokens: int
    max_retries: int = 3
    request_timeout: float = 30.0
    backoff_initial_seconds: float = 1.0
    backoff_max_seconds: float = 20.0


@dataclass
class LLMClient:
    """Calls chat completions; raises LLMError subclasses only."""

    api: openai.AsyncOpenAI
    options: LLMOptions
    metrics: AgentMetrics | None = None
    sleep: Sleep = asyncio.sleep
    json_schema_supported: bool = field(default=True)
    #: The answer-size cap of the transport under ``api``, named in errors.
    max_answer_bytes: int = 2_000_000

    @property
    def peer(self) -> Peer:
        """The chat API this client talks to, for naming it in errors."""
        return Peer.of(
            "model",
            str(self.api.base_url),
            timeout=self.options.request_timeout,
            timeout_setting="diagnosis.request_timeout_seconds",
            max_bytes=self.max_answer_bytes,
            size_setting="diagnosis.max_answer_bytes",
        )

    async def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        phase: str,
        tools: list[dict[str, Any]] | None = None,
        schema: dict[str, Any] | None = None,
    ) -> ChatReply:
        """One chat completion, retried on 429/5xx/connection errors."""
        retrying = AsyncRetrying(
            sleep=self.sleep,
            stop=stop_after_attempt(self.options.max_retries + 1),
            wait=retry_wait(
                self.options.backoff_initial_seconds,
                self.options.backoff_max_seconds,
                retry_after_cap=RETRY_AFTER_CAP_SECONDS,
            ),
            retry=retry_if_exception_type(LLMTransientError),
            before_sleep=log_before_sleep(log, "llm_retry_scheduled"),
            reraise=True,
        )
        reply: ChatReply = await retrying(self._structured, messages, phase, tools, schema)
        return reply

    async def probe(self) -> str:
        """What the endpoint's model list says of the configured model; raises LLMError."""
        try:
            async with asyncio.timeout(self.options.request_timeout):
                page = await self.api.models.list()
        except TimeoutError as exc:
            raise LLMPermanentError(self.peer.failure(exc)) from exc
        except openai.NotFoundError as exc:
            raise LLMPermanentError(
                f"{self.peer}: no /models here (HTTP 404): does OPENAI_BASE_URL end in /v1?"
            ) from exc
        except openai.OpenAIError as exc:
            raise _map_error(exc, self.peer, schema_sent=False) from exc
        except AnswerTooLarge as exc:
            raise LLMPermanentError(self.peer.failure(exc)) from exc
        names = [str(getattr(m, "id", "")) for m in getattr(page, "data", [])]
        model = self.options.model
        if model in names:
            return f"serves {model}"
        listed = ", ".join(clip(n, 60) for n in names[:3]) or "none"
        return f"{len(names)} models listed ({listed}), not {model!r}; it may serve it anyway"

    async def _structured(
        self,
        messages: list[dict[str, Any]],
        phase: str,
        tools: list[dict[str, Any]] | None,
        schema: dict[str, Any] | None,
    ) -> ChatReply:
        if schema is None:
            return await self._once(messages, phase, tools, None)
        if self.json_schema_supported:
            try:
                return await self._once(
                    messages, phase, tools, {"type": "json_schema", "json_schema": schema}
                )
            except _FormatRejected:
                self.json_schema_supported = False
                log.warning("llm_json_schema_unsupported", phase=phase, fallback="json_object")
        return await self._once(messages, phase, tools, {"type": "json_object"})

    async def _once(
        self,
        messages: list[dict[str, Any]],
        phase: str,
        tools: list[dict[str, Any]] | None,
        response_format: dict[str, Any] | None,
    ) -> ChatReply:
        kwargs: dict[str, Any] = {
            "model": self.options.model,
            "messages": messages,
            "temperature": self.options.temperature,
            "max_tokens": self.options.max_tokens,
        }
        if tools:
            kwargs["tools"] = tools
        if response_format:
            kwargs["response_format"] = response_format
        try:
            async with asyncio.timeout(self.options.request_timeout):
                completion = await self.api.chat.completions.create(**kwargs)
        except TimeoutError as exc:
            raise LLMPermanentError(self.peer.failure(exc)) from exc
        except openai.OpenAIError as exc:
            schema_sent = (response_format or {}).get("type") == "json_schema"
            raise _map_error(exc, self.peer, schema_sent=schema_sent) from exc
        except AnswerTooLarge as exc:
            raise LLMPermanentError(self.peer.failure(exc)) from exc
        except (RecursionError, ValueError) as exc:
            raise LLMPermanentError(f"{self.peer}: answer unreadable: {brief(exc)}") from exc
        return self._reply(completion, phase)

    def _reply(self, completion: Any, phase: str) -> ChatReply:
        try:
            message = completion.choices[0].message
        except (AttributeError, IndexError, TypeError) as exc:
            raise LLMPermanentError("answer has no choices") from exc
        calls = tuple(
            ToolCall(
                encodable(str(c.id)),
                encodable(str(c.function.name)),
                encodable(c.function.arguments or "{}"),
            )
            for c in (message.tool_calls or ())
            if getattr(c, "function", None) is not None
        )
        usage = completion.usage
        reply = ChatReply(
            content=encodable(message.content or ""),
            tool_calls=calls,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        )
        if self.metrics is not None:
            self.metrics.llm_calls.labels(phase=phase).inc()
            self.metrics.llm_tokens.labels(kind="prompt").inc(reply.prompt_tokens)
            self.metrics.llm_tokens.labels(kind="completion").inc(reply.completion_tokens)
        log.info(
            "llm_call",
            phase=phase,
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
            tool_calls=len(calls),
        )
        return reply


class _FormatRejected(LLMPermanentError):
    """The server refused JSON-schema structured output."""


def _map_error(exc: openai.OpenAIError, peer: Peer, *, schema_sent: bool) -> LLMError:
    """Our error for an openai exception: transient ones are retried, the rest are not."""
    if isinstance(exc, openai.APITimeoutError):
        return LLMPermanentError(peer.failure(TimeoutError()))
    if isinstance(exc, openai.APIConnectionError) and isinstance(exc.__cause__, AnswerTooLarge):
        return LLMPermanentError(peer.failure(exc.__cause__))
    if isinstance(exc, openai.APIConnectionError):
        return LLMTransientError(peer.failure(exc.__cause__ or exc))
    if isinstance(exc, openai.BadRequestError) and schema_sent:
        return _FormatRejected(brief(exc))
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code == 429:
            return _transient(exc, f"{peer} rate limited (429)")
        if exc.status_code >= 500:
            return _transient(exc, f"{peer}: server error ({exc.status_code})")
        return LLMPermanentError(f"{peer}: HTTP {exc.status_code}: {brief(exc)}")
    return LLMPermanentError(f"{peer}: unusable answer: {brief(exc)}")


def _transient(exc: openai.APIStatusError, message: str) -> LLMTransientError:
    raw = exc.response.headers.get("retry-after") if exc.response is not None else None
    return LLMTransientError(message, retry_after=parse_retry_after(raw))


def build_llm_client(
    *,
    api_key: str,
    base_url: str | None,
    options: LLMOptions,
    metrics: AgentMetrics | None = None,
    max_answer_bytes: int = 2_000_000,
) -> tuple[LLMClient, httpx.AsyncClient]:
    """The client and the httpx.AsyncClient under it (the caller closes the latter)."""
    timeout = options.request_timeout
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(timeout), transport=CappedTransport(max_answer_bytes)
    )
    api = openai.AsyncOpenAI(
        api_key=api_key, base_url=base_url, http_client=http, max_retries=0, timeout=timeout
    )
    client = LLMClient(api=api, options=options, metrics=metrics, max_answer_bytes=max_answer_bytes)
    return client, http


def parse_json_object(text: str) -> dict[str, Any]:
    """The JSON object in a model answer (code fences tolerated); ValueError otherwise."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.strip("`")
        stripped = stripped.removeprefix("json").strip()
    value = json.loads(stripped)
    if not isinstance(value, dict):
        raise ValueError("answer is JSON but not an object")
    return value
