"""The MCP server over streamable HTTP: bound to loopback unless asked otherwise, every request needs a bearer token.

A token is a shared secret the operator hands one agent, not OAuth: the SDK's auth hooks expect an authorization
server and advertise its metadata, which would send clients looking for one. A plain ASGI gate in front of the
whole app is the smaller seam, and it covers every path, not only ``/mcp``. The token a request carries names its
agent (``POLYBOT_MCP_TOKEN`` the one of ``--agent``, a tokens file one per agent): budgets and orders follow that
name, and a session stays with the agent that opened it. Tokens never reach a log: the access log leaves out
query strings, and a token sent in one is refused.
"""
from __future__ import annotations

import copy
import hmac
import ipaddress
import json
import logging
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

if TYPE_CHECKING:  # the refusals run before the SDK is imported, so a refused start is quick
    from mcp.server.mcpserver import MCPServer
    from starlette.types import ASGIApp, Receive, Scope, Send

TOKEN_ENV = "POLYBOT_MCP_TOKEN"
TOKENS_FILE_ENV = "POLYBOT_MCP_TOKENS_FILE"
MIN_TOKEN_CHARS = 16
MAX_SESSIONS = 64  # open MCP sessions at once; a client beyond them gets 503 until one ends or idles out
SESSION_IDLE_S = 900.0  # a session with no request for this long is closed (its client starts a new one)
URL_TOKEN_NAMES = frozenset({"token", "access_token", "bearer", "authorization", "auth", "key", "api_key"})
PATH = "/mcp"
REALM = 'Bearer realm="polybot-mcp"'
MAKE_TOKEN = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # any other host name: it may resolve anywhere
        return False


class TokenError(ValueError):
    """The agents' tokens cannot be used; the message (which never holds a token) says what to fix."""


def agent_tokens(token: str | None, agent: str, tokens_file: str | None) -> dict[str, str]:
    """Each agent's token, as token -> agent name: ``token`` (``POLYBOT_MCP_TOKEN``) for ``agent``, and the lines
    ``NAME TOKEN`` of ``tokens_file`` (``#`` starts a comment), a file only its owner may read."""
    from .agents import agent_name_problem

    named = [(token, agent, TOKEN_ENV)] if token else []
    if tokens_file:
        path = Path(tokens_file).expanduser()
        try:
            mode = path.stat().st_mode
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise TokenError(f"tokens file {path}: cannot be read ({exc.strerror})") from None
        if stat.S_IMODE(mode) & 0o077:
            raise TokenError(f"tokens file {path} may be read by others (mode {stat.S_IMODE(mode):o}); "
                             f"make it the owner's only: chmod 600 {path}")
        for number, line in enumerate(lines, 1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            if len(words) != 2:
                raise TokenError(f"tokens file {path} line {number}: write one agent per line as 'NAME TOKEN'")
            named.append((words[1], words[0], f"{path} line {number}"))
    out: dict[str, str] = {}
    for secret, name, where in named:
        if problem := agent_name_problem(name):
            raise TokenError(f"{where}: {problem}")
        if len(secret) < MIN_TOKEN_CHARS:
            raise TokenError(f"{where}: the token is shorter than {MIN_TOKEN_CHARS} characters; make a longer one "
                             f"with: {MAKE_TOKEN}")
        if secret in out:
            raise TokenError(f"{where}: this token is already {out[secret]}'s; give each agent its own")
        if name in out.values():
            raise TokenError(f"{where}: agent {name} already has a token; give each agent one")
        out[secret] = name
    return out


def refusal(host: str, allow_remote: bool, tokens: dict[str, str]) -> str | None:
    """Why the HTTP transport must not start with these settings (text that never holds a token), or None."""
    if not tokens:
        return (f"the HTTP transport needs a bearer token: set {TOKEN_ENV} in the environment "
                f"(make one with: {MAKE_TOKEN}), or give each agent its own in a tokens file ({TOKENS_FILE_ENV} or "
                "--tokens-file, lines 'NAME TOKEN'), and send it as 'Authorization: Bearer <token>'")
    if not is_loopback(host) and not allow_remote:
        return (f"--host {host} is not a loopback address; the HTTP transport binds to loopback only, "
                f"unless --allow-remote is given (the bearer token is required either way)")
    return None


def _presented(scope: Scope) -> bytes | None:
    """The credentials of an ``Authorization: Bearer`` header; b"" for another scheme, None without the header."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, credentials = value.strip().partition(b" ")
            return credentials.strip() if scheme.lower() == b"bearer" else b""
    return None


class BearerGate:
    """ASGI middleware: a request without an agent's bearer token gets 401, one with a token in its URL 400; a
    request with a token goes on as that agent's (``AGENT_SCOPE``, and the user the SDK binds sessions to).
    Lifespan events pass through."""

    def __init__(self, app: ASGIApp, tokens: dict[str, str]) -> None:
        from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
        from mcp.server.auth.provider import AccessToken

        from .agents import AGENT_SCOPE

        self._app = app
        self._scope_key = AGENT_SCOPE
        # The SDK answers a session used with another credential than the one that opened it as unknown (404).
        self._agents = [(secret.encode(), name, AuthenticatedUser(AccessToken(token="", client_id=f"agent:{name}",
                                                                              scopes=[])))
                        for secret, name in tokens.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await self._app(scope, receive, send)
        if scope["type"] == "http" and _token_in_url(scope):
            return await _token_in_url_refused(send)
        presented = _presented(scope)
        found = None
        if presented is not None:
            # compare_digest against every token: the time taken depends neither on how much of a token a guess
            # got right nor on which agent's it is.
            for secret, name, user in self._agents:
                if hmac.compare_digest(presented, secret):
                    found = (name, user)
        if found is not None:
            scope[self._scope_key], scope["user"] = found
            return await self._app(scope, receive, send)
        if scope["type"] == "websocket":  # nothing is served over websockets; refuse before accepting
            return await send({"type": "websocket.close", "code": 1008})
        await _unauthorized(send, missing=presented is None)


def _token_in_url(scope: Scope) -> bool:
    query = scope.get("query_string", b"").decode("latin-1")
    return any(key.lower() in URL_TOKEN_NAMES for key, _ in parse_qsl(query, keep_blank_values=True))


async def _token_in_url_refused(send: Send) -> None:
    message = ("A token in the URL is refused: URLs end up in logs and histories. Send it as the header "
               "'Authorization: Bearer <token>', and have the operator replace the token you put in the URL.")
    await _json(send, 400, {"error": "invalid_request", "message": message})


async def _json(send: Send, status: int, payload: dict, *headers: tuple[bytes, bytes]) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


async def _unauthorized(send: Send, missing: bool) -> None:
    # RFC 6750: no error code when no credentials were sent, invalid_token when they were wrong.
    if missing:
        challenge, error = REALM, "unauthorized"
        message = ("This MCP server needs a bearer token: send the header 'Authorization: Bearer <token>' with "
                   f"the token the operator gave this agent ({TOKEN_ENV}, or its line in the tokens file).")
    else:
        challenge, error = f'{REALM}, error="invalid_token"', "invalid_token"
        message = ("The bearer token is not one the server was started with: send the token the operator gave "
                   f"this agent ({TOKEN_ENV}, or its line in the tokens file) as 'Authorization: Bearer <token>'.")
    await _json(send, 401, {"error": error, "message": message}, (b"www-authenticate", challenge.encode()))


def app(server: MCPServer, tokens: dict[str, str], host: str, max_sessions: int = MAX_SESSIONS,
        session_idle_s: float = SESSION_IDLE_S) -> ASGIApp:
    # The SDK checks Host and Origin headers (against DNS rebinding) itself for 127.0.0.1, localhost and ::1, caps
    # the open sessions and closes idle ones.
    return BearerGate(server.streamable_http_app(streamable_http_path=PATH, host=host, max_sessions=max_sessions,
                                                 session_idle_timeout=session_idle_s), tokens)


class WithoutQuery(logging.Filter):
    """uvicorn's access log line without the query string: a URL may carry what must never be logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) == 5:  # client, method, path, http version, status
            client, method, path, version, status = record.args
            path, query, _ = str(path).partition("?")
            record.args = (client, method, path + ("?[query not logged]" if query else ""), version, status)
        return True


def _stderr_logging() -> dict:
    """uvicorn's logging with its access log on stderr too (diagnostics never go to stdout), without queries."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    config.setdefault("filters", {})["without_query"] = {"()": f"{__name__}.WithoutQuery"}
    config["handlers"]["access"]["filters"] = ["without_query"]
    return config


def serve(server: MCPServer, tokens: dict[str, str], host: str, port: int, max_sessions: int = MAX_SESSIONS,
          session_idle_s: float = SESSION_IDLE_S) -> None:
    """Serve until interrupted (SIGINT or SIGTERM)."""
    import uvicorn

    shown = f"[{host}]" if ":" in host else host
    agents = ", ".join(sorted(tokens.values()))
    print(f"polybot-mcp: streamable HTTP on http://{shown}:{port}{PATH} for agents {agents}, each with its bearer "
          f"token; at most {max_sessions} sessions, closed after {session_idle_s:g} s idle",
          file=sys.stderr, flush=True)
    if not is_loopback(host):
        print("polybot-mcp: warning: this is plain HTTP on a non-loopback address, so the token crosses the network "
              "in clear; put a TLS proxy in front of it", file=sys.stderr, flush=True)
    uvicorn.run(app(server, tokens, host, max_sessions, session_idle_s), host=host, port=port,
                log_config=_stderr_logging(), server_header=False)
