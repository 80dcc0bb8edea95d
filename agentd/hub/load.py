"""The hub as the ``path.load`` check's load target: the same sessions, budgets and limits
as ``agentd reflect --http-port`` (plugins/loaded_latency/server.py's :class:`LoadService`),
served by the hub's Starlette app under ``/load/v1/`` to enrolled PCs only (their install
token). At most ``max_tests`` tests at once across the fleet (429 with Retry-After beyond):
one site's PCs never load their shared line together.
"""

from __future__ import annotations

import time

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agentd_plugins.loaded_latency.server import _BLOCK, CHUNK, PREFIX, LoadService


def _error(message: str, status: int, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


async def _pc(request: Request):
    from agentd.hub.app import pc_from  # the hub's own install-token check

    pc = await pc_from(request)
    return pc if pc is not None and not pc.revoked else None


def _service(request: Request) -> LoadService:
    return request.app.state.load_service


async def start(request: Request) -> Response:
    if await _pc(request) is None:
        return _error("an enrolled PC's install token is needed", 401)
    service = _service(request)
    session = service.admit(request.client.host if request.client else "-")
    if session is None:
        return _error(f"{service.max_tests} load test(s) already running; try again later", 429, **{"Retry-After": str(service.retry_after_s(time.monotonic()))})
    return JSONResponse({"session": session.id, "max_bytes": session.max_bytes, "ttl_s": service.ttl_s})


async def end(request: Request) -> Response:
    if await _pc(request) is None:
        return _error("an enrolled PC's install token is needed", 401)
    session = _service(request).end(request.query_params.get("session", ""))
    if session is None:
        return _error("no such session (ended or expired)", 410)
    return JSONResponse({"uploaded": session.uploaded, "downloaded": session.downloaded})


async def _open_session(request: Request):
    """(service, session) for an enrolled PC's running session, or the error response to send."""
    if await _pc(request) is None:
        return _error("an enrolled PC's install token is needed", 401)
    service = _service(request)
    session = service.get(request.query_params.get("session"))
    if session is None:
        return _error("no such session (ended or expired)", 410)
    return service, session


async def upload(request: Request) -> Response:
    opened = await _open_session(request)
    if isinstance(opened, Response):
        return opened
    service, session = opened
    try:
        length = int(request.headers.get("content-length", ""))
    except ValueError:
        return _error("an upload needs a Content-Length", 400)
    if length < 0 or length > session.left_up():
        return _error(f"an upload of {length} bytes exceeds the session's budget ({session.left_up()} left)", 413)
    got = 0
    try:
        async for chunk in request.stream():
            got += len(chunk)
            session.uploaded += len(chunk)
            service.stats.uploaded += len(chunk)
            if got > length or time.monotonic() > session.expires:
                return _error("the upload ran past its length or the session's time", 413)
    except ClientDisconnect:
        return Response(status_code=204)  # the check cut its flow at its deadline: nobody reads this
    return JSONResponse({"received": got})


async def download(request: Request) -> Response:
    opened = await _open_session(request)
    if isinstance(opened, Response):
        return opened
    service, session = opened
    try:
        wanted = int(request.query_params.get("bytes", ""))
    except ValueError:
        return _error("a download needs bytes=N", 400)
    size = max(0, min(wanted, session.left_down()))
    session.downloaded += size  # reserved up front: parallel downloads never pass the budget
    service.stats.downloaded += size

    async def body():
        sent = 0
        while sent < size and time.monotonic() < session.expires:
            n = min(CHUNK, size - sent)
            yield _BLOCK[:n]
            sent += n

    return StreamingResponse(body(), media_type="application/octet-stream", headers={"Content-Length": str(size), "Cache-Control": "no-store"})


def routes() -> list[Route]:
    """The load service's routes, for the hub's route list."""
    return [
        Route(f"{PREFIX}/session", start, methods=["POST"]),
        Route(f"{PREFIX}/session", end, methods=["DELETE"]),
        Route(f"{PREFIX}/upload", upload, methods=["POST"]),
        Route(f"{PREFIX}/download", download, methods=["GET"]),
    ]


def service(max_tests: int = 1) -> LoadService:
    """The hub's one load service: one test at a time across the fleet, 64 MiB each way, 30 s."""
    return LoadService(max_tests=max_tests)
