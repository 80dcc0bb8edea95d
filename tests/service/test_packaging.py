"""The Debian package: built by packaging/build-deb.sh, inspected with dpkg-deb, unpacked
into a temporary root, and its own agentd run from there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not all(shutil.which(t) for t in ("dpkg-deb", "fakeroot", "dpkg")) or not Path("/usr/bin/python3").exists(),
        reason="needs dpkg-deb, fakeroot and Debian's python3",
    ),
]


@pytest.fixture(scope="module")
def deb(agentd_deb) -> Path:
    return agentd_deb  # built once per session (tests/service/conftest.py), shared with the container tests


@pytest.fixture(scope="module")
def unpacked(deb, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("root")
    subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    return root


def test_the_package_holds_the_environment_units_and_configuration(deb):
    info = subprocess.run(["dpkg-deb", "-I", str(deb)], capture_output=True, text=True, check=True).stdout
    assert "Package: agentd" in info and "Depends: python3.11" in info
    assert "postinst" in info and "conffiles" in info
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    for path in (
        "./lib/systemd/system/agentd.service",
        "./lib/systemd/system/agentd-archive.service",
        "./lib/systemd/system/agentd-archive.timer",
        "./etc/agentd/agentd.toml",
        "./usr/lib/sysusers.d/agentd.conf",
        "./usr/lib/systemd/system-preset/80-agentd.preset",
        "./usr/share/doc/agentd/examples/credentials.conf",
        "./opt/agentd/bin/agentd",
        "./opt/agentd/pyvenv.cfg",
        "/site-packages/agentd/daemon.py",
        "/site-packages/agentd_plugins/timeline/__init__.py",
        "./usr/bin/agentd -> /opt/agentd/bin/agentd",
    ):
        assert path in listing, path
    assert "/site-packages/pip/" not in listing  # no installer left inside the service's environment
    version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True).stdout
    from agentd import __version__

    assert version.strip() == __version__


def test_unpacked_into_a_temporary_root_its_agentd_runs(unpacked, tmp_path):
    root = unpacked
    script = root / "opt" / "agentd" / "bin" / "agentd"
    assert script.read_text().splitlines()[0] == "#!/opt/agentd/bin/python"  # no build path left
    assert "/tmp" not in (root / "opt" / "agentd" / "pyvenv.cfg").read_text()
    # The venv's python finds its environment from where it lies: run agentd from the root.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTD_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(AGENTD_CONFIG=str(root / "etc" / "agentd" / "agentd.toml"), AGENTD_STATE_DIR=str(tmp_path / "state"),
               AGENTD_RUNTIME_DIR=str(tmp_path / "run"), HOME=str(tmp_path))
    python = root / "opt" / "agentd" / "bin" / "python"
    version = subprocess.run([str(python), "-m", "agentd", "--version"], capture_output=True, text=True, env=env, timeout=60)
    from agentd import __version__

    assert version.returncode == 0 and version.stdout.strip() == f"agentd {__version__}", version.stderr
    # every built-in plugin loads from the packaged environment (its dependencies are all there),
    # and the example configuration is valid
    plugins = subprocess.run([str(python), "-m", "agentd", "plugins", "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert plugins.returncode == 0, plugins.stderr
    states = {p["name"]: p["state"] for p in json.loads(plugins.stdout)}
    assert states["daemon"] == states["timeline"] == "loaded"
    assert all(s == "loaded" for s in states.values()), states


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not Path("/opt").is_dir(), reason="needs root and unshare")
def test_usr_bin_agentd_works_where_the_package_puts_it(unpacked, tmp_path):
    """/usr/bin/agentd → /opt/agentd/bin/agentd with its #!/opt/agentd/bin/python: mount the
    unpacked /opt/agentd at /opt/agentd in a private mount namespace (the host's /opt untouched)."""
    root = unpacked
    script = (
        "set -e; mount -t tmpfs agentd-test /opt; mkdir /opt/agentd; "
        f"mount --bind {root}/opt/agentd /opt/agentd; {root}/usr/bin/agentd --version"
    )
    env = {**os.environ, "AGENTD_CONFIG": str(root / "etc" / "agentd" / "agentd.toml"),
           "AGENTD_STATE_DIR": str(tmp_path / "state"), "AGENTD_RUNTIME_DIR": str(tmp_path / "run")}
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, env=env, timeout=60)
    from agentd import __version__

    assert done.returncode == 0 and done.stdout.strip() == f"agentd {__version__}", done.stderr
