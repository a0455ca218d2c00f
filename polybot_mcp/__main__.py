"""`polybot-mcp`: the MCP server on stdio. Nothing but the protocol goes to stdout; diagnostics go to stderr."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="polybot-mcp", description="MCP server for the polybot trading mesh (stdio).")
    parser.add_argument("--config", help="TOML config file (default: $POLYBOT_CONFIG or ~/.config/polybot/polybot.toml)")
    args = parser.parse_args(argv)

    from services.config import ConfigError, load

    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"polybot-mcp: config: {exc}", file=sys.stderr)
        return 2
    from .server import build

    build(config).run("stdio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
