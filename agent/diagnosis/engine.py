"""The diagnosis loop for one finding: prefilter, triage, investigation, plan, safety.

Any model failure (after the client's own retries), a timeout, or a plan that does not
validate after one repair hands the finding to the runbook engine; the decision records
which path decided and why. Tokens and calls are counted per phase, and the whole
conversation is kept as the transcript for the incident store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from agent.clients.llm import ChatReply, LLMClient, parse_json_object
from agent.clients.prometheus import PrometheusClient
from agent.config import AgentConfig, validation_problems
from agent.diagnosis import prompts
from agent.diagnosis.models import (
    TRIAGE_SCHEMA,
    Decision,
    Diagnosis,
    PhaseUsage,
    RecoveryPlan,
    TriageAnswer,
    plan_schema,
    total_tokens,
)
from agent.diagnosis.prefilter import prefilter
from agent.diagnosis.runbook import runbook_decide
from agent.diagnosis.safety import allowed_targets, refusal
from agent.diagnosis.tools import TOOLS, Toolbox
from agent.errors import LLMError, LLMPermanentError
from agent.logs import get_logger
from agent.sweep.findings import Finding
from agent.text import clip

log = get_logger("agent.diagnosis")

#: Tool-call arguments longer than this are not run, nor sent back to the model.
TOOL_ARGUMENTS_MAX = 4000
TOO_LONG = json.dumps({"dropped": f"arguments over {TOOL_ARGUMENTS_MAX} characters"})


@dataclass
class DiagnosisDeps:
    """What a diagnosis needs; ``llm`` is None when no model is configured."""

    config: AgentConfig
    prometheus: PrometheusClient
    llm: LLMClient | None


@dataclass
class _Run:
    """One finding's conversation with the model, with its accounting."""

    finding: Finding
    deps: DiagnosisDeps
    now: datetime
    usage: dict[str, PhaseUsage] = field(default_factory=dict)
    transcript: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: int = 0

    @property
    def llm(self) -> LLMClient:
        assert self.deps.llm is not None
        return self.deps.llm

    @property
    def spent(self) -> int:
        return total_tokens(self.usage)

    async def chat(self, phase: str, messages: list[dict[str, Any]], **kw: Any) -> ChatReply:
        reply = self._bounded(phase, await self.llm.chat(messages, phase=phase, **kw))
        used = self.usage.setdefault(phase, PhaseUsage())
        used.calls += 1
        used.prompt_tokens += reply.prompt_tokens
        used.completion_tokens += reply.completion_tokens
        self.transcript.append({"phase": phase, **reply.as_message()})
        return reply

    def _bounded(self, phase: str, reply: ChatReply) -> ChatReply:
        """The reply as far as it is forwarded and kept: content clipped, at most
        ``max_tool_calls_per_reply`` calls and none beyond the diagnosis' ``max_tool_calls``,
        arguments over ``TOOL_ARGUMENTS_MAX`` characters dropped."""
        cfg = self.deps.config.diagnosis
        room = max(0, min(cfg.max_tool_calls_per_reply, cfg.max_tool_calls - self.tool_calls))
        calls = tuple(
            c if len(c.arguments) <= TOOL_ARGUMENTS_MAX else replace(c, arguments=TOO_LONG)
            for c in reply.tool_calls[:room]
        )
        self.tool_calls += len(calls)
        bounded = replace(reply, content=clip(reply.content, cfg.reply_max_chars), tool_calls=calls)
        if bounded != reply:
            log.warning(
                "llm_reply_bounded",
                phase=phase,
                content_chars=len(reply.content),
                tool_calls=len(reply.tool_calls),
                tool_calls_kept=len(calls),
            )
        return bounded

    def note(self, phase: str, *messages: dict[str, Any]) -> None:
        self.transcript.extend({"phase": phase, **m} for m in messages)

    async def triage(self, block: str) -> TriageAnswer:
        messages = [
            {"role": "system", "content": prompts.TRIAGE_SYSTEM},
            {"role": "user", "content": block},
        ]
        self.note("triage", *messages)
        reply = await self.chat("triage", messages, schema=TRIAGE_SCHEMA)
        try:
            return TriageAnswer.model_validate(parse_json_object(reply.content))
        except (ValueError, ValidationError) as exc:
            raise LLMPermanentError(f"triage answer invalid: {_brief(exc)}") from exc

    async def investigate(self, block: str) -> str:
        cfg = self.deps.config.diagnosis
        toolbox = Toolbox(self.deps.prometheus, cfg.tool_result_max_chars, self.now)
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": prompts.INVESTIGATE_SYSTEM},
            {"role": "user", "content": block},
        ]
        self.note("investigation", *messages)
        summary = ""
        for step in range(cfg.max_steps):
            last = (
                step == cfg.max_steps - 1
                or self.spent >= cfg.token_budget * 0.6
                or self.tool_calls >= cfg.max_tool_calls
            )
            reply = await self.chat("investigation", messages, tools=None if last else TOOLS)
            summary = reply.content or summary
            if last or not reply.tool_calls:
                break
            messages.append(reply.as_message())
            for call in reply.tool_calls:
                result = await toolbox.run(call.name, call.arguments)
                tool_msg = {"role": "tool", "tool_call_id": call.id, "content": result}
                messages.append(tool_msg)
                self.note("investigation", {"name": call.name, **tool_msg})
            log.info("investigation_step", step=step + 1, tools=[c.name for c in reply.tool_calls])
        return summary

    async def plan(self, block: str, summary: str) -> RecoveryPlan:
        config = self.deps.config
        targets = allowed_targets(self.finding, config)
        service = config.services[targets[0]]
        allowed = list(dict.fromkeys([*service.actions, "escalate", "none"]))
        actions = {a: config.actions[a].intent or a for a in allowed}
        schema = plan_schema(allowed, targets)
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": prompts.PLAN_SYSTEM},
            {
                "role": "user",
                "content": prompts.plan_request(self.finding, block, summary, actions, targets),
            },
        ]
        self.note("plan", *messages)
        error = ""
        for attempt in range(2):  # the answer, then one repair
            if self.spent >= config.diagnosis.token_budget:
                raise LLMPermanentError(
                    "token budget (diagnosis.token_budget) exhausted before a valid plan"
                )
            reply = await self.chat("plan", messages, schema=schema)
            try:
                return RecoveryPlan.model_validate(parse_json_object(reply.content))
            except (ValueError, ValidationError) as exc:
                error = _brief(exc)
                log.warning("plan_invalid", attempt=attempt + 1, error=error)
                repair = {"role": "user", "content": prompts.REPAIR.format(error=error)}
                messages += [reply.as_message(), repair]
                self.note("plan", repair)
        raise LLMPermanentError(f"plan failed validation after one repair: {error}")

    async def execute(self) -> Decision:
        cfg = self.deps.config
        block = prompts.finding_block(self.finding, cfg.diagnosis.untrusted_max_chars)
        verdict = await self.triage(block)
        if not verdict.actionable:
            return Decision(
                action="none",
                target=self.finding.target,
                decided_by="llm",
                actionable=False,
                reason=f"triage: not actionable: {verdict.reason}",
            )
        summary = await self.investigate(block)
        plan = await self.plan(block, summary)
        decision = Decision(
            action=plan.action,
            target=plan.target,
            decided_by="llm",
            actionable=True,
            reason=f"triage urgency {verdict.urgency}",
            confidence=plan.confidence,
            root_cause=plan.root_cause,
            rationale=plan.rationale,
            evidence=tuple(plan.evidence),
            verification=plan.verification,
        )
        refused = refusal(plan.action, plan.target, plan.confidence, self.finding, cfg)
        if refused:
            log.warning("plan_refused", action=plan.action, plan_target=plan.target, reason=refused)
            return replace(
                decision,
                action="escalate",
                target=self.finding.target,
                reason=f"plan refused: {refused}",
            )
        return decision


def _brief(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(validation_problems(exc)[:5])
    return clip(str(exc), 300)


async def diagnose(finding: Finding, deps: DiagnosisDeps, now: datetime) -> Diagnosis:
    """Decide what to do about one finding; never raises for model trouble."""
    skip = prefilter(finding, deps.config)
    if skip is not None:
        log.info("finding_prefiltered", fingerprint=finding.fingerprint, reason=skip.reason)
        return Diagnosis(skip)
    if deps.llm is None or not deps.config.diagnosis.use_llm:
        result = Diagnosis(runbook_decide(finding, deps.config, "no model configured"))
    else:
        run = _Run(finding, deps, now)
        try:
            decision = await run.execute()
        except LLMError as exc:
            log.warning(
                "diagnosis_fell_back_to_runbook", fingerprint=finding.fingerprint, reason=str(exc)
            )
            decision = runbook_decide(finding, deps.config, str(exc))
        result = Diagnosis(decision, dict(run.usage), tuple(run.transcript))
    decision = result.decision
    log.info(
        "diagnosis_finished",
        fingerprint=finding.fingerprint,
        target=decision.target,
        action=decision.action,
        decided_by=decision.decided_by,
        reason=decision.reason,
        tokens=result.total_tokens,
    )
    return result
