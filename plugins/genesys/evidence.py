"""What the evidence sources share: the base class, error items, and memoised fetches.

Every source is a :class:`GenesysSource`: ``collect`` turns a Genesys failure into an
evidence item instead of an exception, so one broken endpoint costs one item, never the
report. 401 becomes a ``genesys.auth`` item and 403 a ``genesys.permission`` item naming
the permission (the inputs of ``platform.auth_failed`` / ``platform.permission_missing``);
anything else an ``error`` item of the source's own kind with the correlation id.

Fetches several sources need (the conversation, its analytics details, the agent's user
id) run once per request through :meth:`agentd.evidence.EvidenceRequest.memo`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable, Sequence

import structlog

from agentd.errors import AuthError, GenesysError, MalformedResponse, NotFound, PermissionMissing
from agentd.evidence import EvidenceRequest
from agentd.model import Evidence, isoformat, parse_time
from agentd.redact import redact_text

from .client import GenesysClient, shared_client, stored_user_id
from .settings import GenesysSettings

log = structlog.get_logger("agentd.genesys.evidence")

AGENT_PURPOSES = ("agent", "user")


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    def widened(self, seconds: float) -> Window:
        return Window(self.start - timedelta(seconds=seconds), self.end + timedelta(seconds=seconds))

    @property
    def interval(self) -> str:
        """Genesys ``interval``: ``start/end`` in ISO-8601."""
        return f"{isoformat(self.start)}/{isoformat(self.end)}"


class GenesysSource:
    """Base of the Genesys evidence sources. Subclasses set ``name``/``kind`` and ``gather``."""

    name = "genesys"
    kind = "genesys"
    timeout_s = 30.0

    def __init__(self, settings: GenesysSettings, client: GenesysClient | None = None) -> None:
        self.settings = settings
        self._client = client

    @property
    def client(self) -> GenesysClient:
        return self._client or shared_client(self.settings)

    async def collect(self, request: EvidenceRequest) -> Sequence[Evidence]:
        try:
            return list(await self.gather(request))
        except GenesysError as exc:
            return [self.failure(exc)]
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
            # an answer of the documented status but not the documented shape
            log.warning("unexpected API answer", source=self.name, error=f"{type(exc).__name__}: {exc}")
            return [self.item(f"the API answered in an unexpected shape ({type(exc).__name__}: {redact_text(str(exc))[:200]})", {"error": "MalformedResponse"}, status="error")]

    async def gather(self, request: EvidenceRequest) -> Iterable[Evidence]:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- items ---------------------------------------------------------------------------

    def item(self, summary: str, data: dict[str, Any], *, key: str | None = None, window: Window | None = None, status: str = "ok") -> Evidence:
        if window is None and status == "ok":  # a state read now (station, integration): its window is this moment
            from agentd.model import utcnow

            now = utcnow()
            window = Window(now, now)
        return Evidence(
            id=f"{self.kind}:{key}" if key else self.kind,
            source=self.name,
            kind=self.kind,
            summary=summary,
            status=status,
            window_start=isoformat(window.start) if window else None,
            window_end=isoformat(window.end) if window else None,
            data=data,
        )

    def skipped(self, summary: str, *, key: str | None = None, **data: Any) -> Evidence:
        return self.item(summary, dict(data), key=key, status="skipped")

    def failure(self, exc: GenesysError, *, key: str | None = None) -> Evidence:
        """The item for a failed call: auth / permission items, or an error of this kind."""
        message = redact_text(str(exc))
        common = {"status": exc.status, "correlationId": exc.correlation_id, "path": exc.path}
        suffix = f":{key}" if key else ""
        # 401 and 403 get kinds of their own (platform.auth_failed / permission_missing read them)
        if isinstance(exc, AuthError):
            kind, extra = "genesys.auth", {"grant": getattr(exc, "grant", None)}
        elif isinstance(exc, PermissionMissing):
            kind, extra = "genesys.permission", {"permission": exc.permission}
        else:
            return self.item(message, {**common, "error": type(exc).__name__}, key=key, status="error")
        return Evidence(
            id=f"{kind}:{self.name}{suffix}", source=self.name, kind=kind, status="error", summary=message, data={**common, **extra}
        )

# -- shared fetches ----------------------------------------------------------------------


async def conversation(request: EvidenceRequest, client: GenesysClient) -> dict[str, Any]:
    """``GET /api/v2/conversations/{id}``, once per request."""
    return await _shared_object(request, client, "genesys.conversation", f"/api/v2/conversations/{request.conversation_id}")


async def analytics_details(request: EvidenceRequest, client: GenesysClient) -> dict[str, Any]:
    """``GET /api/v2/analytics/conversations/{id}/details``, once per request."""
    return await _shared_object(request, client, "genesys.analytics_details", f"/api/v2/analytics/conversations/{request.conversation_id}/details")


async def _shared_object(request: EvidenceRequest, client: GenesysClient, key: str, path: str) -> dict[str, Any]:
    assert request.conversation_id
    body = await request.memo(key, lambda: client.get(path))
    if not isinstance(body, dict):
        raise MalformedResponse(f"{path}: expected a JSON object, got {type(body).__name__}", path=path)
    return body


def agent_participants(participants: Iterable[Any], user_id: str | None) -> list[dict[str, Any]]:
    """The agent's participants: purpose agent/user, and the agent's user id when known.

    Several when the call was split by reconnects (session fragmentation).
    """
    found = [p for p in participants if isinstance(p, dict) and p.get("purpose") in AGENT_PURPOSES]
    if user_id:
        mine = [p for p in found if p.get("userId") == user_id]
        if mine:
            return mine
    if found:
        first_user = found[0].get("userId")
        return [p for p in found if p.get("userId") == first_user]
    return []


async def agent_user_id(request: EvidenceRequest, client: GenesysClient, settings: GenesysSettings) -> str | None:
    """The agent: configured or logged-in user, else the agent participant of the conversation."""
    configured = stored_user_id(settings)
    if configured:
        return configured
    if not request.conversation_id:
        return None
    try:
        body = await conversation(request, client)
    except AuthError:
        raise  # no point going on: the caller's item says 401
    except GenesysError:
        return None
    agents = agent_participants(body.get("participants") or (), None)
    return agents[0].get("userId") if agents else None


async def conversation_window(request: EvidenceRequest, client: GenesysClient) -> Window | None:
    """The call's time window from the conversation (start to end, or to now while it runs)."""
    if request.window:
        return Window(*request.window)
    if not request.conversation_id:
        return None
    try:
        body = await conversation(request, client)
    except AuthError:
        raise
    except GenesysError:
        return None
    return window_of(body.get("startTime"), body.get("endTime"))


def window_of(start: Any, end: Any) -> Window | None:
    begin = time_or_none(start)
    if begin is None:
        return None
    finish = time_or_none(end)
    if finish is None:
        from agentd.model import utcnow

        finish = utcnow()
    return Window(begin, max(begin, finish))


def time_or_none(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_time(value)
    except ValueError:
        return None


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, NotFound)
