"""What a backtest did, for a reader: the figures (exact Decimals), the trades, an equity and drawdown plot, and a
self-contained HTML page; a parameter sweep's table; a progress bar for long replays.

Every file is a function of the result alone, so the same result gives the same bytes.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple, TextIO

import msgspec

from ..ledger import Ledger, marked
from .result import BacktestResult, encode

ZERO = Decimal(0)
RATIO = Decimal("0.0001")  # hit rate and drawdown fraction: 4 dp
MICRO = Decimal("0.000001")  # an average of money: USDC's own precision
TRADES_SHOWN = 1000  # trades listed in report.html (trades.csv has them all)


class MarketRow(msgspec.Struct, frozen=True, kw_only=True):
    market: str
    question: str
    trades: int
    volume: Decimal
    fees: Decimal
    realized: Decimal  # after fees, settlements included
    unrealized: Decimal
    pnl: Decimal  # realized + unrealized + rebates
    rebates: Decimal = ZERO  # maker rebates, estimated (the venue's rule; see result.Point)


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    strategy: str
    params: dict[str, str]
    data: str
    started: str  # ISO 8601, UTC
    ended: str
    duration_s: Decimal
    messages: int
    signals: int
    refused: int  # orders the executor (or the paper venue behind it) refused
    signals_refused: int  # signals risk refused
    risk_refusals: dict[str, int]  # risk's reason code -> signals refused for it (one may have several)
    executor_refusals: dict[str, int]  # the executor's (or venue's) code -> orders refused with it
    cancels: int
    trades: int  # fills
    volume: Decimal  # sum of size * price
    fees: Decimal
    rebates: Decimal  # maker rebates, estimated (the venue's rule; see result.Point)
    realized: Decimal
    unrealized: Decimal
    pnl: Decimal  # realized + unrealized + rebates at the end: the last equity point
    max_drawdown: Decimal  # the largest fall of equity from a running peak that starts at 0
    max_drawdown_pct: Decimal | None  # that fall as a fraction of its peak; None when the peak was <= 0
    max_exposure: Decimal
    avg_exposure: Decimal
    signals_filled: int
    winners: int  # filled signals whose fills made money by the end
    losers: int
    hit_rate: Decimal | None  # winners / signals filled; None when no signal filled
    per_market: list[MarketRow]


class ReportFiles(NamedTuple):
    summary: Path
    trades: Path
    equity: Path
    html: Path


class SweepFiles(NamedTuple):
    csv: Path
    html: Path


# ---------------------------------------------------------------- figures


def iso(ts_ns: int) -> str:
    stamp = datetime.fromtimestamp(ts_ns // 1_000_000_000, UTC).replace(microsecond=ts_ns % 1_000_000_000 // 1000)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def summarize(result: BacktestResult) -> Summary:
    """The run's figures, exact.

    ``avg_exposure`` is time-weighted: each equity point's exposure holds until the next point (the plain mean
    when the points span no time), to 6 dp. Totals come from the last equity point, the rows from the final
    positions and marks, with trades, volume and fees counted from the fills.
    """
    rows = per_market(result)
    executor = by_code(result, "executor")
    last = result.equity[-1] if result.equity else None
    realized = last.realized if last else sum((r.realized for r in rows), ZERO)
    unrealized = last.unrealized if last else sum((r.unrealized for r in rows), ZERO)
    rebates = last.rebates if last else sum((r.rebates for r in rows), ZERO)
    peak = drawdown = ZERO
    drawdown_peak = ZERO
    for point in result.equity:
        peak = max(peak, point.equity)
        if peak - point.equity > drawdown:
            drawdown, drawdown_peak = peak - point.equity, peak
    filled = {f.signal_id for f in result.fills if f.signal_id}
    made = [result.signal_pnl.get(sid, ZERO) for sid in sorted(filled)]
    winners, losers = sum(1 for x in made if x > 0), sum(1 for x in made if x < 0)
    return Summary(
        strategy=result.strategy, params=result.params, data=result.data,
        started=iso(result.started_ns), ended=iso(result.ended_ns),
        duration_s=Decimal(result.ended_ns - result.started_ns) / 1_000_000_000,
        messages=result.messages, signals=len(result.signals), refused=sum(executor.values()),
        signals_refused=len({r.signal_id for r in result.refusals if r.by == "risk"}),
        risk_refusals=by_code(result, "risk"), executor_refusals=executor,
        cancels=result.cancels, trades=len(result.fills),
        volume=sum((f.size * f.price for f in result.fills), ZERO),
        fees=last.fees if last else sum((r.fees for r in rows), ZERO), rebates=rebates,
        realized=realized, unrealized=unrealized, pnl=last.equity if last else realized + unrealized + rebates,
        max_drawdown=drawdown,
        max_drawdown_pct=(drawdown / drawdown_peak).quantize(RATIO) if drawdown_peak > 0 else None,
        max_exposure=max((p.exposure for p in result.equity), default=ZERO),
        avg_exposure=_time_weighted_exposure(result),
        signals_filled=len(filled), winners=winners, losers=losers,
        hit_rate=(Decimal(winners) / len(filled)).quantize(RATIO) if filled else None,
        per_market=rows)


def by_code(result: BacktestResult, by: str) -> dict[str, int]:
    """How often each code refused, by risk (signals: a signal counts once per code) or by the executor (orders)."""
    if by == "risk":
        codes = Counter(code for _, code in {(r.signal_id, r.code) for r in result.refusals if r.by == by})
    else:
        codes = Counter(r.code for r in result.refusals if r.by == by)
    return dict(sorted(codes.items()))


def _time_weighted_exposure(result: BacktestResult) -> Decimal:
    points = result.equity
    if not points:
        return ZERO
    span = points[-1].ts_ns - points[0].ts_ns
    if span <= 0:
        return (sum((p.exposure for p in points), ZERO) / len(points)).quantize(MICRO)
    held = sum((a.exposure * (b.ts_ns - a.ts_ns) for a, b in zip(points, points[1:])), ZERO)
    return (held / span).quantize(MICRO)


def per_market(result: BacktestResult) -> list[MarketRow]:
    """One row per market traded or held, by market id; a complete set held is worth the 1 it pays."""
    # A position's avg_price is cost / size, rounded; the cost replayed from the fills is exact. Only a
    # resolution moves a position away from the replay, and a resolved position holds no shares.
    replay = Ledger()
    trades = Counter(f.market for f in result.fills)
    volume, fees, realized, unrealized, rebates = (defaultdict(Decimal) for _ in range(5))
    for fill in result.fills:
        replay.apply(fill)
        volume[fill.market] += fill.size * fill.price
        fees[fill.market] += fill.fee
    for credit in replay.rebates.credits():
        rebates[credit.market] += credit.amount
    final = Ledger()
    final.load(result.positions)
    for held in final.holdings.values():
        realized[held.market] += held.realized
        replayed = replay.holdings.get(held.token_id)
        if held.size and replayed is not None and replayed.size == held.size:
            held.cost = replayed.cost
    # Marked as the replay marked them: complete sets at 1, the rest to the final marks.
    sets = final.market_sets({k: list(info.outcomes) for k, info in result.markets.items()})
    for token, figures in marked(final.holdings.values(), result.marks, sets).items():
        unrealized[final.holdings[token].market] += figures.unrealized
    return [MarketRow(market=k, question=result.markets[k].question if k in result.markets else "",
                      trades=trades[k], volume=volume[k], fees=fees[k], realized=realized[k],
                      unrealized=unrealized[k], pnl=realized[k] + unrealized[k] + rebates[k], rebates=rebates[k])
            for k in sorted(trades.keys() | realized.keys())]


# ---------------------------------------------------------------- files


def run_folder(state_dir: Path, strategy: str) -> Path:
    """Where a run's report goes unless told: ``<state_dir>/backtests/<UTC time>-<strategy>``."""
    return state_dir / "backtests" / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{strategy}"


def save(result: BacktestResult, out_dir: str | Path) -> tuple[Summary, ReportFiles]:
    """The whole result (``result.json``: every signal, fill and equity point) and its report, in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_bytes(encode(result))
    summary = summarize(result)
    return summary, _write(result, summary, out)


def write_report(result: BacktestResult, out_dir: str | Path) -> ReportFiles:
    """summary.json, trades.csv, equity.png and report.html in ``out_dir`` (made if missing)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return _write(result, summarize(result), out)


def _write(result: BacktestResult, summary: Summary, out: Path) -> ReportFiles:
    files = ReportFiles(out / "summary.json", out / "trades.csv", out / "equity.png", out / "report.html")
    files.summary.write_bytes(msgspec.json.format(msgspec.json.encode(summary), indent=2) + b"\n")
    files.trades.write_text(_trades_csv(result), encoding="utf-8", newline="")
    png = equity_png(result)
    files.equity.write_bytes(png)
    files.html.write_text(_report_html(result, summary, png), encoding="utf-8")
    return files


def _outcome(result: BacktestResult, market: str, token_id: str) -> str:
    info = result.markets.get(market)
    return info.outcomes.get(token_id, "") if info else ""


def _trades_csv(result: BacktestResult) -> str:
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["time", "ts_ns", "signal_id", "order_id", "trade_id", "market", "token_id", "outcome", "side",
                  "price", "size", "notional", "fee", "liquidity", "rebate_estimated"])
    for f in sorted(result.fills, key=lambda f: f.ts_ns):  # stable: fills at one time keep their order
        out.writerow([iso(f.ts_ns), f.ts_ns, f.signal_id, f.order_id, f.trade_id, f.market, f.token_id,
                      _outcome(result, f.market, f.token_id), f.side, f.price, f.size, f.size * f.price, f.fee,
                      f.liquidity, f.rebate])
    return buf.getvalue()


def equity_png(result: BacktestResult) -> bytes:
    """Equity (and realized), drawdown and exposure over the replay's clock, stacked; no pyplot, no global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    top, middle, bottom = fig.subplots(3, 1, sharex=True, height_ratios=[3, 2, 2])
    fig.suptitle(f"Backtest: {result.strategy}")
    times = [datetime.fromtimestamp(p.ts_ns / 1e9, UTC) for p in result.equity]
    equity = [float(p.equity) for p in result.equity]
    peak, drawdown = 0.0, []
    for value in equity:
        peak = max(peak, value)
        drawdown.append(value - peak)
    top.plot(times, equity, color="tab:blue", label="equity (realized + unrealized)")
    top.plot(times, [float(p.realized) for p in result.equity], color="tab:green", linewidth=0.8, label="realized")
    top.axhline(0, color="grey", linewidth=0.5)
    top.set(title="Equity", ylabel="PnL (USDC)")
    top.legend(loc="upper left")
    middle.fill_between(times, drawdown, 0, color="tab:red", alpha=0.4, linewidth=0)
    middle.set(title="Drawdown from peak", ylabel="USDC")
    bottom.plot(times, [float(p.exposure) for p in result.equity], color="tab:orange", drawstyle="steps-post")
    bottom.set(title="Exposure (shares in no complete set at cost + resting buys)", ylabel="USDC", xlabel="time (UTC)")
    if times:
        locator = AutoDateLocator()
        bottom.xaxis.set_major_locator(locator)
        bottom.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    else:
        top.text(0.5, 0.5, "no equity points", transform=top.transAxes, ha="center")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version stamp: same result, same bytes
    return buf.getvalue()


# ---------------------------------------------------------------- HTML

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 8px}
th{background:#f0f0f0;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%}.note{color:#666}"""


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n{body}</body></html>\n")


class Exact(str):
    """A number shown as given (a fill's price, size, fee), right-aligned like the others."""


def _table(headers: list[str], rows: list[list[object]]) -> str:
    """Every cell escaped; numbers right-aligned."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(
        f'<td class="n">{html.escape(_cell(v))}</td>' if isinstance(v, (int, Decimal, Exact)) else
        f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>\n" for row in rows)
    return f"<table><tr>{head}</tr>\n{body}</table>\n"


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, Decimal):
        return f"{value:.4f}"  # computed money, to a hundredth of a cent; the files keep every digit
    return str(value)


def _codes(counts: dict[str, int]) -> str:
    return " (" + ", ".join(f"{code} {n}" for code, n in counts.items()) + ")" if counts else ""


def _ratio(value: Decimal | None) -> str:
    return "-" if value is None else Exact(f"{value * 100:.2f}%")


def _report_html(result: BacktestResult, s: Summary, png: bytes) -> str:
    figures = [
        ["strategy", s.strategy], ["parameters", ", ".join(f"{k}={v}" for k, v in s.params.items()) or "-"],
        ["data", s.data], ["from", s.started], ["to", s.ended], ["duration (s)", s.duration_s],
        ["messages", s.messages], ["signals", s.signals], ["signals refused by risk", f"{s.signals_refused}{_codes(s.risk_refusals)}"],
        ["orders refused by the executor", f"{s.refused}{_codes(s.executor_refusals)}"], ["cancels", s.cancels],
        ["trades", s.trades], ["volume", s.volume], ["fees paid", s.fees],
        ["maker rebates (estimated)", s.rebates], ["realized", s.realized],
        ["unrealized", s.unrealized], ["PnL", s.pnl], ["max drawdown", s.max_drawdown],
        ["max drawdown (of peak)", _ratio(s.max_drawdown_pct)], ["max exposure", s.max_exposure],
        ["average exposure (time-weighted)", s.avg_exposure], ["signals filled", s.signals_filled],
        ["winners / losers", f"{s.winners} / {s.losers}"], ["hit rate", _ratio(s.hit_rate)]]
    markets = [[r.market, r.question, r.trades, r.volume, r.fees, r.rebates, r.realized, r.unrealized, r.pnl]
               for r in s.per_market]
    fills = sorted(result.fills, key=lambda f: f.ts_ns)
    trades = [[iso(f.ts_ns), f.signal_id, f.market, _outcome(result, f.market, f.token_id) or f.token_id, f.side,
               Exact(f.price), Exact(f.size), Exact(f.fee), f.liquidity] for f in fills[:TRADES_SHOWN]]
    shown = (f'<p class="note">The first {TRADES_SHOWN} of {len(fills)} trades; trades.csv has them all.</p>\n'
             if len(fills) > TRADES_SHOWN else "")
    image = base64.b64encode(png).decode("ascii")
    body = (_table(["figure", "value"], figures)
            + f'<img alt="equity, drawdown and exposure over time" src="data:image/png;base64,{image}">\n'
            + "<h2>Per market</h2>\n"
            + _table(["market", "question", "trades", "volume", "fees", "rebates (est.)", "realized", "unrealized",
                      "PnL"], markets)
            + f"<h2>Trades ({len(fills)})</h2>\n" + shown
            + _table(["time (UTC)", "signal", "market", "outcome", "side", "price", "size", "fee", "liquidity"],
                     trades))
    return _page(f"Backtest: {result.strategy}", body)


# ---------------------------------------------------------------- parameter sweeps

SWEEP_FIGURES = ["trades", "pnl", "fees", "max_drawdown", "hit_rate"]
Sweep = list[tuple[dict[str, str], Summary]]


def _sweep(rows: Sweep, ratio: Callable[[Decimal | None], object]) -> tuple[list[str], list[list[object]]]:
    """The header and one row per parameter set, best PnL first; ``ratio`` shows the hit rate."""
    names = list(dict.fromkeys(k for params, _ in rows for k in params))
    ordered = sorted(rows, key=lambda row: -row[1].pnl)  # stable: ties keep the sweep's order
    return names + SWEEP_FIGURES, [[params.get(k, "") for k in names]
                                   + [s.trades, s.pnl, s.fees, s.max_drawdown, ratio(s.hit_rate)]
                                   for params, s in ordered]


def sweep_table(rows: Sweep) -> str:
    """A plain-text table of a parameter sweep, best PnL first."""
    header, table = _sweep(rows, _ratio)
    cells = [header] + [[_cell(v) for v in row] for row in table]
    params = len(header) - len(SWEEP_FIGURES)
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "".join("  ".join(c.ljust(w) if i < params else c.rjust(w) for i, (c, w) in
                             enumerate(zip(row, widths))).rstrip() + "\n" for row in cells)


def write_sweep(rows: Sweep, out_dir: str | Path) -> SweepFiles:
    """sweep.csv (exact values) and sweep.html in ``out_dir``, best PnL first."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = SweepFiles(out / "sweep.csv", out / "sweep.html")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header, table = _sweep(rows, lambda rate: "" if rate is None else rate)
    writer.writerow(header)
    writer.writerows(table)
    files.csv.write_text(buf.getvalue(), encoding="utf-8", newline="")
    header, table = _sweep(rows, _ratio)
    files.html.write_text(_page(f"Parameter sweep ({len(rows)} runs)", _table(header, table)), encoding="utf-8")
    return files


# ---------------------------------------------------------------- progress


class Progress:
    """A one-line bar for long runs: percent, count and rate, redrawn at most ten times a second.

    Silent unless ``stream`` is a terminal or ``force``; a ``total`` of 0 (unknown) shows the count and rate only.
    ``stream`` defaults to sys.stderr as it is when the bar is made; ``clock`` is injectable for tests.
    """

    EVERY_S = 0.1
    WIDTH = 30

    def __init__(self, total: int, stream: TextIO | None = None, label: str = "replay", force: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.stream = sys.stderr if stream is None else stream
        self.label = label
        self.clock = clock
        self.enabled = force or self.stream.isatty()
        self.started = clock()
        self.drawn_at = float("-inf")
        self.drawn_len = 0
        self.done = 0
        self.closed = False

    def update(self, done: int) -> None:
        self.done = done
        if not self.enabled or self.closed:
            return
        now = self.clock()
        if now - self.drawn_at >= self.EVERY_S or (self.total and done >= self.total):
            self._draw(now)

    def close(self) -> None:
        """Draw the last count and end the line."""
        if self.enabled and not self.closed:
            self._draw(self.clock())
            self.stream.write("\n")
            self.stream.flush()
        self.closed = True

    def _draw(self, now: float) -> None:
        elapsed = now - self.started
        rate = f"{self.done / elapsed:,.0f}/s" if elapsed > 0 else "-/s"
        if self.total > 0:
            share = min(self.done / self.total, 1.0)
            bar = "#" * int(share * self.WIDTH)
            line = (f"{self.label} [{bar.ljust(self.WIDTH, '.')}] {int(share * 100):3d}% "
                    f"{self.done:,}/{self.total:,} {rate}")
        else:
            line = f"{self.label} {self.done:,} {rate}"
        self.stream.write("\r" + line.ljust(self.drawn_len))
        self.stream.flush()
        self.drawn_at, self.drawn_len = now, len(line)
