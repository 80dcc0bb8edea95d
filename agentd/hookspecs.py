"""The plugin contract: one hook per phase of a run, named by phase.

A run flows one way::

    configure ─► collect_checks ─► (probe) ─► collect_evidence ─► correlate ─► (report) ─► collect_sinks (deliver)

and the daemon adds ``daemon_start`` / ``daemon_stop`` around its life, ``daemon_login`` /
``daemon_login_changed`` when a user hands it a login, and ``daemon_status``.

pluggy does not await. A hook that must do I/O returns objects with an async method
(checks, evidence sources, sinks) or an awaitable, and the core awaits them under a
deadline. No hook here is ``firstresult``: every plugin's answer counts.

Implement a hook with ``@agentd.hookimpl`` on a module-level function (or a method of a
registered object) with the same name and any subset of the arguments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Sequence

import pluggy

if TYPE_CHECKING:
    from agentd.checks import Check, Plan
    from agentd.commands import Command
    from agentd.config import Config, ConfigSection
    from agentd.correlation import Findings
    from agentd.evidence import EvidenceRequest, EvidenceSource
    from agentd.model import Verdict
    from agentd.sinks import Sink

PROJECT = "agentd"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- configuration -------------------------------------------------------------------


@hookspec
def agentd_config_sections() -> Sequence[ConfigSection]:
    """Declare the configuration sections this plugin owns (sync, all results kept).

    Each :class:`agentd.config.ConfigSection` names a TOML table (dotted for nested
    tables: ``sinks.http``) and the frozen dataclass that holds its keys and defaults.
    The core validates the file against every declared section: unknown keys and wrong
    types are errors that name the file and key.
    """


@hookspec
def agentd_configure(config: Config) -> None:
    """Called once the configuration is loaded and valid, and again after each reload
    (sync). Plugins read their section with ``config.section(name)``. Raise
    :class:`agentd.errors.ConfigError` to reject a value the types cannot express."""


@hookspec
def agentd_unconfigured(config: Config) -> Sequence[str]:
    """Name what this plugin cannot do with this configuration (sync, all results kept):
    one short line each, saying what is missing and what to set, for example
    ``"Genesys Cloud credentials: set [genesys] client_id and client_secret"``. Return
    nothing when all is configured. ``agentd status`` lists the lines, so that an
    install that runs with defaults says what it is not doing."""


@hookspec
def agentd_commands() -> Sequence[Command]:
    """Contribute sub-commands to the ``agentd`` command line (sync, all results kept).

    Each :class:`agentd.commands.Command` adds its arguments to its own sub-parser and
    runs with the parsed arguments and the loaded :class:`agentd.app.App`; its ``run``
    returns the exit code, directly or as an awaitable that the CLI runs to completion.
    """


# -- plan and probe --------------------------------------------------------------------


@hookspec
def agentd_collect_checks(plan: Plan) -> Sequence[Check]:
    """Contribute the local checks for this run (sync, all results kept).

    Look at ``plan.profile`` and ``plan.config`` to decide what to contribute; the core
    also drops checks whose ``profiles`` do not include the run's profile. The checks'
    ``run`` coroutines are awaited by the runner, concurrently, each under its own
    ``timeout_s`` and all under the run's overall deadline.
    """


@hookspec
def agentd_ice_servers(config: Config, refresh: bool, timeout_s: float) -> Awaitable[Any] | None:
    """Offer ICE servers (STUN/TURN) besides ``[[ice.servers]]``: a softphone's own, handed
    out at run time (the genesys plugin fetches Genesys Cloud's over the streaming channel).

    Return None when the source cannot apply at all; else an awaitable that resolves within
    ``timeout_s`` to an ``agentd_plugins.ice.offers.IceServerOffer``: the servers in
    RTCIceServer form named by their ``source``, whether the softphone runs relay-only,
    when the credentials expire, or why there are none (``skip`` with what the agent must
    do, or ``error`` with a plugins/FINDINGS.md reason). ``refresh`` is true when the last
    answer's TURN credentials were rejected (401): fetch new ones instead of a cached copy.
    The ice plugin awaits it once per run (once more after a rejection) under
    ``[ice] discovery_timeout_s``. Register every credential with :mod:`agentd.redact`
    before returning it.
    """


@hookspec
def agentd_websocket_channels(config: Config) -> Sequence[Any]:
    """Contribute WebSocket channels the ``websocket`` check measures besides ``[websocket]
    targets`` (sync, all results kept): objects with a ``name`` and an async
    ``probe(ctx, settings, plan)`` that returns one details row (plugins/FINDINGS.md,
    ``websocket``) or None when it cannot apply (no credentials). The notifications
    plugin contributes the Genesys notifications channel; the genesys plugin the
    softphone's streaming (XMPP) channel.
    """


# -- fetch -----------------------------------------------------------------------------


@hookspec
def agentd_collect_evidence(request: EvidenceRequest) -> Sequence[EvidenceSource]:
    """Contribute sources of server-side evidence for this run (sync, all results kept).

    Return nothing when the source cannot apply (no credentials, no conversation id).
    The core awaits each source's ``collect(request)`` concurrently under its
    ``timeout_s``; a source that raises becomes an ``error`` evidence item.
    """


# -- correlate -------------------------------------------------------------------------


@hookspec
def agentd_correlate(findings: Findings) -> Sequence[Verdict]:
    """Turn local findings and server evidence into verdicts (sync, all results kept).

    A rule must be pure and fast: no I/O. It returns no verdict when its inputs are
    clean, and when it lacks the inputs it needs.
    """


# -- deliver ---------------------------------------------------------------------------


@hookspec
def agentd_collect_sinks(config: Config) -> Sequence[Sink]:
    """Contribute the sinks that reports are delivered to (sync, all results kept).

    Return a sink only when it is configured. The core writes every report to its local
    spool first, then awaits each sink's ``deliver(report, payload)``.
    """


# -- the daemon ------------------------------------------------------------------------


@hookspec
def agentd_daemon_start(daemon: Any) -> Awaitable[None] | None:
    """The daemon has started (before it reports ready). Return an awaitable for async
    start-up work; it is awaited with a deadline. Long-running work belongs in a task
    created with ``daemon.spawn(coro, name=...)`` so it is cancelled on stop."""


@hookspec
def agentd_daemon_stop(daemon: Any) -> Awaitable[None] | None:
    """The daemon is stopping (SIGTERM or end of ``agentd run``). Return an awaitable for
    async clean-up; it is awaited with a deadline, then the daemon exits anyway."""


@hookspec
def agentd_daemon_login(daemon: Any, service: str, login: dict[str, Any] | None, peer: dict[str, Any]) -> Awaitable[dict[str, Any]] | None:
    """A user handed a login to the daemon over the control socket (``agentd login``), or
    cleared it (``agentd logout``: ``login`` is None). ``service`` names whose login it is
    (``"genesys"``); only the plugin that owns that service answers, with an awaitable that
    stores or clears it and resolves to the answer for the client (``{"ok": True, ...}`` or
    ``{"ok": False, "error": "..."}``, never a secret); the others return None. ``peer`` is
    the sending account: ``{"uid": int, "user": str}``."""


@hookspec
def agentd_daemon_login_changed(daemon: Any, service: str) -> Awaitable[None] | None:
    """The daemon's login for ``service`` was replaced or cleared (after
    ``agentd_daemon_login`` stored it). Work done for the logged-in user (the notifications
    monitor) starts again for the new one, or stops. Return an awaitable for async work; it
    is awaited with a deadline."""


@hookspec
def agentd_daemon_status(daemon: Any) -> dict[str, Any] | None:
    """What this plugin adds to ``agentd status`` (sync, all results kept): a dict whose keys
    are merged into the status; dict values one level deep (``{"logins": {"genesys":
    {...}}}``). Each login carries a one-line ``summary`` a person reads. Never a secret."""


def documented_hooks() -> dict[str, str]:
    """Every hook name with its docstring; the tests hold each one to having both."""
    return {
        name: (obj.__doc__ or "").strip()
        for name, obj in globals().items()
        if name.startswith("agentd_") and callable(obj)
    }
