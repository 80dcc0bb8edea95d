"""Network helpers every probe needs: name resolution with a hard deadline.

``loop.getaddrinfo`` runs in the default executor, and ``asyncio.run`` waits for that
executor's threads on the way out: a resolver stuck for 30 s would hold the whole
process for 30 s after the check already timed out. Here each lookup runs in its own
daemon thread, so a deadline really ends the wait and the process can exit.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass

from agentd.errors import ProbeError, ProbeTimeout


@dataclass(frozen=True)
class Resolved:
    host: str
    addresses: tuple[str, ...]
    elapsed_ms: float


async def resolve(host: str, port: int = 443, *, timeout_s: float = 3.0, family: int = socket.AF_UNSPEC) -> Resolved:
    """Resolve ``host`` with the system resolver (hosts file, nsswitch, DNS) within ``timeout_s``.

    Raises :class:`ProbeError` (reason ``dns``) when the name does not resolve and
    :class:`ProbeTimeout` when the resolver does not answer in time.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future = loop.create_future()
    started = time.monotonic()

    def work() -> None:
        try:
            result = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting coroutine
            outcome: tuple[bool, object] = (False, exc)
        else:
            outcome = (True, result)
        if not loop.is_closed():
            try:
                loop.call_soon_threadsafe(_settle, future, outcome)
            except RuntimeError:  # the loop closed in between
                pass

    threading.Thread(target=work, name=f"resolve:{host}", daemon=True).start()
    try:
        async with asyncio.timeout(timeout_s):
            ok, value = await future
    except TimeoutError:
        raise ProbeTimeout(f"{host}: no answer from the resolver within {timeout_s:g} s", details={"host": host}) from None
    elapsed = (time.monotonic() - started) * 1000.0
    if not ok:
        exc = value
        if isinstance(exc, socket.gaierror):
            raise ProbeError(
                f"{host} could not be resolved ({exc.strerror or exc})",
                reason="dns",
                details={"host": host, "errno": exc.errno},
            ) from None
        raise ProbeError(f"{host} could not be resolved ({exc})", reason="dns", details={"host": host}) from None
    addresses: list[str] = []
    for *_, sockaddr in value:  # type: ignore[misc]
        if sockaddr[0] not in addresses:
            addresses.append(sockaddr[0])
    return Resolved(host=host, addresses=tuple(addresses), elapsed_ms=elapsed)


def _settle(future: asyncio.Future, outcome: tuple[bool, object]) -> None:
    if not future.done():
        future.set_result(outcome)
