"""TLS helpers shared by probes: a client context with an optional extra CA, and a look at
the certificate a server presents even when it is not trusted (to name it in the report).

``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` in the environment replace the trust store of every
TLS connection (OpenSSL's and httpx's rule). One that names nothing usable would make
each connection fail with a bare ``FileNotFoundError`` (httpx) or trust nothing
(OpenSSL): :func:`trust_problem` names the variable and the file instead, and the
helpers raise it as a :class:`TrustStoreError` (a configuration error: exit 2).
"""

from __future__ import annotations

import asyncio
import os
import ssl
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509

from agentd.errors import ConfigError


class TrustStoreError(ConfigError):
    """``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` name a file or folder that cannot be used."""


def trust_problem() -> str | None:
    """What is wrong with the trust store the environment names, in one line; None if nothing."""
    cert_file = os.environ.get("SSL_CERT_FILE")
    if cert_file:
        if not os.path.exists(cert_file):
            return (f"the environment variable SSL_CERT_FILE names {cert_file}, which does not exist "
                    "(it replaces the trust store of every TLS connection: fix or unset it)")
        if not os.path.isfile(cert_file):
            return f"the environment variable SSL_CERT_FILE names {cert_file}, which is not a file (fix or unset it)"
        try:
            ssl.create_default_context(cafile=cert_file)
        except PermissionError:
            return f"the environment variable SSL_CERT_FILE names {cert_file}, which this user cannot read (fix or unset it)"
        except (ssl.SSLError, OSError, ValueError) as exc:
            return f"the environment variable SSL_CERT_FILE names {cert_file}, which holds no usable certificate ({exc}; fix or unset it)"
    cert_dir = os.environ.get("SSL_CERT_DIR")
    if cert_dir and not os.path.isdir(cert_dir.split(os.pathsep)[0]):
        return (f"the environment variable SSL_CERT_DIR names {cert_dir}, which is not a folder "
                "(it replaces the trust store of every TLS connection: fix or unset it)")
    return None


def check_trust_store() -> None:
    """Raise :class:`TrustStoreError` when the environment names an unusable trust store."""
    problem = trust_problem()
    if problem is not None:
        raise TrustStoreError(problem)


def client_context(ca_file: Path | str | None = None) -> ssl.SSLContext:
    """The system's trust store, plus ``ca_file`` when given (a private CA, a test CA)."""
    check_trust_store()
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


def http_verify(ca_file: Path | str | None = None) -> ssl.SSLContext | bool:
    """What an httpx client's ``verify`` gets: our context with ``ca_file``, else True
    (httpx's own store, which honours ``SSL_CERT_FILE``), after checking the environment."""
    if ca_file:
        return client_context(ca_file)
    check_trust_store()
    return True


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
