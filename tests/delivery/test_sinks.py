"""Each sink against a real destination: a folder, a loopback HTTP collector, moto's S3 server."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

from agentd.config import Secret
from agentd.errors import DeliveryError
from agentd_plugins.sinks.file import FileSink
from agentd_plugins.sinks.http import HttpSink, HttpSinkSettings, backoff

from .collector import Collector
from .test_spool import make_report


@pytest.fixture
def collector():
    c = Collector()
    yield c
    c.close()


def payload_of(report) -> bytes:
    return report.to_json().encode()


async def test_http_posts_with_bearer_token_and_idempotency_key(collector):
    collector.token = "tok-7a61bb02"
    collector.set("up")
    sink = HttpSink(HttpSinkSettings(url=collector.url, token=Secret("tok-7a61bb02")))
    report = make_report(1)
    await sink.deliver(report, payload_of(report))
    await sink.deliver(report, payload_of(report))  # again: the collector keeps one
    assert collector.posts[report.id] == 2 and collector.stores[report.id] == 1
    assert json.loads(collector.stored[report.id]) == report.to_dict()


async def test_http_hmac_signature_is_checked_and_a_wrong_key_is_not_retried(collector):
    collector.hmac_key = "hmac-key-41d9"
    collector.set("up")
    report = make_report(2)
    await HttpSink(HttpSinkSettings(url=collector.url, hmac_key=Secret("hmac-key-41d9"))).deliver(report, payload_of(report))
    assert report.id in collector.stored
    wrong = HttpSink(HttpSinkSettings(url=collector.url, hmac_key=Secret("not-the-key"), retries=3))
    other = make_report(3)
    with pytest.raises(DeliveryError) as caught:
        await wrong.deliver(other, payload_of(other))
    assert caught.value.retryable is False and "401" in str(caught.value) and "hmac_key" in str(caught.value)
    assert collector.posts[other.id] == 1  # a refusal is not retried
    assert "not-the-key" not in str(caught.value)


async def test_http_retries_503_honouring_retry_after_then_gives_up(collector):
    collector.set("unavailable")
    collector.retry_after = "0.2"
    report = make_report(4)
    sink = HttpSink(HttpSinkSettings(url=collector.url, retries=2, backoff_s=5.0, max_backoff_s=5.0))
    started = time.monotonic()
    with pytest.raises(DeliveryError) as caught:
        await sink.deliver(report, payload_of(report))
    elapsed = time.monotonic() - started
    assert caught.value.retryable and "503" in str(caught.value) and "3 attempt" in str(caught.value)
    assert collector.posts[report.id] == 3
    assert 0.4 <= elapsed < 5.0  # two waits of Retry-After 0.2 s, not two 5 s backoffs


async def test_http_recovers_when_the_collector_comes_up_during_the_retries(collector):
    collector.set("up")
    collector.unavailable_posts = 2  # the first two posts meet a collector still warming up
    report = make_report(5)
    sink = HttpSink(HttpSinkSettings(url=collector.url, retries=5, backoff_s=0.1, max_backoff_s=0.2))
    await sink.deliver(report, payload_of(report))
    assert collector.stores[report.id] == 1 and collector.posts[report.id] == 3


async def test_http_times_out_on_a_server_that_accepts_and_never_answers():
    with socket.socket() as server:  # accepts TCP, never speaks HTTP
        server.bind(("127.0.0.1", 0))
        server.listen()
        url = f"http://127.0.0.1:{server.getsockname()[1]}/r"
        sink = HttpSink(HttpSinkSettings(url=url, timeout_s=0.3, retries=1, backoff_s=0.05))
        started = time.monotonic()
        with pytest.raises(DeliveryError, match="ReadTimeout") as caught:
            await sink.deliver(make_report(6), payload_of(make_report(6)))
        assert caught.value.retryable and time.monotonic() - started < 2.5


async def test_http_over_tls_with_a_private_ca(tmp_path):
    import ssl

    from agentd.testing.certs import make_certificates

    certs = make_certificates(tmp_path / "certs")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.cert, certs.key)
    collector = Collector(tls=context)
    collector.set("up")
    try:
        report = make_report(9)
        await HttpSink(HttpSinkSettings(url=collector.url, ca_file=certs.ca)).deliver(report, payload_of(report))
        assert collector.url.startswith("https://") and report.id in collector.stored
        untrusting = HttpSink(HttpSinkSettings(url=collector.url, retries=0))  # the system store lacks the test CA
        with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            await untrusting.deliver(make_report(10), payload_of(make_report(10)))
    finally:
        collector.close()


def test_backoff_grows_with_jitter_and_stays_under_the_cap():
    waits = [backoff(attempt, 0.5, 4.0) for attempt in range(8) for _ in range(20)]
    assert all(0 < w <= 4.0 for w in waits)
    firsts = {round(backoff(0, 0.5, 4.0), 6) for _ in range(20)}
    assert len(firsts) > 1 and all(0.25 <= w <= 0.5 for w in firsts)


async def test_file_sink_is_idempotent_and_bounded(tmp_path):
    sink = FileSink(tmp_path / "reports", max_reports=3)
    for n in range(5):
        await sink.deliver(make_report(n), payload_of(make_report(n)))
    await sink.deliver(make_report(4), payload_of(make_report(4)))
    assert [p.name for p in sink.stored()] == [f"{make_report(n).id}.json" for n in (2, 3, 4)]
    assert json.loads(sink.stored()[-1].read_text())["id"] == make_report(4).id


# -- s3 against moto's server ------------------------------------------------------------


@pytest.fixture
def moto_s3():
    boto3 = pytest.importorskip("boto3", reason="boto3 is in the test extra")
    server_mod = pytest.importorskip("moto.server", reason="moto[server] is in the test extra")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing-key", aws_secret_access_key="testing-secret")
    client.create_bucket(Bucket="agentd-reports")
    yield endpoint, client
    server.stop()


@pytest.mark.floor
async def test_s3_sink_writes_one_object_per_report(moto_s3):
    from agentd_plugins.sinks.s3 import S3Sink, S3SinkSettings

    endpoint, client = moto_s3
    settings = S3SinkSettings(bucket="agentd-reports", prefix="pcs/pc-042/", endpoint_url=endpoint, region="us-east-1",
                              access_key_id=Secret("testing-key"), secret_access_key=Secret("testing-secret"))
    sink = S3Sink(settings)
    report = make_report(7)
    await sink.deliver(report, payload_of(report))
    await sink.deliver(report, payload_of(report))  # sent again after a crash: the same object
    listed = client.list_objects_v2(Bucket="agentd-reports", Prefix="pcs/")
    assert [o["Key"] for o in listed["Contents"]] == [f"pcs/pc-042/{report.id}.json"]
    obj = client.get_object(Bucket="agentd-reports", Key=f"pcs/pc-042/{report.id}.json")
    assert obj["Body"].read() == payload_of(report)
    assert obj["ContentType"] == "application/json" and obj["Metadata"]["idempotency-key"] == report.id

    missing = S3Sink(S3SinkSettings(**{**settings.__dict__, "bucket": "no-such-bucket"}))
    with pytest.raises(DeliveryError, match="NoSuchBucket") as caught:
        await missing.deliver(report, payload_of(report))
    assert caught.value.retryable is False


async def test_s3_sink_reports_an_unreachable_endpoint_within_its_timeout():
    pytest.importorskip("boto3")
    from agentd_plugins.sinks.s3 import S3Sink, S3SinkSettings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connection refused
    sink = S3Sink(S3SinkSettings(bucket="b", endpoint_url=f"http://127.0.0.1:{port}", region="us-east-1", timeout_s=1, retries=0,
                                 access_key_id=Secret("k-1234"), secret_access_key=Secret("s-1234")))
    started = time.monotonic()
    with pytest.raises(DeliveryError) as caught:
        await asyncio.wait_for(sink.deliver(make_report(8), b"{}"), 20)
    assert caught.value.retryable and time.monotonic() - started < 10
