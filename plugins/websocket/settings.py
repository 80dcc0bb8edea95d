"""The ``[websocket]`` section."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class WebsocketSettings:
    """``[websocket]``: which WebSocket endpoints the ``websocket`` check probes, and how."""

    targets: tuple[str, ...] = field(
        default=(), metadata={"help": "ws:// or wss:// URLs to probe (AppFoundry, bot or integration endpoints)"}
    )
    genesys_channel: bool = field(
        default=True,
        metadata={"help": "with [genesys] credentials, also open a notifications channel and subscribe to the agent's calls"},
    )
    ping_count: int = field(default=3, metadata={"help": "ping/pong round trips per target", "min": 1, "max": 100})
    ping_interval_s: float = field(default=0.2, metadata={"help": "pause between pings", "min": 0.0, "max": 30})
    connect_timeout_s: float = field(
        default=5.0, metadata={"help": "deadline of the opening (DNS, TCP, TLS, upgrade)", "min": 0.1, "max": 60}
    )
    pong_timeout_s: float = field(default=2.0, metadata={"help": "a pong later than this counts as missing", "min": 0.05, "max": 60})
    observe_s: float = field(
        default=0.0, metadata={"help": "stay connected this long after the pings, watching heartbeats and drops", "min": 0, "max": 300}
    )
    heartbeat_timeout_s: float = field(
        default=35.0,
        metadata={"help": "Genesys channels: no heartbeat for this long (while observing) is a missed heartbeat", "min": 0.1},
    )
    slow_rtt_ms: float = field(default=500.0, metadata={"help": "a median ping round trip above this is a warning", "min": 0})
    slow_connect_ms: float = field(default=3000.0, metadata={"help": "an opening slower than this is a warning", "min": 0})
    large_message_bytes: int = field(
        default=10 * 1024, metadata={"help": "received messages larger than this are reported", "min": 1}
    )
    ca_file: Path | None = field(default=None, metadata={"help": "extra CA bundle to trust for wss:// targets"})
