"""Paper trading: the fill model on its own, then the executor in paper mode against the local venue's books."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from services import messages as m
from services.venues.base import MarketRules, OrderRequest, VenueFill, VenueOrder
from services.venues.paper import PaperBook, paper_order_id

from .executor_harness import ExecutorMesh, fee, order
from .venue_harness import tokens

D = Decimal
RATE = D("0.05")


def market() -> m.MarketNew:
    return m.MarketNew(market="mk", question="?", outcomes=[m.Outcome(token_id="y", name="Yes"),
                                                           m.Outcome(token_id="n", name="No")],
                       fee_rate=RATE, min_size=D(5))


def book(bids: dict[str, str], asks: dict[str, str]) -> m.BookSnapshot:
    """YES levels as given, and the NO book that mirrors them, as the venue publishes both."""
    def levels(side: dict[str, str], mirror: bool = False) -> list[m.Level]:
        return [m.Level(1 - D(p) if mirror else D(p), D(s)) for p, s in side.items()]
    return m.BookSnapshot(books=[m.Book(token_id="y", market="mk", bids=levels(bids), asks=levels(asks)),
                                 m.Book(token_id="n", market="mk", bids=levels(asks, True), asks=levels(bids, True))])


def change(side: str, price: str, size: str, token: str = "y") -> m.BookDelta:
    """One level's new size, on YES and mirrored on NO."""
    p, other = D(price), ("SELL" if side == "BUY" else "BUY")
    mirror = token == "y" and "n" or "y"
    return m.BookDelta(changes=[m.LevelChange(token_id=token, market="mk", side=side, price=p, size=D(size)),
                                m.LevelChange(token_id=mirror, market="mk", side=other, price=1 - p, size=D(size))])


def trade(price: str, size: str, side: str, token: str = "y") -> m.LastTrade:
    return m.LastTrade(token_id=token, market="mk", price=D(price), size=D(size), side=side)


class Paper:
    """A PaperBook and the orders placed on it."""

    def __init__(self, bids: dict[str, str], asks: dict[str, str]) -> None:
        self.now_ms = 1_000_000
        self.book = PaperBook(lambda: self.now_ms)
        self.book.observe(market())
        self.book.observe(book(bids, asks))
        self.n = 0

    def place(self, side: str, size: str, price: str, order_type: str = "GTC", token: str = "y", **extra):
        self.n += 1
        req = OrderRequest(client_id=f"o{self.n}", token_id=token, market="mk", side=side, price=D(price),
                           size=D(size), order_type=order_type, rules=self.book.rules.get(token, self.book.rules["y"]), **extra)
        return self.book.place(req, paper_order_id(req.client_id))

    def feed(self, *msgs: m.Message) -> list[VenueFill]:
        return [e for msg in msgs for e in self.book.observe(msg) if isinstance(e, VenueFill)]


def test_a_taking_order_walks_the_levels_at_their_prices_never_past_its_limit_or_the_displayed_size() -> None:
    paper = Paper(bids={"0.40": "100"}, asks={"0.45": "10", "0.46": "20", "0.48": "50"})
    placed, fills = paper.place("BUY", "40", "0.46", "FAK")
    assert [(f.price, f.size, f.liquidity) for f in fills] == [(D("0.45"), D(10), "TAKER"), (D("0.46"), D(20), "TAKER")]
    assert [f.fee for f in fills] == [fee(D(10), D("0.45"), RATE), fee(D(20), D("0.46"), RATE)]
    assert placed.ok and placed.matched == 30
    assert paper.book.states[placed.venue_order_id].status == "CANCELED"  # the FAK's 10 left over
    # What the FAK took stays taken though the venue still shows it: the next buyer pays 0.48.
    after, fills = paper.place("BUY", "10", "0.48", "FOK")
    assert after.ok and [(f.price, f.size) for f in fills] == [(D("0.48"), D(10))]


def test_two_orders_cannot_take_the_same_displayed_size_until_the_level_empties() -> None:
    paper = Paper(bids={"0.40": "100"}, asks={"0.45": "30"})
    _, first = paper.place("BUY", "20", "0.45", "FOK")
    assert sum(f.size for f in first) == 20
    killed, _ = paper.place("BUY", "20", "0.45", "FOK")  # the venue still shows 30, but 20 of it was ours
    assert killed.code == "FOK_UNFILLED"
    # The same liquidity seen through the NO book (a YES ask at 0.45 is a NO bid at 0.55) is taken too.
    _, mirrored = paper.place("SELL", "15", "0.55", "FAK", token="n")
    assert [(f.price, f.size) for f in mirrored] == [(D("0.55"), D(10))]
    paper.feed(change("SELL", "0.45", "0"))  # the level empties...
    paper.feed(change("SELL", "0.45", "25"))  # ...and fills again: all of it is new
    _, again = paper.place("BUY", "25", "0.45", "FOK")
    assert sum(f.size for f in again) == 25


def test_a_resting_order_waits_behind_the_queue_ahead_and_fills_only_after_it() -> None:
    paper = Paper(bids={"0.40": "100", "0.39": "50"}, asks={"0.45": "30"})
    placed, fills = paper.place("BUY", "20", "0.40")
    assert fills == [] and paper.book.resting[placed.venue_order_id].ahead == 100
    # 30 trade at our price: the level shows 70, then the print. Still 70 ahead of us.
    assert paper.feed(change("BUY", "0.40", "70"), trade("0.40", "30", "SELL")) == []
    assert paper.book.resting[placed.venue_order_id].ahead == 70
    # 50 cancel: the level shows 20, so at most 20 can be ahead of us.
    assert paper.feed(change("BUY", "0.40", "20")) == []
    # A seller of 35 takes the 20 at 0.40, then 15 at 0.39: that print is through our price, so it is ours.
    fills = paper.feed(change("BUY", "0.40", "0"), trade("0.40", "20", "SELL"), change("BUY", "0.39", "35"),
                       trade("0.39", "15", "SELL"))
    assert [(f.price, f.size, f.liquidity, f.fee) for f in fills] == [(D("0.40"), D(15), "MAKER", D(0))]
    # A print on the NO book at 0.60 (a NO buyer meeting YES bids at 0.40) is the same trade, mirrored.
    fills = paper.feed(trade("0.60", "8", "BUY", token="n"))
    assert [(f.price, f.size) for f in fills] == [(D("0.40"), D(5))]
    assert paper.book.states[placed.venue_order_id].status == "MATCHED"


def test_a_level_that_shrinks_but_stays_above_our_queue_is_assumed_to_lose_orders_behind_us() -> None:
    paper = Paper(bids={"0.40": "100"}, asks={"0.45": "30"})
    placed, _ = paper.place("BUY", "10", "0.40")
    paper.feed(change("BUY", "0.40", "160"))  # 60 join behind us
    paper.feed(change("BUY", "0.40", "110"))  # 50 leave: from behind, for all we know
    assert paper.book.resting[placed.venue_order_id].ahead == 100
    assert paper.feed(change("BUY", "0.40", "10"), trade("0.40", "100", "SELL")) == []  # the 100 ahead trade
    assert [f.size for f in paper.feed(trade("0.40", "4", "SELL"))] == [D(4)]


def test_asks_shown_at_or_through_a_resting_bid_fill_it_at_its_own_price() -> None:
    paper = Paper(bids={"0.40": "100", "0.39": "50"}, asks={"0.45": "30"})
    placed, _ = paper.place("BUY", "30", "0.42")  # best bid now, nothing ahead
    fills = paper.feed(change("SELL", "0.41", "12"))  # someone rests an ask below our bid: it would have hit us
    assert [(f.price, f.size, f.liquidity) for f in fills] == [(D("0.42"), D(12), "MAKER")]
    assert paper.feed(change("SELL", "0.41", "12")) == []  # the same ask shown again is not ours again
    # Behind better bids, only what they leave is ours: an ask at 0.38 goes to 0.42 (ours) and 0.40 first.
    other, _ = paper.place("BUY", "10", "0.39")
    assert [(f.price, f.size) for f in paper.feed(change("SELL", "0.38", "5"))] == [(D("0.42"), D(5))]
    assert paper.book.resting[other.venue_order_id].remaining == 10
    # 115 more at 0.38: 13 fill the rest of 0.42; 0.39 still waits behind 0.40's 100 and its own 50.
    assert [(f.price, f.size) for f in paper.feed(change("SELL", "0.38", "120"))] == [(D("0.42"), D(13))]
    assert paper.book.resting[other.venue_order_id].remaining == 10


def test_the_book_refuses_what_the_venue_would() -> None:
    paper = Paper(bids={"0.40": "100"}, asks={"0.45": "30"})
    assert paper.place("BUY", "4", "0.40")[0].code == "MIN_SIZE"
    assert paper.place("BUY", "10", "0.405")[0].code == "TICK_SIZE"
    paper.feed(m.TickSizeChange(token_id="y", market="mk", old_tick_size=D("0.01"), new_tick_size=D("0.005")))
    assert paper.place("BUY", "10", "0.405")[0].ok  # the market's tick is finer now
    assert paper.place("BUY", "10", "0.45", post_only=True)[0].code == "POST_ONLY_CROSSES"
    assert paper.place("BUY", "40", "0.45", "FOK")[0].code == "FOK_UNFILLED"
    assert paper.place("BUY", "10", "0.45", token="nope")[0].code == "UNKNOWN_MARKET"
    assert paper.place("BUY", "10", "0.40", "GTD", expires_s=1030)[0].code == "EXPIRATION"  # the clock says 1000 s
    gtd, _ = paper.place("BUY", "10", "0.40", "GTD", expires_s=1060)
    paper.now_ms = 1_060_000
    expired = [e for e in paper.book.observe(change("BUY", "0.39", "5")) if isinstance(e, VenueOrder)]
    assert [(e.venue_order_id, e.status, e.reason) for e in expired] == [(gtd.venue_order_id, "CANCELED", "expired")]


def test_an_order_restored_after_a_restart_goes_to_the_back_of_its_level() -> None:
    paper = Paper(bids={"0.40": "100"}, asks={"0.45": "30"})
    rules = paper.book.rules["y"]
    assert isinstance(rules, MarketRules) and rules.complement == "n"
    req = OrderRequest(client_id="r", token_id="y", market="mk", side="BUY", price=D("0.40"), size=D(20),
                       order_type="GTC", rules=rules)
    paper.book.restore(req, "paper-r", D(5), fills=1)
    resting = paper.book.resting["paper-r"]
    assert (resting.remaining, resting.ahead) == (D(15), D(100))
    fills = paper.feed(change("BUY", "0.40", "0"), trade("0.40", "100", "SELL"), trade("0.39", "20", "SELL"))
    assert [(f.trade_id, f.size) for f in fills] == [("paper-r-2", D(15))]


# ---------------------------------------------------------------- the executor in paper mode


def open_gap(venue) -> dict:
    """Before the services start: a fee market in mid range whose YES and NO asks sum to 0.92, 30 each."""
    target, quiet = [mk for mk in venue.markets
                     if mk.get("feesEnabled") and 0.2 < float(json.loads(mk["outcomePrices"])[0]) < 0.8][:2]
    gap = httpx.post(f"{venue.clob}/_admin/gap", json={"market": target["conditionId"], "gap": "0.08",
                                                       "size": "30"}).json()
    return {**gap, "target": target, "quiet": quiet}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Iterator[ExecutorMesh]:
    mesh = ExecutorMesh(Path(os.path.realpath(tmp_path_factory.mktemp("paper"))), seed=31, mode="paper",
                        prepare=open_gap)
    yield mesh
    mesh.close()


def test_paper_fills_take_the_books_prices_and_sizes_and_never_touch_the_venue(mesh: ExecutorMesh) -> None:
    target = mesh.prepared["target"]
    yes, _ = tokens(target)
    cid = target["conditionId"]
    ask = D(mesh.prepared["asks"][yes])
    rate = D(str(target["feeSchedule"]["rate"]))
    too_big = order("p-1", 0, yes, cid, "BUY", "40", str(ask), "FOK")
    some = order("p-2", 0, yes, cid, "BUY", "40", str(ask), "FAK")
    none_left = order("p-3", 0, yes, cid, "BUY", "10", str(ask), "FOK")
    mesh.push(too_big)
    assert mesh.wait(m.OrderRejected, order_id=too_big.id)[0].code == "FOK_UNFILLED"  # 30 shown, 40 asked
    mesh.push(some)
    fill, = mesh.wait(m.Fill, order_id=some.id)
    assert (fill.price, fill.size, fill.liquidity, fill.fee) == (ask, D(30), "TAKER", fee(D(30), ask, rate))
    assert mesh.wait(m.OrderCanceled, order_id=some.id)[0].remaining == 10
    mesh.push(none_left)  # the 30 the venue still shows were ours
    assert mesh.wait(m.OrderRejected, order_id=none_left.id)[0].code == "FOK_UNFILLED"

    # A resting bid (on an uncrossed book), filled at its own price when the market falls through it.
    quiet = mesh.prepared["quiet"]
    _, quiet_no = tokens(quiet)
    bid, _ = mesh.best(quiet_no)
    rest = order("p-4", 0, quiet_no, quiet["conditionId"], "BUY", "10", str(bid))
    mesh.push(rest)
    assert mesh.wait(m.OrderAck, order_id=rest.id)[0].status == "live"
    httpx.post(f"{mesh.venue.clob}/_admin/move", json={"market": quiet["conditionId"],
                                                      "price": str(1 - bid + D("0.05"))})
    maker, = mesh.wait(m.Fill, order_id=rest.id)
    assert (maker.price, maker.size, maker.liquidity, maker.fee) == (bid, D(10), "MAKER", D(0))

    assert mesh.client.get_trades() == [] and mesh.client.get_open_orders() == []
    account = mesh.account_reply()
    assert account.mode == "paper" and account.orders == []
    held = {p.token_id: (p.size, p.avg_price, p.fees) for p in account.positions}
    assert held == {yes: (D(30), ask, fee(D(30), ask, rate)), quiet_no: (D(10), bid, D(0))}


def test_a_restarted_paper_executor_keeps_its_positions_and_rests_its_orders_again(mesh: ExecutorMesh) -> None:
    quiet = mesh.prepared["quiet"]
    quiet_yes, _ = tokens(quiet)
    bid, _ = mesh.best(quiet_yes)
    rest = order("p-5", 0, quiet_yes, quiet["conditionId"], "BUY", "8", str(bid - D("0.01")))
    mesh.push(rest)
    mesh.wait(m.OrderAck, order_id=rest.id)
    before = mesh.account_reply()
    mesh.kill_executor()
    mesh.start("executor")
    mesh.wait_ready()
    after = mesh.account_reply()
    assert after.positions == before.positions
    assert [(o.order_id, o.price, o.size, o.status) for o in after.orders] == [(rest.id, bid - D("0.01"), D(8), "live")]
    # Back on the book: the market falling through it fills it, once, at its own price.
    httpx.post(f"{mesh.venue.clob}/_admin/move", json={"market": quiet["conditionId"], "price": str(bid - D("0.06"))})
    fill, = mesh.wait(m.Fill, order_id=rest.id)
    assert (fill.price, fill.size, fill.liquidity) == (bid - D("0.01"), D(8), "MAKER")
    assert mesh.account_reply().orders == []
