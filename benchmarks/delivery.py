"""Issue-6 benchmark: correlation, the HTML report, and delivery through the spool.

    .venv/bin/python -m benchmarks.delivery              # defaults: 200 reports
    .venv/bin/python -m benchmarks.delivery --help

Prints one markdown table:

- correlation: every rule family over a full readiness report plus a call's evidence and
  a 2 000-sample host timeline (ms per report);
- the HTML report of an incident with a 300-point media series, the call's stats and host
  samples: render time and page size;
- the spool: durable writes (tmp, fsync, rename, fsync dir) per second;
- delivery of ``--reports`` spooled reports to the file sink and a loopback HTTP collector
  (acknowledged, then removed), reports per second;
- a flush while the collector is down: how long one flush of all of them takes (the sink is
  tried once per flush, not once per report).

Everything stays on 127.0.0.1 and in a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the scenario builders and the collector of the tests


def _median_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=int, default=200, help="reports spooled and delivered (default 200)")
    parser.add_argument("--runs", type=int, default=50, help="repetitions of the in-memory measurements (default 50)")
    args = parser.parse_args(argv)
    from agentd import logs

    logs.configure("error")  # the down-collector run would log every retry

    from dataclasses import replace

    from agentd.app import App
    from agentd.delivery import Delivery
    from agentd.report_html import render_html
    from agentd.spool import Spool
    from agentd_plugins.sinks.file import FileSink
    from agentd_plugins.sinks.http import HttpSink, HttpSinkSettings
    from correlation.conftest import RULE_PLUGINS
    from correlation.scenarios import Timeline, clean_checks, clean_evidence, evidence, host_samples, patched, report, rtc_stats, series, with_data
    from delivery.collector import Collector

    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="agentd-bench-") as tmp:
        root = Path(tmp)
        config = root / "agentd.toml"
        config.write_text("")
        app = App.load(config, register=RULE_PLUGINS, load_entry_points=False)
        items = clean_evidence()
        items["genesys.webrtc_diagnostics"] = with_data(items["genesys.webrtc_diagnostics"], rtc_stats=rtc_stats(
            [(t, t // 10, 0.2, 0.4 if t < 300 else 0.0) for t in range(0, 600, 2)]))
        checks = clean_checks()
        checks["media.path"] = patched(checks["media.path"], series=series(300, 40.0, 11))
        full = report(checks, items, profile="incident")
        app.timeline = Timeline(samples=host_samples(cpu=50, mem=95, psi=20, every_s=1)[:2000])
        ms = _median_ms(lambda: app.correlate(full), args.runs)
        rows.append(("correlation, all rules, full report + call + 2000 host samples", f"{ms:.2f} ms"))

        items["local.timeline"] = evidence("local.timeline", {"host_samples": host_samples(cpu=50, mem=95, psi=20, every_s=3), "events": []})
        page_report = app.correlate(report(checks, items, profile="incident"))
        ms = _median_ms(lambda: render_html(page_report), args.runs)
        size = len(render_html(page_report).encode())
        rows.append(("HTML report (3 charts, 300-point series, 280 host samples)", f"{ms:.1f} ms, {size / 1024:.0f} KiB"))

        spool = Spool(root / "spool", max_reports=args.reports + 10)
        ids = [f"20260514T1000{n // 60:02d}Z-{n:012x}" for n in range(args.reports)]
        payloads = {report_id: replace(full, id=report_id).to_json().encode() for report_id in ids}
        payload = payloads[ids[0]]
        started = time.perf_counter()
        for report_id in ids:
            spool.put(report_id, payloads[report_id])
        elapsed = time.perf_counter() - started
        rows.append((f"spool: durable writes ({len(payload) / 1024:.0f} KiB each)", f"{args.reports / elapsed:.0f} /s"))

        collector = Collector()
        collector.set("up")
        try:
            sinks = [FileSink(root / "reports", max_reports=args.reports + 10), HttpSink(HttpSinkSettings(url=collector.url))]
            delivery = Delivery(spool, sinks)
            started = time.perf_counter()
            outcomes = asyncio.run(delivery.flush())
            elapsed = time.perf_counter() - started
            assert all(o.left_spool for o in outcomes) and len(collector.stored) == args.reports
            rows.append((f"flush {args.reports} reports to file + loopback HTTP, acked and removed", f"{args.reports / elapsed:.0f} reports/s"))

            for report_id in ids:
                spool.put(report_id, payloads[report_id])
            collector.set("down")
            down = Delivery(spool, [HttpSink(HttpSinkSettings(url=collector.url, retries=2, backoff_s=0.1))])
            started = time.perf_counter()
            outcomes = asyncio.run(down.flush())
            elapsed = time.perf_counter() - started
            assert not any(o.left_spool for o in outcomes)
            rows.append((f"flush {args.reports} reports, collector down (3 attempts, backoff 0.1 s)", f"{elapsed:.2f} s"))
        finally:
            collector.close()

    print("| measurement | result |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
