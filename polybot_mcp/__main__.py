"""`polybot-mcp`: the MCP server, on stdio by default or on streamable HTTP with ``--http``.

On stdio nothing but the protocol goes to stdout; diagnostics go to stderr in both modes.
"""
from __future__ import annotations

import argparse
import sys

DEFAULT_PORT = 8765


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="polybot-mcp", description="MCP server for the polybot trading mesh.")
    parser.add_argument("--config", help="TOML config file (default: $POLYBOT_CONFIG or ~/.config/polybot/polybot.toml)")
    parser.add_argument("--http", action="store_true",
                        help="serve streamable HTTP at http://HOST:PORT/mcp instead of stdio; every request must "
                             "carry 'Authorization: Bearer <token>' with the token from $POLYBOT_MCP_TOKEN")
    parser.add_argument("--host", help="address to bind with --http (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, help=f"port with --http (default: {DEFAULT_PORT})")
    parser.add_argument("--tools", choices=("trading", "no_trading", "read_only"),
                        help="which tools to serve (default: [mcp] tools in the config, else trading): no_trading "
                             "leaves out those that send orders or cancels, read_only also those that write files")
    parser.add_argument("--allow-remote", action="store_true",
                        help="with --http, allow a --host that is not loopback (the token is still required)")
    args = parser.parse_args(argv)
    if not args.http and (args.host is not None or args.port is not None or args.allow_remote):
        parser.error("--host, --port and --allow-remote apply to --http only")

    from services.config import ConfigError, load, load_secrets

    host, port = (args.host or "127.0.0.1").strip("[]"), DEFAULT_PORT if args.port is None else args.port
    token = load_secrets().mcp_token
    if args.http:
        from .http import refusal

        if problem := refusal(host, args.allow_remote, token):
            print(f"polybot-mcp: {problem}", file=sys.stderr)
            return 2
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"polybot-mcp: config: {exc}", file=sys.stderr)
        return 2
    from .prompts import PromptFileError
    from .server import build

    try:
        server = build(config, args.tools or "")
    except PromptFileError as exc:
        print(f"polybot-mcp: prompts: {exc}", file=sys.stderr)
        return 2
    if args.http:
        from .http import serve

        serve(server, token, host, port)
    else:
        server.run("stdio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
