"""Risk across processes on whose shares an agent sells and on orders the venue takes as asked: the local venue,
scanner, executor and risk each in their own process, risk's limits at their defaults; the test pushes signals
where strategies and agents would and reads the verdicts, the executions, and the venue's own records."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path

import httpx
import pytest
from py_clob_client_v2.clob_types import TradeParams

from services import messages as m
from services.sizing import exact_buy_size
from polybot_venue.server import ready_made_account

from .conftest import wait_for
from .test_risk import Desk, codes
from .venue_harness import tokens

SEED = 47
ALLOW_ANY_SOURCE = {"POLYBOT_SERVICES__RISK__OPTIONS__AGENT__SELL_ANY_SOURCE": "true"}


@pytest.fixture(scope="module")
def desk(tmp_path_factory) -> Iterator[Desk]:
    desk = Desk(Path(os.path.realpath(tmp_path_factory.mktemp("risk-orders"))), {}, SEED)
    yield desk
    desk.close()


def holdings(desk: Desk) -> dict[tuple[str, str], m.SourceHolding]:
    reply = desk.mesh.ask("risk", m.RiskRequest())
    assert isinstance(reply, m.RiskReply), reply
    return {(h.source, h.token_id): h for h in reply.holdings}


def buy(desk: Desk, token: str, size: str, source: str) -> None:
    """A FOK buy at the ask that fills, and risk counting its shares as ``source``'s."""
    _, ask = desk.book(token)
    verdict = desk.decide((token, "BUY", size, str(ask)), source=source, order_type="FOK")
    assert isinstance(verdict, m.SignalAccepted), verdict
    wait_for(lambda: (h := holdings(desk).get((source, token))) is not None and h.size == D(size),
             what=f"risk to count {size} shares as {source}'s")


def test_an_agent_sells_only_what_its_own_fills_bought_and_risk_knows_whose_after_restarts(desk: Desk) -> None:
    _, yes, _ = desk.market()
    buy(desk, yes, "10", "strategy:holder")
    buy(desk, yes, "10", "mcp:seller")
    _, ask = desk.book(yes)
    refused = desk.decide((yes, "SELL", "15", str(ask + D("0.02"))), source="mcp:seller")
    reason, = refused.reasons
    assert (reason.code, reason.limit, reason.value, reason.max_size) == ("SOURCE_POSITION", D(10), D(15), D(10))
    assert "10 bought by strategy:holder" in reason.message and "sell_any_source" in reason.message
    resting = desk.decide((yes, "SELL", "6", str(ask + D("0.02"))), source="mcp:seller")  # its own: it passes
    assert isinstance(resting, m.SignalAccepted), resting
    desk.execution(m.OrderAck, resting.orders[0].id)

    desk.mesh.stop("executor")  # a new executor knows whose they are from its journal...
    desk.mesh.start("executor")
    desk.mesh.wait_ready("executor")
    desk.restart_risk()  # ...and a new risk learns it, and the open SELL, from the executor's account
    seller = holdings(desk)[("mcp:seller", yes)]
    assert (seller.size, seller.selling) == (D(10), D(6)) and holdings(desk)[("strategy:holder", yes)].size == 10
    again = desk.decide((yes, "SELL", "5", str(ask + D("0.02"))), source="mcp:seller")
    reason, = again.reasons
    assert (reason.code, reason.limit, reason.value, reason.max_size) == ("SOURCE_POSITION", D(10), D(5), D(4))
    desk.cancel_all([resting])


def test_the_operator_lets_agents_sell_what_a_strategy_bought(desk: Desk) -> None:
    _, yes, _ = desk.market()
    buy(desk, yes, "10", "strategy:holder")
    bid, _ = desk.book(yes)
    assert codes(desk.decide((yes, "SELL", "5", str(bid)), source="mcp:trimmer", order_type="FOK")) == [
        "SOURCE_POSITION"]
    desk.restart_risk(**ALLOW_ANY_SOURCE)
    try:
        sold = desk.decide((yes, "SELL", "5", str(bid)), source="mcp:trimmer", order_type="FOK")
        assert isinstance(sold, m.SignalAccepted), sold
        assert desk.execution(m.Fill, sold.orders[0].id).size == 5
    finally:
        desk.restart_risk()


def test_a_gtd_leg_without_an_expiry_is_refused_and_with_one_rests_at_the_venue_until_then(desk: Desk) -> None:
    _, yes, _ = desk.market()
    bid, ask = desk.book(yes)
    price = bid - D("0.05")
    missing = desk.decide(m.Leg(token_id=yes, side="BUY", size=D(5), limit_price=price, order_type="GTD"))
    assert codes(missing) == ["BAD_EXPIRY"] and "expires_s" in missing.reasons[0].message
    expires = int(time.time()) + 3600
    rests = desk.decide(m.Leg(token_id=yes, side="BUY", size=D(5), limit_price=price, order_type="GTD",
                              expires_s=expires))
    assert isinstance(rests, m.SignalAccepted), rests
    assert rests.orders[0].expires_s == expires
    ack = desk.execution(m.OrderAck, rests.orders[0].id)
    at_venue = desk.venue.client(ready_made_account(SEED).private_key).get_order(ack.venue_order_id)
    assert (at_venue["order_type"], at_venue["status"], at_venue["expiration"]) == ("GTD", "LIVE", str(expires))
    post_only_fok = desk.decide(m.Leg(token_id=yes, side="BUY", size=D(5), limit_price=ask, order_type="FOK",
                                      post_only=True))
    assert codes(post_only_fok) == ["POST_ONLY"]
    desk.cancel_all([rests])


def fine_tick_market(desk: Desk) -> tuple[str, str, str]:
    """A binary market on the 0.001 tick (the harness hands out 0.01-tick markets only)."""
    markets = httpx.get(f"{desk.venue.gamma}/markets", params={"limit": 100}).json()
    market = next(mk for mk in markets if not mk["negRisk"] and mk["orderPriceMinTickSize"] == 0.001)
    return market["conditionId"], *tokens(market)


def test_a_fok_pair_at_fine_tick_prices_sized_exactly_fills_both_legs_with_the_size_asked(desk: Desk) -> None:
    market, yes, no = fine_tick_market(desk)
    (_, yes_ask), (_, no_ask) = desk.book(yes), desk.book(no)
    asks = {yes: yes_ask, no: no_ask}
    inexact = desk.decide((yes, "BUY", "25", str(yes_ask)), (no, "BUY", "25", str(no_ask)), order_type="FOK")
    size = exact_buy_size(D(25), asks.values())
    assert 5 <= size < 25
    assert [(r.code, r.leg, r.max_size) for r in inexact.reasons] == [("INEXACT_BUY", 0, size),
                                                                      ("INEXACT_BUY", 1, size)]
    pair = desk.decide((yes, "BUY", str(size), str(yes_ask)), (no, "BUY", str(size), str(no_ask)),
                       order_type="FOK")
    assert isinstance(pair, m.SignalAccepted), pair
    client = desk.venue.client(ready_made_account(SEED).private_key)

    def both_filled() -> dict[str, D]:
        filled = {yes: D(0), no: D(0)}
        for trade in client.get_trades(TradeParams(market=market)):
            filled[trade["asset_id"]] += D(trade["size"])
        return filled if all(filled.values()) else {}
    assert wait_for(both_filled, what="both legs to fill at the venue", timeout=15) == {yes: size, no: size}

    def fills_of(order_id: str) -> list[m.Fill]:
        desk.events += [e for e in desk.executions.drain() if not isinstance(e, m.Heartbeat)]
        return [e for e in desk.events if isinstance(e, m.Fill) and e.order_id == order_id]
    for order in pair.orders:
        fills = wait_for(lambda: (f := fills_of(order.id)) and sum(x.size for x in f) == size and f,
                         what="the executor to report the whole fill")
        assert all(f.price == asks[order.token_id] for f in fills)
    assert not [e for e in desk.events if isinstance(e, m.OrderCanceled | m.ResidualExposure)
                and getattr(e, "signal_id", "") == pair.signal_id]
