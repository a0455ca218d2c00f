"""The MCP tools through a real MCP client (in memory, both protocol eras) against a running mesh: the local
venue, scanner, executor, risk and analytics, each its own process. An agent's signal goes through risk."""
from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal as D
from pathlib import Path

import anyio
import httpx
import pytest
import httpx2
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import Implementation

from polybot_mcp.server import build
from services import messages as m
from services.strategies.store import Budget, Store

from .conftest import wait_for
from .trading_harness import Trading, agent_mesh
from .venue_harness import tokens

AGENT = {"MAX_ORDER_NOTIONAL": "20", "MAX_DAILY_NOTIONAL": "60", "MAX_SIGNALS_PER_MINUTE": "30"}
READ_TOOLS = {"mesh_status", "search_markets", "get_market", "get_order_book", "preview_signal", "get_signal",
              "list_open_orders", "get_risk", "get_positions", "get_fills", "get_pnl", "list_recordings",
              "list_signals", "scan_opportunities", "check_strategy", "list_strategies", "get_strategy"}
WRITE_TOOLS = {"propose_signal", "cancel_orders", "close_position"}
# Write report files, or a pending strategy for the operator; touch no market.
LOCAL_TOOLS = {"run_backtest", "backtest_strategy", "propose_strategy"}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Iterator[Trading]:
    root = Path(os.path.realpath(tmp_path_factory.mktemp("mcp")))
    env = {f"POLYBOT_SERVICES__RISK__OPTIONS__AGENT__{k}": v for k, v in AGENT.items()}
    with agent_mesh(root, 71, env, "--markets", "30") as mesh:
        yield mesh


def call(mesh: Trading, tool: str, args: dict, mode: str = "legacy", agent: str = "claude-test",
         client: str = "Claude Test"):
    """One call in a client session with a server serving ``agent`` (the operator's name for it; ``client`` is
    only what the client calls itself)."""
    async def session():
        async with Client(build(mesh.config, agent=agent), mode=mode,
                          client_info=Implementation(name=client, version="1")) as c:
            return await c.call_tool(tool, args)
    return anyio.run(session)


class Agent:
    """An MCP client session per call, in one protocol era, served as its own agent (so its own agent budget)."""

    def __init__(self, mesh: Trading, era: str) -> None:
        self.mesh, self.era, self.name = mesh, era, f"claude-test-{era}"
        self.source = f"mcp:claude-test-{era}"

    def __call__(self, tool: str, args: dict, agent: str = ""):
        return call(self.mesh, tool, args, self.era, agent or self.name)


@pytest.fixture(params=["legacy", "auto"])  # the initialize handshake, and the 2026 discover era
def agent(mesh: Trading, request) -> Agent:
    return Agent(mesh, request.param)


def ok(result) -> dict:
    assert result.is_error is False, result.content[0].text
    return result.structured_content


def error(result) -> str:
    assert result.is_error is True, result.structured_content
    return result.content[0].text


def book(mesh: Trading, token: str) -> tuple[D, D]:
    got = httpx.get(f"{mesh.venue.clob}/book", params={"token_id": token}).json()
    return max(D(b["price"]) for b in got["bids"]), min(D(a["price"]) for a in got["asks"])


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_every_tool_has_an_output_schema_and_honest_annotations(mesh: Trading, mode: str) -> None:
    async def session():
        async with Client(build(mesh.config), mode=mode) as c:
            return (await c.list_tools()).tools
    tools = {t.name: t for t in anyio.run(session)}
    assert READ_TOOLS | WRITE_TOOLS <= set(tools)
    for name, tool in tools.items():
        assert tool.output_schema is not None, name
        assert tool.description and "\n " not in tool.description, name  # no docstring indentation sent
    assert all(tools[n].annotations.read_only_hint is True for n in READ_TOOLS)
    assert all(tools[n].annotations.destructive_hint is True and not tools[n].annotations.read_only_hint
               for n in WRITE_TOOLS)
    assert all(tools[n].annotations.destructive_hint is False and not tools[n].annotations.open_world_hint
               for n in LOCAL_TOOLS)
    assert set(tools) == READ_TOOLS | WRITE_TOOLS | LOCAL_TOOLS


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_search_markets_pages_with_an_opaque_cursor_sorted_by_volume(mesh: Trading, mode: str) -> None:
    first = ok(call(mesh, "search_markets", {"limit": 7}, mode))
    assert len(first["markets"]) == 7 and first["next_cursor"] and first["total"] >= 30
    second = ok(call(mesh, "search_markets", {"limit": 7, "cursor": first["next_cursor"]}, mode))
    volumes = [D(x["volume"]) for x in first["markets"] + second["markets"]]
    assert volumes == sorted(volumes, reverse=True)
    assert not {x["market"] for x in first["markets"]} & {x["market"] for x in second["markets"]}
    word = first["markets"][0]["question"].split()[-1].strip("?")
    assert any(word in x["question"] for x in ok(call(mesh, "search_markets", {"query": word}, mode))["markets"])
    assert "next_cursor of the previous page" in error(call(mesh, "search_markets", {"cursor": "bogus"}, mode))


def test_get_market_and_the_order_book_show_what_the_venue_shows(mesh: Trading, agent) -> None:
    market = mesh.venue.market()
    yes, no = tokens(market)
    detail = ok(agent("get_market", {"market": market["conditionId"]}))
    assert [o["token_id"] for o in detail["outcomes"]] == [yes, no]
    assert D(detail["tick_size"]) == D(str(market["orderPriceMinTickSize"]))
    assert D(detail["min_size"]) == D(str(market["orderMinSize"]))
    bid, ask = book(mesh, yes)
    assert (D(detail["outcomes"][0]["best_bid"]), D(detail["outcomes"][0]["best_ask"])) == (bid, ask)
    shown = ok(agent("get_order_book", {"market": market["conditionId"], "outcome": "no", "depth": 3}))
    venue = httpx.get(f"{mesh.venue.clob}/book", params={"token_id": no}).json()
    best_bids = sorted((D(b["price"]) for b in venue["bids"]), reverse=True)[:3]
    assert shown["token_id"] == no and [D(lv["price"]) for lv in shown["bids"]] == best_bids
    assert "search_markets" in error(agent("get_market", {"market": "0xnot-a-market"}))
    assert "its outcomes are Yes, No" in error(agent("get_order_book", {"market": market["conditionId"],
                                                                              "outcome": "Maybe"}))
    assert "give `token_id`, or both" in error(agent("get_order_book", {"market": market["conditionId"]}))


def test_preview_checks_through_risk_sends_nothing_and_gives_the_largest_size_that_passes(mesh: Trading, agent) -> None:
    market = mesh.venue.market()
    yes, _ = tokens(market)
    bid, _ = book(mesh, yes)
    before = mesh.detail("risk")
    fine = ok(agent("preview_signal", {"legs": [{"token_id": yes, "side": "BUY", "size": 5,
                                                      "limit_price": str(bid)}]}))
    assert fine["status"] == "accepted" and fine["order_ids"] == []
    big = ok(agent("preview_signal", {"legs": [{"market": market["conditionId"], "outcome": "Yes",
                                                     "side": "BUY", "notional": 100, "limit_price": str(bid)}]}))
    reason = next(r for r in big["reasons"] if r["code"] == "ORDER_NOTIONAL")
    assert big["status"] == "rejected" and D(reason["limit"]) == 20
    assert D(big["max_size"]) == (20 / bid).quantize(D("0.01"), rounding="ROUND_DOWN")
    gtd = {"token_id": yes, "side": "BUY", "size": 5, "limit_price": str(bid), "order_type": "GTD"}
    no_expiry = ok(agent("preview_signal", {"legs": [gtd]}))
    assert [r["code"] for r in no_expiry["reasons"]] == ["BAD_EXPIRY"]
    expiring = {**gtd, "expires": "10m", "post_only": True}
    previewed = ok(agent("preview_signal", {"legs": [expiring]}))
    assert previewed["status"] == "accepted"
    assert previewed["legs"][0]["post_only"] == "true" and int(previewed["legs"][0]["expires_s"]) > time.time()
    at = (datetime.now(timezone.utc) + timedelta(minutes=30)).isoformat()
    assert ok(agent("preview_signal", {"legs": [{**gtd, "expires": at}]}))["status"] == "accepted"
    assert "expires is a duration from now" in error(agent("preview_signal", {"legs": [{**gtd, "expires": "soon"}]}))
    after = mesh.detail("risk")
    assert (after["accepted"], after["rejected"]) == (before["accepted"], before["rejected"])  # nothing decided
    both = {"token_id": yes, "side": "BUY", "size": 5, "notional": 5, "limit_price": str(bid)}
    assert "exactly one of `size`" in error(agent("preview_signal", {"legs": [both]}))
    assert "limit_price" in error(agent("preview_signal", {"legs": [{"token_id": yes, "side": "BUY",
                                                                          "size": 5, "limit_price": 1.5}]}))


def test_an_agent_signal_goes_through_risk_to_fills_it_can_follow(mesh: Trading, agent) -> None:
    market = mesh.venue.market()
    yes, no = tokens(market)
    (_, yes_ask), (_, no_ask) = book(mesh, yes), book(mesh, no)
    accepted_before = int(mesh.detail("risk")["accepted"])
    started = datetime.now(timezone.utc).isoformat()
    verdict = ok(agent("propose_signal", {
        "legs": [{"token_id": yes, "side": "BUY", "size": 5, "limit_price": str(yes_ask), "order_type": "FOK"},
                 {"token_id": no, "side": "BUY", "size": 5, "limit_price": str(no_ask), "order_type": "FOK"}],
        "rationale": "test: both sides"}))
    assert verdict["status"] == "accepted" and len(verdict["order_ids"]) == 2
    assert int(mesh.detail("risk")["accepted"]) == accepted_before + 1  # risk itself decided it: no shortcut
    trace = wait_for(lambda: (t := ok(agent("get_signal", {"signal_id": verdict["signal_id"]})))
                     and len(t["fills"]) == 2 and t, what="the agent's fills recorded", timeout=15)
    hops = [h["hop"] for h in trace["hops"]]
    assert {"signal", "verdict", "submitted", "ack", "fill"} <= set(hops)
    assert {f["token_id"] for f in trace["fills"]} == {yes, no}
    held = ok(agent("get_positions", {"market": market["conditionId"]}))["positions"]
    assert {r["outcome"]: D(r["size"]) for r in held} == {"Yes": 5, "No": 5}
    fills = ok(agent("get_fills", {"market": market["conditionId"], "since": "10m"}))["fills"]
    assert len(fills) == 2 and ok(agent("get_pnl", {"by": "market"}))["rows"]
    assert {f["outcome"] for f in fills} == {"Yes", "No"} and held[0]["question"] == market["question"]
    fees = sum(D(f["fee"]) for f in {(f["trade_id"], f["order_id"]): f for f in fills}.values())
    period = {r["group"]: r for r in ok(agent("get_pnl", {"by": "market", "since": started}))["rows"]}
    row = period[market["conditionId"]]  # two buys since then: their fees are all that is realized
    assert D(row["period_fees"]) == fees and D(row["period_realized"]) == -fees
    assert D(row["period_pnl"]) == D(row["total"]) - D(row["total_at_since"])
    assert "neither a duration" in error(agent("get_pnl", {"since": "last week"}))
    assert "neither a duration" in error(agent("get_fills", {"since": "yesterday-ish"}))
    risk = ok(agent("get_risk", {}))
    spent = D(5) * (yes_ask + no_ask)
    assert D(risk["agent_budget_left"]) == 60 - spent and risk["halted"] is False

    def mine() -> dict:  # what this client bought itself, so what it may sell
        held = {h["token_id"]: (D(h["size"]), D(h["sellable"])) for h in ok(agent("get_risk", {}))["holdings"]}
        return held if yes in held and no in held else {}
    assert wait_for(mine, what="risk to count the agent's fills as its own")[yes] == mine()[no] == (5, 5)


def test_an_over_limit_proposal_is_rejected_with_its_reason_and_nothing_is_sent(mesh: Trading, agent) -> None:
    market = mesh.venue.market()
    yes, _ = tokens(market)
    bid, _ = book(mesh, yes)
    verdict = ok(agent("propose_signal", {"legs": [{"token_id": yes, "side": "BUY", "notional": 50,
                                                         "limit_price": str(bid)}], "rationale": "too big"}))
    assert verdict["status"] == "rejected" and verdict["order_ids"] == []
    assert "ORDER_NOTIONAL" in [r["code"] for r in verdict["reasons"]] and D(verdict["max_size"]) > 0


def test_an_agent_lists_and_cancels_its_own_resting_order_but_not_anothers(mesh: Trading, agent) -> None:
    market = mesh.venue.market()
    yes, _ = tokens(market)
    bid, _ = book(mesh, yes)
    verdict = ok(agent("propose_signal", {"legs": [{"token_id": yes, "side": "BUY", "size": 5,
                                                         "limit_price": str(bid - D("0.05"))}],
                                               "rationale": "a resting bid"}))
    order_id, = verdict["order_ids"]
    listed = wait_for(lambda: [o for o in ok(agent("list_open_orders", {}))["orders"]
                               if o["order_id"] == order_id], what="the order resting")
    assert listed[0]["source"] == agent.source
    assert ok(agent("list_open_orders", {}, agent="other-agent"))["orders"] == []
    assert f"belongs to {agent.source}" in error(agent("cancel_orders", {"order_ids": [order_id]},
                                                      agent="other-agent"))
    done = ok(agent("cancel_orders", {"order_ids": [order_id]}))["results"]
    assert [(r["order_id"], r["canceled"], D(r["remaining"])) for r in done] == [(order_id, True, 5)]
    assert "is not open" in error(agent("cancel_orders", {"order_ids": [order_id]}))


def test_with_the_mesh_down_tools_say_how_to_start_it(mesh: Trading, tmp_path) -> None:
    from services.config import load
    lonely = load(None, {"HOME": str(tmp_path), "POLYBOT_STATE_DIR": str(tmp_path / "s")})

    async def session():
        async with Client(build(lonely), mode="legacy") as c:
            return await c.call_tool("search_markets", {})
    assert "polybot up" in error(anyio.run(session))


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_markets_one_market_positions_and_risk_are_resources_too(mesh: Trading, mode: str) -> None:
    market = mesh.venue.markets[0]

    async def session():
        async with Client(build(mesh.config), mode=mode) as c:
            listed = {str(r.uri) for r in (await c.list_resources()).resources}
            templates = {t.uri_template for t in (await c.list_resource_templates()).resource_templates}
            read = {}
            for uri in ("polybot://markets", f"polybot://markets/{market['conditionId']}", "polybot://positions",
                        "polybot://risk"):
                read[uri] = json.loads((await c.read_resource(uri)).contents[0].text)
            try:
                await c.read_resource("polybot://markets/0xnot-a-market")
                missing = ""
            except Exception as exc:  # the SDK raises the server's resource error
                missing = str(exc)
            return listed, templates, read, missing

    listed, templates, read, missing = anyio.run(session)
    assert {"polybot://markets", "polybot://positions", "polybot://risk"} <= listed
    assert "polybot://markets/{market}" in templates
    assert market["conditionId"] in {x["market"] for x in read["polybot://markets"]["markets"]}
    one = read[f"polybot://markets/{market['conditionId']}"]
    assert one["market"] == market["conditionId"] and D(one["tick_size"]) > 0
    assert "columns" in read["polybot://positions"]
    assert D(read["polybot://risk"]["limits"]["agent.max_order_notional"]) == 20
    assert "search_markets" in missing


ALPHA, BETA = "pb-alpha-token-5c1e9a7b3d", "pb-beta-token-8e2f4a6c0b"


def over_http(url: str, token: str, client: str, calls: list[tuple[str, dict]], mode: str = "auto") -> list:
    """One client session over HTTP with ``token``, calling itself ``client``; each call's result."""
    async def session():
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, trust_env=False,
                                      timeout=httpx2.Timeout(10, read=60)) as http:
            async with Client(streamable_http_client(url, http_client=http), mode=mode,
                              client_info=Implementation(name=client, version="1")) as c:
                return [await c.call_tool(tool, args) for tool, args in calls]
    return anyio.run(session)


def test_over_http_the_token_decides_whose_budget_and_orders_whatever_the_client_calls_itself(
        mesh: Trading, tmp_path: Path) -> None:
    from .test_mcp_http import INITIALIZE, MCP_HEADERS, Server, tokens_file

    path = tokens_file(tmp_path, f"# one line per agent\nalpha {ALPHA}\nbeta {BETA}  # the desk's second agent\n")
    server = Server(mesh.config_file, "--tokens-file", str(path))
    try:
        wait_for(server.answering, what="the HTTP server to answer")
        yes, _ = tokens(mesh.venue.market())
        bid, _ = book(mesh, yes)
        price = bid - D("0.05")
        # alpha calls itself "beta": its order and its spending are alpha's all the same.
        verdict, = over_http(server.url, ALPHA, "beta", [("propose_signal", {
            "legs": [{"token_id": yes, "side": "BUY", "size": 10, "limit_price": str(price)}],
            "rationale": "a resting bid"})])
        order_id, = ok(verdict)["order_ids"]
        spent = 10 * price
        # beta calls itself "alpha" (and the name alpha's source would have): nothing of alpha's is its.
        risk, listed, by_id, everything = over_http(server.url, BETA, "alpha", [
            ("get_risk", {}), ("list_open_orders", {}), ("cancel_orders", {"order_ids": [order_id]}),
            ("cancel_orders", {"everything": True})], mode="legacy")  # the initialize handshake era too
        assert ok(risk)["source"] == "mcp:beta" and D(ok(risk)["agent_budget_left"]) == 60
        assert ok(listed)["orders"] == []
        assert "belongs to mcp:alpha" in error(by_id)
        assert ok(everything)["canceled"] == 0
        # alpha under a third name: the same budget spent, the same order, which it may cancel.
        risk, listed, done = over_http(server.url, ALPHA, "a-fresh-name", [
            ("get_risk", {}), ("list_open_orders", {}), ("cancel_orders", {"order_ids": [order_id]})])
        assert ok(risk)["source"] == "mcp:alpha" and D(ok(risk)["agent_budget_left"]) == 60 - spent
        assert [o["order_id"] for o in ok(listed)["orders"]] == [order_id]
        assert ok(done)["canceled"] == 1
        # A session stays with the agent whose token opened it.
        opened = httpx.post(server.url, json=INITIALIZE, trust_env=False, timeout=5,
                            headers={**MCP_HEADERS, "Authorization": f"Bearer {ALPHA}"})
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        taken = httpx.post(server.url, json=ping, trust_env=False, timeout=5, headers={
            **MCP_HEADERS, "Authorization": f"Bearer {BETA}", "mcp-protocol-version": "2025-06-18",
            "mcp-session-id": opened.headers["mcp-session-id"]})
        assert taken.status_code == 404
    finally:
        server.stop()
    assert ALPHA not in server.log() and BETA not in server.log()
    assert "for agents alpha, beta" in server.log()


def test_list_strategies_gives_an_approved_strategys_pnl_signals_and_refusals_by_code(mesh: Trading) -> None:
    store = Store(mesh.config.state_path)
    store.propose("figured", "class Figured: ...\n", "Figured", {}, [], Budget(), by="mcp:test")
    store.approve("figured", Budget(), by="operator")  # as `polybot strategy approve` does
    token, _ = tokens(mesh.venue.market())
    bid, ask = book(mesh, token)
    out, decisions = mesh.bus.outbound("signals"), mesh.bus.inbound("decisions")
    wait_for(lambda: out.socket.pipes and decisions.socket.pipes, what="the test's sockets")
    taken = m.Signal(source="strategy:figured", legs=[m.Leg(token_id=token, side="BUY", size=D(5), limit_price=ask,
                                                            order_type="FOK")])
    tiny = m.Signal(source="strategy:figured", legs=[m.Leg(token_id=token, side="BUY", size=D("0.5"),
                                                           limit_price=bid)])
    assert out.send(taken) and out.send(tiny)
    verdicts: dict[str, m.Message] = {}

    def decided() -> bool:
        verdicts.update({v.signal_id: v for v in decisions.drain() if getattr(v, "signal_id", "") in (taken.id,
                                                                                                     tiny.id)})
        return len(verdicts) == 2
    wait_for(decided, what="risk's verdicts")
    assert isinstance(verdicts[taken.id], m.SignalAccepted) and isinstance(verdicts[tiny.id], m.SignalRejected)
    codes = {r.code for r in verdicts[tiny.id].reasons}

    def figures() -> dict | None:
        row = next(r for r in ok(call(mesh, "list_strategies", {}))["strategies"] if r["name"] == "figured")
        got = row.get("figures") or {}
        return row if got.get("signals") == 2 and got.get("total") is not None else None
    row = wait_for(figures, what="the strategy's figures in analytics")
    assert (row["origin"], row["state"], row["service"]) == ("agent", "approved", "strategy_figured")
    assert row["figures"]["accepted"] == 1 and row["figures"]["refusals_by_code"] == {c: 1 for c in codes}
    pnl = {r["group"]: r for r in ok(call(mesh, "get_pnl", {"by": "source"}))["rows"]}
    assert D(row["figures"]["total"]) == D(pnl["strategy:figured"]["total"])  # PnL by source, as get_pnl has it
