"""The fake's streaming (XMPP) service: installed by ``server.py`` through ``install(app, fake)``.

What the softphone (and agentd) talk to, on the fake's port:

- ``GET /api/v2/users/me`` carries ``chat.jabberId`` (every user gets one);
- ``POST /api/v2/notifications/channels?connectionType=streaming`` (the notifications
  extension creates the channel and remembers its connection type);
- WebSocket ``/stream/channels/{id}`` (subprotocol ``xmpp``, RFC 7395 framing): ``<open/>``,
  SASL PLAIN checked against the channel's user (authcid = the user's JID, password
  ``authKey:<a valid access token of that user>``), stream restart, resource bind,
  XEP-0199 pings, XEP-0215 extdisco for ``turn`` and ``stun``, ``<close/>``.

extdisco answers with :attr:`StreamingHub.turn_services` / :attr:`stun_services`; TURN
entries get TURN REST credentials (username ``<expiry>:<user>``, password
base64(HMAC-SHA1(turn_secret, username))) that a real coturn started with
``--use-auth-secret --static-auth-secret=<turn_secret>`` accepts until they expire:
:meth:`StreamingHub.use_coturn` wires one in.

Knobs on :class:`StreamingHub` (``streaming_hub(fake)``): ``refuse_sasl``, ``silent``
(accept the WebSocket, never answer), ``pongs_left`` (answer that many more pings, then
none), ``malformed_at`` (``"features"`` or ``"extdisco"``: broken XML there), ``stun_services
= []`` (Force TURN), ``credential_ttl_s`` (short expiry), ``bad_credentials_times`` (sign
the next N TURN answers with a wrong secret: rejected credentials), ``push_offer`` (push
a call offer before answering, which a client must leave unanswered). Counters:
``connections``, ``authenticated`` (and ``authenticated_users``), ``extdisco_requests``, ``pings``, ``presences``,
``answers_to_pushes``, ``client_closes``, and ``open_sockets()``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET
from xml.sax.saxutils import quoteattr

from aiohttp import WSMsgType, web

from .server import error_response

if TYPE_CHECKING:
    from agentd.testing.coturn import Coturn

    from .server import FakeGenesys

FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
STREAMS = "http://etherx.jabber.org/streams"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND = "urn:ietf:params:xml:ns:xmpp-bind"
EXTDISCO = "urn:xmpp:extdisco:1"
PING = "urn:xmpp:ping"
ORG_DOMAIN = "agentd-test.orgspan.com"
MALFORMED = "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><mechanisms"


def jabber_id(user_id: str) -> str:
    """A JID of the real form: 24 hex digits at the org's orgspan domain."""
    return f"{uuid.UUID(user_id).hex[:24]}@{ORG_DOMAIN}"


def turn_rest_credentials(secret: str, user: str, ttl_s: float) -> tuple[str, str]:
    username = f"{int(time.time() + ttl_s)}:{user}"
    password = base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()
    return username, password


@dataclass
class StreamingHub:
    fake: Any
    turn_services: list[dict[str, Any]] = field(default_factory=list)
    """``<service/>`` attributes (host, port, transport, type) of TURN entries; credentials are added per answer."""
    stun_services: list[dict[str, Any]] = field(default_factory=list)
    turn_secret: str = "fake-turn-rest-secret"
    turn_user: str = "agentd-fake"
    credential_ttl_s: float = 86400.0
    bad_credentials_times: int = 0
    refuse_sasl: bool = False
    silent: bool = False
    pongs_left: int | None = None
    malformed_at: str | None = None
    malformed_text: str = MALFORMED
    push_offer: bool = False
    connections: int = 0
    authenticated: int = 0
    authenticated_users: list[str] = field(default_factory=list)
    """The user id of every session SASL let in (whose channel it was)."""
    extdisco_requests: int = 0
    pings: int = 0
    presences: int = 0
    answers_to_pushes: int = 0
    client_closes: int = 0
    issued: list[tuple[str, str]] = field(default_factory=list)
    """Every (username, password) handed out, so tests can grep for them."""
    sockets: set[web.WebSocketResponse] = field(default_factory=set)

    def use_coturn(self, turn: Coturn, *, stun: bool = True, tls: bool = True) -> None:
        """Hand out ``turn`` (started with ``auth_secret``): TURN over UDP, TCP and TLS, and its
        STUN endpoints (both, when it has a second address)."""
        if not turn.auth_secret:
            raise ValueError("start the coturn with auth_secret= so it checks TURN REST credentials")
        self.turn_secret = turn.auth_secret
        self.turn_services = [
            {"type": "turn", "host": turn.listen_ip, "port": turn.port, "transport": "udp"},
            {"type": "turn", "host": turn.listen_ip, "port": turn.port, "transport": "tcp"},
        ]
        if tls:
            self.turn_services.append({"type": "turns", "host": turn.listen_ip, "port": turn.tls_port, "transport": "tcp"})
        self.stun_services = []
        if stun:
            self.stun_services.append({"type": "stun", "host": turn.listen_ip, "port": turn.port})
            if turn.second_ip:
                self.stun_services.append({"type": "stun", "host": turn.second_ip, "port": turn.alt_port})

    def open_sockets(self) -> list[web.WebSocketResponse]:
        return [ws for ws in self.sockets if not ws.closed]

    def _services(self, kind: str) -> str:
        items = []
        entries = self.turn_services if kind == "turn" else self.stun_services
        if kind == "turn" and entries:
            secret = self.turn_secret
            if self.bad_credentials_times > 0:
                self.bad_credentials_times -= 1
                secret = "not-" + self.turn_secret
            username, password = turn_rest_credentials(secret, self.turn_user, self.credential_ttl_s)
            self.issued.append((username, password))
        for entry in entries:
            attrs = dict(entry)
            attrs.setdefault("type", kind)
            if kind == "turn":
                attrs.update(username=username, password=password)
            items.append("<service " + " ".join(f"{k}={quoteattr(str(v))}" for k, v in attrs.items()) + "/>")
        return f'<services xmlns="{EXTDISCO}" type="{kind}">' + "".join(items) + "</services>"

    # -- the XMPP endpoint ---------------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        from .notifications import hub_of

        channel = hub_of(self.fake).channels.get(request.match_info["channelId"])
        if channel is None or channel.connection_type != "streaming":
            return error_response(404, "not.found", "streaming channel not found")
        ws = web.WebSocketResponse(protocols=("xmpp",), autoping=True, heartbeat=None)
        await ws.prepare(request)
        self.connections += 1
        self.sockets.add(ws)
        try:
            await self._converse(ws, channel.user_id)
        finally:
            self.sockets.discard(ws)
        return ws

    async def _converse(self, ws: web.WebSocketResponse, user_id: str | None) -> None:
        jid = jabber_id(user_id) if user_id else None
        authenticated = False
        bound: str | None = None
        pushes: set[str] = set()
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            if self.silent:
                continue  # a server that accepts and never answers
            try:
                element = ET.fromstring(msg.data)
            except ET.ParseError:
                await ws.close(code=1002, message=b"not XML")
                return
            tag = element.tag
            if tag == f"{{{FRAMING}}}open":
                if self.malformed_at == "features":
                    await ws.send_str(self.malformed_text)
                    continue
                await ws.send_str(f'<open xmlns="{FRAMING}" from="{ORG_DOMAIN}" id="{uuid.uuid4()}" version="1.0" xml:lang="en"/>')
                if not authenticated:
                    features = f'<mechanisms xmlns="{SASL}"><mechanism>PLAIN</mechanism><mechanism>ANONYMOUS</mechanism></mechanisms>'
                else:
                    features = f'<bind xmlns="{BIND}"/>'
                await ws.send_str(f'<stream:features xmlns:stream="{STREAMS}">{features}</stream:features>')
            elif tag == f"{{{SASL}}}auth":
                if self._sasl_ok(element, jid, user_id):
                    authenticated = True
                    self.authenticated += 1
                    self.authenticated_users.append(user_id)
                    await ws.send_str(f'<success xmlns="{SASL}"/>')
                else:
                    await ws.send_str(f'<failure xmlns="{SASL}"><not-authorized/></failure>')
                    await ws.send_str(f'<close xmlns="{FRAMING}"/>')
                    await ws.close()
                    return
            elif tag == f"{{{FRAMING}}}close":
                self.client_closes += 1
                await ws.send_str(f'<close xmlns="{FRAMING}"/>')
                await ws.close()
                return
            elif tag.endswith("}presence") or tag == "presence":
                self.presences += 1
            elif tag == "{jabber:client}iq" and authenticated:
                if element.get("id") in pushes:
                    self.answers_to_pushes += 1
                    continue
                bound = await self._iq(ws, element, jid, bound, pushes)

    def _sasl_ok(self, element: ET.Element, jid: str | None, user_id: str | None) -> bool:
        if self.refuse_sasl or jid is None or element.get("mechanism") != "PLAIN":
            return False
        try:
            _authzid, authcid, password = base64.b64decode(element.text or "", validate=True).decode().split("\0")
        except (ValueError, UnicodeDecodeError):
            return False
        if authcid != jid or not password.startswith("authKey:"):
            return False
        grant = self.fake.state.tokens.get(password[len("authKey:") :])
        return grant is not None and grant.expires_at > time.time() and grant.user_id == user_id

    async def _iq(self, ws: web.WebSocketResponse, element: ET.Element, jid: str | None, bound: str | None, pushes: set[str]) -> str | None:
        stanza_id = element.get("id") or ""
        kind = element.get("type")
        bind = element.find(f"{{{BIND}}}bind")
        if kind == "set" and bind is not None:
            resource = (bind.findtext(f"{{{BIND}}}resource") or str(uuid.uuid4())).strip()
            bound = f"{jid}/{resource}"
            await ws.send_str(f'<iq xmlns="jabber:client" type="result" id={quoteattr(stanza_id)}><bind xmlns="{BIND}"><jid>{bound}</jid></bind></iq>')
            return bound
        if kind == "get" and element.find(f"{{{PING}}}ping") is not None:
            self.pings += 1
            if self.pongs_left is not None:
                if self.pongs_left <= 0:
                    return bound  # stopped answering pings
                self.pongs_left -= 1
            await ws.send_str(f'<iq xmlns="jabber:client" type="result" id={quoteattr(stanza_id)} from="{ORG_DOMAIN}"/>')
            return bound
        services = element.find(f"{{{EXTDISCO}}}services")
        if kind == "get" and services is not None:
            self.extdisco_requests += 1
            if self.push_offer:  # what the softphone's resource gets when a call comes in; not for agentd to answer
                push = f"push-{uuid.uuid4().hex[:6]}"
                pushes.add(push)
                await ws.send_str(
                    f'<message xmlns="jabber:client" from="{ORG_DOMAIN}" to="{bound}" type="chat">'
                    f'<propose xmlns="urn:xmpp:jingle-message:0" id="{uuid.uuid4()}"><description xmlns="urn:xmpp:jingle:apps:rtp:1" media="audio"/></propose></message>'
                )
                await ws.send_str(f'<iq xmlns="jabber:client" type="set" id="{push}" from="{ORG_DOMAIN}"><query xmlns="http://jabber.org/protocol/disco#info"/></iq>')
            if self.malformed_at == "extdisco":
                await ws.send_str(self.malformed_text)
                return bound
            kind_wanted = (services.get("type") or "turn").lower()
            await ws.send_str(
                f'<iq xmlns="jabber:client" type="result" id={quoteattr(stanza_id)} from="{ORG_DOMAIN}" to="{bound}">{self._services(kind_wanted)}</iq>'
            )
            return bound
        await ws.send_str(
            f'<iq xmlns="jabber:client" type="error" id={quoteattr(stanza_id)}><error type="cancel">'
            '<service-unavailable xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></iq>'
        )
        return bound


def install(app: web.Application, fake: FakeGenesys) -> None:
    hub = StreamingHub(fake)
    fake.state.extra["streaming"] = hub
    for user_id, user in fake.state.users.items():
        chat = user.setdefault("chat", {})
        if isinstance(chat, dict):
            chat.setdefault("jabberId", jabber_id(user_id))
    app.router.add_get("/stream/channels/{channelId}", hub.websocket)


def streaming_hub(fake: FakeGenesys) -> StreamingHub:
    return fake.state.extra["streaming"]


async def close_all(hub: StreamingHub) -> None:
    for ws in hub.open_sockets():
        await ws.close()
    await asyncio.sleep(0)
