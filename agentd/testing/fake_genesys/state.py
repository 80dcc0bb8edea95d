"""The fake organisation's state: OAuth clients, tokens, users, conversations, faults.

Everything the fake serves lives in one mutable :class:`FakeState`, so tests (and the
notifications extension) can change it while the server runs: a participant's ``muted``
field, a new conversation, an integration going INACTIVE. Entity payloads are plain
dicts in the Platform API's own JSON shape (``reference/genesys-models.txt``).
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

ALL_SCOPES = frozenset(
    {
        "users:readonly",
        "conversations",
        "conversations:readonly",
        "analytics:readonly",
        "diagnostics",
        "diagnostics:readonly",
        "stations:readonly",
        "telephony:readonly",
        "integrations:readonly",
        "notifications",
    }
)


@dataclass
class OAuthClient:
    """An OAuth client of the organisation.

    ``secret`` is set for client-credentials clients; ``redirect_uris`` for code-grant
    (PKCE) clients, whose logins sign in as ``login_user_id``. ``scopes`` ``None`` means
    every scope; ``permissions`` ``None`` means every permission (the roles' grants).
    """

    client_id: str
    secret: str | None = None
    grants: frozenset[str] = frozenset({"client_credentials"})
    scopes: frozenset[str] | None = None
    permissions: frozenset[str] | None = None
    redirect_uris: tuple[str, ...] = ()
    login_user_id: str | None = None


@dataclass
class TokenGrant:
    """What an issued access token stands for."""

    client_id: str
    user_id: str | None
    scopes: frozenset[str] | None
    permissions: frozenset[str] | None
    expires_at: float
    grant: str


@dataclass
class AuthCode:
    client_id: str
    redirect_uri: str
    challenge: str
    method: str
    user_id: str | None
    expires_at: float


@dataclass
class Fault:
    """An injected misbehaviour for requests whose path matches ``path`` (a regex).

    ``kind``: ``"status"`` (answer ``status`` with a Genesys error body; 429 adds
    ``Retry-After``), ``"slow"`` (wait ``delay_s`` and then answer normally),
    ``"malformed"`` (200 with a body that is not JSON), ``"drop"`` (close the connection).
    ``times`` is how many matching requests it affects (then it is spent).
    """

    path: str
    kind: str = "status"
    status: int = 500
    times: int = 1
    retry_after: str | None = None
    delay_s: float = 0.0
    method: str = "*"
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return self.times > 0 and (self.method == "*" or self.method == method) and re.search(self.path, path) is not None


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int = 0
    correlation_id: str | None = None


@dataclass
class FakeState:
    """The fake organisation. Mutate freely; the server reads it on every request."""

    clients: dict[str, OAuthClient] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    conversations: dict[str, dict[str, Any]] = field(default_factory=dict)
    analytics: dict[str, dict[str, Any]] = field(default_factory=dict)
    stations: dict[str, dict[str, Any]] = field(default_factory=dict)
    user_stations: dict[str, dict[str, Any]] = field(default_factory=dict)
    phones: dict[str, dict[str, Any]] = field(default_factory=dict)
    integrations: dict[str, dict[str, Any]] = field(default_factory=dict)
    logcapture: dict[str, dict[str, Any]] = field(default_factory=dict)
    """userId -> LogCaptureUserConfiguration of users whose capture is enabled."""
    log_entries: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """userId -> LogEntry items ({level, message, timestamp in epoch ms})."""
    webrtc_diagnostics: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    """(conversationId, participantId) -> seed-000 payload; the real API has no such path,
    so an empty map (404 everywhere) is the realistic default."""
    tokens: dict[str, TokenGrant] = field(default_factory=dict)
    refresh_tokens: dict[str, TokenGrant] = field(default_factory=dict)
    auth_codes: dict[str, AuthCode] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    token_lifetime_s: int = 86400
    rotate_refresh_tokens: bool = True
    log_page_size: int = 3
    job_page_size: int = 2
    max_page_size: int = 100
    listeners: list[Callable[[str, dict[str, Any]], Any]] = field(default_factory=list)
    """Called with (topic, payload) when the fake changes something a notification would
    report; the notifications extension subscribes here."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Room for extensions (notifications channels, subscriptions)."""

    # -- faults ----------------------------------------------------------------------------

    def inject(self, path: str, kind: str = "status", **kw: Any) -> Fault:
        fault = Fault(path=path, kind=kind, **kw)
        self.faults.append(fault)
        return fault

    def take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.matches(method, path):
                fault.times -= 1
                fault.hits += 1
                return fault
        return None

    # -- tokens ----------------------------------------------------------------------------

    def issue_token(self, client: OAuthClient, grant: str, user_id: str | None) -> tuple[str, TokenGrant]:
        value = "fake-at-" + secrets.token_urlsafe(24)
        info = TokenGrant(
            client_id=client.client_id,
            user_id=user_id,
            scopes=client.scopes,
            permissions=client.permissions,
            expires_at=time.time() + self.token_lifetime_s,
            grant=grant,
        )
        self.tokens[value] = info
        return value, info

    def issue_refresh_token(self, info: TokenGrant) -> str:
        value = "fake-rt-" + secrets.token_urlsafe(24)
        self.refresh_tokens[value] = info
        return value

    def expire_tokens(self) -> None:
        """Make every access token stale at once (the next call gets 401)."""
        for info in self.tokens.values():
            info.expires_at = 0.0

    # -- lookups -----------------------------------------------------------------------------

    def participant(self, conversation_id: str, participant_id: str) -> dict[str, Any] | None:
        conversation = self.conversations.get(conversation_id)
        for p in (conversation or {}).get("participants", ()):
            if p.get("id") == participant_id:
                return p
        return None

    def emit(self, topic: str, payload: dict[str, Any]) -> None:
        for listener in list(self.listeners):
            listener(topic, payload)

    def requests_to(self, pattern: str, method: str | None = None) -> list[RecordedRequest]:
        return [r for r in self.requests if re.search(pattern, r.path) and (method is None or r.method == method)]


def new_id() -> str:
    return str(uuid.uuid4())
