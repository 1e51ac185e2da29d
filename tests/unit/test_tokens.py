"""Prompt tokens as the shipped model counts them: its tokenizer and chat template, read
from the installed GGUF file (a missing model or runtime fails here: `make install`)."""

from __future__ import annotations

import pytest

from agent.local.tokens import PromptTokens


@pytest.fixture(scope="module")
def tokens() -> PromptTokens:
    """The shipped SmolLM2's vocabulary, without its weights."""
    return PromptTokens()


def test_a_request_is_counted_as_the_chat_template_renders_it(tokens: PromptTokens) -> None:
    """The messages go through the model's own template (role markers, its default system
    prompt when none is given) before they are counted; tool definitions add their JSON."""
    body = {"messages": [{"role": "user", "content": "hello"}]}
    rendered = (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tokens.request(body) == tokens.text(rendered)
    assert tokens.text("<|im_start|>") == 1
    tools = [{"type": "function", "function": {"name": "prom_query"}}]
    assert tokens.request({**body, "tools": tools}) > tokens.request(body)


def test_every_digit_is_a_token(tokens: PromptTokens) -> None:
    """Why the evidence writes 2.1e8 and not 210000000.0: each digit costs a token."""
    assert tokens.text("210000000.0") == 11
    assert tokens.text("2.1e8") == 5


def test_a_tool_call_without_text_is_counted_by_its_json(tokens: PromptTokens) -> None:
    """An assistant turn that only called tools counts the calls it made."""
    call = {"id": "c1", "type": "function", "function": {"name": "prom_query", "arguments": "{}"}}
    empty = {"messages": [{"role": "assistant", "content": None}]}
    called = {"messages": [{"role": "assistant", "content": None, "tool_calls": [call]}]}
    assert tokens.request(called) > tokens.request(empty)
