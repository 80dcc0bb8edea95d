"""Secrets at rest, tokens on the wire, rate limits.

- Passwords: argon2id with the library's defaults (slow on purpose: a leaked table must
  not give passwords away).
- Enrollment keys and install tokens: ``<kind>.<id>.<secret>``. The id is stored in
  clear to find the row; the 256-bit random secret only as an argon2id hash, with
  lighter parameters than a password's (a random secret cannot be guessed, so the hash
  need not be slow; it only must not be reversible). A process remembers a token it
  verified (as a SHA-256 of it) so a reconnecting PC costs one hash, not an argon2 run;
  revocation is read from the database every time, so it takes effect at once. Beside
  the argon2 hash the row keeps :func:`token_check`, a SHA-256 of the secret: a 256-bit
  random secret cannot be guessed from it either, and it spares the argon2 run when every
  PC reconnects to a restarted hub (argon2 runs once per PC, for tokens issued before the
  check existed, which then gets written).
- Every argon2 run (a token, a password, a new hash) happens in :class:`Hashing`'s thread
  pool, at most ``workers`` at once, never on the event loop: a reconnect storm or a
  flood of wrong passwords queues there while ``/healthz`` and the sockets keep answering.
- Logins: :class:`LoginLimiter` charges an attempt before its hash runs (so parallel
  attempts cannot all pass a check made before any is charged) and gives it back when
  the password was right: only failures use up the budget, per (address, account), with
  a larger budget per address as a backstop.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from argon2 import PasswordHasher

from agentd.osdeps.priority import lower_this_thread
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


def token_check(secret: str) -> str:
    """The fast check of an install token's secret (hex SHA-256, domain-separated)."""
    return hashlib.sha256(f"agentd-pc-token|{secret}".encode("utf-8")).hexdigest()


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

    def refund(self, key: str) -> None:
        """Give back a token taken by ``allow`` (the attempt succeeded: it does not count)."""
        found = self.buckets.get(key)
        if found is not None:
            self.buckets[key] = (min(self.burst, found[0] + 1.0), found[1])

    def blocked(self, key: str) -> bool:
        """Would ``allow`` refuse now? (without using a token: failures only count)"""
        tokens, last = self.buckets.get(key, (self.burst, time.monotonic()))
        return min(self.burst, tokens + (time.monotonic() - last) * self.per_s) < 1.0

    def retry_after_s(self, key: str) -> int:
        tokens, _ = self.buckets.get(key, (0.0, 0.0))
        return max(1, int((1.0 - tokens) / self.per_s) + 1)


@dataclass
class LoginLimiter:
    """Password attempts: charged before the hash, given back on success.

    ``per_account`` is keyed by (address, account name): twenty wrong passwords for one
    account lock out that account from that address, not a whole office behind one
    address. ``per_address`` is the backstop (larger): many accounts tried from one
    address."""

    per_account: RateLimiter
    per_address: RateLimiter

    @staticmethod
    def _keys(address: str, account: str) -> tuple[str, str]:
        return f"{address}|{account[:100]}", address

    def charge(self, address: str, account: str) -> bool:
        """Take one attempt from both budgets; False (nothing taken) when either is spent."""
        pair, addr = self._keys(address, account)
        if not self.per_address.allow(addr):
            return False
        if not self.per_account.allow(pair):
            self.per_address.refund(addr)
            return False
        return True

    def refund(self, address: str, account: str) -> None:
        pair, addr = self._keys(address, account)
        self.per_account.refund(pair)
        self.per_address.refund(addr)

    def retry_after_s(self, address: str, account: str) -> int:
        pair, addr = self._keys(address, account)
        return max(self.per_account.retry_after_s(pair) if self.per_account.blocked(pair) else 1,
                   self.per_address.retry_after_s(addr) if self.per_address.blocked(addr) else 1)


class HashingBusy(Exception):
    """Too many password checks are waiting already: answer "try again" at once."""


class Hashing:
    """argon2 off the event loop: a thread pool of ``workers`` threads (argon2-cffi
    releases the GIL while it hashes), so at most that many run at once and the loop
    keeps serving while the rest wait their turn.

    Verifications of the same secret in flight at once share one run (a script's
    parallel requests with one password cost one hash, not one each)."""

    def __init__(self, workers: int = 2, password_queue: int = 32) -> None:
        self.workers = workers
        self.password_queue = password_queue  # password checks waiting or running, at most
        self._passwords = 0
        # the threads run at a lower CPU priority: on a busy machine the event loop (and
        # /healthz, the sockets, ingest) goes first and the hashes take longer
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="agentd-hash", initializer=lower_this_thread)
        self._in_flight: dict[str, asyncio.Future[Any]] = {}

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def _shared(self, mark: str, fn: Callable[..., bool], *args: Any) -> bool:
        running = self._in_flight.get(mark)
        if running is not None:
            return bool(await asyncio.shield(running))
        future = asyncio.ensure_future(self.run(fn, *args))
        self._in_flight[mark] = future
        try:
            return bool(await asyncio.shield(future))
        finally:
            if self._in_flight.get(mark) is future:
                del self._in_flight[mark]

    async def verify_secret(self, stored_hash: str, secret: str) -> bool:
        return await self._shared(fingerprint(f"s|{stored_hash}|{secret}"), verify_secret, stored_hash, secret)

    async def verify_password(self, stored_hash: str, password: str) -> bool:
        """Raises :class:`HashingBusy` when ``password_queue`` checks are in already: a
        flood of wrong passwords gets quick refusals, not answers minutes late."""
        if self._passwords >= self.password_queue:
            raise HashingBusy
        self._passwords += 1
        try:
            return await self._shared(fingerprint(f"p|{stored_hash}|{password}"), verify_password, stored_hash, password)
        finally:
            self._passwords -= 1

    async def hash_password(self, password: str) -> str:
        return await self.run(hash_password, password)

    async def issue(self, kind: str) -> tuple[IssuedSecret, str]:
        """A new key or token and the :func:`token_check` of its secret."""
        issued = await self.run(issue, kind)
        return issued, token_check(issued.text.split(".")[2])

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
