"""systemd/agentd-hub.service verifies and is a hardened notify service with credentials."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_the_hub_unit_verifies_and_is_hardened(tmp_path):
    text = (REPO / "systemd" / "agentd-hub.service").read_text()
    (tmp_path / "agentd-hub.service").write_text(text.replace("/usr/bin/agentd", str(Path(sys.executable).parent / "agentd")))
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:", "SYSTEMD_LOG_COLOR": "0"}
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", "agentd-hub.service"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stdout + done.stderr
    lines = [line.strip() for line in text.splitlines() if "=" in line and not line.lstrip().startswith("#")]
    for wanted in ("Type=notify", "NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=", "PrivateTmp=yes"):
        assert wanted in lines, wanted
    assert any(line.startswith("LoadCredential=hub-database-url:") for line in lines)
    assert any(line.startswith("ExecStart=/usr/bin/agentd hub serve") for line in lines)


def test_logins_are_charged_before_the_hash_and_refunded_on_success():
    from agentd.hub.security import LoginLimiter, RateLimiter

    limit = LoginLimiter(RateLimiter(0.001, 3), RateLimiter(0.001, 5))
    assert [limit.charge("10.0.0.1", "alice") for _ in range(4)] == [True, True, True, False]  # three attempts in flight at once
    limit.refund("10.0.0.1", "alice")  # one of them had the right password
    assert limit.charge("10.0.0.1", "alice") is True
    assert limit.charge("10.0.0.1", "bob") is True  # another account from the same address
    assert limit.charge("10.0.0.1", "carol") is True
    assert limit.charge("10.0.0.1", "dave") is False  # the per-address backstop (5 charged, none refunded) is spent
    assert limit.charge("10.0.0.2", "alice") is True  # another address
    assert limit.retry_after_s("10.0.0.1", "alice") >= 1


def test_argon2_never_runs_on_the_event_loop(tmp_path, monkeypatch):
    import asyncio
    import threading

    from agentd.hub import security
    from agentd.hub.db import make_engine
    from agentd.hub.migrate import upgrade
    from agentd.hub.store import Store

    threads: list[str] = []
    for name in ("verify_password", "verify_secret", "hash_password"):
        original = getattr(security, name)

        def observed(*args, _original=original):
            threads.append(threading.current_thread().name)
            return _original(*args)

        monkeypatch.setattr(security, name, observed)

    async def go() -> None:
        engine = make_engine(f"sqlite:///{tmp_path / 'hub.sqlite'}")
        await upgrade(engine)
        store = Store(engine)
        try:
            await store.add_user("helpdesk", "right-password-1")
            assert await store.check_password("helpdesk", "right-password-1") is True
            assert await store.check_password("helpdesk", "wrong-password-1") is False
            assert await store.check_password("nobody", "wrong-password-1") is False
            key = await store.create_enroll_key()
            done = await store.enroll(key.text, "agentd-unit-1", "h", None)
            assert (await store.pc_for_token(done.token)).install_id == "agentd-unit-1"
        finally:
            store.hashing.close()
            await engine.dispose()

    asyncio.run(go())
    assert len(threads) >= 4 and all(t.startswith("agentd-hash") for t in threads), threads


def test_password_checks_beyond_the_queue_are_refused_at_once():
    import asyncio

    import pytest

    from agentd.hub import security

    async def go() -> None:
        hashing = security.Hashing(workers=1, password_queue=2)
        stored = security.hash_password("right-password-1")
        try:
            first = asyncio.ensure_future(hashing.verify_password(stored, "wrong-1"))
            second = asyncio.ensure_future(hashing.verify_password(stored, "wrong-2"))
            await asyncio.sleep(0)
            with pytest.raises(security.HashingBusy):
                await hashing.verify_password(stored, "wrong-3")
            assert await first is False and await second is False
            assert await hashing.verify_password(stored, "right-password-1") is True  # room again
        finally:
            hashing.close()

    asyncio.run(go())
