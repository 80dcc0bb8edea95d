"""``agentd reflect`` (a bounded UDP echo service) and ``udp.ports`` aimed at it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from agentd.testing.coturn import free_port
from agentd_plugins.udp_ports.reflect import MAGIC

from .helpers import checks_of, config_text, report_of


def _free_range(width: int) -> int:
    """A first port such that first..first+width-1 are free for UDP on 127.0.0.1 (checked, best effort)."""
    for _ in range(50):
        first = free_port("127.0.0.1")
        if first + width > 60000:
            continue
        socks = []
        try:
            for port in range(first, first + width):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


@contextlib.contextmanager
def reflector(agentd_env, first: int, last: int, *extra: str):
    if not agentd_env.config_file.exists():
        agentd_env.write_config(config_text())
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentd", "reflect", "--listen", "127.0.0.1", "--ports", f"{first}-{last}", "--duration", "60", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=agentd_env.env,
    )
    try:
        line = proc.stdout.readline()  # printed once every port is open
        assert "listening on 127.0.0.1" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _ask(port: int, payload: bytes, *, wait_s: float = 0.3) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(wait_s)
        s.connect(("127.0.0.1", port))
        s.send(payload)
        try:
            return s.recv(4096)
        except (TimeoutError, ConnectionRefusedError):
            return None


def test_reflect_echoes_only_agentd_probes_and_stops_on_sigterm(agentd_env):
    first = _free_range(4)
    with reflector(agentd_env, first, first + 3, "--max-payload", "64") as proc:
        for port in range(first, first + 4):
            probe = MAGIC + f"port {port}".encode()
            assert _ask(port, probe) == probe
        assert _ask(first, b"GET / HTTP/1.0\r\n\r\n") is None  # not ours: no answer
        assert _ask(first, MAGIC + b"x" * 100) is None  # larger than --max-payload: no answer
    assert proc.returncode == 0
    summary = proc.stdout.read()
    assert "replied 4" in summary and "ignored 2" in summary


def test_reflect_rate_limits_per_source(agentd_env):
    first = _free_range(1)
    with reflector(agentd_env, first, first, "--per-source-rate", "5"):
        answered = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("127.0.0.1", first))
            s.settimeout(0.3)
            for i in range(50):
                s.send(MAGIC + str(i).encode())
            with contextlib.suppress(TimeoutError):
                while True:
                    s.recv(4096)
                    answered += 1
    # a burst of 5, then 5 per second: a flood of 50 gets a handful of answers, not 50
    assert 1 <= answered <= 8, answered


def test_reflect_refuses_bad_ranges_with_exit_2(agentd_env):
    agentd_env.write_config(config_text())
    proc = agentd_env.run("reflect", "--listen", "127.0.0.1", "--ports", "9-1")
    assert proc.returncode == 2 and "--ports" in proc.stderr
    proc = agentd_env.run("reflect", "--listen", "127.0.0.1", "--ports", "20000-30000")
    assert proc.returncode == 2 and "--max-sockets" in proc.stderr
    assert "Traceback" not in proc.stderr
    help_text = agentd_env.run("reflect", "--help")
    assert help_text.returncode == 0 and "--ports" in help_text.stdout and "--listen" in help_text.stdout


def test_udp_ports_through_the_reflector(agentd_env):
    first = _free_range(8)
    agentd_env.write_config(
        config_text(extra=f'[udp_ports]\nsample = 8\nreflector = "127.0.0.1"\nreflector_ports = "{first}-{first + 7}"\n')
    )
    with reflector(agentd_env, first, first + 7):
        proc = agentd_env.run("check", "--json", "--only", "udp.ports")
    check = checks_of(report_of(proc.stdout))["udp.ports"]
    assert check["status"] == "pass", check
    assert check["metrics"] == {"answered_pct": 100.0, "ports_tried": 8}
    assert sorted(row["remote_port"] for row in check["details"]["sample"]) == list(range(first, first + 8))
    assert check["details"]["target"] == f"reflector 127.0.0.1:{first}-{first + 7}"
    assert all(16384 <= row["local_port"] <= 65535 for row in check["details"]["sample"])


def test_udp_ports_names_the_destination_ports_without_answer(agentd_env):
    first = _free_range(8)
    agentd_env.write_config(
        config_text(extra=f'[udp_ports]\nsample = 8\nreflector = "127.0.0.1"\nreflector_ports = "{first}-{first + 7}"\n')
    )
    with reflector(agentd_env, first, first + 3):  # the upper half of the range is closed
        proc = agentd_env.run("check", "--json", "--only", "udp.ports")
    check = checks_of(report_of(proc.stdout))["udp.ports"]
    assert check["status"] == "warn", check
    assert check["metrics"]["answered_pct"] == 50.0
    closed = sorted(r["remote_port"] for r in check["details"]["sample"] if not r["ok"])
    assert closed == list(range(first + 4, first + 8))
    assert {r["reason"] for r in check["details"]["sample"] if not r["ok"]} == {"refused"}
    assert proc.returncode == 0  # a warning is not "not ready"
