"""The diagnosis loop for one finding: prefilter, triage, investigation, plan, safety.

Any model failure (after the client's own retries), a timeout, a plan that does not
validate after one repair, or the whole diagnosis running past
``diagnosis.deadline_seconds`` hands the finding to the runbook engine; the decision
records which path decided, why, and that the model failed (``model_failure``: then only
the runbook's key turned, see ``guardrails/autonomy.py``). Triage may end a diagnosis only
where the runbook's answer for the finding is ``none`` too: where the operator's runbook
would act, escalate or look, the model looks and plans before it may disagree. Tokens and
calls are counted per phase, and the whole conversation is kept as the transcript for the
incident store.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from agent.clients.llm import ChatReply, LLMClient, ToolsRefused, parse_json_object
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
from agent.diagnosis.tools import (
    TOOL_NAMES,
    TOOLS,
    LogAccess,
    Toolbox,
    tool_messages,
    written_calls,
)
from agent.errors import LLMError, LLMPermanentError
from agent.incidents.history import PastIncident
from agent.logs import get_logger
from agent.sweep.findings import Finding
from agent.text import clip

log = get_logger("agent.diagnosis")

#: Tool-call arguments longer than this are not run, nor sent back to the model.
TOOL_ARGUMENTS_MAX = 4000
#: The investigation summary the plan sees, at most.
SUMMARY_MAX = 1500
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
    history: Sequence[PastIncident] = ()
    logs: LogAccess | None = None
    usage: dict[str, PhaseUsage] = field(default_factory=dict)
    transcript: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: int = 0
    tools: list[dict[str, Any]] = field(default_factory=lambda: list(TOOLS))

    @property
    def llm(self) -> LLMClient:
        assert self.deps.llm is not None
        return self.deps.llm

    @property
    def spent(self) -> int:
        return total_tokens(self.usage)

    async def chat(self, phase: str, messages: list[dict[str, Any]], **kw: Any) -> ChatReply:
        answer = await self.llm.chat(messages, phase=phase, **kw)
        if phase == "investigation" and not answer.tool_calls:
            answer = written_calls(answer, TOOL_NAMES)
        reply = self._bounded(phase, answer)
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

    async def triage(self, prefix: list[dict[str, Any]]) -> TriageAnswer:
        ask = {"role": "user", "content": prompts.TRIAGE}
        self.note("triage", ask)
        reply = await self.chat(
            "triage",
            [*prefix, ask],
            schema=TRIAGE_SCHEMA,
            max_tokens=prompts.MAX_TOKENS["triage"],
        )
        try:
            return TriageAnswer.model_validate(parse_json_object(reply.content))
        except (ValueError, ValidationError) as exc:
            raise LLMPermanentError(f"triage answer invalid: {_brief(exc)}") from exc

    def _instruction(self) -> dict[str, Any]:
        """The investigation's instruction: tools described in the text for an endpoint
        that takes no tool definitions."""
        native = self.llm.features.tools
        return {"role": "user", "content": prompts.investigate(None if native else self.tools)}

    async def _investigation_call(
        self, messages: list[dict[str, Any]], at: int, *, last: bool
    ) -> ChatReply:
        """One investigation call; an endpoint that refuses tool definitions is asked
        again at once, with the tools described in the instruction instead."""
        for _ in range(2):
            messages[at] = self._instruction()
            try:
                return await self.chat(
                    "investigation",
                    messages,
                    tools=None if last else self.tools,
                    max_tokens=prompts.MAX_TOKENS["investigation"],
                )
            except ToolsRefused:
                log.info("investigation_tools_as_text")
        raise LLMPermanentError("the model endpoint refused tool definitions twice")

    async def investigate(self, prefix: list[dict[str, Any]], toolbox: Toolbox) -> str:
        cfg = self.deps.config.diagnosis
        messages: list[dict[str, Any]] = [*prefix, self._instruction()]
        self.note("investigation", messages[-1])
        summary = ""
        for step in range(cfg.max_steps):
            last = (
                step == cfg.max_steps - 1
                or self.spent >= cfg.token_budget * 0.6
                or self.tool_calls >= cfg.max_tool_calls
            )
            reply = await self._investigation_call(messages, len(prefix), last=last)
            if not reply.tool_calls:
                summary = reply.content or summary
            if last or not reply.tool_calls:
                break
            messages.append(reply.as_message())
            results = [
                (call, await toolbox.run(call.name, call.arguments)) for call in reply.tool_calls
            ]
            answered = tool_messages(reply, results)
            messages.extend(answered)
            if reply.native_calls:
                self.note(
                    "investigation",
                    *({"name": c.name, **m} for (c, _), m in zip(results, answered, strict=True)),
                )
            else:
                self.note("investigation", *answered)
            log.info("investigation_step", step=step + 1, tools=[c.name for c in reply.tool_calls])
        return summary

    async def plan(self, prefix: list[dict[str, Any]], summary: str) -> RecoveryPlan:
        """The plan appends to the investigation as the model ended it (its instruction,
        then its summary; tool turns left out), so a server that cached the investigation
        evaluates only the plan's own instruction."""
        config = self.deps.config
        targets = allowed_targets(self.finding, config)
        service = config.services[targets[0]]
        allowed = list(dict.fromkeys([*service.actions, "escalate", "none"]))
        schema = plan_schema(allowed, targets)
        ask = {"role": "user", "content": prompts.plan_request(allowed, targets)}
        said = clip(summary, SUMMARY_MAX) or "none"
        concluded = [self._instruction(), {"role": "assistant", "content": said}]
        messages: list[dict[str, Any]] = [*prefix, *concluded, ask]
        self.note("plan", ask)
        error = ""
        for attempt in range(2):  # the answer, then one repair
            if self.spent >= config.diagnosis.token_budget:
                raise LLMPermanentError(
                    "token budget (diagnosis.token_budget) exhausted before a valid plan"
                )
            reply = await self.chat(
                "plan", messages, schema=schema, max_tokens=prompts.MAX_TOKENS["plan"]
            )
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
        log_services = [
            t
            for t in allowed_targets(self.finding, cfg)
            if "collect_logs" in cfg.services[t].actions
        ]
        toolbox = Toolbox(
            self.deps.prometheus,
            cfg.diagnosis.tool_result_max_chars,
            self.now,
            logs=self.logs,
            log_services=log_services,
        )
        self.tools = toolbox.tools
        block = prompts.finding_block(self.finding, cfg.diagnosis.untrusted_max_chars)
        evidence = await toolbox.evidence(
            self.finding, cfg.checks.all(), minutes=cfg.diagnosis.evidence_minutes
        )
        past = prompts.history_block(self.history, self.now)
        prefix = prompts.prefix(block, evidence, past)
        self.note("context", *prefix)
        verdict = await self.triage(prefix)
        runbook = runbook_decide(self.finding, cfg).action
        if not verdict.actionable and runbook == "none":
            return Decision(
                action="none",
                target=self.finding.target,
                decided_by="llm",
                actionable=False,
                reason=f"triage: not actionable: {verdict.reason}",
            )
        if not verdict.actionable:
            # The operator's runbook would act, escalate or look: a "no" from triage alone
            # would silence it with no evidence, so the model looks and plans.
            log.info("triage_overruled", reason=verdict.reason, why=f"the runbook says {runbook}")
        summary = await self.investigate(prefix, toolbox)
        plan = await self.plan(prefix, summary)
        decision = Decision(
            action=plan.action,
            target=plan.target,
            decided_by="llm",
            actionable=True,
            reason=f"triage urgency {verdict.urgency}"
            if verdict.actionable
            else f"triage: not actionable ({verdict.reason}), investigated as the runbook says {runbook}",
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
                verification="",
            )
        return decision


def _brief(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(validation_problems(exc)[:5])
    return clip(str(exc), 300)


async def diagnose(
    finding: Finding,
    deps: DiagnosisDeps,
    now: datetime,
    *,
    history: Sequence[PastIncident] = (),
    logs: LogAccess | None = None,
) -> Diagnosis:
    """Decide what to do about one finding; never raises for model trouble. ``history``
    is the same problem's past incidents (shown to the model as the agent's own facts);
    ``logs`` reads recent logs through the gateway for the ``recent_logs`` tool."""
    skip = prefilter(finding, deps.config)
    if skip is not None:
        log.info("finding_prefiltered", fingerprint=finding.fingerprint, reason=skip.reason)
        return Diagnosis(skip)
    seen = tuple(p.to_dict() for p in history)
    if deps.llm is None or not deps.config.diagnosis.use_llm:
        decision = runbook_decide(finding, deps.config, "no model configured")
        result = Diagnosis(decision, history=seen)
    else:
        run = _Run(finding, deps, now, history, logs)
        deadline = deps.config.diagnosis.deadline_seconds
        try:
            async with asyncio.timeout(deadline):
                decision = await run.execute()
        except (LLMError, TimeoutError) as exc:
            failure = (
                f"no decision within {deadline:g}s (diagnosis.deadline_seconds)"
                if isinstance(exc, TimeoutError)
                else str(exc)
            )
            log.warning(
                "diagnosis_fell_back_to_runbook", fingerprint=finding.fingerprint, reason=failure
            )
            decision = replace(runbook_decide(finding, deps.config, failure), model_failure=failure)
        result = Diagnosis(decision, dict(run.usage), tuple(run.transcript), seen)
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
