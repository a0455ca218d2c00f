"""Replay in one process: a recording fed in order into a strategy, on the recording's own clock, through the
pieces the mesh runs, in the mesh's order: the strategy's signals go to ``RiskEngine`` under the limits it would
trade under (the operator's, and a strategy's budget as risk holds an approved one to it), with its checks and its
turning of an accepted signal into orders; accepted orders go to the executor's ``Desk`` (its order states,
``sendable``'s rounding to the market's rules, its refusals, the unwinding of a failed multi-leg signal) and on to
the paper fill model (``PaperBook``: book walk, queue position, taker
fees, maker rebates by the venue's rule). What the desk publishes on ``executions`` (fills, acks, rejections,
cancels, settlements) goes to risk and to the strategy, as in the mesh, and into the desk's ``Ledger`` (the PnL
paper trading and analytics compute). There is no other way to an order: a backtest shows what risk lets through,
and what it refuses, by code. Every id and time comes from the recording, so the same data and parameters give
the same bytes.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from .. import messages as m
from ..config import Config, service_options
from ..executor.desk import SIGNAL_FAILED, Desk, Refusal as Unsendable, Tracked, matches, sendable
from ..ledger import Ledger, marked
from ..recording import read
from ..risk.engine import RiskEngine
from ..risk.limits import Grant, RiskOptions
from ..strategies.loading import StrategyError, load, make, source_of
from ..strategies.store import Budget
from ..venues import base
from ..venues.base import ZERO, VenueFill, VenueOrder
from ..venues.paper import PaperBook, paper_order_id
from .result import BacktestResult, MarketInfo, Point, Refusal

# What the mesh's risk sees that a replay does not have: no halt, synced, an executor connected.
CONDITIONS = {"halted": "", "ready": True, "executor_up": True}


class BacktestError(Exception):
    """Bad strategy or parameters; the message says what is known."""


def make_strategy(spec: str | type, params: dict[str, Any]) -> Any:
    """A strategy by spec (a shipped name, ``file.py:Class``, ``package.module:Class``, an entry point; see
    strategies/loading.py) or class, with parameters given as text (``k=v`` from a command line) or values."""
    try:
        return make(spec if isinstance(spec, type) else load(spec), params)
    except StrategyError as exc:
        raise BacktestError(str(exc)) from None


def risk_options(config: Config) -> RiskOptions:
    """The risk limits the config's mesh trades under (its defaults, and what the config sets)."""
    return service_options(config, "risk", RiskOptions)


def within_budget(risk: RiskEngine, source: str, budget: Budget | None) -> None:
    """Hold ``source`` to a strategy's budget as risk holds an approved strategy to the one the operator granted
    (``Grant``: its own STRATEGY_* refusals), on top of the operator's limits, which still apply: a budget never
    raises them."""
    if budget is not None:
        risk.grants[source] = Grant(approved=True, **asdict(budget))


class Replay:
    def __init__(self, strategy: str | type, params: dict[str, Any] | None = None, sample_ms: int = 1000,
                 risk: RiskOptions | None = None, budget: Budget | None = None) -> None:
        self.strategy = make_strategy(strategy, params or {})
        self.name = self.strategy.name
        self.params = {k: str(v) for k, v in msgspec.structs.asdict(self.strategy.params).items()}
        self.sample_ns = sample_ms * 1_000_000
        self.clock_ns = 0
        options = risk or RiskOptions()
        # A client order id per leg of a signal, as the replay numbers signals: the same run, the same ids.
        self.risk = RiskEngine(options.limits, options.agent, options.recent_signals,
                               order_id=lambda signal, leg: f"{signal.id}-{leg}")
        self.source = source_of(self.strategy)
        within_budget(self.risk, self.source, budget)
        self.executions: deque[m.Message] = deque()  # what the desk published, for risk and the strategy
        self.published = 0
        self.desk = Desk(self._publish, lambda record: None, lambda: self.clock_ns)
        self.paper = PaperBook(clock_ms=lambda: self.clock_ns // 1_000_000)
        self.ledger = self.desk.ledger  # the executor's account
        self.by_signal: dict[str, Ledger] = {}
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
        """One message of ``prices`` or ``events``: to risk, the executor (its rules, resolutions, the paper
        book) and the strategy, as each of them hears it in the mesh; then what that set off."""
        self.messages += 1
        self.clock_ns = max(self.clock_ns, msg.ts_ns)
        self.first_ns = self.first_ns or msg.ts_ns
        self.risk.observe(msg)
        match msg:
            case m.MarketNew():
                self.markets[msg.market] = MarketInfo(market=msg.market, question=msg.question,
                                                      outcomes={o.token_id: o.name for o in msg.outcomes})
                self.outcomes[msg.market] = [o.token_id for o in msg.outcomes]
                self.desk.rules.update(base.rules_from(msg))
            case m.TickSizeChange() if msg.token_id in self.desk.rules:
                self.desk.rules[msg.token_id] = msgspec.structs.replace(self.desk.rules[msg.token_id],
                                                                        tick=msg.new_tick_size)
            case m.LastTrade():
                self.last_trade[msg.token_id] = msg.price
            case m.MarketResolved():
                for ledger in self.by_signal.values():
                    ledger.settle(msg.market, msg.winning_token_id)
                self.desk.resolved(msg)
                self._drop_orders(msg.market)
        self._venue_events(self.paper.observe(msg))
        self._act(self.strategy.on_message(msg))
        self._drain()
        if self.clock_ns >= self.next_sample_ns:
            self._sample()

    def _act(self, outputs: list[m.Message]) -> None:
        for out in outputs:
            if isinstance(out, m.Signal | m.Cancel) and out.source != self.source:  # as the host stamps them
                out = msgspec.structs.replace(out, source=self.source)
            if isinstance(out, m.Signal):
                self._signal(out)
            elif isinstance(out, m.Cancel):
                self._cancel(out)

    def _signal(self, signal: m.Signal) -> None:
        """Risk decides, as its service does; an accepted signal's orders go to the executor."""
        signal = msgspec.structs.replace(signal, id=f"s{len(self.signals) + 1:07d}", ts_ns=self.clock_ns)
        self.signals.append(signal)
        verdict = self.risk.verdict(signal, self.risk.decide(signal, self.clock_ns, **CONDITIONS), self.clock_ns)
        if isinstance(verdict, m.SignalRejected):
            for reason in verdict.reasons:
                token = signal.legs[reason.leg].token_id if reason.leg is not None else ""
                self.refusals.append(Refusal(ts_ns=self.clock_ns, signal_id=signal.id, token_id=token,
                                             code=reason.code, message=reason.message, by="risk"))
            return
        for order in verdict.orders:
            self._take(order)
        if why := self.desk.signal_failure(signal.id):
            self._unwind(signal.id, why)

    def _take(self, order: m.Order) -> None:
        """As the executor takes an order: refused when its signal failed already or it cannot be sent as it is
        (``sendable`` rounds it to the market's rules), else sent to the paper venue."""
        t = self.desk.take(order)
        if t is None:
            return
        if order.signal_id in self.desk.failed:
            return self.desk.reject(t, SIGNAL_FAILED, "another leg of its signal failed; the signal was unwound")
        rules = self.desk.rules.get(order.token_id)
        if rules is None:  # what the paper venue answers when asked for the rules of a market no one described
            return self.desk.reject(t, base.UNKNOWN_MARKET, f"token {order.token_id}: no market description "
                                                            "from the scanner")
        request = sendable(order, rules)
        if isinstance(request, Unsendable):
            return self.desk.reject(t, request.code, request.message)
        venue_id = paper_order_id(order.id)
        if not self.desk.submitting(t, venue_id, request.price, request.size):
            return
        placed, fills = self.paper.place(request, venue_id)
        self._venue_events(fills)
        self.desk.answered(t, placed)

    def _unwind(self, signal_id: str, why: str) -> None:
        """A multi-leg signal that failed: its resting legs are canceled, and what filled is reported held."""
        self._cancel_orders(self.desk.unwinding(signal_id), "another leg of the signal failed")
        self.desk.residual(signal_id, why)

    def _cancel(self, cancel: m.Cancel) -> None:
        """Risk passes a cancel on (it only lowers risk); the executor cancels what it matches."""
        self.cancels += 1
        self._cancel_orders([t for t in self.desk.open_orders() if matches(cancel, t.order)],
                            cancel.reason or f"canceled by {cancel.source}")

    def _cancel_orders(self, targets: list[Tracked], reason: str) -> None:
        for t in self.desk.cancel(targets, reason):
            if self.paper.cancel(t.venue_order_id) == "":
                self.desk.end(t, t.remaining, reason)

    def _drop_orders(self, market: str) -> None:
        """A resolved market's resting orders are gone at the venue, which says so."""
        for venue_id in [v for v, r in self.paper.resting.items() if r.order.market == market]:
            self.paper.cancel(venue_id)
            self.desk.update(self.paper.states[venue_id])

    def _venue_events(self, events: list[base.VenueEvent]) -> None:
        for event in events:
            if isinstance(event, VenueFill):
                self.desk.fill(event)
            elif isinstance(event, VenueOrder):
                self.desk.update(event)

    def _publish(self, msg: m.Message) -> None:
        """What the desk sends on ``executions``, with an id from the run (a fill's is its trade id)."""
        self.published += 1
        ident = msg.trade_id if isinstance(msg, m.Fill) else f"x{self.published:07d}"
        self.executions.append(msgspec.structs.replace(msg, id=ident))

    def _drain(self) -> None:
        """``executions`` in the order published: risk's positions, exposure and daily loss move; the strategy
        hears each, and what it sends in answer goes the same way."""
        while self.executions:
            msg = self.executions.popleft()
            self.risk.observe(msg)
            if isinstance(msg, m.Fill):
                self.fills.append(msg)
                self.by_signal.setdefault(msg.signal_id, Ledger()).apply(msg)
                self._sample()
            elif isinstance(msg, m.OrderRejected):
                self.refusals.append(Refusal(ts_ns=msg.ts_ns, signal_id=msg.signal_id,
                                             token_id=self.desk.orders[msg.order_id].order.token_id, code=msg.code,
                                             message=msg.message, by="executor"))
            self._act(self.strategy.on_message(msg))

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
             progress: Callable[[int], None] | None = None, risk: RiskOptions | None = None,
             budget: Budget | None = None) -> BacktestResult:
    """Replay a recording (folder or segment) into one strategy, under ``risk``'s limits (default: risk's
    defaults; ``risk_options(config)`` gives a config's) lowered to ``budget``; the result, ready for a report."""
    return Replay(strategy, params, sample_ms, risk, budget).run(read(data), str(data), progress)
