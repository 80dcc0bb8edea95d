"""An image, as an image builder makes one: the .deb installed into a Debian root while no
systemd runs, a configuration with the client secret as a systemd credential, then booted.

Built in a thread, so that it runs while the other container's watchdog minute passes.
The fake Genesys Cloud runs in this process; in the container, 127.0.0.1:PORT is piped to
it through a Unix socket bound in, so the container keeps no network beyond its loopback.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import threading
from pathlib import Path

from .debian_container import Container, ContainerError

IMAGE_CONFIG = """
[genesys]
region = "mypurecloud.com"
api_base_url = "http://127.0.0.1:{port}"
login_base_url = "http://127.0.0.1:{port}"
client_id = "{client_id}"
client_secret = {{ credential = "client-secret" }}
timeout_s = 5.0
"""

BRIDGE = r"""
import asyncio, sys
PORT, SOCK = int(sys.argv[1]), sys.argv[2]
async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
async def serve(reader, writer):
    up_reader, up_writer = await asyncio.open_unix_connection(SOCK)
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", PORT)
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""

# what an image builder does after installing the package: configuration, secret, drop-ins
CONFIGURE = """set -e
cat > /etc/agentd/agentd.toml
chgrp agentd /etc/agentd/agentd.toml
printf '%s\\n' "$1" > /etc/agentd/credentials/client-secret
chmod 0600 /etc/agentd/credentials/client-secret
for unit in agentd agentd-archive; do
    install -D -m 0644 /usr/share/doc/agentd/examples/credentials.conf /etc/systemd/system/$unit.service.d/credentials.conf
done
"""


class FakeGenesysOverUnix:
    """The fake Genesys Cloud on an event loop of its own in this process, listening on
    loopback and on a Unix socket that the container gets bound in."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="agentd-fake-genesys-"))
        self.socket = self.folder / "genesys.sock"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-genesys", daemon=True)
        self.fake = None

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=30)

    async def _start(self) -> None:
        from aiohttp import web

        from agentd.testing.fake_genesys import FakeGenesys, default_scenario

        self.fake = FakeGenesys(default_scenario())
        await self.fake.start()
        await web.UnixSite(self.fake._runner, str(self.socket)).start()
        os.chmod(self.socket, 0o666)

    def stop(self) -> None:
        if self.fake is not None:
            asyncio.run_coroutine_threadsafe(self.fake.stop(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.socket.unlink(missing_ok=True)
        os.rmdir(self.folder)


class ImageBuild:
    def __init__(self, root: Path, deb: Path) -> None:
        self.genesys = FakeGenesysOverUnix()
        self.deb = deb
        self.container = Container(root, binds_ro=[(deb.parent, "/mnt/agentd-deb")], binds_rw=[(self.genesys.folder, "/mnt/genesys")])
        self.install: subprocess.CompletedProcess | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._build, name="image-build", daemon=True)

    @property
    def port(self) -> int:
        return self.genesys.fake.port

    def start(self) -> None:
        self.genesys.start()
        self.thread.start()

    def _build(self) -> None:
        from agentd.testing.fake_genesys import CC_CLIENT_ID, CC_CLIENT_SECRET

        try:
            c = self.container
            c.mount()
            self.install = c.offline("dpkg", "-i", f"/mnt/agentd-deb/{self.deb.name}")
            if self.install.returncode != 0:
                raise ContainerError(f"dpkg -i without systemd: {self.install.stdout}{self.install.stderr}")
            done = c.offline("sh", "-c", CONFIGURE, "configure", CC_CLIENT_SECRET,
                             input=IMAGE_CONFIG.format(port=self.port, client_id=CC_CLIENT_ID))
            if done.returncode != 0:
                raise ContainerError(f"configuring the image: {done.stdout}{done.stderr}")
            (c.merged / "root" / "bridge.py").write_text(BRIDGE)
            c.boot()
        except BaseException as exc:  # handed to the tests that use the image
            self.error = exc

    def ready(self) -> Container:
        self.thread.join(timeout=600)
        if self.thread.is_alive():
            raise ContainerError("the image was not built and booted within 600 s")
        if self.error is not None:
            raise self.error
        return self.container

    def start_bridge(self) -> None:
        c = self.ready()
        c.run(["systemd-run", "--unit=genesys-bridge", "/usr/bin/python3", "/root/bridge.py", str(self.port), "/mnt/genesys/genesys.sock"])
        probe = f"import socket; socket.create_connection(('127.0.0.1', {self.port}), 1)"
        c.sh(f'for i in $(seq 100); do python3 -c "{probe}" 2>/dev/null && exit 0; sleep 0.1; done; exit 1', timeout=60)

    def close(self) -> None:
        self.thread.join(timeout=600)
        try:
            self.container.stop()
            self.container.unmount()
        finally:
            self.genesys.stop()
