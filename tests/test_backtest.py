"""Backtests: recordings of what the scanner publishes, replayed into the same strategy classes in one process
(with paper fills) and through the mesh (a real strategies process), with the same signals either way."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal as D
from pathlib import Path

import pytest

from services import messages as m
from services.backtest.engine import BacktestError, Replay, backtest, signal_key
from services.backtest.report import summarize
from services.backtest.mesh import replay_mesh
from services.backtest.result import encode
from services.recording import RecordingWriter, Tap, count, read, segments
from services.risk.limits import Limits, RiskOptions
from services.strategies.store import Budget
from services.venues.base import taker_fee

from .conftest import child_env
from .trading_harness import Trading
from .venue_harness import Venue

T0 = 1_800_000_000_000_000_000
S = 1_000_000_000


def binary(market: str, fee: str = "0.02") -> m.MarketNew:
    return m.MarketNew(ts_ns=T0, id=f"new-{market}", market=market, question=f"Will {market}?",
                       outcomes=[m.Outcome(token_id=f"{market}-y", name="Yes"),
                                 m.Outcome(token_id=f"{market}-n", name="No")],
                       tick_size=D("0.01"), min_size=D(5), fee_rate=D(fee))


def book(token: str, market: str, bid: str, ask: str, ask_size: str) -> m.Book:
    return m.Book(token_id=token, market=market, bids=[m.Level(D(bid), D(10))], asks=[m.Level(D(ask), D(ask_size))])


def scripted(folder: Path) -> Path:
    """Market A opens with a gap (YES 0.45 x 20 + NO 0.50 x 30), and again 5 s later (YES 0.44 x 10, after the
    cooldown); market B never has one. A resolves YES."""
    with RecordingWriter(folder) as w:
        w.write_all([binary("A"), binary("B"), m.MarketStale(ts_ns=T0, markets=[], stale=True),
                     m.BookSnapshot(ts_ns=T0 + 1, id="snap", books=[
                         book("A-y", "A", "0.40", "0.45", "20"), book("A-n", "A", "0.48", "0.50", "30"),
                         book("B-y", "B", "0.50", "0.55", "40"), book("B-n", "B", "0.44", "0.50", "40")]),
                     m.BookDelta(ts_ns=T0 + 5 * S, id="gap2", changes=[
                         m.LevelChange(token_id="A-y", market="A", side="SELL", price=D("0.45"), size=D(0)),
                         m.LevelChange(token_id="A-y", market="A", side="SELL", price=D("0.44"), size=D(10))]),
                     m.LastTrade(ts_ns=T0 + 6 * S, id="t1", token_id="B-y", market="B", price=D("0.52"), size=D(3),
                                 side="BUY"),
                     m.MarketResolved(ts_ns=T0 + 9 * S, id="res", market="A", winning_token_id="A-y",
                                      winning_outcome="Yes")])
    return folder


def test_a_known_edge_gives_exactly_the_expected_trades_and_pnl(tmp_path: Path) -> None:
    result = backtest(scripted(tmp_path / "rec"), "arbitrage")
    assert [(s.cause_id, [(lg.token_id, lg.size, lg.limit_price) for lg in s.legs]) for s in result.signals] == [
        ("snap", [("A-y", 20, D("0.45")), ("A-n", 20, D("0.50"))]),
        ("gap2", [("A-y", 10, D("0.44")), ("A-n", 10, D("0.50"))])]  # NO shows 30, 20 of it taken already
    assert [(f.token_id, f.price, f.size, f.fee, f.liquidity) for f in result.fills] == [
        ("A-y", D("0.45"), 20, taker_fee(D(20), D("0.45"), D("0.02")), "TAKER"),
        ("A-n", D("0.50"), 20, taker_fee(D(20), D("0.50"), D("0.02")), "TAKER"),
        ("A-y", D("0.44"), 10, taker_fee(D(10), D("0.44"), D("0.02")), "TAKER"),
        ("A-n", D("0.50"), 10, taker_fee(D(10), D("0.50"), D("0.02")), "TAKER")]
    fees = D("0.099") + D("0.1") + D("0.04928") + D("0.05")
    # 30 winning YES pay 30; the sets cost 20 x 0.95 + 10 x 0.94 = 28.4; fees 0.29828.
    assert result.equity[-1].equity == result.equity[-1].realized == D(30) - D("28.4") - fees == D("1.30172")
    assert result.equity[-1].fees == fees and result.equity[-1].exposure == 0
    assert result.signal_pnl == {"s0000001": D("0.801"), "s0000002": D("0.50072")}
    # Both legs of a set fill together, and a complete set risks nothing: it pays 1 whichever way A resolves.
    assert max(p.exposure for p in result.equity) == 0
    assert all(p.size == 0 for p in result.positions) and result.refusals == []


def test_a_fok_leg_the_book_cannot_fill_is_refused_and_the_other_leg_is_exposed(tmp_path: Path) -> None:
    folder = tmp_path / "rec"
    with RecordingWriter(folder) as w:
        w.write_all([binary("A"), m.BookSnapshot(ts_ns=T0 + 1, id="snap", books=[
            book("A-y", "A", "0.40", "0.45", "20"), book("A-n", "A", "0.48", "0.50", "30")]),
            m.BookDelta(ts_ns=T0 + 5 * S, id="gap2", changes=[  # YES 25 at 0.44, NO still shows 30 (20 taken)
                m.LevelChange(token_id="A-y", market="A", side="SELL", price=D("0.44"), size=D(25))])])
    result = backtest(folder, "arbitrage")
    assert [(r.signal_id, r.token_id, r.code) for r in result.refusals] == [("s0000002", "A-n", "FOK_UNFILLED")]
    assert {p.token_id: p.size for p in result.positions} == {"A-y": 45, "A-n": 20}


def test_every_order_goes_through_risk_and_risk_follows_the_fills(tmp_path: Path) -> None:
    folder = scripted(tmp_path / "rec")
    replay = Replay("arbitrage")
    replay.run(read(folder))
    # Risk saw every fill and every order end, as in the mesh: its account is the executor's, nothing stays open.
    assert replay.risk.ledger.positions() == replay.ledger.positions() and replay.risk.open == {}
    assert [d.size for d in replay.desk.orders.values()] == [20, 20, 10, 10]
    # The same run under a tighter operator limit: risk refuses the first pair (9.00 and 10.00 over 5), by code,
    # leg by leg; the second (4.40 and 5.00) passes, and takes the NO shares the first would have.
    tight = backtest(folder, "arbitrage", risk=RiskOptions(limits=Limits(max_order_notional=D(5))))
    assert [(r.signal_id, r.token_id, r.code, r.by) for r in tight.refusals] == [
        ("s0000001", "A-y", "ORDER_NOTIONAL", "risk"), ("s0000001", "A-n", "ORDER_NOTIONAL", "risk")]
    assert [(f.signal_id, f.token_id, f.size) for f in tight.fills] == [("s0000002", "A-y", 10), ("s0000002", "A-n", 10)]
    summary = summarize(tight)
    assert (summary.signals, summary.signals_refused, summary.risk_refusals, summary.refused) == \
        (2, 1, {"ORDER_NOTIONAL": 1}, 0)


def test_a_budget_holds_the_strategy_as_risk_holds_an_approved_one_and_never_raises_the_limits(
        tmp_path: Path) -> None:
    folder = scripted(tmp_path / "rec")
    under = backtest(folder, "arbitrage", budget=Budget(max_order_notional=D(5), max_gross_exposure=D(10 ** 6)))
    assert [(r.signal_id, r.code) for r in under.refusals] == [("s0000001", "STRATEGY_ORDER_NOTIONAL")] * 2
    # A budget above the operator's limits changes nothing: theirs still hold (250 an order lets both pairs through,
    # 5 does not).
    assert backtest(folder, "arbitrage", budget=Budget(max_order_notional=D(10 ** 6))).refusals == []
    tight = RiskOptions(limits=Limits(max_order_notional=D(5)))
    assert {r.code for r in backtest(folder, "arbitrage", risk=tight, budget=Budget(
        max_order_notional=D(10 ** 6))).refusals} == {"ORDER_NOTIONAL"}


def test_polybot_backtest_takes_a_file_and_a_budget_and_shows_what_risk_refused(tmp_path: Path) -> None:
    folder = scripted(tmp_path / "rec")
    (tmp_path / "polybot.toml").write_text(f'state_dir = "{tmp_path / "state"}"\n[local_venue]\nstart = false\n')
    (tmp_path / "mine.py").write_text("from services.strategies.arbitrage import Arbitrage\n\n\n"
                                      "class Mine(Arbitrage):\n    name = 'mine'\n")
    cli = [sys.executable, "-m", "services", "--config", str(tmp_path / "polybot.toml"), "backtest", "--data",
           str(folder), "--strategy", f"{tmp_path / 'mine.py'}:Mine", "--out", str(tmp_path / "out")]
    done = subprocess.run([*cli, "--budget", "max_order_notional=5", "--json"], env=child_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["strategy"], summary["signals"], summary["signals_refused"], summary["risk_refusals"]) == \
        ("mine", 2, 1, {"STRATEGY_ORDER_NOTIONAL": 1})
    text = subprocess.run([*cli, "--budget", "max_order_notional=5"], env=child_env(), capture_output=True,
                          text=True, timeout=120)
    assert "refused by risk      1 signals: STRATEGY_ORDER_NOTIONAL 1" in text.stdout, text.stdout
    assert "signals refused by risk</td><td>1 (STRATEGY_ORDER_NOTIONAL 1)" in (tmp_path / "out" / "report.html").read_text()
    bad = subprocess.run([*cli, "--budget", "max_size=5"], env=child_env(), capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "--budget: unknown budget fields ['max_size']" in bad.stderr


def low_bids(folder: Path, resolves: bool = False) -> Path:
    """Market A opens with a gap (YES 0.45 x 20 + NO 0.50 x 30) over bids of 0.10, which then fall to 0.01 (mids
    0.305 each: the pair marked at 0.61); A resolves YES at the end when ``resolves``."""
    with RecordingWriter(folder) as w:
        w.write_all([binary("A"), m.BookSnapshot(ts_ns=T0 + 1, id="snap", books=[
            book("A-y", "A", "0.10", "0.45", "20"), book("A-n", "A", "0.10", "0.50", "30")]),
            m.BookSnapshot(ts_ns=T0 + 3 * S, id="fall", books=[
                book("A-y", "A", "0.01", "0.60", "20"), book("A-n", "A", "0.01", "0.60", "30")]),
            m.LastTrade(ts_ns=T0 + 6 * S, id="t1", token_id="A-y", market="A", price=D("0.02"), size=D(5),
                        side="SELL"),
            *([m.MarketResolved(ts_ns=T0 + 9 * S, id="res", market="A", winning_token_id="A-y",
                                winning_outcome="Yes")] if resolves else []),
            m.MarketHalted(ts_ns=T0 + 10 * S, id="end", market="B")])
    return folder


@pytest.mark.parametrize("resolves", [False, True], ids=["held", "resolved"])
def test_a_filled_arbitrage_shows_its_edge_less_fees_as_pnl_from_the_fill_on_however_low_the_bids(
        tmp_path: Path, resolves: bool) -> None:
    result = backtest(low_bids(tmp_path / "rec", resolves), "arbitrage")
    assert [(f.token_id, f.price, f.size) for f in result.fills] == [("A-y", D("0.45"), 20), ("A-n", D("0.50"), 20)]
    fees = taker_fee(D(20), D("0.45"), D("0.02")) + taker_fee(D(20), D("0.50"), D("0.02"))
    locked = (1 - (D("0.45") + D("0.50"))) * 20 - fees
    assert locked == D("0.801")
    summary = summarize(result)
    assert (summary.pnl, summary.fees, summary.realized) == (locked, fees, locked if resolves else -fees)
    assert result.signal_pnl == {"s0000001": locked} and (summary.winners, summary.losers) == (1, 0)
    assert [(r.market, r.pnl) for r in summary.per_market] == [("A", locked)]
    # From the moment both legs fill, the pair is worth the 1 it merges into, not its bids or mids.
    filled_ns = result.fills[-1].ts_ns
    after = [p for p in result.equity if p.ts_ns >= filled_ns]
    assert len(after) >= 4 and {p.equity for p in after} == {locked}
    assert summary.max_drawdown == 0
    assert {p.exposure for p in after} == {0}  # nothing left that a resolution could take


def test_shares_beyond_a_complete_set_are_still_marked_to_the_book(tmp_path: Path) -> None:
    folder = tmp_path / "rec"
    with RecordingWriter(folder) as w:  # 20 pairs, then 30 more YES whose NO leg the book cannot fill
        w.write_all([binary("A"), m.BookSnapshot(ts_ns=T0 + 1, id="snap", books=[
            book("A-y", "A", "0.40", "0.45", "20"), book("A-n", "A", "0.48", "0.50", "30")]),
            m.BookDelta(ts_ns=T0 + 5 * S, id="gap2", changes=[
                m.LevelChange(token_id="A-y", market="A", side="SELL", price=D("0.44"), size=D(30))]),
            m.BookSnapshot(ts_ns=T0 + 8 * S, id="after", books=[
                book("A-y", "A", "0.34", "0.50", "20"), book("A-n", "A", "0.30", "0.70", "30")])])
    result = backtest(folder, "arbitrage")
    assert {p.token_id: p.size for p in result.positions} == {"A-y": 50, "A-n": 20}
    assert result.marks == {"A-y": D("0.42"), "A-n": D("0.50")}
    # YES cost 9 + 13.20, NO 10: 20 sets at 1, and the 30 YES beyond them at the 0.42 mid.
    last = result.equity[-1]
    assert last.unrealized == 20 + 30 * D("0.42") - (D("22.2") + 10) == D("0.4")
    assert last.exposure == D("13.32")  # the 30 unmatched YES at their average cost, 0.444
    summary = summarize(result)
    assert (summary.unrealized, summary.per_market[0].unrealized) == (D("0.4"), D("0.4"))
    assert summary.pnl == D("0.4") - summary.fees


def test_the_same_data_and_parameters_give_byte_identical_results(tmp_path: Path) -> None:
    folder = scripted(tmp_path / "rec")
    first = encode(backtest(folder, "arbitrage", {"min_edge": "0.01", "max_size": "15"}))
    assert first == encode(backtest(folder, "arbitrage", {"min_edge": "0.01", "max_size": "15"}))
    assert first != encode(backtest(folder, "arbitrage", {"min_edge": "0.01", "max_size": "10"}))
    with pytest.raises(BacktestError, match="unknown strategy 'nope': the known ones are arbitrage, quoter"):
        backtest(folder, "nope")
    with pytest.raises(BacktestError, match="its parameters: min_edge"):
        backtest(folder, "arbitrage", {"min_edge": "lots"})


def test_segments_rotate_and_replay_as_one_recording(tmp_path: Path) -> None:
    whole, rotated = scripted(tmp_path / "whole"), tmp_path / "rotated"
    with RecordingWriter(rotated, rotate_bytes=400) as w:
        w.write_all(list(read(whole)))
    assert len(segments(rotated)) > 2 and count(rotated) == count(whole)
    assert [encode_msg(x) for x in read(rotated)] == [encode_msg(x) for x in read(whole)]
    # A later segment stands alone: it restates the markets and books at its start.
    last = list(read(segments(rotated)[-1]))
    assert {x.market for x in last if isinstance(x, m.MarketNew)} == {"A", "B"}
    torn = segments(rotated)[0]
    torn.write_bytes(torn.read_bytes()[:-3])  # a crash mid-frame: the segment ends at its last whole frame
    assert count(rotated) == count(whole) - 1


def encode_msg(msg: m.Message) -> bytes:
    import msgspec
    return msgspec.msgpack.encode(msg)


def test_a_tap_writes_the_snapshot_first_and_only_newer_messages_after_it(tmp_path: Path) -> None:
    tap = Tap(RecordingWriter(tmp_path / "rec"))
    early, late = (m.LastTrade(ts_ns=T0 + d, token_id="A-y", market="A", price=D("0.5"), size=D(1), side="BUY")
                   for d in (1, 3))
    tap.offer(early)
    tap.offer(late)
    tap.start([binary("A"), m.BookSnapshot(ts_ns=T0 + 2, books=[])], T0 + 2)
    tap.offer(m.MarketHalted(ts_ns=T0 + 4, market="A"))
    tap.writer.close()
    assert [(type(x).__name__, x.ts_ns - T0) for x in read(tmp_path / "rec")] == [
        ("MarketNew", 0), ("BookSnapshot", 2), ("LastTrade", 3), ("MarketHalted", 4)]


# ---------------------------------------------------------------- from the local venue, through the mesh


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, Path, Trading]:
    """`polybot record` and analytics' always-on recording, of the local venue with frequent mispricings."""
    root = Path(os.path.realpath(tmp_path_factory.mktemp("record")))
    venue = Venue(root / "venue", 31, 100, "--gaps-per-s", "3", "--requotes-per-s", "20", "--gap-ms", "400")
    mesh = Trading(root, venue, {"scanner": "", "analytics": 'record = "always", record_rotate_mb = 0.05'})
    try:
        mesh.start("scanner", "analytics")
        mesh.wait_ready("scanner")
        out = root / "recorded"
        done = subprocess.run([sys.executable, "-m", "services", "--config", str(mesh.config_file), "record",
                               "--for", "4s", "--out", str(out)], env=child_env(), capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        mesh.stop("analytics")  # it closes its recording as it stops
        yield out, mesh.config.state_path / "recordings" / "always", mesh
    finally:
        mesh.close()
        venue.stop()


def test_polybot_record_writes_the_scanners_snapshot_then_its_stream(recorded) -> None:
    out, _, mesh = recorded
    msgs = list(read(out))
    snapshot = mesh.ask("scanner", m.SnapshotRequest())
    opening = [x for x in msgs[:len(snapshot.markets)] if isinstance(x, m.MarketNew)]
    assert len(opening) == len(snapshot.markets) >= 20
    at = len(opening)
    assert isinstance(msgs[at], m.MarketStale) and isinstance(msgs[at + 1], m.BookSnapshot)
    stream = msgs[at + 2:]
    assert sum(isinstance(x, m.BookDelta) for x in stream) > 20  # four seconds of 20 requotes a second
    assert all(x.ts_ns > msgs[at + 1].ts_ns for x in stream)


def test_analytics_records_always_when_asked_and_rotates(recorded) -> None:
    _, always, _ = recorded
    assert len(segments(always)) > 1
    msgs = list(read(always))
    assert isinstance(msgs[0], m.MarketNew) and sum(isinstance(x, m.BookDelta) for x in msgs) > 20


def test_a_recording_from_the_local_venue_gives_the_same_signals_in_both_modes(recorded) -> None:
    out, _, _ = recorded
    in_process = backtest(out, "arbitrage", {"cooldown_ms": "500"})
    assert len(in_process.signals) >= 2, "the venue opened no gap the strategy saw"
    through_mesh = replay_mesh(out, "arbitrage", {"cooldown_ms": "500"})
    assert [signal_key(s) for s in through_mesh if isinstance(s, m.Signal)] == \
        [signal_key(s) for s in in_process.signals]
    assert in_process.fills, "the gaps were there to be taken"


def test_polybot_backtest_reports_and_the_mesh_mode_agrees(recorded, tmp_path: Path) -> None:
    out, _, mesh = recorded
    cli = [sys.executable, "-m", "services", "--config", str(mesh.config_file), "backtest", "--data", str(out),
           "--strategy", "arbitrage", "--param", "cooldown_ms=500"]
    one = subprocess.run([*cli, "--out", str(tmp_path / "one"), "--json"], env=child_env(), capture_output=True,
                         text=True, timeout=120)
    assert one.returncode == 0, one.stderr
    summary = json.loads(one.stdout)
    assert summary["signals"] >= 2 and summary["params"]["cooldown_ms"] == "500"
    assert {p.name for p in (tmp_path / "one").iterdir()} >= {"result.json", "summary.json", "trades.csv",
                                                               "equity.png", "report.html"}
    assert (tmp_path / "one" / "equity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = subprocess.run([*cli, "--out", str(tmp_path / "two"), "--json"], env=child_env(), capture_output=True,
                           text=True, timeout=120)
    assert (tmp_path / "one" / "result.json").read_bytes() == (tmp_path / "two" / "result.json").read_bytes()
    assert again.stdout == one.stdout
    through = subprocess.run([*cli, "--mesh", "--out", str(tmp_path / "mesh")], env=child_env(),
                             capture_output=True, text=True, timeout=120)
    assert through.returncode == 0, through.stderr
    assert "the same signals as the in-process replay" in through.stdout
    sent = (tmp_path / "mesh" / "signals.jsonl").read_text().splitlines()
    assert len(sent) == summary["signals"]
    sweep = subprocess.run([*cli, "--sweep", "max_size=5,20", "--sweep", "min_edge=0.005,0.5", "--out",
                            str(tmp_path / "sweep")], env=child_env(), capture_output=True, text=True, timeout=120)
    assert sweep.returncode == 0, sweep.stderr
    assert (tmp_path / "sweep" / "sweep.csv").read_text().count("\n") == 5  # a header and 4 combinations
    bad = subprocess.run([*cli[:-2], "--param", "min_edge"], env=child_env(), capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "is not K=V" in bad.stderr
    empty = subprocess.run([*cli, "--sweep", "max_size="], env=child_env(), capture_output=True, text=True,
                           timeout=60)
    assert empty.returncode == 2 and "--sweep max_size= has no values" in empty.stderr


def test_a_simulated_recording_gives_the_same_signals_in_both_modes(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "services", "record", "--seed", "11", "--seconds", "60",
                           "--gaps-per-s", "1", "--out", str(tmp_path / "sim")], env=child_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "recorded" in done.stdout, done.stderr
    in_process = backtest(tmp_path / "sim", "arbitrage")
    assert len(in_process.signals) >= 3
    through_mesh = replay_mesh(tmp_path / "sim", "arbitrage")
    assert [signal_key(s) for s in through_mesh if isinstance(s, m.Signal)] == \
        [signal_key(s) for s in in_process.signals]
