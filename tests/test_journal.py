"""The executor's journal on its own, a real file and no processes: records come back as written, a replay
rebuilds the order desk as it was, and a line that cannot be trusted (cut short, corrupt, a number not finite or
out of range) is skipped with its reason while every other line still counts."""
from __future__ import annotations

import stat
from collections.abc import Iterator
from decimal import Decimal as D
from itertools import count
from pathlib import Path
from typing import Any

import msgspec
import pytest

from services import messages as m
from services.executor.desk import Desk, Tracked
from services.executor.journal import Journal, Skipped, Submitting, Taken, read
from services.risk.journal import DecisionJournal
from services.venues.base import BALANCE, MarketRules, Placed, VenueError, VenueFill, VenueOrder

T0 = 1_790_000_000 * 10**9
RULES = MarketRules(token_id="yes", market="mk", tick=D("0.01"), min_size=D(5), fee_rate=D("0.02"))


def order(oid: str, size: str = "10", price: str = "0.40", order_type: str = "GTC", signal_id: str = "",
          leg: int = 0) -> m.Order:
    return m.Order(id=oid, ts_ns=T0, trace_id=f"trace-{oid}", signal_id=signal_id or f"sig-{oid}", leg=leg,
                   source="strategy:test", token_id="yes", market="mk", side="BUY", size=D(size),
                   limit_price=D(price), order_type=order_type)  # type: ignore[arg-type]


def venue_fill(trade_id: str, venue_order_id: str, size: str, price: str = "0.40") -> VenueFill:
    return VenueFill(trade_id=trade_id, venue_order_id=venue_order_id, token_id="yes", market="mk", side="BUY",
                     price=D(price), size=D(size), liquidity="TAKER")


def a_fill(**changes: Any) -> m.Fill:
    fields = dict(order_id="a", venue_order_id="0xa", trade_id="t1", token_id="yes", market="mk", side="BUY",
                  price=D("0.40"), size=D("10"), fee=D("0.048"))
    return m.Fill(**{**fields, **changes})


def line(record: Any) -> bytes:
    return msgspec.json.encode(record) + b"\n"


def desk_on(journal: Journal, publish: Any = None) -> Desk:
    """A desk journaling to ``journal``; what it publishes journaled too (by ``publish`` if given)."""
    ticks = count()
    desk = Desk(publish or journal.write, journal.write, lambda: T0 + next(ticks) * 10**6)
    desk.rules["yes"] = RULES
    return desk


def state(desk: Desk) -> tuple:
    """What the journal keeps: each order's state and fills, positions and whose they are, failed signals."""
    orders = {oid: (t.status, t.venue_order_id, t.price, t.size, t.filled, t.cost, t.acked, t.submitted_ts_ns)
              for oid, t in desk.orders.items()}
    by_venue = {vid: t.order.id for vid, t in desk.by_venue.items()}
    signals = {sid: [t.order.id for t in legs] for sid, legs in desk.signals.items()}
    return (orders, by_venue, signals, desk.seen, desk.failed, desk.ledger.positions(),
            desk.ledger.source_holdings())


def reopened(path: Path) -> tuple[Journal, Desk]:
    """The journal and the desk as a restarted executor finds them."""
    journal = Journal(path)
    desk = desk_on(journal)
    desk.restore(journal.replay())
    return journal, desk


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    journal = Journal(tmp_path / "executor" / "journal-live.jsonl")
    journal.open()
    yield journal
    journal.close()


def sent(desk: Desk, o: m.Order) -> Tracked:
    t = desk.take(o)
    assert t is not None
    desk.submitting(t, f"0x{o.id}", o.limit_price, o.size)
    return t


def trade_a_day(desk: Desk) -> None:
    """Every way an order can end, and some that have not ended yet."""
    desk.take(order("unsent"))
    live = sent(desk, order("live"))
    desk.answered(live, Placed(venue_order_id="0xlive", status="live"))
    desk.fill(venue_fill("t1", "0xlive", "4"))
    full = sent(desk, order("full"))
    desk.answered(full, Placed(venue_order_id="0xfull", status="live"))
    desk.fill(venue_fill("t2", "0xfull", "6"))
    desk.fill(venue_fill("t3", "0xfull", "4", price="0.39"))
    fok = sent(desk, order("fok", order_type="FOK", signal_id="arb", leg=0))
    fak = sent(desk, order("fak", order_type="FAK", signal_id="arb", leg=1))
    desk.answered(fok, Placed(venue_order_id="0xfok", status="matched", matched=D(10)))
    desk.fill(venue_fill("t4", "0xfok", "10"))
    desk.answered(fak, Placed(venue_order_id="0xfak", status="matched", matched=D(3)))
    desk.fill(venue_fill("t5", "0xfak", "3"))
    reason = desk.signal_failure("arb")
    desk.unwinding("arb")
    desk.residual("arb", reason)
    refused = sent(desk, order("refused"))
    desk.answered(refused, Placed(venue_order_id="0xrefused", code=BALANCE, message="not enough balance"))
    canceled = sent(desk, order("canceled"))
    desk.answered(canceled, Placed(venue_order_id="0xcanceled", status="live"))
    desk.cancel([canceled], "canceled by strategy:test")
    desk.update(VenueOrder(venue_order_id="0xcanceled", token_id="yes", market="mk", side="BUY", price=D("0.40"),
                           size=D(10), matched=D(0), status="CANCELED"))
    sent(desk, order("in-flight"))  # handed to the venue, no answer yet
    desk.fill(venue_fill("t6", "0xsomeone-elses", "2", price="0.5"))  # an order this desk never placed


# ---------------------------------------------------------------- replay


def test_records_come_back_as_written_with_exact_decimals(journal: Journal) -> None:
    records = [Taken(order=order("a", size="10.123456789")),
               Submitting(order_id="a", venue_order_id="0xa", price=D("0.40"), size=D("10.12"), submitted_ts_ns=T0),
               m.OrderAck(order_id="a", venue_order_id="0xa", submitted_ts_ns=T0), a_fill(fee=D("0.04857")),
               m.OrderCanceled(order_id="b", remaining=D(3)), m.OrderRejected(order_id="c", code=BALANCE),
               m.ResidualExposure(signal_id="s", source="strategy:test", reason="leg 1 failed", exposure=[]),
               m.MarketResolved(market="mk", winning_token_id="yes")]
    for record in records:
        journal.write(record)
    again = Journal(journal.path)
    assert again.replay() == records and again.bad == 0


def test_a_replayed_journal_rebuilds_the_desk_as_it_was(journal: Journal) -> None:
    desk = desk_on(journal)
    trade_a_day(desk)
    journal.close()
    _, restarted = reopened(journal.path)
    assert state(restarted) == state(desk)
    statuses = {oid: t.status for oid, t in restarted.orders.items()}
    assert statuses == {"unsent": "pending", "live": "live", "full": "matched", "fok": "matched", "fak": "canceled",
                        "refused": "rejected", "canceled": "canceled", "in-flight": "submitting"}
    assert restarted.orders["live"].filled == D(4) and restarted.failed == {"arb"}


def test_after_a_replay_no_order_id_is_taken_again_and_those_never_sent_are_named(journal: Journal) -> None:
    desk = desk_on(journal)
    trade_a_day(desk)
    journal.close()
    restarted = desk_on(Journal(journal.path))
    unsent = restarted.restore(Journal(journal.path).replay())
    assert [t.order.id for t in unsent] == ["unsent"]
    assert all(restarted.take(order(oid)) is None for oid in desk.orders)
    assert restarted.counts["duplicates"] == len(desk.orders)


def test_an_order_whose_answer_was_lost_replays_as_submitting_for_reconciliation_to_settle(journal: Journal) -> None:
    desk = desk_on(journal)
    lost = sent(desk, order("lost"))
    desk.answered(lost, VenueError("VENUE_UNAVAILABLE", "timed out", unknown=True))
    assert lost.status == "unknown"
    journal.close()
    after, restarted = reopened(journal.path)
    after.open()
    again = restarted.orders["lost"]
    assert (again.status, again.venue_order_id, again.inflight) == ("submitting", "0xlost", False)
    # What the venue says settles it, as for any order it was not heard from about.
    assert restarted.unexplained(again, set(), T0 + 10**12)
    restarted.looked_up(again, None)
    after.close()
    assert again.status == "rejected"


def test_a_record_written_twice_counts_once(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    taken = Taken(order=order("a"))
    fill = a_fill()
    path.write_bytes(line(taken) + line(taken) + line(fill) + line(fill))
    _, desk = reopened(path)
    assert list(desk.orders) == ["a"] and [t.order.id for t in desk.signals["sig-a"]] == ["a"]
    held, = desk.ledger.positions()
    assert held.size == D(10)


def test_no_journal_yet_is_an_empty_one(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "executor" / "journal-paper.jsonl")
    assert journal.replay() == [] and journal.bad == 0


def test_the_journal_is_readable_by_its_owner_only(journal: Journal) -> None:
    journal.write(Taken(order=order("a")))
    assert stat.S_IMODE(journal.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(journal.path.parent.stat().st_mode) == 0o700


# ---------------------------------------------------------------- lines that cannot be trusted


def test_a_last_line_cut_short_by_a_crash_is_skipped_with_why_and_nothing_else_is_lost(journal: Journal) -> None:
    desk = desk_on(journal)
    trade_a_day(desk)
    journal.close()
    whole = journal.path.read_bytes()
    lines = whole.count(b"\n")
    with journal.path.open("ab") as f:
        f.write(line(Taken(order=order("late")))[:25])  # the crash came mid-write
    after, restarted = reopened(journal.path)
    assert state(restarted) == state(desk)
    (skipped,) = after.skipped
    assert skipped.line == lines + 1 and skipped.reason == "cut short by a crash: Input data was truncated"
    assert after.bad == 1
    # The next record written stands on a line of its own: it counts, and the torn line stays skipped.
    after.open()
    after.write(Taken(order=order("next")))
    after.close()
    again, restarted = reopened(journal.path)
    assert "next" in restarted.orders and "late" not in restarted.orders
    assert [s.line for s in again.skipped] == [lines + 1] and again.skipped[0].reason.startswith("corrupt: ")


def test_a_corrupt_line_in_the_middle_is_skipped_and_the_lines_around_it_count() -> None:
    first, last = Taken(order=order("a")), Taken(order=order("b"))
    records, skipped = read(line(first) + b'{"type": "Taken", "order": 12}\n' + b"\x00\xff garbage\n" + line(last))
    assert records == [first, last]
    assert [s.line for s in skipped] == [2, 3]
    assert skipped[0].reason == "corrupt: Expected `object`, got `int` - at `$.order`"
    assert skipped[1].reason.startswith("corrupt: JSON is malformed")


@pytest.mark.parametrize(("record", "why"), [
    (Taken(order=order("a", size="NaN")), "Taken has order.size = NaN, not a number"),
    (Submitting(order_id="a", venue_order_id="0xa", price=D("Infinity"), size=D(10), submitted_ts_ns=T0),
     "Submitting has price = Infinity, not a number"),
    (a_fill(fee=D("sNaN")), "Fill has fee = sNaN, not a number"),
    (m.OrderCanceled(order_id="a", remaining=D("-Infinity")), "OrderCanceled has remaining = -Infinity, not a number"),
    (m.ResidualExposure(signal_id="s", source="x", reason="r", exposure=[
        m.Exposure(token_id="yes", market="mk", side="BUY", size=D(1), avg_price=D("NaN"))]),
     "ResidualExposure has exposure[0].avg_price = NaN, not a number"),
])
def test_a_number_that_is_not_finite_is_skipped_with_where_it_was_never_a_crash(record: Any, why: str) -> None:
    good = Taken(order=order("good"))
    records, skipped = read(line(good) + line(record) + line(good))
    assert records == [good, good] and skipped == [Skipped(2, why)]
    desk = Desk([].append, [].append, lambda: T0)
    desk.restore(records)  # what is left replays
    assert list(desk.orders) == ["good"]


@pytest.mark.parametrize(("record", "why"), [
    (Taken(order=order("a", size="0")), "Taken has order.size 0, not positive"),
    (Taken(order=order("a", size="-5")), "Taken has order.size -5, not positive"),
    (Taken(order=order("a", price="1")), "Taken has order.limit_price 1, outside (0, 1)"),
    (Submitting(order_id="a", venue_order_id="0xa", price=D("0"), size=D(10), submitted_ts_ns=T0),
     "Submitting has price 0, outside (0, 1)"),
    (Submitting(order_id="a", venue_order_id="0xa", price=D("0.4"), size=D("-1"), submitted_ts_ns=T0),
     "Submitting has size -1, not positive"),
    (a_fill(price=D("1.5")), "Fill has price 1.5, outside (0, 1)"),
    (a_fill(size=D("0")), "Fill has size 0, not positive"),
    (a_fill(fee=D("-0.01")), "Fill has fee -0.01, outside [0, its size 10]"),
    (a_fill(fee=D("10.5")), "Fill has fee 10.5, outside [0, its size 10]"),
    (a_fill(fee=D("1E+400")), "Fill has fee 1E+400, outside [0, its size 10]"),
])
def test_a_number_out_of_its_range_is_skipped_with_why(record: Any, why: str) -> None:
    records, skipped = read(line(record))
    assert records == [] and skipped == [Skipped(1, why)]


def test_a_fill_at_the_edges_of_its_ranges_is_kept() -> None:
    edges = [a_fill(price=D("0.001"), fee=D(0)), a_fill(trade_id="t2", price=D("0.999"), fee=D(10))]
    assert read(b"".join(line(f) for f in edges)) == (edges, [])


# ---------------------------------------------------------------- numbering, full disks, compaction


def numbered_desk(journal: Journal) -> Desk:
    """A desk whose published records are numbered in the journal, as the executor's are."""
    return desk_on(journal, journal.number)


def test_published_records_are_numbered_and_the_numbering_goes_on_after_a_restart(journal: Journal) -> None:
    trade_a_day(numbered_desk(journal))
    journal.close()
    again, _ = reopened(journal.path)
    assert (again.stream, again.seq) == (journal.stream, journal.seq) and journal.seq > 5
    again.open()
    ack = again.number(m.OrderAck(order_id="x", venue_order_id="0xx"))
    again.close()
    assert (ack.seq, ack.stream) == (journal.seq + 1, journal.stream)
    records, first = again.after("", 0, 1000)  # another stream than the journal's: from its first
    assert [r.seq for r in records] == list(range(1, journal.seq + 2)) and first == 1


def test_the_records_after_a_seq_come_a_page_at_a_time_oldest_first(journal: Journal) -> None:
    trade_a_day(numbered_desk(journal))
    page, first = journal.after(journal.stream, 2, 3)
    assert [r.seq for r in page] == [3, 4, 5] and first == 1
    rest, _ = journal.after(journal.stream, 5, 1000)
    assert [r.seq for r in rest] == list(range(6, journal.seq + 1))


class FullDisk:
    """The OS write, failing once the file would pass ``room`` bytes, as a full disk does (after a short write)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, room: int) -> None:
        import os
        self.real, self.room = os.write, room
        monkeypatch.setattr("services.journal.os.write", self.write)

    def write(self, fd: int, data: bytes) -> int:
        import os
        left = self.room - os.fstat(fd).st_size
        if left <= 0:
            raise OSError(28, "No space left on device")
        return self.real(fd, data[:left])


def test_a_record_the_disk_has_no_room_for_is_taken_back_and_the_order_refused(journal: Journal, monkeypatch) -> None:
    published: list[m.Message] = []
    desk = Desk(published.append, journal.write, lambda: T0)
    desk.rules["yes"] = RULES
    first = sent(desk, order("first"))
    size = journal.path.stat().st_size
    FullDisk(monkeypatch, size + 40)  # room for part of the next record only
    refused = desk.take(order("second"))
    assert refused is not None and refused.status == "rejected" and journal.path.stat().st_size == size
    rejected, = published
    assert isinstance(rejected, m.OrderRejected) and rejected.code == "JOURNAL_FAILED"
    assert "No space left on device" in rejected.message and "free disk space" in rejected.message
    assert not desk.submitting(first, "0xfirst-again", first.price, first.size) and first.status == "rejected"
    assert journal.write_errors == 2
    journal.close()
    _, restarted = reopened(journal.path)
    assert list(restarted.orders) == ["first"] and restarted.orders["first"].status == "submitting"


def test_a_compacted_journal_restarts_the_desk_as_the_whole_one_did(journal: Journal) -> None:
    desk = numbered_desk(journal)
    trade_a_day(desk)
    desk.publish(m.Rebate(day="2026-12-01", market="mk", maker="0xme", amount=D("0.12")))
    journal.write(m.MarketResolved(market="other", winning_token_id="no"))
    journal.close()
    whole_journal, whole = reopened(journal.path)
    records = whole_journal.replay()
    whole_journal.compact(records, set(whole.orders), keep_numbered=0)
    compacted_journal, compacted = reopened(journal.path)
    assert state(compacted) == state(whole)
    assert (compacted_journal.stream, compacted_journal.seq) == (journal.stream, journal.seq)
    assert compacted.ledger.rebates.reports == whole.ledger.rebates.reports


def test_compacting_drops_the_orders_that_ended_long_ago_and_keeps_what_the_state_is_made_of(journal: Journal) -> None:
    trade_a_day(numbered_desk(journal))
    journal.close()
    whole_journal, whole = reopened(journal.path)
    before = journal.path.stat().st_size
    open_ones = {oid for oid, t in whole.orders.items() if t.open}
    whole_journal.compact(whole_journal.replay(), open_ones, keep_numbered=2)
    compacted_journal, compacted = reopened(journal.path)
    assert journal.path.stat().st_size < before and not list(journal.path.parent.glob("*.compacting"))
    assert set(compacted.orders) == open_ones == {"unsent", "live", "in-flight"}
    kept = lambda d: (d.seen, d.failed, d.ledger.positions(), d.ledger.source_holdings(),  # noqa: E731
                      {oid: (t.status, t.filled, t.venue_order_id) for oid, t in d.orders.items() if t.open})
    assert kept(compacted) == kept(whole)
    assert compacted_journal.seq == journal.seq
    compacted_journal.open()
    assert compacted_journal.number(m.OrderAck(order_id="x", venue_order_id="0xx")).seq == journal.seq + 1
    # A subscriber catching up still gets the last records and every fill; what was dropped it is told is gone.
    records, first = compacted_journal.after(journal.stream, 0, 1000)
    compacted_journal.close()
    seqs = [r.seq for r in records]
    assert seqs[-3:] == [journal.seq - 1, journal.seq, journal.seq + 1] and first == seqs[0]
    assert len(seqs) < journal.seq + 1  # the acks and cancels of the orders dropped are gone
    assert {r.trade_id for r in records if isinstance(r, m.Fill)} == {trade for trade, _ in whole.seen}


def test_a_compaction_that_cannot_write_leaves_the_journal_as_it_was(journal: Journal) -> None:
    trade_a_day(numbered_desk(journal))
    journal.close()
    before = journal.path.read_bytes()
    whole_journal, whole = reopened(journal.path)
    journal.path.with_name(journal.path.name + ".compacting").mkdir()  # the new file cannot be made
    with pytest.raises(OSError):
        whole_journal.compact(whole_journal.replay(), set(), keep_numbered=0)
    assert journal.path.read_bytes() == before


def test_risks_journal_keeps_the_latest_verdicts_within_twice_its_bound_and_numbers_on_after_a_restart(
        tmp_path) -> None:
    path = tmp_path / "risk" / "decisions.jsonl"

    def refused(n: int) -> m.SignalRejected:
        return m.SignalRejected(signal_id=f"s{n}", source="strategy:test",
                                reasons=[m.Reason(code="MIN_SIZE", message="too small", value=D(n))])
    journal = DecisionJournal(path, keep=3)
    journal.replay()
    journal.open()
    numbered = []
    for n in range(1, 12):
        numbered.append(journal.number(refused(n)))
        if journal.due:
            journal.compact()
        held, first = journal.after(journal.stream, 0, 100)
        assert len(held) <= 2 * 3 and held[-1].seq == n  # never more than twice the bound, the latest always
    assert [r.seq for r in held] == [7, 8, 9, 10, 11] and first == 7  # compacted at 6 and 9, each time to 3
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    journal.close()

    again = DecisionJournal(path, keep=3)
    again.replay()
    again.open()
    assert (again.stream, again.seq, again.first) == (numbered[0].stream, 11, 7)
    assert again.number(refused(12)).seq == 12  # on where it was, in the same stream
    assert [r.signal_id for r in again.after(again.stream, 10, 100)[0]] == ["s11", "s12"]


def test_pages_read_from_the_nearest_indexed_place_give_what_a_whole_read_gives(tmp_path, monkeypatch) -> None:
    """``after`` starts reading at an indexed offset, not the file's start: every page, from every seq, as records
    keep being appended between pages and after a compaction, is what reading the whole file gives."""
    monkeypatch.setattr("services.journal.Index.EVERY", 4)
    journal = DecisionJournal(tmp_path / "risk" / "decisions.jsonl", keep=1000)
    journal.replay()
    journal.open()

    def add(n: int) -> None:
        journal.number(m.SignalAccepted(signal_id=f"s{n}", source="strategy:test", orders=[]))
        journal.write(m.SignalPending(signal_id=f"p{n}", source="mcp:a", expires_ts_ns=1))  # not numbered

    for n in range(1, 41):
        add(n)
        if n % 10 == 0:
            for after in range(0, n + 1):
                page, first = journal.after(journal.stream, after, 7)
                assert [r.seq for r in page] == list(range(after + 1, min(after + 7, n) + 1)) and first == 1
    assert len(journal._index.seqs) == 10  # every 4th of 40
    journal.rewrite([r for r in journal.replay() if getattr(r, "seq", 0) > 25])  # compaction: a new file
    add(41)
    page, first = journal.after(journal.stream, 30, 100)
    assert [r.seq for r in page] == list(range(31, 42)) and first == 26
    journal.close()
