"""The MCP server: an adapter onto the running mesh, reading through the services' control sockets."""
from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field, ValidationError

from services.cli import collect_status
from services.config import Config

from .backtests import register_backtest_tools
from .mesh import MeshLink
from .prompts import PROMPTS, register_prompts
from .resources import register_resources
from .tools import register_tools


class SocketFigures(BaseModel):
    sent: int
    received: int
    dropped: int = Field(description="Frames lost: refused by a full queue, or missed by a subscriber that fell behind")
    undecodable: int = Field(description="Malformed frames counted and skipped")
    lag_ms: float = Field(description="Latest receive lag: now minus the message's origin time")


class ServiceRow(BaseModel):
    name: str
    state: Literal["starting", "running", "halted", "stopping", "down"]
    pid: int
    uptime_s: float
    restarts: int
    halt_reason: str
    last_error: str
    sockets: dict[str, SocketFigures]


class MeshStatus(BaseModel):
    all_up: bool = Field(description="True when the supervisor and every configured service run (halted counts as up)")
    services: list[ServiceRow]


def compact(value: Any) -> Any:
    """The value without its empty fields (None, "", []), for the text an agent reads."""
    if isinstance(value, dict):
        return {k: compact(v) for k, v in value.items() if v not in (None, "", [], {})}
    if isinstance(value, list):
        return [compact(v) for v in value]
    return value


def argument_errors(exc: ValidationError) -> str:
    """pydantic's report cut to what a model acts on: each bad argument and what is wrong with it."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"])
        lines.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return "invalid arguments: " + "; ".join(lines)


class PolybotServer(MCPServer):
    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        """The SDK's call, with its answers made short: compact JSON text without empty fields (the structured
        content keeps every field), and argument errors without pydantic's boilerplate."""
        try:
            result = await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                raise ToolError(argument_errors(exc.__cause__)) from exc.__cause__
            raise
        if isinstance(result, CallToolResult) and result.structured_content is not None and not result.is_error:
            text = json.dumps(compact(result.structured_content), separators=(",", ":"), ensure_ascii=False)
            result = result.model_copy(update={"content": [TextContent(type="text", text=text)]})
        return result

    async def get_prompt(self, name: str, arguments: dict[str, Any] | None = None, context: Any = None) -> Any:
        """An unknown prompt name is the client's mistake: say which prompts there are (the SDK answers it as an
        internal error)."""
        if self._prompt_manager.get_prompt(name) is None:
            names = ", ".join(sorted(p.name for p in self._prompt_manager.list_prompts())) or "none"
            raise MCPError(INVALID_PARAMS, f"no prompt named {name!r}; the prompts are: {names}")
        return await super().get_prompt(name, arguments, context)


def build(config: Config) -> MCPServer:
    server = PolybotServer(
        "polybot",
        instructions="Trade prediction markets through the polybot mesh. Start with mesh_status to see what runs, "
                     "search_markets and get_market to find a trade, preview_signal to size it against risk, "
                     "propose_signal to send it, and get_signal to follow it to its fills. Try a strategy on "
                     "recorded markets first with list_recordings and run_backtest.",
    )

    @server.tool(annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=False))
    async def mesh_status() -> MeshStatus:
        """Each polybot service's state, pid, uptime, restarts and per-socket counters.

        A service shown as down is not running: start the mesh with `polybot up`.
        """
        rows = await asyncio.to_thread(collect_status, config)
        services = [
            ServiceRow(
                name=r.name, state=r.state, pid=r.pid, uptime_s=r.uptime_s, restarts=r.restarts,
                halt_reason=r.halt_reason, last_error=r.last_error,
                sockets={k: SocketFigures(sent=c.sent, received=c.received, dropped=c.dropped,
                                          undecodable=c.undecodable, lag_ms=c.lag_ms) for k, c in r.sockets.items()},
            )
            for r in rows
        ]
        return MeshStatus(all_up=all(s.state in ("running", "halted") for s in services), services=services)

    register_resources(server, register_tools(server, MeshLink(config)))
    register_backtest_tools(server, config)
    register_prompts(server, PROMPTS)
    return server
