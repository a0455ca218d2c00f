"""The backtest report over a result built by hand, with figures worked out on paper."""
from __future__ import annotations

import csv
import io
import re
from decimal import Decimal as D
from pathlib import Path

import msgspec
import pytest

from services import messages as m
from services.backtest.report import MarketRow, Progress, Summary, summarize, sweep_table, write_report, write_sweep
from services.backtest.result import BacktestResult, MarketInfo, Point, Refusal
from services.ledger import Ledger

T0 = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z
S = 1_000_000_000
QUESTION_A = 'Will it rain? <script>alert("x")</script>'
MARKETS = {
    "0xa": MarketInfo(market="0xa", question=QUESTION_A, outcomes={"a-yes": "Yes", "a-no": "No"}),
    "0xb": MarketInfo(market="0xb", question="Fed cut & hold?", outcomes={"b-yes": "Yes", "b-no": "No"}),
}


def fill(n: int, signal: str, token: str, side: m.Side, price: str, size: str, fee: str = "0",
         liquidity: m.Liquidity = "TAKER") -> m.Fill:
    market = "0xa" if token.startswith("a-") else "0xb"
    return m.Fill(id=f"t{n}", ts_ns=T0 + n * 10 * S, trace_id="tr", order_id=f"{signal}-0", venue_order_id=f"v{n}",
                  trade_id=f"t{n}", token_id=token, market=market, side=side, price=D(price), size=D(size),
                  fee=D(fee), liquidity=liquidity, signal_id=signal, source="strategy:test")


# Market A: s1 buys 100 Yes at 0.40 and sells them at 0.45 (fees 0.50 each way): realized 5 - 1 = 4.00;
# s2 buys 10 No at 0.30 (fee 0.10), marked at 0.20: realized -0.10, unrealized 2 - 3 = -1.00.
# Market B: s3 buys 40 Yes at 0.50 as maker, marked at 0.60: unrealized 24 - 20 = 4.00;
# s4 buys 10 No at 0.50 (fee 0.10) and sells them at 0.52 as maker: realized 0.20 - 0.10 = 0.10.
# s5 was refused and never filled. In all: realized 4.00, unrealized 3.00, PnL 7.00, fees 1.20.
FILLS = [
    fill(1, "s1", "a-yes", "BUY", "0.40", "100", "0.50"),
    fill(2, "s1", "a-yes", "SELL", "0.45", "100", "0.50"),
    fill(3, "s2", "a-no", "BUY", "0.30", "10", "0.10"),
    fill(4, "s3", "b-yes", "BUY", "0.50", "40", liquidity="MAKER"),
    fill(5, "s4", "b-no", "BUY", "0.50", "10", "0.10"),
    fill(6, "s4", "b-no", "SELL", "0.52", "10", liquidity="MAKER"),
]
MARKS = {"a-no": D("0.20"), "b-yes": D("0.60")}


def positions(fills: list[m.Fill]) -> list[m.Position]:
    ledger = Ledger()
    for f in fills:
        ledger.apply(f)
    return sorted(ledger.positions(), key=lambda p: (p.market, p.token_id))


def point(t: int, equity: str, exposure: str, realized: str = "0", fees: str = "0") -> Point:
    return Point(ts_ns=T0 + t * S, equity=D(equity), realized=D(realized), unrealized=D(equity) - D(realized),
                 exposure=D(exposure), fees=D(fees))


def result(**changes: object) -> BacktestResult:
    signals = [m.Signal(id=f"s{i}", ts_ns=T0, source="strategy:test", legs=[]) for i in range(1, 6)]
    base = BacktestResult(
        strategy="test", params={"edge": "0.02", "size": "10"}, data="/recordings/day1", started_ns=T0,
        ended_ns=T0 + 60 * S, messages=1234, signals=signals, cancels=2,
        refusals=[Refusal(ts_ns=T0, signal_id="s5", token_id="a-yes", code="FOK", message="not fillable")],
        fills=FILLS,
        # rises to 10, falls to 4, ends at 7
        equity=[point(0, "0", "0"), point(10, "3", "40", "-0.5", "0.5"), point(20, "10", "40", "-0.5", "0.5"),
                point(30, "6", "60"), point(40, "4", "23"), point(50, "5", "23"),
                point(60, "7", "23", "4.00", "1.20")],
        positions=positions(FILLS), marks=MARKS,
        signal_pnl={"s1": D("4.00"), "s2": D("-1.10"), "s3": D("4.00"), "s4": D("0.10")}, markets=MARKETS)
    return msgspec.structs.replace(base, **changes)


def test_summary_has_the_figures_worked_out_by_hand() -> None:
    s = summarize(result())
    assert (s.strategy, s.params, s.data) == ("test", {"edge": "0.02", "size": "10"}, "/recordings/day1")
    assert (s.started, s.ended, s.duration_s) == ("2023-11-14T22:13:20.000Z", "2023-11-14T22:14:20.000Z", 60)
    assert (s.messages, s.signals, s.refused, s.cancels, s.trades) == (1234, 5, 1, 2, 6)
    assert s.volume == D("118.20")  # 40 + 45 + 3 + 20 + 5 + 5.20
    assert (s.fees, s.realized, s.unrealized, s.pnl) == (D("1.20"), D("4.00"), D("3.00"), D("7"))
    assert s.max_drawdown == 6 and s.max_drawdown_pct == D("0.6")
    assert s.max_exposure == 60
    # each point's exposure until the next: (40 + 40 + 60 + 23 + 23) * 10 / 60
    assert s.avg_exposure == D("31.000000")
    assert (s.signals_filled, s.winners, s.losers, s.hit_rate) == (4, 3, 1, D("0.75"))


def test_per_market_rows_come_from_the_final_positions_and_marks() -> None:
    s = summarize(result())
    assert s.per_market == [
        MarketRow(market="0xa", question=QUESTION_A, trades=3, volume=D("88.00"), fees=D("1.10"),
                  realized=D("3.90"), unrealized=D("-1.00"), pnl=D("2.90")),
        MarketRow(market="0xb", question="Fed cut & hold?", trades=3, volume=D("30.20"), fees=D("0.10"),
                  realized=D("0.10"), unrealized=D("4.00"), pnl=D("4.10")),
    ]
    assert sum(r.pnl for r in s.per_market) == s.pnl


def test_per_market_unrealized_is_exact_when_the_average_cost_is_not() -> None:
    # 3 shares for 1.00 in all: the position's avg_price is 0.333..., rounded; marked at 0.40 they made 0.20
    fills = [fill(1, "s1", "a-yes", "BUY", "0.33", "1"), fill(2, "s1", "a-yes", "BUY", "0.335", "2")]
    held = positions(fills)
    assert held[0].size * held[0].avg_price != 1
    s = summarize(result(fills=fills, positions=held, marks={"a-yes": D("0.40")}, equity=[]))
    assert s.per_market[0].unrealized == D("0.20")
    assert s.unrealized == D("0.20") and s.pnl == D("0.20")  # with no equity points, the rows' sums


def test_per_market_values_a_complete_set_at_its_payout_and_marks_only_the_excess() -> None:
    # 10 YES at 0.40 and 15 NO at 0.50 in market B, marked 0.30 and 0.45: 10 pairs pay 10, 5 NO at 0.45 = 2.25,
    # against a cost of 4 + 7.50
    fills = [fill(1, "s1", "b-yes", "BUY", "0.40", "10"), fill(2, "s1", "b-no", "BUY", "0.50", "15")]
    s = summarize(result(fills=fills, positions=positions(fills), marks={"b-yes": D("0.30"), "b-no": D("0.45")},
                         equity=[]))
    assert [(r.market, r.unrealized) for r in s.per_market] == [("0xb", D("0.75"))]
    assert s.unrealized == s.pnl == D("0.75")


def test_a_resolved_position_counts_what_it_realized_and_holds_nothing() -> None:
    ledger = Ledger()
    ledger.apply(fill(1, "s1", "a-yes", "BUY", "0.40", "10", "0.05"))
    ledger.settle("0xa", "a-yes")  # 10 shares redeemed at 1: 10 - 4 - 0.05
    s = summarize(result(fills=FILLS[:1], positions=ledger.positions(), marks={"a-yes": D("0.99")}))
    assert [(r.market, r.realized, r.unrealized, r.pnl) for r in s.per_market] == [
        ("0xa", D("5.95"), D("0"), D("5.95"))]


def test_drawdown_fraction_is_none_when_equity_never_rose_above_zero() -> None:
    s = summarize(result(equity=[point(0, "0", "0"), point(10, "-2", "5"), point(20, "-1", "5")]))
    assert s.max_drawdown == 2 and s.max_drawdown_pct is None


def test_no_filled_signal_has_no_hit_rate() -> None:
    s = summarize(result(fills=[], positions=[], signal_pnl={}, equity=[]))
    assert (s.trades, s.signals_filled, s.hit_rate, s.pnl, s.per_market) == (0, 0, None, 0, [])


def test_write_report_writes_the_four_files(tmp_path: Path) -> None:
    files = write_report(result(), tmp_path / "out")
    assert all(p.parent == tmp_path / "out" and p.stat().st_size > 0 for p in files)
    assert msgspec.json.decode(files.summary.read_bytes(), type=Summary) == summarize(result())
    rows = list(csv.DictReader(io.StringIO(files.trades.read_text())))
    assert [(r["trade_id"], r["side"], r["price"], r["size"], r["fee"], r["outcome"]) for r in rows][:2] == [
        ("t1", "BUY", "0.40", "100", "0.50", "Yes"), ("t2", "SELL", "0.45", "100", "0.50", "Yes")]
    assert len(rows) == 6 and rows[0]["time"] == "2023-11-14T22:13:30.000Z"


def test_the_plot_is_a_real_png(tmp_path: Path) -> None:
    from matplotlib.image import imread

    files = write_report(result(), tmp_path)
    assert files.equity.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    height, width = imread(files.equity).shape[:2]
    assert height > 0 and width > 0


def test_the_html_is_self_contained_and_escapes_the_venues_text(tmp_path: Path) -> None:
    page = write_report(result(), tmp_path).html.read_text()
    assert 'src="data:image/png;base64,iVBORw0KGgo' in page  # the PNG signature, base64
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert "Will it rain? &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "Fed cut &amp; hold?" in page
    assert "75.00%" in page and "7.0000" in page  # hit rate and PnL among the figures
    assert '<td>SELL</td><td class="n">0.45</td><td class="n">100</td>' in page  # a fill as the venue gave it
    assert "The first" not in page  # every trade listed


def test_the_html_lists_the_first_thousand_trades_and_says_so(tmp_path: Path) -> None:
    many = [fill(1, "s1", "a-yes", "BUY", "0.40", "1") for _ in range(1001)]
    page = write_report(result(fills=many), tmp_path).html.read_text()
    assert "The first 1000 of 1001 trades" in page
    assert page.count("<td>BUY</td>") == 1000


def test_writing_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    first, second = write_report(result(), tmp_path / "1"), write_report(result(), tmp_path / "2")
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes(), a.name


def summary_with(pnl: str, trades: int, hit_rate: str | None) -> Summary:
    s = summarize(result())
    return msgspec.structs.replace(s, pnl=D(pnl), trades=trades, hit_rate=None if hit_rate is None else D(hit_rate))


SWEEP = [({"edge": "0.01", "size": "5"}, summary_with("-1.5", 3, "0.3333")),
         ({"edge": "0.02", "size": "5"}, summary_with("12.25", 8, "0.75")),
         ({"edge": "0.03", "size": "5"}, summary_with("0", 0, None))]


def test_sweep_table_puts_the_best_pnl_first() -> None:
    lines = sweep_table(SWEEP).splitlines()
    assert lines[0].split() == ["edge", "size", "trades", "pnl", "fees", "max_drawdown", "hit_rate"]
    assert [line.split()[0] for line in lines[1:]] == ["0.02", "0.03", "0.01"]
    assert lines[1].split()[2:] == ["8", "12.2500", "1.2000", "6.0000", "75.00%"]
    assert lines[2].split()[-1] == "-"
    assert len({len(line) for line in lines[1:]}) == 1  # columns aligned


def test_write_sweep_writes_exact_csv_and_a_self_contained_page(tmp_path: Path) -> None:
    files = write_sweep(SWEEP, tmp_path)
    rows = list(csv.reader(io.StringIO(files.csv.read_text())))
    assert rows == [["edge", "size", "trades", "pnl", "fees", "max_drawdown", "hit_rate"],
                    ["0.02", "5", "8", "12.25", "1.20", "6", "0.75"],
                    ["0.03", "5", "0", "0", "1.20", "6", ""],
                    ["0.01", "5", "3", "-1.5", "1.20", "6", "0.3333"]]
    page = files.html.read_text()
    assert page.index("12.2500") < page.index("-1.5000") and "http" not in page


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_writes_nothing_unless_the_stream_is_a_terminal() -> None:
    stream = io.StringIO()
    bar = Progress(100, stream)
    bar.update(50)
    bar.update(100)
    bar.close()
    assert stream.getvalue() == ""


def test_progress_draws_a_throttled_bar_that_ends_at_100_percent() -> None:
    stream, clock = Terminal(), Clock()
    bar = Progress(200, stream, label="replay", clock=clock)
    clock.now += 1.0
    bar.update(50)
    assert stream.getvalue() == "\rreplay [#######.......................]  25% 50/200 50/s"
    clock.now += 0.05
    bar.update(60)  # within a tenth of a second of the last frame: not drawn
    assert stream.getvalue().count("\r") == 1
    clock.now += 0.95
    bar.update(200)
    bar.close()
    frames = stream.getvalue().split("\r")
    assert len(frames) == 4 and stream.getvalue().endswith("\n")
    assert frames[-1] == "replay [##############################] 100% 200/200 100/s\n"


def test_progress_can_be_forced_onto_any_stream() -> None:
    stream = io.StringIO()
    bar = Progress(0, stream, label="sweep", force=True, clock=Clock())
    bar.update(7)
    bar.close()
    assert stream.getvalue().split("\r")[-1].startswith("sweep 7 ")


@pytest.mark.parametrize("done", [199, 0])
def test_progress_shows_100_percent_only_when_done(done: int) -> None:
    stream = Terminal()
    bar = Progress(200, stream, clock=Clock())
    bar.update(done)
    bar.close()
    assert "100%" not in stream.getvalue()
