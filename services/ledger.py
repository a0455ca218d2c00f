"""Positions from fills, the venue's way: fees in collateral, average cost, realized PnL after fees, settlement.

A BUY of q at p adds q shares at cost q*p; its fee (taker only, in collateral) is realized as a loss at once.
A SELL of q at p realizes (p - average cost) * q less its fee. A resolved market pays 1 per winning share and
0 per losing one, which realizes what is left. A fill is counted once, however often it is reported.
"""
from __future__ import annotations

from decimal import Decimal

from . import messages as m

ZERO = Decimal(0)
ONE = Decimal(1)


class Holding:
    __slots__ = ("token_id", "market", "size", "cost", "realized", "fees")

    def __init__(self, token_id: str, market: str) -> None:
        self.token_id = token_id
        self.market = market
        self.size = ZERO
        self.cost = ZERO  # what the shares held cost, fees apart
        self.realized = ZERO
        self.fees = ZERO

    @property
    def avg_price(self) -> Decimal:
        return self.cost / self.size if self.size else ZERO

    def position(self) -> m.Position:
        return m.Position(token_id=self.token_id, market=self.market, size=self.size, avg_price=self.avg_price,
                          realized=self.realized, fees=self.fees)


class Ledger:
    def __init__(self) -> None:
        self.holdings: dict[str, Holding] = {}
        self.seen: set[tuple[str, str]] = set()  # (trade id, order id): a fill reported twice counts once

    def holding(self, token_id: str, market: str = "") -> Holding:
        held = self.holdings.get(token_id)
        if held is None:
            held = self.holdings[token_id] = Holding(token_id, market)
        elif market and not held.market:
            held.market = market
        return held

    def apply(self, fill: m.Fill) -> bool:
        """Count one fill; False when it was counted before."""
        key = (fill.trade_id, fill.order_id)
        if key in self.seen:
            return False
        self.seen.add(key)
        held = self.holding(fill.token_id, fill.market)
        held.fees += fill.fee
        held.realized -= fill.fee
        if fill.side == "BUY":
            held.size += fill.size
            held.cost += fill.size * fill.price
        else:
            released = held.avg_price * min(fill.size, held.size) if held.size > 0 else ZERO
            held.realized += fill.size * fill.price - released
            held.cost -= released
            held.size -= fill.size
            if held.size <= 0:
                held.cost = ZERO
        return True

    def settle(self, market: str, winning_token_id: str) -> None:
        """A resolved market: every share of it is redeemed at 1 (winner) or 0."""
        for held in self.holdings.values():
            if held.market == market and held.size:
                payout = ONE if held.token_id == winning_token_id else ZERO
                held.realized += held.size * payout - held.cost
                held.size, held.cost = ZERO, ZERO

    def load(self, positions: list[m.Position]) -> None:
        """Replace every holding with a reconciled view (the executor's, which it reconciled with the venue)."""
        self.holdings = {}
        for pos in positions:
            held = self.holding(pos.token_id, pos.market)
            held.size, held.cost = pos.size, pos.size * pos.avg_price
            held.realized, held.fees = pos.realized, pos.fees

    def realized(self) -> Decimal:
        return sum((h.realized for h in self.holdings.values()), ZERO)

    def unrealized(self, mark: dict[str, Decimal]) -> Decimal:
        """Marked to the given prices; a token with no mark is held at cost."""
        return sum((h.size * mark[h.token_id] - h.cost for h in self.holdings.values()
                    if h.size and h.token_id in mark), ZERO)

    def positions(self) -> list[m.Position]:
        return [h.position() for h in self.holdings.values() if h.size or h.realized]
