"""Keep secrets out of logs, reports and exception text.

Three nets, because one is never enough:
- every resolved :class:`agentd.config.Secret` registers its value here, and any string
  passing through :func:`redact_text` has it replaced;
- keys whose name says "secret" (``token``, ``password``, ``authorization``, ...) have
  their values replaced whatever they hold;
- patterns catch credentials that were never configured (a bearer token returned by the
  OAuth server, a ``code_verifier`` in a form body).
"""

from __future__ import annotations

import re
import threading
from typing import Any

REDACTED = "[redacted]"

_SENSITIVE_KEY = re.compile(
    r"(?i)^(authorization|proxy-authorization|cookie|set-cookie|password|passwd|secret|"
    r"client_secret|credential|credentials|token|access_token|refresh_token|id_token|"
    r"code_verifier|api_key|apikey|x-api-key|private_key|hmac_key|signature)$"
)
_PATTERNS = (
    # Authorization header values
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}"), r"\1 " + REDACTED),
    # form bodies and query strings (an OAuth code only inside a query string: "code=1006"
    # in a log line is a WebSocket close code)
    (
        re.compile(
            r"(?i)\b(access_token|refresh_token|id_token|client_secret|code_verifier|password|token)"
            r"=[^&\s\"']+"
        ),
        r"\1=" + REDACTED,
    ),
    (re.compile(r"([?&]code=)[^&\s\"']+"), r"\1" + REDACTED),
    # JSON bodies
    (
        re.compile(
            r"(?i)\"(access_token|refresh_token|id_token|client_secret|code_verifier|password|token)\""
            r"\s*:\s*\"[^\"]*\""
        ),
        r'"\1": "' + REDACTED + '"',
    ),
)

_lock = threading.Lock()
_values: set[str] = set()
_MIN_SECRET_LEN = 4  # shorter values would turn ordinary words into [redacted]


def register_secret(value: str) -> None:
    """Remember ``value`` so that :func:`redact_text` removes it wherever it appears."""
    if value and len(value) >= _MIN_SECRET_LEN:
        with _lock:
            _values.add(value)


def is_sensitive_key(key: str) -> bool:
    return bool(_SENSITIVE_KEY.match(key))


def redact_text(text: str) -> str:
    if not text:
        return text
    with _lock:
        values = sorted(_values, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact(obj: Any, *, _depth: int = 0) -> Any:
    """A copy of ``obj`` (str, mapping, sequence) with every secret replaced."""
    if _depth > 20:
        return obj
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, dict):
        return {
            k: (REDACTED if isinstance(k, str) and is_sensitive_key(k) and v not in (None, "") else redact(v, _depth=_depth + 1))
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v, _depth=_depth + 1) for v in obj)
    if isinstance(obj, (bytes, bytearray)):
        return redact_text(bytes(obj).decode("utf-8", "replace"))
    return obj
