"""Polymarket's unified SDK (polymarket-client) driven through its real flow against a local venue.

Run by tests/test_venue_unified_sdk.py with the Python of the SDK's own virtual environment, so it imports only the
SDK and the standard library. Everything else comes from the environment: the venue's URLs (its CLOB also serves
the relayer and JSON-RPC), keys and wallets (funded by the test), the markets to use (``SDK_FLOW_MARKETS``) and
which part of the flow to run (``SDK_FLOW_PART``: ``trading``, or ``wallets`` for the SDK's own wallet setup). It
records what the SDK returns and raises, raw, and prints one JSON line ``{"result": ...}``; the test does the
arithmetic and asserts. To change the venue's state mid-flow (a restart, rate limits, a deposit) it prints
``{"admin": action, "body": {...}}`` and waits for the test's ``ok`` on stdin. Keys are never printed."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
import sys
import time
from decimal import Decimal

from polymarket import (
    PRODUCTION,
    AsyncSecureClient,
    RateLimitError,
    RelayerApiKey,
    SecureClient,
)
from polymarket._internal.environment import create_environment, get_environment_config
from polymarket.streams import MarketSpec, UserOrderEvent, UserSpec, UserTradeEvent

NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing listens, so a stray call fails at once
NOWHERE_WS = NOWHERE.replace("http", "ws")
ENV = os.environ


def venue_environment():
    """Production's environment with every host replaced: the venue's (the relayer and JSON-RPC too) or nowhere.
    The relayer is polled every 25 ms: the venue confirms a transaction in under a second, within the SDK's 100
    polls."""
    config = dataclasses.replace(
        get_environment_config(PRODUCTION), chain_id=137,
        clob_url=ENV["SDK_FLOW_CLOB"], gamma_url=ENV["SDK_FLOW_GAMMA"],
        clob_market_ws_url=ENV["SDK_FLOW_MARKET_WS"], clob_user_ws_url=ENV["SDK_FLOW_USER_WS"],
        relayer_url=ENV["SDK_FLOW_RELAYER"], rpc_url=ENV["SDK_FLOW_RPC"], data_url=NOWHERE, rfq_url=NOWHERE,
        rtds_ws_url=NOWHERE_WS, sports_ws_url=NOWHERE_WS, builder_gateway_url=NOWHERE,
        collateral_return_url=NOWHERE, perps_url=NOWHERE, perps_ws_url=NOWHERE_WS, realtime_ws_url=NOWHERE_WS,
        rfq_quoter_ws_url=NOWHERE_WS, relayer_poll_frequency_ms=25)
    return create_environment(name="local-venue", config=config)


def admin(action: str, **body) -> None:
    """Ask the test to call the venue's admin endpoint ``action``; returns once it has."""
    print(json.dumps({"admin": action, "body": body}), flush=True)
    answer = sys.stdin.readline().strip()
    if answer != "ok":
        raise RuntimeError(f"the test answered {answer!r} to admin {action}")


def raised(call, *args, **kwargs) -> dict:
    """What ``call`` raised (its classes and the fields the SDK types carry), or what it returned instead."""
    try:
        returned = call(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 (recorded, judged by the test)
        limit = getattr(error, "rate_limit", None)
        return {"raised": [c.__name__ for c in type(error).__mro__], "message": str(error)[:500],
                **{field: getattr(error, field, None)
                   for field in ("status", "restriction", "code", "retry_after", "heartbeat_id")},
                "rate_limit_remaining": None if limit is None else limit.remaining}
    return {"raised": [], "returned": repr(returned)[:500]}


def top(client: SecureClient, token: str) -> dict:
    """The best bid and ask, and one tick above the bid: a price that rests at the top of the book."""
    book = client.get_order_book(token_id=token)
    # bids ascend and asks descend, as on the real venue
    return {"bid": book.bids[-1].price, "ask": book.asks[-1].price, "price": book.bids[-1].price + book.tick_size}


def trade(t) -> dict:
    return {"id": t.id, "trader_side": t.trader_side, "asset_id": t.asset_id, "price": t.price, "size": t.size,
            "maker_address": t.maker_address,
            "maker_orders": [{"order_id": o.order_id, "maker_address": o.maker_address,
                              "matched_amount": o.matched_amount} for o in t.maker_orders]}


def open_ids(client: SecureClient, **where) -> list[str]:
    return [o.id for o in client.list_open_orders(**where).iter_items()]


def clients(environment) -> tuple[SecureClient, SecureClient, dict]:
    maker = SecureClient.create(private_key=ENV["SDK_FLOW_MAKER_KEY"], wallet=ENV["SDK_FLOW_MAKER_WALLET"],
                                environment=environment)
    taker = SecureClient.create(private_key=ENV["SDK_FLOW_TAKER_KEY"], wallet=ENV["SDK_FLOW_TAKER_WALLET"],
                                environment=environment)
    return maker, taker, {"maker_type": maker.wallet_type, "taker_type": taker.wallet_type,
                          "maker_wallet": maker.wallet, "taker_wallet": taker.wallet}


def book_section(maker: SecureClient, market: dict) -> dict:
    book = maker.get_order_book(token_id=market["yes"])
    return {"condition_id": book.condition_id, "asset_id": book.asset_id, "hash": book.hash,
            "tick_size": book.tick_size, "min_order_size": book.min_order_size, "neg_risk": book.neg_risk,
            "bids": [[level.price, level.size] for level in book.bids],
            "best_bid": book.bids[-1].price, "best_ask": book.asks[-1].price}


def fill_section(maker: SecureClient, taker: SecureClient, market: dict) -> dict:
    yes, no, condition = market["yes"], market["no"], market["condition_id"]
    at = top(maker, yes)
    price = at["price"]
    resting = maker.place_limit_order(token_id=yes, price=price, size=10, side="BUY")
    listed = [{"id": o.id, "side": o.side, "price": o.price, "original_size": o.original_size,
               "size_matched": o.size_matched, "maker_address": o.maker_address, "asset_id": o.asset_id}
              for o in maker.list_open_orders(token_id=yes).iter_items()]
    fetched = maker.get_order(order_id=resting.order_id).status
    bid_after = maker.get_order_book(token_id=yes).bids[-1].price
    # The deposit wallet buys NO at 1 - price: it crosses the bid (YES and NO books mirror) and pays the taker fee.
    before = taker.get_balance_allowance(asset_type="COLLATERAL").balance
    crossing = taker.place_limit_order(token_id=no, price=1 - price, size=10, side="BUY")
    after = taker.get_balance_allowance(asset_type="COLLATERAL").balance
    return {
        "top": at,
        "resting": {"ok": resting.ok, "status": resting.status, "trade_ids": list(resting.trade_ids),
                    "order_id": resting.order_id, "listed": listed, "fetched_status": fetched,
                    "bid_after": bid_after},
        "crossing": {"ok": crossing.ok, "status": crossing.status, "trade_ids": list(crossing.trade_ids),
                     "taking_amount": crossing.taking_amount, "making_amount": crossing.making_amount,
                     "balance_before": before, "balance_after": after,
                     "maker_open_after": open_ids(maker, token_id=yes)},
        "trades": {"maker": [trade(t) for t in maker.list_account_trades(market=condition).iter_items()],
                   "taker": [trade(t) for t in taker.list_account_trades(market=condition).iter_items()]},
        "taker_shares": taker.get_balance_allowance(asset_type="CONDITIONAL", token_id=no).balance,
    }


def batch_section(maker: SecureClient, market: dict) -> dict:
    yes, condition = market["yes"], market["condition_id"]
    price = top(maker, yes)["price"]
    signed = [maker.create_limit_order(token_id=yes, price=price - step, size=5, side="BUY", post_only=True)
              for step in (Decimal(0), Decimal("0.01"), Decimal("0.02"))]
    posted = maker.post_orders(signed)
    ids = [answer.order_id for answer in posted]
    listed = open_ids(maker, market=condition)
    one = maker.cancel_order(order_id=ids[0])
    some = maker.cancel_orders(order_ids=[ids[0], ids[1]])
    rest = maker.cancel_all()
    return {"posted": [[answer.ok, answer.status] for answer in posted], "ids": ids, "open": listed,
            "cancel_one": {"canceled": list(one.canceled), "not_canceled": dict(one.not_canceled)},
            "cancel_some": {"canceled": list(some.canceled), "not_canceled": dict(some.not_canceled)},
            "cancel_all": {"canceled": list(rest.canceled)}, "open_after": open_ids(maker, market=condition)}


def heartbeat_section(client: SecureClient) -> dict:
    first = client.send_order_heartbeat().heartbeat_id
    second = client.send_order_heartbeat(heartbeat_id=first).heartbeat_id
    stale = raised(client.send_order_heartbeat, heartbeat_id=first)
    third = client.send_order_heartbeat(heartbeat_id=second).heartbeat_id
    return {"first": first, "second": second, "stale": stale, "third": third}


def allowance_section(maker: SecureClient, environment) -> dict:
    client = SecureClient.create(private_key=ENV["SDK_FLOW_ALLOWANCE_KEY"], wallet=ENV["SDK_FLOW_ALLOWANCE_WALLET"],
                                 environment=environment)
    try:
        collateral = client.get_balance_allowance(asset_type="COLLATERAL")
        return {"balance": collateral.balance, "allowances": dict(collateral.allowances),
                "maker_allowances": dict(maker.get_balance_allowance(asset_type="COLLATERAL").allowances)}
    finally:
        client.close()


def restart_section(maker: SecureClient, market: dict) -> dict:
    yes = market["yes"]
    price = top(maker, yes)["price"]
    try:
        admin("restart", seconds=5, post_only_seconds=0)
        down = raised(maker.place_limit_order, token_id=yes, price=price, size=5, side="BUY")
        admin("restart", seconds=0, post_only_seconds=60)  # the engine is back, post-only for a minute
        post_only = raised(maker.place_limit_order, token_id=yes, price=price, size=5, side="BUY")
        resting = maker.place_limit_order(token_id=yes, price=price, size=5, side="BUY", post_only=True)
        canceled = maker.cancel_order(order_id=resting.order_id).canceled
        return {"down": down, "post_only": post_only, "resting_status": resting.status,
                "resting_id": resting.order_id, "canceled": list(canceled)}
    finally:
        admin("restart", seconds=0, post_only_seconds=0)


def rate_limit_section(environment, market: dict) -> dict:
    updates: list = []
    client = SecureClient.create(private_key=ENV["SDK_FLOW_LIMITED_KEY"], wallet=ENV["SDK_FLOW_LIMITED_WALLET"],
                                 environment=environment, on_rate_limit_update=updates.append)
    try:
        orders = [client.create_limit_order(token_id=market["yes"], price=Decimal("0.01") * (i + 1), size=5,
                                            side="BUY") for i in range(3)]
        # Two orders at once, then one a second: the refusal comes well within that second.
        admin("rate-limits", orders={"rate": 1, "burst": 2})
        accepted = [client.post_order(orders[0]).ok, client.post_order(orders[1]).ok]
        last = updates[-1] if updates else None
        limited = raised(client.post_order, orders[2])
        # Waiting on the refill is the behaviour under test; the limit above keeps it to about a second.
        deadline, refilled = time.monotonic() + 5, None
        while refilled is None and time.monotonic() < deadline:
            try:
                refilled = client.post_order(orders[2]).ok
            except RateLimitError:
                time.sleep(0.05)
        return {"accepted": accepted, "updates": len(updates), "last_tier": None if last is None else last.tier,
                "last_remaining": None if last is None else last.remaining, "limited": limited,
                "refilled": refilled}
    finally:
        admin("rate-limits")
        client.cancel_all()
        client.close()


async def _next(handle, wanted, timeout: float = 10.0):
    """The first event from ``handle`` that ``wanted`` accepts, within ``timeout`` seconds."""
    async def scan():
        async for event in handle:
            if wanted(event):
                return event
        raise RuntimeError("the subscription ended")
    return await asyncio.wait_for(scan(), timeout)


async def stream_section(environment, taker: SecureClient, market: dict) -> dict:
    yes, no = market["yes"], market["no"]
    client = await AsyncSecureClient.create(private_key=ENV["SDK_FLOW_MAKER_KEY"], wallet=ENV["SDK_FLOW_MAKER_WALLET"],
                                            environment=environment)
    try:
        at = await asyncio.to_thread(top, taker, yes)
        price = at["price"]
        books = await client.subscribe(MarketSpec(asset_ids=[yes, no], custom_feature_enabled=True))
        mine = await client.subscribe(UserSpec(markets=[market["condition_id"]]))
        book = await _next(books, lambda e: e.type == "book" and e.payload.asset_id == yes)
        resting = await client.place_limit_order(token_id=yes, price=price, size=10, side="BUY")
        placed = await _next(mine, lambda e: isinstance(e, UserOrderEvent))
        best = await _next(books, lambda e: e.type == "best_bid_ask" and e.payload.asset_id == yes)
        crossing = await asyncio.to_thread(taker.place_limit_order, token_id=no, price=1 - price, size=10, side="BUY")
        fill = await _next(mine, lambda e: isinstance(e, UserTradeEvent))
        printed = await _next(books, lambda e: e.type == "last_trade_price")
        await books.close()
        await mine.close()
        return {"top": at, "book_bid": book.payload.bids[-1].price, "resting_id": resting.order_id,
                "placed": {"id": placed.payload.id, "type": placed.payload.order_event_type,
                           "price": placed.payload.price},
                "best_bid": best.payload.best_bid, "crossing_trade_ids": list(crossing.trade_ids),
                "fill": {"id": fill.payload.id, "trader_side": fill.payload.trader_side,
                         "maker_order_id": fill.payload.maker_orders[0].order_id},
                "printed": {"asset_id": printed.payload.asset_id, "price": printed.payload.price,
                            "size": printed.payload.size}}
    finally:
        await client.close()


def allowances(client: SecureClient) -> dict:
    return dict(client.get_balance_allowance(asset_type="COLLATERAL").allowances)


class Requests(logging.Handler):
    """The SDK's HTTP requests as its transports log them, ``[method, path, status]`` (JSON-RPC's path is
    ``<rpc>``); a poll repeating the same request is kept once."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[list] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not str(record.msg).startswith("polymarket http %s %s -> %d"):
            return
        method, path, status = record.args[:3]
        path = re.sub(r"^/v1/account/transactions/[0-9a-f-]{36}$", "/v1/account/transactions/{id}", path)
        entry = [method, path or "<rpc>", status]
        if not self.seen or self.seen[-1] != entry:
            self.seen.append(entry)

    def take(self) -> list[list]:
        seen, self.seen = self.seen, []
        return seen


def recording_logger(name: str) -> tuple[logging.Logger, Requests]:
    logger = logging.getLogger(f"sdk-flow.{name}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    requests = Requests()
    logger.addHandler(requests)
    return logger, requests


def default_wallet_section(environment, market: dict) -> dict:
    """The SDK's default flow with a builder key: no ``wallet=``, so it deploys the owner's deposit wallet through
    the relayer; an order without funds is refused as it is, one without an allowance makes the SDK approve
    through a signed relayer batch and post again."""
    boot = SecureClient.create(private_key=ENV["SDK_FLOW_BUILDER_OWNER_KEY"], wallet=ENV["SDK_FLOW_BUILDER_OWNER"],
                               environment=environment)
    try:
        builder = boot.create_builder_api_key()
        builder_keys = [info.key for info in boot.fetch_builder_api_keys()]
    finally:
        boot.close()
    logger, requests = recording_logger("default")
    client = SecureClient.create(private_key=ENV["SDK_FLOW_DEFAULT_KEY"], environment=environment, api_key=builder,
                                 logger=logger)
    try:
        created = requests.take()
        yes = market["yes"]
        at = top(client, yes)
        requests.take()
        unfunded = raised(client.place_limit_order, token_id=yes, price=at["price"], size=10, side="BUY")
        unfunded_requests = requests.take()
        admin("fund", address=client.wallet, collateral=100)
        placed = client.place_limit_order(token_id=yes, price=at["price"], size=10, side="BUY")
        placed_requests = requests.take()
        listed = open_ids(client, token_id=yes)
        canceled = client.cancel_order(order_id=placed.order_id).canceled
        return {"wallet": client.wallet, "wallet_type": client.wallet_type,
                "builder_key_listed": builder.key in builder_keys,
                "requests": {"create": created, "unfunded": unfunded_requests, "placed": placed_requests},
                "unfunded": unfunded, "placed": {"ok": placed.ok, "status": placed.status, "id": placed.order_id},
                "listed": listed, "allowances": allowances(client), "canceled": list(canceled)}
    finally:
        client.close()


def relayed_wallet_section(environment, market: dict) -> dict:
    """The default flow with a relayer API key, on a protocol-v2 market: buying approves pUSD to exchange V3,
    selling approves the position manager's tokens to it, each through a relayer batch; then the SDK's trading
    setup approves the rest in one batch, and a second setup finds nothing missing."""
    key = json.loads(ENV["SDK_FLOW_RELAYER_API_KEY"])
    client = SecureClient.create(private_key=ENV["SDK_FLOW_RELAYED_KEY"], environment=environment,
                                 api_key=RelayerApiKey(key=key["apiKey"], address=key["address"]))
    try:
        yes = market["yes"]
        admin("fund", address=client.wallet, collateral=100)
        at = top(client, yes)
        bought = client.place_limit_order(token_id=yes, price=at["ask"], size=10, side="BUY")
        shares = client.get_balance_allowance(asset_type="CONDITIONAL-V2", token_id=yes)
        sold = client.place_limit_order(token_id=yes, price=at["bid"], size=10, side="SELL")
        after_sale = client.get_balance_allowance(asset_type="CONDITIONAL-V2", token_id=yes)
        resting = client.place_limit_order(token_id=yes, price=at["bid"], size=5, side="BUY", post_only=True)
        canceled = client.cancel_order(order_id=resting.order_id).canceled
        before_setup = allowances(client)
        client.setup_trading_approvals()
        after_setup = allowances(client)
        client.setup_trading_approvals()  # everything approved: reads the chain and submits nothing
        return {"wallet": client.wallet, "wallet_type": client.wallet_type, "top": at,
                "bought": {"ok": bought.ok, "status": bought.status, "trade_ids": list(bought.trade_ids)},
                "shares": shares.balance, "share_allowances": dict(shares.allowances),
                "sold": {"ok": sold.ok, "status": sold.status, "trade_ids": list(sold.trade_ids)},
                "shares_after_sale": after_sale.balance,
                "resting": {"status": resting.status, "id": resting.order_id}, "canceled": list(canceled),
                "before_setup": before_setup, "after_setup": after_setup}
    finally:
        client.close()


def eoa_wallet_section(environment, market: dict) -> dict:
    """An EOA (``wallet=`` its own address) has no relayer: it approves by sending its own transaction over
    JSON-RPC, then posts again."""
    client = SecureClient.create(private_key=ENV["SDK_FLOW_EOA_KEY"], wallet=ENV["SDK_FLOW_EOA"],
                                 environment=environment)
    try:
        yes = market["yes"]
        at = top(client, yes)
        placed = client.place_limit_order(token_id=yes, price=at["price"], size=10, side="BUY")
        canceled = client.cancel_order(order_id=placed.order_id).canceled
        return {"wallet_type": client.wallet_type, "placed": {"ok": placed.ok, "status": placed.status},
                "allowances": allowances(client), "canceled": list(canceled)}
    finally:
        client.close()


def owned_wallet_section(environment, market: dict, name: str) -> dict:
    """A proxy or Safe wallet the test funded and approved, named by ``wallet=``: a fill and a cancel."""
    client = SecureClient.create(private_key=ENV[f"SDK_FLOW_{name}_KEY"], wallet=ENV[f"SDK_FLOW_{name}_WALLET"],
                                 environment=environment)
    try:
        yes, condition = market["yes"], market["condition_id"]
        at = top(client, yes)
        bought = client.place_limit_order(token_id=yes, price=at["ask"], size=10, side="BUY")
        shares = client.get_balance_allowance(asset_type="CONDITIONAL", token_id=yes).balance
        resting = client.place_limit_order(token_id=yes, price=at["bid"], size=5, side="BUY")
        canceled = client.cancel_order(order_id=resting.order_id).canceled
        return {"wallet_type": client.wallet_type, "top": at,
                "bought": {"ok": bought.ok, "status": bought.status, "trade_ids": list(bought.trade_ids)},
                "shares": shares,
                "trades": [trade(t) for t in client.list_account_trades(market=condition).iter_items()],
                "resting": {"status": resting.status, "id": resting.order_id}, "canceled": list(canceled)}
    finally:
        client.close()


def wallets_main(environment, markets: dict) -> dict:
    return {"default": default_wallet_section(environment, markets["default"]),
            "relayed": relayed_wallet_section(environment, markets["v2"]),
            "eoa": eoa_wallet_section(environment, markets["eoa"]),
            "proxy": owned_wallet_section(environment, markets["proxy"], "PROXY"),
            "safe": owned_wallet_section(environment, markets["safe"], "SAFE")}


def main() -> None:
    markets = json.loads(ENV["SDK_FLOW_MARKETS"])
    environment = venue_environment()
    if ENV.get("SDK_FLOW_PART") == "wallets":
        print(json.dumps({"result": wallets_main(environment, markets)}, default=_decimal), flush=True)
        return
    maker, taker, wallets = clients(environment)
    try:
        result = {"wallets": wallets,
                  "listed": [m.condition_id for m in maker.list_markets(page_size=7).iter_items()],
                  "listed_v2": [m.condition_id for m in maker.list_markets(page_size=7, version="v2").iter_items()],
                  "events_v2": [{"id": e.id, "version": e.version, "neg_risk": e.trading.neg_risk,
                                 "members": [[m.outcomes.yes.position_id, m.resolution.onchain_event_id,
                                              m.resolution.request_id] for m in e.markets]}
                                for e in maker.list_events(version="v2").iter_items()],
                  "book": book_section(maker, markets["book"]),
                  "fill": fill_section(maker, taker, markets["fill"]),
                  "batch": batch_section(maker, markets["batch"]),
                  "heartbeat": heartbeat_section(taker),
                  "allowance": allowance_section(maker, environment),
                  "restart": restart_section(maker, markets["restart"]),
                  "rate_limit": rate_limit_section(environment, markets["rate_limit"]),
                  "stream": asyncio.run(stream_section(environment, taker, markets["stream"]))}
    finally:
        maker.close()
        taker.close()
    # Decimals as strings, so the test compares them exactly.
    print(json.dumps({"result": result}, default=_decimal), flush=True)


def _decimal(value) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


if __name__ == "__main__":
    main()
