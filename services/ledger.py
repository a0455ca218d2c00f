"""Positions from fills, the venue's way: fees in collateral, average cost, realized PnL after fees, settlement.

A BUY of q at p adds q shares at cost q*p; its fee (taker only, in collateral) is realized as a loss at once.
A SELL of q at p realizes (p - average cost) * q less its fee. A resolved market pays 1 per winning share and
0 per losing one, which realizes what is left. A fill is counted once, however often it is reported.

The ledger also says whose fills the shares came from: per source (``strategy:NAME``, ``mcp:CLIENT``), the
shares its fills bought less those they sold, so an agent can be kept to selling what it bought itself.
"""
from __future__ import annotations

from collections.abc import Iterable
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
        self.by_source: dict[tuple[str, str], Decimal] = {}  # (source, token) -> net shares its fills bought
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
        whose = (fill.source, fill.token_id)
        self.by_source[whose] = self.by_source.get(whose, ZERO) + (fill.size if fill.side == "BUY" else -fill.size)
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
        for source, token in [k for k in self.by_source if self.holdings[k[1]].market == market]:
            del self.by_source[(source, token)]

    def load(self, positions: Iterable[m.Position], by_source: Iterable[m.SourceHolding] = ()) -> None:
        """Replace every holding with a reconciled view (the executor's, which it reconciled with the venue)."""
        self.holdings = {}
        for pos in positions:
            held = self.holding(pos.token_id, pos.market)
            held.size, held.cost = pos.size, pos.size * pos.avg_price
            held.realized, held.fees = pos.realized, pos.fees
        self.by_source = {}
        for h in by_source:
            self.holding(h.token_id, h.market)
            self.by_source[(h.source, h.token_id)] = h.size

    def held_by(self, source: str, token_id: str) -> Decimal:
        """The shares of ``token_id`` that ``source``'s own fills bought and still hold: never more than the
        account holds (another source may have sold them), never less than 0."""
        held = self.holdings.get(token_id)
        account = held.size if held is not None else ZERO
        return max(min(self.by_source.get((source, token_id), ZERO), account), ZERO)

    def source_holdings(self) -> list[m.SourceHolding]:
        """Every source's net shares per token, as its fills left them (a source that sold more than it bought,
        out of another's shares, shows a negative size)."""
        return [m.SourceHolding(source=source, token_id=token, market=self.holdings[token].market, size=size)
                for (source, token), size in sorted(self.by_source.items()) if size]

    def realized(self) -> Decimal:
        return sum((h.realized for h in self.holdings.values()), ZERO)

    def unrealized(self, mark: dict[str, Decimal]) -> Decimal:
        """Marked to the given prices; a token with no mark is held at cost."""
        return sum((h.size * mark[h.token_id] - h.cost for h in self.holdings.values()
                    if h.size and h.token_id in mark), ZERO)

    def positions(self) -> list[m.Position]:
        return [h.position() for h in self.holdings.values() if h.size or h.realized]
