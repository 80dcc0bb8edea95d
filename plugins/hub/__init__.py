"""The PC's side of the helpdesk hub: ``[hub]``. See README.md.

- Enrollment: on first contact the fleet key (``enrollment_key``, a secret reference) is
  traded for this PC's own install token, kept owner-only in the state folder
  (``hub-token.json``, mode 0600). The hub can revoke it per PC.
- The hub as a sink (``hub``): reports go through the spool like every sink and are
  POSTed to ``/api/v1/reports`` with ``Idempotency-Key: <report id>``, so a report sent
  again after a crash is stored once.
- The daemon keeps one outbound WebSocket, ``GET /api/v1/agent`` with the install token
  as Bearer, reconnecting with exponential backoff and jitter. A check request from the
  hub runs through the daemon's own job path (one run at a time, like the control
  socket's), its progress streamed back; the report is delivered through the spool.
  Proxies: the WebSocket and the HTTP calls honour ``HTTPS_PROXY`` / ``HTTP_PROXY`` /
  ``NO_PROXY`` from the environment (websockets' and httpx's proxy support).

This plugin never imports ``agentd.hub`` (the server): they share only the wire format.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import structlog

from agentd import hookimpl, paths, redact
from agentd.config import Config, ConfigSection, Secret
from agentd.errors import ConfigError, DeliveryError
from agentd.fileio import write_atomic
from agentd.model import Report
from agentd.sinks import SINK_STATUSES, refused_for_good
from agentd.tls import TrustStoreError, client_context, http_verify

log = structlog.get_logger("agentd.hub.client")

TOKEN_FILE = "hub-token.json"
PROFILES = ("preshift", "full")


@dataclass(frozen=True)
class HubClientSettings:
    """``[hub]``: this PC's link to the helpdesk hub (present = enabled)."""

    url: str = field(metadata={"help": "the hub's base URL, https://hub.example:8750"})
    enrollment_key: Secret | None = field(default=None, metadata={"help": "the fleet enrollment key, traded once for this PC's own install token"})
    ca_file: Path | None = field(default=None, metadata={"help": "CA bundle for a hub with a private CA"})
    connect: bool = field(default=True, metadata={"help": "keep the WebSocket open so helpdesk can start checks on this PC"})
    timeout_s: float = field(default=10.0, metadata={"help": "deadline of one request or WebSocket opening", "min": 0.5, "max": 300})
    reconnect_min_s: float = field(default=1.0, metadata={"help": "first wait before reconnecting; doubles, with jitter", "min": 0.05, "max": 600})
    reconnect_max_s: float = field(default=60.0, metadata={"help": "longest wait between reconnects", "min": 0.1, "max": 3600})
    genesys_attributes: bool = field(default=False, metadata={"help": "also write an incident report's summary (top verdict, report id, hub link) onto the agent's call participant in Genesys Cloud"})
    site: str = field(default="", metadata={"help": "this PC's site as the hub names it (\"Lisbon\"): sent with each report and preferred over the hub's [hub] sites prefixes; empty: the hub places the PC by its address"})
    sites: dict[str, tuple[str, ...]] = field(default_factory=dict, metadata={"help": "on the hub server (agentd hub serve): site names and the public prefixes their PCs come from, {Lisbon = [\"198.51.100.0/24\"]}; a PC elsewhere is placed by its /24 (IPv6: /48)"})


# -- the install token -------------------------------------------------------------------


def token_path() -> Path:
    return paths.state_dir() / TOKEN_FILE


def base_url(settings: HubClientSettings) -> str:
    return settings.url.rstrip("/")


def load_token(settings: HubClientSettings) -> str | None:
    try:
        data = json.loads(token_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("url") != base_url(settings) or data.get("install_id") != paths.install_id():
        return None  # another hub, or a copied state folder: enroll again
    token = data.get("token")
    if isinstance(token, str) and token:
        redact.register_secret(token)
        return token
    return None


def forget_token() -> None:
    with contextlib.suppress(FileNotFoundError):
        token_path().unlink()


def _verify(settings: HubClientSettings) -> Any:
    try:
        return http_verify(settings.ca_file)
    except TrustStoreError as exc:  # the environment's (SSL_CERT_FILE): the hub is unreachable until it is fixed
        raise DeliveryError(f"hub {base_url(settings)}: {exc}") from None


async def enroll(settings: HubClientSettings) -> str:
    """Trade the fleet key for this PC's install token, stored owner-only."""
    from agentd.app import agent_info

    if settings.enrollment_key is None:
        raise DeliveryError("not enrolled with the hub and no [hub] enrollment_key is configured", retryable=False)
    info = agent_info()
    try:
        async with httpx.AsyncClient(timeout=settings.timeout_s, verify=_verify(settings)) as client:
            response = await client.post(
                f"{base_url(settings)}/api/v1/enroll",
                json={"install_id": info.install_id, "hostname": info.hostname, "user": info.user, "site": settings.site},
                headers={"Authorization": f"Bearer {settings.enrollment_key.reveal()}"},
            )
    except httpx.HTTPError as exc:
        raise DeliveryError(f"hub {base_url(settings)} not reachable for enrollment: {type(exc).__name__}") from None
    if response.status_code != 201:
        raise DeliveryError(f"hub refused enrollment: HTTP {response.status_code} {_error_line(response)}",
                            # 409: enrolled already with a live token this PC lost; an administrator's
                            # allow-reenroll lets a later attempt through, so keep the report
                            retryable=response.status_code >= 500 or response.status_code in (409, 429))
    token = response.json().get("token")
    if not isinstance(token, str):
        raise DeliveryError("hub answered enrollment without a token")
    redact.register_secret(token)
    write_atomic(token_path(), json.dumps({"url": base_url(settings), "install_id": info.install_id, "token": token}), mode=0o600, durable=True)
    log.info("enrolled with the hub", hub=base_url(settings))
    return token


async def install_token(settings: HubClientSettings) -> str:
    """The stored token, else one enrollment. Enrollment holds a lock file in the state
    folder: the hub link and a spool flush starting at once (or the daemon and an
    ``agentd reports flush``) enroll once, and the second reads the token the first got
    (the hub refuses a second enrollment of a PC whose token is live)."""
    token = load_token(settings)
    if token:
        return token
    from agentd.osdeps import filelock

    path = token_path().with_name(TOKEN_FILE + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = asyncio.get_running_loop().time() + settings.timeout_s * 2
        while not filelock.try_lock(fd):
            if asyncio.get_running_loop().time() > deadline:
                raise DeliveryError("another agentd process is enrolling this PC with the hub; trying again later")
            await asyncio.sleep(0.05)
        try:
            return load_token(settings) or await enroll(settings)
        finally:
            filelock.unlock(fd)
    finally:
        os.close(fd)


def _error_line(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", ""))[:200]
    except ValueError:
        return response.reason_phrase


# -- the sink ---------------------------------------------------------------------------------


class HubSink:
    name = "hub"

    def __init__(self, settings: HubClientSettings) -> None:
        self.settings = settings

    async def deliver(self, report: Report, payload: bytes) -> None:
        token = await install_token(self.settings)
        url = f"{base_url(self.settings)}/api/v1/reports"
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": report.id, "Content-Type": "application/json",
                   "Agentd-Site": quote(self.settings.site.strip(), safe="")}  # always sent: "" clears a label the PC no longer has
        try:
            async with httpx.AsyncClient(timeout=self.settings.timeout_s, verify=_verify(self.settings)) as client:
                response = await client.post(url, content=payload, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"hub {base_url(self.settings)} did not take report {report.id}: {type(exc).__name__}") from None
        if response.status_code in (200, 201):
            return
        if response.status_code == 401:  # revoked or unknown token: a new enrollment may fix it (a revoked PC stays refused)
            forget_token()
        status = response.status_code
        retry = status in (401, 408, 429) or status >= 500
        # The hub's 403 on a report is about the report (another PC's install id), not this PC's token (that is 401).
        refused = refused_for_good(status, about_the_sink=SINK_STATUSES - {403})
        raise DeliveryError(f"hub refused report {report.id}: HTTP {status} {_error_line(response)}".strip(), retryable=retry, refused=refused)


class GenesysAttributesSink:
    """Findings where supervisors look: for an incident report, a compact summary on the
    agent's participant of the call (``PATCH .../participants/{id}/attributes``). Other
    reports need nothing written: acknowledged at once. Writing the same attributes
    again is harmless, so a retry after a crash stores them once in effect."""

    name = "genesys-attributes"

    def __init__(self, settings: HubClientSettings, genesys: Any) -> None:
        self.settings = settings
        self.genesys = genesys

    def attributes(self, report: Report) -> dict[str, str]:
        top = report.verdicts[0] if report.verdicts else None
        return {
            "agentd.verdict": top.code if top else "none",
            "agentd.ready": "true" if report.ready else "false",
            "agentd.report": report.id,
            "agentd.link": f"{base_url(self.settings)}/reports/{report.id}",
        }

    async def deliver(self, report: Report, payload: bytes) -> None:
        if not report.conversation_id:
            return
        from agentd.errors import GenesysError
        from agentd_plugins.genesys.client import GenesysClient, stored_user_id

        cid = report.conversation_id
        try:
            async with GenesysClient(self.genesys) as client:
                call = await client.get(f"/api/v2/conversations/calls/{cid}")
                agents = [p for p in (call or {}).get("participants", ()) if isinstance(p, dict) and p.get("purpose") == "agent"]
                user_id = getattr(self.genesys, "user_id", None) or stored_user_id(self.genesys)
                mine = [p for p in agents if user_id and p.get("userId") == user_id] or agents
                if not mine:
                    raise DeliveryError(f"conversation {cid} has no agent participant to annotate", refused=True)
                await client.patch(f"/api/v2/conversations/calls/{cid}/participants/{mine[-1]['id']}/attributes",
                                   {"attributes": self.attributes(report)})
        except GenesysError as exc:
            status = getattr(exc, "status", None)
            raise DeliveryError(f"Genesys did not take the summary of report {report.id}: {exc}",
                                retryable=status is None or status == 429 or status >= 500,
                                refused=status is not None and refused_for_good(status)) from None


# -- the WebSocket ------------------------------------------------------------------------------


def ws_url(settings: HubClientSettings) -> str:
    parts = urlsplit(base_url(settings))
    scheme = "wss" if parts.scheme == "https" else "ws"
    return parts._replace(scheme=scheme, path=parts.path.rstrip("/") + "/api/v1/agent").geturl()


def backoff_s(attempt: int, low: float, high: float) -> float:
    """Exponential with full jitter on the upper half, so a fleet does not reconnect in step."""
    ceiling = min(high, low * (2 ** min(attempt, 20)))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def retry_after_of(exc: BaseException) -> float | None:
    """The seconds of a refused WebSocket handshake's ``Retry-After`` (a hub admitting many
    PCs answers 503 with one), or None."""
    response = getattr(exc, "response", None)
    if getattr(response, "status_code", None) not in (429, 503):
        return None
    try:
        value = float(response.headers.get("Retry-After", ""))
    except (AttributeError, TypeError, ValueError):
        return None
    return value if 0 <= value < 86_400 else None


def reconnect_delay_s(attempt: int, low: float, high: float, retry_after: float | None = None) -> float:
    """The wait before the next connection attempt: the backoff, or longer when the hub
    asked for it (``Retry-After``, jittered up to twice that so the PCs it refused do not
    come back in one step), never more than the backoff's bound ``high``."""
    delay = backoff_s(attempt, low, high)
    if retry_after is not None:
        delay = max(delay, retry_after * random.uniform(1.0, 2.0))
    return min(high, delay)


class HubLink:
    """The daemon's connection to the hub, for as long as the daemon runs."""

    def __init__(self, daemon: Any, settings: HubClientSettings) -> None:
        self.daemon = daemon
        self.settings = settings
        self.connected = asyncio.Event()
        self.connects = 0
        self.task: asyncio.Task | None = None
        self._runs: set[asyncio.Task] = set()

    async def run_forever(self) -> None:
        import websockets

        attempt = 0
        while True:
            retry_after = None
            try:
                token = await install_token(self.settings)
                ssl = client_context(self.settings.ca_file) if ws_url(self.settings).startswith("wss") else None
                async with websockets.connect(
                    ws_url(self.settings), additional_headers={"Authorization": f"Bearer {token}"}, ssl=ssl,
                    open_timeout=self.settings.timeout_s, ping_interval=30, ping_timeout=30, max_size=2**20,
                ) as ws:
                    attempt = 0
                    self.connects += 1
                    self.connected.set()
                    log.info("connected to the hub", hub=base_url(self.settings))
                    from agentd.app import agent_info

                    info = agent_info()
                    await ws.send(json.dumps({"type": "hello", "hostname": info.hostname, "version": info.version}))
                    await self._serve(ws)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                status = getattr(getattr(exc, "response", None), "status_code", None)
                if status in (401, 403):
                    forget_token()  # enroll again next time (a revoked PC is refused there)
                retry_after = retry_after_of(exc)
                log.warning("hub connection lost; reconnecting", hub=base_url(self.settings),
                            error=redact.redact_text(f"{type(exc).__name__}: {exc}")[:200])
            finally:
                self.connected.clear()
            attempt += 1
            await asyncio.sleep(reconnect_delay_s(attempt, self.settings.reconnect_min_s, self.settings.reconnect_max_s, retry_after))

    async def _serve(self, ws: Any) -> None:
        async for raw in ws:
            try:
                message = json.loads(raw)
            except (ValueError, TypeError):
                continue
            if isinstance(message, dict) and message.get("type") == "check" and isinstance(message.get("run_id"), str):
                task = asyncio.ensure_future(self._check(ws, message["run_id"], message.get("profile")))
                self._runs.add(task)
                task.add_done_callback(self._runs.discard)

    async def _check(self, ws: Any, run_id: str, profile: Any) -> None:
        if profile not in PROFILES:
            await _send(ws, {"type": "failed", "run_id": run_id, "error": f"unknown profile {str(profile)[:20]!r}"})
            return
        from agentd.control import event_to_wire

        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        seq = 0

        def on_event(event: Any) -> None:
            nonlocal seq
            seq += 1
            queue.put_nowait({"type": "progress", "run_id": run_id, "seq": seq, "event": event_to_wire(event)})

        def on_delivered(summary: str) -> None:
            nonlocal seq
            seq += 1
            queue.put_nowait({"type": "progress", "run_id": run_id, "seq": seq, "event": {"event": "delivered", "summary": summary}})

        async def pump() -> None:
            while True:
                await _send(ws, await queue.get())

        sender = asyncio.ensure_future(pump())
        try:
            report = await self.daemon.run_check(profile, trigger="hub", on_event=on_event, upload=True, on_delivered=on_delivered)
            while not queue.empty():
                await _send(ws, queue.get_nowait())
            await _send(ws, {"type": "done", "run_id": run_id, "report_id": report.id, "ready": report.ready})
        except Exception as exc:
            log.error("hub check failed", run=run_id, error=f"{type(exc).__name__}: {exc}")
            await _send(ws, {"type": "failed", "run_id": run_id, "error": redact.redact_text(f"{type(exc).__name__}: {exc}")[:300]})
        finally:
            sender.cancel()


async def _send(ws: Any, message: dict[str, Any]) -> None:
    with contextlib.suppress(Exception):  # the hub went away: the run's report still goes through the spool
        await ws.send(json.dumps(message, default=str))


# -- hooks ------------------------------------------------------------------------------------


@hookimpl
def agentd_config_sections():
    return [ConfigSection("hub", HubClientSettings, "the helpdesk hub: enrollment, its WebSocket and the hub sink (present = enabled)", optional=True)]


@hookimpl
def agentd_configure(config: Config) -> None:
    settings: HubClientSettings | None = config.section("hub")
    if settings is None:
        return
    parts = urlsplit(settings.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"must be an http:// or https:// URL, got {settings.url!r}", file=str(config.path) if config.path else None, key="hub.url")
    if parts.username or parts.password:
        raise ConfigError("must not carry a user or password (use enrollment_key)", file=str(config.path) if config.path else None, key="hub.url")
    if len(settings.site.strip()) > 100 or any(ch < " " or ch == "\x7f" for ch in settings.site):
        raise ConfigError("must be at most 100 printable characters", file=str(config.path) if config.path else None, key="hub.site")
    if settings.reconnect_max_s < settings.reconnect_min_s:
        raise ConfigError("must not be below reconnect_min_s", file=str(config.path) if config.path else None, key="hub.reconnect_max_s")


@hookimpl
def agentd_collect_sinks(config: Config):
    settings: HubClientSettings | None = config.section("hub")
    if settings is None:
        return []
    sinks: list[Any] = [HubSink(settings)]
    if settings.genesys_attributes:
        try:
            genesys = config.section("genesys")
        except ConfigError:
            genesys = None
        if genesys is None:
            log.error("[hub] genesys_attributes needs the genesys plugin and its [genesys] section; not writing attributes")
        else:
            sinks.append(GenesysAttributesSink(settings, genesys))
    return sinks


HUB_LINK = "hub.link"
"""The daemon's plugin_state key of its link to the hub."""


@hookimpl
def agentd_daemon_start(daemon: Any) -> None:
    settings: HubClientSettings | None = daemon.app.config.section("hub")
    if settings is None or not settings.connect:
        return None
    link = HubLink(daemon, settings)
    link.task = daemon.spawn(link.run_forever(), name="hub.link")
    daemon.plugin_state[HUB_LINK] = link  # the daemon holds it: stopped with it
    return None


@hookimpl
def agentd_daemon_stop(daemon: Any) -> None:
    link: HubLink | None = daemon.plugin_state.get(HUB_LINK)
    if link is not None and link.task is not None:
        link.task.cancel()  # before the spool's last flush: the link's runs end with the daemon
    return None
