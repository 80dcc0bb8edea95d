"""The ``udp.ports`` check and the ``agentd reflect`` command.

``udp.ports`` sends UDP from a sample of local source ports spread across the media range
(``[ice] media_port_range``, default 16384-65535) and reports the share that got answers:
a firewall that filters by source port shows up as a share below 100 %. The target is the
first STUN server (a Binding request from each port), or, when ``[udp_ports] reflector`` is
set, an ``agentd reflect`` service, which also tests a sample of destination ports.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import random
from collections import Counter
from dataclasses import dataclass, field

from agentd import hookimpl
from agentd.checks import Check, CheckContext, Outcome, Plan
from agentd.commands import Command
from agentd.config import Config, ConfigSection
from agentd.errors import ConfigError, ProbeError, UsageError
from agentd.net import resolve
from agentd_plugins.ice import IceSettings, parse_port_range
from agentd_plugins.ice.selection import selection
from agentd_plugins.ice.probes import probe_error, resolve_url, stun_binding_udp

from . import reflect

CHECK_ID = "udp.ports"


@dataclass(frozen=True)
class UdpPortsSettings:
    """``[udp_ports]``"""

    sample: int = field(default=12, metadata={"help": "how many local source ports to try, spread across the media range", "min": 1, "max": 256})
    timeout_s: float = field(default=2.0, metadata={"help": "deadline of the whole sample (probes run concurrently)", "min": 0.2, "max": 30})
    reflector: str | None = field(default=None, metadata={"help": "host of an `agentd reflect` service to test destination ports too"})
    reflector_ports: str = field(default="16384-16415", metadata={"help": "the port range that reflector listens on (A-B)"})
    warn_below_pct: float = field(default=100.0, metadata={"help": "a share of answered ports below this is a warning", "min": 0, "max": 100})


@hookimpl
def agentd_config_sections():
    return [ConfigSection("udp_ports", UdpPortsSettings, "the udp.ports check (and its optional reflector target)")]


@hookimpl
def agentd_configure(config: Config) -> None:
    settings: UdpPortsSettings = config.section("udp_ports")
    try:
        parse_port_range(settings.reflector_ports)
    except ValueError as exc:
        raise ConfigError(str(exc), file=str(config.path) if config.path else None, key="udp_ports.reflector_ports") from None


@hookimpl
def agentd_collect_checks(plan: Plan):
    settings: UdpPortsSettings = plan.config.section("udp_ports")
    return [
        Check(
            CHECK_ID,
            "UDP from the media port range",
            run_udp_ports,
            timeout_s=settings.timeout_s + 1.0 + plan.config.section("ice").discovery_timeout_s,  # a backstop: the sample has its own deadline
            profiles=frozenset({"preshift", "full"}),
            order=60,
        )
    ]


def sample_ports(first: int, last: int, count: int, rng: random.Random | None = None) -> list[int]:
    """``count`` ports spread across ``first``-``last``: one random port in each of ``count`` equal slices."""
    rng = rng or random.Random()
    size = last - first + 1
    count = min(count, size)
    edges = [first + (size * i) // count for i in range(count + 1)]
    return [rng.randint(edges[i], edges[i + 1] - 1) for i in range(count)]


async def _probe_row(target: str, address: str, local_port: int, remote_port: int, *, reflector: bool, timeout_s: float, first: int, last: int) -> dict:
    """One probe from ``local_port``; when that port is taken here, the next free one nearby."""
    row: dict = {"local_port": local_port, "remote_port": remote_port, "ok": False}
    for attempt in range(8):
        port = local_port + attempt if local_port + attempt <= last else first + attempt
        row["local_port"] = port
        try:
            if reflector:
                row["rtt_ms"] = await reflect.echo_probe(address, remote_port, local_port=port, timeout_s=timeout_s)
            else:
                row["rtt_ms"] = (await stun_binding_udp(address, remote_port, timeout_s=timeout_s, local_port=port)).rtt_ms
            row["ok"] = True
            return row
        except ProbeError as exc:
            if exc.details.get("errno") == errno.EADDRINUSE:
                continue
            row.update(reason=exc.reason, error=str(exc))
            return row
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                continue
            error = probe_error(exc, f"{target} port {remote_port}", timeout_s)
            row.update(reason=error.reason, error=str(error))
            return row
        except TimeoutError:
            row.update(reason="timeout", error=f"{address}:{remote_port}: no answer within {timeout_s:g} s")
            return row
    row.update(reason="unreachable", error="no free local port near this one")
    return row


async def run_udp_ports(ctx: CheckContext) -> Outcome:
    ice: IceSettings = ctx.section("ice")
    settings: UdpPortsSettings = ctx.section("udp_ports")
    first, last = parse_port_range(ice.media_port_range)
    local_ports = sample_ports(first, last, settings.sample)
    details: dict = {"range": f"{first}-{last}"}
    suffix = ""
    try:
        if settings.reflector:
            r_first, r_last = parse_port_range(settings.reflector_ports)
            address = (await resolve(settings.reflector, r_first, timeout_s=settings.timeout_s / 2)).addresses[0]
            remote_ports = sample_ports(r_first, r_last, len(local_ports))
            target = f"reflector {settings.reflector}:{r_first}-{r_last}"
            reflector = True
        else:
            chosen = await selection(ctx)
            target_endpoint = next(iter(chosen.udp_targets()), None)
            if target_endpoint is None:
                return chosen.nothing_to_test("stun: or turn: UDP url (and no [udp_ports] reflector)", details)
            url = target_endpoint.url
            chosen.annotate(details, [target_endpoint])
            suffix = chosen.suffix([target_endpoint])
            address = await resolve_url(url, timeout_s=settings.timeout_s / 2)
            remote_ports = [url.port] * len(local_ports)
            target = f"STUN {url.hostport}"
            reflector = False
    except ProbeError as exc:
        return Outcome.failed(str(exc), details={**details, "reason": exc.reason})
    details["target"] = target
    ctx.note(f"UDP from {len(local_ports)} ports to {target}")
    rows = await asyncio.gather(
        *(
            _probe_row(target, address, lp, rp, reflector=reflector, timeout_s=settings.timeout_s, first=first, last=last)
            for lp, rp in zip(local_ports, remote_ports)
        )
    )
    answered = sum(1 for r in rows if r["ok"])
    pct = round(100.0 * answered / len(rows), 1)
    details.update(sample=list(rows), answered=answered)
    metrics = {"answered_pct": pct, "ports_tried": len(rows)}
    failed = [r for r in rows if not r["ok"]]
    if failed:
        details["reason"] = Counter(r["reason"] for r in failed).most_common(1)[0][0]
    if answered == 0:
        return Outcome.failed(f"no answer from {target} to any of {len(rows)} ports ({details['reason']}){suffix}", metrics=metrics, details=details)
    if pct < settings.warn_below_pct:
        blocked = ", ".join(f"{r['local_port']}->{r['remote_port']}" for r in failed[:8])
        return Outcome.warned(f"{answered}/{len(rows)} ports answered by {target}; no answer for {blocked}{suffix}", metrics=metrics, details=details)
    return Outcome.passed(f"{answered}/{len(rows)} ports across {first}-{last} answered by {target}{suffix}", metrics=metrics, details=details)


# -- agentd reflect -------------------------------------------------------------------------------------------------


def _reflect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", metavar="HOST", required=True, help="address to listen on (e.g. 0.0.0.0 or a specific IP)")
    parser.add_argument("--ports", metavar="A-B", help="UDP port range to echo on (one socket per port)")
    parser.add_argument("--max-rate", type=float, default=500.0, metavar="N", help="replies per second in all (default 500)")
    parser.add_argument("--per-source-rate", type=float, default=100.0, metavar="N", help="replies per second per source address (default 100)")
    parser.add_argument("--max-payload", type=int, default=512, metavar="BYTES", help="larger datagrams are ignored (default 512)")
    parser.add_argument("--max-sockets", type=int, default=2048, metavar="N", help="refuse ranges wider than this (default 2048)")
    parser.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long (default: until SIGINT/SIGTERM)")
    load = parser.add_argument_group("load service (the path.load check's target: [loaded_latency] url = http://HOST:PORT)")
    load.add_argument("--http-port", type=int, metavar="PORT", help="also serve byte-capped HTTP uploads and downloads on this TCP port")
    load.add_argument("--load-token", metavar="ENV", help="name of an environment variable holding a token the checks must send (Bearer)")
    load.add_argument("--load-max-tests", type=int, default=1, metavar="N", help="load tests at once; more get 429 Retry-After (default 1)")
    load.add_argument("--load-max-mb", type=float, default=64.0, metavar="MIB", help="most MiB per test each way (default 64)")
    load.add_argument("--load-ttl", type=float, default=30.0, metavar="SECONDS", help="a test's transfers end after this long (default 30)")


def _reflect(args: argparse.Namespace, app) -> object:
    if args.ports is None and args.http_port is None:
        raise UsageError("give --ports A-B (UDP echo), --http-port PORT (load service), or both")
    first = last = None
    if args.ports is not None:
        try:
            first, last = parse_port_range(args.ports)
        except ValueError as exc:
            raise UsageError(f"--ports: {exc}") from None
    if args.max_rate <= 0 or args.per_source_rate <= 0 or not 32 <= args.max_payload <= 65507:
        raise UsageError("--max-rate and --per-source-rate must be positive, --max-payload 32-65507")
    load = None
    if args.http_port is not None:
        from agentd_plugins.loaded_latency.server import LoadService

        if not 0 <= args.http_port <= 65535:
            raise UsageError("--http-port must be 0-65535")
        token = None
        if args.load_token:
            token = os.environ.get(args.load_token)
            if not token:
                raise UsageError(f"--load-token: environment variable {args.load_token} is not set or empty")
        if not 0.25 <= args.load_max_mb <= 4096 or not 1 <= args.load_max_tests <= 64 or not 1 <= args.load_ttl <= 600:
            raise UsageError("--load-max-mb must be 0.25-4096, --load-max-tests 1-64, --load-ttl 1-600")
        load = LoadService(max_tests=args.load_max_tests, max_bytes=int(args.load_max_mb * 2**20), ttl_s=args.load_ttl, token=token)
    return reflect.serve(
        args.listen,
        first,
        last,
        duration_s=args.duration,
        max_rate=args.max_rate,
        per_source_rate=args.per_source_rate,
        max_payload=args.max_payload,
        max_sockets=args.max_sockets,
        load=load,
        http_port=args.http_port,
    )


@hookimpl
def agentd_commands():
    return [
        Command(
            "reflect",
            "run a small UDP echo service (udp.ports) and/or HTTP load service (path.load)",
            _reflect_arguments,
            _reflect,
            description=(
                "Echo agentd's UDP probes on a port range, so `agentd check` on agent PCs can test the destination "
                "ports too ([udp_ports] reflector = HOST, reflector_ports = A-B). Answers only agentd probes, never "
                "with more bytes than asked, under a rate limit. With --http-port, also the load service of the path.load "
                "check ([loaded_latency] url = http://HOST:PORT): byte-capped uploads and downloads, a bounded number of "
                "tests at once (429 Retry-After beyond), an optional token."
            ),
        )
    ]
