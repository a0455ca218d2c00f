"""Arbitrage: buy every outcome of a market (or of a neg-risk event) for less than the 1 it pays, fees included.

Binary market: YES ask + NO ask + taker fees < 1, one pair of legs. Neg-risk event (exactly one outcome
resolves YES): the sum of every outcome's YES ask + fees < 1, one leg per outcome. Legs are FOK at the
ask, sized to what every leg's best level shows, so all fill or none does; and to a size whose cost is whole
cents at every leg's ask (``sizing.exact_buy_size``), so every leg buys exactly that many shares.
"""
from __future__ import annotations

from decimal import Decimal

import msgspec

from .. import messages as m
from ..books import Books
from ..sizing import exact_buy_size
from ..venues.base import fee_per_share

ONE = Decimal(1)


class ArbitrageParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    min_edge: Decimal = Decimal("0.005")  # profit per share (per set of outcomes) after fees
    max_size: Decimal = Decimal("50")  # shares per leg
    cooldown_ms: int = 2000  # one signal per market or event per cooldown, so one gap is not chased twice
    events: bool = True  # also look across neg-risk events


class Arbitrage:
    name = "arbitrage"
    Params = ArbitrageParams

    def __init__(self, params: ArbitrageParams = ArbitrageParams()) -> None:
        self.params = params
        self.books = Books()
        self.markets: dict[str, m.MarketNew] = {}
        self.token_market: dict[str, str] = {}
        self.events: dict[str, set[str]] = {}  # neg-risk market id -> member condition ids
        self.closed: set[str] = set()
        self.stale: set[str] = set()
        self.last_signal_ns: dict[str, int] = {}

    def on_message(self, msg: m.Message) -> list[m.Signal]:
        match msg:
            case m.MarketNew():
                self.markets[msg.market] = msg
                for outcome in msg.outcomes:
                    self.token_market[outcome.token_id] = msg.market
                if msg.neg_risk and msg.neg_risk_market_id:
                    self.events.setdefault(msg.neg_risk_market_id, set()).add(msg.market)
                return []
            case m.MarketResolved() | m.MarketHalted():
                self.closed.add(msg.market)
                return []
            case m.MarketStale():
                (self.stale.update if msg.stale else self.stale.difference_update)(msg.markets)
                # Fresh again: the books that came while it was stale may already show a gap (books and events
                # travel on different sockets, so the fresh snapshot can arrive before this).
                return [] if msg.stale else self._check_markets({c for c in msg.markets if c in self.markets}, msg)
            case m.BookSnapshot() | m.BookDelta():
                touched = {self.token_market[t] for t in self.books.apply(msg) if t in self.token_market}
                return self._check_markets(touched, msg)
        return []

    def _check_markets(self, condition_ids: set[str], cause: m.Message) -> list[m.Signal]:
        signals = []
        for condition_id in sorted(condition_ids):
            market = self.markets[condition_id]
            if market.neg_risk:
                if self.params.events:
                    signals += self._check_event(market.neg_risk_market_id, cause)
            else:
                signals += self._check(market.market, [market], cause)
        return signals

    def _check_event(self, event_id: str, cause: m.Message) -> list[m.Signal]:
        members = [self.markets[c] for c in sorted(self.events.get(event_id, ()))]
        return self._check(event_id, members, cause, yes_only=True)

    def _check(self, key: str, markets: list[m.MarketNew], cause: m.Message, yes_only: bool = False) -> list[m.Signal]:
        if any(mk.market in self.closed or mk.market in self.stale or not mk.accepting_orders for mk in markets):
            return []
        legs = []  # (market, token, ask, size)
        for market in markets:
            outcomes = market.outcomes[:1] if yes_only else market.outcomes
            for outcome in outcomes:
                best = self.books.best_ask(outcome.token_id)
                if best is None:
                    return []
                legs.append((market, outcome.token_id, best[0], best[1]))
        cost = sum((ask + fee_per_share(ask, mk.fee_rate, mk.fee_exponent) for mk, _, ask, _ in legs), Decimal(0))
        edge = ONE - cost
        if edge < self.params.min_edge:
            return []
        last = self.last_signal_ns.get(key)
        if last is not None and cause.ts_ns - last < self.params.cooldown_ms * 1_000_000:
            return []
        size = exact_buy_size(min([self.params.max_size] + [s for *_, s in legs]), [ask for _, _, ask, _ in legs])
        if not size or any(size < mk.min_size for mk, *_ in legs):
            return []
        self.last_signal_ns[key] = cause.ts_ns
        asks = " + ".join(f"{ask}" for _, _, ask, _ in legs)
        return [m.Signal(
            ts_ns=cause.ts_ns, trace_id=cause.trace_id, cause_id=cause.id, cause_ts_ns=cause.ts_ns,
            source=f"strategy:{self.name}",
            legs=[m.Leg(token_id=token, side="BUY", size=size, limit_price=ask, order_type="FOK", market=mk.market)
                  for mk, token, ask, _ in legs],
            rationale=f"asks {asks} plus fees cost {cost.normalize()} < 1 per set: edge {edge.normalize()} on {size} "
                      f"{'sets' if len(legs) > 2 else 'pairs'}")]
