"""The order desk on its own, no processes: each venue answer's effect on an order, fills and acks counted once,
cancels, unknown outcomes found out by asking, a client order id never sent twice, and orders rounded to the
market's rules before they go."""
from __future__ import annotations

from decimal import ROUND_FLOOR
from decimal import Decimal as D
from itertools import count
from typing import Any

from services import messages as m
from services.executor.desk import NOT_SUBMITTED, Desk, Refusal, Tracked, matches, sendable
from services.executor.journal import Submitting, Taken
from services.venues.base import (BALANCE, DUPLICATE, MIN_SIZE, PRICE_RANGE, MarketRules, OrderRequest, Placed,
                                  VenueError, VenueFill, VenueOrder)

T0 = 1_790_000_000 * 10**9
RATE = D("0.02")
RULES = MarketRules(token_id="yes", market="mk", tick=D("0.01"), min_size=D(5), fee_rate=RATE, complement="no")


class Books:
    """A desk whose messages and journal records land in lists, on a clock that moves 1 ms per reading."""

    def __init__(self) -> None:
        self.out: list[m.Message] = []
        self.journal: list[Any] = []
        ticks = count()
        self.desk = Desk(self._publish, self.journal.append, lambda: T0 + next(ticks) * 10**6)
        self.desk.rules["yes"] = RULES

    def _publish(self, msg: m.Message) -> None:
        self.out.append(msg)
        self.journal.append(msg)

    def of(self, kind: type) -> list:
        return [msg for msg in self.out if isinstance(msg, kind)]

    def sent(self, order: m.Order, venue_id: str = "") -> Tracked:
        """Taken, and handed to the venue as asked."""
        t = self.desk.take(order)
        assert t is not None
        self.desk.submitting(t, venue_id or f"0x{order.id}", order.limit_price, order.size)
        return t


def order(oid: str, size: str = "10", price: str = "0.40", order_type: str = "GTC", side: str = "BUY",
          signal_id: str = "", leg: int = 0, source: str = "strategy:test") -> m.Order:
    return m.Order(id=oid, ts_ns=T0, trace_id=f"trace-{oid}", signal_id=signal_id or f"sig-{oid}", leg=leg,
                   source=source, token_id="yes", market="mk", side=side, size=D(size),  # type: ignore[arg-type]
                   limit_price=D(price), order_type=order_type)  # type: ignore[arg-type]


def trade(trade_id: str, t: Tracked, size: str, price: str = "0.40", liquidity: str = "TAKER",
          status: str = "MATCHED") -> VenueFill:
    return VenueFill(trade_id=trade_id, venue_order_id=t.venue_order_id, token_id="yes", market="mk",
                     side=t.order.side, price=D(price), size=D(size), liquidity=liquidity, status=status)  # type: ignore[arg-type]


def at_venue(t: Tracked, status: str, matched: str = "0", reason: str = "") -> VenueOrder:
    return VenueOrder(venue_order_id=t.venue_order_id, token_id="yes", market="mk", side=t.order.side,
                      price=t.price, size=t.size, matched=D(matched), status=status, reason=reason)  # type: ignore[arg-type]


def taker_fee(size: str, price: str) -> D:
    """Polymarket's taker fee written out again here (size x rate x p(1 - p), floored to 5 decimals)."""
    p = D(price)
    return (D(size) * RATE * p * (1 - p)).quantize(D("0.00001"), rounding=ROUND_FLOOR)


# ---------------------------------------------------------------- taking orders: never twice


def test_a_client_order_id_is_taken_once_and_a_second_copy_is_counted_never_sent() -> None:
    books = Books()
    first = books.desk.take(order("a"))
    assert first is not None and first.status == "pending"
    assert books.journal == [Taken(order=order("a"))]  # journaled before anything else can happen to it
    assert books.desk.take(order("a")) is None
    again = books.desk.take(order("a", size="99"))  # the same id with other numbers is the same order
    assert again is None and books.desk.counts["duplicates"] == 2
    assert books.journal == [Taken(order=order("a"))] and books.out == []


def test_an_order_id_in_the_journal_is_never_taken_again_after_a_restart_and_unsent_orders_are_named() -> None:
    before = Books()
    before.sent(order("sent"))
    before.desk.take(order("unsent"))
    after = Books()
    unsent = after.desk.restore(before.journal)
    assert [t.order.id for t in unsent] == ["unsent"]  # taken before the crash, never handed to the venue
    assert after.desk.orders["sent"].status == "submitting"
    assert after.desk.take(order("sent")) is None and after.desk.take(order("unsent")) is None
    assert after.desk.counts["duplicates"] == 2 and after.journal == []


def test_submitting_journals_the_venue_id_and_the_rounded_numbers_before_the_order_goes() -> None:
    books = Books()
    t = books.desk.take(order("a", size="10.005", price="0.404"))
    assert t is not None
    books.desk.submitting(t, "0xa", D("0.40"), D("10.00"))
    assert (t.status, t.inflight, t.price, t.size) == ("submitting", True, D("0.40"), D("10.00"))
    assert books.journal[-1] == Submitting(order_id="a", venue_order_id="0xa", price=D("0.40"), size=D("10.00"),
                                           submitted_ts_ns=T0)
    assert books.desk.by_venue["0xa"] is t and t.open


# ---------------------------------------------------------------- the venue's answer to a send


def test_placed_acknowledges_once_and_a_resting_order_is_live() -> None:
    books = Books()
    t = books.sent(order("a"))
    books.desk.answered(t, Placed(venue_order_id="0xa", status="live"))
    ack, = books.of(m.OrderAck)
    assert (t.status, t.inflight, t.acked) == ("live", False, True)
    assert (ack.order_id, ack.venue_order_id, ack.status, ack.submitted_ts_ns) == ("a", "0xa", "live", T0)
    assert ack.signal_id == "sig-a" and ack.source == "strategy:test" and ack.trace_id == t.order.trace_id
    books.desk.update(at_venue(t, "LIVE"))  # the user channel says the same: nothing new
    assert len(books.of(m.OrderAck)) == 1 and t.status == "live"


def test_partial_then_full_fills_count_each_trade_once_with_the_taker_fee() -> None:
    books = Books()
    t = books.sent(order("a", size="10"))
    books.desk.answered(t, Placed(venue_order_id="0xa", status="live"))
    books.desk.fill(trade("t1", t, "4"))
    assert (t.status, t.filled, t.remaining) == ("live", D(4), D(6))
    books.desk.fill(trade("t1", t, "4"))  # the same trade again (stream, then reconciliation)
    books.desk.fill(trade("t2", t, "6", price="0.39", liquidity="MAKER"))
    assert (t.status, t.filled, t.cost, t.remaining) == ("matched", D(10), D("4") * D("0.40") + D(6) * D("0.39"), 0)
    fills = books.of(m.Fill)
    assert [(f.trade_id, f.size, f.fee, f.liquidity) for f in fills] == [
        ("t1", D(4), taker_fee("4", "0.40"), "TAKER"), ("t2", D(6), D(0), "MAKER")]
    assert all(f.order_id == "a" and f.signal_id == "sig-a" and f.source == "strategy:test" for f in fills)
    assert books.desk.counts["fills"] == 2
    held, = books.desk.ledger.positions()
    assert (held.token_id, held.size, held.fees) == ("yes", D(10), taker_fee("4", "0.40"))


def test_a_fill_before_the_answer_acknowledges_the_order_and_the_answer_adds_no_second_ack() -> None:
    books = Books()
    t = books.sent(order("a", size="10", order_type="FOK"))
    books.desk.fill(trade("t1", t, "10"))  # the user channel is faster than the REST answer
    books.desk.answered(t, Placed(venue_order_id="0xa", status="matched", matched=D(10)))
    assert t.status == "matched" and [a.status for a in books.of(m.OrderAck)] == ["matched"]


def test_a_failed_trade_changes_nothing_and_is_counted() -> None:
    books = Books()
    t = books.sent(order("a"))
    books.desk.fill(trade("t1", t, "10", status="FAILED"))
    assert t.filled == 0 and books.of(m.Fill) == [] and books.desk.counts["failed_trades"] == 1
    assert books.desk.ledger.positions() == []


def test_an_fok_matched_whole_is_matched_and_a_fak_matched_in_part_cancels_the_rest_and_fails_its_signal() -> None:
    books = Books()
    fok = books.sent(order("fok", size="10", order_type="FOK", signal_id="arb", leg=0))
    fak = books.sent(order("fak", size="10", order_type="FAK", signal_id="arb", leg=1))
    books.desk.answered(fok, Placed(venue_order_id="0xfok", status="matched", matched=D(10)))
    books.desk.answered(fak, Placed(venue_order_id="0xfak", status="matched", matched=D(4)))
    assert (fok.status, fak.status) == ("matched", "canceled")
    canceled, = books.of(m.OrderCanceled)
    assert (canceled.order_id, canceled.remaining, canceled.reason) == ("fak", D(6), "FAK remainder")
    assert books.desk.signal_failure("arb") == "leg 1 (FAK) matched 4 of 10"


def test_a_refusal_with_a_code_rejects_the_order_with_that_code_and_its_text() -> None:
    books = Books()
    t = books.sent(order("a", signal_id="arb", leg=1))
    books.desk.answered(t, Placed(venue_order_id="0xa", code=BALANCE, message="not enough balance / allowance"))
    rejected, = books.of(m.OrderRejected)
    assert (t.status, t.open, rejected.code, rejected.message) == ("rejected", False, BALANCE,
                                                                   "not enough balance / allowance")
    assert books.desk.counts["rejected"] == 1 and books.of(m.OrderAck) == []
    assert books.desk.signal_failure("arb") == "leg 1 rejected (BALANCE): not enough balance / allowance"


def test_a_whole_batch_refused_rejects_each_order_and_one_lost_in_flight_leaves_each_unknown() -> None:
    books = Books()
    refused = [books.sent(order(f"r{i}")) for i in range(2)]
    for t in refused:
        books.desk.answered(t, VenueError("VENUE_UNAVAILABLE", "the matching engine is restarting"))
    assert [t.status for t in refused] == ["rejected", "rejected"]
    assert [r.code for r in books.of(m.OrderRejected)] == ["VENUE_UNAVAILABLE"] * 2
    lost = [books.sent(order(f"u{i}")) for i in range(2)]
    out = len(books.out)
    for t in lost:
        books.desk.answered(t, VenueError("VENUE_UNAVAILABLE", "timed out", unknown=True))
    assert [(t.status, t.open, t.inflight) for t in lost] == [("unknown", True, False)] * 2
    assert len(books.out) == out  # nothing to say until the venue is asked


def test_a_duplicate_answer_means_the_venue_has_the_order_so_its_outcome_is_unknown_not_refused() -> None:
    books = Books()
    t = books.sent(order("a"))
    books.desk.answered(t, Placed(venue_order_id="0xa", code=DUPLICATE, message="order already exists"))
    assert t.status == "unknown" and t.open and books.of(m.OrderRejected) == []


def test_an_unknown_outcome_is_settled_by_asking_the_venue() -> None:
    books = Books()
    never, resting, gone = (books.sent(order(oid)) for oid in ("never", "resting", "gone"))
    for t in (never, resting, gone):
        books.desk.answered(t, VenueError("VENUE_UNAVAILABLE", "timed out", unknown=True))
    books.desk.looked_up(never, None)  # the venue does not know it: it never got there
    books.desk.looked_up(resting, at_venue(resting, "LIVE", matched="3"))
    books.desk.looked_up(gone, at_venue(gone, "CANCELED", matched="0", reason="expired"))
    assert (never.status, resting.status, gone.status) == ("rejected", "live", "canceled")
    assert books.of(m.OrderRejected)[0].code == NOT_SUBMITTED
    assert [a.order_id for a in books.of(m.OrderAck)] == ["resting", "gone"]
    canceled, = books.of(m.OrderCanceled)
    assert (canceled.order_id, canceled.remaining, canceled.reason) == ("gone", D(10), "expired")
    assert resting.remaining == D(7)


def test_an_answer_lost_after_the_stream_already_closed_the_order_leaves_it_closed() -> None:
    books = Books()
    t = books.sent(order("a", order_type="FOK"))
    books.desk.fill(trade("t1", t, "10"))
    books.desk.answered(t, VenueError("VENUE_UNAVAILABLE", "timed out", unknown=True))
    assert t.status == "matched" and not t.open


def test_a_live_order_the_venue_no_longer_knows_ends_canceled_with_what_was_not_filled() -> None:
    books = Books()
    t = books.sent(order("a"))
    books.desk.answered(t, Placed(venue_order_id="0xa", status="live"))
    books.desk.fill(trade("t1", t, "4"))
    books.desk.looked_up(t, None)
    canceled, = books.of(m.OrderCanceled)
    assert (t.status, canceled.remaining, canceled.reason) == ("canceled", D(6), "the venue no longer knows the order")


# ---------------------------------------------------------------- canceling


def test_cancel_ends_an_unsent_order_at_once_waits_for_one_on_its_way_and_asks_the_venue_for_a_live_one() -> None:
    books = Books()
    pending = books.desk.take(order("pending"))
    on_its_way = books.sent(order("on-its-way"))
    live = books.sent(order("live"))
    books.desk.answered(live, Placed(venue_order_id="0xlive", status="live"))
    assert pending is not None
    at_venue_now = books.desk.cancel([pending, on_its_way, live], "canceled by strategy:test")
    assert at_venue_now == [live]
    canceled, = books.of(m.OrderCanceled)
    assert (canceled.order_id, canceled.remaining, pending.status) == ("pending", D(10), "canceled")
    assert (on_its_way.status, on_its_way.cancel_reason) == ("submitting", "canceled by strategy:test")
    # The venue reports the cancel: it carries our reason, once, however often it is reported.
    books.desk.update(at_venue(live, "CANCELED", matched="2"))
    books.desk.update(at_venue(live, "CANCELED", matched="2"))
    assert [(c.order_id, c.remaining, c.reason) for c in books.of(m.OrderCanceled)] == [
        ("pending", D(10), "canceled by strategy:test"), ("live", D(8), "canceled by strategy:test")]


def test_a_closed_order_is_never_rejected_or_canceled_again() -> None:
    books = Books()
    t = books.sent(order("a"))
    books.desk.answered(t, Placed(venue_order_id="0xa", status="live"))
    books.desk.end(t, D(10), "canceled by strategy:test")
    books.desk.reject(t, "STOPPING", "the executor stopped")
    books.desk.end(t, D(10), "again")
    assert [type(msg).__name__ for msg in books.out] == ["OrderAck", "OrderCanceled"]
    assert books.desk.cancel([t], "once more") == []


def test_a_cancel_covers_its_sources_orders_by_id_token_or_market_and_risks_covers_every_source() -> None:
    mine, theirs = order("mine"), order("theirs", source="mcp:agent")
    assert matches(m.Cancel(source="strategy:test"), mine) and not matches(m.Cancel(source="strategy:test"), theirs)
    assert matches(m.Cancel(source="strategy:test", order_ids=["mine"]), mine)
    assert not matches(m.Cancel(source="strategy:test", order_ids=["other"]), mine)
    assert matches(m.Cancel(source="strategy:test", token_id="yes", market="mk"), mine)
    assert not matches(m.Cancel(source="strategy:test", token_id="no"), mine)
    assert matches(m.Cancel(source="risk"), theirs) and matches(m.Cancel(source="risk"), mine)


# ---------------------------------------------------------------- signals that fail, reconciliation


def test_an_unwound_signal_refuses_no_second_unwind_and_reports_what_its_legs_hold() -> None:
    books = Books()
    filled = books.sent(order("f", size="10", order_type="FOK", signal_id="arb", leg=0))
    resting = books.sent(order("r", size="10", price="0.55", signal_id="arb", leg=1))
    refused = books.sent(order("x", size="1", signal_id="arb", leg=2))
    books.desk.answered(filled, Placed(venue_order_id="0xf", status="matched", matched=D(10)))
    books.desk.answered(resting, Placed(venue_order_id="0xr", status="live"))
    books.desk.answered(refused, Placed(venue_order_id="0xx", code=MIN_SIZE, message="too small"))
    books.desk.fill(trade("t1", filled, "10", price="0.40"))
    reason = books.desk.signal_failure("arb")
    assert reason == "leg 2 rejected (MIN_SIZE): too small"
    assert books.desk.unwinding("arb") == [resting]
    assert books.desk.signal_failure("arb") == ""  # unwound once
    books.desk.residual("arb", reason)
    report, = books.of(m.ResidualExposure)
    assert (report.signal_id, report.source, report.reason) == ("arb", "strategy:test", reason)
    assert report.exposure == [m.Exposure(token_id="yes", market="mk", side="BUY", size=D(10), avg_price=D("0.40"))]


def test_a_single_leg_order_that_fails_is_no_failed_signal() -> None:
    books = Books()
    t = books.sent(order("a"))
    books.desk.answered(t, Placed(venue_order_id="0xa", code=BALANCE, message="no"))
    assert books.desk.signal_failure("sig-a") == ""


def test_reconciling_at_start_counts_the_accounts_history_without_publishing_it_and_lists_foreign_orders() -> None:
    books = Books()
    ours = books.sent(order("ours"))
    books.desk.answered(ours, Placed(venue_order_id="0xours", status="live"))
    history = VenueFill(trade_id="old", venue_order_id="0xbefore", token_id="yes", market="mk", side="BUY",
                        price=D("0.30"), size=D(5), liquidity="MAKER")
    foreign = VenueOrder(venue_order_id="0xhand", token_id="yes", market="mk", side="SELL", price=D("0.60"),
                         size=D(3), matched=D(0), status="LIVE")
    books.desk.reconcile([at_venue(ours, "LIVE"), foreign], [history, trade("new", ours, "2")], startup=True)
    assert [f.trade_id for f in books.of(m.Fill)] == ["new"]  # ours is news; the account's history is not
    held, = books.desk.ledger.positions()
    assert held.size == D(7)
    account = books.desk.account("live", T0)
    assert {(o.order_id, o.status) for o in account.orders} == {("ours", "live"), ("0xhand", "live")}
    books.desk.reconcile([at_venue(ours, "LIVE")], [], startup=False)
    assert "0xhand" not in books.desk.foreign  # no longer open at the venue


def test_an_open_order_the_venues_list_does_not_explain_is_one_to_ask_about() -> None:
    books = Books()
    pending = books.desk.take(order("pending"))
    on_its_way = books.sent(order("on-its-way"))
    listed, unlisted = books.sent(order("listed")), books.sent(order("unlisted"))
    for t in (listed, unlisted):
        books.desk.answered(t, Placed(venue_order_id=t.venue_order_id, status="live"))
    read_ns = T0 + 10**9
    assert pending is not None
    unexplained = [t for t in (pending, on_its_way, listed, unlisted)
                   if books.desk.unexplained(t, {listed.venue_order_id}, read_ns)]
    assert unexplained == [unlisted]
    assert not books.desk.unexplained(unlisted, set(), unlisted.submitted_ts_ns)  # sent after the list was read


# ---------------------------------------------------------------- rounding to the market's rules


def test_an_order_is_rounded_never_more_aggressively_than_asked_or_refused_with_why() -> None:
    buy = sendable(order("b", size="10.009", price="0.4049"), RULES)
    sell = sendable(order("s", size="10", price="0.4049", side="SELL"), RULES)
    assert isinstance(buy, OrderRequest) and isinstance(sell, OrderRequest)
    assert (buy.price, buy.size, sell.price) == (D("0.40"), D("10.00"), D("0.41"))
    assert (buy.client_id, buy.market, buy.created_ms, buy.rules) == ("b", "mk", T0 // 10**6, RULES)
    assert sendable(order("low", price="0.004"), RULES) == Refusal(
        PRICE_RANGE, "price 0.004 rounds to 0.00, outside [0.01, 0.99]")
    assert sendable(order("tiny", size="0.004"), RULES) == Refusal(MIN_SIZE, "size 0.004 rounds to 0.00")
