"""The softphone's own side of Genesys Cloud: its STUN/TURN servers and its streaming channel.

Two hooks:

- ``agentd_ice_servers``: the ICE servers the WebRTC softphone gets at run time (XEP-0215
  over the streaming channel, see :mod:`.streaming`), for the ``stun``, ``nat``, ``turn.*``,
  ``udp.ports`` and ``media.path`` checks. Needs the agent's own login (``agentd login``):
  the channel is the agent's. The list is cached owner-only in the state folder for its
  lifetime (the softphone's 6 h refresh, or earlier when a credential expires), so a
  pre-shift run usually costs nothing here; ``refresh`` (a TURN 401) fetches it again.
- ``agentd_websocket_channels``: the streaming channel as the ``websocket`` check measures
  it: DNS, TCP, TLS, upgrade, SASL and bind times, and XEP-0199 ping round trips; a server
  that stops answering pings is named after two unanswered pings, as the softphone drops
  the connection then.

Every channel agentd opens is closed at once when its work is done (the daemon's
notifications monitor keeps its own, separate channel).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import replace
from typing import Any

import structlog

from agentd import hookimpl, paths
from agentd.config import Secret
from agentd.errors import GenesysError, ProbeError
from agentd.tls import client_context
from agentd_plugins.ice.offers import IceServerOffer, OfferedServer
from agentd_plugins.websocket.probe import empty_row, summarize_rtts

from . import streaming
from .client import GenesysClient, shared_client, stored_user_id
from .settings import GenesysSettings
from .tokens import TokenStore, write_private

log = structlog.get_logger("agentd.genesys.softphone")

SOURCE = "genesys"
CACHE_FILE = "genesys-ice-servers.json"
CACHE_VERSION = 1
EXPIRY_MARGIN_S = 60.0
"""A cached list this close to its expiry is fetched again: an allocation must not outlive it."""
LOGIN_HINT = "run `agentd login` to test the softphone's own STUN/TURN servers"


def _settings(config: Any) -> GenesysSettings:
    return config.section("genesys")


def login_available(settings: GenesysSettings) -> bool:
    """The agent's own login exists (a stored ``agentd login`` or ``[genesys] refresh_token``)."""
    if not settings.client_id:
        return False
    return settings.refresh_token is not None or TokenStore(settings.token_path).exists()


def agent_client(settings: GenesysSettings) -> GenesysClient:
    """The API client with the agent's token (client credentials have no user, hence no JID)."""
    return shared_client(replace(settings, auth="login"))


def _ssl(settings: GenesysSettings):
    return client_context(str(settings.ca_file)) if settings.ca_file else None


# -- the cache ---------------------------------------------------------------------------------


def cache_path():
    return paths.state_dir() / CACHE_FILE


def _identity(settings: GenesysSettings) -> str:
    """Whose list it is: the org's hosts and the logged-in agent (a new login is a new list)."""
    stored = TokenStore(settings.token_path).load()
    if stored is not None and stored.user_id:
        who = stored.user_id
    else:
        secret = settings.refresh_token.reveal() if settings.refresh_token else ((stored.refresh_token or stored.access_token) if stored else None)
        who = hashlib.sha256((secret or "").encode()).hexdigest()[:16]
    return hashlib.sha256(f"{settings.api_base}|{settings.streaming_base}|{who}".encode()).hexdigest()[:24]


def load_cached(settings: GenesysSettings, *, now: float | None = None) -> tuple[streaming.Discovery, bool | None] | None:
    """The cached list (and the station's webRtcForceTurn) when it is this agent's and still
    valid for a while, else None."""
    now = time.time() if now is None else now
    try:
        raw = json.loads(cache_path().read_text(encoding="utf-8"))
        if raw.get("version") != CACHE_VERSION or raw.get("identity") != _identity(settings):
            return None
        if float(raw["expires_at"]) - EXPIRY_MARGIN_S <= now:
            return None
        found = streaming.Discovery(
            turn=tuple(streaming.ExtService.from_json(s) for s in raw["turn"]),
            stun=tuple(streaming.ExtService.from_json(s) for s in raw["stun"]),
            fetched_at=float(raw["fetched_at"]),
            domain=str(raw.get("domain") or ""),
        )
        force_turn = raw.get("station_force_turn")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("the cached ICE server list cannot be read; fetching it again", path=str(cache_path()), error=type(exc).__name__)
        return None
    return found, force_turn if isinstance(force_turn, bool) else None


def save_cached(settings: GenesysSettings, found: streaming.Discovery, station_force_turn: bool | None = None) -> None:
    data = {
        "version": CACHE_VERSION,
        "identity": _identity(settings),
        "fetched_at": found.fetched_at,
        "expires_at": found.expires_at(),
        "domain": found.domain,
        "station_force_turn": station_force_turn,
        "turn": [s.to_json() for s in found.turn],
        "stun": [s.to_json() for s in found.stun],
    }
    try:
        write_private(cache_path(), json.dumps(data, indent=1) + "\n")
    except OSError as exc:  # a read-only state folder costs a fetch per run, nothing more
        log.warning("cannot cache the ICE server list", path=str(cache_path()), error=exc.strerror)


def forget_cached() -> None:
    try:
        cache_path().unlink()
    except OSError:
        pass


# -- agentd_ice_servers --------------------------------------------------------------------------


async def station_force_turn(settings: GenesysSettings, client: GenesysClient, *, timeout_s: float) -> bool | None:
    """The agent's effective station's ``webRtcForceTurn`` (the admin's Force TURN), or None
    when it cannot be read (no station, no permission, no answer in time): best effort."""
    user_id = stored_user_id(settings)
    if not user_id:
        return None
    try:
        async with asyncio.timeout(timeout_s):
            stations = await client.get(f"/api/v2/users/{user_id}/station", timeout_s=timeout_s, expected_statuses=(403, 404))
            ref = (stations.get("effectiveStation") or stations.get("associatedStation")) if isinstance(stations, dict) else None
            station_id = ref.get("id") if isinstance(ref, dict) else None
            if not isinstance(station_id, str):
                return None
            station = await client.get(f"/api/v2/stations/{station_id}", timeout_s=timeout_s, expected_statuses=(403, 404))
    except (GenesysError, TimeoutError):
        return None
    value = station.get("webRtcForceTurn") if isinstance(station, dict) else None
    return value if isinstance(value, bool) else None


def offer_of(found: streaming.Discovery, *, cached: bool, force_turn: bool | None = None) -> IceServerOffer:
    servers = tuple(
        OfferedServer(urls=(s.url,), username=s.username, credential=Secret(s.password, "genesys extdisco") if s.password else None)
        for s in found.services()
    )
    details: dict[str, Any] = {"fetched_at": round(found.fetched_at), "station_force_turn": force_turn}
    if found.timings:
        details["timings_ms"] = dict(found.timings)
    if found.ignored:
        details["ignored"] = list(found.ignored)
    why = None
    if found.relay_only:
        why = "Genesys handed out no STUN server (Force TURN)"
    elif force_turn:
        why = "the agent's station has webRtcForceTurn on (Force TURN)"
    return IceServerOffer(
        source=SOURCE,
        servers=servers,
        relay_only=why is not None,
        relay_only_why=why,
        expires_at=found.expires_at(),
        cached=cached,
        details=details,
    )


async def softphone_offer(settings: GenesysSettings, *, refresh: bool, timeout_s: float) -> IceServerOffer:
    """The softphone's ICE servers: cached, or fetched over a new streaming channel (closed after)."""
    if not login_available(settings):
        return IceServerOffer(source=SOURCE, skip=LOGIN_HINT)
    if not refresh:
        cached = load_cached(settings)
        if cached is not None:
            return offer_of(cached[0], cached=True, force_turn=cached[1])
    client = agent_client(settings)
    station = asyncio.ensure_future(station_force_turn(settings, client, timeout_s=timeout_s))
    try:
        found = await streaming.discover(settings, client, timeout_s=timeout_s, ssl_context=_ssl(settings))
    except ProbeError as exc:
        station.cancel()
        details: dict[str, Any] = {"stage": exc.details.get("stage")}
        error = str(exc)
        if exc.reason == "auth":
            if "agentd login" not in error:
                error += "; run `agentd login` again"
            # the agent's login was refused (SASL, or the REST calls' 401): platform.auth_failed reads this
            details["genesys_auth"] = {"grant": exc.details.get("grant") or "authorization_code", "stage": details["stage"], "message": error}
        log.warning("the softphone's ICE servers could not be fetched", reason=exc.reason, stage=details["stage"], error=error)
        return IceServerOffer(source=SOURCE, error=error, reason=exc.reason, details=details)
    force_turn = await station
    save_cached(settings, found, force_turn)
    return offer_of(found, cached=False, force_turn=force_turn)


@hookimpl
def agentd_ice_servers(config: Any, refresh: bool, timeout_s: float) -> Any:
    return softphone_offer(_settings(config), refresh=refresh, timeout_s=timeout_s)


# -- agentd_websocket_channels ---------------------------------------------------------------------

TARGET = "Genesys streaming channel (XMPP)"


async def measure_channel(settings: GenesysSettings, client: GenesysClient, plan: Any, *, ssl_context: Any = None) -> dict:
    """One details row (plugins/FINDINGS.md ``websocket``) for the softphone's streaming channel."""
    row = empty_row(TARGET)
    row.update(
        streaming_channel=True, xmpp=True, stage=None, xmpp_pings_sent=0, xmpp_pongs_received=0, xmpp_ping_rtts_ms=[], missed_pongs=0,
    )
    row["phases"].update(sasl_ms=None, bind_ms=None)
    budget = plan.connect_timeout_s + 2 * settings.timeout_s  # the two REST calls, then connect + SASL + bind
    progress: dict[str, str] = {}
    session: streaming.StreamingSession | None = None
    try:
        try:
            async with asyncio.timeout(budget):
                session, rest = await streaming.open_channel(
                    settings, client, deadline=streaming.Deadline(budget), ssl_context=ssl_context, progress=progress,
                    connect_timeout_s=plan.connect_timeout_s,
                )
        except TimeoutError:
            raise ProbeError(f"{TARGET}: no answer within {budget:g} s (at {progress.get('stage')})", reason="timeout") from None
        row.update(target=f"{TARGET} {session.where}", connect_ms=session.connect_ms, handshake_status=101, rest_ms=rest)
        row["phases"].update(session.phases)
        await _ping(session, plan, row)
    except ProbeError as exc:
        stage = exc.details.get("stage") or progress.get("stage")
        row.update(reason=exc.reason, error=str(exc), stage=stage)
        row["phases"].update({k: v for k, v in (exc.details.get("phases") or {}).items() if v is not None})
        if stage in ("open", "sasl", "bind"):
            row["handshake_status"] = 101
        if exc.details.get("close_code"):
            row.update(close_code=exc.details["close_code"], close_reason=exc.details.get("close_reason"))
        if exc.reason == "auth":
            row["genesys_auth"] = {"grant": exc.details.get("grant") or "authorization_code", "stage": stage, "message": str(exc)}
        if exc.details.get("status"):
            row["api_status"] = exc.details["status"]
    finally:
        if session is not None:
            await session.close()
    row["ok"] = row["reason"] is None
    return row


async def _ping(session: streaming.StreamingSession, plan: Any, row: dict) -> None:
    """XEP-0199 pings every ``ping_interval_s``; two unanswered in a row end it (as the softphone)."""
    in_a_row = 0
    sent = 0
    while sent < plan.ping_count or 0 < in_a_row < streaming.MISSED_PONGS_LIMIT:
        if sent:
            await asyncio.sleep(plan.ping_interval_s)
        sent += 1
        row["xmpp_pings_sent"] += 1
        try:
            rtt = await session.ping(plan.pong_timeout_s)
        except ProbeError as exc:
            if exc.reason != "timeout":
                raise
            in_a_row += 1
            row["missed_pongs"] += 1
            if in_a_row >= streaming.MISSED_PONGS_LIMIT:
                row.update(
                    reason="no_pong",
                    stage="ping",
                    error=(
                        f"{row['target']}: the server stopped answering XMPP pings ({in_a_row} in a row unanswered within "
                        f"{plan.pong_timeout_s:g} s): the softphone would drop this connection and reconnect ('too many missed pongs')"
                    ),
                )
                return
            continue
        in_a_row = 0
        row["xmpp_pongs_received"] += 1
        row["xmpp_ping_rtts_ms"].append(rtt)
    row["xmpp_ping_rtt"] = summarize_rtts(row["xmpp_ping_rtts_ms"])


class StreamingChannel:
    """The ``websocket`` check's probe of the softphone's streaming channel."""

    name = "genesys-streaming"

    def __init__(self, settings: GenesysSettings) -> None:
        self.settings = settings

    async def probe(self, ctx: Any, websocket_settings: Any, plan: Any) -> dict | None:
        if not login_available(self.settings):
            return None  # the notifications channel row still says what it can; ICE rows say to log in
        ca = getattr(websocket_settings, "ca_file", None) or self.settings.ca_file
        return await measure_channel(self.settings, agent_client(self.settings), plan, ssl_context=client_context(str(ca)) if ca else None)


@hookimpl
def agentd_websocket_channels(config: Any) -> list[Any]:
    settings = _settings(config)
    try:
        if not getattr(config.section("websocket"), "genesys_channel", True):
            return []
    except Exception:  # noqa: BLE001 - the websocket plugin is disabled: nobody asks
        return []
    return [StreamingChannel(settings)]
