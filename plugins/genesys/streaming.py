"""The softphone's streaming channel: XMPP over WebSocket (RFC 7395) to Genesys Cloud.

What the WebRTC softphone does when it connects (the public genesys-cloud-streaming-client;
facts in the shared reference ``genesys-streaming-ice.md``), repeated here step by step,
each step under the caller's deadline:

1. ``GET /api/v2/users/me`` -> ``chat.jabberId``, the agent's bare JID (needs the agent's
   own login: a client-credentials token has no user);
2. ``POST /api/v2/notifications/channels?connectionType=streaming`` -> the channel id;
3. WebSocket ``<streaming base>/stream/channels/<id>``, subprotocol ``xmpp``;
4. ``<open/>``, SASL PLAIN (authcid = the JID, password ``authKey:<access token>``),
   stream restart, resource bind;
5. XEP-0215 external service discovery (``urn:xmpp:extdisco:1``) for ``turn`` and
   ``stun``: the softphone's own ICE servers with short-lived TURN credentials;
   XEP-0199 pings for the ``websocket`` check;
6. ``<close/>``.

It never sends presence (nobody sees agentd come online), never answers what the server
pushes (a call offer belongs to the softphone) and closes as soon as it is done. The XML
comes from the network: it is parsed with expat, with DTDs and entity declarations
refused and size and depth capped. The token and the TURN credentials never reach a log,
a report or an error message (they are registered with :mod:`agentd.redact`).
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree as ET
from xml.parsers import expat
from xml.sax.saxutils import escape, quoteattr

import structlog
from websockets.exceptions import ConnectionClosed

from agentd.errors import AuthError, GenesysError, PermissionMissing, ProbeError
from agentd.model import parse_time
from agentd.redact import register_secret
from agentd_plugins.websocket.probe import close_code_of, close_quietly, open_timed, shown_url

from .client import GenesysClient, probe_reason
from .settings import GenesysSettings

log = structlog.get_logger("agentd.genesys.streaming")

FRAMING_NS = "urn:ietf:params:xml:ns:xmpp-framing"
STREAMS_NS = "http://etherx.jabber.org/streams"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND_NS = "urn:ietf:params:xml:ns:xmpp-bind"
STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"
CLIENT_NS = "jabber:client"
EXTDISCO_NS = "urn:xmpp:extdisco:1"
PING_NS = "urn:xmpp:ping"

MAX_STANZA_BYTES = 256 * 1024
"""A larger WebSocket message is refused: an extdisco answer is a few hundred bytes."""
MAX_DEPTH = 16
MAX_IGNORED = 200
"""Unsolicited stanzas skipped while waiting for one answer before the server counts as broken."""
ICE_REFRESH_S = 6 * 3600.0
"""The softphone fetches its ICE servers again every 6 h (ICE_SERVER_REFRESH_PERIOD)."""
MISSED_PONGS_LIMIT = 2
"""The softphone hard-closes after the 2nd consecutive missed pong ("too many missed pongs")."""
SASL_RETRIED = frozenset({"encryption-required", "incorrect-encoding", "invalid-mechanism", "malformed-request", "mechanism-too-weak"})
"""SASL failures the softphone retries (protocol trouble); any other is a refused login."""

_JID = re.compile(r"^[^@/\s<>&'\"]{1,1023}@[A-Za-z0-9.-]{1,253}$")
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|[0-9A-Fa-f:.]+)$")
_SERVICE_TYPES = ("stun", "stuns", "turn", "turns")


# -- XML in and out ---------------------------------------------------------------------------


class StanzaError(ValueError):
    """A WebSocket message that is not one well-formed, safe XML element."""


def q(ns: str, tag: str) -> str:
    """ElementTree's name for ``tag`` in namespace ``ns``."""
    return f"{{{ns}}}{tag}"


def parse_stanza(data: str | bytes) -> ET.Element:
    """One RFC 7395 message (one complete element) as an Element.

    expat without a DTD: ``<!DOCTYPE``, entity declarations and external entities are
    refused; an undefined entity is an error; the five predefined ones are fine.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if len(raw) > MAX_STANZA_BYTES:
        raise StanzaError(f"a message of {len(raw)} bytes (more than {MAX_STANZA_BYTES})")
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    depth = 0

    def name_of(text: str) -> str:
        ns, sep, local = text.partition(" ")
        return f"{{{ns}}}{local}" if sep else text

    def start(tag: str, attrs: dict[str, str]) -> None:
        nonlocal depth
        depth += 1
        if depth > MAX_DEPTH:
            raise StanzaError(f"elements nested deeper than {MAX_DEPTH}")
        builder.start(name_of(tag), {name_of(k): v for k, v in attrs.items()})

    def end(tag: str) -> None:
        nonlocal depth
        depth -= 1
        builder.end(name_of(tag))

    def refuse(*_args: Any) -> None:
        raise StanzaError("a DTD or entity declaration (refused)")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    try:
        parser.Parse(raw, True)
        return builder.close()
    except StanzaError:
        raise
    except (expat.ExpatError, AssertionError, ValueError) as exc:  # TreeBuilder asserts on a broken tree
        raise StanzaError(str(exc) or "not well-formed") from None


def _attr(value: str) -> str:
    return quoteattr(value)


def open_element(domain: str) -> str:
    return f'<open xmlns="{FRAMING_NS}" to={_attr(domain)} version="1.0" xml:lang="en"/>'


CLOSE_ELEMENT = f'<close xmlns="{FRAMING_NS}"/>'


def sasl_plain(jid: str, token: str) -> str:
    """SASL PLAIN as the softphone sends it: no authzid, authcid = the JID, password ``authKey:<token>``."""
    payload = base64.b64encode(f"\0{jid}\0authKey:{token}".encode()).decode()
    register_secret(payload)  # it decodes to the token
    return f'<auth xmlns="{SASL_NS}" mechanism="PLAIN">{payload}</auth>'


def iq(kind: str, stanza_id: str, child: str, *, to: str | None = None) -> str:
    target = f" to={_attr(to)}" if to else ""
    return f'<iq xmlns="{CLIENT_NS}" type="{kind}" id={_attr(stanza_id)}{target}>{child}</iq>'


def _condition(element: ET.Element, ns: str) -> str:
    """The local name of the first child in ``ns`` (an XMPP error condition), else 'unknown'."""
    for child in element.iter():
        if child is not element and child.tag.startswith(f"{{{ns}}}") and not child.tag.endswith("}text"):
            return child.tag.split("}", 1)[1]
    return "unknown"


# -- external services (XEP-0215) ---------------------------------------------------------------


@dataclass(frozen=True)
class ExtService:
    """One ``<service/>`` of an extdisco answer. ``username``/``password`` are secrets."""

    type: str
    host: str
    port: int | None = None
    transport: str | None = None
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    expires: float | None = None

    @property
    def url(self) -> str:
        """The RTCIceServer url the softphone builds (GSC webrtc.ts): ``type:host[:port]``,
        plus ``?transport=X`` for TURN when X is not udp; TURN over TLS is a ``turns:`` url."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = self.type
        transport = (self.transport or "").lower()
        if scheme == "turn" and transport == "tls":
            scheme, transport = "turns", "tcp"
        url = f"{scheme}:{host}" + (f":{self.port}" if self.port else "")
        if scheme in ("turn", "turns") and transport and transport != "udp":
            url += f"?transport={transport}"
        return url

    @property
    def credential_expiry(self) -> float | None:
        """When the credentials stop working: ``expires``, or the TURN REST username's ``<expiry>:``."""
        found = [self.expires] if self.expires else []
        head = (self.username or "").split(":", 1)[0]
        if head.isdigit() and len(head) >= 9:
            found.append(float(head))
        return min(found) if found else None

    def to_json(self) -> dict[str, Any]:
        """For the owner-only cache file (credentials included)."""
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExtService:
        service = cls(
            type=str(data["type"]),
            host=str(data["host"]),
            port=int(data["port"]) if data.get("port") is not None else None,
            transport=data.get("transport"),
            username=data.get("username"),
            password=data.get("password"),
            expires=float(data["expires"]) if data.get("expires") is not None else None,
        )
        service.register()
        return service

    def register(self) -> None:
        for value in (self.username, self.password):
            if value:
                register_secret(value)


def _expires(text: str | None) -> float | None:
    try:
        return parse_time(text).timestamp() if text else None
    except ValueError:
        return None


def parse_services(answer: ET.Element, wanted: str) -> tuple[list[ExtService], list[str]]:
    """The usable services of an extdisco ``<services/>`` answer and why others were left out."""
    services: list[ExtService] = []
    ignored: list[str] = []
    holder = answer.find(q(EXTDISCO_NS, "services"))
    if holder is None:
        raise StanzaError(f"the {wanted} answer has no <services xmlns='{EXTDISCO_NS}'/>")
    for item in holder.findall(q(EXTDISCO_NS, "service")):
        kind = (item.get("type") or wanted).lower()
        host = item.get("host") or ""
        port_text = item.get("port")
        if kind not in _SERVICE_TYPES or not _HOST.match(host):
            ignored.append(f"a service of type {kind!r} with host {host[:60]!r}")
            continue
        try:
            port = int(port_text) if port_text else None
            if port is not None and not 1 <= port <= 65535:
                raise ValueError
        except ValueError:
            ignored.append(f"{kind} {host}: port {port_text[:10]!r} is not a port")
            continue
        transport = (item.get("transport") or "").lower() or None
        if transport not in (None, "udp", "tcp", "tls"):
            ignored.append(f"{kind} {host}: transport {transport[:10]!r}")
            continue
        service = ExtService(kind, host, port, transport, item.get("username"), item.get("password"), _expires(item.get("expires")))
        service.register()
        if kind in ("turn", "turns") and not (service.username and service.password):
            ignored.append(f"{kind} {host}: no username or password")
            continue
        services.append(service)
    return services, ignored


# -- one XMPP session ---------------------------------------------------------------------------


class Deadline:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.end = time.monotonic() + timeout_s

    def left(self, cap: float | None = None) -> float:
        left = max(0.01, self.end - time.monotonic())
        return min(left, cap) if cap is not None else left


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 1)


class StreamingSession:
    """An open, authenticated and bound XMPP session on one WebSocket. Use :func:`connect_session`."""

    def __init__(self, connection: Any, *, jid: str, url: str, phases: dict[str, float | None], connect_ms: float) -> None:
        self.connection = connection
        self.jid = jid
        self.domain = jid.split("@", 1)[1]
        self.url = url
        self.phases = phases
        self.connect_ms = connect_ms
        self.full_jid: str | None = None
        self.ignored = 0
        self.closed = False

    @property
    def where(self) -> str:
        return shown_url(self.url)

    async def send(self, text: str) -> None:
        try:
            await self.connection.send(text)
        except ConnectionClosed as exc:
            raise self._closed_error(exc) from None

    def _closed_error(self, exc: ConnectionClosed) -> ProbeError:
        code, why = close_code_of(exc)
        reason = "dropped" if code == 1006 else "closed"
        return ProbeError(
            f"{self.where}: the streaming server ended the connection (close code {code}{', ' + why if why else ''})",
            reason=reason,
            details={"close_code": code, "close_reason": why},
        )

    async def receive(self, timeout_s: float, waiting_for: str) -> ET.Element:
        """The next element (whitespace keepalives skipped); ProbeError on a close, a stream
        error, malformed XML or the deadline."""
        end = time.monotonic() + timeout_s
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise ProbeError(f"{self.where}: no {waiting_for} within {timeout_s:g} s", reason="timeout", details={"waiting_for": waiting_for})
            try:
                async with asyncio.timeout(left):
                    message = await self.connection.recv()
            except TimeoutError:
                continue
            except ConnectionClosed as exc:
                raise self._closed_error(exc) from None
            if isinstance(message, str) and not message.strip():
                continue
            try:
                element = parse_stanza(message)
            except StanzaError as exc:
                raise ProbeError(f"{self.where}: malformed XML from the streaming server while waiting for {waiting_for} ({exc})", reason="protocol") from None
            if element.tag == q(FRAMING_NS, "close"):
                raise ProbeError(f"{self.where}: the streaming server closed the XMPP stream while agentd waited for {waiting_for}", reason="closed")
            if element.tag == q(STREAMS_NS, "error"):
                condition = _condition(element, "urn:ietf:params:xml:ns:xmpp-streams")
                reason = "auth" if condition == "not-authorized" else "protocol"
                raise ProbeError(f"{self.where}: stream error {condition} while waiting for {waiting_for}", reason=reason, details={"condition": condition})
            return element

    async def query(self, requests: dict[str, str], timeout_s: float, what: str) -> dict[str, ET.Element]:
        """Send IQs (id -> XML) and collect their answers; anything else is skipped unanswered."""
        for text in requests.values():
            await self.send(text)
        answers: dict[str, ET.Element] = {}
        end = time.monotonic() + timeout_s
        while len(answers) < len(requests):
            element = await self.receive(max(0.0, end - time.monotonic()), what)
            stanza_id = element.get("id")
            if element.tag == q(CLIENT_NS, "iq") and stanza_id in requests and element.get("type") in ("result", "error"):
                answers[stanza_id] = element
                continue
            # a push (presence, a message, a call offer, a server IQ): not ours to answer
            self.ignored += 1
            if self.ignored > MAX_IGNORED:
                raise ProbeError(f"{self.where}: more than {MAX_IGNORED} unexpected stanzas while waiting for {what}", reason="protocol")
        return answers

    async def extdisco(self, kinds: tuple[str, ...], timeout_s: float) -> dict[str, tuple[list[ExtService], list[str]]]:
        """XEP-0215 queries, one per kind, sent together as the softphone does."""
        ids = {f"agentd-{kind}-{uuid.uuid4().hex[:8]}": kind for kind in kinds}
        requests = {i: iq("get", i, f'<services xmlns="{EXTDISCO_NS}" type="{kind}"/>', to=self.domain) for i, kind in ids.items()}
        answers = await self.query(requests, timeout_s, "the ICE server list (extdisco)")
        found: dict[str, tuple[list[ExtService], list[str]]] = {}
        for stanza_id, kind in ids.items():
            answer = answers[stanza_id]
            if answer.get("type") == "error":
                condition = _condition(answer, STANZAS_NS)
                raise ProbeError(f"{self.where}: the {kind} server list was refused ({condition})", reason="protocol", details={"condition": condition})
            try:
                found[kind] = parse_services(answer, kind)
            except StanzaError as exc:
                raise ProbeError(f"{self.where}: {exc}", reason="protocol") from None
        return found

    async def ping(self, timeout_s: float) -> float:
        """One XEP-0199 ping to the server; the round trip in ms. Any answer, even an error, is a pong."""
        stanza_id = f"agentd-ping-{uuid.uuid4().hex[:8]}"
        sent = time.monotonic()
        await self.query({stanza_id: iq("get", stanza_id, f'<ping xmlns="{PING_NS}"/>')}, timeout_s, "a pong")
        return _ms(time.monotonic() - sent)

    async def close(self, timeout_s: float = 0.5) -> None:
        """``<close/>`` and a WebSocket close; a peer that does not answer costs ``timeout_s``."""
        if self.closed:
            return
        self.closed = True
        try:
            async with asyncio.timeout(timeout_s):
                await self.connection.send(CLOSE_ELEMENT)
        except (TimeoutError, ConnectionClosed, OSError):
            pass
        await close_quietly(self.connection, timeout_s)


async def connect_session(
    url: str,
    *,
    jid: str,
    token: str,
    deadline: Deadline,
    ssl_context: ssl.SSLContext | None = None,
    step_timeout_s: float | None = None,
    progress: dict[str, str] | None = None,
) -> StreamingSession:
    """Open the WebSocket, authenticate with SASL PLAIN and bind a resource.

    Raises :class:`ProbeError`; ``details.stage`` names the step that failed
    (``connect``, ``open``, ``sasl``, ``bind``) and ``details.phases`` the times reached.
    """
    progress = progress if progress is not None else {}
    stage = progress["stage"] = "connect"
    phases: dict[str, float | None] = {"dns_ms": None, "tcp_ms": None, "tls_ms": None, "upgrade_ms": None, "sasl_ms": None, "bind_ms": None}
    session: StreamingSession | None = None
    try:
        opened = await open_timed(url, ssl_context=ssl_context, timeout_s=deadline.left(step_timeout_s), subprotocols=["xmpp"], close_timeout_s=0.5)
        phases.update(opened.phases)
        session = StreamingSession(opened.connection, jid=jid, url=url, phases=phases, connect_ms=opened.connect_ms)
        if opened.connection.subprotocol != "xmpp":
            raise ProbeError(f"{session.where}: the server did not accept the xmpp subprotocol (RFC 7395)", reason="protocol")
        stage = progress["stage"] = "open"
        features = await _open_stream(session, deadline, step_timeout_s)
        mechanisms = [m.text or "" for m in features.iter(q(SASL_NS, "mechanism"))]
        if "PLAIN" not in mechanisms:
            raise ProbeError(f"{session.where}: the server offers no SASL PLAIN (offers {', '.join(mechanisms) or 'none'})", reason="protocol")
        stage = progress["stage"] = "sasl"
        started = time.monotonic()
        await session.send(sasl_plain(jid, token))
        answer = await session.receive(deadline.left(step_timeout_s), "the SASL answer")
        if answer.tag == q(SASL_NS, "failure"):
            condition = _condition(answer, SASL_NS)
            reason = "protocol" if condition in SASL_RETRIED else "auth"
            raise ProbeError(
                f"{session.where}: the streaming server refused the agent's login (SASL {condition})"
                + ("; run `agentd login` again" if reason == "auth" else ""),
                reason=reason,
                details={"condition": condition},
            )
        if answer.tag != q(SASL_NS, "success"):
            raise ProbeError(f"{session.where}: expected the SASL answer, got <{_local(answer.tag)}>", reason="protocol")
        phases["sasl_ms"] = _ms(time.monotonic() - started)
        stage = progress["stage"] = "bind"
        started = time.monotonic()
        features = await _open_stream(session, deadline, step_timeout_s)  # the stream restart after SASL
        if features.find(q(BIND_NS, "bind")) is None:
            raise ProbeError(f"{session.where}: the server offers no resource binding after SASL", reason="protocol")
        bind_id = f"agentd-bind-{uuid.uuid4().hex[:8]}"
        resource = f"agentd-{uuid.uuid4()}"  # an admin looking at sessions can tell it is not a softphone
        answers = await session.query(
            {bind_id: iq("set", bind_id, f'<bind xmlns="{BIND_NS}"><resource>{escape(resource)}</resource></bind>')},
            deadline.left(step_timeout_s),
            "the bind answer",
        )
        bound = answers[bind_id]
        if bound.get("type") != "result":
            raise ProbeError(f"{session.where}: binding a resource was refused ({_condition(bound, STANZAS_NS)})", reason="protocol")
        full = bound.find(f"{q(BIND_NS, 'bind')}/{q(BIND_NS, 'jid')}")
        session.full_jid = (full.text or "").strip() if full is not None else None
        phases["bind_ms"] = _ms(time.monotonic() - started)
        return session
    except ProbeError as exc:
        if session is not None:
            await session.close()
        phases.update({k: v for k, v in exc.details.get("phases", {}).items() if v is not None})
        raise ProbeError(str(exc), reason=exc.reason, details={**exc.details, "stage": stage, "phases": phases}) from None
    except BaseException:
        if session is not None:
            await session.close()
        raise


async def _open_stream(session: StreamingSession, deadline: Deadline, step_timeout_s: float | None) -> ET.Element:
    """Send ``<open/>`` and return the server's ``<stream:features/>`` (after its ``<open/>``)."""
    await session.send(open_element(session.domain))
    for _ in range(4):
        element = await session.receive(deadline.left(step_timeout_s), "the stream features")
        if element.tag == q(STREAMS_NS, "features"):
            return element
        if element.tag != q(FRAMING_NS, "open"):
            raise ProbeError(f"{session.where}: expected <open/> or <stream:features/>, got <{_local(element.tag)}>", reason="protocol")
    raise ProbeError(f"{session.where}: no <stream:features/> after the stream opened", reason="protocol")


def _local(tag: str) -> str:
    return tag.split("}", 1)[-1][:40]


# -- the REST part --------------------------------------------------------------------------------


def _rest_error(exc: GenesysError, stage: str) -> ProbeError:
    message = str(exc)
    if isinstance(exc, AuthError):
        message += "; run `agentd login` again"
    details: dict[str, Any] = {"stage": stage, "status": exc.status}
    if getattr(exc, "grant", None):
        details["grant"] = exc.grant
    if isinstance(exc, PermissionMissing) and exc.permission:
        details["permission"] = exc.permission
    return ProbeError(message, reason=probe_reason(exc), details=details)


async def agent_jid(client: GenesysClient, *, timeout_s: float) -> str:
    """The agent's bare JID from ``GET /api/v2/users/me`` (``chat.jabberId``)."""
    try:
        me = await client.get("/api/v2/users/me", timeout_s=timeout_s)
    except GenesysError as exc:
        raise _rest_error(exc, "users/me") from None
    chat = me.get("chat") if isinstance(me, dict) else None
    jid = chat.get("jabberId") if isinstance(chat, dict) else None
    if not isinstance(jid, str) or not _JID.match(jid):
        raise ProbeError("GET /api/v2/users/me: no chat.jabberId of the form user@domain", reason="protocol", details={"stage": "users/me"})
    return jid


async def streaming_channel(client: GenesysClient, *, timeout_s: float) -> str:
    """A new streaming channel's id (``POST /api/v2/notifications/channels?connectionType=streaming``)."""
    try:
        channel = await client.post("/api/v2/notifications/channels", params={"connectionType": "streaming"}, timeout_s=timeout_s)
    except GenesysError as exc:
        raise _rest_error(exc, "channel") from None
    channel_id = channel.get("id") if isinstance(channel, dict) else None
    if not isinstance(channel_id, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,128}", channel_id):
        raise ProbeError("POST /api/v2/notifications/channels: no usable channel id", reason="protocol", details={"stage": "channel"})
    return channel_id


def channel_url(settings: GenesysSettings, channel_id: str) -> str:
    return f"{settings.streaming_base}/stream/channels/{channel_id}"


async def open_channel(
    settings: GenesysSettings,
    client: GenesysClient,
    *,
    deadline: Deadline,
    ssl_context: ssl.SSLContext | None,
    progress: dict[str, str] | None = None,
    connect_timeout_s: float | None = None,
) -> tuple[StreamingSession, dict[str, float]]:
    """The REST bootstrap and an authenticated, bound session; (session, REST timings in ms).
    Each REST call gets at most ``[genesys] timeout_s``, the WebSocket, SASL and bind
    together at most ``connect_timeout_s``, everything at most ``deadline``.
    ``progress["stage"]`` follows the steps, for a caller whose own deadline ends one."""
    progress = progress if progress is not None else {}
    rest: dict[str, float] = {}
    progress["stage"] = "users/me"
    started = time.monotonic()
    jid = await agent_jid(client, timeout_s=deadline.left(settings.timeout_s))
    rest["users_me_ms"] = _ms(time.monotonic() - started)
    progress["stage"] = "channel"
    started = time.monotonic()
    channel_id = await streaming_channel(client, timeout_s=deadline.left(settings.timeout_s))
    rest["channel_ms"] = _ms(time.monotonic() - started)
    try:
        token = await client.tokens.token()
    except GenesysError as exc:
        raise _rest_error(exc, "token") from None
    progress["stage"] = "connect"
    connecting = Deadline(min(deadline.left(), connect_timeout_s)) if connect_timeout_s else deadline
    session = await connect_session(
        channel_url(settings, channel_id), jid=jid, token=token.value, deadline=connecting, ssl_context=ssl_context, progress=progress
    )
    return session, rest


# -- what callers use ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Discovery:
    """The softphone's ICE servers as Genesys handed them out, and what it cost."""

    turn: tuple[ExtService, ...]
    stun: tuple[ExtService, ...]
    fetched_at: float
    domain: str
    timings: dict[str, float | None] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()

    @property
    def relay_only(self) -> bool:
        """No STUN server: the softphone sets iceTransportPolicy "relay" (Force TURN)."""
        return not self.stun

    def expires_at(self, max_age_s: float = ICE_REFRESH_S) -> float:
        """When to fetch again: the softphone's 6 h, or earlier when a credential expires."""
        ends = [self.fetched_at + max_age_s]
        ends += [e for e in (s.credential_expiry for s in self.turn) if e]
        return min(ends)

    def services(self) -> tuple[ExtService, ...]:
        return (*self.turn, *self.stun)  # TURN first, as the softphone orders them


async def discover(
    settings: GenesysSettings, client: GenesysClient, *, timeout_s: float, ssl_context: ssl.SSLContext | None = None
) -> Discovery:
    """Fetch the softphone's STUN/TURN servers over a new streaming channel, then close it.

    Raises :class:`ProbeError` (``details.stage``: ``users/me``, ``channel``, ``connect``,
    ``open``, ``sasl``, ``bind``, ``extdisco``) within ``timeout_s`` whatever the server does.
    """
    deadline = Deadline(timeout_s)
    started = time.monotonic()
    progress = {"stage": "users/me"}
    session: StreamingSession | None = None
    try:
        async with asyncio.timeout(timeout_s):
            session, rest = await open_channel(settings, client, deadline=deadline, ssl_context=ssl_context, progress=progress)
            progress["stage"] = "extdisco"
            asked = time.monotonic()
            found = await session.extdisco(("turn", "stun"), deadline.left())
            timings: dict[str, float | None] = {**rest, **session.phases, "extdisco_ms": _ms(time.monotonic() - asked)}
    except TimeoutError:
        raise ProbeError(
            f"the softphone's ICE servers: no answer within {timeout_s:g} s (at {progress['stage']})",
            reason="timeout",
            details={"stage": progress["stage"]},
        ) from None
    except ProbeError as exc:
        raise ProbeError(str(exc), reason=exc.reason, details={"stage": progress["stage"], **exc.details}) from None
    finally:
        if session is not None:
            await session.close()
    turn, turn_ignored = found["turn"]
    stun, stun_ignored = found["stun"]
    timings["total_ms"] = _ms(time.monotonic() - started)
    log.info(
        "fetched the softphone's ICE servers", turn=len(turn), stun=len(stun), relay_only=not stun, ms=timings["total_ms"], ignored=len(turn_ignored) + len(stun_ignored)
    )
    return Discovery(
        turn=tuple(s for s in turn if s.type in ("turn", "turns")),
        stun=tuple(s for s in stun if s.type in ("stun", "stuns")),
        fetched_at=time.time(),
        domain=session.domain if session else "",
        timings=timings,
        ignored=tuple(turn_ignored + stun_ignored),
    )


__all__ = [
    "Deadline",
    "Discovery",
    "ExtService",
    "StanzaError",
    "StreamingSession",
    "agent_jid",
    "channel_url",
    "connect_session",
    "discover",
    "open_channel",
    "parse_services",
    "parse_stanza",
    "streaming_channel",
]
