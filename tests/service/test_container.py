"""The packaged service under a real systemd: a minimal Debian 12 booted in a container,
the freshly built .deb installed with ``dpkg -i`` and the unit started with no
configuration at all, as a fleet admin would do it.

Costs: the Debian root is built once by debootstrap and cached (see debian_container.py;
8.5 min on a loaded machine). From the cache this module took 4.0 min on 2 cores at load 9:
most of it building the .deb (shared with test_packaging.py), then dpkg -i 27 s and the tests.
The watchdog's minute runs while the other assertions are made, and the image container
is built in a thread meanwhile.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest

from .debian_container import Container, booted, can_boot_containers, debian_root
from .image_build import ImageBuild

REPO = Path(__file__).resolve().parents[2]
WATCHDOG_QUIET_S = 60.0

why_not = can_boot_containers()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(why_not is not None, reason=why_not or "")]


class FleetPc:
    """The booted container with agentd installed and started."""

    def __init__(self, container: Container) -> None:
        self.c = container
        self.active_at = 0.0
        self.main_pid = ""
        self.first_watchdog = 0
        self.install_s = 0.0
        self.image: ImageBuild | None = None

    def status(self, user: str | None = None) -> dict:
        done = self.c.run(["agentd", "status", "--json"], user=user, timeout=60)
        return json.loads(done.stdout)

    def journal(self, unit: str) -> str:
        return self.c.run(["journalctl", "--no-pager", "-o", "cat", "-u", unit], timeout=30).stdout


@pytest.fixture(scope="module")
def pc(agentd_deb):
    root = debian_root()
    with booted(root, binds_ro=[(agentd_deb.parent, "/mnt/agentd-deb")]) as container:
        pc = FleetPc(container)
        started = time.monotonic()
        container.run(["dpkg", "-i", f"/mnt/agentd-deb/{agentd_deb.name}"], timeout=300)
        pc.install_s = time.monotonic() - started
        container.run(["systemctl", "enable", "--now", "agentd"], timeout=60)
        pc.active_at = time.monotonic()
        shown = container.show("agentd", "MainPID", "WatchdogTimestampMonotonic")
        pc.main_pid, pc.first_watchdog = shown["MainPID"], int(shown["WatchdogTimestampMonotonic"])
        # the image (second container) is built and booted while this one's watchdog minute runs
        pc.image = ImageBuild(root, agentd_deb)
        pc.image.start()
        try:
            yield pc
        finally:
            closing = threading.Thread(target=pc.image.close, name="image-close")
            closing.start()  # both containers go down at once
            started = time.monotonic()
            container.stop()
            closing.join(timeout=120)
            print(f"\ncontainers stopped in {time.monotonic() - started:.1f} s "
                  f"(powered off in {container.stop_s or 0:.1f} s and {pc.image.container.stop_s or 0:.1f} s)")


def test_a_fresh_install_is_active_with_no_configuration(pc):
    c = pc.c
    assert c.run(["systemctl", "is-active", "agentd"], check=False).stdout.strip() == "active", pc.journal("agentd")
    shown = c.show("agentd", "ActiveState", "SubState", "NRestarts", "StatusText", "Result")
    assert shown["SubState"] == "running" and shown["NRestarts"] == "0" and shown["Result"] == "success", shown
    assert shown["StatusText"].startswith("idle"), shown  # READY=1 and STATUS= reached systemd
    # nothing configured: no credential file, the shipped example configuration untouched
    assert c.run(["test", "-e", "/etc/agentd/credentials/client-secret"], check=False).returncode == 1
    # the package enabled both units through its preset (before the admin's own enable)
    enabled = c.run(["systemctl", "is-enabled", "agentd.service", "agentd-archive.timer"], check=False).stdout.split()
    assert enabled == ["enabled", "enabled"]
    assert c.run(["systemctl", "is-active", "agentd-archive.timer"], check=False).stdout.strip() == "active"
    status = pc.status()
    assert str(status["pid"]) == pc.main_pid and status["config"] == "/etc/agentd/agentd.toml"
    assert any("Genesys Cloud credentials" in line for line in status["not_configured"]), status
    print(f"\ndpkg -i took {pc.install_s:.1f} s; the container booted in {c.boot_s:.1f} s")


def test_status_and_check_through_the_socket_as_root_and_as_a_member_of_group_agentd(pc):
    c = pc.c
    c.run(["useradd", "--create-home", "--groups", "agentd", "agent1"])
    c.run(["useradd", "--create-home", "outsider"])
    for user in (None, "agent1"):
        status = pc.status(user=user)
        assert str(status["pid"]) == pc.main_pid, (user, status)
        text = c.run(["agentd", "status"], user=user).stdout
        assert "not configured: Genesys Cloud credentials" in text
        done = c.run(["agentd", "check", "--json", "--only", "host"], user=user, check=False, timeout=120)
        assert done.returncode in (0, 1), (user, done.stderr)
        report = json.loads(done.stdout)
        assert [check["id"] for check in report["checks"]] == ["host"]
        assert "in this process instead" not in done.stderr, done.stderr
        # the daemon ran it: its last report is this one
        assert pc.status()["last_report"]["id"] == report["id"], user
    # someone outside the group gets neither the socket nor the configuration, and is told so in one line
    refused = c.run(["agentd", "status"], user="outsider", check=False)
    assert refused.returncode == 1 and "permission denied on /run/agentd" in refused.stdout, refused.stdout + refused.stderr
    refused = c.run(["agentd", "check", "--only", "host"], user="outsider", check=False)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == ["agentd: /etc/agentd/agentd.toml: cannot read the configuration file: Permission denied"]


def test_systemctl_reload_takes_a_valid_file_and_keeps_the_old_one_for_a_broken_one(pc):
    c = pc.c
    # a minimal Debian: no procps, so no /bin/kill; the reload must not need it
    assert c.run(["dpkg", "-s", "procps"], check=False).returncode != 0
    assert c.run(["test", "-e", "/bin/kill"], check=False).returncode == 1
    shipped = c.run(["cat", "/etc/agentd/agentd.toml"]).stdout
    good = shipped.replace("times = []", 'times = ["07:45"]')
    assert good != shipped
    c.write("/etc/agentd/agentd.toml", good, mode=0o640, owner="root:agentd")
    c.run(["systemctl", "reload", "agentd"], timeout=60)
    status = pc.status()
    assert status["schedule"]["times"] == ["07:45"] and status["reloads"] == 1 and status["last_reload_error"] is None

    c.write("/etc/agentd/agentd.toml", shipped.replace("times = []", 'times = ["25:99"]'), mode=0o640, owner="root:agentd")
    rejected = c.run(["systemctl", "reload", "agentd"], check=False, timeout=60)
    assert rejected.returncode != 0  # the admin sees the reload fail ...
    assert c.run(["systemctl", "is-active", "agentd"], check=False).stdout.strip() == "active"  # ... and the service go on
    assert c.show("agentd", "MainPID")["MainPID"] == pc.main_pid
    status = pc.status()
    assert status["schedule"]["times"] == ["07:45"] and status["reloads"] == 1  # the old configuration in force
    assert "schedule.times[0]" in status["last_reload_error"]
    assert "reload rejected" in pc.journal("agentd")

    c.write("/etc/agentd/agentd.toml", shipped, mode=0o640, owner="root:agentd")  # back to the shipped defaults
    c.run(["systemctl", "reload", "agentd"], timeout=60)
    assert pc.status()["schedule"]["times"] == []


HARDENING_PROBE = r"""
for path in "$@"; do
    if ( : > "$path" ) 2>/dev/null; then echo "$path writable"; rm -f "$path"; else echo "$path refused"; fi
done
"""


def test_the_service_cannot_write_outside_its_state_directories(pc):
    c = pc.c
    pid = c.show("agentd", "MainPID")["MainPID"]
    outside = ["/etc/agentd/probe", "/etc/probe", "/usr/probe", "/opt/agentd/probe", "/var/log/probe",
               "/var/cache/probe", "/var/lib/probe", "/srv/probe", "/home/agent1/probe", "/root/probe"]
    inside = ["/var/lib/agentd/probe", "/run/agentd/probe"]
    # in the service's own mount namespace, as its user: what the daemon itself could do
    done = c.run(["nsenter", "-t", pid, "-m", "--", "setpriv", "--reuid=agentd", "--regid=agentd", "--init-groups",
                  "sh", "-c", HARDENING_PROBE, "probe", *outside, *inside])
    verdicts = dict(line.rsplit(" ", 1) for line in done.stdout.splitlines())
    assert {p: verdicts[p] for p in outside} == {p: "refused" for p in outside}, done.stdout
    assert {p: verdicts[p] for p in inside} == {p: "writable" for p in inside}, done.stdout
    # even root in that namespace cannot: the file system is read-only there, not just the mode
    done = c.run(["nsenter", "-t", pid, "-m", "--", "sh", "-c", HARDENING_PROBE, "probe", "/etc/probe", "/usr/probe"])
    assert done.stdout.split("\n")[:2] == ["/etc/probe refused", "/usr/probe refused"], done.stdout
    # no capabilities, no new privileges, a seccomp filter (SystemCallArchitectures=native)
    proc_status = dict(line.split(":\t", 1) for line in c.run(["cat", f"/proc/{pid}/status"]).stdout.splitlines() if ":\t" in line)
    assert int(proc_status["CapBnd"], 16) == 0 and int(proc_status["CapEff"], 16) == 0
    assert proc_status["NoNewPrivs"].strip() == "1" and proc_status["Seccomp"].strip() == "2"


def test_no_failed_unit_after_the_timers_jobs_run_on_an_unconfigured_install(pc):
    c = pc.c
    timers = c.run(["systemctl", "list-unit-files", "--type=timer", "--no-legend", "--plain", "agentd*"]).stdout.split()
    timers = [t for t in timers if t.endswith(".timer")]
    assert "agentd-archive.timer" in timers
    for timer in timers:
        service = c.show(timer, "Unit")["Unit"]
        c.run(["systemctl", "start", service], check=False, timeout=180)  # a oneshot: returns when it ended
        shown = c.show(service, "Result", "ExecMainStatus", "ActiveState")
        assert shown["Result"] == "success" and shown["ExecMainStatus"] == "0", (service, shown, pc.journal(service))
    assert "nothing to do: no Genesys Cloud credentials" in pc.journal("agentd-archive.service")
    failed = c.run(["systemctl", "list-units", "--failed", "--no-legend", "--plain"]).stdout.strip()
    assert failed == "", failed


def _readme_exposure() -> str:
    text = (REPO / "README.md").read_text()
    found = re.search(r"Overall exposure level for agentd\.service: ([0-9.]+ \w+)", text)
    assert found, "the README's systemd section gives `systemd-analyze security agentd` figures"
    return found.group(1)


def test_systemd_analyze_security_gives_the_readme_figures(pc):
    done = pc.c.run(["systemd-analyze", "security", "--no-pager", "agentd.service"], check=False, timeout=60)
    found = re.search(r"Overall exposure level for agentd\.service: ([0-9.]+ \w+)", done.stdout)
    assert found, done.stdout[-2000:] + done.stderr
    # what systemd still counts against it (the README says why each stays)
    print("\n" + "\n".join(line for line in done.stdout.splitlines() if line.startswith("✗") or "Overall" in line))
    assert found.group(1) == _readme_exposure()


def test_an_image_built_without_systemd_boots_with_agentd_enabled_and_running(pc):
    c = pc.image.ready()
    said = pc.image.install.stderr
    assert "systemd is not running here" in said and "agentd.service is enabled" in said, said
    enabled = c.run(["systemctl", "is-enabled", "agentd.service", "agentd-archive.timer"], check=False).stdout.split()
    assert enabled == ["enabled", "enabled"]
    active = c.run(["systemctl", "is-active", "agentd.service", "agentd-archive.timer"], check=False).stdout.split()
    assert active == ["active", "active"], c.run(["journalctl", "--no-pager", "-o", "cat", "-u", "agentd"]).stdout[-3000:]


def test_with_a_configuration_and_a_credential_file_the_secret_reaches_agentd(pc):
    from agentd.testing.fake_genesys import CC_CLIENT_SECRET

    c = pc.image.ready()
    pid = c.show("agentd", "MainPID")["MainPID"]
    environ = dict(item.split("=", 1) for item in c.run(["cat", f"/proc/{pid}/environ"]).stdout.split("\0") if "=" in item)
    assert environ["CREDENTIALS_DIRECTORY"] == "/run/credentials/agentd.service"
    status = json.loads(c.run(["agentd", "status", "--json"]).stdout)
    assert not any("Genesys" in line for line in status["not_configured"]), status  # it has its credentials
    # the nightly archive, as its timer starts it: it logs in with the secret from
    # $CREDENTIALS_DIRECTORY (the fake refuses a wrong one) and stores the scenario's two bad calls
    pc.image.start_bridge()
    c.run(["systemctl", "start", "agentd-archive.service"], check=False, timeout=180)
    journal = c.run(["journalctl", "--no-pager", "-o", "cat", "-u", "agentd-archive.service"]).stdout
    shown = c.show("agentd-archive.service", "Result", "ExecMainStatus")
    assert shown == {"Result": "success", "ExecMainStatus": "0"}, journal
    assert "2 stored" in journal, journal
    tokens = [r for r in pc.image.genesys.fake.state.requests if r.path == "/oauth/token"]
    assert tokens and all(r.status == 200 for r in tokens), tokens
    # and the secret shows nowhere in the journal
    assert CC_CLIENT_SECRET not in c.run(["journalctl", "--no-pager", "-o", "cat"]).stdout


def test_the_watchdog_stays_quiet_for_a_minute_and_stop_ends_within_its_timeout(pc):
    c = pc.c
    assert c.show("agentd", "WatchdogUSec")["WatchdogUSec"] == "30s"
    left = pc.active_at + WATCHDOG_QUIET_S - time.monotonic()
    if left > 0:
        time.sleep(left + 1)
    shown = c.show("agentd", "MainPID", "NRestarts", "ActiveState", "WatchdogTimestampMonotonic", "TimeoutStopUSec")
    assert shown["ActiveState"] == "active" and shown["MainPID"] == pc.main_pid and shown["NRestarts"] == "0", shown
    assert int(shown["WatchdogTimestampMonotonic"]) > pc.first_watchdog  # its pings kept coming
    assert "watchdog timeout" not in pc.journal("agentd").lower()

    started = time.monotonic()
    c.run(["systemctl", "stop", "agentd"], timeout=60)
    took = time.monotonic() - started
    shown = c.show("agentd", "ActiveState", "Result", "ExecMainCode", "ExecMainStatus", "TimeoutStopUSec")
    assert shown["ActiveState"] == "inactive" and shown["Result"] == "success", shown
    assert shown["ExecMainStatus"] == "0", shown  # it exited by itself, not killed at the timeout
    assert shown["TimeoutStopUSec"] == "20s" and took < 20.0, took
    print(f"\nsystemctl stop took {took * 1000:.0f} ms")
