"""Alerts reach people: a hub with [alerts] sends through apprise to real receivers on
loopback (an HTTP webhook receiver and aiosmtpd's SMTP server). A site outage sends one
webhook message and one e-mail; a repeat within the suppression window sends none; the
clear sends one; a receiver that is down is retried and the hub keeps working; a slow
receiver never holds up ingest."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from agentd.hub.alerts import AlertConfig, Rule, in_quiet_hours, parse_quiet_hours
from tests.hub.conftest import enroll, free_port, make_report, post_report, wait_until

aiosmtpd = pytest.importorskip("aiosmtpd.controller")
pytest.importorskip("apprise")


class Webhook:
    """An HTTP receiver on loopback: records each POST's JSON; ``delay_s`` makes it slow."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.messages: list[dict] = []
        self.delay_s = 0.0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                time.sleep(outer.delay_s)
                outer.messages.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server: ThreadingHTTPServer | None = None
        self.handler = Handler

    def start(self) -> Webhook:
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()


class Mailbox:
    def __init__(self) -> None:
        self.mails: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.mails.append(envelope.content)
        return "250 OK"


@pytest.fixture
def receivers():
    hook = Webhook().start()
    box = Mailbox()
    smtp = aiosmtpd.Controller(box, hostname="127.0.0.1", port=free_port())
    smtp.start()
    yield hook, box, smtp.port
    smtp.stop()
    hook.stop()


def serve_hub(tmp_path, alerts: AlertConfig):
    """The hub in this process (uvicorn in a thread) with alerts configured."""
    import uvicorn

    from agentd.hub.app import HubSettings, create_app
    from agentd.hub.db import make_engine
    from agentd.hub.migrate import upgrade

    database = f"sqlite:///{tmp_path / 'alerts-hub.sqlite'}"

    async def migrate():
        engine = make_engine(database)
        await upgrade(engine)
        await engine.dispose()

    asyncio.run(migrate())
    port = free_port()
    settings = HubSettings(database=database, public_url=f"http://127.0.0.1:{port}", alerts=alerts, ingest_burst=100)
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on", ws="websockets-sansio"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 30, what="the hub to start")
    return f"http://127.0.0.1:{port}", database, app, server, thread


def client_from(address: str) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=10)


def post_fleet(url: str, key: str, pcs: dict[str, tuple[str, str]], failing: bool) -> dict[str, tuple[str, str]]:
    """Three PCs at 127.0.1.0/24 fail (or pass) turn.udp; two elsewhere pass it."""
    for address in ("127.0.1.11", "127.0.1.12", "127.0.1.13", "127.0.2.21", "127.0.3.31"):
        with client_from(address) as client:
            if address not in pcs:
                pcs[address] = enroll(url, key, hostname=f"pc-{address}", client=client)
            install_id, token = pcs[address]
            fails = failing and address.startswith("127.0.1.")
            report = make_report(install_id, hostname=f"pc-{address}", failed=("turn.udp",) if fails else (),
                                 passed=("dns",) if fails else ("dns", "turn.udp"))
            assert post_report(url, token, report, client=client).status_code == 201
    return pcs


def test_site_outage_alert_once_suppressed_then_cleared_through_webhook_and_mail(tmp_path, receivers):
    hook, box, smtp_port = receivers
    config = AlertConfig(
        urls=(f"json://127.0.0.1:{hook.port}/hook",
              f"mailto://127.0.0.1:{smtp_port}?from=hub@example.com&to=helpdesk@example.com&mode=insecure"),
        rules=(Rule("site_outage", windows=2, of_last=3, min_pcs=3),), window_s=0.3, suppress_s=3600, notify_clear=True)
    url, database, app, server, thread = serve_hub(tmp_path, config)
    try:
        from tests.hub.conftest import run_on_store

        key = run_on_store(database, lambda store: store.create_enroll_key("t")).text
        pcs = post_fleet(url, key, {}, failing=True)
        wait_until(lambda: hook.messages and box.mails, 20, what="the outage alert on both receivers")
        time.sleep(2.0)  # several more windows: the same outage is not sent again
        assert len(hook.messages) == 1 and len(box.mails) == 1, (hook.messages, len(box.mails))
        alert = hook.messages[0]
        assert alert["title"] == "Site outage at 127.0.1.0/24: turn.udp"
        assert f"{url}/?site=127.0.1.0%2F24" in alert["message"] and "3 of 3 PCs at 127.0.1.0/24 fail turn.udp" in alert["message"]
        assert b"Subject: Site outage at 127.0.1.0/24: turn.udp" in box.mails[0]
        # the site recovers: one clear on each receiver
        post_fleet(url, key, pcs, failing=False)
        wait_until(lambda: len(hook.messages) == 2 and len(box.mails) == 2, 20, what="the clear")
        assert hook.messages[1]["title"].startswith("Cleared: Site outage at 127.0.1.0/24")
        time.sleep(1.0)
        assert len(hook.messages) == 2 and len(box.mails) == 2
    finally:
        server.should_exit = True
        thread.join(15)


def test_a_down_receiver_is_retried_and_a_slow_one_never_holds_up_ingest(tmp_path, receivers):
    hook, box, smtp_port = receivers
    down = Webhook()  # nothing listens on its port yet
    config = AlertConfig(urls=(f"json://127.0.0.1:{down.port}/hook", f"json://127.0.0.1:{hook.port}/hook"),
                         rules=(Rule("site_outage", min_pcs=3),), window_s=0.3, suppress_s=3600, retry_s=0.3, max_retry_s=1.0)
    hook.delay_s = 3.0  # the other receiver answers slowly (apprise waits 4 s for an answer)
    url, database, app, server, thread = serve_hub(tmp_path, config)
    try:
        from tests.hub.conftest import run_on_store

        key = run_on_store(database, lambda store: store.create_enroll_key("t")).text
        pcs = post_fleet(url, key, {}, failing=True)
        alerter = app.state.hub.alerter
        wait_until(lambda: any(r == (0, "Site outage at 127.0.1.0/24: turn.udp", "failed") for r in alerter.sent), 20,
                   what="a failed delivery to the receiver that is down")
        # while the slow receiver holds its alert, the hub still takes reports at once
        install_id, token = pcs["127.0.2.21"]
        timings = []
        for _ in range(5):
            began = time.monotonic()
            with client_from("127.0.2.21") as client:
                assert post_report(url, token, make_report(install_id, passed=("dns", "turn.udp")), client=client).status_code == 201
            timings.append(time.monotonic() - began)
            assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        assert max(timings) < 3.0, timings
        # the receiver comes up: the retry delivers the alert, once
        down.start()
        try:
            wait_until(lambda: down.messages, 20, what="the retried alert")
            wait_until(lambda: hook.messages, 20, what="the slow receiver's alert")
            time.sleep(1.0)
            assert len(down.messages) == 1 and len(hook.messages) == 1
        finally:
            down.stop()
    finally:
        server.should_exit = True
        thread.join(15)


def test_quiet_hours():
    quiet = parse_quiet_hours("22:00-06:00")
    day = 1_800_000_000 - 1_800_000_000 % 86400  # a UTC midnight
    assert in_quiet_hours(quiet, day + 23 * 3600) and in_quiet_hours(quiet, day + 5 * 3600)
    assert not in_quiet_hours(quiet, day + 12 * 3600)
    with pytest.raises(ValueError, match="quiet_hours must be HH:MM-HH:MM"):
        parse_quiet_hours("10pm-6am")


def test_bad_alert_configuration_is_one_line_naming_the_key(hub, tmp_path):
    config = tmp_path / "hub.toml"
    config.write_text('[alerts]\nurls = ["json://127.0.0.1:9/x"]\n[[alerts.rules]]\nkind = "site_outage"\nwindows = 3\nof_last = 2\n')
    answer = hub.admin("serve", "--listen", f"127.0.0.1:{free_port()}", "--config", str(config))
    assert answer.returncode == 2 and "[alerts] rules[0]: windows (3) cannot exceed of_last (2)" in answer.stderr


def test_x_of_y_windows_suppression_clear_and_quiet_hours_as_judged():
    """The Alerter's judgement window by window (its clock and inputs given; sending is
    the other tests' business): fires after 2 of the last 3 windows, not again while it
    holds, clears once; in quiet hours nothing is queued, and what still holds goes after."""
    from agentd.hub.alerts import Alerter

    day = 1_800_000_000 - 1_800_000_000 % 86400
    clock = {"now": day + 12 * 3600.0}
    pcs: list[dict] = []

    async def gather():
        return [], [], list(pcs)

    config = AlertConfig(urls=("json://127.0.0.1:9/x",), rules=(Rule("pc_not_ready", windows=2, of_last=3, min_pcs=1),),
                         window_s=60, suppress_s=600, quiet_hours=parse_quiet_hours("22:00-06:00"))

    async def scenario():
        alerter = Alerter(config, "https://hub.example", gather, clock=lambda: clock["now"])
        outbox = alerter.outboxes[0]

        async def window(*present: str) -> list[str]:
            pcs[:] = [{"install_id": i, "hostname": f"desk-{i}", "top_verdict": "config.turn_auth_failed", "agent_user": "a"} for i in present]
            await alerter.judge()
            clock["now"] += 60
            titles = []
            while not outbox.empty():
                title, body = outbox.get_nowait()
                titles.append(title)
                assert "https://hub.example/pcs/" in body
            return titles

        log = [await window("pc1"), await window(), await window("pc1"), await window("pc1"), await window("pc1"),
               await window(), await window(), await window(), await window("pc1"), await window("pc1")]
        clock["now"] = day + 23 * 3600.0  # quiet hours: nothing goes out
        quiet = [await window("pc2"), await window("pc2"), await window("pc2")]
        clock["now"] = day + 86400 + 7 * 3600.0  # morning: what still holds goes out
        morning = [await window("pc2")]
        return log, quiet, morning

    log, quiet, morning = asyncio.run(scenario())
    fired = "desk-pc1 is not ready for its shift (config.turn_auth_failed)"
    # ... and back within the suppression window (600 s): not sent again
    assert log == [[], [], [fired], [], [], [], [f"Cleared: {fired}"], [], [], []]
    assert quiet == [[], [], []]
    assert morning == [["desk-pc2 is not ready for its shift (config.turn_auth_failed)"]]
