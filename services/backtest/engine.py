"""Replay in one process: a recording fed in order into the same strategy class the mesh runs, on the
recording's own clock, with the executor replaced by a recorder of signals and the paper fill model.

Orders are rounded to the market's rules as the executor does, then matched by ``PaperBook`` (book walk,
queue position, taker fees, maker rebates estimated by the venue's rule); fills go to the shared ``Ledger`` (the
PnL paper trading and analytics compute) and back to the strategy, as ``executions`` would. No risk checks: a backtest shows what the strategy asks
for. Every id and time comes from the recording, so the same data and parameters give the same bytes.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from .. import messages as m
from ..executor.desk import matches
from ..ledger import Ledger, marked
from ..recording import read
from ..strategies.loading import StrategyError, load, make
from ..venues import base
from ..venues.base import ONE, ZERO, OrderRequest, VenueFill
from ..venues.paper import PaperBook, paper_order_id
from .result import BacktestResult, MarketInfo, Point, Refusal


class BacktestError(Exception):
    """Bad strategy or parameters; the message says what is known."""


def make_strategy(spec: str | type, params: dict[str, Any]) -> Any:
    """A strategy by spec (a shipped name, ``file.py:Class``, ``package.module:Class``, an entry point; see
    strategies/loading.py) or class, with parameters given as text (``k=v`` from a command line) or values."""
    try:
        return make(spec if isinstance(spec, type) else load(spec), params)
    except StrategyError as exc:
        raise BacktestError(str(exc)) from None


class Replay:
    def __init__(self, strategy: str | type, params: dict[str, Any] | None = None, sample_ms: int = 1000) -> None:
        self.strategy = make_strategy(strategy, params or {})
        self.name = self.strategy.name
        self.params = {k: str(v) for k, v in msgspec.structs.asdict(self.strategy.params).items()}
        self.sample_ns = sample_ms * 1_000_000
        self.clock_ns = 0
        self.paper = PaperBook(clock_ms=lambda: self.clock_ns // 1_000_000)
        self.ledger = Ledger()
        self.by_signal: dict[str, Ledger] = {}
        self.orders: dict[str, m.Order] = {}  # venue order id -> the order (ours)
        self.last_trade: dict[str, Decimal] = {}
        self.markets: dict[str, MarketInfo] = {}
        # market -> its tokens: each market's complete set. A neg-risk event's YES tokens are one too, but nothing in
        # a recording says how many markets an event has (a member that closed early, or that the scanner skipped,
        # is simply absent), so the backtest never knows it has every market of one: those sets are not counted,
        # and their YES shares are marked to the books as any others.
        self.outcomes: dict[str, list[str]] = {}
        self.signals: list[m.Signal] = []
        self.fills: list[m.Fill] = []
        self.refusals: list[Refusal] = []
        self.equity: list[Point] = []
        self.cancels = 0
        self.messages = 0
        self.first_ns = 0
        self.next_sample_ns = 0

    # ------------------------------------------------------------ the loop

    def run(self, messages: Iterable[m.Message], data: str = "",
            progress: Callable[[int], None] | None = None) -> BacktestResult:
        for msg in messages:
            self.on_message(msg)
            if progress is not None and self.messages % 10_000 == 0:
                progress(self.messages)
        if progress is not None:
            progress(self.messages)
        return self.result(data)

    def on_message(self, msg: m.Message) -> None:
        self.messages += 1
        self.clock_ns = max(self.clock_ns, msg.ts_ns)
        self.first_ns = self.first_ns or msg.ts_ns
        match msg:
            case m.MarketNew():
                self.markets[msg.market] = MarketInfo(market=msg.market, question=msg.question,
                                                      outcomes={o.token_id: o.name for o in msg.outcomes})
                self.outcomes[msg.market] = [o.token_id for o in msg.outcomes]
            case m.LastTrade():
                self.last_trade[msg.token_id] = msg.price
            case m.MarketResolved():
                for ledger in (self.ledger, *self.by_signal.values()):
                    ledger.settle(msg.market, msg.winning_token_id)
                self._drop_orders(msg.market)
        self._venue_events(self.paper.observe(msg))
        self._act(self.strategy.on_message(msg))
        if self.clock_ns >= self.next_sample_ns:
            self._sample()

    def _act(self, outputs: list[m.Message]) -> None:
        for out in outputs:
            if isinstance(out, m.Signal):
                self._signal(out)
            elif isinstance(out, m.Cancel):
                self._cancel(out)

    def _signal(self, signal: m.Signal) -> None:
        signal = msgspec.structs.replace(signal, id=f"s{len(self.signals) + 1:07d}", ts_ns=self.clock_ns)
        self.signals.append(signal)
        for i, leg in enumerate(signal.legs):
            order = m.Order(id=f"{signal.id}-{i}", ts_ns=self.clock_ns, trace_id=signal.trace_id,
                            signal_id=signal.id, leg=i, source=signal.source, token_id=leg.token_id,
                            market=leg.market, side=leg.side, size=leg.size, limit_price=leg.limit_price,
                            order_type=leg.order_type, post_only=leg.post_only, expires_s=leg.expires_s)
            self._place(order)

    def _place(self, order: m.Order) -> None:
        """As the executor sends it: rounded to the market's rules, refused when it cannot be sent."""
        rules = self.paper.rules.get(order.token_id)
        if rules is None:
            return self._refuse(order, base.UNKNOWN_MARKET, f"no market lists token {order.token_id}")
        price = base.round_price(order.side, order.limit_price, rules.tick)
        size = base.round_size(order.size)
        if not rules.tick <= price <= ONE - rules.tick:
            return self._refuse(order, base.PRICE_RANGE, f"price {order.limit_price} rounds to {price}")
        if size <= 0:
            return self._refuse(order, base.MIN_SIZE, f"size {order.size} rounds to {size}")
        request = OrderRequest(client_id=order.id, token_id=order.token_id, market=order.market or rules.market,
                               side=order.side, price=price, size=size, order_type=order.order_type, rules=rules,
                               post_only=order.post_only, expires_s=order.expires_s,
                               created_ms=self.clock_ns // 1_000_000)
        venue_id = paper_order_id(order.id)
        self.orders[venue_id] = order
        placed, fills = self.paper.place(request, venue_id)
        if placed.code:
            del self.orders[venue_id]
            return self._refuse(order, placed.code, placed.message)
        self._venue_events(fills)

    def _refuse(self, order: m.Order, code: str, message: str) -> None:
        self.refusals.append(Refusal(ts_ns=self.clock_ns, signal_id=order.signal_id, token_id=order.token_id,
                                     code=code, message=message))

    def _cancel(self, cancel: m.Cancel) -> None:
        self.cancels += 1
        for venue_id in [v for v in self.paper.resting if matches(cancel, self.orders[v])]:
            self.paper.cancel(venue_id)

    def _drop_orders(self, market: str) -> None:
        """A resolved market's resting orders are gone at the venue."""
        for venue_id in [v for v in self.paper.resting if self.orders[v].market == market]:
            self.paper.cancel(venue_id)

    def _venue_events(self, events: list[base.VenueEvent]) -> None:
        fills = [self._fill(e) for e in events if isinstance(e, VenueFill) and e.venue_order_id in self.orders]
        if fills:
            self._sample()
            for fill in fills:  # the strategy hears its fills, as it would on ``executions``
                self._act(self.strategy.on_message(fill))

    def _fill(self, f: VenueFill) -> m.Fill:
        order = self.orders[f.venue_order_id]
        fill = m.Fill(id=f.trade_id, ts_ns=self.clock_ns, trace_id=order.trace_id, order_id=order.id,
                      venue_order_id=f.venue_order_id, trade_id=f.trade_id, token_id=f.token_id, market=f.market,
                      side=f.side, price=f.price, size=f.size, fee=f.fee if f.fee is not None else ZERO,
                      liquidity=f.liquidity, status=f.status, signal_id=order.signal_id, source=order.source,
                      venue_ts_ms=f.ts_ms, rebate=f.rebate if f.rebate is not None else ZERO)
        self.fills.append(fill)
        self.ledger.apply(fill)
        self.by_signal.setdefault(order.signal_id, Ledger()).apply(fill)
        return fill

    # ------------------------------------------------------------ the account

    def marks(self, tokens: Iterable[str]) -> dict[str, Decimal]:
        """The mid where both sides are quoted, else the last trade; a token with neither has no mark."""
        out = {}
        for token in tokens:
            mid = self.paper.books.mid(token)
            if mid is not None or token in self.last_trade:
                out[token] = mid if mid is not None else self.last_trade[token]
        return out

    def _sample(self) -> None:
        held = [h for h in self.ledger.holdings.values() if h.size]
        figures = marked(held, self.marks(h.token_id for h in held), self.ledger.market_sets(self.outcomes)).values()
        realized = self.ledger.realized()
        unrealized = sum((x.unrealized for x in figures), ZERO)
        rebates, _ = self.ledger.rebates.total()
        resting = sum((r.remaining * r.order.price for r in self.paper.resting.values()
                       if r.order.side == "BUY"), ZERO)
        point = Point(ts_ns=self.clock_ns, equity=realized + unrealized + rebates, realized=realized,
                      unrealized=unrealized, exposure=sum((x.exposed for x in figures), ZERO) + resting,
                      fees=sum((h.fees for h in self.ledger.holdings.values()), ZERO), rebates=rebates)
        if self.equity and self.equity[-1].ts_ns == point.ts_ns:
            self.equity[-1] = point
        else:
            self.equity.append(point)
        self.next_sample_ns = self.clock_ns - self.clock_ns % self.sample_ns + self.sample_ns

    def result(self, data: str = "") -> BacktestResult:
        self._sample()
        tokens = {h.token_id for ledger in (self.ledger, *self.by_signal.values())
                  for h in ledger.holdings.values() if h.size}
        mark = self.marks(sorted(tokens))
        signal_pnl = {sid: ledger.realized() + ledger.unrealized(mark, ledger.market_sets(self.outcomes))
                      + ledger.rebates.total()[0] for sid, ledger in self.by_signal.items()}
        return BacktestResult(
            strategy=self.name, params=self.params, data=data, started_ns=self.first_ns, ended_ns=self.clock_ns,
            messages=self.messages, signals=self.signals, cancels=self.cancels, refusals=self.refusals,
            fills=self.fills, equity=self.equity,
            positions=sorted(self.ledger.positions(), key=lambda p: (p.market, p.token_id)),
            marks=dict(sorted(mark.items())), signal_pnl=dict(sorted(signal_pnl.items())), markets=self.markets)


def signal_key(signal: m.Signal) -> tuple:
    """What a signal asks for, whoever ran the strategy: its cause, source, legs and reasoning (not its id or the
    time it left)."""
    return (signal.trace_id, signal.cause_id, signal.source, tuple(signal.legs), signal.rationale)


def backtest(data: str | Path, strategy: str | type, params: dict[str, Any] | None = None, sample_ms: int = 1000,
             progress: Callable[[int], None] | None = None) -> BacktestResult:
    """Replay a recording (folder or segment) into one strategy; the result, ready for a report."""
    return Replay(strategy, params, sample_ms).run(read(data), str(data), progress)
