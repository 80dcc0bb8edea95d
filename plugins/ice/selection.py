"""Which ICE servers one run tests (``[ice] source``), shared by every ICE check of the run.

- ``config``: the ``[[ice.servers]]`` tables only;
- ``genesys``: only what ``agentd_ice_servers`` hooks offer (the softphone's own servers);
- ``auto``: both; each check's rows say which source each url came from.

The hooks are awaited once per run (``ctx.memo``) under ``[ice] discovery_timeout_s``;
after a TURN 401 on an offered url, once more with ``refresh=True`` (stale or rejected
credentials), never more.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import structlog

from agentd.checks import CheckContext, Outcome
from agentd.model import Status
from agentd.redact import redact_text

from . import IceEndpoint, IceSettings, endpoints
from .offers import IceServerOffer, source_label
from .urls import IceUrlError, parse_ice_url

log = structlog.get_logger("agentd.ice")

LOGIN_HINT = "run `agentd login` to test the softphone's own STUN/TURN servers"


@dataclass(frozen=True)
class IceSelection:
    endpoints: tuple[IceEndpoint, ...]
    offers: tuple[IceServerOffer, ...]
    source_setting: str
    refreshed: bool = False

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e.source for e in self.endpoints))

    @property
    def relay_only(self) -> bool:
        return any(o.usable and o.relay_only for o in self.offers)

    @property
    def relay_only_why(self) -> str:
        found = next((o for o in self.offers if o.usable and o.relay_only), None)
        return (found.relay_only_why if found and found.relay_only_why else "Genesys handed out no STUN server (Force TURN)")

    def stun(self) -> list[IceEndpoint]:
        return [e for e in self.endpoints if e.url.scheme in ("stun", "stuns")]

    def turn(self, transport: str) -> list[IceEndpoint]:
        return [e for e in self.endpoints if e.url.is_turn and e.url.transport == transport]

    def udp_targets(self) -> list[IceEndpoint]:
        """stun: urls and turn: UDP urls (what a UDP binding can go to), in order."""
        return [e for e in self.endpoints if e.url.scheme == "stun" or (e.url.scheme == "turn" and e.url.transport == "udp")]

    def failed_offers(self) -> list[IceServerOffer]:
        return [o for o in self.offers if o.error]

    def discovery(self) -> list[dict[str, Any]]:
        return [o.summary() for o in self.offers]

    def annotate(self, details: dict[str, Any], tested: list[IceEndpoint] | None = None) -> dict[str, Any]:
        """Add which sources were tested (and the discovery) to a check's details."""
        used = tested if tested is not None else list(self.endpoints)
        details["ice_sources"] = list(dict.fromkeys(e.source for e in used))
        if self.offers:
            details["discovery"] = self.discovery()
        self._login_refused(details)
        if self.relay_only:
            details["relay_only"] = True
        return details

    def _login_refused(self, details: dict[str, Any]) -> None:
        """A source that could not fetch because the agent's login was refused says so the
        way platform.auth_failed reads it (``details.genesys_auth``)."""
        refused = next((o.details["genesys_auth"] for o in self.failed_offers() if isinstance(o.details.get("genesys_auth"), dict)), None)
        if refused is not None:
            details["genesys_auth"] = dict(refused)

    def suffix(self, tested: list[IceEndpoint]) -> str:
        """`` (tested: ...)`` naming the sources, unless only [[ice.servers]] was tested (as always before)."""
        sources = list(dict.fromkeys(e.source for e in tested))
        text = ""
        if sources and sources != ["config"]:
            text = " (tested: " + " and ".join(source_label(s) for s in sources) + ")"
        failed = self.failed_offers()
        if failed:
            text += f"; the softphone's own servers could not be fetched: {failed[0].error}"
        return text

    def nothing_to_test(self, config_hint: str, details: dict[str, Any] | None = None) -> Outcome:
        """The row of a check that found no url it can use in this selection."""
        details = dict(details or {})
        details.setdefault("reason", "not_configured")
        if self.offers:
            details["discovery"] = self.discovery()
        self._login_refused(details)
        failed = self.failed_offers()
        if failed:
            offer = failed[0]
            details.update(reason=offer.reason or "protocol", ice_source=offer.source)
            return Outcome(Status.ERROR, f"the softphone's STUN/TURN servers could not be fetched: {offer.error}", details=details)
        skipped = [o for o in self.offers if o.skip]
        if skipped and self.source_setting != "config":
            hint = skipped[0].skip or LOGIN_HINT
            if self.source_setting == "auto":
                hint = f"no {config_hint} in [[ice.servers]]; {hint}"
            return Outcome.skipped(hint, details=details)
        return Outcome.skipped(f"no {config_hint} in [[ice.servers]]", details=details)


async def selection(ctx: CheckContext, *, refresh: bool = False) -> IceSelection:
    """This run's selection (shared by its checks); ``refresh`` asks the offering sources again, once."""
    key = "ice.selection.refreshed" if refresh else "ice.selection"
    return await ctx.memo(key, lambda: select(ctx.config, getattr(ctx.plan, "plugins", None), refresh=refresh))


async def select(config: Any, plugins: Any, *, refresh: bool = False) -> IceSelection:
    settings: IceSettings = config.section("ice")
    chosen: list[IceEndpoint] = list(endpoints(settings)) if settings.source in ("auto", "config") else []
    offers: list[IceServerOffer] = []
    if settings.source != "config" and plugins is not None:
        pairs = plugins.ice_servers(config, refresh=refresh, timeout_s=settings.discovery_timeout_s)
        offers = list(await asyncio.gather(*(_await_offer(plugin, pending, settings.discovery_timeout_s) for plugin, pending in pairs)))
    offered: list[IceEndpoint] = []
    for offer in offers:
        if not offer.usable:
            continue
        for index, server in enumerate(offer.servers):
            for text in server.urls:
                try:
                    url = parse_ice_url(text)
                except IceUrlError as exc:
                    log.warning("an offered ICE url is not valid", source=offer.source, error=str(exc))
                    continue
                if url.is_turn and (not server.username or server.credential is None):
                    continue
                offered.append(IceEndpoint(url=url, username=server.username, credential=server.credential, server_index=index, source=offer.source))
    # the softphone's own first: they are what its calls use
    return IceSelection(endpoints=(*offered, *chosen), offers=tuple(offers), source_setting=settings.source, refreshed=refresh)


async def _await_offer(plugin: str, pending: Any, timeout_s: float) -> IceServerOffer:
    try:
        async with asyncio.timeout(timeout_s + 0.5):  # the source has its own deadline; this is the backstop
            offer = await pending
    except TimeoutError:
        return IceServerOffer(source=plugin, error=f"no answer within {timeout_s:g} s", reason="timeout")
    except Exception as exc:  # noqa: BLE001 - a broken source is its own row, not the run's end
        log.warning("an ICE server source failed", plugin=plugin, error=repr(exc))
        return IceServerOffer(source=plugin, error=redact_text(f"{type(exc).__name__}: {exc}"), reason="protocol")
    if not isinstance(offer, IceServerOffer):
        return IceServerOffer(source=plugin, error=f"answered {type(offer).__name__}, not an IceServerOffer", reason="protocol")
    return offer


async def with_fresh_credentials(ctx: CheckContext, endpoint: IceEndpoint) -> IceEndpoint | None:
    """The same url from a refreshed offer (after a TURN 401 on ``endpoint``), or None."""
    if endpoint.source == "config":
        return None
    fresh = await selection(ctx, refresh=True)
    return next((e for e in fresh.endpoints if e.source == endpoint.source and e.url.url == endpoint.url.url), None)
