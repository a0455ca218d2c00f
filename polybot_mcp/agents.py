"""Who an MCP call acts for: the agent the operator configured, never the name a client gives itself.

Budgets, holdings and order ownership follow a signal's source, ``mcp:<agent>``. Over HTTP the agent is the one
whose bearer token the request carried (the gate in ``http`` puts its name in the request's scope); on stdio, and
over HTTP with ``POLYBOT_MCP_TOKEN``, it is the server's ``--agent``. The client's own name is only a label.
Light on imports: ``polybot-mcp`` checks names before it loads the SDK.
"""
from __future__ import annotations

import re
from typing import Any

CLIENT_NAME = re.compile(r"[^a-z0-9_.-]+")
AGENT = "agent"  # the agent a server serves when the operator names none (polybot-mcp --agent NAME)
AGENT_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,39}")
AGENT_SCOPE = "polybot.agent"  # the ASGI scope key where the HTTP bearer gate puts the agent its token names


def agent_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name an agent (its source is ``mcp:<name>``), or None."""
    if AGENT_NAME.fullmatch(name):
        return None
    return (f"agent name {name!r} must be 1 to 40 characters of a-z, 0-9, '_', '.' and '-', starting with a letter "
            "or digit")


def client_label(ctx: Any) -> str:
    """The name the client gave itself in its initialize info, cleaned: a label to show, never an identity."""
    try:
        params = ctx.session.client_params if ctx is not None else None
        name = params.client_info.name if params is not None and params.client_info is not None else ""
    except (AttributeError, LookupError, ValueError):
        name = ""
    return CLIENT_NAME.sub("-", name.lower()).strip("-")[:40]


def source_of(ctx: Any, agent: str) -> str:
    """``mcp:<agent>``: the agent the operator configured, never a name the client chose. Over HTTP it is the one
    whose token the request carried (the bearer gate names it); otherwise ``agent``, the server's own."""
    try:
        request = ctx.request_context.request if ctx is not None else None
    except (AttributeError, LookupError, ValueError):
        request = None
    scope = getattr(request, "scope", None)
    named = scope.get(AGENT_SCOPE) if isinstance(scope, dict) else None
    return "mcp:" + (named or agent)
