"""A container's health check: asks one service for its status over its control socket.

``python -m services.healthcheck [--config FILE] [NAME]`` exits 0 when the service answers as running or
halted (a halted service is alive and keeps answering), 1 when it answers otherwise or not at all, 2 when the
config cannot be read. Without NAME it checks the service this container runs, read from PID 1's command line
(``... run NAME``, also behind an init such as ``docker-init --``); the config is then ``--config`` from that
command line, else ``$POLYBOT_CONFIG``, with the same ``POLYBOT_*`` environment the service sees.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import messages as m
from . import tls
from .bus import BusError, BusTimeout, Requester
from .config import ConfigError, control_address, load

TIMEOUT_MS = 2000
HEALTHY = ("running", "halted")


def service_command(argv: list[str]) -> tuple[str, str | None]:
    """(service name, config path or None) from a ``polybot [--config FILE] run NAME`` command line."""
    config = None
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            config = argv[i + 1]
        elif arg.startswith("--config="):
            config = arg.split("=", 1)[1]
        elif arg == "run" and i + 1 < len(argv):
            return argv[i + 1], config
    raise ValueError(f"not a `polybot run NAME` command line: {' '.join(argv)!r}")


def _pid1_argv() -> list[str]:
    return [a for a in Path("/proc/1/cmdline").read_bytes().decode().split("\0") if a]


def check(name: str, config_path: str | None = None, timeout_ms: int = TIMEOUT_MS) -> tuple[bool, str]:
    config = load(config_path)
    tls.identify(name, config)  # over tls it asks with the certificate of the service it checks (its container's)
    address = control_address(config, name)
    with Requester(address, timeout_ms) as req:
        try:
            reply = req.request(m.StatusRequest())
        except (BusTimeout, BusError) as exc:
            return False, f"{name}: not answering: {exc}"
    if not isinstance(reply, m.StatusReply):
        return False, f"{name}: answered {type(reply).__name__} on {address}"
    state = reply.service.state
    return state in HEALTHY, f"{name}: {state}" + (f" ({reply.service.last_error})" if reply.service.last_error else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.healthcheck",
                                     description="Ask one service for its status over control.")
    parser.add_argument("--config", help="TOML config file (default: PID 1's --config, else $POLYBOT_CONFIG)")
    parser.add_argument("name", nargs="?", help="the service (default: the one PID 1 runs)")
    args = parser.parse_args(argv)
    try:
        name, config_path = (args.name, None) if args.name else service_command(_pid1_argv())
        healthy, line = check(name, args.config or config_path)
    except (ValueError, OSError) as exc:
        print(f"healthcheck: {exc}; give the service's name", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"healthcheck: config: {exc}", file=sys.stderr)
        return 2
    print(line)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
