"""Reading the gateway's answer, both generations, into one typed verdict.

The deployed gateway answers HTTP 200 for business failures too, so the verdict comes
from ``overall_status``; the first generation uses a flatter shape with ``success`` /
``error`` / ``timeout``. Anything else is reported as unrecognised, never guessed at:
the command may or may not have run, so it is not retried and verification decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agent.text import clip

Verdict = Literal["succeeded", "failed", "rejected", "transient"]

_V2: dict[str, Verdict] = {
    "COMPLETED_SUCCESS": "succeeded",
    "COMPLETED_FAILURE": "failed",
    "EXECUTION_ERROR": "transient",
    "LLM_GENERATION_FAILED": "transient",
    "INTERNAL_ERROR": "transient",
    "VALIDATION_ERROR": "rejected",
}
_V1: dict[str, Verdict] = {"success": "succeeded", "error": "failed", "timeout": "failed"}


@dataclass(frozen=True)
class Reading:
    """What one gateway answer says."""

    verdict: Verdict
    status: str
    request_id: str | None = None
    command: str | None = None
    exit_code: int | None = None
    output: str = ""
    error: str | None = None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _error_text(body: dict[str, object]) -> str | None:
    details = body.get("error_details")
    if isinstance(details, dict):
        code, message = details.get("error_code"), details.get("message")
        return ": ".join(str(x) for x in (code, message) if x) or None
    return _str(details)


def _v2(body: dict[str, object], status: str, limit: int) -> Reading:
    details = body.get("execution_details")
    command = exit_code = None
    output = ""
    if isinstance(details, dict):
        command = _str(details.get("command"))
        result = details.get("execution_result")
        if isinstance(result, dict):
            code = result.get("exit_code")
            exit_code = code if isinstance(code, int) and not isinstance(code, bool) else None
            output = (_str(result.get("stdout")) or "") + (_str(result.get("stderr")) or "")
    return Reading(
        verdict=_V2[status],
        status=status,
        request_id=_str(body.get("request_id")),
        command=command,
        exit_code=exit_code,
        output=clip(output, limit),
        error=_error_text(body),
    )


def _v1(body: dict[str, object], status: str, limit: int) -> Reading:
    details = body.get("execution_details")
    command = None
    output = ""
    if isinstance(details, dict):
        command = _str(details.get("command"))
        output = _str(details.get("execution_result")) or ""
    return Reading(
        verdict=_V1[status],
        status=status,
        request_id=_str(body.get("request_id")),
        command=command,
        output=clip(output, limit),
        error=_error_text(body),
    )


def read_body(body: object, output_limit: int) -> Reading:
    """Interpret a decoded 200 body of either generation."""
    status = body.get("overall_status") if isinstance(body, dict) else None
    if isinstance(body, dict) and isinstance(status, str):
        if status in _V2:
            return _v2(body, status, output_limit)
        if status in _V1:
            return _v1(body, status, output_limit)
    shown = repr(body)[:200]
    return Reading(
        verdict="failed",
        status="UNRECOGNISED",
        error=f"gateway answered a shape neither generation uses: {shown}",
    )
