"""Messages to table rows (tuples in the column order of ``schema.TABLES``): pure, no I/O.

This runs once per bus message, so each kind of message has its own function, found by its type, and
builds its tuples directly (``benchmarks/analytics_ingest.py`` measures the whole path).
"""
from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, Literal

from .. import messages as m

Row = tuple[str, tuple]  # (table, values)
TopsMode = Literal["changes", "all", "off"]
Top = tuple[Decimal | None, Decimal | None]


class Recorder:
    """Turns each bus message into the rows that record it; remembers each token's last top to skip repeats."""

    def __init__(self, tops: TopsMode = "changes") -> None:
        self.tops_mode = tops
        self.last_top: dict[str, Top] = {}
        self.waiting: set[str] = set()  # signals recorded while they wait for approval
        self._by_type: dict[type, Callable[[m.Message], list[Row]]] = {
            **ROWS,
            m.BookSnapshot: self._snapshot_tops,
            m.BookDelta: self._delta_tops,
        }

    def rows(self, msg: m.Message) -> list[Row]:
        """The rows recording ``msg`` (none for heartbeats, or book tops when they are off)."""
        fn = self._by_type.get(type(msg))
        out = fn(msg) if fn is not None else []
        if isinstance(msg, m.SignalPending):  # the signal is recorded now, and not again with its final verdict
            self.waiting.add(msg.signal_id)
        elif isinstance(msg, m.SignalAccepted | m.SignalRejected) and msg.signal_id in self.waiting:
            self.waiting.discard(msg.signal_id)
            out = [row for row in out if row[0] not in ("signals", "signal_legs")]
        return out

    def _snapshot_tops(self, msg: m.BookSnapshot) -> list[Row]:
        if self.tops_mode == "off":
            return []
        out = []
        for book in msg.books:
            bid = book.bids[0] if book.bids else None
            ask = book.asks[0] if book.asks else None
            top = (bid.price if bid else None, ask.price if ask else None)
            self.last_top[book.token_id] = top  # a snapshot is a fresh start: recorded even if the top is as it was
            out.append(("book_tops", (msg.ts_ns, msg.id, "BookSnapshot", book.token_id, book.market, top[0],
                                      bid.size if bid else None, top[1], ask.size if ask else None)))
        return out

    def _delta_tops(self, msg: m.BookDelta) -> list[Row]:
        if self.tops_mode == "off":
            return []
        latest: dict[str, m.LevelChange] = {}
        for change in msg.changes:  # the venue states the top after each change: the last one per token holds
            if change.best_bid is not None or change.best_ask is not None:
                latest[change.token_id] = change
        out = []
        skip_repeats = self.tops_mode == "changes"
        for token, change in latest.items():
            top = (change.best_bid, change.best_ask)
            if skip_repeats and self.last_top.get(token) == top:
                continue
            self.last_top[token] = top
            out.append(("book_tops", (msg.ts_ns, msg.id, "BookDelta", token, change.market, top[0], None, top[1],
                                      None)))
        return out


# ---------------------------------------------------------------- market data and lifecycle


def trade_rows(msg: m.LastTrade) -> list[Row]:
    return [("trades", (msg.ts_ns, msg.id, msg.token_id, msg.market, msg.side, msg.price, msg.size,
                        msg.fee_rate_bps, msg.venue_ts_ms))]


def market_rows(msg: m.MarketNew) -> list[Row]:
    return [("markets", (msg.ts_ns, msg.id, msg.market, msg.question, msg.slug, msg.tick_size, msg.min_size,
                         msg.fee_rate, msg.neg_risk, msg.neg_risk_market_id, msg.end_ts_ms, msg.accepting_orders,
                         msg.fee_exponent, msg.rebate_rate)),
            *(("outcomes", (msg.ts_ns, msg.market, i, o.token_id, o.name)) for i, o in enumerate(msg.outcomes))]


def _event(msg: m.Message, market: str, token: str = "", winner: str = "", outcome: str = "",
           old_tick: Decimal | None = None, new_tick: Decimal | None = None, stale: bool | None = None,
           reason: str = "") -> Row:
    return ("market_events", (msg.ts_ns, msg.id, msg.trace_id, type(msg).__name__, market, token, winner, outcome,
                              old_tick, new_tick, stale, reason))


def tick_rows(msg: m.TickSizeChange) -> list[Row]:
    return [_event(msg, msg.market, token=msg.token_id, old_tick=msg.old_tick_size, new_tick=msg.new_tick_size)]


def halted_rows(msg: m.MarketHalted) -> list[Row]:
    return [_event(msg, msg.market, reason=msg.reason)]


def resolved_rows(msg: m.MarketResolved) -> list[Row]:
    """The scanner's word (on ``events``) is a market event; the executor's (numbered, on ``executions``) is the
    settlement of the shares it held: an execution, with the winning token in ``token_id``."""
    if not msg.seq:
        return [_event(msg, msg.market, winner=msg.winning_token_id, outcome=msg.winning_outcome)]
    return [("executions", (msg.id, msg.ts_ns, msg.trace_id, "MarketResolved", "", "", "", "", "", None, "", "", "",
                            msg.winning_token_id, msg.market, "", None, None, None, "", None, None,
                            msg.winning_outcome, None, *_numbering(msg)))]


def stale_rows(msg: m.MarketStale) -> list[Row]:
    return [_event(msg, market, stale=msg.stale, reason=msg.reason) for market in msg.markets]


# ---------------------------------------------------------------- decisions


def signal_rows(signal_id: str, signal: m.Signal) -> list[Row]:
    return [("signals", (signal_id, signal.ts_ns, signal.trace_id, signal.source, signal.cause_id,
                         signal.cause_ts_ns, signal.rationale, len(signal.legs))),
            *(("signal_legs", (signal_id, i, leg.token_id, leg.market, leg.side, leg.size, leg.limit_price,
                               leg.order_type)) for i, leg in enumerate(signal.legs))]


def accepted_rows(msg: m.SignalAccepted) -> list[Row]:
    out = signal_rows(msg.signal_id, msg.signal) if msg.signal is not None else []
    out.append(("verdicts", (msg.id, msg.ts_ns, msg.trace_id, msg.signal_id, msg.source, True, len(msg.orders),
                             *_numbering(msg))))
    out += [("orders", (o.id, o.ts_ns, o.trace_id, o.signal_id, o.leg, o.source, o.token_id, o.market, o.side,
                        o.size, o.limit_price, o.order_type, o.post_only, o.expires_s)) for o in msg.orders]
    return out


def pending_rows(msg: m.SignalPending) -> list[Row]:
    """A verdict still open (accepted NULL), and the signal it is about."""
    out = signal_rows(msg.signal_id, msg.signal) if msg.signal is not None else []
    out.append(("verdicts", (msg.id, msg.ts_ns, msg.trace_id, msg.signal_id, msg.source, None, 0, *_numbering(msg))))
    return out


def rejected_rows(msg: m.SignalRejected) -> list[Row]:
    out = signal_rows(msg.signal_id, msg.signal) if msg.signal is not None else []
    out.append(("verdicts", (msg.id, msg.ts_ns, msg.trace_id, msg.signal_id, msg.source, False, 0, *_numbering(msg))))
    out += [("verdict_reasons", (msg.id, msg.signal_id, i, r.code, r.message, r.leg, r.limit, r.value, r.max_size))
            for i, r in enumerate(msg.reasons)]
    return out


def approval_rows(msg: m.StrategyApproved) -> list[Row]:
    """An operator's approval of an agent-authored strategy, as risk took it: the code's hash and the budget."""
    budget = ",".join(f"{k}={v}" for k, v in sorted(msg.budget.items()))
    return [("strategy_approvals", (msg.id, msg.ts_ns, msg.trace_id, msg.name, msg.sha256, msg.class_name, budget,
                                    ",".join(msg.markets), msg.by, msg.approved_ts_ns, *_numbering(msg)))]


# ---------------------------------------------------------------- executions
# executions columns: id, ts_ns, trace_id, kind, order_id, venue_order_id, signal_id, source, status,
# submitted_ts_ns, code, message, trade_id, token_id, market, side, price, size, fee, liquidity, venue_ts_ms,
# remaining, reason, rebate, seq, stream


def _numbering(msg: Any) -> tuple[int | None, str]:
    """The number its publisher (the executor, risk) gave the record (seq, stream); NULL seq when it has none."""
    return msg.seq or None, msg.stream


def ack_rows(msg: m.OrderAck) -> list[Row]:
    return [("executions", (msg.id, msg.ts_ns, msg.trace_id, "OrderAck", msg.order_id, msg.venue_order_id,
                            msg.signal_id, msg.source, msg.status, msg.submitted_ts_ns or None, "", "", "", "", "",
                            "", None, None, None, "", None, None, "", None, *_numbering(msg)))]


def order_rejected_rows(msg: m.OrderRejected) -> list[Row]:
    return [("executions", (msg.id, msg.ts_ns, msg.trace_id, "OrderRejected", msg.order_id, "", msg.signal_id,
                            msg.source, "", None, msg.code, msg.message, "", "", "", "", None, None, None, "", None,
                            None, "", None, *_numbering(msg)))]


def fill_rows(msg: m.Fill) -> list[Row]:
    return [("executions", (msg.id, msg.ts_ns, msg.trace_id, "Fill", msg.order_id, msg.venue_order_id,
                            msg.signal_id, msg.source, msg.status, None, "", "", msg.trade_id, msg.token_id,
                            msg.market, msg.side, msg.price, msg.size, msg.fee, msg.liquidity, msg.venue_ts_ms, None,
                            "", msg.rebate, *_numbering(msg)))]


def fill_status_rows(msg: m.FillStatus) -> list[Row]:
    """A fill's trade settled or failed: a row of the fill with its new status (the ``fills`` view keeps the latest)."""
    f = msg.fill
    return [("executions", (msg.id, msg.ts_ns, msg.trace_id, "FillStatus", f.order_id, f.venue_order_id, f.signal_id,
                            f.source, msg.status, None, "", "", f.trade_id, f.token_id, f.market, f.side, f.price,
                            f.size, f.fee, f.liquidity, f.venue_ts_ms, None, "", f.rebate, *_numbering(msg)))]


def canceled_rows(msg: m.OrderCanceled) -> list[Row]:
    return [("executions", (msg.id, msg.ts_ns, msg.trace_id, "OrderCanceled", msg.order_id, msg.venue_order_id,
                            msg.signal_id, msg.source, "", None, "", "", "", "", "", "", None, None, None, "", None,
                            msg.remaining, msg.reason, None, *_numbering(msg)))]


def residual_rows(msg: m.ResidualExposure) -> list[Row]:
    return [("executions", (msg.id, msg.ts_ns, msg.trace_id, "ResidualExposure", "", "", msg.signal_id, msg.source,
                            "", None, "", "", "", "", "", "", None, None, None, "", None, None, msg.reason, None,
                            *_numbering(msg))),
            *(("exposures", (msg.id, msg.ts_ns, msg.signal_id, msg.source, e.token_id, e.market, e.side, e.size,
                             e.avg_price)) for e in msg.exposure)]


def rebate_rows(msg: m.Rebate) -> list[Row]:
    return [("rebates", (msg.ts_ns, msg.id, msg.trace_id, msg.day, msg.market, msg.maker, msg.amount, msg.final,
                         *_numbering(msg)))]


def venue_status_rows(msg: m.VenueStatus) -> list[Row]:
    """What the venue takes, as the executor saw it change: the codes, and their messages, in one row."""
    return [("executions", (msg.id, msg.ts_ns, msg.trace_id, "VenueStatus", "", "", "", "", "", None,
                            ",".join(c.code for c in msg.conditions), "; ".join(c.message for c in msg.conditions),
                            "", "", "", "", None, None, None, "", None, None, "", None, None, ""))]


ROWS: dict[type, Callable[[Any], list[Row]]] = {
    m.LastTrade: trade_rows, m.MarketNew: market_rows, m.TickSizeChange: tick_rows, m.MarketHalted: halted_rows,
    m.MarketResolved: resolved_rows, m.MarketStale: stale_rows, m.SignalAccepted: accepted_rows,
    m.SignalRejected: rejected_rows, m.SignalPending: pending_rows, m.OrderAck: ack_rows,
    m.OrderRejected: order_rejected_rows, m.Fill: fill_rows, m.FillStatus: fill_status_rows,
    m.OrderCanceled: canceled_rows, m.ResidualExposure: residual_rows, m.Rebate: rebate_rows,
    m.VenueStatus: venue_status_rows, m.StrategyApproved: approval_rows,
}
