"""agentd: readiness and incident diagnostics for Genesys Cloud WebRTC softphone agents.

The core knows checks, evidence, verdicts, reports and sinks; everything that knows
about STUN, TURN or Genesys Cloud is a plugin (see :mod:`agentd.hookspecs`).
"""

__version__ = "0.1.0"

from agentd.hookspecs import hookimpl  # noqa: E402  - the marker plugins decorate hooks with

__all__ = ["__version__", "hookimpl"]
