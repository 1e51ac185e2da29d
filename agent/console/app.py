"""The operator console: server-rendered pages under ``/ui/`` on ``METRICS_ADDR``.

Routes of the daemon's one Starlette app: the incident list (filters by state, service,
action and finding name), the outcome report with its charts, one incident (its plot, decision with both keys, the history it saw, the
model's transcript, the gateway exchanges, the timeline), the incidents waiting for
approval, a login form, and the approve and deny forms, which go through exactly the
path of `devops-agent incidents approve` and of the HTTP API (``agent/approvals.py``).
Jinja2 escapes every value (autoescape); the pages carry no JavaScript at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode

from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from agent.approvals import BadAnswer, Pin, Reply, answer_approval, make_answer
from agent.console import view
from agent.console.access import COOKIE, SESSION_SECONDS, Access, LoginThrottle, Role, Session
from agent.console.charts import daily_bars, recovery_bars
from agent.console.plot import Series, render, series_from_matrix
from agent.daemon.bodies import BodyTooLarge, read_body
from agent.diagnosis.tools import finding_query
from agent.errors import PrometheusError
from agent.incidents.model import STATES, Incident
from agent.logs import get_logger
from agent.promql import threshold_of, without_comparison
from agent.reporting import BadDuration, build_report, parse_duration
from agent.runtime import Runtime
from agent.store.base import Unreadable, get_exact

if TYPE_CHECKING:
    from jinja2 import Environment

log = get_logger("agent.console")

HERE = Path(__file__).parent
#: The plot reaches back this far before the incident opened.
BEFORE = timedelta(minutes=30)
#: Points per series, at most (the step grows with the window).
POINTS = 240
FORM_MAX_BYTES = 16_384
FORM_TIMEOUT_SECONDS = 10.0

Runner = Callable[[Coroutine[Any, Any, Reply]], "asyncio.Future[Reply]"]


class Console:
    """The console's pages for one runtime."""

    def __init__(
        self,
        rt: Runtime,
        access: Access,
        run: Runner = asyncio.ensure_future,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self.rt = rt
        self.access = access
        self.run = run
        self.throttle = throttle or LoginThrottle()
        self._env: Environment | None = None

    @property
    def env(self) -> Environment:
        """The templates, loaded when the first page is asked for: a daemon nobody looks
        at never holds them (nor Jinja2)."""
        if self._env is None:
            from jinja2 import Environment, FileSystemLoader, select_autoescape

            self._env = Environment(
                loader=FileSystemLoader(HERE / "templates"),
                autoescape=select_autoescape(["html"], default=True),
            )
        return self._env

    def routes(self) -> list[Route]:
        """The console's routes (none when it is off)."""
        if not self.access.enabled:
            return []
        return [
            Route("/ui/", self.index, methods=["GET"]),
            Route("/ui/pending", self.pending, methods=["GET"]),
            Route("/ui/report", self.report, methods=["GET"]),
            Route("/ui/incidents/{incident_id}", self.incident, methods=["GET"]),
            Route("/ui/incidents/{incident_id}/{verb}", self.answer, methods=["POST"]),
            Route("/ui/login", self.login_form, methods=["GET"]),
            Route("/ui/login", self.login, methods=["POST"]),
            Route("/ui/logout", self.logout, methods=["POST"]),
            Route("/ui/console.css", self.stylesheet, methods=["GET"]),
        ]

    # -- plumbing -------------------------------------------------------------------------

    def _session(self, request: Request) -> Session | None:
        """The request's session, unless a logout ended it."""
        session = self.access.session(request.cookies.get(COOKIE))
        if session is None or self.rt.store.session_ended(session.id):
            return None
        return session

    def _role(self, request: Request) -> Role | None:
        """What the request may do: its session's role, or look on an open console."""
        session = self._session(request)
        if session is not None:
            return session.role
        return "viewer" if self.access.open_read_only else None

    def _page(self, request: Request, template: str, status: int = 200, **values: Any) -> Response:
        cookie = request.cookies.get(COOKIE)
        role = self._role(request)
        html = self.env.get_template(template).render(
            role=role,
            csrf=self.access.csrf(cookie),
            open_read_only=self.access.open_read_only,
            **values,
        )
        headers = {
            "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
            "form-action 'self'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store",
        }
        return HTMLResponse(html, status_code=status, headers=headers)

    def _denied(self, request: Request) -> Response | None:
        if self._role(request) is None:
            return RedirectResponse(f"/ui/login?next={quote(request.url.path)}", status_code=303)
        return None

    async def _form(self, request: Request) -> dict[str, str] | None:
        """A urlencoded form (the console's forms send no files), within its size cap and
        the body deadline; None when it is too large or too slow."""
        try:
            raw = await read_body(request, FORM_MAX_BYTES, FORM_TIMEOUT_SECONDS)
        except (BodyTooLarge, TimeoutError, ClientDisconnect):
            return None
        pairs = parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
        return dict(pairs[:50])

    # -- pages ----------------------------------------------------------------------------

    async def stylesheet(self, _: Request) -> Response:
        """The console's one stylesheet."""
        css = (HERE / "static" / "console.css").read_bytes()
        return Response(css, media_type="text/css", headers={"Cache-Control": "max-age=300"})

    async def index(self, request: Request) -> Response:
        """GET /ui/: recent incidents, filtered by state and service."""
        if (denied := self._denied(request)) is not None:
            return denied
        state = request.query_params.get("state", "")
        service = request.query_params.get("service", "")
        action = request.query_params.get("action", "")
        name = request.query_params.get("name", "")
        now = self.rt.clock()
        found = self.rt.store.recent(200)
        readable = [i for i in found if isinstance(i, Incident)]
        rows = [view.row(i, now) for i in readable if view.matches(i, state, service, action, name)]
        unreadable = [i for i in found if isinstance(i, Unreadable)]
        services = sorted({i.target for i in readable if i.target})
        return self._page(
            request,
            "list.html",
            rows=rows,
            unreadable=unreadable,
            states=STATES,
            services=services,
            state=state,
            service=service,
            action=action,
            name=name,
        )

    async def pending(self, request: Request) -> Response:
        """GET /ui/pending: what waits for a human, and until when."""
        if (denied := self._denied(request)) is not None:
            return denied
        now = self.rt.clock()
        waiting = [i for i in self.rt.store.current() if i.asks]
        rows = [
            {
                **view.row(i, now),
                "until": i.approval_until.isoformat(timespec="seconds")
                if i.approval_until
                else "-",
                "reason": i.decision.autonomy if i.decision else "",
            }
            for i in waiting
        ]
        return self._page(request, "pending.html", rows=rows)

    async def report(self, request: Request) -> Response:
        """GET /ui/report: the outcome report (as ``devops-agent report``) with charts of
        incidents per day per service and of time to recovery; each row links to its
        incidents."""
        if (denied := self._denied(request)) is not None:
            return denied
        since_text = request.query_params.get("since", "7d")
        service = request.query_params.get("service", "") or None
        try:
            since = parse_duration(since_text)
        except BadDuration as exc:
            return self._page(
                request, "report.html", status=400, problem=str(exc), since=since_text
            )
        now = self.rt.clock()
        report, suggestions = build_report(
            self.rt.store, self.rt.config, since=since, now=now, service=service
        )
        rows = [{**r.to_dict(), **view.report_row(r.tally.figures())} for r in report.rows]
        names = [{**r.to_dict(), **view.report_row(r.tally.figures())} for r in report.by_name]
        recovery = [
            (
                f"{r['service']} {r['action']}",
                r["time_to_recovery_p50_seconds"],
                r["time_to_recovery_p90_seconds"],
            )
            for r in rows
        ]
        return self._page(
            request,
            "report.html",
            since=since_text,
            service=service or "",
            report=report,
            rows=rows,
            names=names,
            suggestions=[s.to_dict() for s in suggestions],
            per_day=daily_bars(report.per_day, report.since.date(), report.until.date()),
            recovery=recovery_bars(recovery),
        )

    async def incident(self, request: Request) -> Response:
        """GET /ui/incidents/{id}: everything about one incident."""
        if (denied := self._denied(request)) is not None:
            return denied
        found = get_exact(self.rt.store, str(request.path_params["incident_id"]))
        if not isinstance(found, Incident):
            reason = found.error if isinstance(found, Unreadable) else "no such incident"
            return self._page(request, "missing.html", status=404, reason=reason)
        events = self.rt.store.events(found.id)
        plot = await self._plot(found, events)
        recorded = view.decision_of(events) or {}
        # The decision as it stands (an approval makes the approved action the decided one),
        # with the history the decision saw when it was made.
        decision = found.decision.to_dict() if found.decision else (recorded or None)
        return self._page(
            request,
            "incident.html",
            incident=found,
            finding=found.finding,
            decision=decision,
            history=recorded.get("history") or [],
            timeline=view.timeline(events),
            transcript=view.transcript(events),
            exchanges=view.exchanges(events),
            plot=plot,
            message=request.query_params.get("message", ""),
            waiting=found.asks,
        )

    async def _plot(self, incident: Incident, events: list[Any]) -> dict[str, Any]:
        """The finding's series around the incident, or why there is none."""
        finding = incident.finding
        now = self.rt.clock()
        end = min(now, (incident.cleared_at or now) + timedelta(minutes=2))
        start = incident.opened_at - BEFORE
        try:
            expr = await finding_query(self.rt.prometheus, finding, self.rt.config.checks.all())
            if expr is None:
                return {"svg": None, "why": f"no data: no query behind {finding.name} is known"}
            drawn = without_comparison(expr)
            series = await self._series(drawn, start, end)
        except PrometheusError as exc:
            return {"svg": None, "why": f"no data: {exc}"}
        if not series:
            return {"svg": None, "why": f"no data: {drawn} has no samples in the window"}
        svg = render(
            series,
            threshold=threshold_of(expr) if finding.kind == "alert" else None,
            markers=view.markers(incident, events),
            start=start,
            end=end,
            title=f"{finding.name}: {expr}",
        )
        return {"svg": svg, "why": "", "expr": drawn, "legend": series}

    async def _series(self, expr: str, start: datetime, end: datetime) -> list[Series]:
        """The series over the window, at about ``POINTS`` points: asked again from the
        first sample when the data covers only a short part of the window (a new
        service, a short incident), so a minute of data is not one point."""
        seconds = max(1, int((end - start).total_seconds() / POINTS))
        prometheus = self.rt.prometheus
        result = await prometheus.query_range(expr, start=start, end=end, step=f"{seconds}s")
        series = series_from_matrix(result)
        first = min((t for s in series for t, _ in s.points), default=None)
        if first is None or (end.timestamp() - first) / seconds >= POINTS / 4:
            return series
        begin = datetime.fromtimestamp(first, UTC) - timedelta(seconds=seconds)
        finer = max(1, int((end - begin).total_seconds() / POINTS))
        return series_from_matrix(
            await prometheus.query_range(expr, start=begin, end=end, step=f"{finer}s")
        )

    async def login_form(self, request: Request) -> Response:
        """GET /ui/login."""
        return self._page(request, "login.html", next=request.query_params.get("next", "/ui/"))

    async def login(self, request: Request) -> Response:
        """POST /ui/login: a correct token sets the session cookie; too many wrong ones
        from one address in a minute are answered 429 without a look at the token."""
        address = request.client.host if request.client else "unknown"
        wait = self.throttle.retry_after(address)
        if wait is not None:
            log.warning("console_login_throttled", client=address, retry_after=wait)
            return Response(
                f"too many wrong tokens from {address}; try again in {wait}s",
                status_code=429,
                headers={"Retry-After": str(wait)},
            )
        form = await self._form(request) or {}
        cookie = self.access.login(form.get("token", ""))
        target = form.get("next", "/ui/")
        target = target if target.startswith("/ui/") else "/ui/"
        if cookie is None:
            self.throttle.failed(address)
            log.info("console_login_refused", client=address)
            return self._page(request, "login.html", status=401, next=target, failed=True)
        self.throttle.succeeded(address)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=SESSION_SECONDS,
            path="/ui",
            httponly=True,
            samesite="strict",
            secure=self.access.secure_cookie,
        )
        return response

    async def logout(self, request: Request) -> Response:
        """POST /ui/logout: the session ends on the server (for every replica), and the
        browser forgets its cookie."""
        session = self._session(request)
        if session is not None:
            ends = datetime.fromtimestamp(session.expires, UTC)
            self.rt.store.end_session(session.id, ends, self.rt.clock())
            log.info("console_logged_out", role=session.role)
        response = RedirectResponse("/ui/login", status_code=303)
        response.delete_cookie(COOKIE, path="/ui")
        return response

    async def answer(self, request: Request) -> Response:
        """POST /ui/incidents/{id}/approve|deny: a human's answer, through the one path."""
        incident_id = str(request.path_params["incident_id"])
        verb = str(request.path_params["verb"])
        cookie = request.cookies.get(COOKIE)
        if verb not in ("approve", "deny"):
            return Response("no such form", status_code=404)
        if self._role(request) != "approver":
            return Response("approving needs a login with APPROVAL_TOKEN", status_code=403)
        form = await self._form(request)
        if form is None:
            return Response("the form is too large", status_code=413)
        if not self.access.csrf_ok(cookie, form.get("csrf", "")):
            return Response("the form's CSRF token is wrong; reload the page", status_code=403)
        if get_exact(self.rt.store, incident_id) is None:
            return Response("no such incident (the console takes full ids)", status_code=404)
        try:
            answer = make_answer(
                approve=verb == "approve",
                by=form.get("by"),
                reason=form.get("reason", ""),
                at=self.rt.clock(),
            )
            pin = Pin.checked(form.get("action"), form.get("target"))
        except BadAnswer as exc:
            return self._back(incident_id, str(exc))
        reply = await asyncio.shield(
            self.run(answer_approval(self.rt, incident_id, answer, pin=pin))
        )
        log.info(
            "approval_answered",
            incident_id=incident_id,
            approve=answer.approve,
            by=answer.by,
            status=reply.status,
            via="console",
        )
        done = "approved" if answer.approve else "denied"
        if reply.status == 202:
            return self._back(incident_id, reply.reason)
        return self._back(incident_id, done if reply.ok else f"not {done}: {reply.reason}")

    def _back(self, incident_id: str, message: str) -> Response:
        query = urlencode({"message": message})
        return RedirectResponse(f"/ui/incidents/{quote(incident_id)}?{query}", status_code=303)
