"""Analytics as its own process on a real DuckDB file: the test publishes where scanner, risk and executor would."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path

import duckdb
import pytest

from services import messages as m
from services.analytics import schema
from services.analytics.rows import Recorder
from services.analytics.service import cell
from services.bus import TAXONOMY, Bus
from services.config import control_address, ensure_state_dir, load

from .conftest import child_env, wait_for
from .samples import samples

DATA_SOCKETS = ("prices", "events", "executions", "decisions")
SNAPSHOT_MARKET = m.MarketNew(market="0xsnap", question="From the snapshot?",
                              outcomes=[m.Outcome(token_id="snap-y", name="Yes"), m.Outcome(token_id="snap-n", name="No")])


def book(token: str, market: str, bid: str, ask: str) -> m.Book:
    return m.Book(token_id=token, market=market, bids=[m.Level(D(bid), D(10))], asks=[m.Level(D(ask), D(20))])


class Harness:
    """`polybot run analytics` on a fresh state dir; this process binds the PUB sockets and plays the scanner's control."""

    def __init__(self, root: Path, options: str = "") -> None:
        self.root = root
        self.config_file = root / "polybot.toml"
        self.config_file.write_text(
            f'state_dir = "{root / "state"}"\n[bus]\nheartbeat_s = 0.2\n[local_venue]\nstart = false\n'
            '[services.scanner]\nkind = "services.scanner:Scanner"\n'
            '[services.analytics]\nkind = "services.analytics:Analytics"\n'
            f"options = {{ flush_ms = 20, query_timeout_s = 0.5{options} }}\n")
        self.config = load(self.config_file, {"HOME": str(root)})
        ensure_state_dir(self.config)
        self.bus = Bus(self.config)
        self.out = {name: self.bus.outbound(name) for name in DATA_SOCKETS}
        self.scanner = self.bus.replier("scanner")
        self.scanner.serve(self._snapshot)
        self.log = open(root / "analytics.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "services", "--config", str(self.config_file), "run",
                                      "analytics"], env=child_env(), stderr=self.log)
        self.control = self.bus.requester("analytics", 5000)
        wait_for(lambda: all(out.socket.pipes for out in self.out.values()), what="analytics to subscribe")
        wait_for(lambda: self.status().detail.get("synced") == "True", what="analytics to record the snapshot")

    def _snapshot(self, request: m.Message) -> m.Message:
        return m.SnapshotReply(markets=[SNAPSHOT_MARKET],
                               books=m.BookSnapshot(books=[book("snap-y", "0xsnap", "0.30", "0.34")]))

    def send(self, *msgs: m.Message) -> None:
        for msg in msgs:
            name = next(n for n in DATA_SOCKETS if type(msg) in TAXONOMY[n].types)
            assert self.out[name].send(msg)

    def ask(self, request: m.Message) -> m.Message:
        return self.control.request(request)

    def sql(self, query: str, max_rows: int = 1000) -> list[list]:
        reply = self.ask(m.QueryRequest(sql=query, max_rows=max_rows))
        assert isinstance(reply, m.QueryReply), reply
        return reply.rows

    def named(self, name: str, **params: str) -> list[dict]:
        reply = self.ask(m.QueryRequest(name=name, params=params))
        assert isinstance(reply, m.QueryReply), reply
        return [dict(zip(reply.columns, row)) for row in reply.rows]

    def status(self) -> m.ServiceState:
        try:
            return self.ask(m.StatusRequest()).service
        except Exception:
            return m.ServiceState(name="analytics", state="down")

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "services", "--config", str(self.config_file), *args],
                              env=child_env(), capture_output=True, text=True, timeout=30)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        self.control.close()
        self.scanner.close()
        self.bus.close()
        self.log.close()


@pytest.fixture
def short_root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pba-", dir="/tmp"))  # ipc socket paths must stay under 107 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def an() -> Iterator[Harness]:
    root = Path(tempfile.mkdtemp(prefix="pba-", dir="/tmp"))
    harness = Harness(root)
    yield harness
    harness.close()
    shutil.rmtree(root, ignore_errors=True)


def fill(market: str, token: str, side: str, size: str, price: str, fee: str = "0", trade: str = "",
         order: str = "o", status: str = "MATCHED", **kw) -> m.Fill:
    return m.Fill(order_id=order, venue_order_id="0x" + order, trade_id=trade or m.new_id(), token_id=token,
                  market=market, side=side, price=D(price), size=D(size), fee=D(fee), status=status, **kw)


def taker_fee(size: str, price: str, rate: str = "0.05") -> str:
    """The venue's taker fee: shares x rate x p x (1 - p), floored to 5 decimals."""
    p = D(price)
    return str((D(size) * D(rate) * p * (1 - p)).quantize(D("0.00001"), rounding="ROUND_FLOOR"))


# ---------------------------------------------------------------- pure parts


def test_book_tops_are_recorded_when_the_top_changes_and_snapshots_always() -> None:
    rec = Recorder("changes")
    snap = m.BookSnapshot(books=[book("t", "mk", "0.40", "0.42")])
    delta = m.BookDelta(changes=[m.LevelChange(token_id="t", market="mk", side="BUY", price=D("0.39"), size=D(5),
                                               best_bid=D("0.40"), best_ask=D("0.42"))])
    moved = m.BookDelta(changes=[m.LevelChange(token_id="t", market="mk", side="BUY", price=D("0.41"), size=D(5),
                                               best_bid=D("0.41"), best_ask=D("0.42"))])
    assert [r[1][5:] for r in rec.rows(snap)] == [(D("0.40"), D(10), D("0.42"), D(20))]
    assert rec.rows(delta) == []  # a level below the top moved: the top did not
    assert [r[1][5:] for r in rec.rows(moved)] == [(D("0.41"), None, D("0.42"), None)]
    assert len(rec.rows(snap)) == 1 and Recorder("all").rows(delta) and Recorder("off").rows(snap) == []


def test_every_stored_message_type_makes_rows_that_fit_their_tables() -> None:
    recorder = Recorder("all")
    made = {type(msg): recorder.rows(msg) for msg in samples().values()}
    stored = {kind for kind, rows in made.items() if rows}
    assert stored == {kind for n in DATA_SOCKETS for kind in TAXONOMY[n].types} - {m.Heartbeat}
    for kind, rows in made.items():
        for table, row in rows:
            assert len(row) == len(schema.TABLES[table]), f"{kind.__name__} -> {table}"


def test_reply_cells_keep_numbers_exact_and_times_as_int_ns() -> None:
    assert cell(D("45000.000000000000000000")) == "45000" and cell(D("0.450000")) == "0.45"
    assert cell(D("0E-18")) == "0" and cell(2 ** 70) == str(2 ** 70) and cell(True) is True
    from datetime import datetime, timezone
    assert cell(datetime(1970, 1, 1, 0, 0, 1, 5, tzinfo=timezone.utc)) == 1_000_005_000
    assert cell([1, "a"]) == '[1,"a"]' and cell(b"\x01\xff") == "01ff"


# ---------------------------------------------------------------- recording


def test_every_published_message_lands_in_its_table_within_a_deadline(an: Harness) -> None:
    msgs = {type(msg): msg for msg in samples().values()
            if any(type(msg) in TAXONOMY[n].types for n in DATA_SOCKETS) and not isinstance(msg, m.Heartbeat)}
    an.send(*msgs.values())
    expect = {  # table, key column, message type -> rows expected
        ("book_tops", "msg_id", m.BookSnapshot): 2, ("book_tops", "msg_id", m.BookDelta): 1,
        ("trades", "id", m.LastTrade): 1, ("markets", "id", m.MarketNew): 1,
        ("market_events", "id", m.TickSizeChange): 1, ("market_events", "id", m.MarketHalted): 1,
        ("market_events", "id", m.MarketResolved): 1, ("market_events", "id", m.MarketStale): 2,
        ("verdicts", "id", m.SignalAccepted): 1, ("verdicts", "id", m.SignalRejected): 1,
        ("verdict_reasons", "verdict_id", m.SignalRejected): 1, ("executions", "id", m.OrderAck): 1,
        ("executions", "id", m.OrderRejected): 1, ("executions", "id", m.Fill): 1,
        ("executions", "id", m.OrderCanceled): 1, ("executions", "id", m.ResidualExposure): 1,
        ("exposures", "execution_id", m.ResidualExposure): 1, ("rebates", "id", m.Rebate): 1,
    }
    for (table, key, kind), count in expect.items():
        wait_for(lambda: an.sql(f"SELECT count(*) FROM {table} WHERE {key} = '{msgs[kind].id}'") == [[count]],
                 timeout=5, what=f"{kind.__name__} in {table}")
    accepted = msgs[m.SignalAccepted]
    assert an.sql(f"SELECT order_id, size, limit_price, order_type FROM orders WHERE signal_id = "
                  f"'{accepted.signal_id}'") == [[accepted.orders[0].id, "12.5", "0.47", "FOK"]]
    assert an.sql(f"SELECT count(*), sum(size) FROM signal_legs WHERE signal_id = '{accepted.signal_id}'") == [
        [2, "20"]]
    f = msgs[m.Fill]
    assert an.sql(f"SELECT ts_ns, price, size, fee, liquidity, status, rebate FROM executions WHERE id = '{f.id}'") \
        == [[f.ts_ns, "0.45", "10", "0.1732", "MAKER", "CONFIRMED", "0.0346"]]
    r = msgs[m.Rebate]
    assert an.sql(f"SELECT day, market, maker, amount, final FROM rebates WHERE id = '{r.id}'") == [
        [r.day, r.market, r.maker, "0.03464", True]]
    assert an.sql(f"SELECT fee_rate, fee_exponent, rebate_rate FROM markets WHERE id = '{msgs[m.MarketNew].id}'") == [
        ["0.07", "2", "0.2"]]
    reason = msgs[m.SignalRejected].reasons[0]
    assert an.sql(f"SELECT code, limit_value, value, max_size FROM verdict_reasons "
                  f"WHERE verdict_id = '{msgs[m.SignalRejected].id}'") == [[reason.code, "500", "600", "1111.11"]]


def test_markets_and_books_from_before_it_started_come_from_the_scanners_snapshot(an: Harness) -> None:
    assert an.sql("SELECT question FROM markets WHERE market = '0xsnap'") == [["From the snapshot?"]]
    assert an.sql("SELECT outcome, best_bid, best_ask FROM market_tokens JOIN book_tops USING (token_id) "
                  "WHERE token_id = 'snap-y'") == [["Yes", "0.3", "0.34"]]


def test_positions_and_pnl_for_buys_a_partial_sell_fees_and_a_resolution_are_exact_to_the_cent(an: Harness) -> None:
    mk, yes, no = "0xpnl", "pnl-yes", "pnl-no"
    an.send(m.MarketNew(market=mk, question="PnL?", outcomes=[m.Outcome(token_id=yes, name="Yes"),
                                                               m.Outcome(token_id=no, name="No")]))
    first = fill(mk, yes, "BUY", "100", "0.40", taker_fee("100", "0.40"), trade="tr-1", order="o-1")
    an.send(first,
            fill(mk, yes, "BUY", "50", "0.46", taker_fee("50", "0.46"), order="o-2"),
            fill(mk, yes, "SELL", "60", "0.55", taker_fee("60", "0.55"), order="o-3"),
            fill(mk, no, "BUY", "30", "0.35", liquidity="MAKER", order="o-4"),
            fill(mk, yes, "BUY", "100", "0.40", taker_fee("100", "0.40"), trade="tr-1", order="o-1",
                 status="CONFIRMED"),  # the first fill reported again as it settles: counted once
            fill(mk, no, "BUY", "500", "0.30", order="o-5", status="FAILED"),  # a trade that failed on chain
            m.BookSnapshot(books=[book(yes, mk, "0.58", "0.60")]),
            m.LastTrade(token_id=no, market=mk, price=D("0.41"), size=D(5), side="SELL"))
    wait_for(lambda: an.sql(f"SELECT count(*) FROM executions WHERE market = '{mk}'") == [[6]], timeout=5,
             what="the fills")
    wait_for(lambda: an.sql(f"SELECT count(*) FROM trades WHERE market = '{mk}'") == [[1]], timeout=5)
    # Y: 150 bought for 63 (avg 0.42), 60 sold at 0.55 realizes 7.80; fees 1.2 + 0.621 + 0.7425 = 2.5635.
    got = {p["outcome"]: p for p in an.named("positions", market=mk)}
    assert {k: got["Yes"][k] for k in ("size", "avg_price", "cost", "mark", "unrealized", "realized", "fees", "pnl")} \
        == {"size": "90", "avg_price": "0.42", "cost": "37.8", "mark": "0.59", "unrealized": "15.3",
            "realized": "5.2365", "fees": "2.5635", "pnl": "20.5365"}
    assert {k: got["No"][k] for k in ("size", "avg_price", "mark", "unrealized", "realized", "fees")} == {
        "size": "30", "avg_price": "0.35", "mark": "0.41", "unrealized": "1.8", "realized": "0", "fees": "0"}
    by_market = {r["market"]: r for r in an.named("pnl")}
    assert by_market[mk] == {"market": mk, "realized": "5.2365", "unrealized": "17.1", "fees": "2.5635",
                             "rebates": "0", "rebates_estimated": "0", "open_cost": "48.3", "total": "22.3365"}
    before = time.time_ns()
    an.send(m.MarketResolved(market=mk, winning_token_id=yes, winning_outcome="Yes"))
    wait_for(lambda: an.named("positions", market=mk) == [], timeout=5, what="the resolution to close both")
    # Cash: -41.2 - 23.621 + 32.2575 - 10.5 + 90 paid for 90 winning shares = 46.9365.
    assert {r["market"]: r for r in an.named("pnl")}[mk] == {
        "market": mk, "realized": "46.9365", "unrealized": "0", "fees": "2.5635", "rebates": "0",
        "rebates_estimated": "0", "open_cost": "0", "total": "46.9365"}
    # Over the period since just before the resolution: it stood at 22.3365 (marked then), it is 46.9365 now.
    period = {r["market"]: r for r in an.named("pnl", since=str(before))}[mk]
    assert {k: period[k] for k in ("total", "total_at_since", "period_realized", "period_fees", "period_pnl")} == {
        "total": "46.9365", "total_at_since": "22.3365", "period_realized": "41.7", "period_fees": "0",
        "period_pnl": "24.6"}
    start = {r["market"]: r for r in an.named("pnl", since=str(first.ts_ns - 1))}[mk]
    assert (start["total_at_since"], start["period_pnl"], start["period_fees"]) == ("0", "46.9365", "2.5635")
    closed = {p["outcome"]: (p["size"], p["realized"]) for p in an.named("positions", market=mk, all="true")}
    assert closed == {"Yes": ("0", "57.4365"), "No": ("0", "-10.5")}


def test_pnl_credits_maker_rebates_reported_by_the_venue_else_estimated_by_market_source_and_token(an: Harness) -> None:
    mk, yes, no, other = "0xreb", "reb-yes", "reb-no", "0xreb2"
    day0, day1 = 1_800_000_000_000, 1_800_000_000_000 + 86_400_000  # 2027-01-15 and -16, UTC
    an.send(m.MarketNew(market=mk, question="Rebates?", outcomes=[m.Outcome(token_id=yes, name="Yes"),
                                                                   m.Outcome(token_id=no, name="No")],
                        fee_rate=D("0.07"), rebate_rate=D("0.2")),
            fill(mk, yes, "BUY", "10", "0.40", liquidity="MAKER", order="r-1", source="strategy:quoter",
                 venue_ts_ms=day0, rebate=D("0.2") * D(taker_fee("10", "0.40", "0.07"))),  # 0.2 x 0.168
            fill(mk, no, "BUY", "10", "0.50", liquidity="MAKER", order="r-2", source="mcp:claude",
                 venue_ts_ms=day0, rebate=D("0.2") * D(taker_fee("10", "0.50", "0.07"))),  # 0.2 x 0.175
            fill(mk, yes, "BUY", "5", "0.40", liquidity="MAKER", order="r-3", source="strategy:quoter",
                 venue_ts_ms=day1, rebate=D("0.2") * D(taker_fee("5", "0.40", "0.07"))),  # 0.2 x 0.084
            fill(mk, yes, "SELL", "5", "0.41", taker_fee("5", "0.41", "0.07"), order="r-4", source="strategy:quoter",
                 venue_ts_ms=day1))
    wait_for(lambda: an.sql(f"SELECT count(*) FROM fills WHERE market = '{mk}'") == [[4]], timeout=5, what="fills")

    def row(by: str, group: str) -> dict:
        return next((r for r in an.named("pnl", by=by) if r[by] == group), {})
    estimated = row("market", mk)
    assert (estimated["rebates"], estimated["rebates_estimated"]) == ("0.0854", "0.0854")  # 0.0336 + 0.035 + 0.0168
    assert D(estimated["total"]) == D(estimated["realized"]) + D(estimated["unrealized"]) + D("0.0854")
    before = time.time_ns()
    # The venue reports day 0 in this market: its total replaces our estimate of that day; day 1 stays estimated.
    an.send(m.Rebate(day="2027-01-15", market=mk, maker="0x" + "ab" * 20, amount=D("0.0686")),
            m.Rebate(day="2027-01-15", market=other, maker="0x" + "ab" * 20, amount=D("0.011")))
    wait_for(lambda: an.sql(f"SELECT count(*) FROM rebates WHERE market IN ('{mk}', '{other}')") == [[2]], timeout=5,
             what="the reports")
    reported = row("market", mk)
    assert (reported["rebates"], reported["rebates_estimated"]) == ("0.0854", "0.0168")
    assert row("market", other)["rebates"] == "0.011"  # no fill of ours known there: the market's alone
    # A later report for the same day and market is the day's new total, not an addition.
    an.send(m.Rebate(day="2027-01-15", market=mk, maker="0x" + "ab" * 20, amount=D("0.07"), final=True))
    wait_for(lambda: row("market", mk)["rebates"] == "0.0868", timeout=5, what="the new total")
    # Shared out by what each maker fill earned, in micro-units: day 0's 0.07 as 0.0336 : 0.035 (0.034285 and the
    # rest), day 1's estimate to its one fill.
    assert {s: row("source", s)["rebates"] for s in ("strategy:quoter", "mcp:claude")} == {
        "strategy:quoter": "0.051085", "mcp:claude": "0.035715"}
    assert {t: row("token", t)["rebates"] for t in (yes, no)} == {yes: "0.051085", no: "0.035715"}
    positions = {p["outcome"]: p for p in an.named("positions", market=mk, all="true")}
    assert D(positions["Yes"]["rebates"]) + D(positions["No"]["rebates"]) == D("0.0868")
    assert positions["No"]["rebates_estimated"] == "0" and positions["Yes"]["rebates_estimated"] == "0.0168"
    assert all(D(p["pnl"]) == D(p["realized"]) + D(p["unrealized"] or 0) + D(p["rebates"]) for p in positions.values())
    period = row_since = next(r for r in an.named("pnl", by="market", since=str(before)) if r["market"] == mk)
    assert (period["period_rebates"], D(row_since["total"]) - D(row_since["total_at_since"])) == (
        "0.0014", D(period["period_pnl"]))


def test_a_database_written_before_rebates_gains_their_columns_and_keeps_its_rows(short_root: Path) -> None:
    path = short_root / "v1.duckdb"
    added = {"markets": ("fee_exponent", "rebate_rate"), "executions": ("rebate", "seq", "stream")}
    with duckdb.connect(str(path)) as db:  # the tables as version 1 made them
        for name, cols in schema.TABLES.items():
            kept = [f"{c} {t}" for c, t in cols if c not in added.get(name, ())]
            if name != "rebates":
                db.execute(f"CREATE TABLE {name} ({', '.join(kept)})")
        db.execute("INSERT INTO executions (id, ts_ns, kind, order_id, trade_id, token_id, market, side, price, size, "
                   "fee, liquidity, status) VALUES ('old', 1, 'Fill', 'o', 't', 'y', '0xold', 'BUY', 0.5, 10, 0, "
                   "'MAKER', 'MATCHED')")
    harness = Harness(short_root, f', db = "{path}"')
    try:
        harness.send(fill("0xold", "y", "BUY", "4", "0.5", liquidity="MAKER", order="new", rebate=D("0.01")))
        wait_for(lambda: harness.sql("SELECT count(*) FROM fills WHERE market = '0xold'") == [[2]], timeout=5,
                 what="the new fill beside the old one")
        assert harness.sql("SELECT order_id, rebate FROM fills WHERE market = '0xold' ORDER BY ts_ns") == [
            ["o", "0"], ["new", "0.01"]]
        assert next(r for r in harness.named("pnl") if r["market"] == "0xold")["rebates"] == "0.01"
    finally:
        harness.close()


def test_a_complete_set_held_is_worth_its_payout_and_only_the_excess_is_marked(an: Harness) -> None:
    mk, yes, no = "0xset", "set-yes", "set-no"
    an.send(m.MarketNew(market=mk, question="Set?", outcomes=[m.Outcome(token_id=yes, name="Yes"),
                                                               m.Outcome(token_id=no, name="No")]),
            fill(mk, yes, "BUY", "10", "0.45", order="s-1"), fill(mk, no, "BUY", "10", "0.50", order="s-2"),
            fill(mk, yes, "BUY", "5", "0.40", order="s-3"),
            m.BookSnapshot(books=[book(yes, mk, "0.10", "0.60"), book(no, mk, "0.10", "0.60")]))
    wait_for(lambda: an.sql(f"SELECT count(*) FROM fills WHERE market = '{mk}'") == [[3]], timeout=5, what="the fills")
    wait_for(lambda: an.sql(f"SELECT count(*) FROM book_tops WHERE market = '{mk}'") == [[2]], timeout=5)
    # 10 pairs pay 10 (the 3 the 0.35 mids miss shared equally); the 5 YES beyond them at 0.35; cost 6.5 + 5.
    got = {p["outcome"]: p for p in an.named("positions", market=mk)}
    assert {k: (got[k]["mark"], got[k]["unrealized"], got[k]["in_sets"]) for k in got} == {
        "Yes": ("0.35", "0.25", "10"), "No": ("0.35", "0", "10")}
    assert {r["market"]: r for r in an.named("pnl")}[mk]["unrealized"] == "0.25"  # marked to the mids: -2.75


def test_a_malformed_frame_is_counted_and_skipped_and_an_unstorable_row_only_loses_itself(an: Harness) -> None:
    before = an.status()
    an.out["executions"].send_raw(b"\x04Fill\xc1\xc1 not msgpack" + bytes(12))
    good = fill("0xbad", "bad-t", "BUY", "5", "0.5", order="after-bad")
    nan = fill("0xbad", "bad-t", "BUY", "5", "NaN", order="nan")  # not a number: refused by the bus, counted
    # A number the bus lets in (finite) that no DECIMAL(38, 18) column holds: only its row is lost.
    wide = m.MarketNew(market="0xwide", question="Wide?", outcomes=[], fee_exponent=D("1e25"))
    an.send(nan, wide, good)
    wait_for(lambda: an.sql(f"SELECT size FROM executions WHERE id = '{good.id}'") == [["5"]], timeout=5,
             what="the good fill after the bad ones")
    wait_for(lambda: int(an.status().detail["bad_rows"]) == int(before.detail["bad_rows"]) + 1, timeout=5,
             what="the unstorable market row to be counted")
    after = an.status()
    assert after.sockets["executions"].undecodable == before.sockets["executions"].undecodable + 2
    assert an.sql(f"SELECT count(*) FROM executions WHERE id = '{nan.id}'") == [[0]]
    assert an.sql("SELECT count(*) FROM markets WHERE market = '0xwide'") == [[0]]
    assert after.state == "running" and an.proc.poll() is None


def test_on_sigterm_everything_received_is_flushed_and_nothing_is_lost(short_root: Path) -> None:
    harness = Harness(short_root)
    try:
        fills = [fill("0xterm", "term-t", "BUY", str(i + 1), "0.5", order=f"t{i}") for i in range(2000)]
        harness.send(*fills)
        wait_for(lambda: harness.status().sockets.get("executions", m.SocketCounters()).received >= 2000,
                 timeout=10, what="analytics to receive every fill")
        harness.proc.send_signal(signal.SIGTERM)
        assert harness.proc.wait(20) == 0
    finally:
        harness.close()
    with duckdb.connect(str(harness.config.state_path / "polybot.duckdb"), read_only=True) as db:
        assert db.execute("SELECT count(*), sum(size) FROM executions WHERE market = '0xterm'").fetchall() == [
            (2000, D(2000 * 2001 // 2))]
    assert '"msg":"final flush"' in (harness.config.state_path / "logs" / "analytics.log").read_text()


# ---------------------------------------------------------------- queries


@pytest.mark.parametrize("sql, why", [
    ("DELETE FROM trades", "only read-only SELECT statements are answered (this is DELETE)"),
    ("CREATE TABLE x (a INT)", "(this is CREATE)"),
    ("DROP VIEW fills", "(this is DROP)"),
    ("INSERT INTO trades SELECT * FROM trades", "(this is INSERT)"),
    ("SELECT 1; SELECT 2", "send exactly one statement (got 2)"),
    ("SELECT 1; DELETE FROM trades", "send exactly one statement (got 2)"),
    ("COPY trades TO '/tmp/out.csv'", "(this is COPY)"),
    ("ATTACH '/tmp/other.duckdb'", "(this is ATTACH)"),
    ("SET threads = 1", "(this is SET)"),
    ("PRAGMA version", "(this is PRAGMA)"),
    ("SELECT * FROM read_csv('/etc/passwd')", "file system operations are disabled"),
    ("SELEC 1", "cannot parse the SQL"),
    ("-- nothing but a comment", "send exactly one statement (got 0)"),
])
def test_the_sql_guard_refuses_anything_but_one_read_only_select(an: Harness, sql: str, why: str) -> None:
    trade = m.LastTrade(token_id="guard", market="0xguard", price=D("0.5"), size=D(1), side="BUY")
    an.send(trade)
    wait_for(lambda: an.sql(f"SELECT count(*) FROM trades WHERE id = '{trade.id}'") == [[1]], timeout=5)
    counts = "SELECT (SELECT count(*) FROM trades), (SELECT count(*) FROM fills), (SELECT count(*) FROM duckdb_tables())"
    before = an.sql(counts)
    reply = an.ask(m.QueryRequest(sql=sql))
    assert isinstance(reply, m.Error) and why in reply.message
    assert an.sql(counts) == before  # nothing was touched, and it still answers


def test_sql_answers_are_capped_at_max_rows_and_long_queries_are_stopped(an: Harness) -> None:
    reply = an.ask(m.QueryRequest(sql="SELECT range AS n FROM range(5000)", max_rows=10))
    assert reply.columns == ["n"] and reply.rows == [[i] for i in range(10)] and reply.truncated
    full = an.ask(m.QueryRequest(sql="SELECT * FROM range(3)"))
    assert len(full.rows) == 3 and not full.truncated
    slow = an.ask(m.QueryRequest(sql="SELECT sum(hash(i)) FROM range(100000000000) t(i)"))
    assert isinstance(slow, m.Error) and "ran longer than 0.5 s" in slow.message
    assert an.sql("SELECT 41 + 1") == [[42]]


def test_named_queries_refuse_unknown_names_and_parameters_with_what_they_take(an: Harness) -> None:
    assert "the named queries are positions, pnl" in an.ask(m.QueryRequest(name="nope")).message
    assert "unknown parameter colour; it takes market, all" in an.ask(
        m.QueryRequest(name="positions", params={"colour": "red"})).message
    assert "limit must be a whole number" in an.ask(m.QueryRequest(name="fills", params={"limit": "x"})).message
    assert "no signal 'missing' recorded" in an.ask(m.QueryRequest(name="trace",
                                                                   params={"signal_id": "missing"})).message


# ---------------------------------------------------------------- trace and the CLI


def trade_path(t0: int, sid: str, cause: m.BookDelta, market: str = "0xtr", yes: str = "tr-yes",
               no: str = "tr-no") -> list[m.Message]:
    """A two-leg signal's whole path with hop times chosen by the test (microseconds after t0)."""
    def at(us: int) -> int:
        return t0 + us * 1000

    legs = [m.Leg(token_id=yes, side="BUY", size=D(40), limit_price=D("0.45"), order_type="FOK", market=market),
            m.Leg(token_id=no, side="BUY", size=D(40), limit_price=D("0.50"), order_type="FOK", market=market)]
    sig = m.Signal(id=sid, ts_ns=at(412), source="strategy:arbitrage", legs=legs, cause_id=cause.id,
                   cause_ts_ns=cause.ts_ns)
    orders = [m.Order(id=f"{sid}-o{i}", ts_ns=at(800 + i), signal_id=sid, leg=i, source=sig.source,
                      token_id=leg.token_id, market=market, side="BUY", size=leg.size, limit_price=leg.limit_price,
                      order_type="FOK") for i, leg in enumerate(legs)]
    out: list[m.Message] = [cause, m.SignalAccepted(ts_ns=at(730), signal_id=sid, source=sig.source, orders=orders,
                                                    signal=sig)]
    for i, o in enumerate(orders):
        out.append(m.OrderAck(ts_ns=at(3120 + i * 1000), order_id=o.id, venue_order_id=f"0xv{i}", status="matched",
                              signal_id=sid, source=sig.source, submitted_ts_ns=at(901 + i)))
        out.append(fill(market, o.token_id, "BUY", "40", str(o.limit_price), taker_fee("40", str(o.limit_price)),
                        order=o.id, signal_id=sid, source=sig.source, ts_ns=at(3550 + i * 1000)))
    return out


def test_polybot_trace_prints_every_hop_of_a_signal_in_order_with_its_time(an: Harness) -> None:
    t0 = 1_900_000_000_000_000_000
    cause = m.BookDelta(ts_ns=t0, changes=[m.LevelChange(token_id="tr-yes", market="0xtr", side="SELL",
                                                         price=D("0.45"), size=D(40), best_bid=D("0.44"),
                                                         best_ask=D("0.45"))])
    sid = "sig-trace-" + m.new_id()
    an.send(*trade_path(t0, sid, cause))
    wait_for(lambda: an.sql(f"SELECT count(*) FROM executions WHERE signal_id = '{sid}'") == [[4]], timeout=5)
    result = an.cli("trace", sid)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"signal {sid} from strategy:arbitrage")
    hops = [line.split()[:4] for line in lines[1:]]
    assert hops == [
        ["T+0.000", "ms", "book", "update"], ["T+0.412", "ms", "signal", "strategy:arbitrage"],
        ["T+0.730", "ms", "verdict", "risk"], ["T+0.800", "ms", "order", "risk"], ["T+0.801", "ms", "order", "risk"],
        ["T+0.901", "ms", "submitted", "executor"], ["T+0.902", "ms", "submitted", "executor"],
        ["T+3.120", "ms", "ack", "venue"], ["T+3.550", "ms", "fill", "venue"],
        ["T+4.120", "ms", "ack", "venue"], ["T+4.550", "ms", "fill", "venue"]]
    assert f"BookDelta {cause.id} token tr-yes" in lines[1]
    assert "2 legs BUY 40 tr-yes @ 0.45 FOK, BUY 40 tr-no @ 0.5 FOK" in lines[2]
    assert "accepted → 2 orders" in lines[3] and "BUY 40 @ 0.45 FOK" in lines[4]
    assert "40 @ 0.45 fee 0.495 TAKER" in lines[9]
    by_prefix = an.cli("trace", sid[:-2], "--json")
    assert [h["hop"] for h in json.loads(by_prefix.stdout)] == [
        "book update", "signal", "verdict", "order", "order", "submitted", "submitted", "ack", "fill", "ack", "fill"]


def test_the_cli_views_show_orders_fills_positions_pnl_and_sql_from_a_running_analytics(an: Harness) -> None:
    sid = "c" + m.new_id()  # as short as the mesh's own ids, which tables show whole
    cause = m.BookDelta(changes=[])
    an.send(*trade_path(cause.ts_ns, sid, cause, "0xcli", "cli-yes", "cli-no"))
    wait_for(lambda: an.sql(f"SELECT count(*) FROM fills WHERE signal_id = '{sid}'") == [[2]], timeout=5)
    orders = json.loads(an.cli("orders", "--signal", sid, "--json").stdout)
    assert [(o["side"], o["size"], o["status"], o["filled"], o["avg_price"]) for o in orders] == [
        ("BUY", "40", "filled", "40", "0.45"), ("BUY", "40", "filled", "40", "0.5")]
    table = an.cli("orders", "--signal", sid)
    assert table.returncode == 0 and table.stdout.splitlines()[0].split()[:4] == ["TIME", "ORDER_ID", "SIGNAL_ID",
                                                                                   "SOURCE"]
    fills = an.cli("fills", "--market", "0xcli", "--since", "1d")
    assert fills.returncode == 0 and sum(sid in line for line in fills.stdout.splitlines()) == 2
    positions = json.loads(an.cli("positions", "--market", "0xcli", "--json").stdout)
    assert [(p["token_id"], p["size"], p["avg_price"]) for p in positions] == [("cli-no", "40", "0.5"),
                                                                             ("cli-yes", "40", "0.45")]
    pnl = an.cli("pnl")
    assert pnl.returncode == 0 and pnl.stdout.splitlines()[-1].startswith("TOTAL")
    since = json.loads(an.cli("pnl", "--since", "1d", "--json").stdout)
    cli_market = next(r for r in since if r["market"] == "0xcli")  # all of it happened within the day
    assert cli_market["total_at_since"] == "0" and cli_market["period_pnl"] == cli_market["total"]
    query = an.cli("query", f"SELECT count(*) AS n FROM fills WHERE signal_id = '{sid}'")
    assert query.stdout.split() == ["N", "2"]
    refused = an.cli("query", "DELETE FROM fills")
    assert refused.returncode == 1 and "only read-only SELECT" in refused.stderr


def test_an_order_that_filled_in_part_and_had_the_rest_canceled_reads_partial_rest_canceled(an: Harness) -> None:
    sid = "p" + m.new_id()
    orders = [m.Order(id=f"{sid}-{kind}", signal_id=sid, leg=i, source="strategy:fak", token_id="fak-yes",
                      market="0xfak", side="BUY", size=D(10), limit_price=D("0.45"), order_type="FAK")
              for i, kind in enumerate(("part", "whole", "none"))]
    part, whole, none = orders
    an.send(m.SignalAccepted(signal_id=sid, source="strategy:fak", orders=orders),
            *(m.OrderAck(order_id=o.id, venue_order_id="0x" + o.id, status="matched", signal_id=sid,
                         source=o.source) for o in orders),
            fill("0xfak", "fak-yes", "BUY", "4", "0.45", order=part.id, signal_id=sid, source=part.source),
            m.OrderCanceled(order_id=part.id, remaining=D(6), reason="FAK remainder", signal_id=sid),
            fill("0xfak", "fak-yes", "BUY", "10", "0.45", order=whole.id, signal_id=sid, source=whole.source),
            m.OrderCanceled(order_id=none.id, remaining=D(10), reason="FAK remainder", signal_id=sid))
    wait_for(lambda: an.sql(f"SELECT count(*) FROM executions WHERE signal_id = '{sid}'") == [[7]], timeout=5)
    status = {o["order_id"]: (o["status"], o["filled"]) for o in an.named("orders", signal=sid)}
    assert status == {part.id: ("partial (rest canceled)", "4"), whole.id: ("filled", "10"),
                      none.id: ("canceled", "0")}
    assert an.named("orders", signal=sid, status="open") == []
    assert [o["order_id"] for o in an.named("orders", signal=sid, status="partial (rest canceled)")] == [part.id]


def test_the_cli_says_so_and_fails_when_analytics_is_not_running(mesh_factory) -> None:
    mesh = mesh_factory(services='[services.analytics]\nkind = "services.analytics:Analytics"\n')
    result = mesh.cli("positions")
    assert result.returncode == 1
    assert "analytics is not running" in result.stderr and "polybot up" in result.stderr
    assert control_address(load(mesh.config), "analytics") in result.stderr
