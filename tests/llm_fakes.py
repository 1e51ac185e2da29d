"""Helpers to fake an OpenAI-compatible chat-completions API at the HTTP boundary."""

from __future__ import annotations

import json
from typing import Any

LLM_BASE = "http://llm.test/v1"
CHAT_URL = f"{LLM_BASE}/chat/completions"


def completion(
    content: str | None = None,
    tool_calls: list[tuple[str, dict[str, Any]]] | None = None,
    prompt_tokens: int = 300,
    completion_tokens: int = 40,
) -> dict[str, Any]:
    """A chat.completion body with optional tool calls (name, arguments)."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            for i, (name, args) in enumerate(tool_calls)
        ]
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1764000000,
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if tool_calls else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def triage(actionable: bool = True, service: str = "market-predictor") -> dict[str, Any]:
    """A triage answer."""
    return completion(
        json.dumps(
            {
                "actionable": actionable,
                "urgency": "high",
                "service": service,
                "reason": "memory grows",
            }
        )
    )


def plan(
    action: str = "restart", target: str = "market-predictor", confidence: float = 0.9
) -> dict[str, Any]:
    """A plan answer."""
    return completion(
        json.dumps(
            {
                "action": action,
                "target": target,
                "confidence": confidence,
                "root_cause": "memory leak in the model cache",
                "rationale": "working set grew steadily; a restart frees it",
                "evidence": ["memory +38% in 20 min"],
                "verification": 'demo_memory_bytes{service="market-predictor"} > 4e8',
            }
        )
    )
