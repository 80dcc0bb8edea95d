"""The ``websocket`` check and the ``ws-probe`` / ``ws-echo`` commands."""

from __future__ import annotations

from agentd import hookimpl
from agentd.checks import Check, Plan
from agentd.commands import Command
from agentd.config import Config, ConfigSection
from agentd.errors import ConfigError

from . import echo, wsprobe
from .check import check_timeout_s, run_websocket
from .probe import check_url
from .settings import WebsocketSettings


@hookimpl
def agentd_config_sections():
    return [ConfigSection("websocket", WebsocketSettings, "the websocket check: targets, pings, timeouts")]


@hookimpl
def agentd_configure(config: Config) -> None:
    settings: WebsocketSettings = config.section("websocket")
    file = str(config.path) if config.path else None
    for i, url in enumerate(settings.targets):
        try:
            check_url(url)
        except Exception as exc:  # ProbeError(reason=config): a URL that cannot be probed
            raise ConfigError(str(exc), file=file, key=f"websocket.targets[{i}]") from None
    if settings.ca_file is not None and not settings.ca_file.is_file():
        raise ConfigError(f"CA file {settings.ca_file} does not exist", file=file, key="websocket.ca_file")


@hookimpl
def agentd_collect_checks(plan: Plan):
    settings: WebsocketSettings = plan.config.section("websocket")
    api_timeout = plan.config.section("genesys").timeout_s if settings.genesys_channel else 0.0
    return [
        Check(
            "websocket",
            "WebSocket signaling: opening phases, pings, heartbeats, close codes",
            run_websocket,
            timeout_s=check_timeout_s(settings, api_timeout),
            order=30,
        )
    ]


@hookimpl
def agentd_commands():
    return [
        Command(
            "ws-probe",
            "probe a WebSocket for a while: a line per ping, drops and reconnects, then a summary",
            wsprobe.add_arguments,
            wsprobe.run_command,
            description=(
                "Probe a ws:// or wss:// URL for --duration seconds: one line per ping with its round trip, "
                "every drop with its time, close code and reason, reconnects with backoff, then a summary "
                "(latency avg, p95, max). Exit 0: no drop and no lost pong; 1: drops, lost pongs or no connection."
            ),
        ),
        Command(
            "ws-echo",
            "run the seed-003 test backend: a WebSocket server answering each JSON message with its latency",
            echo.add_arguments,
            echo.run_command,
            description=(
                "A WebSocket server that greets each connection and answers each JSON message with "
                '{"type": "response", "latency_ms": ...} (its processing time). Runs until Ctrl-C or SIGTERM.'
            ),
        ),
    ]
