"""Every error agentd raises on purpose derives from :class:`AgentdError`.

The tree::

    AgentdError                      root; ``str(err)`` is a message a person can act on
    ├── ConfigError                  bad configuration: names the file, the key and the problem (exit 2)
    │   └── SecretError              a secret reference that cannot be resolved (env, file, credential)
    ├── UsageError                   a command line that cannot be carried out (exit 2)
    ├── PluginError                  a plugin failed to load or a hook returned something unusable
    ├── ProbeError                   a local probe failed for a known reason (becomes a check's summary)
    │   └── ProbeTimeout             a probe ran out of its own deadline
    ├── GenesysError                 the Genesys Cloud API did not give what was asked
    │   ├── AuthError                401 after one refresh, or no usable credentials (platform.auth_failed)
    │   ├── PermissionMissing        403; ``permission`` names what the error body asked for
    │   ├── NotFound                 404
    │   ├── Conflict                 409 (for example: a call that is not connected yet)
    │   ├── RateLimited              429 beyond the retry budget; ``retry_after`` in seconds
    │   ├── ServerError              5xx after the retries
    │   ├── MalformedResponse        a body that is not the JSON the API documents
    │   └── TransportError           DNS, TCP, TLS or timeout talking to the API
    ├── SignalingError               WebSocket signaling failed (handshake, keepalive, protocol)
    ├── DeliveryError                a sink did not acknowledge a report; ``retryable`` says if trying again can help,
    │                                ``refused`` that the sink refused this report itself for good (it is moved aside)
    └── ControlError                 the daemon's control socket refused or broke a request
        └── DaemonFailed             the daemon ended a check's connection without a report (exit 4)

Exceptions never carry secrets: messages are built from names and references, and the
log redaction processor scrubs anything that slips through.
"""

from __future__ import annotations


class AgentdError(Exception):
    """Root of every error agentd raises on purpose."""


class ConfigError(AgentdError):
    """Configuration that cannot be used; the message names file, key and problem."""

    def __init__(self, problem: str, *, file: str | None = None, key: str | None = None) -> None:
        self.problem = problem
        self.file = file
        self.key = key
        where = []
        if file:
            where.append(str(file))
        if key:
            where.append(f"key '{key}'")
        super().__init__(f"{': '.join(where)}: {problem}" if where else problem)


class SecretError(ConfigError):
    """A secret reference (``{env=}``, ``{file=}``, ``{credential=}``) that cannot be resolved."""


class UsageError(AgentdError):
    """A command line that cannot be carried out."""


class PluginError(AgentdError):
    """A plugin failed to load, or one of its hooks returned something unusable."""

    def __init__(self, plugin: str, problem: str) -> None:
        self.plugin = plugin
        self.problem = problem
        super().__init__(f"plugin {plugin!r}: {problem}")


class ProbeError(AgentdError):
    """A local probe failed for a reason it can name; the message becomes the check summary."""

    def __init__(self, message: str, *, reason: str = "failed", details: dict | None = None) -> None:
        self.reason = reason
        self.details = dict(details or {})
        super().__init__(message)


class ProbeTimeout(ProbeError):
    """A probe ran out of its own deadline."""

    def __init__(self, message: str, *, details: dict | None = None) -> None:
        super().__init__(message, reason="timeout", details=details)


class GenesysError(AgentdError):
    """The Genesys Cloud API did not give what was asked.

    ``status`` is the HTTP status when there was one; ``correlation_id`` the
    ``ININ-Correlation-Id`` of the response, for Genesys support.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        correlation_id: str | None = None,
        path: str | None = None,
    ) -> None:
        self.status = status
        self.correlation_id = correlation_id
        self.path = path
        super().__init__(message)


class AuthError(GenesysError):
    """401 after one token refresh, or no usable credentials. ``grant`` names the OAuth
    grant that was refused (``client_credentials``, ``refresh_token``, ...) when known."""

    def __init__(self, message: str, *, grant: str | None = None, **kw) -> None:
        self.grant = grant
        super().__init__(message, **kw)


class PermissionMissing(GenesysError):
    """403; ``permission`` names the missing permission when the error body says it."""

    def __init__(self, message: str, *, permission: str | None = None, **kw) -> None:
        self.permission = permission
        super().__init__(message, **kw)


class NotFound(GenesysError):
    """404."""


class Conflict(GenesysError):
    """409."""


class RateLimited(GenesysError):
    """429 beyond the retry budget."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kw)


class ServerError(GenesysError):
    """5xx after the retries."""


class MalformedResponse(GenesysError):
    """A response body that is not the JSON the API documents."""


class TransportError(GenesysError):
    """DNS, TCP, TLS or a timeout while talking to the API."""


class SignalingError(AgentdError):
    """WebSocket signaling failed."""


class DeliveryError(AgentdError):
    """A sink did not acknowledge a report.

    ``retryable``: trying again soon can help (a collector down, a 503). Not retryable and
    not ``refused``: the sink itself is unusable until its configuration is fixed (a wrong
    token, a wrong URL); the report waits. ``refused``: the sink refused *this report* for
    good (413 too large, 422, 400): sending it again cannot help, so the spool moves it
    aside instead of offering it at every flush."""

    def __init__(self, message: str, *, retryable: bool = True, refused: bool = False) -> None:
        self.retryable = retryable and not refused
        self.refused = refused
        super().__init__(message)


class ControlError(AgentdError):
    """The daemon's control socket refused or broke a request."""


class DaemonFailed(ControlError):
    """The daemon ended a running check's connection without a report (it crashed)."""
