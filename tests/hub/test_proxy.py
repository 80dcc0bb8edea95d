"""The PC reaches the hub through an HTTP proxy set in its environment (HTTP_PROXY): the
enrollment goes through it as a proxied request, the WebSocket as a CONNECT tunnel."""

from __future__ import annotations

import asyncio
import threading
from urllib.parse import urlsplit

import pytest

from tests.hub.conftest import free_port, wait_until
from tests.hub.test_daemon import connected


class LoopbackProxy:
    """A minimal HTTP proxy on 127.0.0.1: CONNECT tunnels and absolute-form requests, to
    loopback targets only; it records what it was asked."""

    def __init__(self) -> None:
        self.port = free_port()
        self.seen: list[tuple[str, str]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="proxy", daemon=True)

    def __enter__(self) -> "LoopbackProxy":
        self.thread.start()
        asyncio.run_coroutine_threadsafe(asyncio.start_server(self.handle, "127.0.0.1", self.port), self.loop).result(10)
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            line, rest = head.split(b"\r\n", 1)
            method, target, version = line.decode().split(" ")
            self.seen.append((method, target))
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                if host != "127.0.0.1":
                    writer.write(b"HTTP/1.1 403 Forbidden\r\n\r\n")
                    return
                up_reader, up_writer = await asyncio.open_connection(host, int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                url = urlsplit(target)
                if url.hostname != "127.0.0.1":
                    writer.write(b"HTTP/1.1 403 Forbidden\r\n\r\n")
                    return
                up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port or 80)
                path = url.path + (f"?{url.query}" if url.query else "")
                up_writer.write(f"{method} {path} {version}\r\n".encode() + rest)
            await asyncio.gather(self.pipe(reader, up_writer), self.pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        finally:
            sink.close()


@pytest.mark.floor
def test_the_daemon_joins_through_an_http_proxy(live_hub, pc_factory):
    key = live_hub.enroll_key()
    auth = live_hub.add_user()
    hub_port = urlsplit(live_hub.url).port
    with LoopbackProxy() as proxy:
        pc = pc_factory(live_hub.url, key, extra_env={"HTTP_PROXY": f"http://127.0.0.1:{proxy.port}", "NO_PROXY": ""})
        pc.start()
        wait_until(connected(live_hub.url, auth), 120, interval_s=0.3, what="the daemon to connect through the proxy")
        assert ("CONNECT", f"127.0.0.1:{hub_port}") in proxy.seen  # the WebSocket
        assert ("POST", f"{live_hub.url}/api/v1/enroll") in proxy.seen  # the enrollment
        pc.stop()
