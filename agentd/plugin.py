"""Loading plugins and calling their hooks, with each plugin's failure kept to itself.

Plugins come from three places, all loaded the same way:
- entry points of the group ``agentd`` (the built-ins are entry points of the ``agentd``
  distribution itself; third-party distributions add their own);
- a drop-in folder of ``*.py`` files (``[agentd] plugin_dir``, default
  ``<config dir>/plugins.d``), each file one plugin named after its stem;
- objects registered directly (tests).

A plugin is disabled by name (``[agentd] disable_plugins`` or ``--disable-plugin``); it
is then blocked before it is imported. A plugin that fails to import, or whose hook
raises, is reported (``agentd plugins``, the log, an error row in the report) and the
others carry on: one broken third-party plugin must not stop a pre-shift check.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass, field
import importlib.metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pluggy
import structlog

from agentd import hookspecs
from agentd.checks import Check, Plan
from agentd.commands import Command
from agentd.config import ConfigSection
from agentd.errors import ConfigError, PluginError, UsageError

log = structlog.get_logger("agentd.plugin")

ENTRY_POINT_GROUP = "agentd"
DROP_IN_PACKAGE = "agentd_dropin"


@dataclass(frozen=True)
class PluginInfo:
    """One plugin as ``agentd plugins`` shows it."""

    name: str
    origin: str
    """``builtin``, ``entry point <dist> <version>``, ``drop-in <file>`` or ``registered``."""
    location: str
    hooks: tuple[str, ...] = ()
    state: str = "loaded"
    """``loaded``, ``disabled`` or ``failed: <why>``."""


@dataclass
class HookFailure:
    plugin: str
    hook: str
    error: str


@dataclass
class PluginManager:
    """A typed wrapper around pluggy's manager (one per process)."""

    pm: pluggy.PluginManager = field(default_factory=lambda: _new_manager())
    infos: dict[str, PluginInfo] = field(default_factory=dict)
    failures: list[HookFailure] = field(default_factory=list)

    # -- loading ---------------------------------------------------------------------------

    def load(
        self, *, disabled: Iterable[str] = (), drop_in_dir: Path | None = None, entry_points: bool = True
    ) -> None:
        disabled = set(disabled)
        for name in disabled:
            self.pm.set_blocked(name)
        if entry_points:
            self._load_entry_points(disabled)
        if drop_in_dir is not None:
            self._load_drop_ins(drop_in_dir, disabled)
        for name in sorted(disabled - set(self.infos)):
            self.infos[name] = PluginInfo(name, "unknown", "-", state="disabled (no such plugin found)")

    def _load_entry_points(self, disabled: set[str]) -> None:
        # name and version read once per distribution: each ep.dist.name parses its METADATA
        # again (28 entry points cost ~70 ms of a check's start)
        seen: dict[int, tuple[str, str]] = {}
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.dist is None:
                dist, version = "?", "?"
            else:
                if id(ep.dist) not in seen:
                    meta = ep.dist.metadata
                    seen[id(ep.dist)] = (meta["Name"], meta["Version"])
                dist, version = seen[id(ep.dist)]
            origin = "builtin" if dist == "agentd" else f"entry point {dist} {version}"
            if ep.name in self.infos:
                continue  # the same distribution seen twice on sys.path
            if ep.name in disabled:
                self.infos[ep.name] = PluginInfo(ep.name, origin, ep.value, state="disabled")
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin is reported, not fatal
                self._failed(ep.name, origin, ep.value, exc)
                continue
            self.register(plugin, ep.name, origin=origin, location=ep.value)

    def _load_drop_ins(self, folder: Path, disabled: set[str]) -> None:
        if not folder.is_dir():
            return
        for file in sorted(folder.glob("*.py")):
            name = file.stem
            if name.startswith("_"):
                continue
            if name in disabled:
                self.infos[name] = PluginInfo(name, "drop-in", str(file), state="disabled")
                continue
            if name in self.infos:
                self._failed(name, "drop-in", str(file), PluginError(name, "a plugin of that name is already loaded"))
                continue
            module_name = f"{DROP_IN_PACKAGE}.{name}"
            try:
                spec = importlib.util.spec_from_file_location(module_name, file)
                if spec is None or spec.loader is None:
                    raise PluginError(name, f"cannot import {file}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module
                spec.loader.exec_module(module)
            except Exception as exc:
                sys.modules.pop(module_name, None)
                self._failed(name, "drop-in", str(file), exc)
                continue
            self.register(module, name, origin="drop-in", location=str(file))

    def _failed(self, name: str, origin: str, location: str, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        log.warning("plugin failed to load", plugin=name, origin=origin, error=reason)
        self.infos[name] = PluginInfo(name, origin, location, state=f"failed: {reason}")

    def register(self, plugin: Any, name: str, *, origin: str = "registered", location: str | None = None) -> None:
        if self.pm.is_blocked(name):
            self.infos[name] = PluginInfo(name, origin, location or repr(plugin), state="disabled")
            return
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:  # a hook with an unknown name or bad signature
            self._failed(name, origin, location or repr(plugin), exc)
            return
        hooks = tuple(sorted(h.name for h in self.pm.get_hookcallers(plugin) or ()))
        self.infos[name] = PluginInfo(name, origin, location or _where(plugin), hooks)

    def plugins(self) -> list[PluginInfo]:
        return sorted(self.infos.values(), key=lambda p: (p.origin != "builtin", p.name))

    # -- calling hooks, one plugin at a time ----------------------------------------------

    def _each(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call every implementation of a hook separately, so one raising plugin does not
        take the others' answers with it. Returns (plugin name, result) pairs."""
        hook = getattr(self.pm.hook, hook_name)
        answers: list[tuple[str, Any]] = []
        for impl in hook.get_hookimpls():  # registration (load) order
            try:
                result = impl.function(*[kwargs[arg] for arg in impl.argnames])
            except (ConfigError, UsageError):
                raise  # the user must fix something: that stops the run with exit 2
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.error("plugin hook failed", plugin=impl.plugin_name, hook=hook_name, error=error)
                self.failures.append(HookFailure(impl.plugin_name, hook_name, error))
                continue
            if result is not None:
                answers.append((impl.plugin_name, result))
        return answers

    def _flat(self, hook_name: str, kind: type | tuple[type, ...] | None, **kwargs: Any) -> list[tuple[str, Any]]:
        items: list[tuple[str, Any]] = []
        for plugin, result in self._each(hook_name, **kwargs):
            if inspect.isawaitable(result):
                self.failures.append(HookFailure(plugin, hook_name, "returned an awaitable from a sync hook"))
                _close(result)
                continue
            seq = result if isinstance(result, (list, tuple)) else [result]
            for item in seq:
                if kind is not None and not isinstance(item, kind):
                    self.failures.append(
                        HookFailure(plugin, hook_name, f"returned {type(item).__name__}, expected {_names(kind)}")
                    )
                    continue
                items.append((plugin, item))
        return items

    def config_sections(self) -> list[ConfigSection]:
        return [item for _, item in self._flat("agentd_config_sections", ConfigSection)]

    def configure(self, config: Any) -> None:
        """A ConfigError from a plugin propagates (exit 2); other failures are recorded."""
        self._each("agentd_configure", config=config)

    def unconfigured(self, config: Any) -> list[str]:
        """What plugins cannot do with this configuration, one line each."""
        return [item for _, item in self._flat("agentd_unconfigured", str, config=config)]

    def commands(self) -> list[Command]:
        return [item for _, item in self._flat("agentd_commands", Command)]

    def collect_checks(self, plan: Plan) -> list[tuple[str, Check]]:
        return self._flat("agentd_collect_checks", Check, plan=plan)

    def collect_evidence(self, request: Any) -> list[tuple[str, Any]]:
        from agentd.evidence import EvidenceSource

        return self._flat("agentd_collect_evidence", EvidenceSource, request=request)

    def correlate(self, findings: Any) -> list[tuple[str, Any]]:
        from agentd.model import Verdict

        return self._flat("agentd_correlate", Verdict, findings=findings)

    def collect_sinks(self, config: Any) -> list[tuple[str, Any]]:
        from agentd.sinks import Sink

        return self._flat("agentd_collect_sinks", Sink, config=config)

    def ice_servers(self, config: Any, *, refresh: bool, timeout_s: float) -> list[tuple[str, Any]]:
        """``agentd_ice_servers``: (plugin, awaitable) pairs; a plugin that raises is recorded."""
        found = []
        for plugin, result in self._each("agentd_ice_servers", config=config, refresh=refresh, timeout_s=timeout_s):
            if inspect.isawaitable(result):
                found.append((plugin, result))
            else:
                self.failures.append(HookFailure(plugin, "agentd_ice_servers", f"returned {type(result).__name__}, expected an awaitable"))
        return found

    def websocket_channels(self, config: Any) -> list[tuple[str, Any]]:
        """``agentd_websocket_channels``: (plugin, channel) pairs of objects with an async ``probe``."""
        found = []
        for plugin, item in self._flat("agentd_websocket_channels", None, config=config):
            if callable(getattr(item, "probe", None)):
                found.append((plugin, item))
            else:
                self.failures.append(HookFailure(plugin, "agentd_websocket_channels", f"returned {type(item).__name__}, which has no probe()"))
        return found

    def daemon_hook(self, hook_name: str, daemon: Any, **kwargs: Any) -> list[tuple[str, Any]]:
        """``agentd_daemon_start`` / ``_stop`` / ``_login`` / ``_login_changed``: (plugin,
        awaitable) pairs to await."""
        return [(p, r) for p, r in self._each(hook_name, daemon=daemon, **kwargs) if inspect.isawaitable(r)]

    def daemon_status(self, daemon: Any) -> list[tuple[str, dict[str, Any]]]:
        """``agentd_daemon_status``: each plugin's additions to ``agentd status``."""
        found = []
        for plugin, result in self._each("agentd_daemon_status", daemon=daemon):
            if isinstance(result, dict):
                found.append((plugin, result))
            else:
                self.failures.append(HookFailure(plugin, "agentd_daemon_status", f"returned {type(result).__name__}, expected dict"))
                _close(result)
        return found


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def _where(plugin: Any) -> str:
    if inspect.ismodule(plugin):
        return getattr(plugin, "__file__", None) or plugin.__name__
    return f"{type(plugin).__module__}.{type(plugin).__qualname__}"


def _names(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _close(awaitable: Any) -> None:
    close: Callable[[], None] | None = getattr(awaitable, "close", None)
    if close:
        close()


def hook_names() -> Sequence[str]:
    return sorted(hookspecs.documented_hooks())
