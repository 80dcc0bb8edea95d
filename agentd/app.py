"""One run's flow, shared by the CLI, the daemon and the control socket.

    trigger ─► plan ─► probe ─► fetch ─► correlate ─► report ─► deliver
"""

from __future__ import annotations

import asyncio
import getpass
import os
import platform
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import structlog

from agentd import __version__, paths
from agentd import config as config_mod
from agentd.checks import PROFILES, Check, Plan
from agentd.config import CORE_SECTION, Config
from agentd.correlation import Findings
from agentd.errors import ConfigError, UsageError
from agentd.evidence import EvidenceRequest
from agentd.model import AgentInfo, CheckResult, Evidence, Report, Severity, Status, Verdict, escape_undecodable, isoformat, new_report_id, utcnow
from agentd.plugin import PluginManager
from agentd.runner import EventCallback, run_checks

log = structlog.get_logger("agentd.app")


@dataclass
class App:
    """Configuration and plugins, loaded once; the flows that use them."""

    config: Config
    plugins: PluginManager
    timeline: Any | None = None
    """The daemon's local history, when one runs in this process (used by correlation)."""

    # -- loading --------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        config_path: str | os.PathLike | None = None,
        *,
        disable: Iterable[str] = (),
        register: Mapping[str, Any] | None = None,
        load_entry_points: bool = True,
    ) -> App:
        """Read the configuration, load plugins (honouring disabled ones), validate.

        ``register`` adds plugin objects by name (tests, embedding).
        Raises :class:`ConfigError` naming file, key and problem.
        """
        path, explicit = config_mod.locate(config_path)
        raw = config_mod.read_toml(path, explicit=explicit)
        core = config_mod.build({"agentd": raw.get("agentd", {})}, [CORE_SECTION], path=path).core
        disabled = set(core.disable_plugins) | set(disable)
        plugins = PluginManager()
        for name in disabled:
            plugins.pm.set_blocked(name)
        for name, plugin in (register or {}).items():
            plugins.register(plugin, name)
        plugins.load(
            disabled=disabled,
            drop_in_dir=core.plugin_dir or (paths.config_dir() / "plugins.d"),
            entry_points=load_entry_points,
        )
        app = cls(config=Config(path=path, sections={}), plugins=plugins)
        app.config = app.build_config(raw, path, allow_unknown_sections=bool(disabled))
        return app

    def build_config(self, raw: Mapping[str, Any], path: Path | None, *, allow_unknown_sections: bool = False) -> Config:
        sections = [CORE_SECTION, *self.plugins.config_sections()]
        seen: dict[str, str] = {}
        for section in sections:
            if section.name in seen:
                raise ConfigError(f"two plugins declare the section [{section.name}]")
            seen[section.name] = section.name
        config = config_mod.build(raw, sections, path=path, allow_unknown_sections=allow_unknown_sections)
        self.plugins.configure(config)
        return config

    def reload(self) -> Config:
        """Re-read the configuration; on any error the old one stays, in every plugin too
        (raises ConfigError naming file, key and problem)."""
        path, explicit = self.config.path, self.config.path is not None
        if path is None:  # started on defaults: a file may have appeared since
            path, explicit = config_mod.locate(None)
        raw = config_mod.read_toml(path, explicit=explicit)
        disabled = any(info.state == "disabled" for info in self.plugins.plugins())
        try:
            new = self.build_config(raw, path, allow_unknown_sections=disabled)
        except ConfigError:
            # plugins configured before the one that refused hold the rejected values:
            # configure everyone again with the configuration that stays
            self.plugins.configure(self.config)
            raise
        self.config = new
        return new

    # -- the flow --------------------------------------------------------------------------

    def plan(self, profile: str, *, conversation_id: str | None = None, only: Iterable[str] = ()) -> tuple[Plan, list[Check], list[CheckResult]]:
        """The checks for ``profile``; plugin failures come back as error rows."""
        if profile not in PROFILES:
            raise UsageError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
        plan = Plan(profile=profile, config=self.config, conversation_id=conversation_id, only=frozenset(only), plugins=self.plugins)
        before = len(self.plugins.failures)
        checks: list[Check] = []
        problems: list[CheckResult] = []
        seen: dict[str, str] = {}
        collected = self.plugins.collect_checks(plan)
        if plan.only:
            _check_only(plan.only, profile, collected)
        for plugin, check in collected:
            if profile not in check.profiles or (plan.only and check.id not in plan.only):
                continue
            if check.id in seen:
                problems.append(_plugin_error_row(plugin, f"check id {check.id!r} is already planned by {seen[check.id]!r}"))
                continue
            seen[check.id] = plugin
            checks.append(check)
        checks.sort(key=lambda c: c.order)  # stable: plugins' own order within one rank
        for failure in self.plugins.failures[before:]:
            problems.append(_plugin_error_row(failure.plugin, f"{failure.hook}: {failure.error}"))
        return plan, checks, problems

    async def run_check(
        self,
        profile: str = "preshift",
        *,
        on_event: EventCallback | None = None,
        only: Iterable[str] = (),
        deadline_s: float | None = None,
    ) -> Report:
        started = time.monotonic()
        plan, checks, problems = self.plan(profile, only=only)
        deadline = deadline_s if deadline_s is not None else self.config.core.deadline_for(profile)
        results = await run_checks(checks, plan, deadline_s=deadline, on_event=on_event)
        evidence: list[Evidence] = []
        if profile == "full":
            evidence = await self.collect_evidence(EvidenceRequest(config=self.config, profile=profile))
        report = self._report(profile, [*results, *problems], evidence, started)
        return self.correlate(report)

    async def run_diagnose(
        self,
        conversation_id: str,
        *,
        on_event: EventCallback | None = None,
        options: Mapping[str, Any] | None = None,
        with_checks: bool = False,
    ) -> Report:
        """Incident mode: every evidence source for one conversation, then correlation."""
        started = time.monotonic()
        results: list[CheckResult] = []
        if with_checks:
            plan, checks, problems = self.plan("incident", conversation_id=conversation_id)
            results = [*await run_checks(checks, plan, deadline_s=self.config.core.deadline_for("incident"), on_event=on_event), *problems]
        request = EvidenceRequest(
            config=self.config, profile="incident", conversation_id=conversation_id, options=dict(options or {})
        )
        evidence = await self.collect_evidence(request)
        report = self._report("incident", results, evidence, started, conversation_id=conversation_id)
        return self.correlate(report)

    async def collect_evidence(self, request: EvidenceRequest) -> list[Evidence]:
        before = len(self.plugins.failures)
        sources = self.plugins.collect_evidence(request)
        items: list[Evidence] = [
            Evidence(
                id=f"plugin.{f.plugin}",
                source=f.plugin,
                kind="plugin.error",
                status="error",
                summary=f"{f.hook}: {f.error}",
            )
            for f in self.plugins.failures[before:]
        ]

        async def one(plugin: str, source: Any) -> list[Evidence]:
            timeout = float(getattr(source, "timeout_s", 30.0))
            try:
                async with asyncio.timeout(timeout):
                    found = await source.collect(request)
                return [e for e in found if isinstance(e, Evidence)]
            except TimeoutError:
                return [_source_error(source, f"timed out after {timeout:g} s")]
            except Exception as exc:
                log.warning("evidence source failed", source=source.name, plugin=plugin, error=str(exc))
                return [_source_error(source, str(exc) or type(exc).__name__)]

        gathered = await asyncio.gather(*(one(p, s) for p, s in sources))
        for found in gathered:
            items.extend(found)
        return items

    def correlate(self, report: Report) -> Report:
        from agentd.correlation import timeline_evidence, unexplained_checks, unexplained_verdict

        history = timeline_evidence(report, self.timeline)  # the PC's own minutes next to the call's
        if history is not None:
            report = replace(report, evidence=(*report.evidence, history))
        before = len(self.plugins.failures)
        findings = Findings(report=report, config=self.config, timeline=self.timeline)
        verdicts: list[Verdict] = [v for _, v in self.plugins.correlate(findings)]
        for failure in self.plugins.failures[before:]:
            log.error("correlation rule failed", plugin=failure.plugin, error=failure.error)
        fallback = unexplained_verdict(unexplained_checks(report, verdicts))
        if fallback is not None:
            verdicts.append(fallback)
        order = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}
        verdicts.sort(key=lambda v: (order.get(v.severity, 3), -v.confidence, v.code))
        return report.with_verdicts(verdicts)

    def _report(
        self,
        profile: str,
        results: Sequence[CheckResult],
        evidence: Sequence[Evidence],
        started: float,
        *,
        conversation_id: str | None = None,
    ) -> Report:
        return Report(
            id=new_report_id(),
            created=isoformat(utcnow()),
            agent=agent_info(),
            profile=profile,
            conversation_id=conversation_id,
            checks=tuple(results),
            evidence=tuple(evidence),
            duration_ms=round((time.monotonic() - started) * 1000.0, 1),
        )


def _check_only(only: Iterable[str], profile: str, collected: Sequence[tuple[str, Check]]) -> None:
    """``--only`` naming no check of ``profile`` is a typo, not a READY with nothing run."""
    known = sorted({c.id for _, c in collected if profile in c.profiles})
    elsewhere = {c.id: c.profiles for _, c in collected if profile not in c.profiles}
    unknown = sorted(set(only) - set(known))
    if not unknown:
        return
    hints = [f"{i} is in profile {', '.join(p for p in elsewhere[i])}" for i in unknown if i in elsewhere]
    raise UsageError(
        f"no check {', '.join(repr(i) for i in unknown)} in profile {profile}"
        + (f" ({'; '.join(hints)})" if hints else "")
        + f"; known: {', '.join(known) or 'none'}"
    )


def _plugin_error_row(plugin: str, problem: str) -> CheckResult:
    return CheckResult(id=f"plugin.{plugin}", title=f"plugin {plugin}", status=Status.ERROR, summary=problem)


def _source_error(source: Any, message: str) -> Evidence:
    from agentd.redact import redact_text

    name = getattr(source, "name", type(source).__name__)
    return Evidence(id=f"{name}.error", source=name, kind="source.error", status="error", summary=redact_text(message))


def agent_info() -> AgentInfo:
    try:
        user = getpass.getuser()
    except Exception:  # no login name (containers, services with DynamicUser)
        user = None
    return AgentInfo(
        # a kernel hostname that is not UTF-8 comes back with lone surrogates: escaped, or no report could be written
        hostname=escape_undecodable(socket.gethostname()),
        install_id=paths.install_id(),
        version=__version__,
        platform=f"{platform.system()} {platform.release()} {platform.machine()}".strip(),
        python=platform.python_version(),
        user=user,
    )
