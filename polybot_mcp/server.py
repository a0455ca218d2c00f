"""The MCP server: an adapter onto the running mesh, reading through the services' control sockets."""
from __future__ import annotations

import asyncio
import inspect
import json
from typing import Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field, ValidationError

from services.cli import collect_status, trading_health
from services.config import Config

from .authoring import register_authoring_tools
from .backtests import register_backtest_tools
from .mesh import MeshLink
from .prompts import PROMPTS, register_prompts
from .resources import register_resources
from .agents import AGENT
from .tools import SERVED, register_tools


class SocketFigures(BaseModel):
    sent: int
    received: int
    dropped: int = Field(description="Frames lost: refused by a full queue, or missed by a subscriber that fell behind")
    undecodable: int = Field(description="Malformed frames counted and skipped")
    oversized: int = Field(description="Frames over the bus's size cap, refused at send or skipped on arrival")
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


class TradingHealth(BaseModel):
    healthy: bool = Field(description="True when the mesh can trade now: markets fresh, risk synced with an executor "
                                      "connected, the executor ready, the venue without conditions, and signals not "
                                      "all refused in the last minute")
    reasons: list[str] = Field(description="Why it is not healthy, one line each (empty when healthy)")
    markets: int = Field(description="Markets the scanner knows")
    stale: int = Field(description="Of those, stale at the scanner: their feed is down or reconnecting")
    stale_at_risk: int = Field(description="Markets risk holds stale: signals on them are refused as STALE_BOOK")
    executor_ready: bool
    executor_connected: bool = Field(description="An executor takes risk's orders; else signals are refused as "
                                                 "EXECUTOR_DOWN")
    venue_conditions: list[str] = Field(description="What the venue does not take now (restarting, post-only ...)")
    last_accepted_s: float | None = Field(description="Seconds since risk last accepted a signal; null: not since "
                                                      "it started")
    last_rejected_s: float | None = Field(description="Seconds since risk last refused a signal; null: not since "
                                                      "it started")
    last_refusal: str = Field(description="The reason code of the last refusal")


class MeshStatus(BaseModel):
    all_up: bool = Field(description="True when the supervisor and every configured service run (halted counts as up)")
    trading: TradingHealth | None = Field(description="Whether the mesh can trade now, and why not; null when it runs "
                                                      "no trading service")
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
    def tool(self, *args: Any, description: str | None = None, **kwargs: Any) -> Any:
        """The SDK's decorator, with a docstring's indentation taken out of the description (every client sends
        the tool list to its model: spaces are tokens)."""
        def register(fn: Any) -> Any:
            text = description if description is not None else inspect.cleandoc(fn.__doc__ or "")
            return super(PolybotServer, self).tool(*args, description=text, **kwargs)(fn)
        return register

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


# The tools each set leaves out: those that send orders or cancels, and those that write anything.
TRADING_TOOLS = frozenset({"propose_signal", "cancel_orders", "close_position"})
WRITING_TOOLS = TRADING_TOOLS | {"run_backtest", "backtest_strategy", "propose_strategy"}
LEFT_OUT = {"trading": frozenset(), "no_trading": TRADING_TOOLS, "read_only": WRITING_TOOLS}
TOOL_SETS = {"trading": "every tool, trading included", "no_trading": "no tool that sends orders or cancels",
             "read_only": "read-only tools: none sends orders or writes anything"}


def instructions(tool_set: str) -> str:
    trading = ("scan_opportunities finds mispriced complete sets with ready legs, and propose_signal(legs, "
               "wait='fills') trades them through risk and answers with the fills and fees. ")
    return ("Trade prediction markets through the polybot mesh. "
            + (trading if tool_set == "trading" else "")
            + "search_markets, get_market and get_order_book read markets; preview_signal checks a trade against "
              "risk without sending it; get_signal, list_signals, get_fills, get_positions and get_pnl tell what "
              "happened; get_risk shows limits and what this client may still spend and sell; mesh_status shows "
              "what runs and whether trading is healthy (and why not). "
            + ("Try a strategy on recorded markets first with list_recordings and run_backtest. "
               "To write one: check_strategy, backtest_strategy, then propose_strategy keeps it for the operator, "
               "who alone approves it (`polybot strategy approve`). "
               if tool_set != "read_only" else "check_strategy checks a strategy's code. ")
            + "list_strategies and get_strategy show the strategies, their state and figures. "
            + f"Tool set served: {tool_set} ({TOOL_SETS[tool_set]}).")


def build(config: Config, tool_set: str = "", agent: str = AGENT) -> MCPServer:
    """The server for ``config``, serving the tool set given (else the config's ``[mcp] tools``) to ``agent``
    (source ``mcp:<agent>``), unless an HTTP request's token names another."""
    tool_set = tool_set or config.mcp.tools
    server = PolybotServer(
        "polybot",
        instructions=instructions(tool_set),
    )

    @server.tool(annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=False),
                 description="Each polybot service's state, pid, uptime, restarts and per-socket counters, and "
                             "whether trading is healthy (markets fresh, an executor connected and ready, the "
                             "venue's conditions, signals accepted) with the reasons when it is not. A service "
                             "shown as down is not running: start the mesh with `polybot up`. This server "
                             f"serves the tool set {tool_set!r}: {TOOL_SETS[tool_set]}.")
    async def mesh_status() -> MeshStatus:
        rows = await asyncio.to_thread(collect_status, config)
        services = [
            ServiceRow(
                name=r.name, state=r.state, pid=r.pid, uptime_s=r.uptime_s, restarts=r.restarts,
                halt_reason=r.halt_reason, last_error=r.last_error,
                sockets={k: SocketFigures(sent=c.sent, received=c.received, dropped=c.dropped,
                                          undecodable=c.undecodable, oversized=c.oversized,
                                          lag_ms=c.lag_ms) for k, c in r.sockets.items()},
            )
            for r in rows
        ]
        health = trading_health(config, rows)
        trading = None if health is None else TradingHealth(
            healthy=health.healthy, reasons=health.reasons, markets=health.markets, stale=health.stale,
            stale_at_risk=health.stale_at_risk, executor_ready=health.executor_ready,
            executor_connected=health.executor_connected, venue_conditions=health.venue_conditions,
            last_accepted_s=health.signals.last_accepted_s, last_rejected_s=health.signals.last_rejected_s,
            last_refusal=health.signals.last_refusal)
        return MeshStatus(all_up=all(s.state in ("running", "halted") for s in services), trading=trading,
                          services=services)

    tools = register_tools(server, MeshLink(config), agent)
    register_resources(server, tools)
    register_backtest_tools(server, config)
    register_authoring_tools(server, config, tools)
    register_prompts(server, PROMPTS)
    for name in sorted(LEFT_OUT[tool_set]):
        server.remove_tool(name)
    return server


def close(server: MCPServer) -> None:
    """Let go of the mesh once the server has stopped: its reader threads first, then its sockets."""
    if (tools := SERVED.get(server)) is not None:
        tools.link.close()
