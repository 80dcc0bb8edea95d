"""The ``http`` sink: POST each report's JSON to a collector.

Present = enabled (``[sinks.http]`` with a ``url``). Every request carries
``Idempotency-Key: <report id>``: a report sent again after a crash must be stored once
by the collector. Authentication is a bearer token, an HMAC signature, or both:

    X-Agentd-Timestamp: <unix seconds>
    X-Agentd-Signature: sha256=<hex HMAC-SHA256(hmac_key, "<timestamp>." + body)>

Answers: 2xx (and 409, "I have it already") acknowledge. 408, 425, 429 and 5xx, and
transport failures, are retried with jittered exponential backoff (``Retry-After``
honoured up to ``max_backoff_s``). 401, 403, 404, 405, 407 are about the collector (a
wrong token or URL): the reports stay in the spool until the configuration is fixed, and
the sink is asked once per flush. Any other 4xx (400, 413, 422, ...) refuses the report
itself for good: the spool moves it aside (``agentd reports list`` shows why). A request sent but not answered within ``timeout_s``
is not posted again in the same delivery: a stalled collector may be storing it, and
copies would only pile up; the next flush asks again.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import structlog

from agentd import hookimpl
from agentd.config import Config, ConfigSection, Secret
from agentd.errors import ConfigError, DeliveryError
from agentd.model import Report
from agentd.sinks import RETRY_STATUSES, refused_for_good
from agentd.tls import TrustStoreError, http_verify

log = structlog.get_logger("agentd.sinks.http")

ACK_STATUSES = frozenset({409})  # the collector already holds this idempotency key


@dataclass(frozen=True)
class HttpSinkSettings:
    """``[sinks.http]``."""

    url: str = field(metadata={"help": "the collector's URL (http or https); reports are POSTed here"})
    token: Secret | None = field(default=None, metadata={"help": "bearer token (Authorization: Bearer ...)"})
    hmac_key: Secret | None = field(default=None, metadata={"help": "key of the X-Agentd-Signature HMAC-SHA256"})
    timeout_s: float = field(default=10.0, metadata={"help": "deadline of one request", "min": 0.1, "max": 600})
    retries: int = field(default=3, metadata={"help": "retries after the first attempt", "min": 0, "max": 20})
    backoff_s: float = field(default=0.5, metadata={"help": "first backoff; doubles per retry, with jitter", "min": 0, "max": 60})
    max_backoff_s: float = field(default=10.0, metadata={"help": "longest wait between retries (Retry-After too)", "min": 0, "max": 600})
    ca_file: Path | None = field(default=None, metadata={"help": "CA bundle for an https collector with a private CA"})


def signature(key: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(key.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class HttpSink:
    name = "http"

    def __init__(self, settings: HttpSinkSettings) -> None:
        self.settings = settings
        parts = urlsplit(settings.url)
        # the URL as messages show it: never with user:password@ from the configuration
        host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
        self.where = parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")).geturl() if host else settings.url

    def headers(self, report: Report, payload: bytes) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": report.id,
            "User-Agent": f"agentd/{report.agent.version}",
        }
        if self.settings.token is not None:
            headers["Authorization"] = f"Bearer {self.settings.token.reveal()}"
        if self.settings.hmac_key is not None:
            stamp = str(int(time.time()))
            headers["X-Agentd-Timestamp"] = stamp
            headers["X-Agentd-Signature"] = signature(self.settings.hmac_key.reveal(), stamp, payload)
        return headers

    async def deliver(self, report: Report, payload: bytes) -> None:
        s = self.settings
        try:
            verify = http_verify(s.ca_file)
        except TrustStoreError as exc:  # the environment's, for every report: the sink is down until it is fixed
            raise DeliveryError(str(exc)) from None
        last = "not tried"
        async with httpx.AsyncClient(timeout=s.timeout_s, verify=verify, follow_redirects=False) as client:
            for attempt in range(s.retries + 1):
                wait: float | None = None
                try:
                    response = await client.post(s.url, content=payload, headers=self.headers(report, payload))
                except httpx.ReadTimeout:
                    # The request went out and no answer came: the collector may be storing
                    # it. Posting again now only piles copies onto a stalled collector; the
                    # next flush asks again (the Idempotency-Key keeps it stored once).
                    raise DeliveryError(
                        f"collector {self.where} did not answer within {s.timeout_s:g} s for report {report.id} "
                        "(ReadTimeout); not posted again until the next flush"
                    ) from None
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                else:
                    status = response.status_code
                    if 200 <= status < 300 or status in ACK_STATUSES:
                        return
                    last = f"HTTP {status} {response.reason_phrase}".strip()
                    if status not in RETRY_STATUSES:
                        hint = " (check [sinks.http] token / hmac_key)" if status in (401, 403) else ""
                        raise DeliveryError(f"collector {self.where} refused report {report.id}: {last}{hint}",
                                            retryable=False, refused=refused_for_good(status))
                    wait = retry_after(response.headers.get("Retry-After"))
                if attempt == s.retries:
                    break
                delay = backoff(attempt, s.backoff_s, s.max_backoff_s) if wait is None else min(wait, s.max_backoff_s)
                log.info("collector not ready; retrying", url=self.where, report=report.id, error=last, in_s=round(delay, 2))
                await asyncio.sleep(delay)
        raise DeliveryError(f"collector {self.where} did not take report {report.id} after {s.retries + 1} attempt(s): {last}")


def backoff(attempt: int, base: float, cap: float) -> float:
    """Exponential with jitter: half fixed, half random, so many PCs do not retry in step."""
    ceiling = min(cap, base * (2**attempt))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


@hookimpl
def agentd_config_sections():
    return [ConfigSection("sinks.http", HttpSinkSettings, "POST reports to a collector (present = enabled)", optional=True)]


@hookimpl
def agentd_configure(config: Config) -> None:
    settings: HttpSinkSettings | None = config.section("sinks.http")
    if settings is None:
        return
    parts = urlsplit(settings.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"must be an http:// or https:// URL, got {settings.url!r}", file=str(config.path) if config.path else None, key="sinks.http.url")


@hookimpl
def agentd_collect_sinks(config: Config):
    settings: HttpSinkSettings | None = config.section("sinks.http")
    return [HttpSink(settings)] if settings is not None else []
