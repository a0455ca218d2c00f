"""`polybot-mcp`: the MCP server, on stdio by default or on streamable HTTP with ``--http``.

On stdio nothing but the protocol goes to stdout; diagnostics go to stderr in both modes.
"""
from __future__ import annotations

import argparse
import os
import sys

DEFAULT_PORT = 8765


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="polybot-mcp", description="MCP server for the polybot trading mesh.")
    parser.add_argument("--config", help="TOML config file (default: $POLYBOT_CONFIG or ~/.config/polybot/polybot.toml)")
    parser.add_argument("--http", action="store_true",
                        help="serve streamable HTTP at http://HOST:PORT/mcp instead of stdio; every request must "
                             "carry 'Authorization: Bearer <token>' with an agent's token: $POLYBOT_MCP_TOKEN (the "
                             "agent of --agent), or one line 'NAME TOKEN' per agent in --tokens-file")
    parser.add_argument("--agent", help="the agent this server (stdio) or $POLYBOT_MCP_TOKEN (HTTP) serves: its "
                                        "budget and orders are those of source mcp:AGENT, whatever the client calls "
                                        "itself (default: agent)")
    parser.add_argument("--tokens-file",
                        help="with --http, a file only its owner may read with one agent per line, 'NAME TOKEN' "
                             "(default: $POLYBOT_MCP_TOKENS_FILE)")
    parser.add_argument("--max-sessions", type=int,
                        help="with --http, the most MCP sessions open at once (default: 64)")
    parser.add_argument("--session-idle-s", type=float,
                        help="with --http, close a session after this many seconds without a request "
                             "(default: 900)")
    parser.add_argument("--host", help="address to bind with --http (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, help=f"port with --http (default: {DEFAULT_PORT})")
    parser.add_argument("--tools", choices=("trading", "no_trading", "read_only"),
                        help="which tools to serve (default: [mcp] tools in the config, else trading): no_trading "
                             "leaves out those that send orders or cancels, read_only also those that write files")
    parser.add_argument("--allow-remote", action="store_true",
                        help="with --http, allow a --host that is not loopback (the token is still required)")
    args = parser.parse_args(argv)
    http_only = (args.host, args.port, args.tokens_file, args.max_sessions, args.session_idle_s)
    if not args.http and (any(x is not None for x in http_only) or args.allow_remote):
        parser.error("--host, --port, --allow-remote, --tokens-file, --max-sessions and --session-idle-s apply to "
                     "--http only")
    if args.max_sessions is not None and args.max_sessions < 1:
        parser.error("--max-sessions must be 1 or more")
    if args.session_idle_s is not None and not 0 < args.session_idle_s < float("inf"):
        parser.error("--session-idle-s must be a positive number of seconds")

    from services.config import ConfigError, load, load_secrets

    from .agents import AGENT, agent_name_problem

    agent = args.agent if args.agent is not None else AGENT
    if problem := agent_name_problem(agent):
        parser.error(f"--agent: {problem}")
    host, port = (args.host or "127.0.0.1").strip("[]"), DEFAULT_PORT if args.port is None else args.port
    tokens: dict[str, str] = {}
    if args.http:
        from .http import MAX_SESSIONS, SESSION_IDLE_S, TOKENS_FILE_ENV, TokenError, agent_tokens, refusal

        try:
            tokens = agent_tokens(load_secrets().mcp_token, agent, args.tokens_file or os.environ.get(TOKENS_FILE_ENV))
        except TokenError as exc:
            print(f"polybot-mcp: {exc}", file=sys.stderr)
            return 2
        if problem := refusal(host, args.allow_remote, tokens):
            print(f"polybot-mcp: {problem}", file=sys.stderr)
            return 2
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"polybot-mcp: config: {exc}", file=sys.stderr)
        return 2
    from services import tls

    tls.identify("mcp", config)  # with bus.transport = "tls", the MCP server's certificate: it may push signals
    from .prompts import PromptFileError
    from .server import build, close

    try:
        server = build(config, args.tools or "", agent)
    except PromptFileError as exc:
        print(f"polybot-mcp: prompts: {exc}", file=sys.stderr)
        return 2
    try:
        if args.http:
            from .http import serve

            serve(server, tokens, host, port, args.max_sessions or MAX_SESSIONS,
                  args.session_idle_s or SESSION_IDLE_S)
        else:
            server.run("stdio")
    finally:
        close(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
