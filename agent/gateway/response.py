"""Reading the gateway's answer, both generations, into one typed verdict.

The deployed gateway answers HTTP 200 for business failures too, so the verdict comes
from ``overall_status``; the first generation uses a flatter shape with ``success`` /
``error`` / ``timeout``. Errors carry ``error_details = {error_code, error_message}``: both
are kept, the message is what a human needs. Anything else is ``unknown``, never guessed
at: the command may or may not have run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from agent.text import clip, one_line

#: succeeded/failed: the command ran. rejected: it never will (do not retry).
#: transient: it did not run this time. refused: the gateway's model wrote a command its
#: own check refused (retry once at most). unknown: it may have run.
Verdict = Literal["succeeded", "failed", "rejected", "transient", "refused", "unknown"]

_V2: dict[str, Verdict] = {
    "COMPLETED_SUCCESS": "succeeded",
    "COMPLETED_FAILURE": "failed",
    "EXECUTION_ERROR": "transient",
    "LLM_GENERATION_FAILED": "refused",
    "INTERNAL_ERROR": "unknown",
    "VALIDATION_ERROR": "rejected",
}
_V1: dict[str, Verdict] = {"success": "succeeded", "error": "failed", "timeout": "failed"}
Outcome = Literal["succeeded", "failed", "rejected", "gave_up", "unknown"]
ERROR_TEXT_MAX = 1000
EXECUTE_PATH = "/execute-docker-command"


@dataclass(frozen=True)
class Reading:
    """What one gateway answer says."""

    verdict: Verdict
    status: str
    request_id: str | None = None
    command: str | None = None
    exit_code: int | None = None
    output: str = ""
    error_code: str | None = None
    error_message: str | None = None

    @property
    def error(self) -> str | None:
        """``CODE: message`` for one-line reports, None when the answer is no error."""
        return error_line(self.error_code, self.error_message)


def error_line(code: str | None, message: str | None) -> str | None:
    """The gateway's error code and message as ``CODE: message``; None when both are empty."""
    return ": ".join(p for p in (code, message) if p) or None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _error_details(body: dict[str, object]) -> tuple[str | None, str | None]:
    details = body.get("error_details")
    if isinstance(details, dict):
        code = _str(details.get("error_code"))
        # `error_message` is the deployed gateway's field; `message` is what older
        # documents call it.
        message = _str(details.get("error_message")) or _str(details.get("message"))
        return (
            one_line(code, 100) if code else None,
            one_line(message, ERROR_TEXT_MAX) if message else None,
        )
    text = _str(details)
    return None, one_line(text, ERROR_TEXT_MAX) if text else None


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
    error_code, error_message = _error_details(body)
    return Reading(
        verdict=_V2[status],
        status=status,
        request_id=_str(body.get("request_id")),
        command=clip(command, limit) if command else None,
        exit_code=exit_code,
        output=clip(output, limit),
        error_code=error_code,
        error_message=error_message,
    )


def _v1(body: dict[str, object], status: str, limit: int) -> Reading:
    details = body.get("execution_details")
    command = None
    output = ""
    if isinstance(details, dict):
        command = _str(details.get("command"))
        output = _str(details.get("execution_result")) or ""
    error_code, error_message = _error_details(body)
    return Reading(
        verdict=_V1[status],
        status=status,
        request_id=_str(body.get("request_id")),
        command=clip(command, limit) if command else None,
        output=clip(output, limit),
        error_code=error_code,
        error_message=error_message,
    )


def read_body(body: object, output_limit: int) -> Reading:
    """Interpret a decoded 200 body of either generation."""
    status = body.get("overall_status") if isinstance(body, dict) else None
    if isinstance(body, dict) and isinstance(status, str):
        if status in _V2:
            return _v2(body, status, output_limit)
        if status in _V1:
            return _v1(body, status, output_limit)
    return Reading(
        verdict="unknown",
        status="UNRECOGNISED",
        error_message=f"the gateway answered a shape neither generation uses: {clip(repr(body), 200)}",
    )


def generation_from_openapi(doc: object) -> tuple[int | None, str]:
    """Which answer generation a gateway's OpenAPI document describes, and why we think so.

    Generation 2 declares ``execution_result`` as an object (status, exit_code, stdout,
    stderr); generation 1 as a string. None when the document does not say.
    """
    if not isinstance(doc, dict):
        return None, "the OpenAPI document is not a JSON object"
    paths = doc.get("paths")
    if not isinstance(paths, dict) or EXECUTE_PATH not in paths:
        return None, f"the API has no {EXECUTE_PATH}"
    schemas = (
        (doc.get("components") or {}).get("schemas")
        if isinstance(doc.get("components"), dict)
        else None
    )
    details = schemas.get("ExecutionDetails") if isinstance(schemas, dict) else None
    props = details.get("properties") if isinstance(details, dict) else None
    field = props.get("execution_result") if isinstance(props, dict) else None
    if not isinstance(field, dict):
        return None, "its schema does not describe execution_result"
    if "$ref" in field or field.get("type") == "object":
        return 2, "execution_result is an object (status, exit_code, stdout, stderr)"
    if field.get("type") == "string":
        return 1, "execution_result is a string"
    return None, "its schema describes execution_result in a way neither generation does"


@dataclass(frozen=True)
class GatewayResult:
    """What came of one recovery intent, all attempts included.

    ``succeeded``/``failed``: the command ran (and exited 0 or not). ``rejected``: it was
    refused and will not run. ``gave_up``: it never reached a gateway that could run it.
    ``unknown``: it may have run; it is never sent again.
    """

    outcome: Outcome
    status: str
    attempts: int
    elapsed_seconds: float
    idempotency_key: str
    command: str | None = None
    exit_code: int | None = None
    output: str = ""
    request_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None

    @property
    def error(self) -> str | None:
        """``CODE: message`` in one line, or None."""
        return error_line(self.error_code, self.error_message)

    def to_dict(self) -> dict[str, object]:
        """A JSON-friendly view."""
        return asdict(self)
