"""The Genesys Cloud Platform API client: one async httpx client per process and loop.

What every call gets:
- a bearer token from :class:`~.tokens.TokenManager` (client credentials or the stored
  ``agentd login``), refreshed before it expires; a 401 refreshes once, then
  :class:`AuthError`;
- the install's stable ``X-Genesys-Client-Id`` (seed 001);
- a deadline (``[genesys] timeout_s``) on each attempt;
- 429: wait ``Retry-After`` and try again, giving up when the wait would pass the retry
  budget (180 s, like the official SDKs); 5xx except 501 and transport errors of
  idempotent calls: retried with jittered exponential backoff;
- failures mapped to the :class:`agentd.errors.GenesysError` subtree, with the
  ``ININ-Correlation-Id`` of the response logged and kept on the error;
- no token, secret or Authorization header in logs or exception text;
- bounds on what comes back: the body is read streamed and refused past
  ``max_response_bytes`` (:data:`MAX_RESPONSE_BYTES` unless the call says otherwise),
  the whole read of one attempt has the call's deadline (a server dribbling bytes
  cannot hold it), JSON nested deeper than :data:`MAX_JSON_DEPTH` is refused before it
  is parsed, and a 3xx is an error naming the redirect and its target (the API does not
  redirect; a proxy or a captive portal does), unless the call expects a redirect
  within the API's own origin. Each of these errors names the request.

``request`` / ``get`` / ``post`` / ``patch`` / ``put`` / ``delete`` return the decoded JSON
body (``None`` for an empty body). ``pages`` follows ``pageNumber``/``pageCount``;
``cursor_pages`` follows the ``cursor`` of async analytics jobs; ``next_uri_pages``
follows ``nextUri``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import operator
import random
import re
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Mapping
from urllib.parse import urljoin, urlsplit

import httpx
import structlog

from agentd import paths
from agentd.errors import (
    AuthError,
    Conflict,
    GenesysError,
    MalformedResponse,
    NotFound,
    PermissionMissing,
    RateLimited,
    ServerError,
    TransportError,
)
from agentd.redact import redact_text, register_secret
from agentd.tls import http_verify

from .settings import GenesysSettings
from .tokens import AccessToken, LoginTokenManager, StoredLogin, TokenManager, TokenStore, parse_token_response

log = structlog.get_logger("agentd.genesys.client")

USER_AGENT = "agentd (+Genesys Cloud softphone diagnostics)"
RATE_LIMIT_HEADERS = ("inin-ratelimit-count", "inin-ratelimit-allowed", "inin-ratelimit-reset")
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
# POST endpoints that only read (queries): retrying them after a transport error is safe.
_READ_ONLY_POSTS = re.compile(r"/(query|entries/query)$")
_BACKOFF_BASE_S = 0.5
_BACKOFF_CAP_S = 10.0
_DEFAULT_RETRY_AFTER_S = 3.0
_MAX_429_RETRIES = 50  # a 429 storm is bounded by the retry budget; this bounds the count
_MAX_PAGES = 1000  # a bound on every paging loop, whatever the server says
MAX_RESPONSE_BYTES = 16 * 2**20
"""The largest answer read (a page of 100 analytics conversations is well under 2 MB)."""
MAX_JSON_DEPTH = 64
"""Genesys answers nest a dozen levels; deeper is a broken or hostile answer."""
_MAX_REDIRECTS = 3
_PERMISSION = re.compile(r"\b[a-zA-Z]+:[a-zA-Z*]+(?::[a-zA-Z*]+)?\b")


@dataclass(frozen=True)
class RateLimitInfo:
    """The ``inin-ratelimit-*`` headers of the last response that had them."""

    count: int | None
    allowed: int | None
    reset_s: float | None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def error_body(response: httpx.Response) -> dict[str, Any]:
    """The Genesys ``ErrorBody`` (``message``, ``code``, ``status``, ``messageParams``) or {}."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def missing_permission(body: Mapping[str, Any]) -> str | None:
    """The permission (or scope) a 403 body names, e.g. ``analytics:conversationDetail:view``."""
    texts: list[str] = []
    params = body.get("messageParams")
    if isinstance(params, Mapping):
        texts.extend(str(v) for v in params.values())
    for key in ("messageWithParams", "message"):
        if isinstance(body.get(key), str):
            texts.append(body[key])
    for nested in body.get("errors") or ():
        if isinstance(nested, Mapping) and isinstance(nested.get("message"), str):
            texts.append(nested["message"])
    for text in texts:
        found = _PERMISSION.findall(text)
        if found:
            return ", ".join(dict.fromkeys(found))
    return None


class GenesysClient:
    """Talks to one Genesys Cloud organisation. Create with :func:`shared_client`."""

    def __init__(
        self,
        settings: GenesysSettings,
        *,
        tokens: TokenManager | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.client_id_header = paths.install_id()
        verify: Any = http_verify(settings.ca_file)
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.timeout_s),
            verify=verify,
            transport=transport,
            # only encodings _decompress undoes under the size cap
            headers={"User-Agent": USER_AGENT, "X-Genesys-Client-Id": self.client_id_header, "Accept-Encoding": "gzip, deflate"},
            follow_redirects=False,
        )
        self.tokens = tokens or token_manager(settings, self)
        self.rate_limit: RateLimitInfo | None = None
        self.retries = 0  # how many times a call was tried again (for tests and benchmarks)
        self.backoff_base_s = _BACKOFF_BASE_S

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> GenesysClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the one way in -----------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        timeout_s: float | None = None,
        expected_statuses: tuple[int, ...] = (),
        max_response_bytes: int | None = None,
        follow_same_origin_redirect: bool = False,
    ) -> Any:
        """Call ``path`` (``/api/v2/...`` on the API host, or an absolute URL there).

        ``expected_statuses``: failures the caller handles as an ordinary answer (a 404 of
        an optional endpoint); they are still raised, but logged at debug level only.
        ``max_response_bytes``: a larger answer is refused (MalformedResponse naming the
        request and the cap). ``follow_same_origin_redirect``: a 3xx to the same scheme,
        host and port is followed (at most three); any other 3xx is an error.
        """
        method = method.upper()
        url = path if path.startswith("http") else f"{self.settings.api_base}{path}"
        cap = max_response_bytes or MAX_RESPONSE_BYTES
        budget_ends = time.monotonic() + self.settings.retry_budget_s
        refreshed = False
        attempt = 0
        redirects = 0
        token = await self.tokens.token()
        while True:
            attempt += 1
            try:
                response = await self._send(
                    method, url, path, cap,
                    params=_clean_params(params),
                    json=json_body,
                    headers={"Authorization": f"Bearer {token.value}"},
                    timeout=timeout_s or self.settings.timeout_s,
                )
            except httpx.HTTPError as exc:
                error = TransportError(
                    f"{method} {_short(path)}: {_transport_reason(exc)}", path=_short(path)
                )
                if (method in IDEMPOTENT or _READ_ONLY_POSTS.search(url)) and attempt <= self.settings.max_retries:
                    wait = _backoff(attempt, self.backoff_base_s)
                    if time.monotonic() + wait < budget_ends:
                        log.info("API call failed, retrying", method=method, path=_short(path), reason=_transport_reason(exc), wait_s=round(wait, 2))
                        self.retries += 1
                        await asyncio.sleep(wait)
                        continue
                raise error from None
            self._note_rate_limit(response)
            status = response.status_code
            if 300 <= status < 400:
                target = _redirect_target(response, url)
                if follow_same_origin_redirect and target and _same_origin(target, url) and redirects < _MAX_REDIRECTS:
                    redirects += 1
                    url = target
                    continue
                raise _redirect_error(response, method, path, target)
            if status < 400:
                return _decode(response, method, path)
            correlation = response.headers.get("ININ-Correlation-Id")
            (log.debug if status in expected_statuses else log.warning)(
                "API call failed",
                method=method,
                path=_short(path),
                status=status,
                correlation_id=correlation,
                code=error_body(response).get("code"),
                **{h.replace("-", "_"): response.headers.get(h) for h in RATE_LIMIT_HEADERS if h in response.headers},
            )
            if status == 401 and not refreshed:
                refreshed = True
                token = await self.tokens.refresh(stale=token)
                continue
            if status == 429 and attempt <= _MAX_429_RETRIES:  # bounded by the time budget too
                wait = _float(response.headers.get("Retry-After"))
                wait = _DEFAULT_RETRY_AFTER_S if wait is None or wait < 0 else wait
                if time.monotonic() + wait < budget_ends:
                    self.retries += 1
                    await asyncio.sleep(wait)
                    continue
            if status >= 500 and status != 501 and attempt <= self.settings.max_retries:
                wait = _backoff(attempt, self.backoff_base_s)
                if time.monotonic() + wait < budget_ends:
                    self.retries += 1
                    await asyncio.sleep(wait)
                    continue
            raise _error_for(response, method, path)

    async def _send(self, method: str, url: str, path: str, cap: int, *, timeout: float, **kw: Any) -> httpx.Response:
        """One attempt, its body read streamed under ``cap`` bytes and within ``timeout`` in all."""
        request = self.http.build_request(method, url, timeout=timeout, **kw)
        try:
            async with asyncio.timeout(timeout):
                response = await self.http.send(request, stream=True)
                try:
                    declared = _int(response.headers.get("Content-Length"))
                    if declared is not None and declared > cap:
                        raise _too_large(response, method, path, cap, f"it announces {declared} bytes")
                    chunks, size = [], 0
                    async for chunk in response.aiter_raw():
                        size += len(chunk)
                        if size > cap:
                            raise _too_large(response, method, path, cap, f"more than {cap} bytes arrived")
                        chunks.append(chunk)
                finally:
                    await response.aclose()
        except TimeoutError:
            raise httpx.ReadTimeout(f"the whole answer did not arrive within {timeout:g} s", request=request) from None
        body = b"".join(chunks)
        # a plain response holding the bytes as they came: the callers' .json()/.content work as before
        content = _decompress(response, body, method, path, cap)
        return httpx.Response(response.status_code, headers=_plain_headers(response.headers), content=content, request=request)

    async def get(self, path: str, **kw: Any) -> Any:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, json_body: Any = None, **kw: Any) -> Any:
        return await self.request("POST", path, json_body=json_body, **kw)

    async def patch(self, path: str, json_body: Any = None, **kw: Any) -> Any:
        return await self.request("PATCH", path, json_body=json_body, **kw)

    async def put(self, path: str, json_body: Any = None, **kw: Any) -> Any:
        return await self.request("PUT", path, json_body=json_body, **kw)

    async def delete(self, path: str, **kw: Any) -> Any:
        return await self.request("DELETE", path, **kw)

    # -- paging --------------------------------------------------------------------------

    async def pages(self, path: str, *, params: Mapping[str, Any] | None = None, page_size: int = 100, items: str = "entities") -> AsyncIterator[list[Any]]:
        """Each page's ``items`` of a GET listing with ``pageNumber``/``pageSize``/``pageCount``."""
        page = 1
        while page <= _MAX_PAGES:
            body = await self.get(path, params={**(params or {}), "pageSize": page_size, "pageNumber": page})
            entries = _list_field(body, items, path)
            yield entries
            count = body.get("pageCount") if isinstance(body, dict) else None
            if not entries or (isinstance(count, int) and page >= count) or (count is None and len(entries) < page_size):
                return
            page += 1

    async def query_pages(self, path: str, body: Mapping[str, Any], *, page_size: int = 100, items: str = "conversations") -> AsyncIterator[list[Any]]:
        """Each page of a POST query whose body carries ``paging: {pageSize, pageNumber}``
        and whose answer carries ``totalHits`` (analytics details query)."""
        seen = 0
        page = 1
        while page <= _MAX_PAGES:
            answer = await self.post(path, {**body, "paging": {"pageSize": page_size, "pageNumber": page}})
            entries = _list_field(answer, items, path, missing_ok=True)
            yield entries
            seen += len(entries)
            total = answer.get("totalHits") if isinstance(answer, dict) else None
            if not entries or len(entries) < page_size or (isinstance(total, int) and seen >= total):
                return
            page += 1

    async def cursor_pages(self, path: str, *, params: Mapping[str, Any] | None = None, items: str = "conversations") -> AsyncIterator[list[Any]]:
        """Each page of an async job's results, following ``cursor`` until there is none."""
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            body = await self.get(path, params={**(params or {}), **({"cursor": cursor} if cursor else {})})
            yield _list_field(body, items, path, missing_ok=True)
            cursor = body.get("cursor") if isinstance(body, dict) else None
            if not cursor:
                return

    async def next_uri_pages(self, method: str, path: str, *, json_body: Any = None, items: str = "entities") -> AsyncIterator[list[Any]]:
        """Each page of a listing that links the next one with ``nextUri`` (log capture)."""
        target: str | None = path
        seen: set[str] = set()
        for _ in range(_MAX_PAGES):
            if target is None or target in seen:
                return
            seen.add(target)
            body = await self.request(method, target, json_body=json_body)
            yield _list_field(body, items, path, missing_ok=True)
            nxt = body.get("nextUri") if isinstance(body, dict) else None
            target = nxt if isinstance(nxt, str) and nxt else None

    # -- helpers -------------------------------------------------------------------------

    def _note_rate_limit(self, response: httpx.Response) -> None:
        headers = response.headers
        if any(h in headers for h in RATE_LIMIT_HEADERS):
            self.rate_limit = RateLimitInfo(
                count=_int(headers.get("inin-ratelimit-count")),
                allowed=_int(headers.get("inin-ratelimit-allowed")),
                reset_s=_float(headers.get("inin-ratelimit-reset")),
            )

    async def token_request(self, form: Mapping[str, str], *, basic: tuple[str, str] | None = None, grant: str) -> AccessToken:
        """``POST {login}/oauth/token`` (form-encoded). Failures become AuthError / TransportError."""
        url = f"{self.settings.login_base}/oauth/token"
        for attempt in range(1, self.settings.max_retries + 2):
            try:
                response = await self.http.post(url, data=dict(form), auth=basic, timeout=self.settings.timeout_s)
            except httpx.HTTPError as exc:
                raise TransportError(f"POST /oauth/token: {_transport_reason(exc)}", path="/oauth/token") from None
            if response.status_code == 429 or (response.status_code >= 500 and response.status_code != 501):
                wait = _float(response.headers.get("Retry-After")) if response.status_code == 429 else None
                wait = _backoff(attempt, self.backoff_base_s) if wait is None else wait
                if attempt <= self.settings.max_retries and wait < self.settings.retry_budget_s:
                    self.retries += 1
                    await asyncio.sleep(wait)
                    continue
            break
        correlation = response.headers.get("ININ-Correlation-Id")
        if response.status_code >= 400:
            body = error_body(response)
            reason = body.get("error_description") or body.get("error") or body.get("message") or response.reason_phrase
            log.warning("OAuth token request refused", grant=grant, status=response.status_code, correlation_id=correlation, reason=redact_text(str(reason)))
            raise AuthError(
                f"Genesys Cloud login ({grant}) refused with HTTP {response.status_code}: {redact_text(str(reason))}",
                status=response.status_code,
                correlation_id=correlation,
                path="/oauth/token",
                grant=grant,
            )
        try:
            payload = response.json()
        except ValueError:
            raise MalformedResponse("the OAuth token response is not JSON", path="/oauth/token", correlation_id=correlation) from None
        return parse_token_response(payload, grant)


# -- mapping responses -----------------------------------------------------------------


def _clean_params(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not params:
        return None
    return {k: v for k, v in params.items() if v is not None}


def _short(path: str) -> str:
    """The path without host or query, for messages (queries may carry ids, never secrets)."""
    path = re.sub(r"^https?://[^/]+", "", path)
    return path.split("?", 1)[0]


def _transport_reason(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer in time ({type(exc).__name__})"
    text = str(exc) or type(exc).__name__
    return redact_text(text)


def _backoff(attempt: int, base_s: float = _BACKOFF_BASE_S) -> float:
    # jitter: many agents retrying together must not stay in step
    return random.uniform(0.5, 1.0) * min(_BACKOFF_CAP_S, base_s * (2 ** (attempt - 1)))


def _decode(response: httpx.Response, method: str, path: str) -> Any:
    if response.status_code == 204 or not response.content:
        return None
    correlation = response.headers.get("ININ-Correlation-Id")
    depth = json_depth(response.content)
    if depth > MAX_JSON_DEPTH:
        log.warning("API answer nested too deeply", method=method, path=_short(path), depth=depth, correlation_id=correlation)
        raise MalformedResponse(
            f"{method} {_short(path)}: HTTP {response.status_code} answer is JSON nested {depth} levels deep "
            f"(more than {MAX_JSON_DEPTH}); refused",
            status=response.status_code, correlation_id=correlation, path=_short(path),
        )
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError, RecursionError):
        kind = (response.headers.get("Content-Type") or "no content type").split(";")[0].strip()
        hint = " (an HTML page: a proxy, captive portal or login page answered)" if "html" in kind else ""
        log.warning("API answer is not JSON", method=method, path=_short(path), status=response.status_code, content_type=kind, correlation_id=correlation)
        raise MalformedResponse(
            f"{method} {_short(path)}: HTTP {response.status_code} answer is not JSON ({kind}){hint}",
            status=response.status_code,
            correlation_id=correlation,
            path=_short(path),
        ) from None


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKETS = bytes(range(256)).translate(None, b"[]{}")
_STEP = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")


def json_depth(raw: bytes) -> int:
    """How deep ``raw`` nests arrays and objects, without parsing it (no recursion, C speed)."""
    if b"[" not in raw and b"{" not in raw:
        return 0
    marks = _JSON_STRING.sub(b'""', raw).translate(None, _BRACKETS).translate(_STEP)
    # each opening bracket is 2 and each closing one 0: depth after mark i is sum - (i + 1)
    return max(0, max(map(operator.sub, itertools.accumulate(marks), itertools.count(1)), default=0))


def _too_large(response: httpx.Response, method: str, path: str, cap: int, what: str) -> MalformedResponse:
    correlation = response.headers.get("ININ-Correlation-Id")
    log.warning("API answer too large; refused", method=method, path=_short(path), cap_bytes=cap, correlation_id=correlation)
    return MalformedResponse(
        f"{method} {_short(path)}: HTTP {response.status_code} answer larger than the {cap // 2**20} MiB cap ({what}); refused",
        status=response.status_code, correlation_id=correlation, path=_short(path),
    )


def _decompress(response: httpx.Response, raw: bytes, method: str, path: str, cap: int) -> bytes:
    """The body as the server meant it (gzip/deflate/br undone), still under ``cap``."""
    encoding = (response.headers.get("Content-Encoding") or "").strip().lower()
    if not encoding or encoding == "identity":
        return raw
    import zlib

    if encoding in ("gzip", "x-gzip", "deflate"):
        wbits = 16 + zlib.MAX_WBITS if "gzip" in encoding else zlib.MAX_WBITS
        inflater = zlib.decompressobj(wbits)
        try:
            body = inflater.decompress(raw, cap + 1)  # a zip bomb stops at the cap
        except zlib.error:
            raise MalformedResponse(f"{method} {_short(path)}: the {encoding} answer does not decompress", path=_short(path)) from None
        if len(body) > cap or inflater.unconsumed_tail:
            raise _too_large(response, method, path, cap, "decompressed")
        return body
    raise MalformedResponse(f"{method} {_short(path)}: answer in an unsupported encoding {encoding!r}", path=_short(path))


def _plain_headers(headers: httpx.Headers) -> list[tuple[str, str]]:
    """The headers without those that described the bytes on the wire (now decoded)."""
    return [(k, v) for k, v in headers.multi_items() if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")]


def _redirect_target(response: httpx.Response, url: str) -> str | None:
    location = response.headers.get("Location")
    return urljoin(url, location) if location else None


def _same_origin(a: str, b: str) -> bool:
    x, y = urlsplit(a), urlsplit(b)
    return (x.scheme, x.hostname, x.port) == (y.scheme, y.hostname, y.port)


def _redirect_error(response: httpx.Response, method: str, path: str, target: str | None) -> GenesysError:
    correlation = response.headers.get("ININ-Correlation-Id")
    shown = _short_url(target) if target else "no Location"
    log.warning("API call redirected", method=method, path=_short(path), status=response.status_code, to=shown)
    return MalformedResponse(
        f"{method} {_short(path)}: HTTP {response.status_code} redirect to {shown}; the Genesys Cloud API does not "
        "redirect (a proxy or captive portal, or a wrong api_base_url?)",
        status=response.status_code, correlation_id=correlation, path=_short(path),
    )


def _short_url(url: str) -> str:
    """scheme://host[:port]/path of a URL, for messages: no query, no user:password."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


def _list_field(body: Any, key: str, path: str, *, missing_ok: bool = False) -> list[Any]:
    if not isinstance(body, dict):
        raise MalformedResponse(f"{_short(path)}: expected a JSON object, got {type(body).__name__}", path=_short(path))
    value = body.get(key)
    if value is None and missing_ok:
        return []
    if not isinstance(value, list):
        raise MalformedResponse(f"{_short(path)}: {key!r} is not a list", path=_short(path))
    return value


def _error_for(response: httpx.Response, method: str, path: str) -> GenesysError:
    status = response.status_code
    body = error_body(response)
    correlation = response.headers.get("ININ-Correlation-Id")
    where = f"{method} {_short(path)}"
    message = redact_text(str(body.get("message") or response.reason_phrase or "error"))[:300]
    kw = {"status": status, "correlation_id": correlation, "path": _short(path)}
    if status == 401:
        return AuthError(f"{where}: HTTP 401 after a token refresh: {message}", **kw)
    if status == 403:
        permission = missing_permission(body)
        named = f" (missing: {permission})" if permission else ""
        return PermissionMissing(f"{where}: HTTP 403{named}: {message}", permission=permission, **kw)
    if status == 404:
        return NotFound(f"{where}: HTTP 404: {message}", **kw)
    if status == 409:
        return Conflict(f"{where}: HTTP 409: {message}", **kw)
    if status == 429:
        retry_after = _float(response.headers.get("Retry-After"))
        return RateLimited(f"{where}: HTTP 429, rate limited beyond the retry budget (Retry-After {retry_after})", retry_after=retry_after, **kw)
    if status >= 500:
        return ServerError(f"{where}: HTTP {status} after retries: {message}", **kw)
    return GenesysError(f"{where}: HTTP {status}: {message}", **kw)


def probe_reason(exc: GenesysError) -> str:
    """The plugins/FINDINGS.md reason of a failed API call, for a check row."""
    if isinstance(exc, AuthError):
        return "auth"
    if isinstance(exc, PermissionMissing):
        return "forbidden"
    if isinstance(exc, TransportError):
        return "unreachable"
    return "protocol"


# -- tokens for this settings ------------------------------------------------------------


def no_credentials_message(settings: GenesysSettings) -> str:
    return (
        "no Genesys Cloud credentials: set [genesys] client_id and client_secret, "
        "or run `agentd login` (with [genesys] client_id set)"
    )


def has_credentials(settings: GenesysSettings) -> bool:
    if settings.auth in ("auto", "client_credentials") and settings.has_client_credentials:
        return True
    if settings.auth == "client_credentials":
        return False
    # a stored login names its own OAuth client (the daemon may hold one an agent handed over)
    return bool((settings.client_id and settings.refresh_token) or TokenStore(settings.token_path).exists())


def token_manager(settings: GenesysSettings, client: GenesysClient) -> TokenManager:
    """Client credentials when configured (and allowed), else the stored login."""
    use_client = settings.auth == "client_credentials" or (settings.auth == "auto" and settings.has_client_credentials)
    if use_client:
        if not settings.has_client_credentials:
            raise AuthError(no_credentials_message(settings))
        client_id, secret = settings.client_id or "", settings.client_secret

        async def fetch_client_credentials() -> AccessToken:
            assert secret is not None
            return await client.token_request(
                {"grant_type": "client_credentials"}, basic=(client_id, secret.reveal()), grant="client_credentials"
            )

        return TokenManager(fetch_client_credentials, description="client credentials")
    return user_token_manager(settings, client)


def user_token_manager(settings: GenesysSettings, client: GenesysClient) -> TokenManager:
    """The agent's own login: the store of this process (``[genesys] token_file``, by
    default the state folder). In the daemon that is the login an agent handed to it with
    ``agentd login``; a newer one replaces it from the next call on."""
    store = TokenStore(settings.token_path)

    async def renew(current: StoredLogin | None) -> AccessToken:
        refresh = settings.refresh_token.reveal() if settings.refresh_token else (current.refresh_token if current else None)
        client_id = settings.client_id or (current.client_id if current else None)
        if not refresh or not client_id:
            raise AuthError(no_credentials_message(settings))
        register_secret(refresh)
        form = {"grant_type": "refresh_token", "refresh_token": refresh}
        basic = None
        if settings.login_client_secret is not None:  # a confidential client authenticates itself
            basic = (client_id, settings.login_client_secret.reveal())
        else:
            form["client_id"] = client_id
        token = await client.token_request(form, basic=basic, grant="refresh_token")
        if settings.refresh_token is None:  # a rotated refresh token must replace the old one at once
            updated = StoredLogin(
                refresh_token=token.refresh_token or refresh,
                client_id=client_id,
                login_base=settings.login_base,
                user_id=current.user_id if current else None,
                user_name=current.user_name if current else None,
                access_token=token.value,
                expires_at=token.expires_at,
                grant=current.grant if current else "code",
                account=current.account if current else None,
                logged_in_at=current.logged_in_at if current else 0.0,
            )
            try:
                store.save(updated)
                manager.saved(updated)
            except OSError as exc:
                log.warning("cannot save the refreshed Genesys login", path=str(store.path), error=exc.strerror)
        return AccessToken(token.value, token.expires_at, token.grant, token.refresh_token, current.user_id if current else None)

    manager = LoginTokenManager(store, renew, can_renew_without_login=settings.refresh_token is not None)
    return manager


# -- one client per process (and event loop) ---------------------------------------------

_shared: dict[tuple[int, GenesysSettings], tuple[Any, GenesysClient]] = {}


def shared_client(settings: GenesysSettings) -> GenesysClient:
    """The process's client for ``settings`` on the running loop (connections are per loop)."""
    loop = asyncio.get_running_loop()
    key = (id(loop), settings)
    found = _shared.get(key)
    if found is not None and found[0] is loop and not found[1].http.is_closed:
        return found[1]
    for old_key in [k for k, (other, _) in _shared.items() if other is not loop or other.is_closed()]:
        _shared.pop(old_key, None)  # clients of finished loops cannot be reused
    client = GenesysClient(settings)
    _shared[key] = (loop, client)
    return client


async def close_shared() -> None:
    loop = asyncio.get_running_loop()
    for key, (owner, client) in list(_shared.items()):
        if owner is loop:
            _shared.pop(key, None)
            await client.aclose()


def stored_user_id(settings: GenesysSettings) -> str | None:
    """The agent's user id: ``[genesys] user_id``, else the user of ``agentd login``."""
    if settings.user_id:
        return settings.user_id
    stored = TokenStore(settings.token_path).load()
    return stored.user_id if stored else None


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
