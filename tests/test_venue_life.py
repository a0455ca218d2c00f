"""Living markets and the admin endpoint: deterministic history, mispricings an arbitrage can take, lifecycle."""
from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from py_clob_client_v2.clob_types import OrderArgsV2, OrderType
from websockets.sync.client import connect

from polybot_venue.life import LifeOptions
from polybot_venue.server import LocalVenue, VenueOptions

from .venue_harness import Venue, tokens

BUSY = LifeOptions(requotes_per_s=40, trades_per_s=10, gaps_per_s=2, resolutions_per_s=0.5)


def history(seed: int, steps: int = 200) -> list[tuple]:
    """Run the living markets on a simulated clock and record everything observable."""
    now = [1_800_000_000_000]
    venue = LocalVenue(VenueOptions(seed=seed, markets=6, events=1, life=BUSY), clock=lambda: now[0])
    engine = venue.state.engine
    seen = []
    for _ in range(steps):
        now[0] += 100
        news = venue.life.step(now[0])
        seen.append((
            tuple(sorted((t, tuple(engine.book_levels(t)[0][:3]), tuple(engine.book_levels(t)[1][:3]))
                         for t in news.touched)),
            tuple((t.id, t.price, t.size) for t in engine.trade_log[-5:]),
            tuple(m.condition_id for m in news.resolved), tuple(m.condition_id for m in news.listed)))
    return seen


def test_the_same_seed_gives_the_same_market_history_and_another_seed_does_not() -> None:
    first, second = history(3), history(3)
    assert first == second
    assert history(4) != first
    assert any(step[1] for step in first), "no trade printed"
    assert any(step[2] for step in first) and any(step[3] for step in first), "no market resolved and listed"


def test_prices_move_and_mispricings_open_and_close_by_themselves() -> None:
    now = [1_800_000_000_000]
    venue = LocalVenue(VenueOptions(seed=9, markets=6, events=1, life=BUSY), clock=lambda: now[0])
    engine, life = venue.state.engine, venue.life
    start = dict(life.fair)
    binary_gaps = event_gaps = 0
    for _ in range(300):
        now[0] += 100
        life.step(now[0])
        for market in engine.markets.values():
            asks = [engine.best(t)[1] for t in market.tokens]
            if not market.neg_risk and None not in asks and sum(asks) < 1:
                binary_gaps += 1
        for event in life.events.values():
            asks = [engine.best(m.tokens[0])[1] for m in event.markets if not m.closed]
            if None not in asks and sum(asks) < 1:
                event_gaps += 1
    assert any(life.fair[c] != p for c, p in start.items() if c in life.fair)
    assert binary_gaps > 0 and event_gaps > 0
    now[0] += 10_000  # longer than a mispricing lives, with no new ones
    venue.life.options = LifeOptions(requotes_per_s=0, trades_per_s=0, gaps_per_s=0, resolutions_per_s=0)
    life.step(now[0])
    for market in engine.markets.values():
        asks = [engine.best(t)[1] for t in market.tokens]
        assert market.neg_risk or None in asks or sum(asks) >= 1


@pytest.fixture(scope="module")
def venue(tmp_path_factory) -> Iterator[Venue]:
    venue = Venue(Path(os.path.realpath(tmp_path_factory.mktemp("venue"))) / "s", 21)
    yield venue
    venue.stop()


def admin(venue: Venue, action: str, **body) -> dict:
    response = httpx.post(f"{venue.clob}/_admin/{action}", json=body, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_an_admin_gap_lets_a_client_buy_yes_and_no_for_less_than_one(venue: Venue) -> None:
    client = venue.client()
    market = venue.market()
    yes, no = tokens(market)
    opened = admin(venue, "gap", market=market["conditionId"], gap="0.05", size="20")
    assert Decimal(opened["sum"]) == Decimal("0.95")
    book = {t: client.get_order_book(t) for t in (yes, no)}
    assert sum(Decimal(book[t]["asks"][-1]["price"]) for t in (yes, no)) == Decimal("0.95")
    cost = Decimal(0)
    for token in (yes, no):
        ask = Decimal(book[token]["asks"][-1]["price"])
        filled = client.create_and_post_order(OrderArgsV2(token_id=token, price=float(ask), size=20, side="BUY"),
                                              order_type=OrderType.FOK)
        assert filled["status"] == "matched"
        cost += Decimal(filled["makingAmount"])
    assert cost < 20  # 20 pairs, each redeemable for 1, bought for less (fees included)


def test_an_admin_event_gap_makes_the_yes_asks_of_every_outcome_sum_below_one(venue: Venue) -> None:
    event = httpx.get(f"{venue.gamma}/events").json()[0]
    opened = admin(venue, "gap", event=event["id"], gap="0.04")
    yes_tokens = [json.loads(m["clobTokenIds"])[0] for m in event["markets"]]
    asks = [Decimal(httpx.get(f"{venue.clob}/book", params={"token_id": t}).json()["asks"][-1]["price"])
            for t in yes_tokens]
    assert sum(asks) == Decimal(opened["sum"]) <= Decimal("0.96")


def test_admin_move_tick_and_resolve_reach_the_market_channel_and_gamma(venue: Venue) -> None:
    holder = venue.client()
    market = venue.market()
    yes, no = tokens(market)
    ask = Decimal(holder.get_order_book(yes)["asks"][-1]["price"])
    holder.create_and_post_order(OrderArgsV2(token_id=yes, price=float(ask), size=10, side="BUY"),
                                 order_type=OrderType.FOK)
    with connect(venue.market_ws) as ws:
        ws.send(json.dumps({"type": "market", "assets_ids": [yes, no], "custom_feature_enabled": True}))
        ws.recv(timeout=10)  # the dump
        admin(venue, "move", market=market["conditionId"], price="0.30")
        assert Decimal(holder.get_order_book(yes)["bids"][-1]["price"]) == Decimal("0.29")
        admin(venue, "tick", market=market["conditionId"], tick="0.001")
        admin(venue, "resolve", market=market["conditionId"], winner="Yes")
        kinds = []
        while "market_resolved" not in kinds:
            data = json.loads(ws.recv(timeout=10))
            kinds += [m["event_type"] for m in (data if isinstance(data, list) else [data])]
        assert kinds.index("price_change") < kinds.index("tick_size_change") < kinds.index("market_resolved")
    assert httpx.get(f"{venue.clob}/tick-size", params={"token_id": yes}).json() == {"minimum_tick_size": 0.001}
    gamma = next(m for m in httpx.get(f"{venue.gamma}/markets", params={"closed": "true"}).json()
                 if m["conditionId"] == market["conditionId"])
    assert gamma["closed"] is True and json.loads(gamma["outcomePrices"]) == ["1", "0"]
    assert holder.get_balance_allowance()["balance"] == str(
        int((Decimal(10_000) - ask * 10 - fee(ask, 10, market) + 10) * 10**6))


def fee(price: Decimal, size: int, market: dict) -> Decimal:
    rate = Decimal(str(market["feeSchedule"]["rate"]))
    return (size * rate * price * (1 - price)).quantize(Decimal("0.00001"), rounding="ROUND_FLOOR")


def test_dropped_connections_close_and_a_reconnect_subscribes_again(venue: Venue) -> None:
    yes, _ = tokens(venue.market())
    with connect(venue.market_ws) as ws:
        ws.send(json.dumps({"type": "market", "assets_ids": [yes]}))
        ws.recv(timeout=10)
        assert admin(venue, "drop-connections")["dropped"] >= 1
        with pytest.raises(Exception):
            ws.recv(timeout=10)
    with connect(venue.market_ws) as ws:
        ws.send(json.dumps({"type": "market", "assets_ids": [yes]}))
        assert json.loads(ws.recv(timeout=10))[0]["asset_id"] == yes


def test_a_stalled_venue_answers_nothing_until_the_stall_ends(venue: Venue) -> None:
    admin(venue, "stall", seconds=1.5)
    with pytest.raises(httpx.TimeoutException):
        httpx.get(f"{venue.clob}/ok", timeout=0.3)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            assert httpx.get(f"{venue.clob}/ok", timeout=1).text == "OK"
            break
        except httpx.TimeoutException:
            continue
    else:
        raise AssertionError("the venue did not come back")


def test_admin_requests_with_bad_arguments_say_what_to_send(venue: Venue) -> None:
    response = httpx.post(f"{venue.clob}/_admin/resolve", json={"market": "0xnope"})
    assert response.status_code == 404 and "condition id" in response.json()["error"]
    market = venue.market()
    response = httpx.post(f"{venue.clob}/_admin/resolve", json={"market": market["conditionId"], "winner": "Maybe"})
    assert response.status_code == 400 and "Yes" in response.json()["error"]


def test_a_living_venue_prints_trades_and_moves_books_on_its_own(tmp_path) -> None:
    venue = Venue(Path(os.path.realpath(tmp_path)) / "s", 22, 100, "--requotes-per-s", "50", "--trades-per-s", "20")
    try:
        yes, no = tokens(venue.markets[0])
        with connect(venue.market_ws) as ws:
            ws.send(json.dumps({"type": "market", "assets_ids": [m for mk in venue.markets for m in tokens(mk)]}))
            kinds = set()
            deadline = time.monotonic() + 20
            while not {"price_change", "last_trade_price"} <= kinds and time.monotonic() < deadline:
                data = json.loads(ws.recv(timeout=10))
                kinds |= {m["event_type"] for m in (data if isinstance(data, list) else [data])}
        assert {"price_change", "last_trade_price"} <= kinds
    finally:
        venue.stop()


