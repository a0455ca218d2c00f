"""The local venue's WebSocket channels through a real WebSocket client, in depth: a book rebuilt from the market
channel alone, subscriptions changed on the fly, refused credentials, and every frame against our wire schema. The
channels as a py-clob-client-v2 user meets them are in test_venue_py_clob_client."""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from py_clob_client_v2.clob_types import OrderArgsV2, OrderPayload
from websockets.sync.client import ClientConnection, connect

from .venue_harness import Venue, frames, tokens, until


@pytest.fixture(scope="module")
def venue(tmp_path_factory) -> Iterator[Venue]:
    venue = Venue(Path(os.path.realpath(tmp_path_factory.mktemp("venue"))) / "s", 5)
    yield venue
    venue.stop()


class LocalBook:
    """A book rebuilt from the market channel alone."""

    def __init__(self) -> None:
        self.levels: dict[str, dict[str, dict[Decimal, Decimal]]] = {}

    def apply(self, msg: dict) -> None:
        if msg.get("event_type") == "book":
            self.levels[msg["asset_id"]] = {
                "BUY": {Decimal(x["price"]): Decimal(x["size"]) for x in msg["bids"]},
                "SELL": {Decimal(x["price"]): Decimal(x["size"]) for x in msg["asks"]}}
        elif msg.get("event_type") == "price_change":
            for change in msg["price_changes"]:
                side = self.levels[change["asset_id"]][change["side"]]
                if Decimal(change["size"]) == 0:
                    side.pop(Decimal(change["price"]), None)
                else:
                    side[Decimal(change["price"])] = Decimal(change["size"])

    def matches(self, venue: Venue, token: str) -> bool:
        rest = httpx.get(f"{venue.clob}/book", params={"token_id": token}).json()
        return self.levels[token] == {
            "BUY": {Decimal(x["price"]): Decimal(x["size"]) for x in rest["bids"]},
            "SELL": {Decimal(x["price"]): Decimal(x["size"]) for x in rest["asks"]}}


@contextlib.contextmanager
def subscribe(venue: Venue, assets: list[str]) -> Iterator[ClientConnection]:
    with connect(venue.market_ws) as ws:
        ws.send(json.dumps({"type": "market", "assets_ids": assets, "custom_feature_enabled": True,
                            "initial_dump": True}))
        yield ws


def test_the_initial_dump_is_an_array_of_books_equal_to_the_rest_books(venue: Venue) -> None:
    yes, no = tokens(venue.market())
    with subscribe(venue, [yes, no]) as ws:
        dump = json.loads(ws.recv(timeout=10))
        assert isinstance(dump, list) and [b["asset_id"] for b in dump] == [yes, no]
        book = LocalBook()
        for msg in dump:
            assert msg["event_type"] == "book"
            book.apply(msg)
        assert book.matches(venue, yes) and book.matches(venue, no)
        ws.send("PING")
        assert until(ws, lambda m: m == "PONG")[-1] == "PONG"


def test_price_changes_keep_a_locally_rebuilt_book_equal_to_the_rest_book(venue: Venue) -> None:
    maker, taker = venue.client(), venue.client()
    yes, no = tokens(venue.market())
    book = LocalBook()
    with subscribe(venue, [yes, no]) as ws:
        for msg in until(ws, lambda m: m.get("event_type") == "book" and m["asset_id"] == no):
            book.apply(msg)
        bid = max(book.levels[yes]["BUY"])
        steps = [
            lambda: maker.create_and_post_order(OrderArgsV2(token_id=yes, price=float(bid + Decimal("0.01")),
                                                            size=10, side="BUY")),
            lambda: maker.create_and_post_order(OrderArgsV2(token_id=no, price=0.02, size=7, side="BUY")),
            lambda: taker.create_and_post_order(OrderArgsV2(token_id=no, price=float(1 - bid - Decimal("0.01")),
                                                            size=5, side="BUY")),  # fills 5 of the 10
            lambda: maker.cancel_all(),
        ]
        for step in steps:
            step()
            for msg in until(ws, lambda m: m.get("event_type") == "price_change"):
                book.apply(msg)
            for msg in frames(ws, timeout=0.3):  # the rest of this step's messages, if any
                book.apply(msg)
            assert book.matches(venue, yes) and book.matches(venue, no)


def test_a_trade_prints_a_last_trade_price_on_the_market_channel(venue: Venue) -> None:
    client = venue.client()
    yes, _ = tokens(venue.market())
    with subscribe(venue, [yes]) as ws:
        until(ws, lambda m: m.get("event_type") == "book")
        ask = min(Decimal(a["price"]) for a in httpx.get(f"{venue.clob}/book", params={"token_id": yes}).json()["asks"])
        client.create_and_post_order(OrderArgsV2(token_id=yes, price=float(ask), size=5, side="BUY"))
        tick = until(ws, lambda m: m.get("event_type") == "last_trade_price")[-1]
        assert (tick["asset_id"], Decimal(tick["price"]), Decimal(tick["size"]), tick["side"]) == (yes, ask, 5, "BUY")


def test_unsubscribed_assets_go_quiet_and_a_new_subscription_gets_its_book(venue: Venue) -> None:
    client = venue.client()
    first, second = venue.market(), venue.market()
    (yes1, _), (yes2, _) = tokens(first), tokens(second)
    with subscribe(venue, [yes1]) as ws:
        until(ws, lambda m: m.get("event_type") == "book")
        ws.send(json.dumps({"operation": "subscribe", "assets_ids": [yes2]}))
        assert until(ws, lambda m: m.get("event_type") == "book")[-1]["asset_id"] == yes2
        ws.send(json.dumps({"operation": "unsubscribe", "assets_ids": [yes1]}))
        ws.send("PING")
        until(ws, lambda m: m == "PONG")  # the unsubscribe was handled before this
        client.create_and_post_order(OrderArgsV2(token_id=yes1, price=0.02, size=5, side="BUY"))
        client.create_and_post_order(OrderArgsV2(token_id=yes2, price=0.02, size=5, side="BUY"))
        change = until(ws, lambda m: m.get("event_type") == "price_change")[-1]
        assert {c["asset_id"] for c in change["price_changes"]} == {yes2}


def test_a_user_subscription_with_wrong_credentials_is_closed(venue: Venue) -> None:
    client = venue.client()
    with connect(venue.user_ws) as ws:
        ws.send(json.dumps({"type": "user", "auth": {"apiKey": client.creds.api_key, "secret": "wrong",
                                                     "passphrase": client.creds.api_passphrase}}))
        with pytest.raises(Exception) as closed:
            ws.recv(timeout=10)
        assert "Unauthorized" in str(closed.value)


def test_every_frame_the_channels_send_decodes_with_the_polymarket_wire_schema(venue: Venue) -> None:
    from services.venues.polymarket import schema

    maker, taker = venue.client(), venue.client()
    yes, no = tokens(venue.market())
    with subscribe(venue, [yes, no]) as market_ws, connect(venue.user_ws) as user_ws:
        creds = maker.creds
        user_ws.send(json.dumps({"type": "user", "auth": {"apiKey": creds.api_key, "secret": creds.api_secret,
                                                          "passphrase": creds.api_passphrase}}))
        user_ws.send("PING")
        assert user_ws.recv(timeout=10) == "PONG"
        raw_market = [market_ws.recv(timeout=10)]  # the initial dump
        bid = max(Decimal(b["price"]) for b in json.loads(raw_market[0])[0]["bids"])
        placed = maker.create_and_post_order(OrderArgsV2(token_id=yes, price=float(bid + Decimal("0.01")), size=10,
                                                         side="BUY"))
        taker.create_and_post_order(OrderArgsV2(token_id=no, price=float(1 - bid - Decimal("0.01")), size=5,
                                                side="BUY"))
        maker.cancel_order(OrderPayload(orderID=placed["orderID"]))
        raw_user = []
        while not any('"CANCELLATION"' in f for f in raw_user) or not any('"CONFIRMED"' in f for f in raw_user):
            raw_user.append(user_ws.recv(timeout=10))
        while not any('"event_type":"last_trade_price"' in f for f in raw_market):
            raw_market.append(market_ws.recv(timeout=10))
    market_types = {type(m).__name__ for raw in raw_market for m in schema.decode_market_frame(raw.encode())}
    user_msgs = [m for raw in raw_user for m in schema.decode_user_frame(raw.encode())]
    assert {"WsBook", "WsPriceChange", "WsLastTradePrice"} <= market_types
    assert {m.type for m in user_msgs if type(m).__name__ == "WsOrder"} == {"PLACEMENT", "UPDATE", "CANCELLATION"}
    assert [m.status for m in user_msgs if type(m).__name__ == "WsTrade"] == ["MATCHED", "MINED", "CONFIRMED"]
