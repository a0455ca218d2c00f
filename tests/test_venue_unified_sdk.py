"""The local venue through Polymarket's unified Python SDK, polymarket-client (module ``polymarket``), unchanged.

The SDK is pointed at the venue with an environment built from production's by ``dataclasses.replace`` and
``polymarket._internal.environment.create_environment``: ``Environment`` cannot be constructed through the public
API. Both accounts pass ``wallet=`` (an EOA, and a deposit wallet funded through the admin endpoints), so the SDK's
default bootstrap (relayer deployment, JSON-RPC approvals) is not used. Even with ``wallet=``, a deposit wallet makes
the SDK ask the relayer ``GET /deployed`` once; the venue serves no relayer, so this module answers that one read
(``_Relayer``). Every other host the environment names is a closed loopback port, so a call the flow did not expect
fails instead of reaching the network."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from eth_account import Account
from polymarket import (
    PRODUCTION,
    AsyncSecureClient,
    OrderHeartbeatMismatchError,
    RateLimitError,
    RequestRejectedError,
    SecureClient,
)
from polymarket._internal.environment import create_environment, get_environment_config
from polymarket.streams import MarketSpec, UserOrderEvent, UserSpec, UserTradeEvent

from polybot_venue.engine import taker_fee
from polybot_venue.wallets import deposit_wallet_beacon

from .conftest import wait_for
from .venue_harness import Venue, tokens

SEED = 17
V2_EXCHANGE = "0xE111180000d2663C0091e4f400237545B87B996B"
NEG_RISK_V2_EXCHANGE = "0xe2222d279d744050d28e00520010520000310F59"
NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing listens, so a stray call fails at once


class _Relayer:
    """The one relayer read the SDK makes for an explicit deposit wallet: ``GET /deployed`` → deployed."""

    def __init__(self) -> None:
        asked: list[dict[str, list[str]]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                url = urlparse(self.path)
                if url.path != "/deployed":
                    self.send_error(404)
                    return
                asked.append(parse_qs(url.query))
                body = json.dumps({"deployed": True}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.asked = asked
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def venue_environment(venue: Venue, relayer_url: str):
    """Production's environment with every host replaced: the venue's, the relayer stand-in, or nowhere."""
    config = dataclasses.replace(
        get_environment_config(PRODUCTION), chain_id=137,
        clob_url=venue.clob, gamma_url=venue.gamma,
        clob_market_ws_url=venue.market_ws, clob_user_ws_url=venue.user_ws,
        relayer_url=relayer_url, data_url=NOWHERE, rfq_url=NOWHERE, rpc_url=NOWHERE,
        rtds_ws_url=NOWHERE.replace("http", "ws"), sports_ws_url=NOWHERE.replace("http", "ws"),
        builder_gateway_url=NOWHERE, collateral_return_url=NOWHERE, perps_url=NOWHERE,
        perps_ws_url=NOWHERE.replace("http", "ws"), realtime_ws_url=NOWHERE.replace("http", "ws"),
        rfq_quoter_ws_url=NOWHERE.replace("http", "ws"), relayer_poll_frequency_ms=10)
    return create_environment(name="local-venue", config=config)


@dataclasses.dataclass
class Flow:
    venue: Venue
    relayer: _Relayer
    environment: object
    maker_key: str
    taker_key: str
    maker: SecureClient   # an EOA (signature type 0)
    taker: SecureClient   # a deposit wallet (signature type 3)
    taker_wallet: str


def fund(venue: Venue, address: str) -> None:
    venue.admin("fund", address=address, collateral=1_000)
    venue.admin("approve", address=address, exchange="all", unlimited=True)


@pytest.fixture(scope="module")
def flow(tmp_path_factory) -> Iterator[Flow]:
    venue = Venue(Path(os.path.realpath(tmp_path_factory.mktemp("venue"))) / "s", SEED, 100)
    relayer = _Relayer()
    clients: list[SecureClient] = []
    try:
        environment = venue_environment(venue, relayer.url)
        maker_key, taker_key = Account.create().key.hex(), Account.create().key.hex()
        maker_address = Account.from_key(maker_key).address
        taker_wallet = deposit_wallet_beacon(Account.from_key(taker_key).address)
        fund(venue, maker_address)
        fund(venue, taker_wallet)
        maker = SecureClient.create(private_key=maker_key, wallet=maker_address, environment=environment)
        clients.append(maker)
        taker = SecureClient.create(private_key=taker_key, wallet=taker_wallet, environment=environment)
        clients.append(taker)
        yield Flow(venue, relayer, environment, maker_key, taker_key, maker, taker, taker_wallet)
    finally:
        for client in clients:
            client.close()
        relayer.stop()
        venue.stop()


def test_the_sdk_classifies_an_eoa_and_a_deposit_wallet_and_asks_the_relayer_only_about_the_wallet(flow: Flow) -> None:
    assert (flow.maker.wallet_type, flow.taker.wallet_type) == ("EOA", "DEPOSIT_WALLET")
    assert flow.taker.wallet == flow.taker_wallet
    assert [query["address"] for query in flow.relayer.asked] == [[flow.taker_wallet]]


def test_the_sdk_lists_every_market_through_gamma_keyset_pages(flow: Flow) -> None:
    listed = list(flow.maker.list_markets(page_size=7).iter_items())
    gamma = httpx.get(f"{flow.venue.gamma}/markets", params={"limit": 500}).json()
    assert sorted(m.condition_id for m in listed) == sorted(m["conditionId"] for m in gamma if not m["closed"])



def fee_schedule(market: dict) -> tuple[Decimal, Decimal]:
    schedule = market["feeSchedule"]
    return Decimal(str(schedule["rate"])), Decimal(str(schedule["exponent"]))


def inside_bid(client: SecureClient, token: str) -> Decimal:
    """One tick above the best bid, still under the best ask: a price that rests at the top of the book."""
    book = client.get_order_book(token_id=token)
    price = book.bids[-1].price + book.tick_size  # bids ascend and asks descend, as on the real venue
    assert price < book.asks[-1].price
    return price


def test_the_sdk_reads_a_book_as_the_venue_serves_it(flow: Flow) -> None:
    market = flow.venue.market()
    yes, _ = tokens(market)
    book = flow.maker.get_order_book(token_id=yes)
    served = httpx.get(f"{flow.venue.clob}/book", params={"token_id": yes}).json()
    assert (book.condition_id, book.asset_id) == (market["conditionId"], yes) and book.hash
    assert (book.tick_size, book.min_order_size, book.neg_risk) == (Decimal("0.01"), Decimal(5), False)
    assert [(level.price, level.size) for level in book.bids] == [
        (Decimal(level["price"]), Decimal(level["size"])) for level in served["bids"]]
    assert book.bids[-1].price < book.asks[-1].price


def test_a_resting_order_is_listed_open_then_an_order_from_the_deposit_wallet_fills_it_and_both_see_the_trade(
        flow: Flow) -> None:
    market = flow.venue.market()
    yes, no = tokens(market)
    rate, exponent = fee_schedule(market)
    price = inside_bid(flow.maker, yes)

    resting = flow.maker.place_limit_order(token_id=yes, price=price, size=10, side="BUY")
    assert (resting.ok, resting.status, resting.trade_ids) == (True, "live", ())
    (listed,) = flow.maker.list_open_orders(token_id=yes).iter_items()
    assert (listed.id, listed.side, listed.price, listed.original_size, listed.size_matched) == (
        resting.order_id, "BUY", price, 10, 0)
    assert listed.maker_address == flow.maker.wallet and listed.asset_id == yes
    assert flow.maker.get_order(order_id=resting.order_id).status == "LIVE"
    assert flow.maker.get_order_book(token_id=yes).bids[-1].price == price

    # The deposit wallet buys NO at 1 - price: it crosses the bid (YES and NO books mirror) and pays the taker fee.
    before = flow.taker.get_balance_allowance(asset_type="COLLATERAL").balance
    crossing = flow.taker.place_limit_order(token_id=no, price=1 - price, size=10, side="BUY")
    fee = taker_fee(Decimal(10), 1 - price, rate, exponent)
    assert (crossing.ok, crossing.status, len(crossing.trade_ids)) == (True, "matched", 1) and fee > 0
    assert (crossing.taking_amount, crossing.making_amount) == (10, 10 * (1 - price) + fee)
    after = flow.taker.get_balance_allowance(asset_type="COLLATERAL").balance
    assert before - after == (10 * (1 - price) + fee) * 10**6
    assert list(flow.maker.list_open_orders(token_id=yes).iter_items()) == []

    (maker_trade,) = flow.maker.list_account_trades(market=market["conditionId"]).iter_items()
    (taker_trade,) = flow.taker.list_account_trades(market=market["conditionId"]).iter_items()
    assert maker_trade.id == taker_trade.id == crossing.trade_ids[0]
    assert (maker_trade.trader_side, maker_trade.asset_id, maker_trade.price) == ("MAKER", yes, price)
    assert (taker_trade.trader_side, taker_trade.asset_id, taker_trade.price, taker_trade.size) == (
        "TAKER", no, 1 - price, 10)
    (maker_order,) = taker_trade.maker_orders
    assert (maker_order.order_id, maker_order.maker_address, maker_order.matched_amount) == (
        resting.order_id, flow.maker.wallet, 10)
    assert taker_trade.maker_address == flow.taker_wallet
    shares = flow.taker.get_balance_allowance(asset_type="CONDITIONAL", token_id=no)
    assert shares.balance == 10 * 10**6


def test_a_batch_of_signed_orders_posts_in_one_call_and_cancels_one_by_id_then_the_rest_all_at_once(
        flow: Flow) -> None:
    market = flow.venue.market()
    yes, no = tokens(market)
    price = inside_bid(flow.maker, yes)
    signed = [flow.maker.create_limit_order(token_id=yes, price=price - step, size=5, side="BUY", post_only=True)
              for step in (Decimal(0), Decimal("0.01"), Decimal("0.02"))]
    posted = flow.maker.post_orders(signed)
    assert [(answer.ok, answer.status) for answer in posted] == [(True, "live")] * 3
    ids = [answer.order_id for answer in posted]
    assert sorted(o.id for o in flow.maker.list_open_orders(market=market["conditionId"]).iter_items()) == sorted(ids)

    one = flow.maker.cancel_order(order_id=ids[0])
    assert (one.canceled, one.not_canceled) == ((ids[0],), {})
    some = flow.maker.cancel_orders(order_ids=[ids[0], ids[1]])
    assert some.canceled == (ids[1],) and set(some.not_canceled) == {ids[0]}
    rest = flow.maker.cancel_all()
    assert rest.canceled == (ids[2],)
    assert list(flow.maker.list_open_orders(market=market["conditionId"]).iter_items()) == []


def test_heartbeats_chain_ids_and_a_stale_id_raises_the_typed_mismatch_naming_the_expected_one(flow: Flow) -> None:
    client = flow.taker
    first = client.send_order_heartbeat().heartbeat_id
    second = client.send_order_heartbeat(heartbeat_id=first).heartbeat_id
    with pytest.raises(OrderHeartbeatMismatchError) as stale:
        client.send_order_heartbeat(heartbeat_id=first)
    assert (stale.value.status, stale.value.heartbeat_id) == (400, second)
    assert client.send_order_heartbeat(heartbeat_id=second).heartbeat_id not in (first, second)


def test_balance_allowance_answers_for_the_deposit_wallet_with_what_its_owner_deposited_and_approved(
        flow: Flow) -> None:
    key = Account.create().key.hex()
    wallet = deposit_wallet_beacon(Account.from_key(key).address)
    flow.venue.admin("fund", address=wallet, collateral=250)
    flow.venue.admin("approve", address=wallet, exchange=V2_EXCHANGE, amount=100)
    client = SecureClient.create(private_key=key, wallet=wallet, environment=flow.environment)
    try:
        collateral = client.get_balance_allowance(asset_type="COLLATERAL")
        assert (collateral.balance, collateral.allowances) == (
            250 * 10**6, {V2_EXCHANGE: 100 * 10**6, NEG_RISK_V2_EXCHANGE: 0})
        assert flow.maker.get_balance_allowance(asset_type="COLLATERAL").allowances[V2_EXCHANGE] == 2**256 - 1
    finally:
        client.close()


def test_a_restart_raises_the_typed_restarting_rejection_then_post_only_and_cancels_pass_in_the_window(
        flow: Flow) -> None:
    yes, _ = tokens(flow.venue.market())
    price = inside_bid(flow.maker, yes)
    try:
        flow.venue.admin("restart", seconds=5, post_only_seconds=0)
        with pytest.raises(RequestRejectedError) as down:
            flow.maker.place_limit_order(token_id=yes, price=price, size=5, side="BUY")
        assert (down.value.status, down.value.restriction) == (425, "restarting")
        assert down.value.retry_after is not None and 0 < down.value.retry_after <= 5

        flow.venue.admin("restart", seconds=0, post_only_seconds=60)  # the engine is back, post-only for a minute
        with pytest.raises(RequestRejectedError) as post_only:
            flow.maker.place_limit_order(token_id=yes, price=price, size=5, side="BUY")
        assert (post_only.value.status, post_only.value.restriction, post_only.value.code) == (
            503, "post_only", "post_only_mode")
        resting = flow.maker.place_limit_order(token_id=yes, price=price, size=5, side="BUY", post_only=True)
        assert resting.status == "live"
        assert flow.maker.cancel_order(order_id=resting.order_id).canceled == (resting.order_id,)
    finally:
        flow.venue.admin("restart", seconds=0, post_only_seconds=0)


def test_past_the_order_limit_the_sdk_raises_its_rate_limit_error_with_retry_after_and_the_venues_state(
        flow: Flow) -> None:
    key = Account.create().key.hex()
    address = Account.from_key(key).address
    fund(flow.venue, address)
    updates: list = []
    client = SecureClient.create(private_key=key, wallet=address, environment=flow.environment,
                                 on_rate_limit_update=updates.append)
    yes, _ = tokens(flow.venue.market())
    try:
        orders = [client.create_limit_order(token_id=yes, price=Decimal("0.01") * (i + 1), size=5, side="BUY")
                  for i in range(3)]
        # Two orders at once, then one a second: the refusal comes well within that second.
        flow.venue.admin("rate-limits", orders={"rate": 1, "burst": 2})
        assert client.post_order(orders[0]).ok and client.post_order(orders[1]).ok
        assert updates and updates[-1].tier and updates[-1].remaining is not None
        with pytest.raises(RateLimitError) as limited:
            client.post_order(orders[2])
        assert limited.value.retry_after is not None and limited.value.retry_after >= 1
        assert limited.value.rate_limit is not None and limited.value.rate_limit.remaining < 1
        # Waiting on the refill is the behaviour under test; the limit above keeps it to about a second.
        assert wait_for(lambda: _posted(client, orders[2]), timeout=5, what="the order bucket to refill").ok
    finally:
        flow.venue.admin("rate-limits")
        client.cancel_all()
        client.close()


def _posted(client: SecureClient, order):
    try:
        return client.post_order(order)
    except RateLimitError:
        return None


async def _next(handle, wanted, timeout: float = 10.0):
    """The first event from ``handle`` that ``wanted`` accepts, within ``timeout`` seconds."""
    async def scan():
        async for event in handle:
            if wanted(event):
                return event
        raise AssertionError("the subscription ended")
    return await asyncio.wait_for(scan(), timeout)


def test_the_sdks_market_and_user_streams_carry_the_book_the_order_and_the_fill(flow: Flow) -> None:
    market = flow.venue.market()
    yes, no = tokens(market)
    price = inside_bid(flow.maker, yes)

    async def run() -> None:
        client = await AsyncSecureClient.create(private_key=flow.maker_key, wallet=flow.maker.wallet,
                                                environment=flow.environment)
        try:
            books = await client.subscribe(MarketSpec(asset_ids=[yes, no], custom_feature_enabled=True))
            mine = await client.subscribe(UserSpec(markets=[market["conditionId"]]))
            book = await _next(books, lambda e: e.type == "book" and e.payload.asset_id == yes)
            assert book.payload.bids[-1].price == price - Decimal("0.01")

            resting = await client.place_limit_order(token_id=yes, price=price, size=10, side="BUY")
            placed = await _next(mine, lambda e: isinstance(e, UserOrderEvent))
            assert (placed.payload.id, placed.payload.order_event_type, placed.payload.price) == (
                resting.order_id, "PLACEMENT", price)
            top = await _next(books, lambda e: e.type == "best_bid_ask" and e.payload.asset_id == yes)
            assert top.payload.best_bid == price

            crossing = await asyncio.to_thread(
                flow.taker.place_limit_order, token_id=no, price=1 - price, size=10, side="BUY")
            fill = await _next(mine, lambda e: isinstance(e, UserTradeEvent))
            assert fill.payload.id == crossing.trade_ids[0] and fill.payload.trader_side == "MAKER"
            assert fill.payload.maker_orders[0].order_id == resting.order_id
            # The venue prints a trade on the taker's token, here NO.
            printed = await _next(books, lambda e: e.type == "last_trade_price")
            assert (printed.payload.asset_id, printed.payload.price, printed.payload.size) == (no, 1 - price, 10)
            await books.close()
            await mine.close()
        finally:
            await client.close()

    asyncio.run(run())
