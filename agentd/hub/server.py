"""``agentd hub serve``: migrate, then uvicorn in this process; READY=1 for systemd."""

from __future__ import annotations

import asyncio

import structlog
import uvicorn

from agentd.hub.app import HubSettings, create_app
from agentd.hub.db import make_engine, redact_url
from agentd.hub.migrate import upgrade
from agentd.sdnotify import Notifier

log = structlog.get_logger("agentd.hub.server")


class _Server(uvicorn.Server):
    """uvicorn's server, telling systemd when it listens and when it stops."""

    notifier: Notifier

    async def startup(self, sockets=None) -> None:  # type: ignore[override]
        await super().startup(sockets=sockets)
        if self.started:
            self.notifier.ready("serving")

    async def shutdown(self, sockets=None) -> None:  # type: ignore[override]
        self.notifier.stopping("stopping")
        # the PCs' sockets first: uvicorn would otherwise wait out its graceful timeout
        # on thousands of open WebSockets and then cancel their handlers (a traceback each)
        hub = getattr(getattr(self.config.app, "state", None), "hub", None)
        if hub is not None:
            await hub.agents.close_all()
        await super().shutdown(sockets=sockets)


def quiet_libraries() -> None:
    """Alembic and uvicorn say a lot at info; the hub's own lines are what operators read."""
    import logging

    for name in ("alembic", "uvicorn.error"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))


def serve(url: str, host: str, port: int, *, max_report_bytes: int, site_window_s: float,
          tls_cert: str | None = None, tls_key: str | None = None, sites: tuple = (), public_url: str | None = None, alerts: object = None,
          presence_s: float = 20.0) -> int:
    async def migrate() -> None:
        engine = make_engine(url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    quiet_libraries()
    asyncio.run(migrate())
    settings = HubSettings(database=url, max_report_bytes=max_report_bytes, site_window_s=site_window_s, sites=sites,
                           public_url=public_url, alerts=alerts, presence_s=presence_s)
    app = create_app(settings)
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="on", ws="websockets-sansio",
        ssl_certfile=tls_cert, ssl_keyfile=tls_key, timeout_graceful_shutdown=5, ws_ping_interval=30, ws_ping_timeout=30,
        backlog=8192,
    )
    server = _Server(config)
    server.notifier = Notifier()
    log.warning("hub listening", url=f"{'https' if tls_cert else 'http'}://{host}:{port}", database=redact_url(url), node=settings.node)
    server.run()
    return 0 if server.started else 1
