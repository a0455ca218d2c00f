"""The endpoints the official clients call in normal flows, and the market channel's custom-feature frames: a
real venue process, the real py-clob-client-v2 calling its own methods, plain httpx for Gamma's keyset pages."""
from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import msgspec
import pytest
from py_clob_client_v2.clob_types import (
    DropNotificationParams,
    OrderArgsV2,
    OrderScoringParams,
    OrdersScoringParams,
    PostOrdersV2Args,
    PricesHistoryParams,
)
from websockets.sync.client import connect

from services.venues.polymarket import schema

from .venue_harness import Venue, frames, rejection, tokens, until


@pytest.fixture(scope="module")
def venue(tmp_path_factory) -> Iterator[Venue]:
    venue = Venue(Path(os.path.realpath(tmp_path_factory.mktemp("venue"))) / "s", 11)
    yield venue
    venue.stop()


def best_ask(venue: Venue, token: str) -> Decimal:
    return min(Decimal(a["price"]) for a in httpx.get(f"{venue.clob}/book", params={"token_id": token}).json()["asks"])


def best_bid(venue: Venue, token: str) -> Decimal:
    return max(Decimal(b["price"]) for b in httpx.get(f"{venue.clob}/book", params={"token_id": token}).json()["bids"])


def test_an_account_is_in_closed_only_mode_only_when_put_there_and_then_may_sell_but_not_buy(venue: Venue) -> None:
    client, other = venue.client(), venue.client()
    yes, _ = tokens(venue.market())
    venue.admin("fund", address=client.get_address(), shares={yes: 20})
    assert client.get_closed_only_mode() == {"closed_only": False}
    resting = client.create_and_post_order(OrderArgsV2(token_id=yes, price=0.02, size=10, side="BUY"))
    venue.admin("closed-only", address=client.get_address())
    assert client.get_closed_only_mode() == {"closed_only": True}
    assert other.get_closed_only_mode() == {"closed_only": False}
    status, text = rejection(lambda: client.create_and_post_order(OrderArgsV2(token_id=yes, price=0.02, size=10,
                                                                              side="BUY")))
    assert (status, text) == (400, f"'{client.get_address()}' address in closed only mode")
    batch = client.post_orders([PostOrdersV2Args(order=client.create_order(OrderArgsV2(
        token_id=yes, price=0.03, size=10, side="BUY")), orderType="GTC")])
    assert [(a["success"], a["errorMsg"]) for a in batch] == [(False, text)]
    sold = client.create_and_post_order(OrderArgsV2(token_id=yes, price=0.98, size=10, side="SELL"))
    assert sold["status"] == "live"  # closing a position passes
    assert client.cancel_orders([resting["orderID"]])["canceled"] == [resting["orderID"]]
    venue.admin("closed-only", address=client.get_address(), closed_only=False)
    assert client.get_closed_only_mode() == {"closed_only": False}
    assert client.create_and_post_order(OrderArgsV2(token_id=yes, price=0.02, size=10, side="BUY"))["success"]


def test_the_venues_clock_as_time_reports_it_can_be_set_off_from_this_machines(venue: Venue) -> None:
    client = venue.client()
    venue.admin("clock", offset_ms=-90_000)
    try:
        assert abs(client.get_server_time() - (time.time() - 90)) <= 2
    finally:
        venue.admin("clock", offset_ms=0)
    assert abs(client.get_server_time() - time.time()) <= 2
    refused = httpx.post(f"{venue.clob}/_admin/clock", json={"offset_ms": "soon"})
    assert refused.status_code == 400 and "offset_ms" in refused.json()["error"]


def test_prices_history_reflects_the_trades_made_in_the_test(venue: Venue) -> None:
    client = venue.client()
    traded, untouched = venue.market(), venue.market()
    yes, _ = tokens(traded)
    before = int(time.time()) - 5
    first = best_ask(venue, yes)
    client.create_and_post_order(OrderArgsV2(token_id=yes, price=float(first), size=5, side="BUY"))
    one_day = client.get_prices_history(PricesHistoryParams(market=yes, interval="1d", fidelity=1))
    assert set(one_day) == {"history"} and one_day["history"]
    point = one_day["history"][-1]
    assert set(point) == {"t", "p"} and Decimal(str(point["p"])) == first and before - 60 <= point["t"] <= time.time()
    ranged = client.get_prices_history(PricesHistoryParams(market=yes, start_ts=before, end_ts=int(time.time()) + 5))
    assert ranged["history"][-1]["p"] == point["p"]
    earlier = client.get_prices_history(PricesHistoryParams(market=yes, start_ts=before - 3600, end_ts=before - 60))
    assert earlier == {"history": []}
    assert client.get_prices_history(PricesHistoryParams(market=tokens(untouched)[0], interval="max")) == {
        "history": []}
    # The client insists on a window; the venue refuses a request without one, in its own words.
    answer = httpx.get(f"{venue.clob}/prices-history", params={"market": yes})
    assert answer.status_code == 400 and "interval" in answer.json()["error"]


def test_notifications_are_an_empty_list_and_dropping_them_answers_ok_and_needs_their_ids(venue: Venue) -> None:
    client = venue.client()
    assert client.get_notifications() == []
    # The CLOB OpenAPI: DELETE /notifications?ids=1,2,3 answers the JSON string "OK"; ids are required integers.
    assert client.drop_notifications(DropNotificationParams(ids=["1", "2"])) == "OK"
    assert rejection(client.drop_notifications) == (400, "Invalid ids")
    assert rejection(lambda: client.drop_notifications(DropNotificationParams(ids=["1", "x"]))) == (400, "Invalid ids")


def test_orders_are_never_scored_because_the_venue_runs_no_reward_programs(venue: Venue) -> None:
    client = venue.client()
    yes, _ = tokens(venue.market())
    placed = client.create_and_post_order(OrderArgsV2(token_id=yes, price=0.02, size=5, side="BUY"))
    assert client.is_order_scoring(OrderScoringParams(orderId=placed["orderID"])) == {"scored": False}
    assert client.are_orders_scoring(OrdersScoringParams(orderIds=[placed["orderID"], "0xabc"])) == {
        placed["orderID"]: False, "0xabc": False}


def test_pre_migration_orders_are_one_empty_last_page(venue: Venue) -> None:
    client = venue.client()
    assert client.get_pre_migration_orders() == []
    assert client.get_pre_migration_orders(only_first_page=True) == []


def test_the_rewards_endpoints_answer_empty_in_the_shapes_the_client_reads(venue: Venue) -> None:
    client = venue.client()
    condition_id = venue.market()["conditionId"]
    assert client.get_current_rewards() == []
    assert client.get_raw_rewards_for_market(condition_id) == []
    assert client.get_earnings_for_user_for_day("2026-01-01") == []
    assert client.get_total_earnings_for_user_for_day("2026-01-01") == []
    assert client.get_user_earnings_and_markets_config("2026-01-01") == []
    assert client.get_reward_percentages() == {}


@pytest.mark.parametrize("kind", ["markets", "events"])
def test_gamma_keyset_paging_walks_every_item_once_and_unasked_lists_protocol_v1_only(venue: Venue, kind: str) -> None:
    listed = httpx.get(f"{venue.gamma}/{kind}", params={"limit": 10_000}).json()
    limit = max(1, len(listed) // 3)  # a few pages

    def walk(versions: list[str]) -> list[dict]:
        walked, cursor, pages = [], None, 0
        while True:
            params = {"limit": limit, "version": versions} | ({"after_cursor": cursor} if cursor else {})
            page = httpx.get(f"{venue.gamma}/{kind}/keyset", params=params).json()
            assert set(page) <= {kind, "next_cursor"} and len(page[kind]) <= limit
            walked += page[kind]
            pages += 1
            cursor = page.get("next_cursor")
            if cursor is None:  # the last page has no next_cursor: the unified SDK stops there
                break
            assert isinstance(cursor, str) and cursor
        assert pages > 1
        return walked

    walked = walk(["v1", "v2"])  # as the unified SDK asks for both versions: repeated
    ids = [item["id"] for item in walked]
    assert len(ids) == len(set(ids)) and sorted(ids) == sorted(item["id"] for item in listed)
    assert walked == sorted(walked, key=lambda item: int(item["id"]))
    msgspec.convert(walked, list[schema.GammaMarket if kind == "markets" else schema.GammaEvent])
    # Unasked, the keyset lists CTF (v1) items only, the server default polymarket-client documents.
    assert walk([]) == [item for item in walked if item["version"] == "v1"] != walked


def test_gamma_keyset_filters_like_the_plain_listing_and_refuses_a_bad_cursor(venue: Venue) -> None:
    market = venue.markets[0]
    page = httpx.get(f"{venue.gamma}/markets/keyset", params={"slug": market["slug"], "limit": 5}).json()
    assert [m["id"] for m in page["markets"]] == [market["id"]] and "next_cursor" not in page
    bad = base64.b64encode(b"not a number").decode()
    assert httpx.get(f"{venue.gamma}/markets/keyset", params={"after_cursor": bad}).status_code == 400


def _subscribe(ws, assets: list[str], custom: bool) -> None:
    ws.send(json.dumps({"type": "market", "assets_ids": assets, "custom_feature_enabled": custom,
                        "initial_dump": True}))
    until(ws, lambda m: isinstance(m, dict) and m.get("event_type") == "book")


def test_best_bid_ask_follows_a_top_of_book_change_only_for_subscribers_who_asked_for_custom_features(
        venue: Venue) -> None:
    client = venue.client()
    yes, no = tokens(venue.market())
    with connect(venue.market_ws) as custom, connect(venue.market_ws) as plain:
        _subscribe(custom, [yes, no], True)
        _subscribe(plain, [yes, no], False)
        # Below the top: levels change, the top does not, so no best_bid_ask.
        client.create_and_post_order(OrderArgsV2(token_id=yes, price=0.01, size=5, side="BUY"))
        until(custom, lambda m: m.get("event_type") == "price_change")
        assert all(m.get("event_type") != "best_bid_ask" for m in frames(custom, timeout=0.5) if isinstance(m, dict))
        top = best_bid(venue, yes) + Decimal("0.01")
        ask = best_ask(venue, yes)
        assert top < ask
        client.create_and_post_order(OrderArgsV2(token_id=yes, price=float(top), size=5, side="BUY"))
        seen = until(custom, lambda m: m.get("event_type") == "best_bid_ask" and m["asset_id"] == yes)
        change = next(m for m in seen if m.get("event_type") == "price_change")
        item = next(c for c in change["price_changes"] if c["asset_id"] == yes)
        assert (Decimal(item["best_bid"]), Decimal(item["best_ask"])) == (top, ask)
        raw = json.dumps(seen[-1])
        [message] = schema.decode_market_frame(raw.encode())
        assert isinstance(message, schema.WsBestBidAsk)
        assert (message.market, Decimal(message.best_bid), Decimal(message.best_ask), Decimal(message.spread)) == (
            change["market"], top, ask, ask - top)
        # The keys of a captured frame (fixtures/polymarket/ws_market_best_bid_ask_msg.json), no more, no fewer.
        assert set(seen[-1]) == {"event_type", "market", "asset_id", "best_bid", "best_ask", "spread", "timestamp"}
        # The complement's top moved too (its ask is 1 - the new bid), and it is told separately.
        frames_after = [m for m in frames(custom, timeout=0.5) if isinstance(m, dict)]
        assert any(m.get("event_type") == "best_bid_ask" and m["asset_id"] == no
                   and Decimal(m["best_ask"]) == 1 - top for m in seen + frames_after)
        plain_frames = until(plain, lambda m: m.get("event_type") == "price_change"
                             and any(Decimal(c["best_bid"]) == top for c in m["price_changes"]))
        plain_frames += [m for m in frames(plain, timeout=0.5) if isinstance(m, dict)]
        assert all(m.get("event_type") != "best_bid_ask" for m in plain_frames)
