"""The ``[genesys]`` section and how a region maps to hosts."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from agentd.config import Secret
from agentd.errors import ConfigError

# Public Genesys Cloud regions (DESIGN.md). Others are accepted with a warning: new
# regions appear, and a typo is still better caught by the dns check than refused here.
KNOWN_REGIONS = (
    "mypurecloud.com",
    "mypurecloud.ie",
    "mypurecloud.de",
    "mypurecloud.jp",
    "mypurecloud.com.au",
    "usw2.pure.cloud",
    "cac1.pure.cloud",
    "euw2.pure.cloud",
    "aps1.pure.cloud",
    "apne2.pure.cloud",
    "sae1.pure.cloud",
    "mec1.pure.cloud",
    "apne3.pure.cloud",
    "euc2.pure.cloud",
    "mxc1.pure.cloud",
    "apse1.pure.cloud",
    "use2.us-gov-pure.cloud",
)
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$")


@dataclass(frozen=True)
class GenesysSettings:
    """``[genesys]``: which Genesys Cloud organisation this PC belongs to, and how to log in."""

    region: str = field(default="mypurecloud.com", metadata={"help": "region domain: api.<region>, login.<region>"})
    api_base_url: str | None = field(default=None, metadata={"help": "override of https://api.<region>"})
    login_base_url: str | None = field(default=None, metadata={"help": "override of https://login.<region>"})
    streaming_base_url: str | None = field(default=None, metadata={"help": "override of wss://streaming.<region> (the softphone's XMPP channel)"})
    client_id: str | None = field(default=None, metadata={"help": "OAuth client id"})
    client_secret: Secret | None = field(default=None, metadata={"help": "OAuth client secret (client credentials grant)"})
    ca_file: Path | None = field(default=None, metadata={"help": "extra CA bundle to trust (TLS-inspecting proxies, tests)"})
    timeout_s: float = field(default=10.0, metadata={"help": "deadline of one API call", "min": 0.1, "max": 300})
    auth: Literal["auto", "client_credentials", "login"] = field(
        default="auto",
        metadata={"help": "which token the API client uses: auto = client credentials when a secret is set, else the `agentd login` token"},
    )
    user_id: str | None = field(default=None, metadata={"help": "the agent's Genesys user id (default: the user of `agentd login`)"})
    queue_ids: tuple[str, ...] = field(default=(), metadata={"help": "queues whose dropped calls to count (dropped_calls evidence)"})
    integration_ids: tuple[str, ...] = field(default=(), metadata={"help": "integrations whose reportedState to check"})
    redirect_port: int = field(default=8765, metadata={"help": "loopback port of `agentd login`'s redirect (http://127.0.0.1:PORT/oauth/callback)", "min": 0, "max": 65535})
    token_file: Path | None = field(default=None, metadata={"help": "where `agentd login` keeps its refresh token (default: state dir/genesys-token.json)"})
    refresh_token: Secret | None = field(default=None, metadata={"help": "a refresh token given by reference (a systemd credential) instead of the token file"})
    login_client_secret: Secret | None = field(
        default=None,
        metadata={"help": "secret of a confidential Code Authorization client: `agentd login` then uses the authorization code grant with refresh tokens instead of PKCE"},
    )
    webrtc_diagnostics_api: bool = field(
        default=False,
        metadata={"help": "diagnose also asks the seed's /api/v2/diagnostics/webrtc/... path (not in the public API; only for an org that has it)"},
    )
    retry_budget_s: float = field(default=180.0, metadata={"help": "give up on 429/5xx retries beyond this many seconds (official SDKs: 180)", "min": 0, "max": 600})
    max_retries: int = field(default=5, metadata={"help": "retries of one call on 429, 5xx (not 501) and transport errors", "min": 0, "max": 20})
    dropped_calls_hours: float = field(default=24.0, metadata={"help": "interval of the dropped-calls count, hours back from now", "min": 0.1, "max": 744})
    log_capture_hours: float = field(default=0.0, metadata={"help": "when > 0, `full` runs keep browser log capture enabled for the agent this many hours (at most 24)", "min": 0, "max": 24})

    @property
    def api_base(self) -> str:
        return (self.api_base_url or f"https://api.{self.region}").rstrip("/")

    @property
    def login_base(self) -> str:
        return (self.login_base_url or f"https://login.{self.region}").rstrip("/")

    @property
    def streaming_base(self) -> str:
        """Where the softphone's streaming (XMPP) channel lives: ``<base>/stream/channels/<id>``.

        ``streaming_base_url``, else ``wss://streaming.<region>``; with ``api_base_url``
        overridden, derived from it (``https://api.X`` -> ``wss://streaming.X``, any other
        host: the same host and port over ws(s)), never a host the configuration did not name."""
        if self.streaming_base_url:
            return self.streaming_base_url.rstrip("/")
        if self.api_base_url:
            parts = urlsplit(self.api_base_url)
            scheme = "wss" if parts.scheme == "https" else "ws"
            host = parts.netloc
            if host.startswith("api."):
                return f"wss://streaming.{host[4:]}"
            return f"{scheme}://{host}"
        return f"wss://streaming.{self.region}"

    @property
    def streaming_host(self) -> str:
        """The notifications WebSocket host (the channel's connectUri points there)."""
        return f"streaming.{self.region}"

    @property
    def has_client_credentials(self) -> bool:
        return bool(self.client_id and self.client_secret)

    @property
    def token_path(self) -> Path:
        from .tokens import default_token_path

        return self.token_file.expanduser() if self.token_file else default_token_path()

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.redirect_port}/oauth/callback"

    def hosts(self) -> dict[str, str]:
        """Role -> host name of every signaling endpoint the softphone depends on."""
        hosts = {
            "api": urlsplit(self.api_base).hostname or "",
            "login": urlsplit(self.login_base).hostname or "",
        }
        if not (self.api_base_url or self.login_base_url):
            hosts["streaming"] = self.streaming_host
        return hosts


def validate(settings: GenesysSettings, file: str | None) -> None:
    region = settings.region.strip().lower()
    if not _HOSTNAME.match(region):
        raise ConfigError(f"region {settings.region!r} is not a domain such as mypurecloud.com", file=file, key="genesys.region")
    for key in ("api_base_url", "login_base_url"):
        value = getattr(settings, key)
        if value is None:
            continue
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ConfigError(f"{value!r} is not an http(s) URL", file=file, key=f"genesys.{key}")
    if settings.streaming_base_url is not None:
        parts = urlsplit(settings.streaming_base_url)
        if parts.scheme not in ("wss", "ws") or not parts.hostname:
            raise ConfigError(f"{settings.streaming_base_url!r} is not a wss:// URL", file=file, key="genesys.streaming_base_url")
    if settings.ca_file is not None and not settings.ca_file.is_file():
        raise ConfigError(f"CA file {settings.ca_file} does not exist", file=file, key="genesys.ca_file")
