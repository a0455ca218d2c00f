"""What the tools tell an agent is true: paging, ids given in part or of the wrong kind, tokens that are markets,
and bulk cancels, through a real MCP client against a running mesh (local venue, scanner, executor, risk,
analytics, each its own process)."""
from __future__ import annotations

import os
from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path

import anyio
import httpx
import pytest
from mcp.client.client import Client
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from polybot_mcp.server import build
from services import messages as m

from .conftest import wait_for
from .test_mcp_tools import Agent, book, error, ok
from .trading_harness import Trading, agent_mesh
from .venue_harness import tokens

AGENT = {"MAX_ORDER_NOTIONAL": "20", "MAX_DAILY_NOTIONAL": "200", "MAX_SIGNALS_PER_MINUTE": "60"}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Iterator[Trading]:
    root = Path(os.path.realpath(tmp_path_factory.mktemp("answers")))
    env = {f"POLYBOT_SERVICES__RISK__OPTIONS__AGENT__{k}": v for k, v in AGENT.items()}
    with agent_mesh(root, 73, env, "--markets", "30") as mesh:
        yield mesh


@pytest.fixture
def agent(mesh: Trading) -> Agent:
    return Agent(mesh, "auto")


def buy_at_ask(mesh: Trading, agent: Agent, token: str, size: int = 5) -> dict:
    _, ask = book(mesh, token)
    verdict = ok(agent("propose_signal", {"legs": [{"token_id": token, "side": "BUY", "size": size,
                                                    "limit_price": str(ask), "order_type": "FOK"}],
                                          "rationale": "test: a fill"}))
    assert verdict["status"] == "accepted", verdict
    return verdict


def test_get_fills_pages_newest_first_through_every_fill_once(mesh: Trading, agent: Agent) -> None:
    signals = []
    for _ in range(3):
        yes, _ = tokens(mesh.venue.market())
        signals.append(buy_at_ask(mesh, agent, yes)["signal_id"])
    wait_for(lambda: len(ok(agent("get_fills", {"source": "mine", "limit": 50}))["fills"]) >= 3,
             what="three fills recorded")
    everything = ok(agent("get_fills", {"source": "mine", "limit": 50}))["fills"]
    assert [f["at"] for f in everything] == sorted((f["at"] for f in everything), reverse=True)
    assert everything[0]["signal_id"] == signals[-1]  # the newest fill leads
    pages, cursor = [], None
    while True:
        page = ok(agent("get_fills", {"source": "mine", "limit": 1, **({"cursor": cursor} if cursor else {})}))
        pages += page["fills"]
        cursor = page["next_cursor"]
        if not cursor:
            break
        assert len(pages) <= len(everything), "the cursor never ends"
    assert [(f["trade_id"], f["order_id"]) for f in pages] == [(f["trade_id"], f["order_id"]) for f in everything]
    assert {f["outcome"] for f in everything} == {"Yes"}
    assert "next_cursor of the previous page" in error(agent("get_fills", {"cursor": "bogus"}))


def unique_start(mesh: Trading, sid: str) -> str | None:
    """The longest start of ``sid`` (shorter than it) that no other recorded signal id begins with."""
    recorded = [r[0] for r in mesh.ask("analytics", m.QueryRequest(sql="SELECT DISTINCT signal_id FROM verdicts")).rows]
    return next((sid[:k] for k in range(len(sid) - 1, 0, -1)
                 if [r for r in recorded if r.startswith(sid[:k])] == [sid]), None)


def test_get_signal_given_the_start_of_an_id_tells_the_whole_filled_signal(mesh: Trading, agent: Agent) -> None:
    for _ in range(5):  # ids are a process prefix and a counter: a start may name several (then try another)
        yes, no = tokens(mesh.venue.market())
        (_, yes_ask), (_, no_ask) = book(mesh, yes), book(mesh, no)
        verdict = ok(agent("propose_signal", {"legs": [
            {"token_id": yes, "side": "BUY", "size": 5, "limit_price": str(yes_ask), "order_type": "FOK"},
            {"token_id": no, "side": "BUY", "size": 5, "limit_price": str(no_ask), "order_type": "FOK"}],
            "rationale": "test: a pair"}))
        sid = verdict["signal_id"]
        whole = wait_for(lambda: (t := ok(agent("get_signal", {"signal_id": sid}))) and len(t["fills"]) == 2 and t,
                         what="both fills recorded")
        start = unique_start(mesh, sid)
        if start:
            break
    assert start, "no signal id with a start of its own"
    part = ok(agent("get_signal", {"signal_id": start}))
    assert part["signal_id"] == sid and part["status"] == whole["status"] == "filled"
    assert len(part["orders"]) == 2 and len(part["fills"]) == 2
    assert {D(f["size"]) for f in part["fills"]} == {D(5)}  # a pair: the same shares on each leg


def test_an_order_id_given_as_a_signal_id_names_its_signal(mesh: Trading, agent: Agent) -> None:
    yes, _ = tokens(mesh.venue.market())
    verdict = buy_at_ask(mesh, agent, yes)
    order_id = verdict["order_ids"][0]
    said = wait_for(lambda: (e := agent("get_signal", {"signal_id": order_id})).is_error
                    and "is not a signal id" in e.content[0].text and e.content[0].text,
                    what="the order recorded")
    assert f"of signal {verdict['signal_id']}" in said


def test_a_condition_id_or_an_unknown_token_given_as_a_token_says_what_to_pass(mesh: Trading, agent: Agent) -> None:
    market = mesh.venue.market()
    leg = {"side": "BUY", "size": 5, "limit_price": "0.5"}
    said = error(agent("preview_signal", {"legs": [{**leg, "token_id": market["conditionId"]}]}))
    assert "is a market, not a token" in said and "`outcome` (one of Yes, No)" in said
    said = error(agent("propose_signal", {"legs": [{**leg, "token_id": "12345"}], "rationale": "typo"}))
    assert "no market the scanner follows has a token '12345'" in said and "get_market" in said
    yes, _ = tokens(market)
    assert "is an outcome's token id, not a market" in error(agent("get_market", {"market": yes}))
    by_slug = ok(agent("preview_signal", {"legs": [{**leg, "market": market["slug"], "outcome": "yes"}]}))
    assert by_slug["legs"][0]["token_id"] == yes


@pytest.mark.parametrize(("tool", "args", "says"), [
    ("preview_signal", {"limit_price": "abc"}, "limit_price is a number of USDC per share between 0 and 1"),
    ("preview_signal", {"notional": "1e30", "size": None}, "is more than any market holds"),
    ("preview_signal", {"limit_price": "1e-30"}, "below the finest tick any market has"),
    ("propose_signal", {"order_type": "GTD", "expires": "9" * 400 + "d"}, "further ahead than any market lasts"),
    ("get_fills", {"since": "9" * 400 + "d"}, "reaches back further than any record"),
    ("list_signals", {"since": "9" * 400 + "d"}, "reaches back further than any record"),
])
def test_an_absurd_argument_is_refused_saying_what_to_pass_never_as_a_bare_tool_failure(
        mesh: Trading, agent: Agent, tool: str, args: dict, says: str) -> None:
    # Before, each of these crashed inside the tool: the model read only "Error executing tool <name>".
    if tool.endswith("_signal"):
        yes, _ = tokens(mesh.venue.market())
        leg = {k: v for k, v in {"token_id": yes, "side": "BUY", "size": 5, "limit_price": "0.3", **args}.items()
               if v is not None}
        args = {"legs": [leg], "rationale": "absurd"}
    said = error(agent(tool, args))
    assert says in said, said


def test_cancel_orders_by_signal_market_or_all_cancels_only_this_clients_orders(mesh: Trading, agent: Agent) -> None:
    markets = [mesh.venue.market() for _ in range(2)]
    resting = {}
    for market in markets:
        yes, no = tokens(market)
        (yes_bid, _), (no_bid, _) = book(mesh, yes), book(mesh, no)
        verdict = ok(agent("propose_signal", {"legs": [
            {"token_id": yes, "side": "BUY", "size": 5, "limit_price": str(yes_bid - D("0.05"))},
            {"token_id": no, "side": "BUY", "size": 5, "limit_price": str(no_bid - D("0.05"))}],
            "rationale": "test: resting bids"}))
        resting[market["conditionId"]] = verdict
    ids = {i for v in resting.values() for i in v["order_ids"]}
    wait_for(lambda: ids <= {o["order_id"] for o in ok(agent("list_open_orders", {}))["orders"]},
             what="four orders resting")
    first, second = (resting[mk["conditionId"]] for mk in markets)

    said = error(agent("cancel_orders", {"order_ids": [first["signal_id"]]}))
    assert "is a signal id, not an order id" in said and f"signal_id={first['signal_id']!r}" in said
    assert "exactly one of" in error(agent("cancel_orders", {}))
    assert "belongs to" in error(agent("cancel_orders", {"order_ids": first["order_ids"][:1]}, agent="other"))
    assert ok(agent("cancel_orders", {"everything": True}, agent="other"))["canceled"] == 0

    by_signal = ok(agent("cancel_orders", {"signal_id": first["signal_id"]}))
    assert by_signal["canceled"] == 2 and {r["order_id"] for r in by_signal["results"]} == set(first["order_ids"])
    assert all(D(r["remaining"]) == 5 for r in by_signal["results"])
    by_market = ok(agent("cancel_orders", {"market": markets[1]["slug"]}))
    assert {r["order_id"] for r in by_market["results"]} == set(second["order_ids"])
    left = {o["order_id"] for o in ok(agent("list_open_orders", {}))["orders"]}
    assert not ids & left


def test_an_unknown_prompt_name_is_refused_naming_the_prompts(mesh: Trading) -> None:
    async def session():
        async with Client(build(mesh.config), mode="auto") as client:
            try:
                await client.get_prompt("daily_reprot", {})
            except MCPError as exc:
                return exc
        raise AssertionError("an unknown prompt was given")
    refused = anyio.run(session)
    assert refused.code == INVALID_PARAMS
    assert "no prompt named 'daily_reprot'" in refused.message and "daily_report" in refused.message


def test_from_a_gap_to_a_filled_equal_pair_in_two_calls_with_fills_and_fees_to_the_cent(mesh: Trading,
                                                                                        agent: Agent) -> None:
    market = mesh.venue.market()
    gap = httpx.post(f"{mesh.venue.clob}/_admin/gap", json={"market": market["conditionId"], "gap": "0.08",
                                                             "size": "30"}).json()
    assert D(gap["sum"]) == D("0.92"), gap

    def scanned():
        found = ok(agent("scan_opportunities", {}))["opportunities"]
        return found and found[0]["key"] == market["conditionId"] and found[0]
    best = wait_for(scanned, what="the scan to find the gap", timeout=10)
    rate = D(ok(agent("get_market", {"market": market["conditionId"]}))["fee_rate"])
    asks = [D(a) for a in gap["asks"].values()]
    assert best["kind"] == "binary" and best["side"] == "BUY"
    assert D(best["edge"]) == 1 - sum(a + rate * a * (1 - a) for a in asks)  # at the best asks, after fees
    legs = best["legs"]
    assert {leg["size"] for leg in legs} == {best["sets"]} and D(best["sets"]) >= 5
    assert all(D(leg["size"]) * D(leg["limit_price"]) <= 20 for leg in legs)  # the agent's per-order limit

    verdict = ok(agent("propose_signal", {"legs": legs, "rationale": "test: the gap", "wait": "fills"}))
    outcome = verdict["outcome"]
    assert verdict["status"] == "accepted" and outcome["done"] is True, verdict
    assert [(leg["outcome"], leg["state"], D(leg["filled"])) for leg in outcome["legs"]] == [
        ("Yes", "filled", D(best["sets"])), ("No", "filled", D(best["sets"]))]
    fees = sum(fee(D(best["sets"]), D(leg["limit_price"]), rate) for leg in legs)
    assert D(outcome["fees"]) == fees == D(best["fees"])
    assert D(outcome["paid"]) == D(best["cost"]) and outcome["residual"] is None
    assert D(best["sets"]) - D(outcome["paid"]) - D(outcome["fees"]) == D(best["profit"]) > 0


def fee(shares: D, price: D, rate: D) -> D:
    """The venue's taker fee: shares x rate x p x (1 - p), floored to 5 decimals."""
    return (shares * rate * price * (1 - price)).quantize(D("0.00001"), rounding="ROUND_FLOOR")


def test_close_position_sells_what_this_client_holds_at_the_bid_through_risk(mesh: Trading, agent: Agent) -> None:
    market = mesh.venue.market()
    yes, _ = tokens(market)
    buy_at_ask(mesh, agent, yes, size=6)
    mine = wait_for(lambda: [p for p in ok(agent("get_positions", {"source": "mine", "market": market["slug"]}))[
        "positions"] if p["outcome"] == "Yes"], what="the position recorded")
    assert D(mine[0]["size"]) == 6 and mine[0]["outcome"] == "Yes"
    assert "holds no shares" in error(agent("close_position", {"market": market["slug"], "outcome": "Yes"},
                                            agent="other"))
    assert "holds 6 shares" in error(agent("close_position", {"token_id": yes, "size": 7}))
    bid, _ = book(mesh, yes)
    accepted_before = int(mesh.detail("risk")["accepted"])
    closed = ok(agent("close_position", {"market": market["conditionId"], "outcome": "yes"}))
    assert closed["status"] == "accepted" and int(mesh.detail("risk")["accepted"]) == accepted_before + 1
    assert closed["legs"] == [{"token_id": yes, "side": "SELL", "size": "6", "limit_price": str(bid),
                               "order_type": "FAK"}]
    leg, = closed["outcome"]["legs"]
    assert (leg["state"], D(leg["filled"]), D(leg["avg_price"])) == ("filled", 6, bid)
    assert D(closed["outcome"]["paid"]) == -6 * bid  # received
    wait_for(lambda: not [p for p in ok(agent("get_positions", {"source": "mine", "market": market["slug"]}))[
        "positions"] if p["outcome"] == "Yes"], what="the position closed")


def test_get_risk_names_this_clients_source_and_the_venues_collateral_and_allowance(mesh: Trading,
                                                                                   agent: Agent) -> None:
    from py_clob_client_v2 import ClobClient
    from py_clob_client_v2.clob_types import AssetType, BalanceAllowanceParams

    from polybot_venue.server import ready_made_account

    venue = ClobClient(mesh.venue.clob, chain_id=137, key=ready_made_account(mesh.venue.seed).private_key)
    venue.set_api_creds(venue.create_or_derive_api_key())  # the venue's own word on the executor's account
    said = D(venue.get_balance_allowance(BalanceAllowanceParams(asset_type=AssetType.COLLATERAL))["balance"])
    # The executor reads it soon after each fill (the earlier tests traded): wait until it has.
    risk = wait_for(lambda: (r := ok(agent("get_risk", {}))) and D(r["collateral"] or -1) == said / 10**6 and r,
                    what="the executor's reading of the collateral")
    assert risk["source"] == agent.source and risk["allowance"] == "unlimited"
    assert risk["balance_at"].endswith("+00:00")


def test_get_risk_shows_a_finite_allowance_as_a_number_once_the_executor_has_read_it(mesh: Trading,
                                                                                    agent: Agent) -> None:
    from py_clob_client_v2 import ClobClient
    from py_clob_client_v2.clob_types import AssetType, BalanceAllowanceParams

    from polybot_venue.server import ready_made_account

    account = ready_made_account(mesh.venue.seed)
    mesh.venue.admin("approve", address=account.address, exchange="all", amount=5000)  # as an approval on chain
    yes, _ = tokens(mesh.venue.market())
    buy_at_ask(mesh, agent, yes)  # a fill: the executor reads the balance soon after
    venue = ClobClient(mesh.venue.clob, chain_id=137, key=account.private_key)
    venue.set_api_creds(venue.create_or_derive_api_key())

    def least() -> D:  # the venue's word: the least of the exchanges' allowances, the one the fill spent from
        said = venue.get_balance_allowance(BalanceAllowanceParams(asset_type=AssetType.COLLATERAL))
        return min(D(a) for a in said["allowances"].values()) / 10**6

    allowance = wait_for(lambda: (a := least()) < 5000 and a, what="the fill to spend the allowance")
    risk = wait_for(lambda: (r := ok(agent("get_risk", {}))) and r["allowance"] != "unlimited"
                    and D(r["allowance"]) == allowance and r, what="the executor's reading of the allowance")
    assert risk["allowance"] == f"{allowance.normalize():f}"
