"""Resources for clients that prefer attaching context to calling tools: markets, one market (a template),
positions and the risk state, as JSON read live from the mesh."""
from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError

from .models import MarketIndex, MarketSummary, Rows
from .tools import Tools

JSON = "application/json"


def register_resources(server: MCPServer, tools: Tools) -> None:
    async def read(coro) -> str:
        try:
            return (await coro).model_dump_json(indent=1)
        except ToolError as exc:  # a tool's advice is a resource's error too
            raise ResourceError(str(exc)) from None

    @server.resource("polybot://markets", name="markets", mime_type=JSON,
                     description="Every market the scanner follows, with the top of each outcome's book")
    async def markets() -> str:
        async def build():
            reply = await tools.snapshot()
            books = {b.token_id: b for b in reply.books.books}
            rows = [MarketSummary(**tools.summary(mk, books, set(reply.stale), {})) for mk in reply.markets]
            return MarketIndex(markets=rows)
        return await read(build())

    @server.resource("polybot://markets/{market}", name="market", mime_type=JSON,
                     description="One market in full: outcomes, tokens, tick, minimum size, fees, end, book tops, "
                                 "last trades")
    async def market(market: str) -> str:
        return await read(tools.market_detail(market))

    @server.resource("polybot://positions", name="positions", mime_type=JSON,
                     description="Open positions from the recorded fills, with marks and PnL")
    async def positions() -> str:
        async def build():
            reply = await tools.query("positions")
            return Rows(columns=reply.columns, rows=[dict(zip(reply.columns, r)) for r in reply.rows])
        return await read(build())

    @server.resource("polybot://risk", name="risk", mime_type=JSON,
                     description="Risk's limits and their use, halted or not, with the budget left of the "
                                 "server's own agent (its `source`; a static resource cannot know which token read "
                                 "it): over HTTP with a token per agent, call get_risk for the caller's own")
    async def risk() -> str:
        return await read(tools.risk_view(tools.source(None)))

