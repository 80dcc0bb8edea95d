"""``signaling.websocket_drop`` evidence: the drops the daemon's notifications monitor
recorded in the local timeline (``ws.drop`` events), for the run's window."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Sequence

from agentd.evidence import EvidenceRequest
from agentd.model import Evidence, isoformat

MAX_ITEMS = 50


@dataclass(frozen=True)
class WebsocketDropSource:
    """Reads the timeline read-only; no timeline (no daemon ran here) means no items."""

    history_h: float = 24.0
    name: str = "notifications"
    timeout_s: float = 5.0

    async def collect(self, request: EvidenceRequest) -> Sequence[Evidence]:
        return await asyncio.to_thread(self._collect, request)

    def _collect(self, request: EvidenceRequest) -> list[Evidence]:
        from agentd.timeline import open_existing

        if request.window is not None:
            start, end = request.window
        else:
            end = datetime.now(timezone.utc)
            start = end - timedelta(hours=self.history_h)
        timeline = open_existing()
        if timeline is None:
            return []
        try:
            events = timeline.events(start, end, kinds=["ws.drop"])
        finally:
            timeline.close()
        items = []
        for index, event in enumerate(events[-MAX_ITEMS:]):
            data = event.get("data") or {}
            code = data.get("close_code")
            reason = data.get("reason") or ""
            items.append(
                Evidence(
                    id=f"signaling.websocket_drop:{index + 1}",
                    source=self.name,
                    kind="signaling.websocket_drop",
                    summary=f"notifications WebSocket dropped at {event['at']}" + (f" with close code {code}" if code is not None else "") + (f" ({reason})" if reason else ""),
                    window_start=isoformat(start),
                    window_end=isoformat(end),
                    data={"at": event["at"], "close_code": code, "reason": reason},
                )
            )
        return items
