"""What py-clob-client-v2, the Polymarket client the product installs, does against the local venue.

The real client, unchanged, runs its own flows against a real venue process, in the order a user meets them: API
keys; markets on Gamma and on the CLOB; books; resting, crossing, market and batch orders; cancels; trades;
heartbeats; the market and user channels; each wallet type; protocol-v2 positions; a new account's balance and
allowance; and the venue's operations (a matching-engine restart, rate limits). Where the venue refuses, the test says
exactly what the client raises.

The client has no Gamma or WebSocket code: its user reads Gamma over plain HTTP and connects to the channels with
`websockets`, subscribing as Polymarket's docs show (the user channel with the client's own API credentials). Each
test takes new accounts and markets no other test touched, so one venue serves the module. Edge cases and venue
internals stay in the topic modules (test_venue_clob, _money, _wallets, _v2_positions, _operations, _ws, ...).
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from py_clob_client_v2 import ClobClient
from py_clob_client_v2.clob_types import (
    AssetType,
    BalanceAllowanceParams,
    BookParams,
    MarketOrderArgsV2,
    OpenOrderParams,
    OrderArgsV2,
    OrderMarketCancelParams,
    OrderPayload,
    OrderType,
    PartialCreateOrderOptions,
    PostOrdersV2Args,
)
from py_clob_client_v2.config import get_contract_config
from py_clob_client_v2.exceptions import PolyApiException
from py_clob_client_v2.http_helpers import helpers
from py_clob_client_v2.order_utils import ExchangeOrderBuilderV2
from py_clob_client_v2.utilities import generate_orderbook_summary_hash, parse_raw_orderbook_summary
from websockets.sync.client import ClientConnection, connect

from polybot_venue.server import ready_made_account

from .conftest import wait_for
from .venue_harness import Venue, best, refusal, rejection, tokens, until

SEED = 19
PAGE = 3  # small, so that every listing the client walks takes several pages
END = "LTE="  # the last page's cursor: the client stops there
CONTRACTS = get_contract_config(137)  # the exchanges as the client knows them
COLLATERAL = BalanceAllowanceParams(asset_type=AssetType.COLLATERAL)


@pytest.fixture(scope="module")
def venue(tmp_path_factory) -> Iterator[Venue]:
    # More binary markets than the default 20: each test below takes its own.
    venue = Venue(Path(os.path.realpath(tmp_path_factory.mktemp("pcc2"))) / "s", SEED, PAGE,
                  "--still", "--markets", "30")
    yield venue
    venue.stop()


def public(venue: Venue) -> ClobClient:
    """A client with no key: market data needs none."""
    return ClobClient(venue.clob, chain_id=137)


def bid(token: str, price: Decimal | float, size: int = 10) -> OrderArgsV2:
    """A buy of ``size`` shares of ``token`` at ``price``."""
    return OrderArgsV2(token_id=token, price=float(price), size=size, side="BUY")


@contextlib.contextmanager
def answers() -> Iterator[list[httpx.Response]]:
    """Every HTTP answer the client receives meanwhile. Its exception keeps an answer's status and body but not its
    headers, so they are read where the client received them: its one module-level httpx client."""
    http = helpers._http_client
    hooks = http.event_hooks
    seen: list[httpx.Response] = []
    http.event_hooks = {**hooks, "response": [*hooks["response"], seen.append]}
    try:
        yield seen
    finally:
        http.event_hooks = hooks


# ------------------------------------------------------------ API keys

def test_a_new_account_creates_one_key_per_nonce_derives_it_after_and_is_refused_in_the_venues_words(
        venue: Venue) -> None:
    client = ClobClient(venue.clob, chain_id=137, key=Account.create().key.hex())
    never = refusal(client.derive_api_key)
    assert (never.status_code, never.error_msg) == (400, {"error": "Could not derive api key!"})
    created = client.create_api_key()
    again = refusal(client.create_api_key)
    assert (again.status_code, again.error_msg) == (400, {"error": "Could not create api key"})
    assert client.derive_api_key() == created
    assert client.create_or_derive_api_key() == created  # its create is refused, so it derives
    second = client.create_or_derive_api_key(nonce=1)  # a nonce with no key yet: created
    assert second not in (created, None) and client.derive_api_key(nonce=1) == second
    client.set_api_creds(created)
    assert client.get_api_keys() == {"apiKeys": [created.api_key, second.api_key]}
    assert client.delete_api_key() == "OK"
    gone = refusal(client.get_api_keys)  # the deleted key signs no more requests
    assert gone.status_code == 401
    client.set_api_creds(second)
    assert client.get_api_keys() == {"apiKeys": [second.api_key]}
    assert refusal(client.derive_api_key).error_msg == {"error": "Could not derive api key!"}
    assert client.create_api_key() == created  # its nonce is free again


def test_the_ready_made_account_derives_the_key_the_venue_printed_and_cannot_create_another(venue: Venue) -> None:
    account = ready_made_account(SEED)
    client = ClobClient(venue.clob, chain_id=137, key=account.private_key)
    assert refusal(client.create_api_key).error_msg == {"error": "Could not create api key"}
    creds = client.create_or_derive_api_key()
    assert (creds.api_key, creds.api_secret, creds.api_passphrase) == (
        account.credentials.api_key, account.credentials.secret, account.credentials.passphrase)
    client.set_api_creds(creds)
    assert client.get_api_keys() == {"apiKeys": [creds.api_key]}


# ------------------------------------------------------------ markets

def test_a_market_found_on_gamma_is_the_same_market_on_the_clob(venue: Venue) -> None:
    client = public(venue)
    yes, no = tokens(venue.market())
    found, = httpx.get(f"{venue.gamma}/markets", params={"clob_token_ids": yes}).json()
    market = client.get_market(found["conditionId"])
    assert [(t["token_id"], t["outcome"]) for t in market["tokens"]] == [(yes, "Yes"), (no, "No")]
    assert json.loads(found["outcomes"]) == ["Yes", "No"]
    assert [t["price"] for t in market["tokens"]] == [float(p) for p in json.loads(found["outcomePrices"])]
    assert {t["price"] for t in market["tokens"]} != {0.5}  # the book's midpoint, not a placeholder
    assert (market["question"], market["market_slug"], market["neg_risk"], market["minimum_tick_size"],
            market["minimum_order_size"], market["accepting_orders"]) == (
        found["question"], found["slug"], found["negRisk"], found["orderPriceMinTickSize"], found["orderMinSize"],
        found["acceptingOrders"])
    schedule = found["feeSchedule"]
    info = client.get_clob_market_info(found["conditionId"])
    assert info["fd"] == {"r": schedule["rate"], "e": schedule["exponent"], "to": schedule["takerOnly"]}
    assert (client.get_tick_size(yes), client.get_neg_risk(yes), client.get_fee_exponent(no)) == (
        "0.01", False, schedule["exponent"])
    assert client.get_fee_rate_bps(yes) == market["taker_base_fee"] == round(schedule["rate"] * 10_000) > 0


def walk(fetch) -> list[dict]:
    """Every item of a CLOB cursor listing, following ``next_cursor`` from ``MA==`` to ``LTE=``."""
    items, cursor, pages = [], "MA==", 0
    while cursor != END:
        page = fetch(cursor)
        assert set(page) == {"limit", "count", "next_cursor", "data"} and page["count"] == len(page["data"])
        items += page["data"]
        cursor, pages = page["next_cursor"], pages + 1
        assert pages < 1000
    return items


def test_the_markets_simplified_and_sampling_listings_walk_every_gamma_market_once_and_end_with_lte(
        venue: Venue) -> None:
    client = public(venue)
    every = walk(client.get_markets)
    ids = [m["condition_id"] for m in every]
    assert len(ids) > PAGE and len(set(ids)) == len(ids)
    gamma = httpx.get(f"{venue.gamma}/markets", params={"limit": 500}).json()
    assert sorted(ids) == sorted(m["conditionId"] for m in gamma)
    simplified = walk(client.get_simplified_markets)
    assert [m["condition_id"] for m in simplified] == ids
    for market in simplified:
        assert set(market) == {"condition_id", "tokens", "rewards", "active", "closed", "archived",
                               "accepting_orders"}
        assert len(market["tokens"]) == 2 and market["rewards"] == {"rates": None, "min_size": 0, "max_spread": 0}
    open_ids = [m["condition_id"] for m in every if m["active"] and m["accepting_orders"] and not m["closed"]]
    assert [m["condition_id"] for m in walk(client.get_sampling_markets)] == open_ids
    assert [m["condition_id"] for m in walk(client.get_sampling_simplified_markets)] == open_ids


# ------------------------------------------------------------ books

def test_a_book_reads_best_last_with_a_hash_the_client_reproduces_and_the_no_book_mirrors_it(venue: Venue) -> None:
    client = public(venue)
    yes, no = tokens(venue.market())
    book = client.get_order_book(yes)
    bids = [Decimal(level["price"]) for level in book["bids"]]
    asks = [Decimal(level["price"]) for level in book["asks"]]
    assert bids == sorted(bids) and asks == sorted(asks, reverse=True) and bids[-1] < asks[-1]
    assert generate_orderbook_summary_hash(parse_raw_orderbook_summary(book)) == book["hash"]
    assert best(client, no) == (1 - asks[-1], 1 - bids[-1])
    both = client.get_order_books([BookParams(token_id=yes), BookParams(token_id=no)])
    assert [(b["asset_id"], b["bids"], b["asks"]) for b in both] == [
        (token, served["bids"], served["asks"]) for token, served in ((yes, book), (no, client.get_order_book(no)))]
    assert Decimal(client.get_midpoint(yes)["mid_price"]) == (bids[-1] + asks[-1]) / 2


# ------------------------------------------------------------ orders

def test_a_resting_gtc_bid_fills_against_a_crossing_order_on_the_complementary_token(venue: Venue) -> None:
    maker, taker = venue.client(), venue.client()
    yes, no = tokens(venue.market())
    top, _ = best(maker, yes)
    price = top + Decimal("0.01")  # inside the spread: rests
    placed = maker.create_and_post_order(bid(yes, price))
    assert placed["status"] == "live" and placed["tradeIDs"] == []
    assert [o["id"] for o in maker.get_open_orders(OpenOrderParams(asset_id=yes))] == [placed["orderID"]]
    assert maker.get_order(placed["orderID"])["status"] == "LIVE" and best(maker, yes)[0] == price

    # Buying NO at 1 - price meets the YES bid: a pair is minted.
    filled = taker.create_and_post_order(bid(no, 1 - price))
    assert filled["status"] == "matched" and len(filled["tradeIDs"]) == 1 and filled["transactionsHashes"]
    assert Decimal(filled["takingAmount"]) == 10
    assert maker.get_open_orders(OpenOrderParams(asset_id=yes)) == []
    assert maker.get_order(placed["orderID"])["status"] == "MATCHED"
    maker_trade, = maker.get_trades()
    taker_trade, = taker.get_trades()
    assert maker_trade["id"] == taker_trade["id"] == filled["tradeIDs"][0]
    assert taker_trade["transaction_hash"] == filled["transactionsHashes"][0]
    assert (maker_trade["trader_side"], maker_trade["side"], Decimal(maker_trade["price"])) == ("MAKER", "BUY", price)
    assert (taker_trade["trader_side"], Decimal(taker_trade["price"]), taker_trade["outcome"]) == (
        "TAKER", 1 - price, "No")


def test_a_fok_market_order_fills_when_the_book_can_take_it_and_is_killed_when_it_cannot(venue: Venue) -> None:
    client = venue.client()
    yes, _ = tokens(venue.market())
    filled = client.create_and_post_market_order(MarketOrderArgsV2(token_id=yes, amount=20, side="BUY"),
                                                 order_type=OrderType.FOK)
    assert filled["status"] == "matched" and filled["transactionsHashes"]
    _, ask = best(client, yes)
    depth = sum(Decimal(a["size"]) for a in client.get_order_book(yes)["asks"] if Decimal(a["price"]) <= ask)
    too_big = client.create_order(bid(yes, ask, int(depth) + 1))
    assert rejection(lambda: client.post_order(too_big, OrderType.FOK)) == (
        400, "order couldn't be fully filled. FOK orders are fully filled or killed.")
    assert best(client, yes)[1] == ask  # nothing was taken


def test_a_post_only_order_that_would_cross_is_refused(venue: Venue) -> None:
    client = venue.client()
    yes, _ = tokens(venue.market())
    _, ask = best(client, yes)
    order = client.create_order(bid(yes, ask))
    assert rejection(lambda: client.post_order(order, OrderType.GTC, post_only=True)) == (
        400, "invalid post-only order: order crosses book")
    assert client.get_open_orders() == []


def test_a_batch_posts_in_one_call_and_each_order_is_answered_on_its_own(venue: Venue) -> None:
    client = venue.client()
    yes, no = tokens(venue.market())
    _, ask = best(client, yes)
    batch = [(bid(yes, 0.02, 5), OrderType.GTC), (bid(no, 0.02, 5), OrderType.GTC), (bid(yes, ask, 5), OrderType.FOK),
             (bid(yes, 0.3, 2), OrderType.GTC)]  # the last is under the minimum size
    answered = client.post_orders([PostOrdersV2Args(order=client.create_order(args), orderType=kind)
                                   for args, kind in batch])
    assert [(a["success"], a["status"]) for a in answered] == [(True, "live"), (True, "live"), (True, "matched"),
                                                              (False, "")]
    assert answered[3]["errorMsg"].endswith("is invalid. Size (2) lower than the minimum: 5")
    assert answered[2]["tradeIDs"] and answered[2]["transactionsHashes"]
    assert sorted(o["id"] for o in client.get_open_orders()) == sorted(a["orderID"] for a in answered[:2])


# ------------------------------------------------------------ cancels

def test_orders_cancel_one_at_a_time_several_at_once_by_token_by_market_and_all_together(venue: Venue) -> None:
    client = venue.client()
    market, elsewhere = venue.market(), venue.market()
    yes, no = tokens(market)
    other, _ = tokens(elsewhere)
    one, two, three, four, far = (client.create_and_post_order(bid(token, 0.02, 5))["orderID"]
                                  for token in (yes, yes, no, yes, other))
    assert client.cancel_order(OrderPayload(orderID=one)) == {"canceled": [one], "not_canceled": {}}
    again = client.cancel_order(OrderPayload(orderID=one))
    assert again["canceled"] == [] and set(again["not_canceled"]) == {one}
    several = client.cancel_orders([two, one])
    assert several["canceled"] == [two] and set(several["not_canceled"]) == {one}
    assert client.cancel_market_orders(OrderMarketCancelParams(asset_id=no)) == {"canceled": [three],
                                                                                 "not_canceled": {}}
    assert client.cancel_market_orders(OrderMarketCancelParams(market=market["conditionId"])) == {
        "canceled": [four], "not_canceled": {}}
    assert [o["id"] for o in client.get_open_orders()] == [far]
    assert client.cancel_all() == {"canceled": [far], "not_canceled": {}}
    assert client.get_open_orders() == [] and client.get_order(one)["status"] == "CANCELED"


# ------------------------------------------------------------ trades

def test_open_orders_and_trades_come_back_whole_across_several_pages(venue: Venue) -> None:
    maker, taker = venue.client(), venue.client()
    yes, no = tokens(venue.market())
    top, _ = best(maker, yes)
    price = top + Decimal("0.01")
    placed = [maker.create_and_post_order(bid(yes, price, 5))["orderID"] for _ in range(5)]
    assert len(maker.get_open_orders(only_first_page=True)) == PAGE
    assert sorted(o["id"] for o in maker.get_open_orders()) == sorted(placed)
    sweep = taker.create_and_post_order(bid(no, 1 - price, 25))
    assert len(sweep["tradeIDs"]) == 5
    assert sorted(t["id"] for t in taker.get_trades()) == sorted(sweep["tradeIDs"])
    assert sorted(t["id"] for t in maker.get_trades()) == sorted(sweep["tradeIDs"])
    assert len(taker.get_trades(only_first_page=True)) == PAGE
    assert maker.get_open_orders() == []


# ------------------------------------------------------------ heartbeats

def test_heartbeats_chain_their_ids_and_a_stale_id_is_refused_naming_the_expected_one(venue: Venue) -> None:
    client = venue.client()
    first = client.post_heartbeat()["heartbeat_id"]  # the first may send none
    second = client.post_heartbeat(first)["heartbeat_id"]
    stale = refusal(lambda: client.post_heartbeat(first))
    assert (stale.status_code, stale.error_msg) == (400, {"error_msg": "Invalid Heartbeat ID", "heartbeat_id": second})
    assert client.post_heartbeat(second)["heartbeat_id"] not in ("", first, second)


# ------------------------------------------------------------ the market and user channels

@contextlib.contextmanager
def market_channel(venue: Venue, assets: list[str]) -> Iterator[ClientConnection]:
    """The market channel, subscribed to ``assets`` (token ids) as the docs show."""
    with connect(venue.market_ws) as ws:
        ws.send(json.dumps({"type": "market", "assets_ids": assets}))
        yield ws


@contextlib.contextmanager
def user_channel(venue: Venue, client: ClobClient, markets: list[str]) -> Iterator[ClientConnection]:
    """The user channel for ``markets`` (condition ids), authenticated with the client's own API credentials."""
    creds = client.creds
    with connect(venue.user_ws) as ws:
        ws.send(json.dumps({"type": "user", "markets": markets, "auth": {
            "apiKey": creds.api_key, "secret": creds.api_secret, "passphrase": creds.api_passphrase}}))
        ws.send("PING")
        until(ws, lambda m: m == "PONG")  # answered in order: the subscription is in place
        yield ws


def test_the_market_channel_sends_the_books_the_client_reads_and_each_change_its_orders_make(venue: Venue) -> None:
    maker, taker = venue.client(), venue.client()
    yes, no = tokens(venue.market())
    with market_channel(venue, [yes, no]) as ws:
        dump = until(ws, lambda m: m.get("event_type") == "book" and m["asset_id"] == no)
        books = {m["asset_id"]: m for m in dump if m.get("event_type") == "book"}
        for token in (yes, no):
            served = maker.get_order_book(token)
            assert (books[token]["bids"], books[token]["asks"]) == (served["bids"], served["asks"])
            assert generate_orderbook_summary_hash(parse_raw_orderbook_summary(books[token])) == books[token]["hash"]

        top, _ = best(maker, yes)
        price = top + Decimal("0.01")
        maker.create_and_post_order(bid(yes, price))
        change = until(ws, lambda m: m.get("event_type") == "price_change")[-1]
        level = next(c for c in change["price_changes"] if c["asset_id"] == yes)
        assert (Decimal(level["price"]), Decimal(level["size"]), level["side"], Decimal(level["best_bid"])) == (
            price, 10, "BUY", price)
        taker.create_and_post_order(bid(no, 1 - price))
        tick = until(ws, lambda m: m.get("event_type") == "last_trade_price")[-1]
        assert (tick["asset_id"], Decimal(tick["price"]), Decimal(tick["size"]), tick["side"]) == (
            no, 1 - price, 10, "BUY")
        ws.send("PING")
        until(ws, lambda m: m == "PONG")


def test_the_user_channel_with_the_clients_credentials_reports_its_own_orders_and_trades_through_confirmation(
        venue: Venue) -> None:
    maker, taker, stranger = venue.client(), venue.client(), venue.client()
    market, elsewhere = venue.market(), venue.market()
    yes, no = tokens(market)
    with user_channel(venue, maker, [market["conditionId"]]) as ws:
        stranger.create_and_post_order(bid(yes, 0.03, 5))  # not the maker's
        maker.create_and_post_order(bid(tokens(elsewhere)[0], 0.03, 5))  # not a market it asked for
        top, _ = best(maker, yes)
        price = top + Decimal("0.01")  # the maker's order is the best bid, so the taker meets it first
        placed = maker.create_and_post_order(bid(yes, price))
        placement = until(ws, lambda m: m.get("event_type") == "order")[-1]
        assert (placement["type"], placement["id"], placement["owner"], placement["market"]) == (
            "PLACEMENT", placed["orderID"], maker.creds.api_key, market["conditionId"])
        taker.create_and_post_order(bid(no, 1 - price, 5))
        seen = until(ws, lambda m: m.get("event_type") == "trade" and m["status"] == "CONFIRMED")
        assert [m["status"] for m in seen if m.get("event_type") == "trade"] == ["MATCHED", "MINED", "CONFIRMED"]
        trade = seen[-1]
        assert (trade["trader_side"], trade["maker_orders"][0]["order_id"]) == ("MAKER", placed["orderID"])
        update = next(m for m in seen if m.get("type") == "UPDATE")
        assert Decimal(update["size_matched"]) == 5
        maker.cancel_order(OrderPayload(orderID=placed["orderID"]))
        cancel = until(ws, lambda m: m.get("event_type") == "order")[-1]
        assert (cancel["type"], cancel["id"]) == ("CANCELLATION", placed["orderID"])
        # Nothing of the stranger's orders, nor of another market, reached this subscription.
        assert all(m["owner"] == maker.creds.api_key and m["market"] == market["conditionId"] for m in seen)


# ------------------------------------------------------------ wallet types

@pytest.mark.parametrize("wallet", [0, 1, 2, 3], ids=["eoa", "proxy", "safe", "deposit-wallet"])
def test_an_owner_trades_through_each_wallet_type_and_balances_are_that_wallets(venue: Venue, wallet: int) -> None:
    client = venue.client(wallet=wallet)
    funder = client.builder.funder
    yes, _ = tokens(venue.market())
    resting = client.create_and_post_order(bid(yes, 0.02))
    assert resting["success"] and resting["status"] == "live"
    assert [o["maker_address"] for o in client.get_open_orders()] == [funder]
    _, ask = best(client, yes)
    crossing = client.create_and_post_order(bid(yes, ask))
    assert crossing["status"] == "matched" and crossing["tradeIDs"]
    spent = int(Decimal(crossing["makingAmount"]) * 10**6)
    assert client.get_balance_allowance(COLLATERAL)["balance"] == str(10_000_000_000 - spent)
    shares = client.get_balance_allowance(BalanceAllowanceParams(asset_type=AssetType.CONDITIONAL, token_id=yes))
    assert shares["balance"] == "10000000"
    if wallet:  # the owner's EOA itself holds nothing: balances are the funder wallet's
        eoa = ClobClient(venue.clob, chain_id=137, key=client.signer.private_key, creds=client.creds)
        assert eoa.get_balance_allowance(COLLATERAL)["balance"] == "0"


# ------------------------------------------------------------ protocol-v2 positions

def test_a_position_order_signed_for_exchange_v3_by_its_position_id_or_by_version_3_rests_and_trades(
        venue: Venue) -> None:
    client = venue.client()
    position, _ = tokens(venue.v2_markets[0])
    order = client.create_order(OrderArgsV2(position_id=position, price=0.02, size=10, side="BUY"))
    # The order id is its hash under exchange V3's domain, version "3".
    v3 = ExchangeOrderBuilderV2(CONTRACTS.exchange_v3, 137, client.signer, domain_version="3")
    placed = client.post_order(order)
    assert placed["status"] == "live" and placed["orderID"] == v3.build_order_hash(v3.build_order_typed_data(order))
    assert client.get_order(placed["orderID"])["status"] == "LIVE"
    by_version = client.create_order(bid(position, 0.03), PartialCreateOrderOptions(version=3))  # as a token id
    assert client.post_order(by_version)["status"] == "live"
    _, ask = best(client, position)
    crossing = client.create_and_post_order(OrderArgsV2(position_id=position, price=float(ask), size=10, side="BUY"))
    assert crossing["status"] == "matched" and crossing["tradeIDs"]


def test_an_order_signed_for_the_other_exchange_version_is_refused_as_order_version_mismatch(venue: Venue) -> None:
    client = venue.client()
    position, _ = tokens(venue.v2_markets[1])
    token, _ = tokens(venue.market())
    as_token = client.create_order(bid(position, 0.02))  # given as a token id, signed for V2 (/version says 2)
    as_position = client.create_order(bid(token, 0.02), PartialCreateOrderOptions(version=3))
    for order in (as_token, as_position):
        mismatch = refusal(lambda: client.post_order(order))
        assert (mismatch.status_code, mismatch.error_msg) == (400, {"error": "order_version_mismatch"})
    assert client.get_open_orders() == []


# ------------------------------------------------------------ balance and allowance

def test_a_new_account_is_refused_until_funded_and_approved_and_the_client_reports_each_step(venue: Venue) -> None:
    client = venue.client(funded=False)
    address = client.get_address()
    yes, _ = tokens(venue.market())
    _, ask = best(client, yes)
    nothing = {CONTRACTS.exchange_v2: "0", CONTRACTS.neg_risk_exchange_v2: "0", CONTRACTS.exchange_v3: "0"}
    assert client.get_balance_allowance(COLLATERAL) == {"balance": "0", "allowances": nothing}
    status, text = rejection(lambda: client.create_and_post_order(bid(yes, ask)))
    assert status == 400 and text.startswith(
        "not enough balance / allowance: the balance is not enough -> balance: 0, sum of active orders: 0, ")

    venue.admin("fund", address=address, collateral=100)  # a deposit
    assert client.update_balance_allowance(COLLATERAL) == {"balance": "100000000", "allowances": nothing}
    status, text = rejection(lambda: client.create_and_post_order(bid(yes, ask)))
    assert status == 400 and text.startswith(
        f"not enough balance / allowance: the allowance is not enough -> spender: {CONTRACTS.exchange_v2}, "
        "allowance: 0, sum of active orders: 0, order amount (inc. fees): ")

    venue.admin("approve", address=address, exchange=CONTRACTS.exchange_v2, amount=50)  # its approval
    assert client.update_balance_allowance(COLLATERAL) == {
        "balance": "100000000", "allowances": {**nothing, CONTRACTS.exchange_v2: "50000000"}}
    placed = client.create_and_post_order(bid(yes, ask))
    assert placed["success"] and placed["status"] == "matched"
    spent = int(Decimal(placed["makingAmount"]) * 10**6)  # what the fill took, fee included
    assert client.get_balance_allowance(COLLATERAL) == {
        "balance": str(100_000_000 - spent), "allowances": {**nothing, CONTRACTS.exchange_v2: str(50_000_000 - spent)}}
    shares = BalanceAllowanceParams(asset_type=AssetType.CONDITIONAL, token_id=yes)
    assert client.update_balance_allowance(shares)["balance"] == client.get_balance_allowance(shares)["balance"] == (
        "10000000")


# ------------------------------------------------------------ a matching-engine restart, rate limits

def test_a_restart_answers_425_with_retry_after_then_takes_only_post_only_orders_and_cancels_until_it_is_over(
        venue: Venue) -> None:
    client = venue.client()
    yes, _ = tokens(venue.market())
    resting = client.create_and_post_order(bid(yes, 0.03))
    order = client.create_order(bid(yes, 0.02))
    try:
        venue.admin("restart", seconds=90, post_only_seconds=120)
        with answers() as seen:
            down = refusal(lambda: client.post_order(order, post_only=True))
        # The real venue's bare text (py-clob-client #273), which the client keeps as the message.
        assert (down.status_code, down.error_msg) == (425, "service not ready")
        assert 0 < int(seen[-1].headers["Retry-After"]) <= 90
        for call in (lambda: client.post_orders([PostOrdersV2Args(order=order, orderType=OrderType.GTC)]),
                     lambda: client.cancel_order(OrderPayload(orderID=resting["orderID"])), client.cancel_all):
            assert refusal(call).status_code == 425

        venue.admin("restart", seconds=0, post_only_seconds=120)  # the engine is back, post-only
        with answers() as seen:
            taker = refusal(lambda: client.post_order(order))
        # The CLOB OpenAPI's post-only body: text, code and the wait, which the Retry-After header repeats.
        wait = taker.error_msg.pop("retry_after_seconds")
        assert (taker.status_code, taker.error_msg) == (503, {
            "error": "post-only mode: only post-only orders and cancels are allowed", "code": "post_only_mode"})
        assert 0 < wait <= 120 and int(seen[-1].headers["Retry-After"]) == wait
        assert client.post_order(order, post_only=True)["status"] == "live"
        # A batch is answered order by order with 200, as the docs show: a plain order "succeeds" with the
        # post-only text and no id (nothing placed); a post-only batch rests.
        plain, maker = (PostOrdersV2Args(order=client.create_order(bid(yes, p))) for p in (0.04, 0.05))
        (answer,) = client.post_orders([plain])
        assert (answer["success"], answer["errorMsg"], answer["orderID"], answer["status"]) == (
            True, "post-only mode: only post-only orders and cancels are allowed", "", "")
        (answer,) = client.post_orders([maker], post_only=True)
        assert (answer["success"], answer["errorMsg"], answer["status"]) == (True, "", "live")
        assert client.cancel_order(OrderPayload(orderID=resting["orderID"]))["canceled"] == [resting["orderID"]]
    finally:
        venue.admin("restart", seconds=0, post_only_seconds=0)
    assert client.create_and_post_order(bid(yes, 0.01))["status"] == "live"


def placed_unless_limited(client: ClobClient, order) -> dict | None:
    """The client's answer to ``order``, or None if it was refused for the rate limit."""
    try:
        return client.post_order(order)
    except PolyApiException as exc:
        assert exc.status_code == 429, exc
        return None


def test_past_the_order_limit_the_client_gets_429_with_retry_after_and_the_order_passes_once_refilled(
        venue: Venue) -> None:
    client = venue.client()
    yes, _ = tokens(venue.market())
    orders = [client.create_order(bid(yes, 0.01 * (i + 1), 5)) for i in range(3)]
    # Two orders at once, then one every two seconds: the refusal comes well within that, and the refused order
    # passes again at most two seconds later.
    venue.admin("rate-limits", orders={"rate": 0.5, "burst": 2})
    try:
        with answers() as seen:
            assert client.post_order(orders[0])["success"] and client.post_order(orders[1])["success"]
            limited = refusal(lambda: client.post_order(orders[2]))
        assert (limited.status_code, limited.error_msg) == (429, {"error": "too many requests: rate limit exceeded"})
        headers = seen[-1].headers
        assert int(headers["Retry-After"]) in (1, 2) and float(headers["Poly-RateLimit-Remaining"]) < 1
        assert {"poly-ratelimit-remaining", "poly-ratelimit-reset", "poly-ratelimit-tier"} <= set(seen[0].headers)
        # Waiting on the refill is the behaviour under test; the limit above keeps it to two seconds at most.
        placed = wait_for(lambda: placed_unless_limited(client, orders[2]), timeout=10,
                          what="the order bucket to refill")
        assert placed["success"]
    finally:
        venue.admin("rate-limits")

