"""The MCP server over streamable HTTP: bound to loopback unless asked otherwise, every request needs the bearer token.

The token is a shared secret from ``POLYBOT_MCP_TOKEN``, not OAuth: the SDK's auth hooks expect an authorization
server and advertise its metadata, which would send clients looking for one. A plain ASGI gate in front of the
whole app is the smaller seam, and it covers every path, not only ``/mcp``.
"""
from __future__ import annotations

import copy
import hmac
import ipaddress
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the refusals run before the SDK is imported, so a refused start is quick
    from mcp.server.mcpserver import MCPServer
    from starlette.types import ASGIApp, Receive, Scope, Send

TOKEN_ENV = "POLYBOT_MCP_TOKEN"
MIN_TOKEN_CHARS = 16
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


def refusal(host: str, allow_remote: bool, token: str | None) -> str | None:
    """Why the HTTP transport must not start with these settings (text that never holds the token), or None."""
    if not token:
        return (f"the HTTP transport needs a bearer token: set {TOKEN_ENV} in the environment "
                f"(make one with: {MAKE_TOKEN}), and send it as 'Authorization: Bearer <token>'")
    if len(token) < MIN_TOKEN_CHARS:
        return f"{TOKEN_ENV} is shorter than {MIN_TOKEN_CHARS} characters; make a longer one with: {MAKE_TOKEN}"
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
    """ASGI middleware: a request without the right bearer token gets 401; lifespan events pass through."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self._app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await self._app(scope, receive, send)
        presented = _presented(scope)
        # compare_digest: the time taken does not depend on how much of the token a guess got right.
        if presented is not None and hmac.compare_digest(presented, self._token):
            return await self._app(scope, receive, send)
        if scope["type"] == "websocket":  # nothing is served over websockets; refuse before accepting
            return await send({"type": "websocket.close", "code": 1008})
        await _unauthorized(send, missing=presented is None)


async def _unauthorized(send: Send, missing: bool) -> None:
    # RFC 6750: no error code when no credentials were sent, invalid_token when they were wrong.
    if missing:
        challenge, error = REALM, "unauthorized"
        message = f"This MCP server needs a bearer token: send the header 'Authorization: Bearer <{TOKEN_ENV}>'."
    else:
        challenge, error = f'{REALM}, error="invalid_token"', "invalid_token"
        message = (f"The bearer token is not the one the server was started with: send the value of {TOKEN_ENV} "
                   "as 'Authorization: Bearer <token>'.")
    body = json.dumps({"error": error, "message": message}).encode()
    await send({"type": "http.response.start", "status": 401, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", challenge.encode())]})
    await send({"type": "http.response.body", "body": body})


def app(server: MCPServer, token: str, host: str) -> ASGIApp:
    # The SDK checks Host and Origin headers (against DNS rebinding) itself for 127.0.0.1, localhost and ::1.
    return BearerGate(server.streamable_http_app(streamable_http_path=PATH, host=host), token)


def _stderr_logging() -> dict:
    """uvicorn's logging with its access log on stderr too: diagnostics never go to stdout."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    return config


def serve(server: MCPServer, token: str, host: str, port: int) -> None:
    """Serve until interrupted (SIGINT or SIGTERM)."""
    import uvicorn

    shown = f"[{host}]" if ":" in host else host
    print(f"polybot-mcp: streamable HTTP on http://{shown}:{port}{PATH} (bearer token from {TOKEN_ENV} required)",
          file=sys.stderr, flush=True)
    if not is_loopback(host):
        print("polybot-mcp: warning: this is plain HTTP on a non-loopback address, so the token crosses the network "
              "in clear; put a TLS proxy in front of it", file=sys.stderr, flush=True)
    uvicorn.run(app(server, token, host), host=host, port=port, log_config=_stderr_logging(),
                server_header=False)
