"""The fake Genesys Cloud answers as the real API does, checked with the official SDK.

A tour runs every REST call agentd makes against the fake (incident evidence, a full
check with log capture, the archive's analytics job, the notifications monitor, mute,
the login's ``users/me``), recording each request and every key agentd reads from each
answer. Then every recorded request is sent again through the official Python SDK
(PureCloudPlatformClientV2): its model for that endpoint must parse the fake's answer,
and every key agentd read must be a field of that model (the reference names are in
/work/shared/reference/genesys-models.txt). A static sweep of agentd's sources makes sure
the tour misses no endpoint agentd names. The fake sends no nulls.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agentd.app import App
from agentd.evidence import EvidenceRequest
from agentd.testing.fake_genesys import AGENT_USER_ID, CC_CLIENT_SECRET, DROPPED_CALL_ID, LOGIN_CLIENT_ID
from agentd.testing.fake_genesys.notifications import add_live_call, hub_of

from .helpers import config_text

sdk = pytest.importorskip("PureCloudPlatformClientV2")

REPO = Path(__file__).resolve().parents[2]
SEED_ONLY = re.compile(r"^/api/v2/diagnostics/webrtc/")  # the seed's path: not in the public API (DESIGN.md)


# -- what agentd reads: answers that note every key looked up ----------------------------------


def watch(value: Any, sink: set, path: tuple) -> Any:
    if isinstance(value, dict) and not isinstance(value, WatchedDict):
        return WatchedDict(value, sink, path)
    if isinstance(value, list) and not isinstance(value, WatchedList):
        return WatchedList(value, sink, path)
    return value


class WatchedDict(dict):
    def __init__(self, data: dict, sink: set, path: tuple) -> None:
        super().__init__(data)
        self._sink, self._path = sink, path

    def _read(self, key: Any) -> tuple:
        where = self._path + (key,)
        self._sink.add(where)
        return where

    def get(self, key: Any, default: Any = None) -> Any:
        where = self._read(key)
        return watch(super().__getitem__(key), self._sink, where) if dict.__contains__(self, key) else default

    def __getitem__(self, key: Any) -> Any:
        return watch(super().__getitem__(key), self._sink, self._read(key))

    def __contains__(self, key: Any) -> bool:
        self._read(key)
        return super().__contains__(key)


class WatchedList(list):
    def __init__(self, data: list, sink: set, path: tuple) -> None:
        super().__init__(data)
        self._sink, self._path = sink, path

    def __iter__(self):
        for item in super().__iter__():
            yield watch(item, self._sink, self._path + ("[]",))

    def __getitem__(self, index: Any) -> Any:
        found = super().__getitem__(index)
        if isinstance(index, slice):
            return WatchedList(found, self._sink, self._path)
        return watch(found, self._sink, self._path + ("[]",))


# -- the SDK: which model answers which endpoint ---------------------------------------------------


def sdk_routes() -> dict[tuple[str, str], str | None]:
    """(METHOD, path template) -> the SDK's response model, read from the SDK's own API classes."""
    routes: dict[tuple[str, str], str | None] = {}
    pattern = re.compile(
        r"resource_path = '([^']+)'\.replace.*?call_api\(resource_path, '([A-Z]+)'.*?response_type=(?:'([^']+)'|None)", re.S
    )
    for file in (Path(sdk.__file__).parent / "apis").glob("*.py"):
        for path, method, model in pattern.findall(file.read_text()):
            routes[(method, path)] = model or None
    return routes


@functools.lru_cache(maxsize=None)
def route_pattern(template: str) -> re.Pattern:
    # compiled once each: the SDK has thousands of routes, more than re's own cache holds,
    # and recompiling them for every request cost this test ~25 s
    return re.compile(re.sub(r"\{[^}]+\}", "[^/]+", template))


def template_for(routes: dict, method: str, path: str) -> tuple[str, str] | None:
    found = []
    for (m, template) in routes:
        if m == method and route_pattern(template).fullmatch(path):
            found.append((template.count("{"), template))
    return (method, min(found)[1]) if found else None


PRIMITIVES = {"str", "int", "float", "bool", "datetime", "date", "LocalDateTime"}


def missing_field(model: str, keys: tuple) -> str | None:
    """Where ``keys`` leaves the SDK model (a field it does not have), or None."""
    kind = model
    walked = model
    for key in keys:
        if kind == "object":
            return None  # free-form below
        if kind.startswith("dict("):
            kind = re.match(r"dict\(([^,]*), (.*)\)", kind).group(2)
            walked += f".{key}"
            continue
        if kind.startswith("list["):
            if key != "[]":
                return f"{walked}: a list, read as an object ({key!r})"
            kind = kind[5:-1]
            walked += "[]"
            continue
        if key == "[]" or kind in PRIMITIVES:
            return f"{walked}: a {kind}, read as {'a list' if key == '[]' else f'an object ({key!r})'}"
        instance = getattr(sdk.models, kind)()
        by_json = {v: k for k, v in instance.attribute_map.items()}
        if key not in by_json:
            return f"{walked} ({kind}) has no field {key!r}"
        kind = instance.swagger_types[by_json[key]]
        walked += f".{key}"
    return None


def nulls(value: Any, path: str = "") -> list[str]:
    if value is None:
        return [path or "(the body)"]
    if isinstance(value, dict):
        return [n for k, v in value.items() for n in nulls(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [n for i, v in enumerate(value) for n in nulls(v, f"{path}[{i}]")]
    return []


def outdated_enums(obj: Any, path: str = "") -> list[str]:
    """Enum values the SDK did not know (it stores them as ``outdated_sdk_version``)."""
    if isinstance(obj, str):
        return [path] if obj == "outdated_sdk_version" else []
    if isinstance(obj, list):
        return [n for i, v in enumerate(obj) for n in outdated_enums(v, f"{path}[{i}]")]
    if hasattr(obj, "swagger_types"):
        return [n for attr in obj.swagger_types for n in outdated_enums(getattr(obj, attr), f"{path}.{attr}")]
    return []


# -- the tour --------------------------------------------------------------------------------------


async def tour(fake, agentd_env, tmp_path, monkeypatch) -> dict[tuple[str, str], set]:
    """Every REST call agentd makes; returns (method, path) -> the key paths read from its answers."""
    import agentd_plugins.genesys.client as client_module
    from agentd_plugins.genesys.archive import Archive, run_archive
    from agentd_plugins.genesys.client import GenesysClient, close_shared
    from agentd_plugins.notifications.calls import active_calls, read_call, set_muted
    from agentd_plugins.notifications.monitor import MonitorSettings, NotificationsMonitor

    reads: dict[tuple[str, str], set] = defaultdict(set)
    original = client_module._decode

    def recording(response, method, path):
        sink = reads[(method, client_module._short(path))]
        return watch(original(response, method, path), sink, ())

    monkeypatch.setattr(client_module, "_decode", recording)
    monkeypatch.setenv("AGENTD_TEST_CLIENT_SECRET", CC_CLIENT_SECRET)

    # incident evidence, the seed path opted in; a full check keeping log capture on
    app = App.load(agentd_env.write_config(config_text(fake, extra="webrtc_diagnostics_api = true\nlog_capture_hours = 24\n")))
    await app.collect_evidence(EvidenceRequest(config=app.config, profile="incident", conversation_id=DROPPED_CALL_ID))
    await app.collect_evidence(EvidenceRequest(config=app.config, profile="full"))
    # the archive: the async analytics job and its cursor pages
    fake.state.job_page_size = 1
    archive = Archive(tmp_path / "archive.sqlite")
    try:
        async with GenesysClient(app.config.section("genesys")) as client:
            await run_archive(app, client, archive, since=timedelta(hours=48), mos_below=3.5, limit=None, user_id=None, queue_ids=())
    finally:
        archive.close()

    # the agent's own login: users/me, the monitor, the websocket check's channel, mute
    from agentd.config import Secret
    from agentd.testing.fake_genesys import TokenGrant
    from agentd_plugins.genesys.settings import GenesysSettings

    fake.state.rotate_refresh_tokens = False  # two clients below share the one refresh token
    login_client = fake.state.clients[LOGIN_CLIENT_ID]
    grant = TokenGrant(LOGIN_CLIENT_ID, AGENT_USER_ID, None, None, 10**10, "authorization_code")
    refresh = fake.state.issue_refresh_token(grant)
    agent = GenesysSettings(api_base_url=fake.url, login_base_url=fake.url, client_id=login_client.client_id, auth="login", refresh_token=Secret(refresh), timeout_s=5.0)
    async with GenesysClient(agent) as client:
        await client.get("/api/v2/users/me")
        cid, pid = add_live_call(fake.state)
        monitor = NotificationsMonitor(client, settings=MonitorSettings(backoff_min_s=0.05, backoff_max_s=0.2))
        running = asyncio.create_task(monitor.run())
        try:
            assert await monitor.wait_for(lambda m: m.connected.is_set() and m.resyncs >= 1, 10)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        (call,) = await active_calls(client, AGENT_USER_ID)
        await set_muted(client, call, True)
        assert (await read_call(client, cid, AGENT_USER_ID)).muted
    agentd_env.write_config(
        f'[agentd]\ndisable_plugins = ["dns", "https", "host", "stun", "nat", "turn", "udp-ports", "media"]\n'
        f'[genesys]\napi_base_url = "{fake.url}"\nlogin_base_url = "{fake.url}"\nclient_id = "{LOGIN_CLIENT_ID}"\n'
        f'auth = "login"\nrefresh_token = "{refresh}"\n[websocket]\nping_count = 1\n'
    )
    report = await App.load().run_check("preshift", only=["websocket"])
    assert report.check("websocket").status.value == "pass", report.check("websocket")
    await close_shared()
    return reads


def endpoints_named_in_sources() -> set[str]:
    """Every ``/api/v2/...`` path literal in agentd's own code (the hub and the fake aside)."""
    found = set()
    for file in [*REPO.glob("agentd/**/*.py"), *REPO.glob("plugins/**/*.py")]:
        if "testing" in file.parts or "hub" in file.parts:
            continue
        text = file.read_text()
        for literal in re.findall(r'"(/api/v2/[^"\s]*)"', text) + re.findall(r"'(/api/v2/[^'\s]*)'", text):
            found.add(re.sub(r"\{[^}]*\}", "X", literal).split("?")[0].rstrip("/"))
    return found


async def test_every_rest_call_agentd_makes_parses_with_the_official_sdk(fake_genesys, agentd_env, tmp_path, monkeypatch):
    reads = await tour(fake_genesys, agentd_env, tmp_path, monkeypatch)
    recorded = [r for r in fake_genesys.state.requests if r.path.startswith("/api/v2/")]
    routes = sdk_routes()
    assert len(routes) > 1000  # the SDK's API classes were read

    # the tour covers every endpoint agentd's code names
    templates = {template_for(routes, r.method, r.path) for r in recorded if not SEED_ONLY.match(r.path)}
    seen_shapes = {re.sub(r"\{[^}]*\}", "X", t[1]) for t in templates if t} | {"/api/v2/diagnostics/webrtc/conversations/X/participants/X"}
    untoured = {p for p in endpoints_named_in_sources() if not any(re.fullmatch(re.escape(p).replace("X", "[^/]+"), s.replace("X", "x")) or p == s for s in seen_shapes)}
    assert not untoured, f"agentd names endpoints the tour did not call: {sorted(untoured)}"

    # the replay through the SDK, one request per (method, template)
    token, _ = fake_genesys.state.issue_token(fake_genesys.state.clients[LOGIN_CLIENT_ID], "authorization_code", AGENT_USER_ID)
    api = sdk.ApiClient(host=fake_genesys.url)
    problems: list[str] = []
    replayed: dict[tuple[str, str], Any] = {}
    for request in recorded:
        if SEED_ONLY.match(request.path) or request.status >= 400:
            continue  # the seed path has no SDK model; refusals are ErrorBody, checked elsewhere
        route = template_for(routes, request.method, request.path)
        if route is None:
            problems.append(f"{request.method} {request.path}: no such endpoint in the official SDK")
            continue
        if route in replayed:
            continue
        model = routes[route]
        body = json.loads(request.body) if request.body else None

        def call(request=request, model=model, body=body):
            return api.call_api(
                request.path, request.method, {}, dict(request.query), {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Accept": "application/json"},
                body=body, response_type=model, auth_settings=[],
            )

        try:
            parsed = await asyncio.to_thread(call)
        except Exception as exc:  # the SDK could not parse the fake's answer (or it refused)
            problems.append(f"{route[0]} {route[1]} ({model}): the SDK failed: {type(exc).__name__}: {str(exc)[:300]}")
            continue
        replayed[route] = parsed
        raw = api.last_response.data
        if raw:
            problems += [f"{route[0]} {route[1]}: null at {where}" for where in nulls(json.loads(raw))]
        problems += [f"{route[0]} {route[1]}: enum value unknown to the SDK at {where}" for where in outdated_enums(parsed)]
        if model is not None and not isinstance(parsed, getattr(sdk.models, model)):
            problems.append(f"{route[0]} {route[1]}: parsed as {type(parsed).__name__}, not {model}")

    # every key agentd read exists in the model of the answer it read it from
    for (method, path), keys in reads.items():
        route = template_for(routes, method, path)
        if route is None or routes[route] is None:
            continue
        for key_path in sorted(keys, key=str):
            gap = missing_field(routes[route], key_path)
            if gap:
                problems.append(f"{method} {route[1]}: agentd reads {'.'.join(map(str, key_path))}, but {gap}")

    # notifications too: the events the monitor received carry no nulls either
    hub = hub_of(fake_genesys)
    assert hub.published
    problems += [f"event {m['topicName']}: null at {n}" for m in hub.published for n in nulls(m)]

    assert len(replayed) >= 15, sorted(replayed)
    assert problems == [], "\n".join(problems)
