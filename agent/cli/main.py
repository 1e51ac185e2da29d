"""The ``devops-agent`` command line.

Each subcommand is a small function that loads the settings, builds what it needs and
returns an exit code. Expected failures (bad configuration, an unreachable upstream) end
in one line on stderr and a documented exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent import __version__
from agent.approvals import BadAnswer, Pin, answer_approval, make_answer
from agent.cli.probe import probe_peers, probe_store
from agent.cli.render import (
    render_autonomy,
    render_cycle,
    render_incidents,
    render_pending,
    render_timeline,
    show,
    unreadable_row,
)
from agent.cli.report import report_json, report_text
from agent.clients.gateway import GatewayClient, GatewayProbe, build_http_client
from agent.daemon.cycle import CycleReport, run_cycle
from agent.daemon.service import serve
from agent.daemon.verify import run_verifications
from agent.doors import TOKEN_MIN_CHARS
from agent.errors import AgentError, ConfigError, NoStore
from agent.eval.case import CaseError, dump_case, load_cases
from agent.eval.export import Aftermath, export_case
from agent.eval.report import as_json, as_table
from agent.eval.runner import run_eval
from agent.eval.scoring import verdict
from agent.eval.slots import default_slots, slot_warning
from agent.host import EnvChoice, choose_env_file
from agent.incidents.model import Incident
from agent.local import LocalModel, MissingBinary, PortTaken, shipped_model
from agent.local.model import ALIAS as MODEL_ALIAS
from agent.local.model import CONTEXT_TOKENS
from agent.logs import configure_logging
from agent.reporting import BadDuration, build_report, parse_duration
from agent.runtime import open_runtime
from agent.settings import Settings, load_settings, redacted_summary, reveal, secret_values
from agent.store import open_store
from agent.store.base import IncidentStore, Unreadable
from agent.text import redact_url

EX_OK = 0
EX_FAILURE = 1
EX_CONFIG = 78  # sysexits.h EX_CONFIG; systemd's RestartPreventExitStatus=78 relies on it

Command = Callable[[argparse.Namespace], int]


def _fail(message: str) -> None:
    print(f"devops-agent: {message}", file=sys.stderr)


def env_choice(args: argparse.Namespace) -> EnvChoice:
    """The environment file this command reads (see ``agent.host``)."""
    return choose_env_file(
        args.env_file, no_env_file=args.no_env_file, cwd=Path.cwd(), environ=os.environ
    )


def load_or_report(args: argparse.Namespace) -> Settings | None:
    """Load the settings; on failure print every problem, one per line, and return None."""
    choice = env_choice(args)
    try:
        return load_settings(choice.path, config=args.config, service=choice.service)
    except ConfigError as exc:
        for problem in exc.problems:
            _fail(f"config: {problem}")
        _fail(f"{len(exc.problems)} configuration problem(s); nothing was started")
        return None


def setup_logging(settings: Settings, *, to_stderr: bool = False) -> None:
    """Configure structured logs from the settings, redacting every configured secret."""
    env = settings.env
    secrets = secret_values(env)
    configure_logging(
        env.log_level, env.log_format, secrets, stream=sys.stderr if to_stderr else None
    )


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate everything and print a redacted summary; with --probe, ask every peer and
    the incident store."""
    print(env_choice(args).line(), flush=True)
    settings = load_or_report(args)
    if settings is None:
        return EX_CONFIG
    print(f"incident store: {redact_url(settings.env.state_url)}")
    print("configuration OK")
    rows = redacted_summary(settings)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print(render_autonomy(settings.config))
    if not args.probe:
        return EX_OK
    configure_logging("ERROR", "json", secret_values(settings.env), stream=sys.stderr)
    checks = asyncio.run(probe_peers(settings))
    checks.append(probe_store(settings))
    print("peers:")
    for check in checks:
        print(f"  {'ok  ' if check.ok else 'FAIL'}  {show(check.line(), 600)}")
    failed = [c for c in checks if not c.ok]
    if failed:
        _fail(f"{len(failed)} of {len(checks)} probes failed: {show(failed[0].line())}")
        return EX_FAILURE
    return EX_OK


def cmd_gateway_check(args: argparse.Namespace) -> int:
    """Check the gateway's URL, token and answer shape without running a command."""
    settings = load_or_report(args)
    if settings is None:
        return EX_CONFIG
    setup_logging(settings, to_stderr=True)
    probe = asyncio.run(_gateway_probe(settings))
    url = settings.env.ai_command_gateway_url
    if probe.problem is not None:
        _fail(f"gateway {url}: {probe.problem}")
        return EX_FAILURE
    version = probe.health.version or "unknown"
    generation = probe.generation or "unknown"
    print(f"gateway {url}: healthy (version {show(version)})")
    print(f"  response generation: {generation} ({probe.generation_note})")
    print(f"  token: {probe.token}")
    return EX_OK


async def _gateway_probe(settings: Settings) -> GatewayProbe:
    env = settings.env
    token = reveal(env.ai_command_gateway_token)
    timeout = env.ai_command_gateway_timeout
    async with build_http_client(env.ai_command_gateway_url, timeout, token) as http:
        client = GatewayClient(http, settings.config.gateway, timeout=timeout)
        return await client.probe(token_configured=token is not None)


def cmd_run(args: argparse.Namespace) -> int:
    """The daemon in the foreground until SIGTERM/SIGINT."""
    settings = load_or_report(args)
    if settings is None:
        return EX_CONFIG
    setup_logging(settings)
    return asyncio.run(serve(settings))


def cmd_sweep(args: argparse.Namespace) -> int:
    """Exactly one cycle, then exit."""
    settings = load_or_report(args)
    if settings is None:
        return EX_CONFIG
    setup_logging(settings, to_stderr=args.json)
    # `sweep` under DRY_RUN=true is a dry run too: it leaves the real store as it was.
    dry_run = args.dry_run or settings.env.dry_run
    report = asyncio.run(_one_cycle(settings, dry_run=True if dry_run else None))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False, default=str))
    else:
        print(render_cycle(report))
    if report.sweep.blind:
        _fail(f"sweep saw nothing, every source failed: {'; '.join(report.sweep.failures())}")
        return EX_FAILURE
    return EX_OK


async def _one_cycle(settings: Settings, *, dry_run: bool | None) -> CycleReport:
    if not dry_run:
        return await _cycle_with(settings, dry_run=dry_run)
    # A dry run reads the real state (cooldowns, budgets, breakers, current incidents) but
    # must not write to it: its "skipped: dry_run" incidents would hold back the daemon.
    with tempfile.TemporaryDirectory(prefix="devops-agent-dry-run-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'agent.db'}"
        _copy_state(settings, url)
        env = settings.env.model_copy(update={"agent_state_url": url})
        return await _cycle_with(Settings(env=env, config=settings.config), dry_run=True)


def _copy_state(settings: Settings, dest_url: str) -> None:
    """Copy what the guardrails read from the real store into a throwaway one."""
    horizon = max(3600.0, settings.config.policy.action_cooldown_seconds)
    try:
        source = open_store(settings.env.state_url, create=False)
    except NoStore:
        return  # no store yet: the dry run starts from nothing, as the daemon would
    try:
        state = source.export_state(datetime.now(UTC) - timedelta(seconds=horizon))
    finally:
        source.close()
    dest = open_store(dest_url)
    try:
        dest.import_state(state)
    finally:
        dest.close()


async def _cycle_with(settings: Settings, *, dry_run: bool | None) -> CycleReport:
    async with open_runtime(settings, dry_run=dry_run) as rt:
        await run_verifications(rt, rt.clock())
        report = await run_cycle(rt, rt.clock(), trigger="command")
        report.would_send, report.would_escalate = rt.withheld.drain()
        return report


def cmd_incidents(args: argparse.Namespace) -> int:
    """List recent incidents, show one, export one as a case, answer one, or reset a circuit
    breaker: never creating a store (a missing one is an error naming where it looked)."""
    settings = load_or_report(args)
    if settings is None:
        return EX_CONFIG
    if args.verbose:
        print(f"incident store: {redact_url(settings.env.state_url)} ({env_choice(args).line()})")
    if args.action == "export":
        setup_logging(settings, to_stderr=True)
        return asyncio.run(_export(settings, args.id, args.out))
    if args.action in ("approve", "deny"):
        setup_logging(settings, to_stderr=True)
        return asyncio.run(_answer(settings, args))
    store = open_store(settings.env.state_url, create=False)
    try:
        if args.action == "show":
            return _show_incident(store, args.id, as_json=args.json)
        if args.action == "reset-breaker":
            return _reset_breaker(store, settings, args.service, args.by)
        if args.action == "pending":
            found: list[Incident | Unreadable] = [i for i in store.current() if i.asks]
        else:
            found = store.recent(args.limit)
    finally:
        store.close()
    rows = [unreadable_row(i) if isinstance(i, Unreadable) else i.row() for i in found]
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    elif args.action == "pending":
        print(render_pending(rows))
    else:
        print(render_incidents(rows))
    return EX_OK


def _reset_breaker(store: IncidentStore, settings: Settings, service: str, by: str) -> int:
    """Close a service's breaker, recording who; a service the agent does not know is
    refused rather than "reset"."""
    if not by.strip():
        _fail("--by must name who resets the breaker")
        return EX_FAILURE
    known = service in settings.config.services
    if not known and store.breaker(service) is None:
        _fail(
            f"unknown service {show(service)!r}: not in the configuration's [services] and "
            "no circuit breaker was ever counted for it"
        )
        return EX_FAILURE
    before = store.reset_breaker(service, datetime.now(UTC), by.strip())
    if before is None:
        print(f"circuit breaker for {show(service)} never counted a failure: nothing to reset")
        return EX_OK
    was = "open" if before.is_open else "closed"
    print(
        f"circuit breaker for {show(service)} reset by {show(by.strip())} "
        f"(it was {was} after {before.failures} failure(s))"
    )
    return EX_OK


async def _answer(settings: Settings, args: argparse.Namespace) -> int:
    """Approve or deny one incident's waiting action, through the daemon's own path."""
    approve = args.action == "approve"
    try:
        answer = make_answer(approve=approve, by=args.by, reason=args.reason, at=datetime.now(UTC))
        pin = Pin.checked(args.approve_action, args.approve_target)
    except BadAnswer as exc:
        _fail(str(exc))
        return EX_FAILURE
    async with open_runtime(settings, create_store=False) as rt:
        reply = await answer_approval(rt, args.id, answer, pin=pin)
    if args.json:
        print(json.dumps(reply.to_dict(), indent=2, ensure_ascii=False))
    if not reply.accepted:
        _fail(show(f"incident {args.id}: {reply.reason}", 600))
        return EX_FAILURE
    incident = reply.incident
    if incident is not None and not args.json:
        what = "approved" if approve else "denied"
        print(
            f"incident {incident.id} {what} by {show(answer.by)}: now {incident.state}"
            + (f" ({show(incident.resolution)})" if incident.resolution else "")
            + (f"; {show(reply.reason, 400)}" if reply.status == 202 else "")
        )
    return EX_OK


async def _export(settings: Settings, incident_id: str, out: Path | None) -> int:
    async with open_runtime(settings, create_store=False) as rt:
        incident = _readable_incident(rt.store, incident_id)
        if incident is None:
            return EX_FAILURE
        since = incident.opened_at - timedelta(hours=rt.config.diagnosis.history_hours)
        history = rt.store.history(incident.group_key, since=since, before=incident)
        events = rt.store.events(incident.id)
        after = Aftermath(
            next_opened=rt.store.next_opened(incident.group_key, after=incident),
            now=datetime.now(UTC),
            recurrence_seconds=rt.config.policy.recurrence_seconds,
        )
        case = await export_case(incident, events, rt.prometheus, rt.config, after, history)
    text = dump_case(case)
    if out is None:
        print(text, end="")
        return EX_OK
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        _fail(f"cannot write {out}: {exc.strerror}")
        return EX_FAILURE
    state = "confirmed" if case.expect.confirmed else "to be filled in (confirmed = false)"
    print(f"wrote {out}: case {case.id}, expectation {state}")
    back = case.recorded.recurred_after_seconds if case.recorded else None
    if back is not None:
        print(f"note: the same problem was back {back:.0f}s after this incident ended")
    return EX_OK


def _progress(done: int, total: int, case_id: str) -> None:
    """One progress line on stderr: rewritten in place on a terminal, else every tenth."""
    if sys.stderr.isatty():
        end = "\n" if done == total else ""
        print(f"\reval: {done}/{total} runs done (last: {case_id})\x1b[K", end=end, file=sys.stderr)
    elif done == total or done % max(1, total // 10) == 0:
        print(f"eval: {done}/{total} runs done", file=sys.stderr)


def cmd_eval(args: argparse.Namespace) -> int:
    """Score the configured model's diagnoses on recorded cases."""
    settings = load_or_report(args)
    if settings is None:
        return EX_CONFIG
    configure_logging("ERROR", "json", secret_values(settings.env), stream=sys.stderr)
    try:
        loaded = load_cases(args.paths)
    except CaseError as exc:
        for problem in exc.problems:
            _fail(f"case: {problem}")
        _fail(f"{len(exc.problems)} problem(s) in the case files; nothing was run")
        return EX_CONFIG
    base_url = str(settings.env.openai_base_url) if settings.env.openai_base_url else None
    slots = default_slots(base_url) if args.model_slots is None else (args.model_slots or None)
    warning = slot_warning(args.concurrency, slots, base_url)
    if warning and settings.config.diagnosis.use_llm:
        print(f"eval: warning: {warning}", file=sys.stderr)
    result = asyncio.run(
        run_eval(
            settings,
            loaded,
            iterations=args.iterations,
            concurrency=args.concurrency,
            model_slots=slots,
            progress=None if args.json else _progress,
        )
    )
    prices = _eval_prices(args, settings)
    if args.json:
        print(json.dumps(as_json(result, args.min_pass, prices), indent=2, ensure_ascii=False))
    else:
        print(as_table(result, args.min_pass, prices))
    ok, _ = verdict(result.total(), args.min_pass)
    return EX_OK if ok else EX_FAILURE


def cmd_report(args: argparse.Namespace) -> int:
    """The outcome report over ``--since`` and the tiers its evidence supports; never
    creating a store."""
    try:
        since = parse_duration(args.since)
    except BadDuration as exc:
        _fail(str(exc))
        return EX_FAILURE
    settings = load_or_report(args)
    if settings is None:
        return EX_CONFIG
    setup_logging(settings, to_stderr=True)
    store = open_store(settings.env.state_url, create=False)
    try:
        report, suggestions = build_report(
            store, settings.config, since=since, now=datetime.now(UTC), service=args.service
        )
    finally:
        store.close()
    if args.json:
        print(json.dumps(report_json(report, suggestions), indent=2, ensure_ascii=False))
    else:
        print(report_text(report, suggestions))
    return EX_OK


def _report_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = sub.add_parser(
        "report",
        help="what the agent did and how well, per service and action; tier suggestions",
        description=(
            "Fold the outcome ledger over a time range: incidents, what was sent, approved, "
            "denied or observed, success and recurrence, time to recovery, approval latency, "
            "model and runbook agreement, tokens and cost per verified recovery; then the "
            "tier changes the evidence supports, each with the TOML to paste (never applied)."
        ),
    )
    report.add_argument(
        "--since", default="7d", help="how far back, a Prometheus duration (default 7d)"
    )
    report.add_argument("--service", default=None, help="only this service's rows")
    report.add_argument("--json", action="store_true", help="print rows and suggestions as JSON")
    report.set_defaults(func=cmd_report)


def _eval_prices(args: argparse.Namespace, settings: Settings) -> tuple[float | None, float | None]:
    """Prices per 1,000 tokens: the flags', else ``[diagnosis.prices]`` (per million)."""
    given = (args.price_per_1k_input, args.price_per_1k_output)
    configured = settings.config.diagnosis.prices
    if given != (None, None) or configured is None:
        return given
    return configured.prompt / 1000, configured.completion / 1000


#: The local model server's API key, when the operator gives it (the example unit's
#: environment file); otherwise one is made at random and printed.
LOCAL_MODEL_KEY = "LOCAL_MODEL_API_KEY"


def _local_model_key() -> tuple[str | None, str | None]:
    """The key given in LOCAL_MODEL_API_KEY (None: make one), or why it is refused."""
    given = os.environ.get(LOCAL_MODEL_KEY)
    if not given:
        return None, None
    if given != given.strip() or len(given) < TOKEN_MIN_CHARS:
        why = f"at least {TOKEN_MIN_CHARS} characters, without surrounding whitespace"
        return None, f"{LOCAL_MODEL_KEY}: {why} (e.g. `openssl rand -hex 24`)"
    return given, None


def cmd_local_model(args: argparse.Namespace) -> int:
    """Serve the shipped model (or --model PATH) on loopback until SIGTERM or SIGINT."""
    key, problem = _local_model_key()
    if problem is not None:
        _fail(f"config: {problem}")
        return EX_CONFIG
    workdir = Path(tempfile.mkdtemp(prefix="devops-agent-model-"))
    server = LocalModel(
        workdir,
        model=args.model,
        port=args.port,
        context_tokens=args.context,
        threads=args.threads,
        api_key=key,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server.start()
    except (MissingBinary, PortTaken) as exc:
        _fail(str(exc))
        return EX_FAILURE
    except RuntimeError as exc:
        _fail(f"the model server did not start: {exc}; see {workdir / 'server.log'}")
        return EX_FAILURE
    try:
        print(f"serving {server.model or shipped_model()} on {server.url}", flush=True)
        print(f"OPENAI_BASE_URL={server.base_url}", flush=True)
        print(f"LLM_MODEL={MODEL_ALIAS}", flush=True)
        shown = f"(the {LOCAL_MODEL_KEY} it was given)" if key else server.api_key
        print(f"OPENAI_API_KEY={shown}", flush=True)
        while not stop.wait(1.0):
            if server.proc is not None and server.proc.poll() is not None:
                _fail(f"the model server exited with {server.proc.returncode}")
                return EX_FAILURE
    finally:
        server.stop()
    print("model server stopped", flush=True)
    return EX_OK


def _local_model_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    local = sub.add_parser(
        "local-model",
        help="serve a local model (OpenAI-compatible, on loopback) for the diagnosis",
        description=(
            "Run llama-cpp-python's OpenAI-compatible server with the shipped SmolLM2-135M "
            "model, or any GGUF file, on 127.0.0.1, behind an API key of its own (from "
            f"{LOCAL_MODEL_KEY}, else made at random); print the OPENAI_BASE_URL, LLM_MODEL "
            "and OPENAI_API_KEY to use; exit 1 when the port is taken; stop cleanly on "
            "SIGTERM or SIGINT."
        ),
    )
    local.add_argument("--model", type=Path, default=None, help="a GGUF file (default: shipped)")
    local.add_argument(
        "--port", type=_bounded(int, 1, 65535), default=8081, help="port (default 8081)"
    )
    local.add_argument(
        "--context",
        type=_bounded(int, 512, 131072),
        default=CONTEXT_TOKENS,
        help=f"context size in tokens (default {CONTEXT_TOKENS})",
    )
    local.add_argument(
        "--threads", type=_bounded(int, 1, 1024), default=None, help="CPU threads (default: all)"
    )
    local.set_defaults(func=cmd_local_model)


def _bounded(kind: type[int] | type[float], low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:  # also false for nan
            raise argparse.ArgumentTypeError(f"{text} is not in [{low:g}, {high:g}]")
        return value

    return parse


def _eval_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ev = sub.add_parser(
        "eval",
        help="score the configured model's diagnoses on recorded incidents (cases)",
        description=(
            "Run each case (the shipped ones when no PATH is given) against a throwaway "
            "Prometheus holding its metric history, with the configured model, the real "
            "diagnosis, guardrails and dispatcher, and a stand-in gateway. Exit 0 only when "
            "no decision was unsafe and the pass rate reaches --min-pass."
        ),
    )
    ev.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="case files or folders")
    ev.add_argument(
        "--iterations", type=_bounded(int, 1, 1000), default=1, help="runs per case (default 1)"
    )
    ev.add_argument(
        "--concurrency", type=_bounded(int, 1, 64), default=4, help="runs at once (default 4)"
    )
    ev.add_argument(
        "--model-slots",
        type=_bounded(int, 0, 64),
        default=None,
        help="requests the model serves at once; runs wait for a free one, and that wait "
        "is reported apart from the model's time (default: 1 for a model on this machine, "
        "no limit for any other; 0: no limit)",
    )
    ev.add_argument("--json", action="store_true", help="print the report as JSON")
    ev.add_argument(
        "--min-pass", type=_bounded(float, 0, 1), default=0.9, help="pass rate needed (0.9)"
    )
    for side in ("input", "output"):
        ev.add_argument(
            f"--price-per-1k-{side}",
            type=_bounded(float, 0, 1e6),
            default=None,
            help=f"price of 1,000 {side} tokens, to report the cost",
        )
    ev.set_defaults(func=cmd_eval)


def cmd_mcp(args: argparse.Namespace) -> int:
    """Serve MCP over stdin and stdout for an assistant; logs go to stderr."""
    settings = load_or_report(args)
    if settings is None:
        return EX_CONFIG
    setup_logging(settings, to_stderr=True)
    from agent.mcp.stdio import serve_stdio  # the SDK is loaded only for this command

    return asyncio.run(serve_stdio(settings, allow_answers=args.allow_answers))


def _mcp_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mcp = sub.add_parser(
        "mcp",
        help="serve the agent's records to an assistant over MCP (stdio)",
        description=(
            "An MCP server on stdin and stdout, for an assistant that starts it: "
            "list_incidents, get_incident, pending_approvals, report, approve and deny, and "
            "the resource incident://ID. It reads the incident store read-only; approve and "
            "deny are refused unless --allow-answers is given. Logs go to stderr. It ends "
            "when the client closes stdin, or on SIGTERM or SIGINT."
        ),
    )
    mcp.add_argument(
        "--allow-answers",
        action="store_true",
        help="let the assistant approve and deny (through the agent's one approval path)",
    )
    mcp.set_defaults(func=cmd_mcp)


def _readable_incident(store: IncidentStore, incident_id: str) -> Incident | None:
    """The incident with this id (or unique prefix); None, with the reason printed, when
    there is none or it cannot be read."""
    incident = store.get(incident_id)
    if incident is None:
        _fail(f"no incident with id {show(incident_id)!r} (or the prefix is not unique)")
        return None
    if isinstance(incident, Unreadable):
        _fail(f"incident {show(incident.id)} cannot be read: {show(incident.error)}")
        return None
    return incident


def _show_incident(store: IncidentStore, incident_id: str, *, as_json: bool) -> int:
    incident = _readable_incident(store, incident_id)
    if incident is None:
        return EX_FAILURE
    events = store.events(incident.id)
    if as_json:
        timeline = [{"at": e.at.isoformat(), "kind": e.kind, **e.data} for e in events]
        decision = incident.decision.to_dict() if incident.decision else None
        doc = {**incident.row(), "decision": decision, "timeline": timeline}
        print(json.dumps(doc, indent=2, ensure_ascii=False, default=str))
    else:
        print(render_timeline(incident, events))
    return EX_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="devops-agent",
        description="Self-healing agent: sweeps Prometheus, diagnoses, acts via the gateway.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sources = parser.add_mutually_exclusive_group()
    sources.add_argument(
        "--env-file",
        type=Path,
        default=None,
        help="environment file read under the environment (default: .env here if present, "
        "else the installed service's /etc/devops-agent/agent.env)",
    )
    sources.add_argument(
        "--no-env-file",
        action="store_true",
        help="read no environment file: the environment is complete (the systemd unit "
        "passes this; systemd read EnvironmentFile=)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="the TOML file; wins over AGENT_CONFIG (the systemd unit passes its own)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = sub.add_parser(
        "check-config",
        help="validate the environment and the TOML file, print a redacted summary",
        description="Exit 0 when the configuration is usable, 78 (EX_CONFIG) otherwise; with "
        "--probe, 1 when a configured peer does not answer.",
    )
    check.add_argument(
        "--probe",
        action="store_true",
        help="also ask Prometheus, Alertmanager, the gateway and the model endpoint (exit 1 "
        "when one fails)",
    )
    check.set_defaults(func=cmd_check_config)
    gateway = sub.add_parser(
        "gateway-check",
        help="ask the AI Command Gateway's /health and print the answer",
        description="Exit 0 when the gateway says it is healthy, 1 otherwise (with the reason).",
    )
    gateway.set_defaults(func=cmd_gateway_check)
    run = sub.add_parser(
        "run",
        help="run the daemon in the foreground (systemd runs this)",
        description="Sweep on a schedule until SIGTERM/SIGINT; exit 0 on a clean stop.",
    )
    run.set_defaults(func=cmd_run)
    once = sub.add_parser(
        "sweep",
        help="run exactly one sweep (collect, diagnose, guardrails, dispatch) and exit",
        description="One cycle of the daemon, then exit.",
    )
    once.add_argument("--dry-run", action="store_true", help="decide, but dispatch nothing")
    once.add_argument("--json", action="store_true", help="print the sweep report as JSON")
    once.set_defaults(func=cmd_sweep)
    incidents = sub.add_parser(
        "incidents",
        help="list recent incidents; `incidents show ID` prints one timeline",
        description="Read the incident store.",
    )
    incidents.add_argument("--json", action="store_true", help="print JSON")
    incidents.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    incidents.add_argument(
        "-v", "--verbose", action="store_true", help="first say which store is read, and why"
    )
    inc_sub = incidents.add_subparsers(dest="action", metavar="ACTION")
    show = inc_sub.add_parser("show", help="one incident's full timeline")
    show.add_argument("id", help="incident id (a unique prefix is enough)")
    show.add_argument("--json", action="store_true", help="print JSON")
    export = inc_sub.add_parser(
        "export", help="write a finished incident as an evaluation case (TOML)"
    )
    export.add_argument("id", help="incident id (a unique prefix is enough)")
    export.add_argument("--out", type=Path, default=None, help="file to write (default stdout)")
    reset = inc_sub.add_parser("reset-breaker", help="close a service's circuit breaker")
    reset.add_argument("service", help="the service name")
    reset.add_argument("--by", required=True, help="who resets it (kept with the breaker)")
    inc_sub.add_parser("pending", help="incidents waiting for a human's approval")
    for verb, text in (("approve", "approve"), ("deny", "deny")):
        answer = inc_sub.add_parser(
            verb, help=f"{text} the action an incident waits for (exit 1 when it cannot be)"
        )
        answer.add_argument("id", help="incident id (a unique prefix is enough)")
        answer.add_argument("--by", required=True, help="who answers (kept in the timeline)")
        answer.add_argument(
            "--reason",
            required=verb == "deny",
            default="",
            help="why (kept in the timeline)" + ("" if verb == "approve" else "; required"),
        )
        answer.add_argument(
            "--action",
            dest="approve_action",
            default=None,
            help="the action you mean; refused when the incident waits for another",
        )
        answer.add_argument(
            "--target",
            dest="approve_target",
            default=None,
            help="the service you mean the action to run on; refused when it waits for another",
        )
        answer.add_argument("--json", action="store_true", help="print the answer as JSON")
    for action in inc_sub.choices.values():
        action.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            default=argparse.SUPPRESS,
            help="first say which store is read, and why",
        )
    incidents.set_defaults(func=cmd_incidents, action=None)
    _eval_parser(sub)
    _report_parser(sub)
    _local_model_parser(sub)
    _mcp_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Command = args.func
    try:
        return func(args)
    except ConfigError as exc:
        for problem in exc.problems:
            _fail(f"config: {problem}")
        return EX_CONFIG
    except AgentError as exc:
        _fail(str(exc))
        return EX_FAILURE
    except KeyboardInterrupt:
        return 130
