"""A segment lab: the agent's path to the media edge in five namespaces, faults placeable per link.

    agent          home (NAT, gateway)          isp1 (access)        isp2 (border)        edge (coturn)
    eth0 10.77.2.2 ─ lan 10.77.2.1
                     wan 203.0.113.2 ─────────── south 203.0.113.1
                                                 north 198.51.100.1 ─ south 198.51.100.2
                                                                      north 192.0.2.1 ──── eth0 192.0.2.10 (+ .11)

Links by name: ``home`` (agent - home router: the Wi-Fi or LAN), ``isp`` (home router -
the ISP's first router: the access line), ``core`` (inside the ISP), ``beyond`` (the ISP's
border - the media edge: transit). Only the home LAN is private (RFC 1918); the rest use
the documentation ranges (RFC 5737), which no rule of agentd counts as private, so "the
first public hop" is the ISP's first router, and the PC's public address is the home
router's WAN address. None of these addresses exists outside the lab's namespaces.

Faults, each on one link at a time (or several):

- :meth:`SegmentLab.set_loss`: random loss per direction (nftables ``numgen`` in a netdev
  ``ingress`` chain of the receiving end, so it hits every IP packet on that link, the
  ones a router answers itself (pings, TTL exceeded) as well as the forwarded ones);
- :meth:`SegmentLab.set_rate`: a rate limit with a deep queue (``tc tbf``) on a link's
  egress, the classic bloated uplink;
- :meth:`SegmentLab.impair_link`: delay, jitter (and loss) per direction, by the userspace
  NFQUEUE stage of agentd/testing/impair.py (this kernel has no netem);
- :meth:`SegmentLab.icmp_ratelimit`: a router that rate-limits its ICMP errors
  (``net.ipv4.icmp_ratelimit``, per namespace); every router answers every probe by default.

The agent namespace admits ICMP ping sockets (``net.ipv4.ping_group_range``), as
distributions with systemd's ``50-default.conf`` do; ``ping_sockets=False`` leaves the kernel's ``1 0`` (no
group), as an agent's own CLI run finds it on Debian.

    with SegmentLab.create() as lab, lab.start_coturn(tmp / "turn") as turn:
        lab.set_loss("isp", 5, 5)
        report = lab.call_in_agent(some_function, ...)

Built on :class:`agentd.testing.netlab.Netlab` (the same names-unique-per-run, leftovers
of killed runs removed, torn down on exit and at interpreter exit); ``router`` is the home
router and ``server`` the edge, so what works on a Netlab works here.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Literal

from agentd.testing.netlab import DEFAULT_PREFIX, TABLE, Netlab, _run

AGENT_IP = "10.77.2.2"
HOME_LAN_IP = "10.77.2.1"
HOME_WAN_IP = "203.0.113.2"
"""The PC's public address (the home router's NAT)."""
ISP1_DOWN_IP = "203.0.113.1"
"""The ISP's first router: the first public hop."""
ISP1_UP_IP = "198.51.100.1"
ISP2_DOWN_IP = "198.51.100.2"
"""The ISP's border router."""
ISP2_UP_IP = "192.0.2.1"
EDGE_IP = "192.0.2.10"
EDGE_IP2 = "192.0.2.11"

Link = Literal["home", "isp", "core", "beyond"]
LINKS: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    # link: ((namespace role, device) of the upstream end, (role, device) of the downstream end)
    "home": (("agent", "eth0"), ("home", "lan")),
    "isp": (("home", "wan"), ("isp1", "south")),
    "core": (("isp1", "north"), ("isp2", "south")),
    "beyond": (("isp2", "north"), ("edge", "eth0")),
}
ROUTERS = ("home", "isp1", "isp2", "edge")
SEG_TABLE = "agentd_seg"


@dataclass
class SegmentLab(Netlab):
    """Five namespaces; see the module docstring."""

    ping_sockets: bool = True

    def __post_init__(self) -> None:
        self.agent_ip = AGENT_IP
        self.server_ip = EDGE_IP
        self.server_ip2 = EDGE_IP2
        self.router_wan_ip = HOME_WAN_IP

    def ns(self, role: str) -> str:
        """The namespace of ``agent``, ``home``, ``isp1``, ``isp2`` or ``edge``."""
        if role not in ("agent", *ROUTERS):
            raise ValueError(f"no namespace {role!r} in the segment lab (agent, home, isp1, isp2, edge)")
        return f"{self.prefix}-{self.tag}-{role}"

    @property
    def router(self) -> str:
        return self.ns("home")

    @property
    def server(self) -> str:
        return self.ns("edge")

    @property
    def public_ip(self) -> str:
        return HOME_WAN_IP

    @classmethod
    @contextlib.contextmanager
    def create(cls, *, nat: str = "plain", prefix: str = DEFAULT_PREFIX, ping_sockets: bool = True) -> Iterator[SegmentLab]:  # type: ignore[override]
        with super().create(nat=nat, prefix=prefix) as lab:  # type: ignore[misc]
            if not ping_sockets:
                lab.allow_ping_sockets(False)
            yield lab

    def _build(self) -> None:
        for role in ("agent", *ROUTERS):
            _run(["ip", "netns", "add", self.ns(role)])
            self._created.append(self.ns(role))
            _run(["ip", "-n", self.ns(role), "link", "set", "lo", "up"])
        for (up_role, up_dev), (down_role, down_dev) in LINKS.values():
            # veths are created inside the namespaces: nothing ever appears on the host
            _run(["ip", "-n", self.ns(up_role), "link", "add", up_dev, "type", "veth", "peer", "name", down_dev, "netns", self.ns(down_role)])
        addresses = (
            ("agent", "eth0", AGENT_IP), ("home", "lan", HOME_LAN_IP), ("home", "wan", HOME_WAN_IP),
            ("isp1", "south", ISP1_DOWN_IP), ("isp1", "north", ISP1_UP_IP), ("isp2", "south", ISP2_DOWN_IP),
            ("isp2", "north", ISP2_UP_IP), ("edge", "eth0", EDGE_IP), ("edge", "eth0", EDGE_IP2),
        )
        for role, dev, ip in addresses:
            _run(["ip", "-n", self.ns(role), "addr", "add", f"{ip}/24", "dev", dev])
        for role, dev, _ip in addresses:
            _run(["ip", "-n", self.ns(role), "link", "set", dev, "up"])
        for role, via in (("agent", HOME_LAN_IP), ("home", ISP1_DOWN_IP), ("isp1", ISP2_DOWN_IP), ("edge", ISP2_UP_IP)):
            _run(["ip", "-n", self.ns(role), "route", "add", "default", "via", via])
        _run(["ip", "-n", self.ns("isp2"), "route", "add", "203.0.113.0/24", "via", ISP1_UP_IP])
        for role in ROUTERS:
            self._sysctl(role, "net.ipv4.ip_forward", "1")
            self._sysctl(role, "net.ipv4.icmp_ratelimit", "0")  # answer every probe (icmp_ratelimit() changes it)
            self._sysctl(role, "net.ipv4.icmp_msgs_per_sec", "100000", required=False)
            self._sysctl(role, "net.ipv4.icmp_msgs_burst", "100000", required=False)
        self.allow_ping_sockets(True)
        self.nft(
            self.router,
            f"""
            table inet {TABLE} {{
              chain forward {{ type filter hook forward priority 0; policy accept; jump faults; }}
              chain faults {{ }}
              chain postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}
            }}
            """,
        )
        for (up_role, up_dev), (down_role, down_dev) in LINKS.values():
            for role in {up_role, down_role}:
                with contextlib.suppress(RuntimeError):  # the table may already be there (two links, one namespace)
                    self.nft(self.ns(role), f"add table netdev {SEG_TABLE}\n")
            for role, dev in ((up_role, up_dev), (down_role, down_dev)):
                self.nft(
                    self.ns(role),
                    f'add chain netdev {SEG_TABLE} in_{dev} {{ type filter hook ingress device "{dev}" priority 0; policy accept; }}\n',
                )
        self.set_nat(self.nat)
        self._wait_for_addresses()

    def _sysctl(self, role: str, key: str, value: str, *, required: bool = True) -> None:
        proc = _run(["ip", "netns", "exec", self.ns(role), "sysctl", "-qw", f"{key}={value}"], check=required)
        del proc

    # -- faults -----------------------------------------------------------------------------------

    def allow_ping_sockets(self, allow: bool) -> None:
        """Admit every group to ICMP ping sockets in the agent namespace, or none (``1 0``)."""
        self._sysctl("agent", "net.ipv4.ping_group_range", "0 2147483647" if allow else "1 0")

    def set_loss(self, link: Link, upstream_pct: float = 0, downstream_pct: float = 0, *, protocol: str = "ip") -> None:
        """Drop a random share of the IP packets crossing ``link`` each way (upstream: towards
        the edge). ``protocol`` ``ip`` is every IP packet; ``udp``, ``tcp`` or ``icmp`` one kind."""
        if link not in LINKS:
            raise ValueError(f"no link {link!r} in the segment lab ({', '.join(LINKS)})")
        if protocol not in ("ip", "udp", "tcp", "icmp"):
            raise ValueError(f"protocol must be ip, udp, tcp or icmp, not {protocol!r}")
        match = "meta protocol ip" + ("" if protocol == "ip" else f" meta l4proto {protocol}")
        (up_role, up_dev), (down_role, down_dev) = LINKS[link]
        # upstream packets arrive at the downstream end's device, and the other way round
        for (role, dev), pct in (((down_role, down_dev), upstream_pct), ((up_role, up_dev), downstream_pct)):
            pct = int(round(pct))
            if not 0 <= pct <= 100:
                raise ValueError(f"loss must be 0-100 %, not {pct}")
            if pct:
                self.nft(self.ns(role), f"add rule netdev {SEG_TABLE} in_{dev} {match} numgen random mod 100 < {pct} drop\n")

    def clear_faults(self) -> None:
        """Remove every loss rule, rate limit and the home router's drops; routers answer every probe again."""
        super().clear_faults()
        for (up_role, up_dev), (down_role, down_dev) in LINKS.values():
            for role, dev in ((up_role, up_dev), (down_role, down_dev)):
                self.nft(self.ns(role), f"flush chain netdev {SEG_TABLE} in_{dev}\n")
                _run(["ip", "netns", "exec", self.ns(role), "tc", "qdisc", "del", "dev", dev, "root"], check=False)
        for role in ROUTERS:
            self._sysctl(role, "net.ipv4.icmp_ratelimit", "0")

    def set_rate(self, link: Link, rate_kbit: int, queue_ms: float, *, direction: str = "up") -> None:
        """A rate limit with a queue of ``queue_ms`` at that rate (``tc tbf``) on ``link``'s
        egress (``up``: towards the edge, the uplink; ``down``: towards the agent)."""
        if link not in LINKS:
            raise ValueError(f"no link {link!r} in the segment lab ({', '.join(LINKS)})")
        if direction not in ("up", "down") or rate_kbit <= 0 or queue_ms <= 0:
            raise ValueError("direction must be up or down; rate_kbit and queue_ms positive")
        (up_role, up_dev), (down_role, down_dev) = LINKS[link]
        role, dev = (up_role, up_dev) if direction == "up" else (down_role, down_dev)
        _run([
            "ip", "netns", "exec", self.ns(role), "tc", "qdisc", "replace", "dev", dev, "root", "tbf",
            "rate", f"{rate_kbit}kbit", "burst", "16kb", "latency", f"{queue_ms:g}ms",
        ])

    @contextlib.contextmanager
    def impair_link(self, link: Link, direction: str, **kw):
        """Delay, jitter or loss on ``link`` in one direction (``up``: towards the edge), by
        the userspace NFQUEUE stage (:class:`agentd.testing.impair.Impairment`; keywords
        ``delay_ms``, ``jitter_ms``, ``loss_pct``, ``protocol``, ``order``, ``seed``).

        The stage sees only forwarded packets, so it sits on the router at one end of the
        link: what a router answers itself (the gateway's echo replies, TTL exceeded) is not
        delayed by a stage on its own link; a stage on a later link delays them all."""
        from agentd.testing.impair import Impairment

        if link not in LINKS:
            raise ValueError(f"no link {link!r} in the segment lab ({', '.join(LINKS)})")
        if direction not in ("up", "down"):
            raise ValueError(f"direction must be 'up' or 'down', not {direction!r}")
        (up_role, up_dev), (down_role, down_dev) = LINKS[link]
        if direction == "up":  # arriving at the far router, or leaving the near one
            where = (down_role, {"iif": down_dev}) if down_role != "edge" else (up_role, {"oif": up_dev})
        else:
            where = (up_role, {"iif": up_dev}) if up_role != "agent" else (down_role, {"oif": down_dev})
        with Impairment.attach(self.ns(where[0]), **where[1], **kw) as stage:
            yield stage

    def icmp_ratelimit(self, role: str, ms: int = 1000) -> None:
        """Make router ``role`` rate-limit its ICMP errors (TTL exceeded, unreachable) as
        Linux does by default: ``ms`` between answers per destination, after a short burst."""
        if role not in ROUTERS:
            raise ValueError(f"no router {role!r} in the segment lab ({', '.join(ROUTERS)})")
        self._sysctl(role, "net.ipv4.icmp_ratelimit", str(int(ms)))

    def counters(self, role: str = "home") -> str:
        return _run(["ip", "netns", "exec", self.ns(role), "nft", "list", "ruleset"]).stdout
