"""Terminal renderings of a report, and the live progress of running checks (rich)."""

from __future__ import annotations

import time
from typing import Any, Mapping

from rich.console import Console, Group
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from agentd.model import CheckResult, Report, Severity, Status
from agentd.runner import CheckFinished, CheckNote, CheckStarted, RunnerEvent

STATUS_STYLE = {
    Status.PASS: ("PASS", "bold green"),
    Status.WARN: ("WARN", "bold yellow"),
    Status.FAIL: ("FAIL", "bold red"),
    Status.ERROR: ("ERROR", "bold magenta"),
    Status.SKIP: ("SKIP", "dim"),
}
SEVERITY_STYLE = {Severity.CRITICAL: "bold red", Severity.WARNING: "bold yellow", Severity.INFO: "cyan"}

# The metrics worth a column, in the order a person reads them.
KEY_METRICS = ("rtt_ms", "jitter_ms", "loss_pct", "mos", "ttfb_ms", "resolve_ms", "handshake_ms", "alloc_ms")


def format_metrics(metrics: Mapping[str, Any], limit: int = 3) -> str:
    shown = [k for k in KEY_METRICS if metrics.get(k) is not None]
    shown += [k for k in metrics if k not in shown and isinstance(metrics[k], (int, float)) and not isinstance(metrics[k], bool)]
    parts = []
    for key in shown[:limit]:
        value = metrics[key]
        parts.append(f"{key}={value:.1f}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts)


def checks_table(checks: tuple[CheckResult, ...] | list[CheckResult]) -> Table:
    table = Table(show_header=True, header_style="bold", expand=False, pad_edge=False)
    table.add_column("status", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("summary", overflow="fold")
    table.add_column("metrics", overflow="fold")
    table.add_column("time", justify="right", no_wrap=True)
    for check in checks:
        label, style = STATUS_STYLE[check.status]
        table.add_row(  # Text, never str: "[ice.servers]" in a summary is not rich markup
            Text(label, style=style),
            Text(check.id),
            Text(check.summary),
            Text(format_metrics(check.metrics)),
            Text(f"{check.duration_ms / 1000:.2f}s"),
        )
    return table


def report_headline(report: Report) -> tuple[str, str]:
    """What a report's title says, and its tone (``ready``, ``not-ready``, or a severity).

    A readiness check says READY / NOT READY. An incident report (a conversation was
    diagnosed) says what was found: the top verdict (verdicts come sorted, most severe
    and surest first), or that no cause was found; "READY" says nothing about a call that
    already failed."""
    if report.conversation_id or report.profile == "incident":
        if not report.verdicts:
            return "no cause found", "ready"
        top = report.verdicts[0]
        more = len(report.verdicts) - 1
        return f"found {top.code} ({top.severity})" + (f" +{more} more" if more else ""), str(top.severity)
    return ("READY", "ready") if report.ready else ("NOT READY", "not-ready")


HEADLINE_STYLE = {"ready": "bold green", "not-ready": "bold red", **{str(k): v for k, v in SEVERITY_STYLE.items()}}


def render_report(report: Report, console: Console) -> None:
    """Verdicts first with their next steps, then the checks, then evidence in brief."""
    words, tone = report_headline(report)
    verdict_word = Text(words, style=HEADLINE_STYLE.get(tone, "bold"))
    title = Text.assemble(
        ("agentd ", "bold"),
        (report.profile, "bold"),
        " ",
        verdict_word,
        f"  {report.agent.hostname}  {report.created}  report {report.id}",
    )
    console.print(title)
    if report.conversation_id:
        console.print(Text(f"conversation {report.conversation_id}"))
    if report.verdicts:
        console.print()
        console.print(Text("Findings", style="bold underline"))
        for verdict in report.verdicts:
            style = SEVERITY_STYLE.get(verdict.severity, "")
            console.print(
                Text.assemble(
                    (f"{verdict.severity.upper():8} ", style),
                    (verdict.code, "bold"),
                    f"  (confidence {verdict.confidence:.0%})",
                )
            )
            console.print(Text(f"  {verdict.summary}"))
            if verdict.next_step:
                console.print(Text.assemble(("  next step: ", "bold"), verdict.next_step))
            if verdict.evidence:
                console.print(Text(f"  evidence: {', '.join(verdict.evidence)}", style="dim"))
    if report.checks:
        console.print()
        console.print(checks_table(report.checks))
    if report.evidence:
        console.print()
        console.print(Text("Evidence", style="bold underline"))
        for item in report.evidence:
            mark = {"ok": "", "skipped": " (skipped)", "error": " (error)"}.get(item.status, f" ({item.status})")
            console.print(Text(f"  {item.id}{mark}: {item.summary}"))


class LiveProgress:
    """A live table of checks as they start and finish; a no-op when not on a terminal."""

    def __init__(self, console: Console, enabled: bool) -> None:
        self.console = console
        self.enabled = enabled and console.is_terminal
        self._rows: dict[str, dict[str, Any]] = {}
        self._live: Live | None = None

    def __enter__(self) -> LiveProgress:
        if self.enabled:
            self._live = Live(self._render(), console=self.console, refresh_per_second=8, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None

    def __call__(self, event: RunnerEvent) -> None:
        if isinstance(event, CheckStarted):
            self._rows[event.check_id] = {"title": event.title, "started": time.monotonic(), "note": "", "result": None}
        elif isinstance(event, CheckNote):
            self._rows.setdefault(event.check_id, {"title": event.check_id, "started": time.monotonic(), "result": None})
            self._rows[event.check_id]["note"] = event.text
        elif isinstance(event, CheckFinished):
            row = self._rows.setdefault(event.result.id, {"title": event.result.title, "started": time.monotonic()})
            row["result"] = event.result
        if self._live is not None:
            self._live.update(self._render())

    def _render(self) -> Group:
        table = Table.grid(padding=(0, 1))
        for check_id, row in self._rows.items():
            result: CheckResult | None = row.get("result")
            if result is None:
                elapsed = time.monotonic() - row["started"]
                table.add_row(Spinner("dots"), Text(check_id, style="bold"), Text(f"{elapsed:4.1f}s {row.get('note', '')}", style="dim"))
            else:
                label, style = STATUS_STYLE[result.status]
                table.add_row(Text(label, style=style), Text(check_id), Text(result.summary, overflow="ellipsis", no_wrap=True))
        return Group(Text("running checks…", style="bold"), table)
