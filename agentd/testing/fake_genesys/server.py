"""A fake Genesys Cloud: a real aiohttp server on loopback that speaks the Platform API.

    async with FakeGenesys(default_scenario()) as fake:
        fake.url            # http://127.0.0.1:PORT  (api_base_url and login_base_url)
        fake.state.inject("/api/v2/conversations/", status=503, times=3)

It enforces bearer tokens (401 for a missing, unknown or expired one) and scopes and
permissions (403 with a Genesys ``ErrorBody`` naming what is missing), issues tokens at
``POST /oauth/token`` (client credentials with HTTP Basic; authorization code with PKCE,
checking the S256 ``code_verifier``; refresh tokens), and answers the endpoints agentd
reads with the scenario's data. Every response carries ``ININ-Correlation-Id`` and the
``inin-ratelimit-*`` headers; faults (429 with Retry-After, 5xx, slow answers, bodies
that are not JSON, dropped connections) are injected through ``state.inject``.

Extending it (the notifications WebSocket lives in ``notifications.py``, the streaming
XMPP channel in ``streaming.py``): a module or
callable ``install(app, fake)`` adds routes to the aiohttp ``app`` before it starts; it
may call ``fake.require_token(request, scopes)`` to enforce the same auth, and use
``fake.state`` (``conversations``, ``participant()``, ``listeners``, ``extra``).
``agentd.testing.fake_genesys.notifications`` is installed automatically when present;
other extensions are passed as ``FakeGenesys(state, extensions=[install, ...])``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib
import json
import secrets
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, Iterable
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from .state import AuthCode, FakeState, OAuthClient, RecordedRequest, TokenGrant

Extension = Callable[[web.Application, "FakeGenesys"], None]
RATE_LIMIT_ALLOWED = 300


def without_nulls(value: Any) -> Any:
    """The value with every null field left out, at any depth: the real API omits absent
    fields, and the official SDKs' models cannot parse a null where they expect a value."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def error_json(status: int, code: str, message: str, **extra: Any) -> dict[str, Any]:
    """A Genesys ``ErrorBody``."""
    return {"message": message, "code": code, "status": status, "contextId": str(uuid.uuid4()), "details": [], "errors": [], **extra}


def error_response(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response(error_json(status, code, message, **extra), status=status)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _interval(text: Any) -> tuple[datetime, datetime]:
    if not isinstance(text, str) or "/" not in text:
        raise web.HTTPBadRequest(
            text=json.dumps(error_json(400, "bad.request", "interval must be start/end in ISO-8601")), content_type="application/json"
        )
    start, end = text.split("/", 1)
    return _parse(start), _parse(end)


class FakeGenesys:
    """The server. An async context manager; ``url`` is valid inside it."""

    def __init__(self, state: FakeState | None = None, *, host: str = "127.0.0.1", port: int = 0, extensions: Iterable[Extension] = ()) -> None:
        if not (host.startswith("127.") or host == "::1"):
            raise ValueError("the fake Genesys Cloud listens on loopback only")
        self.state = state or FakeState()
        self.host = host
        self.port = port
        self.app = web.Application(middlewares=[self._middleware])
        self._runner: web.AppRunner | None = None
        self._routes()
        for install in self._extensions(extensions):
            install(self.app, self)

    # -- life ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """``[genesys] streaming_base_url`` for this fake (``/stream/channels/{id}`` lives here)."""
        return f"ws://{self.host}:{self.port}"

    async def start(self) -> FakeGenesys:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeGenesys:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def config_toml(self, *, client_id: str = "agentd-cc", client_secret: str | None = "cc-secret-9f3b2a7c51", extra: str = "") -> str:
        """A ``[genesys]`` section pointing agentd at this fake (default: the scenario's
        client-credentials client; the secret inline, which is fine for a test)."""
        lines = [
            "[genesys]", 'region = "mypurecloud.com"', f'api_base_url = "{self.url}"', f'login_base_url = "{self.url}"',
            f'streaming_base_url = "{self.ws_url}"', f'client_id = "{client_id}"',
        ]
        if client_secret:
            lines.append(f'client_secret = "{client_secret}"')
        return "\n".join(lines) + "\n" + extra

    @staticmethod
    def _extensions(extra: Iterable[Extension]) -> list[Extension]:
        found: list[Extension] = []
        for name in ("agentd.testing.fake_genesys.notifications", "agentd.testing.fake_genesys.streaming"):
            try:
                module = importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name != name:
                    raise
            else:
                if callable(getattr(module, "install", None)):
                    found.append(module.install)
        found.extend(extra)
        return found

    # -- the pipeline every request goes through ------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        body = await request.read() if request.can_read_body else b""
        record = RecordedRequest(request.method, request.path, dict(request.query), dict(request.headers), body)
        self.state.requests.append(record)
        fault = self.state.take_fault(request.method, request.path)
        response: web.StreamResponse
        if fault is not None and fault.kind == "slow":
            await asyncio.sleep(fault.delay_s)
            fault = None
        if fault is not None and fault.kind == "drop":
            if request.transport is not None:
                request.transport.close()
            raise asyncio.CancelledError()
        if fault is not None and fault.kind == "status":
            response = error_response(fault.status, _code_for(fault.status), f"injected HTTP {fault.status}")
            if fault.status == 429:
                response.headers["Retry-After"] = fault.retry_after or "1"
        elif fault is not None and fault.kind == "malformed":
            response = web.Response(status=200, text='{"id": "truncated', content_type="application/json")
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                response = exc
        if isinstance(response, web.Response) and response.content_type == "application/json" and isinstance(response.body, bytes) and b"null" in response.body:
            try:  # a backstop: handlers leave absent fields out already
                response.body = json.dumps(without_nulls(json.loads(response.body))).encode()
            except ValueError:
                pass  # an injected malformed body stays malformed
        response.headers.setdefault("ININ-Correlation-Id", str(uuid.uuid4()))
        record.correlation_id = response.headers["ININ-Correlation-Id"]
        used = sum(1 for r in self.state.requests[-RATE_LIMIT_ALLOWED:])
        response.headers.setdefault("inin-ratelimit-count", str(min(used, RATE_LIMIT_ALLOWED)))
        response.headers.setdefault("inin-ratelimit-allowed", str(RATE_LIMIT_ALLOWED))
        response.headers.setdefault("inin-ratelimit-reset", "60")
        record.status = response.status
        if isinstance(response, web.HTTPException):
            return web.Response(status=response.status, body=response.body, headers=response.headers)
        return response

    def require_token(self, request: web.Request, scopes: Iterable[str] = (), permission: str | None = None) -> TokenGrant:
        """The grant behind the request's bearer token, or an HTTP error (401/403)."""
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise _http(401, "authentication.required", "No authentication bearer token specified in authorization header.")
        info = self.state.tokens.get(header[7:].strip())
        if info is None or info.expires_at <= time.time():
            raise _http(401, "bad.credentials", "Invalid login credentials.")
        wanted = tuple(scopes)
        if wanted and info.scopes is not None and not any(s in info.scopes for s in wanted):
            raise _http(403, "missing.any.scopes", f"Missing any scopes: {', '.join(wanted)}", messageParams={"scopes": ", ".join(wanted)})
        if permission and info.permissions is not None and permission not in info.permissions:
            raise _http(
                403,
                "missing.permissions",
                f"Unable to perform the requested action. You are missing the following permission(s): [{permission}]",
                messageWithParams="Unable to perform the requested action. You are missing the following permission(s): {permissions}",
                messageParams={"permissions": f"[{permission}]"},
            )
        return info

    # -- routes ---------------------------------------------------------------------------

    def _routes(self) -> None:
        r = self.app.router
        r.add_get("/oauth/authorize", self.authorize)
        r.add_post("/oauth/token", self.token)
        r.add_get("/api/v2/users/me", self.users_me)
        r.add_get("/api/v2/users", self.users_list)
        r.add_get("/api/v2/users/{userId}", self.user)
        r.add_get("/api/v2/users/{userId}/station", self.user_station)
        r.add_get("/api/v2/stations/{stationId}", self.station)
        r.add_get("/api/v2/telephony/providers/edges/phones", self.phones_list)
        r.add_get("/api/v2/telephony/providers/edges/phones/{phoneId}", self.phone)
        r.add_get("/api/v2/conversations/{conversationId}", self.conversation)
        r.add_get("/api/v2/conversations/calls/{conversationId}", self.call_conversation)
        r.add_patch("/api/v2/conversations/calls/{conversationId}/participants/{participantId}/attributes", self.participant_attributes)
        r.add_get("/api/v2/analytics/conversations/{conversationId}/details", self.analytics_details)
        r.add_post("/api/v2/analytics/conversations/details/query", self.analytics_query)
        r.add_post("/api/v2/analytics/conversations/details/jobs", self.analytics_job_create)
        r.add_get("/api/v2/analytics/conversations/details/jobs/{jobId}", self.analytics_job_status)
        r.add_get("/api/v2/analytics/conversations/details/jobs/{jobId}/results", self.analytics_job_results)
        r.add_get("/api/v2/diagnostics/webrtc/conversations/{conversationId}/participants/{participantId}", self.webrtc_diagnostics)
        r.add_get("/api/v2/diagnostics/logcapture/browser/users", self.logcapture_users)
        r.add_get("/api/v2/diagnostics/logcapture/browser/users/{userId}", self.logcapture_user)
        r.add_post("/api/v2/diagnostics/logcapture/browser/users/{userId}", self.logcapture_enable)
        r.add_delete("/api/v2/diagnostics/logcapture/browser/users/{userId}", self.logcapture_disable)
        r.add_post("/api/v2/diagnostics/logcapture/browser/entries/query", self.logcapture_query)
        r.add_get("/api/v2/integrations/{integrationId}", self.integration)

    # OAuth ----------------------------------------------------------------------------

    async def authorize(self, request: web.Request) -> web.StreamResponse:
        """The login page, approved at once: redirects back with ``code`` and ``state``."""
        q = request.query
        client = self.state.clients.get(q.get("client_id", ""))
        if client is None or "authorization_code" not in client.grants:
            return error_response(400, "invalid_client", "unknown client or grant not allowed")
        redirect_uri = q.get("redirect_uri", "")
        if not _redirect_allowed(redirect_uri, client.redirect_uris):
            return error_response(400, "invalid_request", "redirect_uri is not registered for this client")
        if q.get("response_type") != "code":
            return error_response(400, "invalid_request", "response_type=code is required")
        pkce = bool(q.get("code_challenge"))
        if (pkce or client.secret is None) and (q.get("code_challenge_method") != "S256" or not q.get("code_challenge")):
            # a public client proves itself with PKCE; a confidential one with its secret (PKCE optional)
            return error_response(400, "invalid_request", "an S256 code_challenge is required")
        code = secrets.token_urlsafe(16)
        self.state.auth_codes[code] = AuthCode(client.client_id, redirect_uri, q.get("code_challenge") or "", "S256", client.login_user_id, time.time() + 300)
        params = {"code": code}
        if "state" in q:
            params["state"] = q["state"]
        raise web.HTTPFound(f"{redirect_uri}?{urlencode(params)}")

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        grant = form.get("grant_type")
        if grant == "client_credentials":
            client = self._basic_client(request)
            if client is None or client.secret is None:
                return web.json_response({"error": "invalid_client", "error_description": "client authentication failed"}, status=401)
            if "client_credentials" not in client.grants:
                return web.json_response({"error": "unauthorized_client", "error_description": "grant not allowed"}, status=400)
            value, info = self.state.issue_token(client, "client_credentials", None)
            return web.json_response({"access_token": value, "token_type": "bearer", "expires_in": self.state.token_lifetime_s})
        if grant == "authorization_code":
            code = self.state.auth_codes.pop(str(form.get("code", "")), None)
            client, refused = self._code_client(request, form)
            if refused is not None:
                return refused
            if code is None or client is None or code.client_id != client.client_id or code.expires_at < time.time():
                return web.json_response({"error": "invalid_grant", "error_description": "unknown or expired code"}, status=400)
            if form.get("redirect_uri") != code.redirect_uri:
                return web.json_response({"error": "invalid_grant", "error_description": "redirect_uri mismatch"}, status=400)
            if code.challenge or client.secret is None:
                verifier = str(form.get("code_verifier", ""))
                digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                if not verifier or digest != code.challenge:
                    return web.json_response({"error": "invalid_grant", "error_description": "code_verifier does not match the code_challenge"}, status=400)
            value, info = self.state.issue_token(client, "authorization_code", code.user_id)
            answer = {"access_token": value, "token_type": "bearer", "expires_in": self.state.token_lifetime_s}
            if "refresh_token" in client.grants:  # a client without the refresh grant gets none
                answer["refresh_token"] = self.state.issue_refresh_token(info)
            return web.json_response(answer)
        if grant == "refresh_token":
            old = str(form.get("refresh_token", ""))
            info = self.state.refresh_tokens.get(old)
            client, refused = self._code_client(request, form)
            if refused is not None:
                return refused
            if info is None or client is None or info.client_id != client.client_id or "refresh_token" not in client.grants:
                return web.json_response({"error": "invalid_grant", "error_description": "invalid refresh token"}, status=400)
            value, new_info = self.state.issue_token(client, "refresh_token", info.user_id)
            refresh = old
            if self.state.rotate_refresh_tokens:
                del self.state.refresh_tokens[old]
                refresh = self.state.issue_refresh_token(new_info)
            return web.json_response({"access_token": value, "refresh_token": refresh, "token_type": "bearer", "expires_in": self.state.token_lifetime_s})
        return web.json_response({"error": "unsupported_grant_type"}, status=400)

    def _code_client(self, request: web.Request, form: Any) -> tuple[OAuthClient | None, web.Response | None]:
        """The client of a code or refresh grant: a confidential one must authenticate
        with HTTP Basic (its secret); a public one names itself with ``client_id``."""
        if request.headers.get("Authorization", "").startswith("Basic "):
            client = self._basic_client(request)
            if client is None:
                return None, web.json_response({"error": "invalid_client", "error_description": "client authentication failed"}, status=401)
            return client, None
        client = self.state.clients.get(str(form.get("client_id", "")))
        if client is not None and client.secret is not None:
            return None, web.json_response({"error": "invalid_client", "error_description": "client authentication required"}, status=401)
        return client, None

    def _basic_client(self, request: web.Request) -> OAuthClient | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None
        try:
            client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return None
        client = self.state.clients.get(client_id)
        if client is None or client.secret is None or not secrets.compare_digest(client.secret, secret):
            return None
        return client

    # users, stations, phones ---------------------------------------------------------

    async def users_me(self, request: web.Request) -> web.Response:
        info = self.require_token(request)
        if info.user_id is None:
            return error_response(400, "bad.request", "This request requires a user context. Client credentials cannot be used for requests to this resource.")
        return web.json_response(self._user(info.user_id))

    async def users_list(self, request: web.Request) -> web.Response:
        self.require_token(request, ("users:readonly",), "directory:user:view")
        return web.json_response(self._page(request, list(self.state.users.values())))

    async def user(self, request: web.Request) -> web.Response:
        self.require_token(request, ("users:readonly",), "directory:user:view")
        return web.json_response(self._user(request.match_info["userId"]))

    def _user(self, user_id: str) -> dict[str, Any]:
        user = self.state.users.get(user_id)
        if user is None:
            raise _http(404, "not.found", f"user {user_id} not found")
        return user

    async def user_station(self, request: web.Request) -> web.Response:
        self.require_token(request, ("users:readonly", "stations:readonly"), "telephony:station:view")
        found = self.state.user_stations.get(request.match_info["userId"])
        if found is None:
            return error_response(404, "not.found", "no station for this user")
        return web.json_response(found)

    async def station(self, request: web.Request) -> web.Response:
        self.require_token(request, ("stations:readonly",), "telephony:station:view")
        found = self.state.stations.get(request.match_info["stationId"])
        return web.json_response(found) if found else error_response(404, "not.found", "station not found")

    async def phones_list(self, request: web.Request) -> web.Response:
        self.require_token(request, ("telephony:readonly",), "telephony:plugin:all")
        phones = list(self.state.phones.values())
        wanted = request.query.get("webRtcUser.id")
        if wanted:
            phones = [p for p in phones if (p.get("webRtcUser") or {}).get("id") == wanted]
        expand = request.query.get("expand", "")
        if "status" not in expand:
            phones = [{k: v for k, v in p.items() if k != "status"} for p in phones]
        return web.json_response(self._page(request, phones))

    async def phone(self, request: web.Request) -> web.Response:
        self.require_token(request, ("telephony:readonly",), "telephony:plugin:all")
        found = self.state.phones.get(request.match_info["phoneId"])
        return web.json_response(found) if found else error_response(404, "not.found", "phone not found")

    def _page(self, request: web.Request, entities: list[Any]) -> dict[str, Any]:
        try:
            size = max(1, min(int(request.query.get("pageSize", "25")), self.state.max_page_size))
            number = max(1, int(request.query.get("pageNumber", "1")))
        except ValueError:
            raise _http(400, "bad.request", "pageSize and pageNumber must be integers") from None
        count = max(1, -(-len(entities) // size))
        return {
            "entities": entities[(number - 1) * size : number * size],
            "pageSize": size,
            "pageNumber": number,
            "total": len(entities),
            "pageCount": count,
        }

    # conversations and analytics -----------------------------------------------------

    async def conversation(self, request: web.Request) -> web.Response:
        self.require_token(request, ("conversations", "conversations:readonly"), "conversation:communication:view")
        found = self.state.conversations.get(request.match_info["conversationId"])
        return web.json_response(found) if found else error_response(404, "not.found", "conversation not found")

    async def call_conversation(self, request: web.Request) -> web.Response:
        self.require_token(request, ("conversations", "conversations:readonly"), "conversation:communication:view")
        found = self.state.conversations.get(request.match_info["conversationId"])
        if not found:
            return error_response(404, "not.found", "conversation not found")
        return web.json_response(call_conversation_view(found))

    async def participant_attributes(self, request: web.Request) -> web.Response:
        """PATCH a participant's attributes (ParticipantAttributes: ``{"attributes": {str: str}}``), merged."""
        self.require_token(request, ("conversations",), "conversation:communication:view")
        participant = self.state.participant(request.match_info["conversationId"], request.match_info["participantId"])
        if participant is None:
            return error_response(404, "not.found", "participant not found")
        body = await _json_body(request)
        attributes = body.get("attributes") if isinstance(body, dict) else None
        if not isinstance(attributes, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()):
            return error_response(400, "bad.request", "attributes must be an object of strings")
        participant.setdefault("attributes", {}).update(attributes)
        return web.json_response({"attributes": participant["attributes"]})

    async def analytics_details(self, request: web.Request) -> web.Response:
        self.require_token(request, ("analytics:readonly",), "analytics:conversationDetail:view")
        found = self.state.analytics.get(request.match_info["conversationId"])
        return web.json_response(found) if found else error_response(404, "not.found", "conversation details not found")

    async def analytics_query(self, request: web.Request) -> web.Response:
        self.require_token(request, ("analytics:readonly",), "analytics:conversationDetail:view")
        body = await _json_body(request)
        matches = self._query(body)
        paging = body.get("paging") or {}
        size = max(1, min(int(paging.get("pageSize", 25)), self.state.max_page_size))
        number = max(1, int(paging.get("pageNumber", 1)))
        page = matches[(number - 1) * size : number * size]
        answer: dict[str, Any] = {"totalHits": len(matches)}
        if page:  # the real API leaves "conversations" out when there are none
            answer["conversations"] = page
        return web.json_response(answer)

    def _query(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        start, end = _interval(body.get("interval"))
        result = []
        for conversation in self.state.analytics.values():
            began = _parse(conversation["conversationStart"])
            if not (start <= began < end):
                continue
            if _matches_filters(conversation, body):
                result.append(conversation)
        reverse = body.get("order") == "desc"
        result.sort(key=lambda c: c["conversationStart"], reverse=reverse)
        return result

    async def analytics_job_create(self, request: web.Request) -> web.Response:
        self.require_token(request, ("analytics:readonly",), "analytics:conversationDetail:view")
        body = await _json_body(request)
        job_id = str(uuid.uuid4())
        self.state.jobs[job_id] = {"results": self._query(body), "polls": 0}
        return web.json_response({"jobId": job_id}, status=202)

    async def analytics_job_status(self, request: web.Request) -> web.Response:
        self.require_token(request, ("analytics:readonly",), "analytics:conversationDetail:view")
        job = self.state.jobs.get(request.match_info["jobId"])
        if job is None:
            return error_response(404, "not.found", "job not found")
        job["polls"] += 1
        now = datetime.now(timezone.utc)
        state = "PENDING" if job["polls"] == 1 else "FULFILLED"  # one poll sees it still running
        return web.json_response({"state": state, "submissionDate": _iso(now), "expirationDate": _iso(now + timedelta(days=1))})

    async def analytics_job_results(self, request: web.Request) -> web.Response:
        self.require_token(request, ("analytics:readonly",), "analytics:conversationDetail:view")
        job = self.state.jobs.get(request.match_info["jobId"])
        if job is None:
            return error_response(404, "not.found", "job not found")
        try:
            offset = int(request.query.get("cursor", "0"))
        except ValueError:
            return error_response(400, "bad.request", "invalid cursor")
        size = self.state.job_page_size
        page = job["results"][offset : offset + size]
        answer: dict[str, Any] = {"conversations": page, "dataAvailabilityDate": _iso(datetime.now(timezone.utc))}
        if offset + size < len(job["results"]):
            answer["cursor"] = str(offset + size)
        return web.json_response(answer)

    # diagnostics ----------------------------------------------------------------------

    async def webrtc_diagnostics(self, request: web.Request) -> web.Response:
        self.require_token(request, ("diagnostics", "diagnostics:readonly"))
        key = (request.match_info["conversationId"], request.match_info["participantId"])
        found = self.state.webrtc_diagnostics.get(key)
        return web.json_response(found) if found else error_response(404, "not.found", "The requested resource was not found.")

    async def logcapture_users(self, request: web.Request) -> web.Response:
        self.require_token(request, ("diagnostics", "diagnostics:readonly"), "diagnostics:logCapture:view")
        return web.json_response({"entities": [c for c in self.state.logcapture.values() if _capture_active(c)]})

    async def logcapture_user(self, request: web.Request) -> web.Response:
        self.require_token(request, ("diagnostics", "diagnostics:readonly"), "diagnostics:logCapture:view")
        found = self.state.logcapture.get(request.match_info["userId"])
        if found is None or not _capture_active(found):
            return error_response(404, "not.found", "log capture is not enabled for this user")
        return web.json_response(found)

    async def logcapture_enable(self, request: web.Request) -> web.Response:
        self.require_token(request, ("diagnostics",), "diagnostics:logCapture:edit")
        user_id = request.match_info["userId"]
        body = await _json_body(request, allow_empty=True)
        now = datetime.now(timezone.utc)
        expires = _parse(body["dateExpired"]) if isinstance(body.get("dateExpired"), str) else now + timedelta(hours=24)
        if expires - now > timedelta(hours=24, minutes=1):
            return error_response(400, "bad.request", "dateExpired must be at most 24 hours from now")
        config = {
            "id": user_id,
            "dateStarted": _iso(now),
            "dateExpired": _iso(expires),
            "captureMethod": "OnDemand",
            "selfUri": f"/api/v2/diagnostics/logcapture/browser/users/{user_id}",
        }
        self.state.logcapture[user_id] = config
        return web.json_response(config)

    async def logcapture_disable(self, request: web.Request) -> web.Response:
        self.require_token(request, ("diagnostics",), "diagnostics:logCapture:edit")
        self.state.logcapture.pop(request.match_info["userId"], None)
        return web.Response(status=204)

    async def logcapture_query(self, request: web.Request) -> web.Response:
        self.require_token(request, ("diagnostics", "diagnostics:readonly"), "diagnostics:logCapture:view")
        body = await _json_body(request)
        start, end = _interval(body.get("interval"))
        user_id = body.get("userId")
        lo, hi = start.timestamp() * 1000, end.timestamp() * 1000
        entries = [
            e
            for uid, items in self.state.log_entries.items()
            if user_id in (None, uid)
            for e in items
            if lo <= e["timestamp"] < hi
        ]
        entries.sort(key=lambda e: e["timestamp"], reverse=body.get("sortOrder") == "DESC")
        # paged as the real API: ?pageSize (at most 200) and ?after (an opaque cursor), the
        # next page linked by nextUri; the fake's log_page_size caps a page (tests see several)
        try:
            size = int(request.query.get("pageSize", "100"))
            offset = _cursor_offset(request.query["after"]) if "after" in request.query else 0
        except ValueError:
            return error_response(400, "bad.request", "pageSize must be an integer and after a cursor this API handed out")
        if not 1 <= size <= 200:
            return error_response(400, "bad.request", "pageSize must be between 1 and 200")
        size = min(size, self.state.log_page_size)
        base = "/api/v2/diagnostics/logcapture/browser/entries/query"
        answer: dict[str, Any] = {"entities": entries[offset : offset + size], "selfUri": f"{base}?pageSize={size}"}
        if offset + size < len(entries):
            answer["nextUri"] = f"{base}?after={_cursor(offset + size)}&pageSize={size}"
        return web.json_response(answer)

    async def integration(self, request: web.Request) -> web.Response:
        self.require_token(request, ("integrations:readonly",), "integrations:integration:view")
        found = self.state.integrations.get(request.match_info["integrationId"])
        return web.json_response(found) if found else error_response(404, "not.found", "integration not found")


# -- helpers ------------------------------------------------------------------------------


def _http(status: int, code: str, message: str, **extra: Any) -> web.HTTPException:
    cls = {400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 403: web.HTTPForbidden, 404: web.HTTPNotFound}[status]
    return cls(text=json.dumps(error_json(status, code, message, **extra)), content_type="application/json")


def _code_for(status: int) -> str:
    return {429: "too.many.requests", 500: "internal.server.error", 501: "not.implemented", 502: "bad.gateway", 503: "service.unavailable", 504: "gateway.timeout"}.get(status, "error")


async def _json_body(request: web.Request, *, allow_empty: bool = False) -> dict[str, Any]:
    raw = await request.read()
    if not raw and allow_empty:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise _http(400, "bad.request", "The request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _http(400, "bad.request", "The request body must be a JSON object")
    return body


def _redirect_allowed(uri: str, registered: Iterable[str]) -> bool:
    """Exact match, or a registered ``http://127.0.0.1:*/path`` for any loopback port (tests)."""
    parts = urlsplit(uri)
    for allowed in registered:
        if uri == allowed:
            return True
        if ":*/" in allowed:
            want = urlsplit(allowed.replace(":*/", ":1/"))
            if (parts.scheme, parts.hostname, parts.path) == (want.scheme, want.hostname, want.path) and parts.port:
                return True
    return False


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).rstrip(b"=").decode()


def _cursor_offset(cursor: str) -> int:
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))["o"]
    except (ValueError, KeyError, TypeError):
        raise ValueError("not a cursor") from None
    if not isinstance(value, int) or value < 0:
        raise ValueError("not a cursor")
    return value


def _capture_active(config: dict[str, Any]) -> bool:
    return _parse(config["dateExpired"]) > datetime.now(timezone.utc)


def _predicate_matches(conversation: dict[str, Any], predicate: dict[str, Any]) -> bool:
    dimension = predicate.get("dimension")
    value = predicate.get("value")
    rng = predicate.get("range") or {}
    if dimension in ("userId", "queueId", "mediaType", "purpose"):
        for participant in conversation.get("participants", ()):
            if dimension in ("userId", "purpose") and participant.get(dimension) == value:
                return True
            for session in participant.get("sessions", ()):
                if dimension == "mediaType" and session.get("mediaType") == value:
                    return True
                if dimension == "queueId" and any(s.get("queueId") == value for s in session.get("segments", ())):
                    return True
        return False
    field = conversation.get(dimension) if dimension else None
    if rng:
        if not isinstance(field, (int, float)):
            return False
        return all(
            (op != "lt" or field < bound) and (op != "lte" or field <= bound) and (op != "gt" or field > bound) and (op != "gte" or field >= bound)
            for op, bound in rng.items()
        )
    return value is None or field == value


def _filter_matches(conversation: dict[str, Any], spec: dict[str, Any]) -> bool:
    combine = all if spec.get("type", "and") == "and" else any
    parts = [_predicate_matches(conversation, p) for p in spec.get("predicates", ())]
    parts += [_filter_matches(conversation, c) for c in spec.get("clauses", ())]
    return combine(parts) if parts else True


def _matches_filters(conversation: dict[str, Any], body: dict[str, Any]) -> bool:
    filters = list(body.get("conversationFilters") or ()) + list(body.get("segmentFilters") or ())
    return all(_filter_matches(conversation, f) for f in filters)


def call_conversation_view(conversation: dict[str, Any]) -> dict[str, Any]:
    """``GET /api/v2/conversations/calls/{id}``: a CallConversation with CallMediaParticipants."""
    participants = []
    for p in conversation.get("participants", ()):
        call = (p.get("calls") or [{}])[0]
        participants.append(
            {
                "id": p.get("id"),
                "name": p.get("name"),
                "address": p.get("address"),
                "startTime": p.get("startTime"),
                "connectedTime": call.get("connectedTime") or p.get("connectedTime"),
                "endTime": p.get("endTime"),
                "purpose": p.get("purpose"),
                "state": call.get("state"),
                "direction": call.get("direction"),
                "disconnectType": call.get("disconnectType"),
                "muted": bool(call.get("muted")),
                "held": bool(call.get("held")),
                "user": {"id": p["userId"]} if p.get("userId") else None,
                "queue": {"id": p["queueId"]} if p.get("queueId") else None,
            }
        )
        participants[-1] = without_nulls(participants[-1])
    return {
        "id": conversation["id"],
        "participants": participants,
        "recordingState": "none",
        "selfUri": f"/api/v2/conversations/calls/{conversation['id']}",
    }
