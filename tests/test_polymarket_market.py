"""The Polymarket adapter's market data against the local venue: Gamma's listing of both protocol versions, a
market looked up alone, and market-channel feeds that follow books, take new listings and come back after the
venue drops or stalls them."""
from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from services import messages as m
from services.books import Books
from services.venues.base import UNAVAILABLE, VenueError
from services.venues.polymarket import feed
from services.venues.polymarket.market import MarketData, Meters
from services.venues.polymarket.ws import ChannelOptions

from .conftest import free_port
from .venue_harness import Venue, tokens

QUICK = ChannelOptions(ping_s=0.2, stale_after_s=1.0, reconnect_initial_s=0.05, reconnect_max_s=0.2)
LOG = logging.getLogger("tests.market")


@pytest.fixture(scope="module")
def venue(tmp_path_factory) -> Iterator[Venue]:
    venue = Venue(Path(os.path.realpath(tmp_path_factory.mktemp("market"))) / "venue", 23)
    yield venue
    venue.stop()


class Counted:
    """The meters, counting."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.requests: list[tuple[str, bool]] = []

    def meters(self) -> Meters:
        return Meters(frame=lambda: self.counts.update(["frame"]), bad=lambda: self.counts.update(["bad"]),
                      reconnect=lambda: self.counts.update(["reconnect"]),
                      request=lambda op, seconds, failed: self.requests.append((op, failed)))


class Listener:
    """What the feeds tell the scanner, recorded; it follows each listing once (every feed hears of it)."""

    def __init__(self) -> None:
        self.books = Books()
        self.connected: list[int] = []
        self.down: list[tuple[list[str], str]] = []
        self.listed: list[m.MarketNew] = []

    def on_data(self, prices: feed.Prices, events: feed.Events, now_ns: int) -> list[str]:
        for msg in prices:
            self.books.apply(msg)
        known = {mk.market for mk in self.listed}
        new = [e for e in events if isinstance(e, m.MarketNew) and e.market not in known]
        self.listed += new
        return [o.token_id for e in new for o in e.outcomes]

    def on_connected(self, number: int) -> None:
        self.connected.append(number)

    def on_down(self, assets: list[str], reason: str) -> None:
        self.down.append((list(assets), reason))


def open_markets(venue: Venue) -> dict[str, str]:
    """Every open market the venue has, by condition id, with its protocol version (its offset listing gives all)."""
    listed = httpx.get(f"{venue.gamma}/markets", params={"limit": 1000, "closed": "false"}).json()
    return {mk["conditionId"]: mk.get("version", "v1") for mk in listed}


def rest_book(venue: Venue, token: str) -> dict:
    book = httpx.get(f"{venue.clob}/book", params={"token_id": token}).json()
    return {"BUY": {Decimal(x["price"]): Decimal(x["size"]) for x in book["bids"]},
            "SELL": {Decimal(x["price"]): Decimal(x["size"]) for x in book["asks"]}}


async def until(condition: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    """Poll ``condition`` on the event loop (the feeds run between polls); fail after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)
    assert condition(), what


def test_the_listing_has_every_open_market_of_both_protocol_versions_across_pages(venue: Venue) -> None:
    expected = open_markets(venue)
    assert "v2" in expected.values()
    # Gamma's keyset listing, asked nothing about versions, gives v1 markets alone: the adapter must ask for both.
    unasked = httpx.get(f"{venue.gamma}/markets/keyset", params={"limit": 1000}).json()["markets"]
    assert {mk.get("version", "v1") for mk in unasked} == {"v1"}
    meters = Counted()
    source = MarketData(venue.gamma, venue.market_ws, LOG, gamma_page=7, meters=meters.meters())
    markets = asyncio.run(source.markets())
    assert {mk.market: mk.protocol for mk in markets} == expected and len(markets) == len(expected)
    assert len(meters.requests) == -(-len(expected) // 7) and not any(failed for _, failed in meters.requests)
    assert source.bad_frames == 0


def test_a_market_is_looked_up_alone_v2_too_and_one_gamma_does_not_list_is_none(venue: Venue) -> None:
    source = MarketData(venue.gamma, venue.market_ws, LOG)
    v2 = venue.v2_markets[0]
    found = asyncio.run(source.market(v2["conditionId"]))
    assert found is not None and found.protocol == "v2"
    assert [o.token_id for o in found.outcomes] == list(tokens(v2))
    assert asyncio.run(source.market("0x" + "0" * 64)) is None


def test_gamma_out_of_reach_is_a_venue_error_and_a_failed_request() -> None:
    meters = Counted()
    source = MarketData(f"http://127.0.0.1:{free_port()}", "ws://127.0.0.1:1/ws/market", LOG, meters=meters.meters())
    with pytest.raises(VenueError) as raised:
        asyncio.run(source.markets())
    assert raised.value.code == UNAVAILABLE and "ConnectError" in raised.value.message
    assert meters.requests == [("gamma_markets", True)]


def test_feeds_follow_books_take_new_listings_and_come_back_after_a_drop_and_a_stall(venue: Venue) -> None:
    meters = Counted()
    listener = Listener()
    source = MarketData(venue.gamma, venue.market_ws, LOG, channel=QUICK, assets_per_connection=3,
                        meters=meters.meters())
    assets = [*tokens(venue.market()), *tokens(venue.v2_markets[1]), *tokens(venue.market())]

    def books_match(wanted: list[str]) -> bool:
        return all(listener.books.levels.get(t) == rest_book(venue, t) for t in wanted)

    async def body() -> None:
        feeds = source.follow(assets, listener)
        assert [len(f.assets) for f in feeds] == [3, 3]
        tasks = [asyncio.create_task(f.run()) for f in feeds]
        try:
            await until(lambda: sorted(listener.connected) == [0, 1], "both feeds subscribed")
            await until(lambda: books_match(assets), "every book as GET /book has it")

            listed = await asyncio.to_thread(venue.admin, "list")
            await until(lambda: books_match(listed["tokens"]), "the new market's books, on a feed that took it")
            assert [mk.market for mk in listener.listed] == [listed["market"]]
            assert sum(len(f.assets) for f in feeds) == len(assets) + len(listed["tokens"])

            assert (await asyncio.to_thread(venue.admin, "drop-connections"))["dropped"] >= 2
            await until(lambda: len(listener.connected) >= 4, "both feeds back")
            assert meters.counts["reconnect"] >= 2 and source.reconnects >= 2
            assert {frozenset(a) for a, _ in listener.down} == {frozenset(f.assets) for f in feeds}

            before = len(listener.down)
            await asyncio.to_thread(venue.admin, "stall", seconds=2.5)  # longer than stale_after_s
            await until(lambda: any("silent" in why for _, why in listener.down[before:]), "a silent feed")
            await until(lambda: len(listener.connected) >= 6, "both feeds back after the stall")
            await until(lambda: books_match(assets + listed["tokens"]), "every book again")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(body())
    # PONGs and the other text frames stop in the channel: every frame that reached the adapter was data.
    assert source.bad_frames == 0 and meters.counts["bad"] == 0
    assert meters.counts["frame"] == source.frames > 0
