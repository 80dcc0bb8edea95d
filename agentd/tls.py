"""TLS helpers shared by probes: a client context with an optional extra CA, and a look at
the certificate a server presents even when it is not trusted (to name it in the report)."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509


def client_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """The system's trust store, plus ``ca_file`` when given (a private CA, a test CA)."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


@dataclass(frozen=True)
class CertificateInfo:
    subject: str
    issuer: str
    not_after: datetime
    self_signed: bool

    @property
    def days_left(self) -> float:
        return (self.not_after - datetime.now(timezone.utc)).total_seconds() / 86400.0

    def to_dict(self) -> dict:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "not_after": self.not_after.isoformat(),
            "days_left": round(self.days_left, 1),
            "self_signed": self.self_signed,
        }


def describe_der(der: bytes) -> CertificateInfo:
    cert = x509.load_der_x509_certificate(der)
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_after=cert.not_valid_after_utc,
        self_signed=cert.subject == cert.issuer,
    )


async def peek_certificate(address: str, port: int, server_hostname: str, *, timeout_s: float = 2.0) -> CertificateInfo | None:
    """Connect without verification only to read the presented certificate; None if that fails too."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    writer = None
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(address, port, ssl=context, server_hostname=server_hostname)
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return describe_der(der) if der else None
    except (OSError, TimeoutError, ssl.SSLError, ValueError):
        return None
    finally:
        if writer is not None:
            writer.close()
