"""The Genesys side of signaling: notification channels, subscriptions, the agent's calls.

All through the issue-4 client (``plugins/genesys/client.py``): tokens, retries, 429 and
5xx handling and the error tree come from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from agentd.errors import ConfigError, GenesysError, MalformedResponse
from agentd_plugins.genesys.client import GenesysClient, stored_user_id

CALLS_TOPIC = "v2.users.{}.conversations.calls"
STATION_TOPIC = "v2.users.{}.station"
SOCKET_CLOSING_TOPIC = "v2.system.socket_closing"
ACTIVE_STATES = frozenset({"alerting", "dialing", "contacting", "offering", "connected"})
ENDED_STATES = frozenset({"disconnected", "terminated"})


@dataclass(frozen=True)
class Channel:
    id: str
    connect_uri: str
    expires: str | None


@dataclass(frozen=True)
class AgentCall:
    """The agent's own participant on one call."""

    conversation_id: str
    participant_id: str
    state: str
    muted: bool
    address: str | None = None
    direction: str | None = None

    @property
    def connected(self) -> bool:
        return self.state == "connected"

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def to_dict(self) -> dict[str, Any]:
        return {
            "conversationId": self.conversation_id,
            "participantId": self.participant_id,
            "state": self.state,
            "muted": self.muted,
            "address": self.address,
            "direction": self.direction,
        }


def uses_client_credentials(settings) -> bool:
    return settings.auth == "client_credentials" or (settings.auth == "auto" and settings.has_client_credentials)


async def agent_user_id(client: GenesysClient) -> str:
    """``[genesys] user_id``, else the user of ``agentd login``, else ``GET /api/v2/users/me``.

    Client credentials have no user of their own: without ``user_id`` that is a
    :class:`ConfigError` naming the key, not a request that is bound to fail.
    """
    known = stored_user_id(client.settings)
    if known:
        return known
    if uses_client_credentials(client.settings):
        raise ConfigError("set the agent's user id: client credentials have no user of their own", key="genesys.user_id")
    me = await client.get("/api/v2/users/me")
    if not isinstance(me, dict) or not isinstance(me.get("id"), str):
        raise MalformedResponse("GET /api/v2/users/me: no user id in the answer", path="/api/v2/users/me")
    return me["id"]


async def create_channel(client: GenesysClient) -> Channel:
    body = await client.post("/api/v2/notifications/channels")
    if not isinstance(body, dict) or not isinstance(body.get("id"), str) or not isinstance(body.get("connectUri"), str):
        raise MalformedResponse("POST /api/v2/notifications/channels: no id or connectUri in the answer", path="/api/v2/notifications/channels")
    return Channel(body["id"], body["connectUri"], body.get("expires"))


async def subscribe(client: GenesysClient, channel: Channel, topics: Iterable[str]) -> list[str]:
    """Replace the channel's subscriptions with ``topics``; returns the topics that were permitted.

    A topic the API rejects (``state: Rejected``) raises :class:`GenesysError` naming it
    and the missing permissions.
    """
    path = f"/api/v2/notifications/channels/{channel.id}/subscriptions"
    body = await client.put(path, [{"id": topic} for topic in topics])
    entities = body.get("entities") if isinstance(body, dict) else None
    if not isinstance(entities, list):
        raise MalformedResponse(f"PUT {path}: no entities in the answer", path=path)
    rejected = [e for e in entities if isinstance(e, dict) and e.get("state") == "Rejected"]
    if rejected:
        names = ", ".join(f"{e.get('id')} ({e.get('rejectionReason') or ', '.join(e.get('missingPermissions') or [])})" for e in rejected)
        raise GenesysError(f"subscription rejected: {names}", path=path)
    return [e["id"] for e in entities if isinstance(e, dict) and isinstance(e.get("id"), str)]


def own_participant(conversation: dict[str, Any], user_id: str) -> AgentCall | None:
    """The agent's participant in a CallConversation (or a calls-topic event body), if any.

    When the agent has several participants (a transfer back, a reconnect), the active
    one wins over ended ones.
    """
    mine = []
    for p in conversation.get("participants") or ():
        if not isinstance(p, dict):
            continue
        user = p.get("user") or {}  # CallMediaParticipant and the event's participant: user.id (no userId)
        if (user.get("id") if isinstance(user, dict) else None) == user_id:
            mine.append(p)
    if not mine or not isinstance(conversation.get("id"), str):
        return None
    mine.sort(key=lambda p: (p.get("state") in ACTIVE_STATES, p.get("state") == "connected"), reverse=True)
    p = mine[0]
    return AgentCall(
        conversation_id=conversation["id"],
        participant_id=str(p.get("id")),
        state=str(p.get("state") or "none"),
        muted=bool(p.get("muted")),
        address=p.get("address"),
        direction=p.get("direction"),
    )


async def active_calls(client: GenesysClient, user_id: str) -> list[AgentCall]:
    """The agent's active calls (``GET /api/v2/conversations/calls``, which needs the
    agent's own token: ``agentd login``)."""
    found: list[AgentCall] = []
    async for page in client.pages("/api/v2/conversations/calls"):
        for conversation in page:
            if isinstance(conversation, dict):
                call = own_participant(conversation, user_id)
                if call is not None and call.active:
                    found.append(call)
    return found


async def read_call(client: GenesysClient, conversation_id: str, user_id: str) -> AgentCall | None:
    """Re-read one call (``GET /api/v2/conversations/calls/{id}``): the agent's participant now."""
    conversation = await client.get(f"/api/v2/conversations/calls/{conversation_id}")
    if not isinstance(conversation, dict):
        raise MalformedResponse(f"GET /api/v2/conversations/calls/{conversation_id}: not an object", path="/api/v2/conversations/calls")
    return own_participant(conversation, user_id)


async def set_muted(client: GenesysClient, call: AgentCall, muted: bool) -> None:
    await client.patch(f"/api/v2/conversations/calls/{call.conversation_id}/participants/{call.participant_id}", {"muted": muted})
