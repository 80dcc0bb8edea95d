"""Verdicts from real measurements: the network lab (agent ns -> NAT router -> coturn) with
random loss at the router, agentd's checks run inside the agent namespace.

The link is made to look wireless through the host plugin's one seam for it
(``sample.SYS_CLASS_NET``, pointed at a folder where the agent's real veth ``eth0`` has a
``wireless`` entry, as a cfg80211 driver gives one), or to be a VPN by renaming the
agent's real interface to ``wg0`` (the default route then goes through it).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agentd.testing.invariants import assert_every_bad_check_explained
from tests.conftest import OFFLINE_GENESYS
from tests.probes.conftest import lab_coturn, lab_unavailable, netlab  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.lab, pytest.mark.coturn]

CHECKS = ("stun", "turn.udp", "udp.ports", "media.path", "host")


def checked_in_namespace(config_file: str, sys_class_net: str | None) -> dict:
    """Run the checks as ``agentd check`` does (App.load + run_check, rules included), in
    whatever namespace this runs in; the report as JSON data."""
    import asyncio

    from agentd.app import App
    from agentd_plugins.host import sample

    if sys_class_net:
        sample.SYS_CLASS_NET = Path(sys_class_net)
    app = App.load(Path(config_file))
    return asyncio.run(app.run_check("preshift", only=CHECKS)).to_dict()


def lossy_lab_config(turn) -> str:
    return (
        OFFLINE_GENESYS
        + f'[ice]\nca_file = "{turn.certs.ca}"\n'
        # UDP only: this test is about what the rules make of a lossy UDP path
        + f'[[ice.servers]]\nurls = ["{turn.stun_url}", "{turn.turn_udp_url}"]\n'
        + f'username = "{turn.username}"\ncredential = "{turn.password}"\n'
        + "[media]\nduration_s = 3.0\nconnect_timeout_s = 20.0\n"
        # The lab's link adds no delay; a test machine shared by many jobs can starve Python
        # for hundreds of ms, which must not turn this lossy link into congestion here.
        + "[thresholds]\nrtt_ms = 3000.0\n"
    )


def make_vpn_default_route(netlab) -> None:
    """Rename the agent's own link to wg0 (a WireGuard name): the default route goes through it."""
    for args in (
        ["ip", "link", "set", "eth0", "down"],
        ["ip", "link", "set", "eth0", "name", "wg0"],
        ["ip", "link", "set", "wg0", "up"],
        ["ip", "route", "replace", "default", "via", "10.77.1.1", "dev", "wg0"],
    ):
        netlab.exec(netlab.agent, args, check=True)
    subprocess.run(["sleep", "0.3"])  # carrier on the renamed veth


@pytest.mark.parametrize("link", ["wifi", "vpn"])
def test_a_lossy_link_with_low_rtt_is_packet_loss_naming_the_link(netlab, lab_coturn, agentd_env, tmp_path, link):  # noqa: F811
    config = agentd_env.write_config(lossy_lab_config(lab_coturn))
    sysfs = None
    if link == "wifi":
        sysfs = tmp_path / "sys-class-net"
        (sysfs / "eth0" / "wireless").mkdir(parents=True)
    else:
        make_vpn_default_route(netlab)
    netlab.set_loss(upstream_pct=5, downstream_pct=5, protocol="udp")

    report = netlab.call_in_agent(checked_in_namespace, str(config), str(sysfs) if sysfs else None, timeout=120)

    checks = {c["id"]: c for c in report["checks"]}
    media, host = checks["media.path"], checks["host"]
    assert media["details"]["transport"] == "udp", media["summary"]
    assert media["metrics"]["loss_pct"] > 1.0, media["metrics"]  # 1 - 0.95^2 = 9.75 % expected
    assert_every_bad_check_explained(report)
    # named even when the MOS is still above the check's own warning line
    [loss] = [v for v in report["verdicts"] if v["code"] == "network.packet_loss"]
    assert "check:media.path" in loss["evidence"] and "check:host" in loss["evidence"]
    assert "network.isp_congestion" not in {v["code"] for v in report["verdicts"]}
    if link == "wifi":
        assert host["details"]["interface"] == "eth0" and host["details"]["interface_is_wifi"] is True
        assert "Wi-Fi (eth0" in loss["summary"] and loss["next_step"].startswith("The PC is on Wi-Fi")
    else:
        assert host["details"]["interface"] == "wg0" and host["details"]["vpn_interfaces"] == ["wg0"]
        assert "the VPN wg0" in loss["summary"] and "split tunnelling" in loss["next_step"]
        assert "Wi-Fi" not in loss["next_step"]
