"""`agentd reports list|show|resend|flush` and the sinks' configuration errors, as a user runs them."""

from __future__ import annotations

import json

from .collector import Collector

BASE = '[genesys]\nregion = "agentd-test.invalid"\n'


def test_reports_list_show_and_resend(agentd_env, tmp_path):
    agentd_env.write_config(BASE)
    result = agentd_env.run("check", "--only", "host", "--no-daemon", "--json", "--upload")
    report_id = json.loads(result.stdout)["id"]
    assert "delivered to file" in result.stderr

    listed = json.loads(agentd_env.run("reports", "list", "--json").stdout)
    assert listed["pending"] == [] and [s["id"] for s in listed["stored"]] == [report_id]
    assert listed["sinks"] == ["file"]

    shown = agentd_env.run("reports", "show", report_id, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["id"] == report_id
    text = agentd_env.run("reports", "show", report_id)
    assert "host" in text.stdout and report_id in text.stdout
    page = tmp_path / "r.html"
    assert agentd_env.run("reports", "show", report_id, "--html", str(page)).returncode == 0
    assert report_id in page.read_text()

    missing = agentd_env.run("reports", "show", "20990101T000000Z-000000000000")
    assert missing.returncode == 1 and "no report" in missing.stderr
    escape = agentd_env.run("reports", "show", "../../etc/passwd")
    assert escape.returncode == 1 and "cannot be used as a file name" in escape.stderr

    # a collector added later gets the stored report with `resend --sink http`
    collector = Collector()
    collector.set("up")
    try:
        agentd_env.write_config(BASE + f'[sinks.http]\nurl = "{collector.url}"\n')
        resent = agentd_env.run("reports", "resend", report_id, "--sink", "http")
        assert resent.returncode == 0, resent.stdout + resent.stderr
        assert "delivered to http" in resent.stdout and "already at file" in resent.stdout
        assert set(collector.stored) == {report_id}
        bad_sink = agentd_env.run("reports", "resend", report_id, "--sink", "nope")
        assert bad_sink.returncode == 2 and "no configured sink named nope" in bad_sink.stderr
    finally:
        collector.close()


def test_flush_exits_1_while_something_stays_pending(agentd_env):
    collector = Collector()  # never started: connection refused
    agentd_env.write_config(BASE + f'[sinks.http]\nurl = "{collector.url}"\nretries = 0\n[sinks.file]\nenabled = false\n')
    agentd_env.run("check", "--only", "host", "--no-daemon", "--json", "--upload")
    flushed = agentd_env.run("reports", "flush")
    assert flushed.returncode == 1 and "kept in the spool" in flushed.stdout
    collector.set("up")
    try:
        assert agentd_env.run("reports", "flush").returncode == 0
        assert len(collector.stored) == 1
    finally:
        collector.close()


def test_sink_configuration_errors_name_the_key(agentd_env):
    agentd_env.write_config(BASE + '[sinks.http]\nurl = "ftp://collector.example/x"\n')
    result = agentd_env.run("reports", "list")
    assert result.returncode == 2 and "sinks.http.url" in result.stderr and "http:// or https://" in result.stderr
    agentd_env.write_config(BASE + '[sinks.http]\nurl = "https://c.example/x"\ntoken = { env = "AGENTD_NO_SUCH_VAR" }\n')
    result = agentd_env.run("check", "--upload")
    assert result.returncode == 2 and "sinks.http.token" in result.stderr and "AGENTD_NO_SUCH_VAR" in result.stderr
    agentd_env.write_config(BASE + '[sinks.s3]\nprefix = "x/"\n')
    result = agentd_env.run("reports", "list")
    assert result.returncode == 2 and "sinks.s3.bucket" in result.stderr and "required" in result.stderr
    agentd_env.write_config(BASE + '[spool]\nmax_reports = 0\n')
    result = agentd_env.run("reports", "list")
    assert result.returncode == 2 and "spool.max_reports" in result.stderr


def test_help_of_the_new_options(agentd_env):
    agentd_env.write_config(BASE)
    assert "--upload" in agentd_env.run("check", "--help").stdout
    assert "--html" in agentd_env.run("diagnose", "--help").stdout
    for action in ("list", "show", "resend", "flush"):
        assert agentd_env.run("reports", action, "--help").returncode == 0


def test_s3_without_boto3_is_a_clear_configuration_error(agentd_env):
    import subprocess
    import sys

    agentd_env.write_config(BASE + '[sinks.s3]\nbucket = "agentd-reports"\n')
    # boto3 made unimportable in that process only, as on a PC without the `s3` extra
    code = "import sys; sys.modules['boto3'] = None; from agentd.cli import main; sys.exit(main(['reports', 'list']))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=agentd_env.env, timeout=60)
    assert result.returncode == 2
    assert "sinks.s3" in result.stderr and "pip install 'agentd[s3]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unwritable_spool_still_prints_the_report(agentd_env, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the spool folder should be")
    agentd_env.write_config(BASE + f'[spool]\npath = "{blocker}/spool"\n')
    result = agentd_env.run("check", "--only", "host", "--no-daemon", "--json", "--upload")
    assert result.returncode == 3, result.stderr  # made and printed, but not kept
    assert json.loads(result.stdout)["checks"][0]["id"] == "host"
    assert "cannot write the spool" in result.stderr and "warning: report" in result.stderr
    # the sinks still got it, directly: the file sink's store holds it
    report_id = json.loads(result.stdout)["id"]
    assert "delivered to file" in result.stderr
    assert (agentd_env.root / "state" / "reports" / f"{report_id}.json").exists()
