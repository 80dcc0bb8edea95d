"""The control channel's transport: where the daemon listens, who may connect, how a
client connects. The request protocol on top of it is agentd/control.py's.

POSIX: a Unix socket file (``_posix_control``). Windows: a named pipe with a security
descriptor (``_windows_control``). Both offer the same names:

- ``server_address()`` / ``client_address()``: where the daemon listens, where a CLI
  should look (its own user's daemon first, else the system service's);
- ``present(address)``: is something listening there (without connecting);
- ``Listener(address, group)``: ``await start(handler, limit=...)``, ``check_peer(writer)``
  -> ``(allowed, why)``, ``peer_account(writer)`` -> ``{"uid", "user"}``, ``close()``,
  ``remove()``;
- ``await connect(address, limit=...)`` -> ``(reader, writer)``; PermissionError when
  refused, another OSError when nothing listens.
"""

from __future__ import annotations

import sys

if sys.platform == "win32":
    from agentd.osdeps._windows_control import Listener, client_address, connect, present, server_address
else:
    from agentd.osdeps._posix_control import Listener, client_address, connect, present, server_address

__all__ = ["Listener", "client_address", "connect", "present", "server_address"]
