"""``agentd reload`` (the unit's ExecReload: no kill binary needed) and what ``agentd status``
says is not configured."""

from __future__ import annotations

import json

from .conftest import base_config


def test_agentd_reload_answers_whether_the_daemon_took_the_file(start_daemon, service_env):
    service_env.write_config(base_config(service_env.plugin_dir, '[schedule]\ntimes = ["07:45"]\n'))
    daemon = start_daemon()
    assert daemon.notify.wait_for("READY=1", timeout_s=20.0) is not None, daemon.stderr()

    service_env.write_config(base_config(service_env.plugin_dir, '[schedule]\ntimes = ["25:99"]\n'))
    rejected = service_env.run("reload", timeout=30)
    assert rejected.returncode == 2, rejected.stdout + rejected.stderr
    assert "reload rejected" in rejected.stderr and "schedule.times[0]" in rejected.stderr
    status = json.loads(service_env.run("status", "--json", timeout=20).stdout)
    assert status["schedule"]["times"] == ["07:45"] and status["reloads"] == 0  # the old one kept
    assert "schedule.times[0]" in status["last_reload_error"]

    service_env.write_config(base_config(service_env.plugin_dir, '[schedule]\ntimes = ["08:15"]\n'))
    taken = service_env.run("reload", timeout=30)
    assert taken.returncode == 0, taken.stderr
    assert str(service_env.config_file) in taken.stdout
    status = json.loads(service_env.run("status", "--json", timeout=20).stdout)
    assert status["schedule"]["times"] == ["08:15"] and status["reloads"] == 1 and status["last_reload_error"] is None
    # systemd heard that a reload happened and that it is over
    assert daemon.notify.wait_for("RELOADING=1", timeout_s=10.0) is not None
    assert daemon.stop() == 0


def test_agentd_reload_without_a_daemon_says_so(service_env):
    done = service_env.run("reload")
    assert done.returncode == 1 and "no daemon is running" in done.stderr


def test_status_names_what_is_not_configured(start_daemon, service_env):
    daemon = start_daemon()  # base_config: no Genesys credentials, no schedule
    assert daemon.notify.wait_for("READY=1", timeout_s=20.0) is not None, daemon.stderr()
    status = json.loads(service_env.run("status", "--json", timeout=20).stdout)
    missing = " | ".join(status["not_configured"])
    assert "Genesys Cloud credentials" in missing and "[genesys] client_id" in missing
    assert "[schedule] times" in missing
    text = service_env.run("status", timeout=20).stdout
    assert "not configured: Genesys Cloud credentials" in text and "not configured: pre-shift schedule" in text

    assert daemon.stop() == 0

    # configured: client credentials (from the environment here), a schedule and a load service
    # for latency under load: nothing named
    service_env.write_config(base_config(service_env.plugin_dir, '[schedule]\ntimes = ["07:45"]\n'
                                         '[loaded_latency]\nurl = "http://127.0.0.1:9"\n').replace(
        'region = "agentd-test.invalid"',
        'region = "agentd-test.invalid"\nclient_id = "svc-client"\nclient_secret = { env = "SVC_SECRET" }'))
    daemon = start_daemon(extra_env={"SVC_SECRET": "svc-secret-value"})
    assert daemon.notify.wait_for("READY=1", timeout_s=20.0) is not None, daemon.stderr()
    status = json.loads(service_env.run("status", "--json", timeout=20).stdout)
    assert status["not_configured"] == []
    assert daemon.stop() == 0


def test_archive_without_credentials_exits_0_and_says_why(service_env):
    done = service_env.run("archive", "--since", "24h", timeout=60)
    assert done.returncode == 0, done.stderr
    assert "nothing to do" in done.stderr and "no Genesys Cloud credentials" in done.stderr
