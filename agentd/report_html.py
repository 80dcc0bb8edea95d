"""The single-file HTML report: for helpdesk, opens offline in any browser.

Everything is inline (CSS, a few lines of JS, SVG charts drawn here in Python), and a
Content-Security-Policy forbids the page any network fetch. Sections, in the order a
person needs them: verdicts with their next steps, charts, the checks as a table,
evidence. The report's JSON is embedded too (``<script type="application/json"
id="report-data">``), so the file is the whole report.

Charts:
- ``chart-media-path``: the media path test's RTT per probe and loss per stretch of probes
  (from ``media.path`` ``details.series``);
- ``chart-call-quality`` + ``chart-host-pressure`` (incident mode): the call's RTT,
  lost packets and silent-audio moments (``genesys.webrtc_diagnostics``) above the PC's
  CPU / memory / memory pressure (``local.timeline`` evidence) on the same time axis.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from agentd.model import Evidence, Report, Severity, Status, parse_time

CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"
COLORS = {"rtt": "#1f77b4", "loss": "#d62728", "cpu": "#9467bd", "mem": "#ff7f0e", "psi": "#8c564b", "silent": "#e377c2"}
STATUS_CLASS = {s: s.value for s in Status}
SEVERITY_CLASS = {Severity.CRITICAL: "critical", Severity.WARNING: "warning", Severity.INFO: "info"}


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


# -- SVG charts --------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """One thing drawn on a chart. ``kind``: ``line`` (gaps at None), ``bars``, ``marks``
    (a tick at the top of the plot for each x: events such as lost probes)."""

    name: str
    color: str
    points: Sequence[tuple[float, float | None]]
    kind: str = "line"
    axis: str = "left"


@dataclass(frozen=True)
class Axis:
    label: str
    maximum: float | None = None  # fixed top (percent axes), else from the data


@dataclass
class Chart:
    chart_id: str
    title: str
    x_range: tuple[float, float]
    x_format: Callable[[float], str]
    left: Axis
    right: Axis | None = None
    series: list[Series] = field(default_factory=list)
    width: int = 760
    height: int = 240

    PAD_L, PAD_R, PAD_T, PAD_B = 56, 56, 46, 34

    def _top(self, axis: str, spec: Axis | None) -> float:
        if spec is not None and spec.maximum is not None:
            return spec.maximum
        values = [y for s in self.series if s.axis == axis and s.kind != "marks" for _, y in s.points if y is not None]
        top = max(values, default=0.0)
        return top * 1.15 if top > 0 else 1.0

    def svg(self) -> str:
        w, h = self.width, self.height
        x0, x1 = self.x_range
        if x1 <= x0:
            x1 = x0 + 1.0
        plot_w = w - self.PAD_L - self.PAD_R
        plot_h = h - self.PAD_T - self.PAD_B
        tops = {"left": self._top("left", self.left), "right": self._top("right", self.right)}

        def sx(x: float) -> float:
            return self.PAD_L + (x - x0) / (x1 - x0) * plot_w

        def sy(y: float, axis: str) -> float:
            return self.PAD_T + plot_h - max(0.0, min(y, tops[axis])) / tops[axis] * plot_h

        out = [
            f'<svg class="chart" id="{e(self.chart_id)}" viewBox="0 0 {w} {h}" width="100%" role="img" '
            f'aria-label="{e(self.title)}" xmlns="http://www.w3.org/2000/svg">',
            f'<text class="chart-title" x="{self.PAD_L}" y="16">{e(self.title)}</text>',
        ]
        for i in range(5):  # grid and tick labels
            frac = i / 4
            y = self.PAD_T + plot_h - frac * plot_h
            out.append(f'<line class="grid" x1="{self.PAD_L}" x2="{w - self.PAD_R}" y1="{y:.1f}" y2="{y:.1f}"/>')
            out.append(f'<text class="tick" x="{self.PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">{_num(tops["left"] * frac)}</text>')
            if self.right is not None:
                out.append(f'<text class="tick" x="{w - self.PAD_R + 6}" y="{y + 4:.1f}">{_num(tops["right"] * frac)}</text>')
            x = x0 + frac * (x1 - x0)
            anchor = "start" if i == 0 else ("end" if i == 4 else "middle")
            out.append(f'<text class="tick" x="{sx(x):.1f}" y="{h - 16}" text-anchor="{anchor}">{e(self.x_format(x))}</text>')
        out.append(f'<text class="axis" x="12" y="{self.PAD_T + plot_h / 2:.0f}" transform="rotate(-90 12 {self.PAD_T + plot_h / 2:.0f})" text-anchor="middle">{e(self.left.label)}</text>')
        if self.right is not None:
            rx = w - 10
            out.append(f'<text class="axis" x="{rx}" y="{self.PAD_T + plot_h / 2:.0f}" transform="rotate(-90 {rx} {self.PAD_T + plot_h / 2:.0f})" text-anchor="middle">{e(self.right.label)}</text>')
        legend_x = self.PAD_L
        for s in self.series:  # a row of its own under the title
            out.append(f'<rect x="{legend_x}" y="25" width="10" height="10" fill="{s.color}"/><text class="legend" x="{legend_x + 14}" y="34">{e(s.name)}</text>')
            legend_x += 24 + 7 * len(s.name)
        for s in self.series:
            out.append(self._draw(s, sx, sy, plot_w, plot_h))
        out.append("</svg>")
        return "\n".join(out)

    def _draw(self, s: Series, sx, sy, plot_w: float, plot_h: float) -> str:
        cls = f'data-series="{e(s.name)}"'
        if s.kind == "line":
            runs: list[list[str]] = [[]]
            for x, y in s.points:
                if y is None:
                    runs.append([])
                else:
                    runs[-1].append(f"{sx(x):.1f},{sy(y, s.axis):.1f}")
            parts = [f'<polyline {cls} fill="none" stroke="{s.color}" stroke-width="1.6" points="{" ".join(r)}"/>' for r in runs if len(r) > 1]
            parts += [f'<circle {cls} cx="{r[0].split(",")[0]}" cy="{r[0].split(",")[1]}" r="2" fill="{s.color}"/>' for r in runs if len(r) == 1]
            return "\n".join(parts)
        if s.kind == "bars":
            bar_w = max(2.0, plot_w / max(1, len(s.points)) * 0.8)
            base = self.PAD_T + plot_h
            return "\n".join(
                f'<rect {cls} x="{sx(x) - bar_w / 2:.1f}" y="{sy(y, s.axis):.1f}" width="{bar_w:.1f}" '
                f'height="{base - sy(y, s.axis):.1f}" fill="{s.color}" fill-opacity="0.45"><title>{e(s.name)}: {_num(y)}</title></rect>'
                for x, y in s.points
                if y is not None and y > 0
            )
        return "\n".join(  # marks
            f'<line {cls} x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{self.PAD_T}" y2="{self.PAD_T + 8}" stroke="{s.color}" stroke-width="2"/>'
            for x, _ in s.points
        )


def _num(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 10 or value == 0 else f"{value:.1f}"


def _seconds(x: float) -> str:
    return f"{x:.0f} s" if x >= 10 else f"{x:.1f} s"


def _clock(x: float) -> str:
    return datetime.fromtimestamp(x, tz=timezone.utc).strftime("%H:%M:%S")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _epoch(value: Any) -> float | None:
    if isinstance(value, str):
        try:
            return parse_time(value).timestamp()
        except ValueError:
            return None
    return _number(value)


def media_path_chart(report: Report) -> Chart | None:
    check = report.check("media.path")
    if check is None:
        return None
    raw = check.details.get("series")
    points = [p for p in raw if isinstance(p, Mapping) and _number(p.get("t_ms")) is not None] if isinstance(raw, list) else []
    if not points:
        return None
    rtt = [(_number(p["t_ms"]) / 1000.0, _number(p.get("rtt_ms"))) for p in points]
    lost = [(x, 1.0) for x, y in rtt if y is None]
    buckets = max(1, min(30, len(rtt) // 5))
    size = len(rtt) / buckets
    loss = []
    for b in range(buckets):
        chunk = rtt[int(b * size): int((b + 1) * size)] or rtt[-1:]
        missing = sum(1 for _, y in chunk if y is None)
        loss.append(((chunk[0][0] + chunk[-1][0]) / 2, 100.0 * missing / len(chunk)))
    transport = check.details.get("transport") or "?"
    chart = Chart(
        "chart-media-path",
        f"Media path ({transport}): RTT per probe and loss over time",
        (rtt[0][0], rtt[-1][0]),
        _seconds,
        Axis("RTT ms"),
        Axis("loss %", maximum=max(5.0, max((y for _, y in loss), default=0) * 1.15)),
        [Series("RTT ms", COLORS["rtt"], rtt), Series("loss %", COLORS["loss"], loss, "bars", "right"),
         Series("lost probe", COLORS["loss"], lost, "marks")],
    )
    return chart


def call_and_host_charts(report: Report) -> tuple[Chart, Chart | None, str] | None:
    """The call's quality and the PC's pressure over the same minutes (incident mode)."""
    diag = next((i for i in report.evidence if i.kind == "genesys.webrtc_diagnostics" and i.status == "ok"), None)
    if diag is None:
        return None
    stats = sorted(
        ((t, s) for s in diag.data.get("rtc_stats") or [] if isinstance(s, Mapping) and (t := _epoch(s.get("timestamp"))) is not None),
        key=lambda pair: pair[0],
    )
    if not stats:
        return None
    rtt, lost, silent = [], [], []
    previous = None
    for t, s in stats:
        rtt_s = _number(s.get("roundTripTime"))
        rtt.append((t, rtt_s * 1000.0 if rtt_s is not None else None))
        counter = _number(s.get("packetsLost"))
        if counter is not None:
            lost.append((t, max(0.0, counter - (previous if previous is not None else 0.0))))
            previous = counter if previous is None else max(previous, counter)
        if _number(s.get("audioLevel")) == 0:
            silent.append((t, 1.0))
    timeline = next((i for i in report.evidence if i.kind == "local.timeline" and i.status == "ok"), None)
    samples = []
    if timeline is not None:
        samples = sorted(
            ((t, s) for s in timeline.data.get("host_samples") or [] if isinstance(s, Mapping) and (t := _epoch(s.get("at"))) is not None),
            key=lambda pair: pair[0],
        )
    start, end = stats[0][0], stats[-1][0]
    span = (min(start, samples[0][0]) if samples else start, max(end, samples[-1][0]) if samples else end)
    call = Chart(
        "chart-call-quality",
        "The call (Genesys): RTT, lost packets, silent audio",
        span,
        _clock,
        Axis("RTT ms"),
        Axis("packets lost"),
        [Series("RTT ms", COLORS["rtt"], rtt), Series("packets lost", COLORS["loss"], lost, "bars", "right"),
         Series("audio level 0", COLORS["silent"], silent, "marks")],
    )
    if not samples:
        return call, None, "This PC has no local host history for these minutes (the agentd daemon was not running)."
    host = Chart(
        "chart-host-pressure",
        "This PC over the same minutes: CPU, memory, memory pressure",
        span,
        _clock,
        Axis("%", maximum=100.0),
        None,
        [Series(name, COLORS[color], [(t, _number(s.get(key))) for t, s in samples])
         for name, color, key in (("CPU %", "cpu", "cpu_pct"), ("memory used %", "mem", "mem_used_pct"),
                                  ("memory pressure %", "psi", "memory_pressure_avg10"))],
    )
    return call, host, ""


# -- the page ----------------------------------------------------------------------------

STYLE = """
:root { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330; background: #f6f7f9; }
body { margin: 0 auto; max-width: 980px; padding: 24px; }
h1 { font-size: 1.4rem; margin: 0 0 4px; } h2 { font-size: 1.1rem; margin: 28px 0 10px; border-bottom: 1px solid #d8dce3; padding-bottom: 4px; }
.meta { color: #5b6472; font-size: .9rem; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 12px; font-weight: 700; color: #fff; }
.ready { background: #2e7d32; } .not-ready { background: #c62828; }
.badge.critical { background: #c62828; } .badge.warning { background: #975a00; } .badge.info { background: #1565c0; }
.verdict { background: #fff; border-left: 6px solid #999; border-radius: 6px; padding: 10px 14px; margin: 10px 0; box-shadow: 0 1px 2px #0001; }
.verdict.critical { border-color: #c62828; } .verdict.warning { border-color: #ef8f00; } .verdict.info { border-color: #1976d2; }
.verdict .code { font-family: ui-monospace, monospace; font-weight: 700; } .verdict .sev { text-transform: uppercase; font-size: .75rem; font-weight: 700; margin-right: 8px; }
.verdict .next { margin-top: 6px; } .verdict .refs, .verdict .thr { font-size: .8rem; color: #5b6472; margin-top: 4px; }
.none { color: #2e7d32; font-weight: 600; }
table { border-collapse: collapse; width: 100%; background: #fff; font-size: .9rem; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid #e6e8ec; vertical-align: top; }
td.status { font-weight: 700; } .pass { color: #2e7d32; } .warn { color: #9a5b00; } .fail { color: #c62828; } .error { color: #8e24aa; } .skip { color: #5f6368; }
tr.target, div.target { outline: 2px solid #1976d2; }
pre { white-space: pre-wrap; word-break: break-word; font-size: .78rem; background: #f0f2f5; padding: 8px; border-radius: 4px; }
svg.chart { background: #fff; border-radius: 6px; margin: 8px 0; box-shadow: 0 1px 2px #0001; }
svg .grid { stroke: #e6e8ec; } svg .tick, svg .legend { font-size: 11px; fill: #5b6472; } svg .axis { font-size: 11px; fill: #1d2330; } svg .chart-title { font-size: 13px; font-weight: 600; fill: #1d2330; }
.note { color: #5b6472; font-style: italic; }
label.filter { font-size: .85rem; color: #5b6472; }
"""

SCRIPT = """
(function () {
  var root = document.documentElement;
  window.addEventListener('error', function (ev) { root.setAttribute('data-errors', String(ev.message)); });
  var charts = document.querySelectorAll('svg.chart');
  var drawn = 0;
  charts.forEach(function (svg) {
    var marks = svg.querySelectorAll('polyline, rect[data-series], line[data-series], circle[data-series]');
    var box = svg.getBoundingClientRect();
    if (marks.length > 0 && box.width > 0 && box.height > 0) { drawn += 1; }
  });
  var filter = document.getElementById('only-problems');
  if (filter) {
    filter.addEventListener('change', function () {
      document.querySelectorAll('#checks tbody tr').forEach(function (row) {
        row.hidden = filter.checked && (row.dataset.status === 'pass' || row.dataset.status === 'skip');
      });
    });
  }
  document.querySelectorAll('a.ref').forEach(function (link) {
    link.addEventListener('click', function () {
      var target = document.getElementById(link.getAttribute('href').slice(1));
      if (target) { target.classList.add('target'); if (target.tagName === 'DETAILS') { target.open = true; } }
    });
  });
  JSON.parse(document.getElementById('report-data').textContent);
  root.setAttribute('data-charts', String(charts.length));
  root.setAttribute('data-charts-drawn', String(drawn));
  root.setAttribute('data-rendered', 'ok');
})();
"""


def _anchor(ref: str) -> str:
    kind, _, name = ref.partition(":")
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
    return f"{kind}-{safe}"


def _verdicts(report: Report) -> str:
    if not report.verdicts:
        return '<p class="none">No problem found: no rule matched these findings.</p>'
    out = []
    for v in report.verdicts:
        refs = " ".join(f'<a class="ref" href="#{e(_anchor(r))}">{e(r)}</a>' for r in v.evidence)
        thresholds = ", ".join(f"{e(k)} {e(val)}" for k, val in v.thresholds.items())
        out.append(
            f'<div class="verdict {SEVERITY_CLASS.get(v.severity, "info")}" data-code="{e(v.code)}">'
            f'<div><span class="sev">{e(v.severity)}</span><span class="code">{e(v.code)}</span> '
            f'<span class="meta">confidence {v.confidence:.0%}</span></div>'
            f"<div>{e(v.summary)}</div>"
            + (f'<div class="next"><strong>Next step:</strong> {e(v.next_step)}</div>' if v.next_step else "")
            + (f'<div class="refs">Based on: {refs}</div>' if refs else "")
            + (f'<div class="thr">Thresholds: {thresholds}</div>' if thresholds else "")
            + "</div>"
        )
    return "\n".join(out)


def _metrics(metrics: Mapping[str, Any]) -> str:
    parts = []
    for key, value in metrics.items():
        if isinstance(value, float):
            parts.append(f"{e(key)}={value:.1f}")
        elif value is not None:
            parts.append(f"{e(key)}={e(value)}")
    return " ".join(parts)


def _checks(report: Report) -> str:
    if not report.checks:
        return '<p class="note">No local checks in this report.</p>'
    rows = []
    for c in report.checks:
        details = json.dumps(c.to_dict()["details"], indent=1, ensure_ascii=False)
        rows.append(
            f'<tr id="{e(_anchor("check:" + c.id))}" data-status="{e(c.status)}"><td class="status {STATUS_CLASS[c.status]}">{e(c.status.upper())}</td>'
            f"<td>{e(c.id)}</td><td>{e(c.summary)}<details><summary>details</summary><pre>{e(details)}</pre></details></td>"
            f"<td>{_metrics(c.metrics)}</td><td>{c.duration_ms / 1000:.2f} s</td></tr>"
        )
    return (
        '<label class="filter"><input type="checkbox" id="only-problems"> only problems</label>'
        '<table id="checks"><thead><tr><th>status</th><th>check</th><th>summary</th><th>metrics</th><th>time</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _evidence(items: Iterable[Evidence]) -> str:
    out = []
    for item in items:
        data = json.dumps(item.to_dict()["data"], indent=1, ensure_ascii=False)
        window = f" ({e(item.window_start)} to {e(item.window_end)})" if item.window_start else ""
        out.append(
            f'<details id="{e(_anchor("evidence:" + item.id))}"><summary><code>{e(item.id)}</code> [{e(item.status)}] {e(item.summary)}{window}</summary>'
            f"<pre>{e(data)}</pre></details>"
        )
    return "\n".join(out) or '<p class="note">No server-side evidence in this report.</p>'


def _charts(report: Report) -> str:
    parts = []
    media = media_path_chart(report)
    if media is not None:
        parts.append(media.svg())
    incident = call_and_host_charts(report)
    if incident is not None:
        call, host, note = incident
        parts.append('<figure id="chart-call-vs-host" style="margin:0">' + call.svg())
        parts.append(host.svg() if host is not None else f'<p class="note">{e(note)}</p>')
        parts.append("</figure>")
    if not parts:
        return ""
    return "<h2>Charts</h2>\n" + "\n".join(parts)


def render_html(report: Report) -> str:
    from agentd.render import report_headline

    words, tone = report_headline(report)
    state = f'<span class="badge {e(tone)}" id="headline">{e(words)}</span>'
    conversation = f" · conversation <code>{e(report.conversation_id)}</code>" if report.conversation_id else ""
    # "</" must not end the script element early; JSON allows "<\\/".
    data = report.to_json(indent=None).replace("</", "<\\/")
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>agentd report {e(report.id)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>agentd {e(report.profile)} report {state}</h1>
<div class="meta">{e(report.agent.hostname)} · {e(report.created)} · report <code>{e(report.id)}</code>{conversation} · agentd {e(report.agent.version)}</div>
<h2>Findings</h2>
{_verdicts(report)}
{_charts(report)}
<h2>Checks</h2>
{_checks(report)}
<h2>Evidence</h2>
{_evidence(report.evidence)}
<script type="application/json" id="report-data">{data}</script>
<script>{SCRIPT}</script>
</body>
</html>
"""


def write_html(report: Report, path: Path) -> None:
    """Write the page atomically (a browser never opens half of it)."""
    from agentd.fileio import write_atomic

    path = path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, render_html(report), durable=True)
