"""The strategy API: the stable contract between polybot and the strategies people and agents write.

A strategy is a class, pure: messages in, signals and cancels out. It does no I/O, reads no wall clock (times come
from the messages' ``ts_ns``) and uses no unseeded randomness, so the same class gives the same signals in a
backtest, a replay through the mesh and live. The strategies service feeds it; risk checks everything it returns;
it never reaches the venue itself::

    from decimal import Decimal
    import polybot_strategy as ps

    class MeanRevertParams(ps.Params):
        size: Decimal = Decimal("10")

    class MeanRevert(ps.Strategy):
        name = "mean_revert"
        Params = MeanRevertParams

        def on_message(self, msg: ps.Message) -> list[ps.Message]:
            self.track(msg)  # books, markets, stale and closed markets, own fills (optional helper)
            ...
            return []

**What this version (``API_VERSION``) promises.** The names exported here, with the fields listed in ``MESSAGES``,
keep their meaning: a later polybot that changes how the bus carries them keeps this module's view, or raises
``API_VERSION`` and documents the change. Prices and sizes are ``Decimal``; token and market ids are ``str``. A
strategy may set ``api = 1`` to say which version it was written for; a host refuses a strategy written for a
version it does not serve.

**What a strategy sees** (``on_message``): market data (``BookSnapshot``, ``BookDelta``, ``LastTrade``), the
markets (``MarketNew``, ``TickSizeChange``, ``MarketHalted``, ``MarketResolved``, ``MarketStale``), what became of
its orders (``OrderAck``, ``OrderRejected``, ``OrderCanceled``, ``Fill``, ``FillStatus``) and, once at start,
``AccountReply`` (what its own fills hold, so a restart keeps its inventory). Messages of every source come; a
strategy's own carry ``source == self.source``.

**What it returns**: ``Signal`` (one or more legs, each a limit order) and ``Cancel``; build them with ``signal``,
``buy``/``sell`` and ``cancel``. The host stamps every one with the strategy's source (``strategy:NAME``, NAME the
name it runs under), so a strategy cannot speak for another.
"""
from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, ClassVar

import msgspec

from services.books import Books
from services.messages import (AccountReply, Book, BookDelta, BookSnapshot, Cancel, Fill, FillStatus, LastTrade, Leg,
                               Level, MarketHalted, MarketNew, MarketResolved, MarketStale, Message, OrderAck,
                               OrderCanceled, OrderRejected, Outcome, Signal, TickSizeChange)

API_VERSION = 1
SIZE_STEP = Decimal("0.01")  # order sizes carry at most 2 decimals
ONE = Decimal(1)

# The messages of this contract and the fields a strategy may rely on (others may be added, never taken away).
MESSAGES: dict[str, tuple[str, ...]] = {
    "BookSnapshot": ("ts_ns", "books"),  # books: [Book(token_id, bids, asks)], levels Level(price, size), best first
    "BookDelta": ("ts_ns", "changes"),  # changes: [Change(token_id, side BUY|SELL, price, size: 0 removes the level)]
    "LastTrade": ("ts_ns", "token_id", "market", "price", "size", "side"),
    "MarketNew": ("ts_ns", "market", "question", "outcomes", "tick_size", "min_size", "neg_risk",
                  "neg_risk_market_id", "end_ts_ms", "fee_rate", "fee_exponent", "accepting_orders"),
    "TickSizeChange": ("ts_ns", "token_id", "market", "old_tick_size", "new_tick_size"),
    "MarketHalted": ("ts_ns", "market", "reason"),
    "MarketResolved": ("ts_ns", "market", "winning_token_id"),
    "MarketStale": ("ts_ns", "markets", "stale"),
    "OrderAck": ("ts_ns", "order_id", "signal_id", "source", "status"),
    "OrderRejected": ("ts_ns", "order_id", "signal_id", "source", "code", "message"),
    "OrderCanceled": ("ts_ns", "order_id", "signal_id", "source", "remaining", "reason"),
    "Fill": ("ts_ns", "order_id", "signal_id", "source", "token_id", "market", "side", "price", "size", "fee"),
    "FillStatus": ("ts_ns", "fill", "status"),  # CONFIRMED, or FAILED: the fill is undone
    "AccountReply": ("holdings",),  # holdings: [Holding(source, token_id, size, ...)]
}


class Params(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Base of a strategy's parameters: typed fields with defaults, given as a TOML table or JSON object."""


class Strategy:
    """Base class of a strategy (optional: any class with ``name``, ``Params``, ``__init__(params)`` and
    ``on_message`` is one). ``track`` keeps the state most strategies need."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[msgspec.Struct]] = Params
    api: ClassVar[int] = API_VERSION

    def __init__(self, params: Any = None) -> None:
        self.params = params if params is not None else type(self).Params()
        self.source = f"strategy:{self.name}"  # the host sets the name it runs under
        self.books = Books()
        self.markets: dict[str, MarketNew] = {}  # condition id -> market
        self.token_market: dict[str, str] = {}  # token id -> condition id
        self.closed: set[str] = set()  # resolved or halted
        self.stale: set[str] = set()  # the feed went silent: do not trade on these books
        self.inventory: dict[str, Decimal] = {}  # token -> shares this strategy's fills hold

    def on_message(self, msg: Message) -> list[Message]:
        raise NotImplementedError

    def track(self, msg: Message) -> set[str]:
        """Keep books, markets, closed and stale markets and this strategy's inventory; returns the tokens whose
        books ``msg`` touched."""
        match msg:
            case BookSnapshot() | BookDelta():
                return self.books.apply(msg)
            case MarketNew():
                self.markets[msg.market] = msg
                for outcome in msg.outcomes:
                    self.token_market[outcome.token_id] = msg.market
            case TickSizeChange() if msg.market in self.markets:
                self.markets[msg.market] = msgspec.structs.replace(self.markets[msg.market],
                                                                   tick_size=msg.new_tick_size)
            case MarketResolved() | MarketHalted():
                self.closed.add(msg.market)
            case MarketStale():
                (self.stale.update if msg.stale else self.stale.difference_update)(msg.markets)
            case AccountReply():
                self.inventory = {h.token_id: h.size for h in msg.holdings if h.source == self.source}
            case Fill() if msg.source == self.source:
                self._hold(msg, 1)
            case FillStatus() if msg.status == "FAILED" and msg.fill.source == self.source:
                self._hold(msg.fill, -1)
        return set()

    def _hold(self, fill: Fill, sign: int) -> None:
        signed = fill.size if fill.side == "BUY" else -fill.size
        self.inventory[fill.token_id] = self.inventory.get(fill.token_id, Decimal(0)) + sign * signed

    def tradeable(self, market: str) -> bool:
        """Known, open, accepting orders and with a fresh feed."""
        known = self.markets.get(market)
        return (known is not None and known.accepting_orders and market not in self.closed
                and market not in self.stale)


# ---------------------------------------------------------------- the market's rules


def round_price(price: Decimal, tick: Decimal, side: str) -> Decimal:
    """To the market's tick, never more aggressive than meant: a BUY rounds down, a SELL up (the executor does the
    same at the venue's edge; rounding here lets a strategy know the price it will get)."""
    steps = (Decimal(price) / tick).to_integral_value(rounding=ROUND_FLOOR if side == "BUY" else ROUND_CEILING)
    return steps * tick


def round_size(size: Decimal) -> Decimal:
    """Down to the venue's size step (0.01 shares)."""
    return Decimal(size).quantize(SIZE_STEP, rounding=ROUND_FLOOR)


def why_not(market: MarketNew, price: Decimal, size: Decimal) -> str:
    """Why an order at ``price`` for ``size`` would be refused by the market's rules ("" when it would not): price
    off the tick or outside [tick, 1 - tick], size below the market's minimum or off the size step."""
    tick = market.tick_size
    if price % tick:
        return f"price {price} is not a multiple of the tick {tick}"
    if not tick <= price <= ONE - tick:
        return f"price {price} is outside [{tick}, {ONE - tick}]"
    if size % SIZE_STEP:
        return f"size {size} has more than 2 decimals"
    if size < market.min_size:
        return f"size {size} is below the market's minimum {market.min_size}"
    return ""


# ---------------------------------------------------------------- what a strategy returns


def buy(token_id: str, size: Decimal, price: Decimal, *, market: str = "", order_type: str = "GTC",
        post_only: bool = False, expires_s: int = 0) -> Leg:
    return Leg(token_id=token_id, side="BUY", size=Decimal(size), limit_price=Decimal(price), order_type=order_type,
               market=market, post_only=post_only, expires_s=expires_s)


def sell(token_id: str, size: Decimal, price: Decimal, *, market: str = "", order_type: str = "GTC",
         post_only: bool = False, expires_s: int = 0) -> Leg:
    return Leg(token_id=token_id, side="SELL", size=Decimal(size), limit_price=Decimal(price), order_type=order_type,
               market=market, post_only=post_only, expires_s=expires_s)


def signal(strategy: Strategy, cause: Message, legs: list[Leg], rationale: str = "") -> Signal:
    """A signal of ``strategy``, prompted by ``cause`` (its time and trace carry on, so latency is measured from
    the market data that caused it)."""
    return Signal(ts_ns=cause.ts_ns, trace_id=cause.trace_id, cause_id=cause.id, cause_ts_ns=cause.ts_ns,
                  source=strategy.source, legs=list(legs), rationale=rationale)


def cancel(strategy: Strategy, cause: Message, *, token_id: str = "", market: str = "",
           order_ids: list[str] | None = None, reason: str = "") -> Cancel:
    """Cancel this strategy's resting orders: these ids, or all on a token or a market (none given: all of them)."""
    return Cancel(ts_ns=cause.ts_ns, trace_id=cause.trace_id, source=strategy.source, order_ids=list(order_ids or []),
                  token_id=token_id, market=market, reason=reason)


__all__ = [
    "API_VERSION", "MESSAGES", "Params", "Strategy", "Books", "Message", "Book", "Level", "Outcome",
    "BookSnapshot", "BookDelta", "LastTrade", "MarketNew", "TickSizeChange", "MarketHalted", "MarketResolved",
    "MarketStale", "OrderAck", "OrderRejected", "OrderCanceled", "Fill", "FillStatus", "AccountReply",
    "Signal", "Leg", "Cancel", "round_price", "round_size", "why_not", "buy", "sell", "signal", "cancel",
]
