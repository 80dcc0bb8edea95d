"""Secrets at rest, tokens on the wire, rate limits.

- Passwords: argon2id with the library's defaults (slow on purpose: a leaked table must
  not give passwords away).
- Enrollment keys and install tokens: ``<kind>.<id>.<secret>``. The id is stored in
  clear to find the row; the 256-bit random secret only as an argon2id hash, with
  lighter parameters than a password's (a random secret cannot be guessed, so the hash
  need not be slow; it only must not be reversible). A process remembers a token it
  verified (as a SHA-256 of it) so a reconnecting PC costs one hash, not an argon2 run;
  revocation is read from the database every time, so it takes effect at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

PASSWORDS = PasswordHasher()
TOKENS = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)

ENROLL_KEY_KIND = "agentd-ek"
INSTALL_TOKEN_KIND = "agentd-pc"


@dataclass(frozen=True)
class IssuedSecret:
    """A freshly made key or token: ``text`` is shown once, ``hash`` is stored."""

    id: str
    text: str
    hash: str


def issue(kind: str) -> IssuedSecret:
    ident = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return IssuedSecret(ident, f"{kind}.{ident}.{secret}", TOKENS.hash(secret))


def split(kind: str, text: str) -> tuple[str, str] | None:
    """(id, secret) of a presented key or token of ``kind``, or None when malformed."""
    parts = text.strip().split(".")
    if len(parts) != 3 or parts[0] != kind or not parts[1] or not parts[2] or len(text) > 200:
        return None
    return parts[1], parts[2]


def verify_secret(stored_hash: str, secret: str) -> bool:
    try:
        return TOKENS.verify(stored_hash, secret)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def hash_password(password: str) -> str:
    return PASSWORDS.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    try:
        return PASSWORDS.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def fingerprint(text: str) -> str:
    """SHA-256 hex: how session ids are stored and verified tokens remembered."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass
class VerifiedCache:
    """Fingerprints of secrets this process verified, for ``ttl_s``."""

    ttl_s: float = 600.0
    entries: dict[str, float] = field(default_factory=dict)
    limit: int = 100_000

    def has(self, key: str) -> bool:
        until = self.entries.get(key)
        if until is None:
            return False
        if until < time.monotonic():
            self.entries.pop(key, None)
            return False
        return True

    def add(self, key: str) -> None:
        if len(self.entries) >= self.limit:
            self.entries.clear()
        self.entries[key] = time.monotonic() + self.ttl_s

    def discard(self, key: str) -> None:
        self.entries.pop(key, None)


@dataclass
class RateLimiter:
    """A token bucket per key (client address, PC): ``burst`` at once, then ``per_s``."""

    per_s: float
    burst: float
    buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        tokens, last = self.buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.per_s)
        if tokens < 1.0:
            self.buckets[key] = (tokens, now)
            return False
        self.buckets[key] = (tokens - 1.0, now)
        if len(self.buckets) > 200_000:  # bounded memory under a flood of addresses
            self.buckets.clear()
        return True

    def blocked(self, key: str) -> bool:
        """Would ``allow`` refuse now? (without using a token: failures only count)"""
        tokens, last = self.buckets.get(key, (self.burst, time.monotonic()))
        return min(self.burst, tokens + (time.monotonic() - last) * self.per_s) < 1.0

    def retry_after_s(self, key: str) -> int:
        tokens, _ = self.buckets.get(key, (0.0, 0.0))
        return max(1, int((1.0 - tokens) / self.per_s) + 1)
