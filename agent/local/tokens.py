"""Prompt tokens as the shipped model counts them: its own tokenizer, offline.

A figure of "tokens" is only worth something when a real tokenizer made it: characters
divided by four is wrong by a third on JSON full of numbers (the shipped SmolLM2 writes
every digit as a token of its own). This counts a chat-completions request the way the
local model server reads it: the messages rendered with the model's own chat template
(from the GGUF file), then tokenized by the model's vocabulary through llama-cpp-python
(``vocab_only``: no weights are loaded, it takes a fraction of a second); tool
definitions, when the request carries them, are counted as their JSON text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.local.model import MissingModel, shipped_model

#: What the counted figure is called wherever it is printed.
TOKENIZER_NAME = "SmolLM2 tokenizer (llama-cpp-python, offline)"


class PromptTokens:
    """Counts the prompt tokens of chat requests with a GGUF model's tokenizer and chat
    template (the shipped SmolLM2's unless ``model`` names another file)."""

    def __init__(self, model: Path | None = None) -> None:
        try:
            import llama_cpp
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError as exc:
            raise MissingModel("llama-cpp-python is not installed (run `make install`)") from exc
        path = model or shipped_model()
        self._vocab = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        template = self._vocab.metadata.get("tokenizer.chat_template")
        if not template:
            raise MissingModel(f"{path} carries no chat template")
        self._format = Jinja2ChatFormatter(template, eos_token="", bos_token="")

    def text(self, text: str) -> int:
        """Tokens of plain text (special tokens such as ``<|im_start|>`` count as one)."""
        return len(self._vocab.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def request(self, body: Mapping[str, Any]) -> int:
        """Prompt tokens of one chat-completions request body."""
        messages = [
            {"role": str(m.get("role", "user")), "content": _content(m)}
            for m in body.get("messages", [])
        ]
        prompt = self._format(messages=messages).prompt  # type: ignore[arg-type]
        tools = body.get("tools")
        extra = json.dumps(tools, separators=(",", ":")) if tools else ""
        return self.text(prompt) + (self.text(extra) if extra else 0)


def _content(message: Mapping[str, Any]) -> str:
    """A message's text as the template gets it: an assistant's tool calls as their JSON."""
    text = message.get("content") or ""
    calls = message.get("tool_calls")
    if calls:
        text += json.dumps(calls, separators=(",", ":"))
    return str(text)
