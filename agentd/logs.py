"""Logging: structlog for agentd, the stdlib ``logging`` of libraries bridged into it.

Logs go to stderr (stdout carries reports). On a terminal they are rendered for people,
otherwise (systemd's journal, a pipe) as one JSON object per line. Every record, ours
or a library's, passes :func:`redact_processor` last before rendering, so a token in an
httpx debug line or a secret in an exception message never reaches the output.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from agentd.redact import redact, redact_text

LIBRARY_LOGGERS = ("httpx", "httpcore", "websockets", "aioice", "aiortc", "asyncio", "botocore", "aiohttp")


def redact_processor(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Scrub secrets from every value of a log event (keys like ``token`` are blanked)."""
    return redact(event_dict)


def _drop_color_message(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    event_dict.pop("color_message", None)
    return event_dict


def _stringify_exception(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    if "exception" in event_dict and isinstance(event_dict["exception"], str):
        event_dict["exception"] = redact_text(event_dict["exception"])
    return event_dict


def configure(level: str = "warning", *, json: bool | None = None, stream: TextIO | None = None) -> None:
    """Set up structlog and the stdlib root logger once per process (idempotent)."""
    stream = stream or sys.stderr
    if json is None:
        json = not (hasattr(stream, "isatty") and stream.isatty())
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.WARNING

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_color_message,
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    renderer: Any
    if json:
        renderer = structlog.processors.JSONRenderer()
        final = [structlog.processors.format_exc_info, _stringify_exception, redact_processor, renderer]
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=hasattr(stream, "isatty") and stream.isatty(),
            exception_formatter=structlog.dev.plain_traceback,
        )
        final = [structlog.processors.format_exc_info, _stringify_exception, redact_processor, renderer]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.set_name("agentd")
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "agentd":
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # Libraries are chatty at DEBUG (httpx logs every request line); keep them one step quieter
    # unless agentd itself is at debug.
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(numeric if numeric <= logging.DEBUG else max(numeric, logging.WARNING))
