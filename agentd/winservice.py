"""``agentd service install|uninstall|start|stop|status``: agentd as a Windows service.

The work is in agentd/osdeps/_windows_service.py (pywin32); this is the command line,
which loads on every platform (``--help`` lists it) and says what to use instead on
Linux (the systemd unit of the package) and macOS (the launchd plist in packaging/macos).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

ACTIONS = ("install", "uninstall", "start", "stop", "status")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=(*ACTIONS, "host"), metavar="ACTION",
                        help="install (register with the Service Control Manager, automatic start, restart on failure), "
                             "uninstall, start, stop, status")
    parser.add_argument("--config", metavar="FILE",
                        help=r"install: the configuration the service reads (default: %%ProgramData%%\agentd\agentd.toml)")
    parser.add_argument("--start", choices=("auto", "demand"), default="auto", help="install: start with Windows (auto, default) or on demand")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S", help="start/stop: how long to wait for the service (default 60)")
    parser.add_argument("--json", action="store_true", help="status: machine-readable output")


def main(argv: Sequence[str]) -> int:
    """Exit codes: 0 done, 1 not installed / not running (status) or the SCM refused,
    2 usage error or not on Windows."""
    parser = argparse.ArgumentParser(prog="agentd service", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(list(argv))
    if sys.platform != "win32":
        hint = ("the launchd plist in packaging/macos" if sys.platform == "darwin"
                else "the systemd unit the package installs (systemctl start agentd)")
        print(f"agentd service: Windows only; on this system use {hint}", file=sys.stderr)
        return 2
    from agentd.osdeps import _windows_service as service

    if args.action == "host":
        return service.host(args.config)
    try:
        if args.action == "status":
            found = service.query()
            if args.json:
                print(json.dumps(found))
            elif found is None:
                print(f"agentd: service {service.SERVICE_NAME} is not installed")
            else:
                print(f"agentd: service {found['name']} {found['state']}"
                      + (f", pid {found['pid']}" if found["pid"] else "")
                      + f", start {found['start']}; runs {found['command']}")
            return 0 if found and found["state"] == "running" else 1
        done = {
            "install": lambda: service.install(args.config, start_type=args.start),
            "uninstall": service.uninstall,
            "start": lambda: service.start(args.timeout),
            "stop": lambda: service.stop(args.timeout),
        }[args.action]()
    except Exception as exc:  # pywintypes.error and our timeouts: one line, as everywhere
        message = getattr(exc, "strerror", None) or str(exc)
        hint = " (run it from an elevated prompt)" if getattr(exc, "winerror", None) == 5 else ""
        print(f"agentd service {args.action}: {message}{hint}", file=sys.stderr)
        return 1
    for line in done:
        print(f"agentd: {line}")
    return 0


if __name__ == "__main__":  # what the service manager runs: python.exe -m agentd.winservice host
    sys.exit(main(sys.argv[1:]))
