"""Quoter: provides liquidity around the mid of a binary market, within inventory limits, cancelling and replacing.

Polymarket has no short shares, so the two sides of a YES quote are two BUYs: a bid for YES at mid - spread,
and a bid for NO at 1 - (mid + spread), which is the YES offer in the other token. A side stops quoting when
the inventory of its token reaches ``max_inventory`` (filled shares, learned from ``executions``, and at start from
the executor's account, so a restart keeps it). A quote is
replaced (a ``Cancel`` of the strategy's orders on that token, then a new post-only GTC signal) when the price
it should be at moves by ``requote_ticks`` or more, and at most once per ``min_requote_ms``.
"""
from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import msgspec

from .. import messages as m
from ..books import Books

ONE = Decimal(1)


class QuoterParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    markets: list[str] = []  # condition ids to quote; empty: the first ``max_markets`` binary markets seen
    max_markets: int = 1
    spread_ticks: int = 2  # each side this many ticks from the mid
    size: Decimal = Decimal("10")  # shares per quote
    max_inventory: Decimal = Decimal("50")  # shares of one token held before that side stops quoting
    requote_ticks: int = 1
    min_requote_ms: int = 500


class Quoter:
    name = "quoter"
    Params = QuoterParams

    def __init__(self, params: QuoterParams = QuoterParams()) -> None:
        self.params = params
        self.source = f"strategy:{self.name}"
        self.books = Books()
        self.markets: dict[str, m.MarketNew] = {}  # the markets quoted
        self.token_market: dict[str, str] = {}
        self.closed: set[str] = set()
        self.stale: set[str] = set()
        self.inventory: dict[str, Decimal] = {}  # token -> shares held from our fills
        self.quoted: dict[str, Decimal] = {}  # token -> price of the live (or pending) quote
        self.last_quote_ns: dict[str, int] = {}

    def on_message(self, msg: m.Message) -> list[m.Message]:
        match msg:
            case m.MarketNew():
                self._adopt(msg)
            case m.MarketResolved() | m.MarketHalted():
                self.closed.add(msg.market)
                return self._pull(msg.market, msg, "market closed")
            case m.MarketStale():
                (self.stale.update if msg.stale else self.stale.difference_update)(msg.markets)
                if msg.stale:
                    return [out for mk in msg.markets if mk in self.markets for out in self._pull(mk, msg, "stale")]
            case m.AccountReply():  # at start: what our own fills hold, whatever happened before this process
                self.inventory = {h.token_id: h.size for h in msg.holdings if h.source == self.source}
            case m.Fill() if msg.source == self.source:
                sign = 1 if msg.side == "BUY" else -1
                self.inventory[msg.token_id] = self.inventory.get(msg.token_id, Decimal(0)) + sign * msg.size
            case m.FillStatus(status="FAILED", fill=f) if f.source == self.source:  # it never settled: undone
                sign = 1 if f.side == "BUY" else -1
                self.inventory[f.token_id] = self.inventory.get(f.token_id, Decimal(0)) - sign * f.size
            case m.OrderCanceled() | m.OrderRejected() if msg.source == self.source:
                pass  # the next book update re-quotes what is missing
            case m.BookSnapshot() | m.BookDelta():
                touched = {self.token_market[t] for t in self.books.apply(msg) if t in self.token_market}
                return [out for mk in sorted(touched) for out in self._quote(self.markets[mk], msg)]
        return []

    def _adopt(self, market: m.MarketNew) -> None:
        wanted = market.market in self.params.markets if self.params.markets else (
            len(self.markets) < self.params.max_markets and not market.neg_risk)
        if wanted and len(market.outcomes) == 2 and market.accepting_orders:
            self.markets[market.market] = market
            for outcome in market.outcomes:
                self.token_market[outcome.token_id] = market.market

    def _quote(self, market: m.MarketNew, cause: m.Message) -> list[m.Message]:
        if market.market in self.closed or market.market in self.stale:
            return []
        yes, no = (o.token_id for o in market.outcomes)
        mid = self.books.mid(yes)
        if mid is None:
            return []
        tick = market.tick_size
        spread = tick * self.params.spread_ticks
        yes_bid = ((mid - spread) / tick).to_integral_value(ROUND_FLOOR) * tick
        yes_offer = ((mid + spread) / tick).to_integral_value(ROUND_CEILING) * tick
        out: list[m.Message] = []
        for token, price in ((yes, yes_bid), (no, ONE - yes_offer)):
            out += self._side(market, token, price, tick, cause)
        return out

    def _side(self, market: m.MarketNew, token: str, price: Decimal, tick: Decimal, cause: m.Message) -> list[m.Message]:
        held = self.inventory.get(token, Decimal(0))
        live = self.quoted.get(token)
        want = tick <= price <= ONE - tick and held + self.params.size <= self.params.max_inventory
        if not want:
            return self._cancel(token, market.market, cause, "inventory limit") if live is not None else []
        if live is not None and abs(price - live) < tick * self.params.requote_ticks:
            return []
        last = self.last_quote_ns.get(token)
        if last is not None and cause.ts_ns - last < self.params.min_requote_ms * 1_000_000:
            return []
        self.last_quote_ns[token] = cause.ts_ns
        out = self._cancel(token, market.market, cause, "requote") if live is not None else []
        self.quoted[token] = price
        out.append(m.Signal(ts_ns=cause.ts_ns, trace_id=cause.trace_id, cause_id=cause.id, cause_ts_ns=cause.ts_ns,
                            source=self.source, rationale=f"quote {price} around mid, holding {held}",
                            legs=[m.Leg(token_id=token, side="BUY", size=self.params.size, limit_price=price,
                                        order_type="GTC", market=market.market, post_only=True)]))
        return out

    def _cancel(self, token: str, market: str, cause: m.Message, why: str) -> list[m.Message]:
        self.quoted.pop(token, None)
        return [m.Cancel(ts_ns=cause.ts_ns, trace_id=cause.trace_id, source=self.source, token_id=token,
                         market=market, reason=why)]

    def _pull(self, market: str, cause: m.Message, why: str) -> list[m.Message]:
        if market not in self.markets:
            return []
        return [c for o in self.markets[market].outcomes if o.token_id in self.quoted
                for c in self._cancel(o.token_id, market, cause, why)]
