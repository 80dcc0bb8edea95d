"""The fake's notification service, active calls and mute: installed by ``server.py`` through
``install(app, fake)``.

HTTP (same port as the rest of the fake, same bearer tokens):

- ``POST /api/v2/notifications/channels`` -> ``Channel`` ``{id, connectUri, expires}``;
  ``GET /api/v2/notifications/channels``; ``HEAD /api/v2/notifications/channels/{id}``;
- ``GET|PUT|POST|DELETE /api/v2/notifications/channels/{id}/subscriptions`` (bodies are
  ``[{"id": topic}]``; answers ``{"entities": [ChannelTopic...]}``);
- ``GET /api/v2/conversations/calls``: the active calls of the token's user (a client
  credentials token has no user: 400 "requires a user context", as the real API says);
- ``PATCH /api/v2/conversations/calls/{conversationId}/participants/{participantId}``
  with ``{"muted": bool}``: 409 unless the participant's call is connected; otherwise
  it changes the call state and publishes the conversation on
  ``v2.users.{userId}.conversations.calls`` (after ``hub.event_delay_s``); answers 202.

WebSocket: ``GET /channels/{id}`` (the ``connectUri``; ``ws://`` on the fake's port):
protocol pongs, the text ping ``{"message":"ping"}`` answered by a ``channel.metadata``
pong, ``"WebSocket Heartbeat"`` every ``hub.heartbeat_s``, the subscribed topics' events.

Test controls on :class:`NotificationHub` (``fake.state.extra["notifications"]``):
``socket_closing()``, ``drop()`` (TCP cut: the client sees 1006), ``expire(channel_id)``,
``publish_call(conversation_id)``, ``set_call_state(...)``, and counters
(``connections``, ``subscribe_requests``, ``pings``).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from .scenario import AGENT_USER_ID, agent_participant, iso
from .server import call_conversation_view, error_response, without_nulls
from .state import FakeState

if TYPE_CHECKING:
    from .server import FakeGenesys

ACTIVE_STATES = frozenset({"alerting", "dialing", "contacting", "offering", "connected"})
CALLS_TOPIC = "v2.users.{}.conversations.calls"
STATION_TOPIC = "v2.users.{}.station"
USER_CONTEXT_REQUIRED = "This request requires a user context. Client credentials cannot be used for requests to this resource."


@dataclass
class FakeChannel:
    id: str
    user_id: str | None
    expires_at: float
    topics: dict[str, None] = field(default_factory=dict)
    connection_type: str = "websocket"
    """``streaming``: the softphone's XMPP channel (``/stream/channels/{id}``, see streaming.py)."""
    sockets: set[web.WebSocketResponse] = field(default_factory=set)

    def to_json(self, base_ws: str) -> dict[str, Any]:
        expires = datetime.fromtimestamp(self.expires_at, timezone.utc)
        return {"connectUri": f"{base_ws}/channels/{self.id}", "id": self.id, "expires": iso(expires)}


class NotificationHub:
    """The notification service's state, and the knobs tests turn."""

    def __init__(self, fake: FakeGenesys) -> None:
        self.fake = fake
        self.heartbeat_s = 30.0
        self.channel_lifetime_s = 24 * 3600.0
        self.event_delay_s = 0.0
        self.events_enabled = True
        """False: PATCH changes the state but publishes nothing (confirmation must come from a re-read)."""
        self.channels: dict[str, FakeChannel] = {}
        self.connections = 0
        self.subscribe_requests = 0
        self.pings = 0
        self.published: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task] = set()

    @property
    def state(self) -> FakeState:
        return self.fake.state

    # -- test controls ---------------------------------------------------------------------

    def open_sockets(self) -> list[web.WebSocketResponse]:
        return [ws for channel in self.channels.values() for ws in channel.sockets if not ws.closed]

    async def socket_closing(self, *, close_after_s: float = 0.05) -> None:
        """Announce ``v2.system.socket_closing`` on every socket, then close them (1001)."""
        sockets = self.open_sockets()
        for ws in sockets:
            await _send(ws, {"topicName": "v2.system.socket_closing", "eventBody": {"message": "socket closing"}})
        await asyncio.sleep(close_after_s)
        for ws in sockets:
            await ws.close(code=1001, message=b"socket closing")

    def drop(self) -> int:
        """Cut every socket's TCP connection (no close frame): the clients see 1006."""
        count = 0
        for channel in self.channels.values():
            for ws in list(channel.sockets):
                transport = getattr(getattr(ws, "_req", None), "transport", None)
                if transport is not None:
                    transport.abort()
                    count += 1
        return count

    async def expire(self, channel_id: str) -> None:
        """The channel's lifetime ends: it is gone and its sockets are closed."""
        channel = self.channels.pop(channel_id, None)
        if channel is not None:
            for ws in list(channel.sockets):
                await ws.close(code=1000, message=b"channel expired")

    def set_call_state(self, conversation_id: str, participant_id: str, *, state: str | None = None, muted: bool | None = None, publish: bool = True) -> None:
        participant = self.state.participant(conversation_id, participant_id)
        if participant is None:
            raise KeyError(f"no participant {participant_id} in {conversation_id}")
        call = participant["calls"][0]
        now = iso(datetime.now(timezone.utc))
        if state is not None:
            call["state"] = state
            if state == "connected":
                call.setdefault("connectedTime", now)
                participant.setdefault("connectedTime", now)
            if state in ("disconnected", "terminated"):
                call["disconnectedTime"] = now
                participant["endTime"] = now
        if muted is not None:
            call["muted"] = muted
        if publish:
            self.publish_call(conversation_id)

    def publish_call(self, conversation_id: str) -> None:
        """Publish the conversation on the calls topic of each of its users (as the real service does)."""
        conversation = self.state.conversations[conversation_id]
        body = call_event_body(conversation)
        for user_id in {p.get("userId") for p in conversation.get("participants", ()) if p.get("userId")}:
            self.state.emit(CALLS_TOPIC.format(user_id), body)

    # -- delivery ----------------------------------------------------------------------------

    def on_change(self, topic: str, body: dict[str, Any]) -> None:
        """A ``FakeState.listeners`` entry: deliver to every socket subscribed to ``topic``."""
        if not self.events_enabled:
            return
        message = without_nulls({"topicName": topic, "version": "2", "eventBody": body, "metadata": {"CorrelationId": str(uuid.uuid4())}})
        targets = [ws for c in self.channels.values() if topic in c.topics for ws in c.sockets if not ws.closed]
        self.published.append(message)

        async def deliver() -> None:
            if self.event_delay_s:
                await asyncio.sleep(self.event_delay_s)
            for ws in targets:
                await _send(ws, message)

        task = asyncio.get_running_loop().create_task(deliver())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- routes -------------------------------------------------------------------------------

    def _channel(self, request: web.Request) -> FakeChannel | None:
        channel = self.channels.get(request.match_info["channelId"])
        if channel is not None and channel.expires_at <= time.time():
            self.channels.pop(channel.id, None)
            return None
        return channel

    async def create_channel(self, request: web.Request) -> web.Response:
        grant = self.fake.require_token(request, ("notifications",))
        channel = FakeChannel(str(uuid.uuid4()), grant.user_id, time.time() + self.channel_lifetime_s)
        channel.connection_type = request.query.get("connectionType", "websocket")
        self.channels[channel.id] = channel
        return web.json_response(channel.to_json(self._ws_base()))

    async def list_channels(self, request: web.Request) -> web.Response:
        self.fake.require_token(request, ("notifications",))
        entities = [c.to_json(self._ws_base()) for c in self.channels.values() if c.expires_at > time.time()]
        return web.json_response({"entities": entities})

    async def head_channel(self, request: web.Request) -> web.Response:
        self.fake.require_token(request, ("notifications",))
        return web.Response(status=200 if self._channel(request) else 404)

    async def subscriptions(self, request: web.Request) -> web.Response:
        self.fake.require_token(request, ("notifications",))
        channel = self._channel(request)
        if channel is None:
            return error_response(404, "not.found", "channel not found")
        if request.method in ("PUT", "POST"):
            self.subscribe_requests += 1
            try:
                body = json.loads(await request.read() or b"[]")
            except ValueError:
                return error_response(400, "bad.request", "The request body is not valid JSON")
            if not isinstance(body, list) or not all(isinstance(t, dict) and isinstance(t.get("id"), str) for t in body):
                return error_response(400, "bad.request", 'subscriptions are a list of {"id": topic}')
            unknown = [t["id"] for t in body if not _known_topic(t["id"])]
            if unknown:
                return error_response(400, "notification.topic.invalid", f"invalid topic(s): {', '.join(unknown)}")
            if request.method == "PUT":
                channel.topics.clear()
            for topic in body:
                channel.topics[topic["id"]] = None
        elif request.method == "DELETE":
            channel.topics.clear()
            return web.Response(status=204)
        entities = [{"id": t, "state": "Permitted", "selfUri": f"/api/v2/notifications/channels/{channel.id}/subscriptions"} for t in channel.topics]
        return web.json_response({"entities": entities})

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        channel = self._channel(request)
        if channel is None:
            return error_response(404, "not.found", "channel not found")
        ws = web.WebSocketResponse(autoping=True, heartbeat=None)
        await ws.prepare(request)
        self.connections += 1
        channel.sockets.add(ws)

        async def heartbeats() -> None:
            while not ws.closed:
                await asyncio.sleep(self.heartbeat_s)
                await _send(ws, {"topicName": "channel.metadata", "eventBody": {"message": "WebSocket Heartbeat"}})

        beat = asyncio.get_running_loop().create_task(heartbeats())
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    continue
                if isinstance(data, dict) and data.get("message") == "ping":
                    self.pings += 1
                    await _send(ws, {"topicName": "channel.metadata", "eventBody": {"message": "pong"}})
        finally:
            beat.cancel()
            channel.sockets.discard(ws)
        return ws

    async def active_calls(self, request: web.Request) -> web.Response:
        grant = self.fake.require_token(request, ("conversations", "conversations:readonly"), "conversation:communication:view")
        if grant.user_id is None:
            return error_response(400, "bad.request", USER_CONTEXT_REQUIRED)
        entities = [
            call_conversation_view(c)
            for c in self.state.conversations.values()
            if any(p.get("userId") == grant.user_id and _call_state(p) in ACTIVE_STATES for p in c.get("participants", ()))
        ]
        return web.json_response({"entities": entities, "pageSize": 25, "pageNumber": 1, "total": len(entities), "pageCount": 1})

    async def patch_participant(self, request: web.Request) -> web.Response:
        self.fake.require_token(request, ("conversations",), "conversation:communication:view")
        conversation_id, participant_id = request.match_info["conversationId"], request.match_info["participantId"]
        participant = self.state.participant(conversation_id, participant_id)
        if participant is None:
            return error_response(404, "not.found", "participant not found")
        try:
            body = json.loads(await request.read())
        except ValueError:
            return error_response(400, "bad.request", "The request body is not valid JSON")
        if not isinstance(body, dict) or ("muted" in body and not isinstance(body["muted"], bool)):
            return error_response(400, "bad.request", "muted must be true or false")
        state = _call_state(participant)
        if state != "connected":
            return error_response(409, "conversation.error.participant.not.connected", f"The participant's call is {state}, not connected.")
        self.set_call_state(conversation_id, participant_id, muted=body.get("muted"), publish=True)
        return web.Response(status=202)

    def _ws_base(self) -> str:
        return self.fake.url.replace("http://", "ws://", 1)


def install(app: web.Application, fake: FakeGenesys) -> None:
    hub = NotificationHub(fake)
    fake.state.extra["notifications"] = hub
    fake.state.listeners.append(hub.on_change)
    r = app.router
    r.add_post("/api/v2/notifications/channels", hub.create_channel)
    r.add_get("/api/v2/notifications/channels", hub.list_channels)
    r.add_route("HEAD", "/api/v2/notifications/channels/{channelId}", hub.head_channel)
    for method in ("GET", "PUT", "POST", "DELETE"):
        r.add_route(method, "/api/v2/notifications/channels/{channelId}/subscriptions", hub.subscriptions)
    r.add_get("/channels/{channelId}", hub.websocket)
    r.add_get("/api/v2/conversations/calls", hub.active_calls)
    r.add_patch("/api/v2/conversations/calls/{conversationId}/participants/{participantId}", hub.patch_participant)


def hub_of(fake: FakeGenesys) -> NotificationHub:
    return fake.state.extra["notifications"]


# -- live calls for tests ------------------------------------------------------------------------


def add_live_call(
    state: FakeState,
    conversation_id: str | None = None,
    *,
    user_id: str = AGENT_USER_ID,
    call_state: str = "connected",
    muted: bool = False,
) -> tuple[str, str]:
    """An ongoing inbound call of ``user_id``; returns (conversationId, the agent's participantId)."""
    conversation_id = conversation_id or str(uuid.uuid4())
    now = datetime.now(timezone.utc)
    started = iso(now - timedelta(seconds=30))
    agent_id = str(uuid.uuid4())
    customer = {
        "id": str(uuid.uuid4()),
        "startTime": started,
        "connectedTime": started,
        "name": "Customer",
        "purpose": "customer",
        "participantType": "External",
        "address": "tel:+15550100",
        "calls": [{"id": str(uuid.uuid4()), "state": "connected", "direction": "inbound", "muted": False, "held": False, "connectedTime": started}],
    }
    agent_call = {"id": str(uuid.uuid4()), "state": call_state, "initialState": "alerting", "direction": "inbound", "muted": muted, "held": False, "provider": "Edge"}
    if call_state == "connected":
        agent_call["connectedTime"] = iso(now - timedelta(seconds=25))
    agent = agent_participant(agent_id, user_id, [agent_call], start=started)
    state.conversations[conversation_id] = {
        "id": conversation_id,
        "startTime": started,
        "state": "connected",
        "participants": [customer, agent],
        "recordingState": "NONE",
        "selfUri": f"/api/v2/conversations/{conversation_id}",
    }
    return conversation_id, agent_id


def call_event_body(conversation: dict[str, Any]) -> dict[str, Any]:
    """A ``ConversationCallEventTopicCallConversation``: the call view with the event's participant fields."""
    view = call_conversation_view(conversation)
    view.pop("selfUri", None)  # events carry no selfUri
    return view


def _call_state(participant: dict[str, Any]) -> str:
    calls = participant.get("calls") or [{}]
    return str(calls[0].get("state") or "none")


def _known_topic(topic: str) -> bool:
    parts = topic.split(".")
    return len(parts) >= 3 and parts[0] == "v2" and all(parts)


async def _send(ws: web.WebSocketResponse, message: dict[str, Any]) -> None:
    if ws.closed:
        return
    try:
        await ws.send_str(json.dumps(message))
    except (ConnectionError, RuntimeError):
        pass  # the socket went away in between; the client sees the drop
