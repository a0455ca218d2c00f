"""The scanner against the local venue: books on the bus equal the venue's, reconnects, staleness, lifecycle."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from py_clob_client_v2.clob_types import OrderArgsV2

from services import messages as m
from services.books import Books
from services.bus import Bus
from services.config import ensure_state_dir, load

from .conftest import child_env, wait_for
from .venue_harness import Venue, mesh_config, tokens

PER_CONNECTION = 10


class Tap:
    """Everything the scanner publishes, collected by a subscriber in the test process."""

    def __init__(self, config) -> None:
        self.bus = Bus(config)
        self.inbound = [self.bus.inbound("prices"), self.bus.inbound("events")]
        self.messages: list[m.Message] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._read, args=(i,), daemon=True) for i in self.inbound]
        for thread in self.threads:
            thread.start()

    def _read(self, inbound) -> None:
        while not self.stop.is_set():
            batch = inbound.recv_batch(100)
            with self.lock:
                self.messages += batch

    def of(self, kind: type) -> list:
        with self.lock:
            return [msg for msg in self.messages if isinstance(msg, kind)]

    def books(self) -> dict[str, dict[str, dict[Decimal, Decimal]]]:
        """Books rebuilt from the bus alone, with the same book-keeping the strategies use."""
        books = Books()
        with self.lock:
            messages = list(self.messages)
        for msg in messages:
            books.apply(msg)
        return books.levels

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(5)
        self.bus.close()


class Setup:
    def __init__(self, root: Path) -> None:
        self.venue = Venue(root / "venue", 31)
        config_file = mesh_config(root, self.venue,
                                  '[services.scanner]\nkind = "services.scanner:Scanner"\n'
                                  f"options = {{ assets_per_connection = {PER_CONNECTION}, stale_after_s = 1.0, "
                                  "ping_s = 0.3, reconnect_initial_s = 0.1, reconnect_max_s = 0.5 }\n")
        self.config = load(config_file, {"HOME": str(root)})
        ensure_state_dir(self.config)
        self.tap = Tap(self.config)  # subscribe before the scanner starts
        self.scanner = subprocess.Popen([sys.executable, "-m", "services", "--config", str(config_file), "run",
                                         "scanner"], env=child_env(), stderr=subprocess.PIPE, text=True)
        self.all_tokens = [t for mk in httpx.get(f"{self.venue.gamma}/markets", params={"limit": 500}).json()
                           for t in tokens(mk)]
        # A subscriber misses what was published before it connected (PUB/SUB), so once the tap is
        # connected, have the venue drop the scanner's feeds: the reconnect brings fresh snapshots.
        wait_for(lambda: all(i.socket.pipes for i in self.tap.inbound), what="the tap to connect to the scanner")
        wait_for(lambda: httpx.post(f"{self.venue.clob}/_admin/drop-connections").json()["dropped"] > 0,
                 what="the scanner's feeds to connect")

    def rest_book(self, token: str) -> dict[str, dict[Decimal, Decimal]]:
        book = httpx.get(f"{self.venue.clob}/book", params={"token_id": token}).json()
        return {"BUY": {Decimal(x["price"]): Decimal(x["size"]) for x in book["bids"]},
                "SELL": {Decimal(x["price"]): Decimal(x["size"]) for x in book["asks"]}}

    def books_match(self) -> bool:
        mine = self.tap.books()
        return all(t in mine and mine[t] == self.rest_book(t) for t in self.all_tokens)

    def close(self) -> None:
        self.scanner.terminate()
        self.scanner.wait(20)
        self.tap.close()
        self.venue.stop()


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Iterator[Setup]:
    s = Setup(Path(os.path.realpath(tmp_path_factory.mktemp("scan"))))
    yield s
    s.close()


def admin(setup: Setup, action: str, **body) -> dict:
    return httpx.post(f"{setup.venue.clob}/_admin/{action}", json=body, timeout=10).json()


def test_every_market_is_published_and_every_book_on_the_bus_equals_the_venues(setup: Setup) -> None:
    wait_for(setup.books_match, what="books rebuilt from the bus to equal GET /book")
    snapshots = setup.tap.of(m.BookSnapshot)
    assert max(len(s.books) for s in snapshots) > 1  # a frame's books travel together


def test_orders_resting_filling_and_canceled_keep_the_bus_books_equal_to_the_venue(setup: Setup) -> None:
    maker, taker = setup.venue.client(), setup.venue.client()
    yes, no = tokens(setup.venue.market())
    bid = max(setup.rest_book(yes)["BUY"])
    maker.create_and_post_order(OrderArgsV2(token_id=yes, price=float(bid + Decimal("0.01")), size=20, side="BUY"))
    taker.create_and_post_order(OrderArgsV2(token_id=no, price=float(1 - bid - Decimal("0.01")), size=5, side="BUY"))
    maker.cancel_all()
    wait_for(setup.books_match, what="the bus books to follow the venue")
    trades = [t for t in setup.tap.of(m.LastTrade) if t.token_id == no]
    assert trades and trades[-1].size == 5


def test_after_the_venue_drops_every_connection_the_scanner_reconnects_and_rebuilds_every_book(setup: Setup) -> None:
    wait_for(setup.books_match, what="books to match before the drop")
    before = len(setup.tap.of(m.BookSnapshot))
    assert admin(setup, "drop-connections")["dropped"] >= len(setup.all_tokens) // PER_CONNECTION
    wait_for(lambda: len(setup.tap.of(m.BookSnapshot)) > before, what="fresh snapshots after the reconnect")
    wait_for(setup.books_match, what="every book rebuilt after the reconnect")


def test_a_silent_feed_marks_its_markets_stale_and_fresh_books_mark_them_live(setup: Setup) -> None:
    seen = len(setup.tap.of(m.MarketStale))
    admin(setup, "stall", seconds=2.5)  # longer than stale_after_s
    stale = wait_for(lambda: [s for s in setup.tap.of(m.MarketStale)[seen:] if s.stale],
                     what="markets marked stale")
    assert "silent" in stale[0].reason
    wait_for(lambda: any(not s.stale for s in setup.tap.of(m.MarketStale)[seen:]), what="markets live again")
    wait_for(setup.books_match, what="books rebuilt after the stall")


def test_resolutions_and_new_listings_reach_events_and_a_new_markets_book_follows(setup: Setup) -> None:
    market = setup.venue.market()
    admin(setup, "resolve", market=market["conditionId"], winner="No")
    resolved = wait_for(lambda: [r for r in setup.tap.of(m.MarketResolved) if r.market == market["conditionId"]],
                        what="the resolution on events")
    assert resolved[0].winning_token_id == tokens(market)[1]
    listed = admin(setup, "list")
    new, = wait_for(lambda: [n for n in setup.tap.of(m.MarketNew) if n.market == listed["market"]],
                    what="the new market")
    gamma, = httpx.get(f"{setup.venue.gamma}/markets", params={"condition_ids": listed["market"]}).json()
    # As Gamma describes it: the market channel's listing has no fees, minimum size or neg-risk flag.
    assert (new.fee_rate, new.min_size, new.neg_risk, new.tick_size) == (
        Decimal(str(gamma["feeSchedule"]["rate"])) if gamma["feesEnabled"] else 0,
        Decimal(str(gamma["orderMinSize"])), gamma["negRisk"], Decimal(str(gamma["orderPriceMinTickSize"])))
    wait_for(lambda: all(t in setup.tap.books() for t in listed["tokens"]), what="the new market's books")


def test_status_counts_markets_connections_and_no_bad_frames(setup: Setup) -> None:
    with Bus(setup.config).requester("scanner") as req:
        detail = req.request(m.StatusRequest()).service.detail
    assert int(detail["connections"]) == -(-len(setup.all_tokens) // PER_CONNECTION)
    assert int(detail["markets"]) >= len(setup.all_tokens) // 2 and detail["bad_frames"] == "0"



def test_a_tick_size_change_reaches_events_and_the_snapshot_a_late_subscriber_starts_from(setup: Setup) -> None:
    market = setup.venue.market()
    admin(setup, "tick", market=market["conditionId"], tick="0.001")
    changes = wait_for(lambda: [c for c in setup.tap.of(m.TickSizeChange) if c.market == market["conditionId"]],
                       what="the tick size change on events")
    assert changes[0].new_tick_size == Decimal("0.001")
    with setup.tap.bus.requester("scanner", 3000) as req:
        snapshot = req.request(m.SnapshotRequest())
    described, = [mk for mk in snapshot.markets if mk.market == market["conditionId"]]
    assert described.tick_size == Decimal("0.001")


def test_protocol_v2_markets_are_announced_with_their_books(setup: Setup) -> None:
    # Gamma's keyset listing gives v1 markets alone unless asked for v2 as well.
    v2 = setup.venue.v2_markets + setup.venue.v2_neg_risk_markets
    ids = [mk["conditionId"] for mk in v2]
    assert ids, "the venue lists protocol-v2 markets"
    with setup.tap.bus.requester("scanner", 3000) as req:
        def ready() -> m.SnapshotReply | None:  # an Error says "not ready" while the feeds subscribe
            reply = req.request(m.SnapshotRequest(markets=ids))
            return reply if isinstance(reply, m.SnapshotReply) else None
        snapshot = wait_for(ready, what="the scanner's snapshot")
    assert {mk.market: mk.protocol for mk in snapshot.markets} == dict.fromkeys(ids, "v2")
    assert {b.token_id for b in snapshot.books.books} == {t for mk in v2 for t in tokens(mk)}
    wait_for(lambda: all(setup.tap.books().get(t) == setup.rest_book(t) for mk in v2 for t in tokens(mk)),
             what="the v2 markets' books on the bus to equal GET /book")
