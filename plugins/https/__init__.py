"""The ``https`` check: TCP, TLS and time to first byte to the Genesys Cloud API and login hosts."""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from agentd import hookimpl
from agentd.checks import Check, CheckContext, Outcome, Plan
from agentd.config import ConfigSection
from agentd.errors import ProbeError
from agentd.net import resolve
from agentd.tls import client_context, describe_der, peek_certificate


@dataclass(frozen=True)
class HttpsSettings:
    """``[https]``"""

    timeout_s: float = field(default=3.0, metadata={"help": "deadline of one endpoint (all phases)", "min": 0.2, "max": 60})
    slow_ttfb_ms: float = field(default=1000.0, metadata={"help": "time to first byte above this is a warning"})
    cert_warn_days: float = field(default=14.0, metadata={"help": "warn when a certificate expires sooner"})


@hookimpl
def agentd_config_sections():
    return [ConfigSection("https", HttpsSettings, "the https check")]


@hookimpl
def agentd_collect_checks(plan: Plan):
    settings: HttpsSettings = plan.config.section("https")
    return [Check("https", "HTTPS to the Genesys Cloud API and login hosts", run_https, timeout_s=settings.timeout_s + 1.0, order=20)]


async def probe_endpoint(url: str, *, context: ssl.SSLContext, timeout_s: float) -> dict:
    """One URL: resolve, connect, TLS, send a GET, time the first byte of the answer."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    row: dict = {"url": url, "host": host, "port": port, "ok": False}
    deadline = time.monotonic() + timeout_s
    try:
        found = await resolve(host, port, timeout_s=timeout_s)
    except ProbeError as exc:
        row.update(reason=exc.reason, error=str(exc))
        return row
    row["resolve_ms"] = round(found.elapsed_ms, 1)
    address = found.addresses[0]
    writer = None
    try:
        async with asyncio.timeout(max(0.05, deadline - time.monotonic())):
            t0 = time.monotonic()
            reader, writer = await asyncio.open_connection(address, port)
            row["connect_ms"] = round((time.monotonic() - t0) * 1000, 1)
            if parts.scheme == "https":
                t1 = time.monotonic()
                await writer.start_tls(context, server_hostname=host)
                row["handshake_ms"] = round((time.monotonic() - t1) * 1000, 1)
                ssl_object = writer.get_extra_info("ssl_object")
                cert = describe_der(ssl_object.getpeercert(binary_form=True))
                row["certificate"] = cert.to_dict()
                row["tls_version"] = ssl_object.version()
            path = parts.path or "/"
            request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: agentd\r\nAccept: */*\r\nConnection: close\r\n\r\n"
            t2 = time.monotonic()
            writer.write(request.encode("ascii"))
            await writer.drain()
            status_line = await reader.readline()
            row["ttfb_ms"] = round((time.monotonic() - t2) * 1000, 1)
            fields = status_line.decode("latin-1").split()
            if len(fields) < 2 or not fields[0].startswith("HTTP/"):
                row.update(reason="protocol", error=f"{host}:{port} did not answer with HTTP")
                return row
            row["http_status"] = int(fields[1])
            row["ok"] = True
    except TimeoutError:
        phase = "connect" if "connect_ms" not in row else "TLS handshake" if "handshake_ms" not in row and parts.scheme == "https" else "first byte"
        row.update(reason="timeout", error=f"{host}:{port}: no answer within {timeout_s:g} s ({phase})")
    except ssl.SSLCertVerificationError as exc:
        seen = await peek_certificate(address, port, host, timeout_s=max(0.5, deadline - time.monotonic()))
        row.update(reason="tls_untrusted", error=f"{host}:{port}: certificate not trusted ({exc.verify_message})")
        if seen is not None:
            row["certificate"] = seen.to_dict()
            row["error"] += f"; it names {seen.subject}, issued by {seen.issuer}"
    except ssl.SSLError as exc:
        row.update(reason="tls", error=f"{host}:{port}: TLS failed ({exc.reason or exc})")
    except ConnectionRefusedError:
        row.update(reason="refused", error=f"{host}:{port}: connection refused")
    except OSError as exc:
        row.update(reason="unreachable", error=f"{host}:{port}: {exc.strerror or exc}")
    finally:
        if writer is not None:
            writer.close()
    return row


async def run_https(ctx: CheckContext) -> Outcome:
    settings: HttpsSettings = ctx.section("https")
    genesys = ctx.section("genesys")
    context = client_context(genesys.ca_file)
    targets = {"api": genesys.api_base, "login": genesys.login_base}
    rows = await asyncio.gather(*(probe_endpoint(url, context=context, timeout_s=settings.timeout_s) for url in targets.values()))
    for role, row in zip(targets, rows):
        row["role"] = role
    details = {"endpoints": rows}
    ok = [r for r in rows if r["ok"]]
    metrics = {
        "ttfb_ms": max((r["ttfb_ms"] for r in ok), default=None),
        "handshake_ms": max((r.get("handshake_ms", 0.0) for r in ok), default=None),
        "cert_days_left": min((r["certificate"]["days_left"] for r in ok if "certificate" in r), default=None),
    }
    failed = [r for r in rows if not r["ok"]]
    if failed:
        if all(r["reason"] == "dns" for r in failed):
            names = ", ".join(r["host"] for r in failed)
            return Outcome.failed(f"could not resolve {names}, so no HTTPS connection was tried", metrics=metrics, details=details)
        return Outcome.failed("; ".join(r["error"] for r in failed), metrics=metrics, details=details)
    warnings = []
    for r in rows:
        days = r.get("certificate", {}).get("days_left")
        if days is not None and days < settings.cert_warn_days:
            warnings.append(f"{r['host']} certificate expires in {days:.0f} days")
        if r["ttfb_ms"] > settings.slow_ttfb_ms:
            warnings.append(f"{r['host']} first byte after {r['ttfb_ms']:.0f} ms")
    if warnings:
        return Outcome.warned("; ".join(warnings), metrics=metrics, details=details)
    return Outcome.passed(
        ", ".join(f"{r['host']} HTTP {r['http_status']} in {r['ttfb_ms']:.0f} ms" for r in rows), metrics=metrics, details=details
    )
