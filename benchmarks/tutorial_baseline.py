"""The issue-3 probes written the straightforward way, with the libraries' default timeouts.

This is what the tutorials' code would do: one step after the other, each awaited with
no deadline of its own:

1. a STUN binding to the first ``stun:`` url (aioice ``stun.Transaction``: 63.5 s of
   retransmissions on a silent server);
2. a TURN allocation on each ``turn:``/``turns:`` url (``aioice.turn.create_turn_endpoint``,
   no timeout at all), released at once;
3. two relay-only aiortc peers through the first TURN url, waiting for "connected", then
   echoed data channel probes every 20 ms for ``--duration`` seconds.

It is a baseline to compare agentd with, not part of agentd. Run by benchmarks/preshift.py
in a subprocess that it kills at its cut-off; on its own:

    python -m benchmarks.tutorial_baseline --config agentd.toml [--duration 2.5]

Prints one JSON line per finished step (``{"step", "elapsed_s", "ok", "error"}``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import time
import tomllib

from aioice import stun
from aioice.turn import create_turn_endpoint
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer, RTCIceTransportPolicy, RTCPeerConnection


def _say(step: str, started: float, ok: bool, error: str | None = None) -> None:
    print(json.dumps({"step": step, "elapsed_s": round(time.monotonic() - started, 3), "ok": ok, "error": error}), flush=True)


def _hostport(url: str) -> tuple[str, int, str]:
    scheme, _, rest = url.partition(":")
    hostport, _, query = rest.partition("?")
    host, _, port = hostport.partition(":")
    transport = "tls" if scheme == "turns" else (query.partition("=")[2] or "udp")
    return host, int(port or (5349 if scheme == "turns" else 3478)), transport


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transactions: dict[bytes, stun.Transaction] = {}

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data, addr) -> None:
        message = stun.parse_message(data)
        self.transactions[message.transaction_id].response_received(message, addr)

    def send_stun(self, message, addr) -> None:
        self.transport.sendto(bytes(message), addr)


async def main(config_path: str, duration_s: float) -> None:
    with open(config_path, "rb") as f:
        config = tomllib.load(f)
    servers = config["ice"]["servers"]
    ca_file = config["ice"].get("ca_file")
    stun_url = next(u for s in servers for u in s["urls"] if u.startswith("stun:"))
    turn = [(u, s["username"], s["credential"]) for s in servers for u in s["urls"] if u.startswith("turn")]
    loop = asyncio.get_running_loop()
    started = time.monotonic()

    host, port, _ = _hostport(stun_url)
    transport, client = await loop.create_datagram_endpoint(_Client, remote_addr=(host, port))
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    transaction = stun.Transaction(request, (host, port), client)
    client.transactions[request.transaction_id] = transaction
    try:
        await transaction.run()
        _say("stun", started, True)
    except Exception as exc:  # noqa: BLE001
        _say("stun", started, False, repr(exc))
    transport.close()

    for url, username, password in turn:
        host, port, kind = _hostport(url)
        try:
            ssl_context = ssl.create_default_context(cafile=ca_file) if kind == "tls" else None
            relay, _ = await create_turn_endpoint(
                asyncio.DatagramProtocol, (host, port), username, password,
                ssl=ssl_context, transport="udp" if kind == "udp" else "tcp",
            )
            relay.close()
            _say(f"turn {kind}", started, True)
        except Exception as exc:  # noqa: BLE001
            _say(f"turn {kind}", started, False, repr(exc))

    url, username, password = turn[0]
    configuration = RTCConfiguration(
        iceServers=[RTCIceServer(urls=[url], username=username, credential=password)],
        iceTransportPolicy=RTCIceTransportPolicy.RELAY,
        bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
    )
    a, b = RTCPeerConnection(configuration), RTCPeerConnection(configuration)
    channel = a.createDataChannel("probes", ordered=False, maxRetransmits=0)
    echoes = []

    @b.on("datachannel")
    def on_channel(remote) -> None:
        remote.on("message", remote.send)

    channel.on("message", lambda m: echoes.append(time.monotonic() - float(m)))
    opened = loop.create_future()
    channel.on("open", lambda: opened.done() or opened.set_result(None))
    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)
    await opened  # the tutorial waits for the channel: forever if no relay candidate was gathered
    _say("media connected", started, True)
    for _ in range(int(duration_s / 0.02)):
        channel.send(str(time.monotonic()))
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.5)
    _say("media probes", started, bool(echoes), f"{len(echoes)} echoes")
    await a.close()
    await b.close()
    _say("done", started, True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--duration", type=float, default=2.5)
    args = parser.parse_args()
    asyncio.run(main(args.config, args.duration))
    sys.exit(0)
