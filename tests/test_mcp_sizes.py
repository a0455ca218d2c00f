"""Short answers: every tool, called with its defaults on a mesh that has traded for a while (a strategy's
arbitrage sets, an agent's buys, resting orders and refusals across 60 markets), answers in under 8,000
characters of text."""
from __future__ import annotations

import os
from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path

import anyio
import httpx
import pytest
from mcp.client.client import Client
from mcp_types import Implementation

from polybot_mcp.server import build
from services import messages as m

from .conftest import wait_for
from .test_backtest import scripted
from .test_mcp_tools import book
from .test_strategy_api import SPREAD
from .trading_harness import Trading
from .venue_harness import Venue, tokens

LIMIT = 8_000
AGENT = {"MAX_ORDER_NOTIONAL": "20", "MAX_DAILY_NOTIONAL": "500", "MAX_SIGNALS_PER_MINUTE": "100"}


@pytest.fixture(scope="module")
def traded(tmp_path_factory) -> Iterator[Trading]:
    root = Path(os.path.realpath(tmp_path_factory.mktemp("sizes")))
    venue = Venue(root / "venue", 79, 100, "--still", "--markets", "60")
    mesh = Trading(root, venue, {"analytics": "", "scanner": "", "executor": "", "risk": "", "strategies": ""})
    try:
        mesh.start("analytics", "scanner", "executor")
        mesh.wait_ready("scanner", "executor")
        mesh.start("risk", **{f"POLYBOT_SERVICES__RISK__OPTIONS__AGENT__{k}": v for k, v in AGENT.items()})
        mesh.start("strategies")
        mesh.wait_ready("risk", "strategies", "analytics")
        for market in venue.markets[:12]:  # the arbitrage strategy trades each gap: 24 fills of its own
            httpx.post(f"{venue.clob}/_admin/gap", json={"market": market["conditionId"], "gap": "0.08",
                                                          "size": "30"}).raise_for_status()
        wait_for(lambda: fills(mesh) >= 24, what="the strategy's fills", timeout=60)
        scripted(mesh.config.state_path / "recordings" / "scripted")
        yield mesh
    finally:
        mesh.close()
        venue.stop()


def fills(mesh: Trading) -> int:
    return mesh.ask("analytics", m.QueryRequest(sql="SELECT count(*) FROM fills")).rows[0][0]


def session(mesh: Trading, calls: list[tuple[str, dict]]) -> tuple[set[str], dict[str, tuple[bool, str]]]:
    async def run():
        async with Client(build(mesh.config), mode="auto",
                          client_info=Implementation(name="Size Test", version="1")) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            out = {}
            for tool, args in calls:
                result = await c.call_tool(tool, args)
                out[tool] = (result.is_error, "".join(getattr(b, "text", "") for b in result.content))
            return names, out
    return anyio.run(run)


def test_every_tool_answers_in_under_8000_characters_by_default(traded: Trading) -> None:
    markets = traded.venue.markets
    agent_buys = []
    for market in markets[20:26]:  # the agent's own fills
        yes, _ = tokens(market)
        agent_buys.append({"token_id": yes, "side": "BUY", "size": 5, "limit_price": str(book(traded, yes)[1]),
                           "order_type": "FOK"})
    resting = []
    for market in markets[26:30]:
        _, no = tokens(market)
        resting.append({"token_id": no, "side": "BUY", "size": 5, "limit_price": str(book(traded, no)[0] - D("0.05"))})
    held = markets[20]
    first = [("propose_signal", {"legs": [leg], "rationale": "size test: a fill", "wait": "fills"})
             for leg in agent_buys] + [("propose_signal", {"legs": [leg], "rationale": "size test: resting"})
                                       for leg in resting] + [
        ("propose_signal", {"legs": [{**agent_buys[0], "size": 500}], "rationale": "size test: refused"})]
    for tool, args in first:  # one session each: the answers are not what is measured here
        session(traded, [(tool, args)])
    wait_for(lambda: fills(traded) >= 30, what="the agent's fills recorded", timeout=20)

    yes, no = tokens(held)
    signal = session(traded, [("list_signals", {})])[1]["list_signals"][1]
    calls = [
        ("mesh_status", {}), ("search_markets", {}), ("get_market", {"market": held["conditionId"]}),
        ("get_order_book", {"token_id": yes}), ("scan_opportunities", {}),
        ("preview_signal", {"legs": [agent_buys[1]]}), ("list_signals", {}), ("list_open_orders", {}),
        ("get_risk", {}), ("get_positions", {}), ("get_fills", {}), ("get_pnl", {}), ("list_recordings", {}),
        ("get_signal", {"signal_id": signal.split('"signal_id":"')[1].split('"')[0]}),
        ("run_backtest", {"recording": "scripted", "strategy": "arbitrage"}),
        ("propose_signal", {"legs": [resting[0]], "rationale": "size test"}),
        ("close_position", {"token_id": yes}),
        ("cancel_orders", {"everything": True}),
        ("check_strategy", {"code": SPREAD}),
        ("backtest_strategy", {"recording": "scripted", "code": SPREAD}),
        ("propose_strategy", {"name": "size_test", "code": SPREAD}),
        ("list_strategies", {}), ("get_strategy", {"name": "size_test"}),
    ]
    names, answers = session(traded, calls)
    assert names == {tool for tool, _ in calls}, names ^ {tool for tool, _ in calls}  # a new tool needs a case
    sizes = {tool: len(text) for tool, (_, text) in answers.items()}
    failed = {tool: text for tool, (error, text) in answers.items() if error}
    assert not failed, failed
    assert max(sizes.values()) < LIMIT, sorted(sizes.items(), key=lambda kv: -kv[1])
