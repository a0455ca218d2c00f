"""The local venue through the real py-clob-client-v2: auth, books, orders, matching, cancels, paging."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from py_clob_client_v2 import ClobClient
from py_clob_client_v2.clob_types import (
    ApiCreds,
    CreateOrderOptions,
    MarketOrderArgsV2,
    OpenOrderParams,
    OrderArgsV2,
    OrderPayload,
    OrderType,
)
from py_clob_client_v2.exceptions import PolyApiException
from py_clob_client_v2.utilities import generate_orderbook_summary_hash, parse_raw_orderbook_summary

from polybot_venue.server import ready_made_account

from .venue_harness import Venue, tokens

SEED = 11
PAGE = 2


@pytest.fixture(scope="module")
def venue(tmp_path_factory) -> Iterator[Venue]:
    venue = Venue(Path(os.path.realpath(tmp_path_factory.mktemp("venue"))) / "s", SEED, PAGE)
    yield venue
    venue.stop()


def best(client: ClobClient, token: str) -> tuple[Decimal, Decimal]:
    book = client.get_order_book(token)
    return Decimal(book["bids"][-1]["price"]), Decimal(book["asks"][-1]["price"])


def rejection(call) -> tuple[int, str]:
    with pytest.raises(PolyApiException) as info:
        call()
    error = info.value.error_msg
    return info.value.status_code, error["error"] if isinstance(error, dict) else str(error)


def test_the_ready_made_account_derives_the_credentials_the_venue_printed(venue: Venue) -> None:
    account = ready_made_account(SEED)
    client = ClobClient(venue.clob, chain_id=137, key=account.private_key)
    creds = client.derive_api_key()
    assert (creds.api_key, creds.api_secret, creds.api_passphrase) == (
        account.credentials.api_key, account.credentials.secret, account.credentials.passphrase)
    client.set_api_creds(creds)
    assert client.get_api_keys() == {"apiKeys": [creds.api_key]}


def test_a_book_reads_best_last_with_a_hash_the_client_reproduces(venue: Venue) -> None:
    client = venue.client()
    yes, no = tokens(venue.market())
    book = client.get_order_book(yes)
    bids = [Decimal(level["price"]) for level in book["bids"]]
    asks = [Decimal(level["price"]) for level in book["asks"]]
    assert bids == sorted(bids) and asks == sorted(asks, reverse=True) and bids[-1] < asks[-1]
    assert generate_orderbook_summary_hash(parse_raw_orderbook_summary(book)) == book["hash"]
    # The NO book mirrors the YES book.
    no_bid, no_ask = best(client, no)
    assert (no_bid, no_ask) == (1 - asks[-1], 1 - bids[-1])
    assert client.get_tick_size(yes) == "0.01" and client.get_neg_risk(yes) is False


def test_a_resting_gtc_order_fills_against_an_incoming_order_on_the_complementary_token(venue: Venue) -> None:
    maker, taker = venue.client(), venue.client()
    yes, no = tokens(venue.market())
    bid, ask = best(maker, yes)
    price = bid + Decimal("0.01")  # inside the spread: rests
    placed = maker.create_and_post_order(OrderArgsV2(token_id=yes, price=float(price), size=10, side="BUY"))
    assert placed["status"] == "live" and placed["tradeIDs"] == []
    assert [o["id"] for o in maker.get_open_orders(OpenOrderParams(asset_id=yes))] == [placed["orderID"]]
    assert best(maker, yes)[0] == price

    # Buying NO at 1 - price meets the YES bid: a pair is minted.
    filled = taker.create_and_post_order(OrderArgsV2(token_id=no, price=float(1 - price), size=10, side="BUY"))
    assert filled["status"] == "matched" and len(filled["tradeIDs"]) == 1 and filled["transactionsHashes"]
    assert Decimal(filled["takingAmount"]) == 10
    assert maker.get_open_orders(OpenOrderParams(asset_id=yes)) == []
    maker_trade, = maker.get_trades()
    taker_trade, = taker.get_trades()
    assert maker_trade["id"] == taker_trade["id"] == filled["tradeIDs"][0]
    assert (maker_trade["trader_side"], maker_trade["side"], Decimal(maker_trade["price"])) == ("MAKER", "BUY", price)
    assert (taker_trade["trader_side"], Decimal(taker_trade["price"]), taker_trade["outcome"]) == ("TAKER", 1 - price,
                                                                                                   "No")


def test_a_fok_order_fills_when_the_book_can_take_it_and_is_killed_when_it_cannot(venue: Venue) -> None:
    client = venue.client()
    yes, _ = tokens(venue.market())
    filled = client.create_and_post_market_order(MarketOrderArgsV2(token_id=yes, amount=20, side="BUY"),
                                                 order_type=OrderType.FOK)
    assert filled["status"] == "matched" and filled["transactionsHashes"]
    _, ask = best(client, yes)
    depth = sum(Decimal(a["size"]) for a in client.get_order_book(yes)["asks"] if Decimal(a["price"]) <= ask)
    too_big = client.create_order(OrderArgsV2(token_id=yes, price=float(ask), size=float(depth + 1), side="BUY"))
    assert rejection(lambda: client.post_order(too_big, OrderType.FOK)) == (
        400, "order couldn't be fully filled. FOK orders are fully filled or killed.")
    assert best(client, yes)[1] == ask  # nothing was taken


def test_post_only_that_would_cross_is_rejected(venue: Venue) -> None:
    client = venue.client()
    yes, _ = tokens(venue.market())
    _, ask = best(client, yes)
    order = client.create_order(OrderArgsV2(token_id=yes, price=float(ask), size=10, side="BUY"))
    assert rejection(lambda: client.post_order(order, OrderType.GTC, post_only=True)) == (
        400, "invalid post-only order: order crosses book")


def test_a_price_off_the_tick_and_a_size_under_the_minimum_are_rejected_with_the_venues_texts(venue: Venue) -> None:
    client = venue.client()
    yes, _ = tokens(venue.market())
    # The client refuses a finer tick itself, so build with its order builder as a client with a stale tick would.
    off_tick = client.builder.build_order(OrderArgsV2(token_id=yes, price=0.481, size=10, side="BUY"),
                                          CreateOrderOptions(tick_size="0.001", neg_risk=False), version=2)
    status, text = rejection(lambda: client.post_order(off_tick))
    assert status == 400 and text.endswith("is invalid. Price (0.481) breaks minimum tick size rule: 0.01")
    small = client.create_order(OrderArgsV2(token_id=yes, price=0.3, size=2, side="BUY"))
    status, text = rejection(lambda: client.post_order(small))
    assert status == 400 and text.endswith("is invalid. Size (2) lower than the minimum: 5")


def test_cancel_one_and_cancel_all(venue: Venue) -> None:
    client = venue.client()
    yes, no = tokens(venue.market())
    ids = [client.create_and_post_order(OrderArgsV2(token_id=token, price=0.05, size=10, side="BUY"))["orderID"]
           for token in (yes, yes, no)]
    one = client.cancel_order(OrderPayload(orderID=ids[0]))
    assert one == {"canceled": [ids[0]], "not_canceled": {}}
    assert sorted(o["id"] for o in client.get_open_orders()) == sorted(ids[1:])
    again = client.cancel_order(OrderPayload(orderID=ids[0]))
    assert again["canceled"] == [] and ids[0] in again["not_canceled"]
    assert sorted(client.cancel_all()["canceled"]) == sorted(ids[1:])
    assert client.get_open_orders() == []


def test_open_orders_and_trades_come_back_whole_across_several_pages(venue: Venue) -> None:
    maker, taker = venue.client(), venue.client()
    yes, no = tokens(venue.market())
    bid, _ = best(maker, yes)
    placed = [maker.create_and_post_order(OrderArgsV2(token_id=yes, price=float(bid + Decimal("0.01")), size=5,
                                                      side="BUY"))["orderID"] for _ in range(5)]
    first = maker.get_open_orders(only_first_page=True)
    assert len(first) == PAGE
    assert sorted(o["id"] for o in maker.get_open_orders()) == sorted(placed)
    sweep = taker.create_and_post_order(OrderArgsV2(token_id=no, price=float(1 - bid - Decimal("0.01")), size=25,
                                                    side="BUY"))
    assert len(sweep["tradeIDs"]) == 5
    assert sorted(t["id"] for t in taker.get_trades()) == sorted(sweep["tradeIDs"])
    assert len(taker.get_trades(only_first_page=True)) == PAGE
    assert maker.get_open_orders() == []


def test_an_order_with_a_tampered_signature_is_rejected(venue: Venue) -> None:
    client = venue.client()
    yes, _ = tokens(venue.market())
    order = client.create_order(OrderArgsV2(token_id=yes, price=0.2, size=10, side="BUY"))
    # One bit of r flipped: some other key, or none, recovers from it. (Not the tail: a changed s and v could
    # spell the same signature, with v as 0 rather than 27.)
    sig, at = order.signature, 10  # 0x + r(64) + s(64) + v(2)
    flipped = sig[:at] + format(int(sig[at:at + 2], 16) ^ 1, "02x") + sig[at + 2:]
    status, text = rejection(lambda: client.post_order(replace(order, signature=flipped)))
    assert (status, text) == (400, "invalid signature")
    assert client.get_open_orders() == []


def test_requests_with_a_bad_hmac_or_no_valid_l1_signature_are_unauthorized(venue: Venue) -> None:
    client = venue.client()
    good = client.creds
    client.set_api_creds(ApiCreds(api_key=good.api_key, api_secret="c2VjcmV0LW5vdC10aGUtb25lLWlzc3VlZA==",
                                  api_passphrase=good.api_passphrase))
    assert rejection(client.get_open_orders) == (401, "Unauthorized/Invalid api key")
    unsigned = httpx.get(f"{venue.clob}/auth/derive-api-key", headers={"POLY_ADDRESS": client.get_address(),
                         "POLY_SIGNATURE": "0x" + "00" * 65, "POLY_TIMESTAMP": "1", "POLY_NONCE": "0"})
    assert (unsigned.status_code, unsigned.json()) == (401, {"error": "Invalid L1 Request headers"})


def test_an_order_beyond_the_accounts_collateral_is_refused(venue: Venue) -> None:
    client = venue.client()
    market = venue.market()
    yes, _ = tokens(market)
    order = client.create_order(OrderArgsV2(token_id=yes, price=0.5, size=30_000, side="BUY"))  # 15k > 10k
    # What a BUY holds: its size at the limit plus the most taker fee it could pay, at the market's own rate.
    held = 30_000 * (Decimal("0.5") + Decimal(str(market["feeSchedule"]["rate"])) * Decimal("0.25"))
    assert rejection(lambda: client.post_order(order)) == (
        400, "not enough balance / allowance: the balance is not enough -> balance: 10000000000, "
             f"sum of active orders: 0, order amount: {int(held * 10**6)}")


def test_an_order_on_a_neg_risk_market_is_signed_for_and_accepted_under_the_neg_risk_exchange(venue: Venue) -> None:
    client = venue.client()
    member = next(m for m in httpx.get(f"{venue.gamma}/markets", params={"limit": 100}).json() if m["negRisk"])
    yes, _ = tokens(member)
    assert client.get_neg_risk(yes) is True
    placed = client.create_and_post_order(OrderArgsV2(token_id=yes, price=0.01, size=10, side="BUY"))
    assert placed["status"] == "live"
    # The same order signed under the plain exchange's domain does not verify on a neg-risk market.
    plain = client.builder.build_order(OrderArgsV2(token_id=yes, price=0.01, size=10, side="BUY"),
                                       CreateOrderOptions(tick_size="0.01", neg_risk=False), version=2)
    status, text = rejection(lambda: client.post_order(plain))
    assert (status, text) == (400, "invalid signature")


def test_orders_are_canceled_when_the_accounts_heartbeats_stop(tmp_path) -> None:
    from .conftest import wait_for

    venue = Venue(Path(os.path.realpath(tmp_path)) / "s", SEED, 100, "--still", "--heartbeat-timeout-ms", "1000")
    try:
        client, quiet = venue.client(), venue.client()
        yes, _ = tokens(venue.market())
        client.create_and_post_order(OrderArgsV2(token_id=yes, price=0.05, size=10, side="BUY"))
        quiet.create_and_post_order(OrderArgsV2(token_id=yes, price=0.04, size=10, side="BUY"))  # never heartbeats
        assert "heartbeat_id" in client.post_heartbeat()
        wait_for(lambda: client.get_open_orders() == [], what="the silent account's orders to be canceled")
        assert len(quiet.get_open_orders()) == 1
    finally:
        venue.stop()


def test_gamma_filters_orders_and_pages_markets_and_events(venue: Venue) -> None:
    gamma = venue.gamma
    everything = httpx.get(f"{gamma}/markets", params={"limit": 500}).json()
    # binary, neg-risk members, protocol-v2 binary, protocol-v2 neg-risk members
    assert len(everything) == 20 + 3 * 4 + 3 + 1 * 4
    pages = [httpx.get(f"{gamma}/markets", params={"limit": 7, "offset": o}).json() for o in range(0, 42, 7)]
    assert [m["id"] for page in pages for m in page] == [m["id"] for m in everything]
    one = everything[5]
    assert [m["id"] for m in httpx.get(f"{gamma}/markets", params={"slug": one["slug"]}).json()] == [one["id"]]
    token = json.loads(one["clobTokenIds"])[1]
    assert [m["id"] for m in httpx.get(f"{gamma}/markets", params={"clob_token_ids": token}).json()] == [one["id"]]
    by_condition = httpx.get(f"{gamma}/markets", params={"condition_ids": one["conditionId"]}).json()
    assert [m["id"] for m in by_condition] == [one["id"]]
    ends = [m["endDate"] for m in httpx.get(f"{gamma}/markets", params={"order": "endDate", "ascending": "true",
                                                                       "limit": 500}).json()]
    assert ends == sorted(ends)
    assert httpx.get(f"{gamma}/markets", params={"closed": "true"}).json() == []
    assert httpx.get(f"{gamma}/markets", params={"order": "nonsense"}).status_code == 400
    events = httpx.get(f"{gamma}/events").json()
    assert len(events) == 4 and all(len(e["markets"]) == 4 and e["negRisk"] for e in events)
    assert [e["version"] for e in events] == ["v1", "v1", "v1", "v2"]
    assert httpx.get(f"{gamma}/markets/{one['id']}").json()["conditionId"] == one["conditionId"]
