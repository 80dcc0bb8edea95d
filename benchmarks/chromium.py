"""Chromium as the reference for media.path: transport and loss, side by side, in the lab.

    sudo .venv/bin/python -m benchmarks chromium [--runs 5] [--paths clean,udp_blocked,loss10] [--echo-s 10]

The network lab (agentd/testing/netlab.py: agent ns -> NAT router -> server ns with
coturn). Per path and run, one after the other inside the agent namespace:

- Chromium (Debian's /usr/bin/chromium, headless, driven by playwright-python; never
  ``playwright install``; a new empty profile each run): one page served from the agent
  namespace's own loopback, two RTCPeerConnections with ``iceTransportPolicy: "relay"``,
  TURN over UDP and TCP offered, a negotiated data channel (unordered, maxRetransmits 0)
  carrying an echo every 20 ms for ``--echo-s`` seconds. Its transport is the selected
  pair's local relay candidate's ``relayProtocol`` (getStats). To see why it chose it, the
  page also samples each peer's selected relay transport every 250 ms (``selection``:
  "a udp@260ms; b tcp@260ms -> udp@520ms"), and keeps at the end every candidate pair
  (checks sent and answered) and each peer's own relay candidates (``relay_candidates``:
  a peer without a "udp" one never got a UDP relay allocation).
  Chromium's own log (``CHROME_LOG_FILE``, libwebrtc's turn_port and basic_port_allocator)
  gives each UDP TURN port's Allocate sends, when it allocated, and whether its candidate was
  used or discarded because gathering was already done (``udp_turn_ports``).
- agentd: ``agentd check --only media.path --json`` with the same TURN urls (UDP, TCP) and
  the default ``[media]`` settings of the pre-shift profile; its ``details.relay_race``
  gives the chance that a relayed softphone call ends on the TCP relay, which the last
  table compares with the share of Chromium peers that did (Wilson 95 % interval).

Like with like: both measure a two-peer echo through the relay, which crosses the
agent's network twice each way (four crossings per echo). agentd reports
``loss_pct`` as the softphone's round trip (one crossing each way), converting its raw
echo loss with 1 - sqrt(1 - raw) (DESIGN.md, media.path); Chromium's raw echo loss is
converted the same way here. The truth for random loss p each way is 1 - (1 - p)^2.

Costs: ~15 s per Chromium run (browser start ~2-5 s, connect, 10 s echo) and ~5 s per
agentd run; 5 runs x 3 paths ~ 5 min. Needs root (namespaces) and the Debian packages
chromium and coturn.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._figures import median_range

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
PATHS = {
    "clean": "no fault",
    "udp_blocked": "the router drops all UDP",
    "loss10": "the router drops 10 % of UDP each way (nftables numgen random)",
    "loss20": "the router drops 20 % of UDP each way (not in the default set: the issue's three paths are)",
}
LOSS_EACH_WAY = {"clean": 0.0, "udp_blocked": 0.0, "loss10": 0.10, "loss20": 0.20}
DEFAULT_PATHS = ("clean", "udp_blocked", "loss10")
# libwebrtc's own log of its TURN ports (to a file in the run's profile): when each UDP
# allocation was sent and answered, and whether its candidate was used or discarded
LOG_FLAGS = ["--enable-logging", "--v=0", "--vmodule=*turn_port*=1,*basic_port_allocator*=1,*p2p_transport_channel*=1"]

PAGE = """<!doctype html><meta charset="utf-8"><title>agentd chromium reference</title><p>echo</p>"""

# The echo, run in the page. Two peers in one page, relay only; the data channel is
# negotiated (id 0) so both ends exist before the first probe (no DCEP round trip to lose).
ECHO_JS = """
async ({iceServers, durationMs, intervalMs, drainMs, connectTimeoutMs}) => {
  const config = {iceServers, iceTransportPolicy: "relay", bundlePolicy: "max-bundle"};
  const a = new RTCPeerConnection(config), b = new RTCPeerConnection(config);
  a.onicecandidate = e => { if (e.candidate) b.addIceCandidate(e.candidate).catch(() => {}); };
  b.onicecandidate = e => { if (e.candidate) a.addIceCandidate(e.candidate).catch(() => {}); };
  const options = {ordered: false, maxRetransmits: 0, negotiated: true, id: 0};
  const ca = a.createDataChannel("echo", options), cb = b.createDataChannel("echo", options);
  cb.onmessage = m => { if (cb.readyState === "open") cb.send(m.data); };
  const t0 = performance.now();
  // which relay transport each peer's selected pair uses, every 250 ms from the start (why
  // Chromium's choice differs from agentd's: when it selected, and whether it switched)
  const timeline = [];
  const protocolOf = async pc => {
    const stats = await pc.getStats();
    let proto = null;
    stats.forEach(s => {
      if (s.type === "transport" && s.selectedCandidatePairId) {
        const pair = stats.get(s.selectedCandidatePairId);
        const local = pair ? stats.get(pair.localCandidateId) : null;
        proto = local ? (local.relayProtocol || local.protocol) : null;
      }
    });
    return proto;
  };
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      timeline.push([Math.round(performance.now() - t0), await protocolOf(a), await protocolOf(b)]);
      await new Promise(r => setTimeout(r, 250));
    }
  })();
  // every candidate pair at the end: did the UDP relay's checks succeed at all?
  const pairsOf = async pc => {
    const stats = await pc.getStats();
    let selected = null;
    stats.forEach(s => { if (s.type === "transport") selected = s.selectedCandidatePairId; });
    const out = [];
    stats.forEach(s => {
      if (s.type !== "candidate-pair") return;
      const local = stats.get(s.localCandidateId);
      out.push({relay: local ? (local.relayProtocol || local.protocol) : null, state: s.state, nominated: !!s.nominated,
                selected: s.id === selected, requestsSent: s.requestsSent, responsesReceived: s.responsesReceived,
                rttMs: s.currentRoundTripTime == null ? null : Math.round(s.currentRoundTripTime * 1000)});
    });
    return out;
  };
  // each peer's own relay candidates: a peer with no UDP one had its UDP allocation fail
  const relaysOf = async pc => {
    const stats = await pc.getStats();
    const out = [];
    stats.forEach(s => { if (s.type === "local-candidate") out.push(s.relayProtocol || s.protocol); });
    return out;
  };
  const finish = async () => {
    sampling = false; await sampler;
    return {timeline, pairsA: await pairsOf(a), pairsB: await pairsOf(b), relaysA: await relaysOf(a), relaysB: await relaysOf(b)};
  };
  const opened = new Promise(resolve => {
    ca.onopen = () => resolve(true);
    setTimeout(() => resolve(false), connectTimeoutMs);
  });
  await a.setLocalDescription(await a.createOffer());
  await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription(await b.createAnswer());
  await a.setRemoteDescription(b.localDescription);
  const ok = await opened;
  const connectMs = performance.now() - t0;
  const pairOf = async pc => {
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach(s => { if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId); });
    if (!pair) stats.forEach(s => { if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s; });
    const local = pair ? stats.get(pair.localCandidateId) : null;
    return local ? {candidateType: local.candidateType, relayProtocol: local.relayProtocol || null, protocol: local.protocol} : null;
  };
  if (!ok) {
    const result = {connected: false, connectMs, ice: a.iceConnectionState, pair: await pairOf(a), ...(await finish())};
    a.close(); b.close();
    return result;
  }
  const back = new Set();
  const rtts = [];
  ca.onmessage = m => {
    const [seq, sentAt] = String(m.data).split(",");
    if (!back.has(seq)) { back.add(seq); rtts.push(performance.now() - Number(sentAt)); }
  };
  let sent = 0;
  const start = performance.now();
  await new Promise(resolve => {
    const timer = setInterval(() => {
      if (performance.now() - start >= durationMs) { clearInterval(timer); resolve(); return; }
      if (ca.readyState === "open") ca.send(sent + "," + performance.now());
      sent++;
    }, intervalMs);
  });
  await new Promise(resolve => setTimeout(resolve, drainMs));
  const result = {connected: true, connectMs, sent, received: back.size, rtts, pair: await pairOf(a), pairB: await pairOf(b), ...(await finish())};
  a.close(); b.close();
  return result;
}
"""


_LOG_TIME = re.compile(r"^\[\d+:\d+:\d{4}/(\d\d)(\d\d)(\d\d)\.(\d{6})")
_LOG_PORT = re.compile(r"Port\[(\w+):")


def turn_ports_from_log(text: str) -> dict:
    """Each UDP TURN port of the run from libwebrtc's log: Allocate requests sent, when the
    allocation succeeded (ms after the first TURN port started) and its candidate's fate
    ("ready": used; "discarded": gathering was already done, so the candidate was dropped),
    and when each channel's gathering completed (after its first strongly connected pair)."""
    ports: dict[str, dict] = {}
    done: list[float] = []
    first: float | None = None
    last_gathered: str | None = None
    for line in text.splitlines():
        stamp = _LOG_TIME.match(line)
        if not stamp:
            continue
        h, m, sec, us = (int(g) for g in stamp.groups())
        at = ((h * 60 + m) * 60 + sec) * 1000.0 + us / 1000.0
        port = _LOG_PORT.search(line)
        key = port.group(1) if port else None
        if "Trying to connect to TURN server via" in line and key:
            first = at if first is None else first
            ports[key] = {"protocol": line.rsplit("via ", 1)[1].split()[0], "sends": 0, "allocated_ms": None, "fate": None}
        elif key in ports and "TURN allocate request sent" in line:
            ports[key]["sends"] += 1
        elif key in ports and "TURN allocate requested successfully" in line:
            ports[key]["allocated_ms"] = round(at - first, 1)
        elif key and "Gathered candidate" in line:
            last_gathered = key
        elif key in ports and "Port ready" in line:
            ports[key]["fate"] = "ready"
        elif "already done gathering" in line and last_gathered in ports:
            ports[last_gathered]["fate"] = "discarded"
        elif "gathering complete" in line and first is not None:
            done.append(round(at - first, 1))
    udp = [p for p in ports.values() if p["protocol"] == "udp"]
    return {"udp_ports": udp, "gathering_done_ms": done}


def one_crossing(raw: float) -> float:
    """Loss over one crossing each way from the loss over two (DESIGN.md, media.path)."""
    return 1.0 - math.sqrt(max(0.0, 1.0 - raw))


# -- inside the agent namespace -------------------------------------------------------------------


def chromium_echo(ice_servers: list[dict], echo_s: float, interval_ms: float = 20.0) -> dict:
    """Serve the page on this namespace's loopback, run Chromium headless on it, run the
    echo; the page's result plus the wall time of the whole run. (Runs in the agent ns.)"""
    import http.server
    import threading

    from playwright.sync_api import sync_playwright

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            body = PAGE.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="agentd-chromium-") as profile, sync_playwright() as p:
            log_file = Path(profile) / "webrtc.log"
            # every process's log to one file: the renderer, where WebRTC runs, heeds only the variable
            context = p.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=[*FLAGS, *LOG_FLAGS],
                env={**os.environ, "CHROME_LOG_FILE": str(log_file)},
            )
            try:
                page = context.new_page()
                page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
                launched = time.monotonic() - started
                result = page.evaluate(
                    ECHO_JS,
                    {"iceServers": ice_servers, "durationMs": echo_s * 1000, "intervalMs": interval_ms, "drainMs": 1000,
                     "connectTimeoutMs": 20000},
                )
            finally:
                context.close()
            result["turn_log"] = turn_ports_from_log(log_file.read_text(errors="replace") if log_file.exists() else "")
    finally:
        server.shutdown()
    result["launch_s"] = round(launched, 2)
    result["wall_s"] = round(time.monotonic() - started, 2)
    return result


# -- the benchmark ----------------------------------------------------------------------------------


def agentd_media(lab, turn, root: Path, env: dict[str, str]) -> dict:
    config = root / "agentd.toml"
    config.write_text(
        '[genesys]\nregion = "agentd-test.invalid"\n'
        "[ice]\n"
        f'[[ice.servers]]\nurls = ["{turn.turn_udp_url}", "{turn.turn_tcp_url}"]\n'
        f'username = "{turn.username}"\ncredential = "{turn.password}"\n'
    )
    started = time.monotonic()
    proc = lab.run_in_agent(
        [sys.executable, "-m", "agentd", "check", "--only", "media.path", "--json", "--no-daemon"],
        env={**env, "AGENTD_CONFIG": str(config)}, timeout=120,
    )
    wall = time.monotonic() - started
    try:
        row = next(c for c in json.loads(proc.stdout)["checks"] if c["id"] == "media.path")
    except (ValueError, StopIteration):
        return {"transport": None, "error": proc.stderr[-300:], "wall_s": wall}
    details, metrics = row.get("details", {}), row.get("metrics", {})
    race = details.get("relay_race") or {}
    return {
        "transport": details.get("transport"),
        "tcp_chance_pct": race.get("tcp_chance_pct"),
        "tcp_chance_ci95_pct": race.get("tcp_chance_ci95_pct"),
        "loss_pct": metrics.get("loss_pct"),
        "raw_loss_pct": details.get("raw_loss_pct"),
        "probes": details.get("probes_sent"),
        "status": row["status"],
        "summary": row["summary"],
        "wall_s": round(wall, 2),
    }


def chromium_row(result: dict) -> dict:
    if not result.get("connected"):
        return {
            "transport": None, "connect_ms": result.get("connectMs"), "error": f"not connected (ICE {result.get('ice')})",
            "udp_turn_ports": (result.get("turn_log") or {}).get("udp_ports"),
        }
    raw = 1.0 - result["received"] / result["sent"] if result["sent"] else None
    sides = [_relay_protocol(result.get("pair")), _relay_protocol(result.get("pairB"))]
    lossy_sides = sum(1 for side in sides if side == "udp")
    # the softphone-equivalent loss of a peer that sends over UDP: with both peers on UDP the
    # echo crosses the lossy network four times (two per peer: convert as media.path does);
    # with one peer relayed over TCP only that peer's two crossings lose, so the echo's raw
    # loss is that peer's round trip as it is
    if raw is None:
        loss = None
    elif lossy_sides == 2:
        loss = one_crossing(raw)
    else:
        loss = raw
    return {
        "transport": sides[0] if sides[0] == sides[1] else f"{sides[0]}+{sides[1]}",
        "selection": selection_story(result),
        "udp_checks": udp_checks(result),
        "timeline": result.get("timeline"),
        "pairs": {"a": result.get("pairsA"), "b": result.get("pairsB")},
        "relay_candidates": {"a": result.get("relaysA"), "b": result.get("relaysB")},
        "loss_pct": round(loss * 100.0, 2) if loss is not None else None,
        "raw_loss_pct": round(raw * 100.0, 2) if raw is not None else None,
        "probes": result["sent"],
        "connect_ms": round(result["connectMs"], 1),
        "rtt_median_ms": round(statistics.median(result["rtts"]), 2) if result["rtts"] else None,
        "peers_on_tcp": sum(1 for side in sides if side == "tcp"),
        "udp_turn_ports": (result.get("turn_log") or {}).get("udp_ports"),
        "gathering_done_ms": (result.get("turn_log") or {}).get("gathering_done_ms"),
        "wall_s": result.get("wall_s"),
    }


def selection_story(result: dict) -> str:
    """When each peer first had a selected pair and on which relay transport, and every change
    after it ("a udp@260ms; b tcp@260ms -> udp@520ms")."""
    timeline = result.get("timeline") or []
    parts = []
    for index, name in ((1, "a"), (2, "b")):
        seen = [(row[0], row[index]) for row in timeline if row[index]]
        if not seen:
            parts.append(f"{name} none")
            continue
        changes = [seen[0]] + [seen[i] for i in range(1, len(seen)) if seen[i][1] != seen[i - 1][1]]
        parts.append(f"{name} " + " -> ".join(f"{proto}@{t}ms" for t, proto in changes))
    return "; ".join(parts)


def udp_checks(result: dict) -> str:
    """The UDP-relay candidate pairs at the end of the run: checks sent and answered, per peer."""
    out = []
    for name in ("a", "b"):
        pairs = [p for p in (result.get(f"pairs{name.upper()}") or []) if p.get("relay") == "udp"]
        if pairs:
            out.append(f"{name}: " + ", ".join(f"{p['state']} {p.get('responsesReceived')}/{p.get('requestsSent')}" for p in pairs))
    return "; ".join(out) or "-"


def port_story(row: dict) -> str:
    """Each Chromium UDP TURN port: Allocate sends, when it allocated, what became of its candidate."""
    ports = row.get("udp_turn_ports") or []
    done = row.get("gathering_done_ms") or []
    parts = [f"{p['sends']} sends, allocated at {p['allocated_ms']} ms, {p['fate']}" for p in ports]
    return "; ".join(parts) + (f" (gathering done at {', '.join(f'{d:.0f}' for d in done)} ms)" if done else "")


def race_table(results: dict) -> list[str]:
    """Chromium's share of peers that ended on TCP (Wilson 95 %), the mechanism seen in its log,
    and agentd's predicted chance for a relayed softphone call (details.relay_race)."""
    from agentd_plugins.media.quality import wilson_interval

    lines = [
        "| path | Chromium peers on TCP (95% CI) | Chromium UDP allocations retransmitted: discarded / all | not retransmitted: discarded / all "
        "| agentd's chance of TCP, median (min-max) | agentd's median inside Chromium's CI |",
        "|---|---|---|---|---|---|",
    ]
    for path, tools in results.items():
        cr = [r for r in tools["chromium"] if r.get("transport")]
        peers = 2 * len(cr)
        on_tcp = sum(r.get("peers_on_tcp", 0) for r in cr)
        ports = [p for r in tools["chromium"] for p in (r.get("udp_turn_ports") or []) if p.get("allocated_ms") is not None]
        retried = [p for p in ports if p["sends"] > 2]
        first_try = [p for p in ports if p["sends"] <= 2]
        chances = [r["tcp_chance_pct"] for r in tools["agentd"] if r.get("tcp_chance_pct") is not None]
        if not peers:
            lines.append(f"| {path} | - | - | - | - | - |")
            continue
        low, high = wilson_interval(on_tcp, peers)
        median = statistics.median(chances) if chances else None
        inside = "-" if median is None else ("yes" if low * 100 <= median <= high * 100 else "no")
        lines.append(
            f"| {path} | {on_tcp}/{peers} = {100 * on_tcp / peers:.0f}% ({100 * low:.0f}-{100 * high:.0f}%) "
            f"| {sum(1 for p in retried if p['fate'] == 'discarded')}/{len(retried)} | {sum(1 for p in first_try if p['fate'] == 'discarded')}/{len(first_try)} "
            f"| {median_range(chances)} | {inside} |"
        )
    return lines


def _relay_protocol(pair: dict | None) -> str | None:
    """How one peer reaches the relay: its selected local candidate's relayProtocol."""
    if not pair:
        return None
    return pair.get("relayProtocol") if pair.get("candidateType") == "relay" else pair.get("protocol")


def transports(rows: list[dict]) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        key = str(row.get("transport") or "none").upper()
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k} {v}/{len(rows)}" for k, v in sorted(counts.items()))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chromium", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per path and tool (default 5)")
    parser.add_argument("--paths", default=",".join(DEFAULT_PATHS), help=f"comma-separated, of {', '.join(PATHS)} (default {','.join(DEFAULT_PATHS)})")
    parser.add_argument("--echo-s", type=float, default=10.0, help="Chromium's echo duration per run (default 10 s)")
    parser.add_argument("--json", metavar="FILE", help="also write every run's figures to FILE")
    args = parser.parse_args(argv)
    paths = [p for p in args.paths.split(",") if p]
    unknown = [p for p in paths if p not in PATHS]
    if unknown:
        print(f"benchmarks.chromium: unknown path {', '.join(unknown)}", file=sys.stderr)
        return 2
    from agentd.testing.netlab import Netlab, unavailable_reason

    reason = unavailable_reason()
    if reason or not os.path.exists(CHROMIUM):
        print(f"benchmarks.chromium: skipped: {reason or CHROMIUM + ' is not installed'}")
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import benchmarks.chromium as in_namespace  # by module name: call_in imports it there (not __main__)
    root = Path(tempfile.mkdtemp(prefix="agentd-bench-chromium-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTD_")}
    env.update(AGENTD_STATE_DIR=str(root / "state"), AGENTD_RUNTIME_DIR=str(root / "run"), NO_COLOR="1")
    results: dict[str, dict[str, list[dict]]] = {}
    with Netlab.create(prefix="agentd-benchcr") as lab, lab.start_coturn(root / "turn") as turn:
        ice_servers = [{"urls": [turn.turn_udp_url, turn.turn_tcp_url], "username": turn.username, "credential": turn.password}]
        for path in paths:
            lab.clear_faults()
            if path == "udp_blocked":
                lab.drop_udp()
            elif LOSS_EACH_WAY[path] > 0:
                pct = LOSS_EACH_WAY[path] * 100
                lab.set_loss(upstream_pct=pct, downstream_pct=pct, protocol="udp")
            results[path] = {"chromium": [], "agentd": []}
            for run in range(args.runs):
                raw = lab.call_in_agent(in_namespace.chromium_echo, ice_servers, args.echo_s, timeout=120)
                chromium = chromium_row(raw)
                agentd = agentd_media(lab, turn, root, env)
                results[path]["chromium"].append(chromium)
                results[path]["agentd"].append(agentd)
                print(f"{path} run {run + 1}: chromium {chromium.get('transport')} {chromium.get('loss_pct')}% "
                      f"(raw {chromium.get('raw_loss_pct')}%, connect {chromium.get('connect_ms')} ms) | "
                      f"agentd {agentd.get('transport')} {agentd.get('loss_pct')}% (raw {agentd.get('raw_loss_pct')}%) "
                      f"{agentd.get('status')}", flush=True)
                print(f"    chromium selection: {chromium.get('selection')}; UDP-relay pairs (answered/checks): {chromium.get('udp_checks')}; "
                      f"relay candidates {chromium.get('relay_candidates')}", flush=True)
                print(f"    chromium UDP TURN ports: {port_story(chromium)}; agentd: a relayed call on TCP in "
                      f"{agentd.get('tcp_chance_pct')}% (95% CI {agentd.get('tcp_chance_ci95_pct')})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print()
    print("| path | tool | runs on each transport | loss_pct, softphone round trip: median (min-max) | raw two-peer echo loss | probes per run | truth 1-(1-p)^2 |")
    print("|---|---|---|---|---|---|---|")
    for path, tools in results.items():
        p = LOSS_EACH_WAY[path]
        truth = f"{(1 - (1 - p) ** 2) * 100:.1f}"
        for tool, rows in tools.items():
            print(f"| {path} | {tool} | {transports(rows)} | {median_range(r.get('loss_pct') for r in rows)} | "
                  f"{median_range(r.get('raw_loss_pct') for r in rows)} | {median_range(r.get('probes') for r in rows)} | {truth} |")
    print()
    print("| path | same transport (runs) | median loss gap, points (Chromium runs on agentd's transport) | runs of agentd within 5 points of that median |")
    print("|---|---|---|---|")
    for path, tools in results.items():
        cr, ad = tools["chromium"], tools["agentd"]
        same = sum(1 for c, a in zip(cr, ad) if c.get("transport") and c.get("transport") == a.get("transport"))
        # like with like: Chromium runs where both peers used agentd's transport
        c_loss = [r["loss_pct"] for r in cr if r.get("loss_pct") is not None and r.get("transport") == (ad[0].get("transport") if ad else None)]
        a_loss = [r["loss_pct"] for r in ad if r.get("loss_pct") is not None]
        if c_loss and a_loss:
            gap = statistics.median(a_loss) - statistics.median(c_loss)
            within = sum(1 for v in a_loss if abs(v - statistics.median(c_loss)) <= 5.0)
            print(f"| {path} | {same}/{len(cr)} | {gap:+.1f} | {within}/{len(ad)} |")
        else:
            print(f"| {path} | {same}/{len(cr)} | - | - |")
    print()
    print("\n".join(race_table(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
