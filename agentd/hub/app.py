"""The hub's web application (Starlette): the PCs' API, the JSON API and the helpdesk pages.

Who may do what:
- a PC (Bearer install token): ``GET /api/v1/agent`` (its WebSocket) and
  ``POST /api/v1/reports`` (only its own reports), and the path.load check's load test
  under ``/load/v1/`` (agentd/hub/load.py: one test at a time); nothing else;
- a hub account (session cookie from ``/login``, or HTTP Basic for scripts): the pages
  and the JSON API; it cannot post reports. A state-changing request with the cookie
  must carry the session's CSRF token (form field ``csrf`` or header ``X-CSRF-Token``);
- nobody: ``/healthz``, ``/login``, ``POST /api/v1/enroll`` (with a fleet key).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import json
import math
import secrets
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote, unquote, urlencode
from typing import Any

import structlog
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.exc import DataError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from agentd.hub import fleet, fleetview
from agentd.hub import load as load_test
from agentd.hub.agents import Agents
from agentd.hub.db import is_postgres, make_engine, redact_url
from agentd.hub.security import HashingBusy, LoginLimiter, RateLimiter, same
from agentd.hub.store import PC, SAFE_ID, HubInputError, Store, network_of, parse_report
from agentd.model import Report

log = structlog.get_logger("agentd.hub")

HERE = Path(__file__).parent
SESSION_COOKIE = "agentd_hub_session"
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PROFILES = ("preshift", "full")
RUN_ANSWER_S = 30.0
"""A run the PC did not start answering within this is shown as failed."""
RUN_IDLE_S = 120.0
"""A running run with no progress from the PC for this long has timed out (the longest check's deadline is shorter)."""
RUN_OFFLINE = "its connection to the hub closed during the check"
RUN_STATES = {"requested": "requested", "sent": "sent to the PC", "running": "running", "done": "done", "failed": "failed",
              "offline": "PC went offline", "timed_out": "timed out"}
"""A run's states as the PC page names them."""


@dataclass(frozen=True)
class HubSettings:
    database: str
    node: str = field(default_factory=lambda: f"{socket.gethostname()}-{secrets.token_hex(4)}")
    max_report_bytes: int = 2 * 2**20
    ingest_per_s: float = 1.0
    ingest_burst: float = 60.0
    login_per_s: float = 0.2  # wrong passwords per (address, account)
    login_burst: float = 10.0
    login_address_factor: float = 10.0  # the per-address backstop: this many times the per-account budget
    hash_workers: int = 2  # argon2 runs at once (threads; the event loop never hashes)
    presence_s: float = 20.0  # how often a process marks its PCs present; 3 rounds missed: not connected
    socket_queue: int = 100
    """PC sockets being admitted (token looked up, connection recorded) at once; one more
    is answered HTTP 503 with Retry-After at once, instead of waiting past its open
    timeout. The lookups and the writes are batched (one query and one commit per batch,
    one pool connection each), so a storm never takes the pool."""
    site_window_s: float = 1800.0
    site_min_pcs: int = 3
    site_min_share: float = 0.6
    sites: tuple[fleet.Site, ...] = ()
    """``[hub] sites``: named sites and their public prefixes (else a site is a /24 or /48)."""
    public_url: str | None = None
    """``[hub] url``: the hub's address as people open it, for links in alerts."""
    alerts: Any = None
    """An :class:`agentd.hub.alerts.AlertConfig` (``[alerts]``), or None: no alerts."""
    revocation_sweep_s: float = 2.0


class Hub:
    """Everything one hub process holds: the engine, the PCs' sockets, the limits."""

    def __init__(self, settings: HubSettings) -> None:
        self.settings = settings
        self.engine = make_engine(settings.database)
        self.store = Store(self.engine, hash_workers=settings.hash_workers)
        dsn = None
        if is_postgres(settings.database):
            dsn = "postgresql://" + settings.database.split("://", 1)[1]
        self.agents = Agents(self.store, settings.node, pg_dsn=dsn)
        self.ingest_limit = RateLimiter(settings.ingest_per_s, settings.ingest_burst)
        self.login_limit = LoginLimiter(
            RateLimiter(settings.login_per_s, settings.login_burst),
            RateLimiter(settings.login_per_s * settings.login_address_factor, settings.login_burst * settings.login_address_factor),
        )
        self.enroll_limit = RateLimiter(settings.login_per_s * 5, settings.login_burst * 5)
        self.fleet_rules = fleet.manager()
        self.site_map = fleet.SiteMap(settings.sites)
        self.templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True))
        self.templates.filters["when"] = _when
        self.templates.filters["iso"] = _iso
        self.templates.filters["ago"] = fleetview.ago
        self._sweeper: asyncio.Task | None = None
        self._run_sweeper: asyncio.Task | None = None
        self.alerter: Any = None
        self._presence: asyncio.Task | None = None
        self.door = Door(settings.socket_queue)

    async def startup(self) -> None:
        await self.agents.start()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_revoked())
        self._run_sweeper = asyncio.get_running_loop().create_task(self._sweep_runs())
        self._presence = asyncio.get_running_loop().create_task(self._keep_presence())
        if self.settings.alerts is not None:
            from agentd.hub.alerts import Alerter

            self.alerter = Alerter(self.settings.alerts, self.settings.public_url or "", self._alert_inputs)
            self.alerter.start()
        log.info("hub ready", node=self.settings.node, database=redact_url(self.settings.database))

    async def shutdown(self) -> None:
        for task in (self._sweeper, self._run_sweeper, self._presence):
            if task is not None:
                task.cancel()
        if self.alerter is not None:
            await self.alerter.stop()
        await self.agents.stop()
        self.store.hashing.close()
        await self.engine.dispose()

    async def _keep_presence(self) -> None:
        """A process that crashed cannot say its PCs went away: every live process marks
        its own PCs seen each round, and clears the "connected" mark of PCs whose process
        has not done so for three rounds."""
        while True:
            await asyncio.sleep(self.settings.presence_s)
            try:
                cleared = await self.store.present(self.settings.node, set(self.agents.sockets), 3 * self.settings.presence_s)
                if cleared:
                    log.info("PCs of a hub process that stopped are no longer shown as connected", pcs=cleared)
            except Exception as exc:  # the database away for a moment: next round
                log.warning("presence round failed", error=type(exc).__name__)

    async def _sweep_revoked(self) -> None:
        """A PC revoked (or removed) by `agentd hub pc` in another process loses its
        socket too: one query per round for all sockets, not one per PC."""
        while True:
            await asyncio.sleep(self.settings.revocation_sweep_s)
            try:
                connected = list(self.agents.sockets)
                if not connected:
                    continue
                gone = await self.store.revoked_ids() & set(connected)
                if len(connected) <= 1000:  # removed PCs (no row any more) too, for a process of modest size
                    gone |= set(connected) - await self.store.present_ids(connected)
                for install_id in gone:
                    log.info("closing a revoked PC's connection", install_id=install_id)
                    await self.agents.close(install_id)
            except Exception as exc:  # the database away for a moment: try again next round
                log.warning("revocation sweep failed", error=type(exc).__name__)

    async def _alert_inputs(self) -> tuple[list[fleet.FleetVerdict], list[dict[str, Any]], list[dict[str, Any]]]:
        """What the alert rules judge: the site verdicts, the per-site counts and the PCs
        whose latest report is a pre-shift check that says not ready."""
        rows = await self.store.fleet_rows()
        fleetview.annotate(rows, self.site_map)
        not_ready = [r for r in rows if r["status"] == "not_ready" and r["profile"] == "preshift"]
        return await self.site_verdicts(), fleetview.site_counts(rows, limit=10_000), not_ready

    async def _sweep_runs(self) -> None:
        """Runs end even when nobody watches them: unanswered ones fail, silent ones time out
        (a hub process that died with a PC's socket leaves its runs to this)."""
        while True:
            await asyncio.sleep(5.0)
            try:
                await self.store.expire_runs(answer_s=RUN_ANSWER_S, idle_s=RUN_IDLE_S)
            except Exception as exc:
                log.warning("run sweep failed", error=type(exc).__name__)

    # -- fleet correlation ----------------------------------------------------------------------

    async def site_verdicts(self) -> list[fleet.FleetVerdict]:
        s = self.settings
        rows = await self.store.recent_reports(time.time() - s.site_window_s)
        window = fleet.window_from_rows(rows, s.site_window_s, sites=self.site_map, min_pcs=s.site_min_pcs, min_share=s.site_min_share)
        return fleet.correlate(self.fleet_rules, window)


# -- helpers ---------------------------------------------------------------------------------------


def _moment(ts: Any) -> datetime | None:
    if ts is None:
        return None
    try:
        if isinstance(ts, str):
            return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(timezone.utc)
        return datetime.fromtimestamp(float(ts), timezone.utc)
    except (ValueError, OverflowError, OSError):
        return None


def _when(ts: Any) -> str:
    """UTC to the second (the page's script shows it in the viewer's own time zone)."""
    moment = _moment(ts)
    if moment is None:
        return "-" if ts is None else str(ts)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(ts: Any) -> str:
    """For ``<time datetime=...>``."""
    moment = _moment(ts)
    return "" if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def error(message: str, status: int = 400, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def client_ip(request: Request | WebSocket) -> str:
    return request.client.host if request.client else "-"


def bearer(request: Request | WebSocket) -> str | None:
    value = request.headers.get("authorization", "")
    if value[:7].lower() == "bearer ":
        return value[7:].strip()
    return None


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise HubInputError("bad Content-Length") from None
        if size > limit:  # 413 (the PC gives up on it), not 400
            raise HubInputError(f"report too large: {size} bytes, the limit is {limit}", 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HubInputError(f"report too large: more than {limit} bytes", 413)
    return bytes(body)


@dataclass(frozen=True)
class Helpdesk:
    user: str
    csrf: str | None  # None: HTTP Basic (no cookie, so no CSRF to guard against)


async def helpdesk(request: Request) -> Helpdesk | None:
    hub: Hub = request.app.state.hub
    sid = request.cookies.get(SESSION_COOKIE)
    if sid:
        found = await hub.store.session(sid)
        if found:
            return Helpdesk(found[0], found[1])
    value = request.headers.get("authorization", "")
    if value[:6].lower() == "basic ":
        try:
            name, _, password = base64.b64decode(value[6:].strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        if await hub.store.remembered_password(name, password):  # verified lately: no hash, nothing charged
            return Helpdesk(name, None)
        ip = client_ip(request)
        if not hub.login_limit.charge(ip, name):  # charged before the hash runs
            request.state.login_limited = hub.login_limit.retry_after_s(ip, name)
            return None
        try:
            ok = await hub.store.check_password(name, password)
        except HashingBusy:
            hub.login_limit.refund(ip, name)  # not tried: not counted
            request.state.login_limited = 5
            return None
        if ok:
            hub.login_limit.refund(ip, name)  # only failures use up the budget
            return Helpdesk(name, None)
    return None


def csrf_ok(request: Request, who: Helpdesk, form_token: str | None = None) -> bool:
    if who.csrf is None:
        return True
    given = form_token or request.headers.get("x-csrf-token") or ""
    return bool(given) and same(given, who.csrf)


def page(hub: Hub, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = hub.templates.get_template(name).render(**context)
    return HTMLResponse(html, status_code=status, headers={"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff",
                                                           "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"})


# -- PCs ------------------------------------------------------------------------------------------


async def enroll(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    if not hub.enroll_limit.allow(client_ip(request)):
        return error("too many enrollment attempts; try again later", 429, **{"Retry-After": "10"})
    key = bearer(request)
    if not key:
        return error("enrollment needs the fleet key as a Bearer token", 401)
    try:
        data = json.loads(await read_limited(request, 16384))
        if not isinstance(data, dict):
            raise ValueError
    except (ValueError, UnicodeDecodeError):
        return error("body must be a JSON object {install_id, hostname, user}")
    except HubInputError as exc:
        return error(str(exc), exc.status)
    install_id = str(data.get("install_id") or "")
    current = data.get("token") if isinstance(data.get("token"), str) else None
    try:
        done = await hub.store.enroll(key, install_id, str(data.get("hostname") or ""), data.get("user") if isinstance(data.get("user"), str) else None,
                                      current_token=current, client=client_ip(request))
    except HubInputError as exc:
        (log.warning if exc.status == 409 else log.info)("enrollment refused", install_id=install_id[:100] if SAFE_ID.match(install_id) else None,
                                                         reason=str(exc), client=client_ip(request))
        return error(str(exc), exc.status)
    try:
        if isinstance(data.get("site"), str):
            await hub.store.set_site_label(install_id, site_label(data["site"], encoded=False))
    except HubInputError as exc:  # enrolled all the same: the label comes again with every report
        log.info("site label refused", install_id=install_id, reason=str(exc))
    (log.info if done.outcome == "enrolled" else log.warning)("PC " + done.outcome, install_id=install_id, how=done.note, client=client_ip(request))
    if done.outcome != "enrolled":
        await hub.agents.close(install_id, code=4001)  # the old token's socket goes too
    return JSONResponse({"install_id": install_id, "token": done.token}, status_code=201)


SITE_HEADER = "agentd-site"
"""The site a PC names in its config (``[hub] site``), percent-encoded, with each report."""


def site_label(value: str | None, *, encoded: bool = True) -> str | None:
    """A PC's site label as sent (None: not sent; "": cleared). HubInputError names a bad one."""
    if value is None:
        return None
    try:
        text = (unquote(value, errors="strict") if encoded else value).strip()
    except UnicodeDecodeError:
        raise HubInputError("the site label (Agentd-Site) must be percent-encoded UTF-8", 422) from None
    if len(text) > 100 or any(ch < " " or ch == "\x7f" for ch in text):
        raise HubInputError("the site label (Agentd-Site, the PC's [hub] site) must be at most 100 printable characters", 422)
    return text


async def pc_from(request: Request | WebSocket) -> PC | None:
    token = bearer(request)
    return await request.app.state.hub.store.pc_for_token(token) if token else None


async def post_report(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    pc = await pc_from(request)
    if pc is None:
        if bearer(request) is None and await helpdesk(request) is not None:
            return error("only PCs post reports (with their install token)", 403)
        return error("a valid install token is needed (Authorization: Bearer ...)", 401)
    if not hub.ingest_limit.allow(pc.install_id):
        return error("too many reports from this PC; try again later", 429, **{"Retry-After": str(hub.ingest_limit.retry_after_s(pc.install_id))})
    key = request.headers.get("idempotency-key", "")
    if not key:
        return error("the Idempotency-Key header (the report id) is missing")
    try:
        report, body = parse_report(await read_limited(request, hub.settings.max_report_bytes), max_bytes=hub.settings.max_report_bytes)
    except HubInputError as exc:
        log.info("report refused", install_id=pc.install_id, reason=str(exc))
        return error(str(exc), exc.status)
    if key != report.id:
        return error(f"Idempotency-Key must be the report id ({report.id})", 422)
    if report.agent.install_id != pc.install_id:
        return error("a PC may post only its own reports (agent.install_id differs from the token's PC)", 403)
    try:
        site = site_label(request.headers.get(SITE_HEADER))
        stored = await hub.store.store_report(pc, report, body, client_ip(request), site_label=site)
    except HubInputError as exc:
        return error(str(exc), exc.status)
    log.info("report received", install_id=pc.install_id, report=report.id, stored=stored)
    return JSONResponse({"id": report.id, "stored": stored}, status_code=201 if stored else 200)


async def agent_socket(ws: WebSocket) -> None:
    hub: Hub = ws.app.state.hub
    if hub.agents.stopping:
        await ws.close(code=1012)  # this process is stopping: the PC tries again (another process, or this one restarted)
        return
    if not hub.door.enter():  # a reconnect storm: the PC comes back later instead of timing out in a queue
        await refuse_busy(ws, hub.door.retry_after_s())
        return
    attached = False
    try:
        pc = await pc_from(ws)  # batched with the other PCs' lookups (Store._token_row)
        if pc is None:
            await ws.close(code=1008)  # before accept: the client sees HTTP 403
            return
        await ws.accept()
        try:
            # recorded first: a PC whose connection could not be recorded is not held (nor counted)
            await hub.agents.record_connected(pc.install_id, client_ip(ws))
            await hub.agents.attach(pc.install_id, ws)
            attached = True
        except Exception as exc:
            log.warning("PC connection not recorded; closing it (the PC reconnects)", install_id=pc.install_id, error=type(exc).__name__)
            with contextlib.suppress(Exception):
                await ws.close(code=1011)
            return
        finally:
            if not attached:
                hub.agents.detach(pc.install_id, ws)
    finally:
        hub.door.leave(admitted=attached)
    log.info("PC connected", install_id=pc.install_id)
    try:
        while True:
            text = await ws.receive_text()
            if len(text) > 256 * 1024:
                continue
            try:
                message = json.loads(text)
            except ValueError:
                continue
            if isinstance(message, dict):
                await hub.agents.handle(pc.install_id, message)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        if hub.agents.detach(pc.install_id, ws):
            stopping = hub.agents.stopping  # then close_all marked every PC at once
            if not stopping:
                with contextlib.suppress(Exception):  # if this fails, the presence rounds clear the mark
                    await hub.store.disconnected(pc.install_id, hub.settings.node)
            if not stopping or pc.install_id in hub.agents.runs.values():
                await _end_runs_offline(hub, pc.install_id)
        log.info("PC disconnected", install_id=pc.install_id)


class Door:
    """How many PC sockets are being admitted at once, and when a refused one should come
    back: the PCs refused lately plus those inside, at the rate PCs got in lately (a
    restarted hub with 5,000 PCs knocking tells them to spread over the seconds it needs,
    not to come back all together in one)."""

    WINDOW_S = 10.0

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.inside = 0
        self.refused = 0  # in all, for the logs and tests
        self._refused: collections.deque[float] = collections.deque(maxlen=100_000)
        self._admitted: collections.deque[float] = collections.deque(maxlen=100_000)

    def enter(self) -> bool:
        if self.inside >= self.bound:
            self.refused += 1
            self._refused.append(time.monotonic())
            return False
        self.inside += 1
        return True

    def leave(self, *, admitted: bool) -> None:
        self.inside -= 1
        if admitted:
            self._admitted.append(time.monotonic())

    def retry_after_s(self) -> int:
        """Seconds for the PCs refused lately (and those inside) to get in at the rate PCs
        got in lately: a PC waits between this and twice this (``reconnect_delay_s``), so
        they come back about as fast as they are let in."""
        now = time.monotonic()
        for q in (self._refused, self._admitted):
            while q and q[0] < now - self.WINDOW_S:
                q.popleft()
        if len(self._admitted) >= 20:  # PCs per second while PCs were getting in
            rate = len(self._admitted) / max(1.0, now - self._admitted[0])
        else:
            rate = 200.0  # no history yet (a hub just started): a modest guess
        return max(1, min(30, math.ceil((len(self._refused) + self.inside) / rate)))


async def refuse_busy(ws: WebSocket, retry_after_s: int) -> None:
    """HTTP 503 with Retry-After before the handshake (the PC's client sees the status and
    waits at least that long, within its backoff's bound)."""
    response = JSONResponse({"error": "the hub is admitting many PCs; try again later"}, status_code=503,
                            headers={"Retry-After": str(retry_after_s)})
    try:
        await ws.send_denial_response(response)
    except (RuntimeError, AttributeError):  # a server without the denial extension: close (1013, try again later)
        with contextlib.suppress(Exception):
            await ws.close(code=1013)


async def _end_runs_offline(hub: Hub, install_id: str) -> None:
    """The PC's socket closed (the last one it had here): its runs in progress end as offline."""
    for run_id in [r for r, owner in hub.agents.runs.items() if owner == install_id]:
        hub.agents.runs.pop(run_id, None)
    try:
        ended = await hub.store.end_runs_of(install_id, "offline", RUN_OFFLINE)
    except Exception as exc:  # the database away: the runs time out instead
        log.warning("runs not ended on disconnect", install_id=install_id, error=type(exc).__name__)
        return
    if ended:
        log.info("runs ended: PC offline", install_id=install_id, runs=ended)


# -- the JSON API ---------------------------------------------------------------------------------


def needs_user(handler: Any) -> Any:
    async def wrapped(request: Request) -> Response:
        who = await helpdesk(request)
        if who is None:
            limited = getattr(request.state, "login_limited", None)
            if limited:
                return error("too many wrong passwords; try again later", 429, **{"Retry-After": str(limited)})
            if bearer(request):
                return error("install tokens cannot read the hub; use a hub account", 403)
            return error("log in: a hub account as HTTP Basic or a session cookie", 401, **{"WWW-Authenticate": 'Basic realm="agentd hub"'})
        request.state.who = who
        return await handler(request)

    return wrapped


async def _sites_by_pc(hub: Hub) -> tuple[list[fleet.FleetVerdict], dict[str, list[fleet.FleetVerdict]]]:
    verdicts = await hub.site_verdicts()
    by_pc: dict[str, list[fleet.FleetVerdict]] = {}
    for v in verdicts:
        for install_id in v.install_ids:
            by_pc.setdefault(install_id, []).append(v)
    return verdicts, by_pc


async def _fleet_view(hub: Hub, query: fleetview.FleetQuery) -> dict[str, Any]:
    """One answer for the fleet page and ``GET /api/v1/pcs``: this page's rows and the counts."""
    site_verdicts, by_pc = await _sites_by_pc(hub)
    rows = await hub.store.fleet_rows()
    fleetview.annotate(rows, hub.site_map)
    conversation_pcs = await hub.store.install_ids_for_conversation(query.text) if query.text else set()
    kept = fleetview.select(rows, query, by_pc, conversation_pcs=conversation_pcs)
    page_rows, pages = fleetview.page_of(kept, query)
    shown = fleetview.shape(page_rows, by_pc)
    fleetview.with_preshift(shown, await hub.store.preshift_rows([r["install_id"] for r in shown]))
    return {"rows": shown, "total": len(kept), "pages": pages, "counts": fleetview.counts(rows), "sites": site_verdicts,
            "site_counts": fleetview.site_counts(rows), "all_rows": rows}


@needs_user
async def api_pcs(request: Request) -> Response:
    """``GET /api/v1/pcs``: the fleet, paged (``page``, ``per_page`` up to 500), filtered and sorted like the page."""
    hub: Hub = request.app.state.hub
    try:
        query = fleetview.FleetQuery.parse(request.query_params, per_page=100)
    except fleetview.FleetQueryError as exc:
        return error(str(exc), 422)
    view = await _fleet_view(hub, query)
    return JSONResponse({"pcs": view["rows"], "total": view["total"], "page": min(query.page, view["pages"]), "pages": view["pages"],
                         "per_page": query.per_page, "counts": view["counts"], "sites": view["site_counts"]})


def _report_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("id", "install_id", "created", "profile", "ready", "top_verdict", "conversation_id",
                                "hostname", "agent_user", "public_ip", "loss_pct", "rtt_ms", "mos")} | {
        "failed_checks": [c for c in (row["failed_checks"] or "").split(",") if c]}


@needs_user
async def api_pc_reports(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    rows = await hub.store.report_rows(request.path_params["install_id"])
    return JSONResponse({"reports": [_report_row(r) for r in rows]})


@needs_user
async def api_start_check(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    who: Helpdesk = request.state.who
    if not csrf_ok(request, who):
        return error("missing or wrong CSRF token", 403)
    install_id = request.path_params["install_id"]
    try:
        data = json.loads(await read_limited(request, 4096) or b"{}")
    except (ValueError, HubInputError):
        return error('body must be JSON: {"profile": "preshift"|"full"}')
    profile = data.get("profile", "preshift") if isinstance(data, dict) else None
    if profile not in PROFILES:
        return error('profile must be "preshift" or "full"', 422)
    pc = await hub.store.pc_row(install_id)
    if pc is None or pc["revoked"] is not None:
        return error(f"no enrolled PC {install_id!r}", 404)
    if not pc["connected_node"]:
        return error("the PC is not connected to the hub now: start agentd on it (or wait until it reconnects), then try again", 409)
    run_id = await hub.store.new_run(install_id, profile, who.user)
    state = await hub.agents.request_check(run_id, install_id, profile)
    log.info("check requested", run=run_id, install_id=install_id, user=who.user, state=state)
    return JSONResponse({"run_id": run_id, "state": state}, status_code=202)


@needs_user
async def api_run(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    try:
        after = max(0, int(request.query_params.get("after", "0")))
    except ValueError:
        return error("after must be a progress sequence number (an integer)")
    await hub.store.expire_runs(answer_s=RUN_ANSWER_S, idle_s=RUN_IDLE_S)
    run = await hub.store.run(request.path_params["run_id"], after=after)
    if run is None:
        return error("no such run", 404)
    return JSONResponse(run)


@needs_user
async def api_report(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    found = await hub.store.report_body(request.path_params["report_id"])
    if found is None:
        return error("no such report", 404)
    data = json.loads(found[1])
    sites = [v.to_dict() for v in await hub.site_verdicts() if data.get("id") in v.reports]
    return JSONResponse({"report": data, "site_verdicts": sites})


async def healthz(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    try:
        async with hub.engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")
    except Exception as exc:
        return JSONResponse({"ok": False, "error": f"database: {type(exc).__name__}"}, status_code=503)
    return JSONResponse({"ok": True, "node": hub.settings.node, "connected_pcs": len(hub.agents.sockets)})


# -- pages --------------------------------------------------------------------------------------


async def login_page(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    if request.method == "GET":
        return page(hub, "login.html", error=None, next=local_path(request.query_params.get("next")))
    ip = client_ip(request)
    form = await request.form()
    target = local_path(str(form.get("next") or ""))
    name, password = str(form.get("name") or ""), str(form.get("password") or "")
    if not hub.login_limit.charge(ip, name):  # before the hash; a right password gives it back
        log.info("login rate-limited", user=name[:100].replace("\x00", "?"), client=ip)
        return page(hub, "login.html", 429, error="Too many wrong attempts; wait a minute.", next=target)
    try:
        ok = await hub.store.check_password(name, password)
    except HashingBusy:
        hub.login_limit.refund(ip, name)
        return page(hub, "login.html", 429, error="The hub is busy checking passwords; try again in a few seconds.", next=target)
    if not ok:
        log.info("login refused", user=name[:100].replace("\x00", "?"), client=ip)
        return page(hub, "login.html", 401, error="Wrong name or password.", next=target)
    hub.login_limit.refund(ip, name)
    sid, _ = await hub.store.new_session(name)
    log.info("login", user=name)
    response = RedirectResponse(target or "/", status_code=303)
    # Lax: a link from a ticket or from Genesys (another site) arrives logged in; every change is a POST with a CSRF token
    response.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="lax", secure=request.url.scheme == "https", max_age=12 * 3600)
    return response


def local_path(value: str | None) -> str:
    """``value`` when it is a path on this hub (``/reports/...?x=y``), else "": a login never
    sends anyone to another site (``//evil``, ``/\\evil``, ``https://...``, control characters)."""
    if not value or len(value) > 2000 or not value.startswith("/") or value.startswith(("//", "/\\")):
        return ""
    if any(ord(c) < 0x20 or c in "\\\x7f" for c in value):
        return ""
    return value


async def logout(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    who = await helpdesk(request)
    form = await request.form()
    if who is None or not csrf_ok(request, who, str(form.get("csrf") or "")):
        return error("missing or wrong CSRF token", 403)
    sid = request.cookies.get(SESSION_COOKIE)
    if sid:
        await hub.store.end_session(sid)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


def needs_login(handler: Any) -> Any:
    async def wrapped(request: Request) -> Response:
        who = await helpdesk(request)
        if who is None:
            here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse("/login" + (f"?next={quote(here, safe='')}" if here != "/" else ""), status_code=303)
        request.state.who = who
        return await handler(request)

    return wrapped


@needs_login
async def fleet_page(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    began = time.perf_counter()
    try:
        query = fleetview.FleetQuery.parse(request.query_params)
    except fleetview.FleetQueryError as exc:
        return page(hub, "missing.html", 422, who=request.state.who, what=f"the fleet ({exc})")
    view = await _fleet_view(hub, query)
    sentences = {r["latest"]["id"]: r["latest"]["sentence"] for r in view["rows"] if r["latest"] and r["latest"]["sentence"]}
    rows = view.pop("all_rows")
    verdict_codes = sorted({r["top_verdict"] for r in rows if r["top_verdict"]} | {v.code for v in view["sites"]})
    site_names = sorted({r["site"] for r in rows if r["site"]})
    results = await hub.store.search(query.text) if query.text else None
    now = time.time()
    answer = page(hub, "fleet.html", who=request.state.who, view=view, query=query, sentences=sentences, verdict_codes=verdict_codes,
                  site_names=site_names, results=results, search=query.text, now=now, fv=fleetview, urlencode=urlencode,
                  refresh_s=30)
    answer.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - began) * 1000:.1f}"  # what benchmarks/hub_fleet.py reads
    return answer


@needs_login
async def pc_page(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    install_id = request.path_params["install_id"]
    pc = await hub.store.pc_row(install_id)
    if pc is None:
        return page(hub, "missing.html", 404, who=request.state.who, what=f"PC {install_id}")
    rows = await hub.store.report_rows(install_id)
    await hub.store.expire_runs(answer_s=RUN_ANSWER_S, idle_s=RUN_IDLE_S)
    pc_runs = await hub.store.runs_of(install_id)
    active = next((r["id"] for r in pc_runs if not r["ended"]), "")
    return page(hub, "pc.html", who=request.state.who, pc=pc, rows=rows, chart=history_chart(rows), profiles=PROFILES,
                runs=pc_runs, active_run=active, run_states=RUN_STATES,
                enrollments=await hub.store.enrollment_events(install_id))


@needs_login
async def report_page(request: Request) -> Response:
    from agentd.report_html import CSP, render_html

    hub: Hub = request.app.state.hub
    found = await hub.store.report_body(request.path_params["report_id"])
    if found is None:
        return page(hub, "missing.html", 404, who=request.state.who, what=f"report {request.path_params['report_id']}")
    report = Report.from_json(found[1])
    sites = [v for v in await hub.site_verdicts() if report.id in v.reports]
    if sites:  # the PC's own finding first, unless the site's names the same network cause
        report = report.with_verdicts(fleet.own_finding_first(report.verdicts, sites))
    return HTMLResponse(render_html(report), headers={"Content-Security-Policy": CSP + "; frame-ancestors 'self'",
                                                      "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})


def history_chart(rows: list[dict[str, Any]]) -> str:
    """Loss, RTT and MOS of a PC's reports over time, as inline SVG (no fetches)."""
    from agentd.report_html import Axis, Chart, Series

    points = sorted((r["created_ts"], r) for r in rows)
    if not points:
        return ""
    xs = [p[0] for p in points]

    def series(key: str) -> list[tuple[float, float | None]]:
        return [(x, r[key] if r[key] is not None and math.isfinite(r[key]) else None) for x, r in points]

    span = (xs[0] - 60, xs[-1] + 60)
    chart = Chart(
        "chart-history", "loss, RTT and MOS per report", span,
        lambda x: datetime.fromtimestamp(x, timezone.utc).strftime("%m-%d %H:%M"),
        Axis("RTT ms / loss %"), Axis("MOS", maximum=5.0),
        [Series("RTT ms", "#1f77b4", series("rtt_ms")), Series("loss %", "#d62728", series("loss_pct")),
         Series("MOS", "#2ca02c", series("mos"), axis="right")],
    )
    return chart.svg()


async def static_js(request: Request) -> Response:
    return Response((HERE / "templates" / "hub.js").read_text(encoding="utf-8"), media_type="text/javascript",
                    headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


# -- the application ------------------------------------------------------------------------------


def create_app(settings: HubSettings) -> Starlette:
    hub = Hub(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await hub.startup()
        try:
            yield
        finally:
            await hub.shutdown()

    app = Starlette(
        middleware=[Middleware(RefuseNul)],
        routes=[
            Route("/healthz", healthz),
            Route("/api/v1/enroll", enroll, methods=["POST"]),
            Route("/api/v1/reports", post_report, methods=["POST"]),
            WebSocketRoute("/api/v1/agent", agent_socket),
            Route("/api/v1/pcs", api_pcs),
            Route("/api/v1/pcs/{install_id}/reports", api_pc_reports),
            Route("/api/v1/pcs/{install_id}/checks", api_start_check, methods=["POST"]),
            Route("/api/v1/runs/{run_id}", api_run),
            Route("/api/v1/reports/{report_id}", api_report),
            Route("/login", login_page, methods=["GET", "POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/", fleet_page),
            Route("/pcs/{install_id}", pc_page),
            Route("/reports/{report_id}", report_page),
            Route("/static/hub.js", static_js),
            *load_test.routes(),  # the path.load check's load target (agentd/hub/load.py)
        ],
        lifespan=lifespan,
        exception_handlers={DataError: _refused_data, Exception: _internal_error},
    )
    app.state.hub = hub
    app.state.load_service = load_test.service()
    return app


class RefuseNul:
    """A NUL character in the path or query string (``%00``) is refused with 400 before
    any handler runs: PostgreSQL cannot take one as text, and no id, search or filter
    of the hub has one."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and ("\x00" in scope.get("path", "") or b"%00" in scope.get("query_string", b"")):
            if scope["type"] == "http":
                await error("a NUL character (%00) in the address", 400)(scope, receive, send)
            else:
                await send({"type": "websocket.close", "code": 1008})
            return
        await self.app(scope, receive, send)


async def _refused_data(request: Request, exc: Exception) -> Response:
    """The database refused a value (a character it cannot store, a number out of range):
    the client's input, so a 4xx with one line, not a 500 with a traceback."""
    log.warning("database refused a value from a request", path=request.url.path[:200].replace("\x00", "?"), error=type(exc).__name__)
    return error("the hub's database cannot store a value in this request (a NUL character, or a value out of range)", 422)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("request failed", path=request.url.path, error=f"{type(exc).__name__}")
    return error("internal error in the hub (logged)", 500)


__all__ = ["HubSettings", "create_app", "SAFE_ID", "PlainTextResponse"]
