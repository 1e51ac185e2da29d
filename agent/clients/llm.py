"""Chat-completions client for any OpenAI-compatible server (OpenAI, Azure OpenAI, vLLM,
Ollama, llama-cpp-python's server, llama.cpp's llama-server).

The ``openai`` package's own retries are off: 429 and 5xx are retried here with tenacity
(Retry-After honoured, a log line before each wait), so that the number of attempts and
the fallback to the runbook are under the agent's control. A timeout is not retried: a
slow model at 3 a.m. should hand over to the runbook, not stall the incident.

Servers differ in what they accept. Each client (one per endpoint) learns it from the
refusals that name a feature, and remembers it (``Features``): structured output is asked
for as a JSON schema, then as a JSON object with the schema (llama-cpp-python), then as a
plain JSON object, then only by the prompt; tools are sent until the server refuses them,
after which the prompt describes them and calls come back as JSON text. A refusal is not a
server error to retry:

- a 400 or 422 that names the feature is learned at once, for the life of the process;
- a 500 that names it (llama-cpp-python answers a validation error so) may be a fluke: the
  same form is sent again at once, and only a second 500 in a row that names it is
  learned, for ``RETRY_LEARNED_SECONDS``; then the form is tried again.

Calls run concurrently (one diagnosis per incident), so what is learned is applied to the
endpoint's state as it is at that moment, under a lock (``Learning``): a call that was
sent in an older form never writes that form back.

Each call runs under one deadline for the whole request, however slowly the answer
arrives, and its body is refused while being read once it passes a size cap
(``CappedTransport``): a broken or hostile server can neither hold a diagnosis nor fill
the agent's memory.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from typing import Any, Literal

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
#: What ``LLMClient.gate`` is: a context entered around each request.
Gate = Callable[[], AbstractAsyncContextManager[object]]
#: A Retry-After longer than this is not waited for in full: the runbook takes over sooner.
RETRY_AFTER_CAP_SECONDS = 60.0


@dataclass(frozen=True)
class ToolCall:
    """One function call the model asked for; ``native`` False when the model wrote it as
    JSON text in its content (servers and models without tool calling do)."""

    id: str
    name: str
    arguments: str
    native: bool = True


@dataclass(frozen=True)
class ChatReply:
    """The model's answer to one request, with its token usage."""

    content: str
    tool_calls: tuple[ToolCall, ...]
    prompt_tokens: int
    completion_tokens: int

    @property
    def native_calls(self) -> bool:
        """The tool calls came through the API's own tool-calling, not as text."""
        return bool(self.tool_calls) and all(c.native for c in self.tool_calls)

    def as_message(self) -> dict[str, Any]:
        """The assistant message to append to the conversation."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.native_calls:
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


#: The forms of structured output, most to least precise; a refused one is never sent again.
STRUCTURED = ("json_schema", "json_object_schema", "json_object", "prompt")


@dataclass(frozen=True)
class Features:
    """What one endpoint has been seen to accept, learned from its refusals."""

    structured: str = "json_schema"
    tools: bool = True

    def response_format(self, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        """The ``response_format`` to send for ``schema`` (None: ask in the prompt only)."""
        if schema is None or self.structured == "prompt":
            return None
        if self.structured == "json_schema":
            return {"type": "json_schema", "json_schema": schema}
        if self.structured == "json_object_schema":
            return {"type": "json_object", "schema": schema["schema"]}
        return {"type": "json_object"}


class ToolsRefused(LLMPermanentError):
    """The endpoint refused tool definitions; it is now known to take none. The caller
    describes the tools in its prompt and asks again."""


class _Refused(LLMPermanentError):
    """The server refused a feature of the request (structured output or tools)."""

    def __init__(self, feature: str, status: int, message: str) -> None:
        super().__init__(message)
        self.feature = feature
        self.status = status


#: A feature learned from HTTP 500s is tried again after this long.
RETRY_LEARNED_SECONDS = 600.0
#: 500s in a row that name a feature before it is learned.
SERVER_ERROR_STREAK = 2
Verdict = Literal["again", "learned", "exhausted"]


class Learning:
    """One endpoint's ``Features`` and how they were learned, shared by concurrent calls.

    Every change is made to the state as it is now, under a lock, from what the refused
    call sent: a refusal moves a feature down (never back up, whatever older form another
    call sent), and only the retry of a feature learned from 500s moves it back up."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._features = Features()
        self._streaks: dict[str, int] = {}
        #: feature -> (when to try it again, the form to try): learned from 500s only.
        self._retry: dict[str, tuple[float, str]] = {}

    def current(self) -> Features:
        """The forms to send now."""
        with self._lock:
            self._expire()
            return self._features

    def _expire(self) -> None:
        now = self._clock()
        for feature, (at, form) in list(self._retry.items()):
            if now < at:
                continue
            del self._retry[feature]
            if feature == "tools":
                self._features = replace(self._features, tools=True)
            elif STRUCTURED.index(form) < STRUCTURED.index(self._features.structured):
                self._features = replace(self._features, structured=form)
            log.info("llm_feature_retried", feature=feature, form=form)

    def refused(self, sent: Features, feature: str, status: int) -> Verdict:
        """Take a refusal of ``feature`` by a call that sent ``sent``: ``again`` (a first
        500: send the same form once more), ``learned``, or ``exhausted`` (no form left)."""
        with self._lock:
            if status >= 500:
                streak = self._streaks.get(feature, 0) + 1
                self._streaks[feature] = streak
                if streak < SERVER_ERROR_STREAK:
                    return "again"
            self._streaks.pop(feature, None)
            form = "tools" if feature == "tools" else sent.structured
            if feature == "tools":
                self._features = replace(self._features, tools=False)
            elif not self._downgrade(form):
                return "exhausted"
            if status >= 500:
                self._retry[feature] = (self._clock() + RETRY_LEARNED_SECONDS, form)
            elif self._retry.get(feature, (0.0, ""))[1] == form:
                del self._retry[feature]  # now refused in so many words: for good
            return "learned"

    def _downgrade(self, refused: str) -> bool:
        """Structured output below ``refused``; False when no form is left."""
        after = STRUCTURED.index(refused) + 1
        if after >= len(STRUCTURED):
            return False
        current = STRUCTURED.index(self._features.structured)
        self._features = replace(self._features, structured=STRUCTURED[max(current, after)])
        return True

    def answered(self, *, structured: bool, tools: bool) -> None:
        """A call that sent these features was answered: their streaks of 500s end."""
        with self._lock:
            if structured:
                self._streaks.pop("structured", None)
            if tools:
                self._streaks.pop("tools", None)


def _refused_feature(exc: openai.APIStatusError, *, structured: bool, tools: bool) -> str | None:
    """The feature a 400/422/500 refuses, when it names one we sent."""
    if exc.status_code not in (400, 422, 500):
        return None
    text = f"{exc.message} {exc.body!r}".lower()
    if structured and any(w in text for w in ("response_format", "json_schema", "schema")):
        return "structured"
    if tools and "tool" in text:
        return "tools"
    return None  # e.g. a context too long: not a feature, and nothing to remember


@dataclass
class LLMClient:
    """Calls chat completions; raises LLMError subclasses only."""

    api: openai.AsyncOpenAI
    options: LLMOptions
    metrics: AgentMetrics | None = None
    sleep: Sleep = asyncio.sleep
    #: The answer-size cap of the transport under ``api``, named in errors.
    max_answer_bytes: int = 2_000_000
    learning: Learning = field(default_factory=Learning)
    #: Entered around each request, before its deadline starts: a caller that shares one
    #: model among many diagnoses (eval) queues them there, so the wait for a free model
    #: never eats a request's ``request_timeout``, and times both.
    gate: Gate | None = None

    @property
    def features(self) -> Features:
        """What the endpoint is known to accept now."""
        return self.learning.current()

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
        max_tokens: int | None = None,
    ) -> ChatReply:
        """One chat completion, retried on 429/5xx/connection errors; ``max_tokens`` caps
        this call's answer below the configured limit."""
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
        limit = min(max_tokens or self.options.max_tokens, self.options.max_tokens)
        reply: ChatReply = await retrying(self._adaptive, messages, phase, tools, schema, limit)
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
            raise _map_error(exc, self.peer) from exc
        except AnswerTooLarge as exc:
            raise LLMPermanentError(self.peer.failure(exc)) from exc
        names = [str(getattr(m, "id", "")) for m in getattr(page, "data", [])]
        model = self.options.model
        if model in names:
            return f"serves {model}"
        listed = ", ".join(clip(n, 60) for n in names[:3]) or "none"
        return f"{len(names)} models listed ({listed}), not {model!r}; it may serve it anyway"

    async def _adaptive(
        self,
        messages: list[dict[str, Any]],
        phase: str,
        tools: list[dict[str, Any]] | None,
        schema: dict[str, Any] | None,
        max_tokens: int,
    ) -> ChatReply:
        """Send in the best form the endpoint is known to accept; on a refusal that names a
        feature, learn it (``Learning``) and send again at once in the form now known."""
        while True:
            sent = self.learning.current()
            response_format = sent.response_format(schema)
            offered = tools if tools and sent.tools else None
            try:
                reply = await self._once(messages, phase, offered, response_format, max_tokens)
            except _Refused as exc:
                verdict = self.learning.refused(sent, exc.feature, exc.status)
                self._log_refusal(exc, verdict, phase)
                if verdict == "exhausted":
                    raise LLMPermanentError(f"{self.peer}: {exc}") from exc
                if verdict == "learned" and exc.feature == "tools":
                    raise ToolsRefused(f"{self.peer} takes no tool definitions") from exc
                continue
            self.learning.answered(structured=response_format is not None, tools=bool(offered))
            return reply

    def _log_refusal(self, refusal: _Refused, verdict: Verdict, phase: str) -> None:
        if verdict == "exhausted":
            return
        if verdict == "again":
            log.info(
                "llm_feature_refusal_unconfirmed",
                phase=phase,
                feature=refusal.feature,
                refusal=clip(str(refusal), 300),
            )
            return
        now = self.learning.current()
        log.warning(
            "llm_feature_unsupported",
            phase=phase,
            feature=refusal.feature,
            now=f"structured={now.structured} tools={now.tools}",
            until=f"tried again in {RETRY_LEARNED_SECONDS:g}s"
            if refusal.status >= 500
            else "for good",
            refusal=clip(str(refusal), 300),
        )

    async def _once(
        self,
        messages: list[dict[str, Any]],
        phase: str,
        tools: list[dict[str, Any]] | None,
        response_format: dict[str, Any] | None,
        max_tokens: int,
    ) -> ChatReply:
        if self.gate is None:
            return await self._request(messages, phase, tools, response_format, max_tokens)
        async with self.gate():
            return await self._request(messages, phase, tools, response_format, max_tokens)

    async def _request(
        self,
        messages: list[dict[str, Any]],
        phase: str,
        tools: list[dict[str, Any]] | None,
        response_format: dict[str, Any] | None,
        max_tokens: int,
    ) -> ChatReply:
        kwargs: dict[str, Any] = {
            "model": self.options.model,
            "messages": messages,
            "temperature": self.options.temperature,
            "max_tokens": max_tokens,
        }
        if tools:
            kwargs["tools"] = tools
        if response_format:
            kwargs["response_format"] = response_format
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.options.request_timeout):
                completion = await self.api.chat.completions.create(**kwargs)
        except TimeoutError as exc:
            raise LLMPermanentError(self.peer.failure(exc)) from exc
        except openai.APIStatusError as exc:
            refused = _refused_feature(exc, structured=bool(response_format), tools=bool(tools))
            if refused is not None:
                raise _Refused(
                    refused, exc.status_code, f"HTTP {exc.status_code}: {brief(exc)}"
                ) from exc
            raise _map_error(exc, self.peer) from exc
        except openai.OpenAIError as exc:
            raise _map_error(exc, self.peer) from exc
        except AnswerTooLarge as exc:
            raise LLMPermanentError(self.peer.failure(exc)) from exc
        except (RecursionError, ValueError) as exc:
            raise LLMPermanentError(f"{self.peer}: answer unreadable: {brief(exc)}") from exc
        return self._reply(completion, phase, time.monotonic() - started)

    def _reply(self, completion: Any, phase: str, seconds: float) -> ChatReply:
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
            seconds=round(seconds, 2),
        )
        return reply


def _map_error(exc: openai.OpenAIError, peer: Peer) -> LLMError:
    """Our error for an openai exception: transient ones are retried, the rest are not."""
    if isinstance(exc, openai.APITimeoutError):
        return LLMPermanentError(peer.failure(TimeoutError()))
    if isinstance(exc, openai.APIConnectionError) and isinstance(exc.__cause__, AnswerTooLarge):
        return LLMPermanentError(peer.failure(exc.__cause__))
    if isinstance(exc, openai.APIConnectionError):
        return LLMTransientError(peer.failure(exc.__cause__ or exc))
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
    gate: Gate | None = None,
) -> tuple[LLMClient, httpx.AsyncClient]:
    """The client and the httpx.AsyncClient under it (the caller closes the latter);
    ``gate``: see ``LLMClient.gate``."""
    timeout = options.request_timeout
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(timeout), transport=CappedTransport(max_answer_bytes)
    )
    api = openai.AsyncOpenAI(
        api_key=api_key, base_url=base_url, http_client=http, max_retries=0, timeout=timeout
    )
    client = LLMClient(
        api=api, options=options, metrics=metrics, max_answer_bytes=max_answer_bytes, gate=gate
    )
    return client, http


def json_in(text: str) -> object:
    """The JSON value in a model answer: the whole text (code fences tolerated), else its
    outermost ``{...}`` (text around it tolerated); ValueError otherwise."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.strip("`")
        stripped = stripped.removeprefix("json").strip()
    try:
        return json.loads(stripped)
    except ValueError:
        start, end = stripped.find("{"), stripped.rfind("}")
        if not 0 <= start < end:
            raise
        return json.loads(stripped[start : end + 1])


def parse_json_object(text: str) -> dict[str, Any]:
    """The JSON object in a model answer (code fences and text around it tolerated);
    ValueError otherwise."""
    value = json_in(text)
    if not isinstance(value, dict):
        raise ValueError("answer is JSON but not an object")
    return value
