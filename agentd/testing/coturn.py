"""Run a real coturn (Debian package ``coturn``) for tests: STUN and TURN over UDP, TCP and TLS.

    with Coturn.start(tmp_path, listen_ip="127.0.0.1") as turn:
        turn.stun_url, turn.turn_urls, turn.username, turn.password, turn.certs.ca

Ports are picked free on ``listen_ip``; ``netns`` runs it inside a network namespace
(the lab). The process is stopped and its files left in ``folder`` for inspection.

``second_ip`` (for example ``127.0.0.2``, or a second address of the lab's server) makes
coturn listen on two addresses, which is what it needs to serve its alternate port too
(RFC 5780): ``stun_alt_url`` (second address, alternate port) then answers, so NAT
mapping tests have two server endpoints. Without it only ``stun_url`` answers.

``auth_secret`` starts it with TURN REST authentication (``--use-auth-secret
--static-auth-secret``), as Genesys' TURN servers are run: a username is
``<unix expiry>:<user>`` and its password base64(HMAC-SHA1(secret, username)), so
credentials past their expiry really get 401. :func:`rest_credentials` makes such a pair;
the fixed ``username``/``password`` then do not work.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from agentd.testing.certs import CertFiles, make_certificates

TURNSERVER = "turnserver"


def ips_for_cert(*ips: str | None) -> tuple[str, ...]:
    return tuple(ip for ip in ips if ip)


def rest_credentials(secret: str, user: str = "agent", *, ttl_s: float = 3600.0, now: float | None = None) -> tuple[str, str]:
    """A TURN REST API (coturn ``use-auth-secret``) username and password valid ``ttl_s`` from ``now``."""
    expiry = int((time.time() if now is None else now) + ttl_s)
    username = f"{expiry}:{user}"
    password = base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()
    return username, password


def available() -> bool:
    return shutil.which(TURNSERVER) is not None


def free_port(ip: str = "127.0.0.1", *, kinds=(socket.SOCK_STREAM, socket.SOCK_DGRAM), netns: str | None = None) -> int:
    """A port free for both TCP and UDP on ``ip`` (checked here, not inside ``netns``)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((ip if netns is None else "127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port > 60000 or (netns is None and not all(_bindable(ip, port, k) for k in kinds)):
            continue
        return port
    raise RuntimeError("no free port found")


def free_port_pair(ips: tuple[str, ...]) -> int:
    """A port P such that P and P+1 are free for TCP and UDP on every one of ``ips``."""
    for _ in range(200):
        port = free_port(ips[0])
        if all(_bindable(ip, p, k) for ip in ips for p in (port, port + 1) for k in (socket.SOCK_STREAM, socket.SOCK_DGRAM)):
            return port
    raise RuntimeError("no free port pair found")


def _bindable(ip: str, port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((ip, port))
        except OSError:
            return False
    return True


@dataclass
class Coturn:
    folder: Path
    listen_ip: str
    port: int
    alt_port: int
    tls_port: int
    certs: CertFiles
    username: str = "agent"
    password: str = "s3cret-turn-pass"
    realm: str = "agentd.test"
    netns: str | None = None
    relay_ip: str | None = None
    second_ip: str | None = None
    auth_secret: str | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        return self.listen_ip

    @property
    def stun_url(self) -> str:
        return f"stun:{self.listen_ip}:{self.port}"

    @property
    def stun_alt_url(self) -> str:
        """The second address and alternate port (answers only when started with ``second_ip``)."""
        return f"stun:{self.second_ip or self.listen_ip}:{self.alt_port}"

    @property
    def turn_udp_url(self) -> str:
        return f"turn:{self.listen_ip}:{self.port}?transport=udp"

    @property
    def turn_tcp_url(self) -> str:
        return f"turn:{self.listen_ip}:{self.port}?transport=tcp"

    @property
    def turns_url(self) -> str:
        return f"turns:{self.listen_ip}:{self.tls_port}?transport=tcp"

    @property
    def turn_urls(self) -> list[str]:
        return [self.turn_udp_url, self.turn_tcp_url, self.turns_url]

    def ice_servers_toml(self, *, password: str | None = None) -> str:
        """``[[ice.servers]]`` tables for this server."""
        stun_urls = ", ".join(f'"{u}"' for u in ([self.stun_url, self.stun_alt_url] if self.second_ip else [self.stun_url]))
        return (
            "[[ice.servers]]\n"
            f"urls = [{stun_urls}]\n\n"
            "[[ice.servers]]\n"
            f'urls = ["{self.turn_udp_url}", "{self.turn_tcp_url}", "{self.turns_url}"]\n'
            f'username = "{self.username}"\n'
            f'credential = "{password if password is not None else self.password}"\n'
        )

    def ice_toml(self, *, password: str | None = None, trust_ca: bool = True, extra: str = "") -> str:
        """The whole ``[ice]`` section: ``ca_file`` (this server's test CA, unless
        ``trust_ca`` is false), ``extra`` keys, then :meth:`ice_servers_toml`."""
        head = "[ice]\n" + (f'ca_file = "{self.certs.ca}"\n' if trust_ca else "") + extra
        return head + "\n" + self.ice_servers_toml(password=password)

    @classmethod
    @contextlib.contextmanager
    def start(
        cls,
        folder: Path,
        *,
        listen_ip: str = "127.0.0.1",
        netns: str | None = None,
        relay_ip: str | None = None,
        second_ip: str | None = None,
        cert_names: tuple[str, ...] | None = None,
        min_port: int = 49152,
        max_port: int = 59999,
        extra_args: tuple[str, ...] = (),
        ready_timeout_s: float = 8.0,
        auth_secret: str | None = None,
    ) -> Iterator[Coturn]:
        folder.mkdir(parents=True, exist_ok=True)
        certs = make_certificates(folder / "certs", names=cert_names or (*ips_for_cert(listen_ip, second_ip), "localhost"), common_name="agentd test turn")
        ips = (listen_ip, second_ip) if second_ip else (listen_ip,)
        port = free_port_pair(ips) if netns is None else 3478
        alt_port = port + 1
        tls_port = free_port_pair(ips) if netns is None else 5349
        server = cls(
            folder, listen_ip, port, alt_port, tls_port, certs, netns=netns, relay_ip=relay_ip or listen_ip, second_ip=second_ip,
            auth_secret=auth_secret,
        )
        if auth_secret:  # TURN REST API: time-limited HMAC credentials instead of a fixed user
            auth = ["--use-auth-secret", f"--static-auth-secret={auth_secret}"]
        else:
            auth = [f"--user={server.username}:{server.password}", "--lt-cred-mech"]
        args = [
            TURNSERVER,
            "-n",  # no configuration file
            "--no-cli",
            "--simple-log",
            f"--log-file={folder / 'turn.log'}",
            f"--pidfile={folder / 'turn.pid'}",
            f"--listening-ip={listen_ip}",
            *([f"--listening-ip={second_ip}"] if second_ip else []),
            f"--relay-ip={server.relay_ip}",
            f"--listening-port={port}",
            f"--alt-listening-port={alt_port}",
            f"--tls-listening-port={tls_port}",
            f"--alt-tls-listening-port={tls_port + 1}",
            f"--min-port={min_port}",
            f"--max-port={max_port}",
            f"--cert={certs.cert}",
            f"--pkey={certs.key}",
            f"--realm={server.realm}",
            *auth,
            "--fingerprint",
            "--allow-loopback-peers",
            "--no-multicast-peers",
            "--no-dtls",
            "--no-software-attribute",
            f"--userdb={folder / 'turndb'}",
            *extra_args,
        ]
        if netns:
            args = ["ip", "netns", "exec", netns, *args]
        out = open(folder / "turn.stdout", "wb")
        server.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            server._wait_ready(ready_timeout_s)
            yield server
        finally:
            server.stop()
            out.close()

    def rest_credentials(self, user: str = "agent", *, ttl_s: float = 3600.0) -> tuple[str, str]:
        """Credentials this server accepts (started with ``auth_secret``) for ``ttl_s``."""
        if not self.auth_secret:
            raise ValueError("this coturn was not started with auth_secret")
        return rest_credentials(self.auth_secret, user, ttl_s=ttl_s)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        log = self.folder / "turn.log"
        while time.monotonic() < deadline:
            if self.process and self.process.poll() is not None:
                raise RuntimeError(f"turnserver exited with {self.process.returncode}: {self._tail()}")
            if self._tcp_open():
                return
            time.sleep(0.05)
        raise RuntimeError(f"turnserver not ready within {timeout_s} s: {self._tail()} {log}")

    def _tcp_open(self) -> bool:
        if self.netns:
            return subprocess.run(
                ["ip", "netns", "exec", self.netns, "python3", "-c",
                 f"import socket;socket.create_connection(('{self.listen_ip}',{self.port}),0.2)"],
                capture_output=True,
            ).returncode == 0
        try:
            with socket.create_connection((self.listen_ip, self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def _tail(self) -> str:
        for name in ("turn.log", "turn.stdout"):
            path = self.folder / name
            if path.exists():
                return path.read_text(errors="replace")[-2000:]
        return ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=3)
