"""Positions from fills, the venue's way: fees in collateral, average cost, realized PnL after fees, settlement.

A BUY of q at p adds q shares at cost q*p; its fee (taker only, in collateral) is realized as a loss at once.
A SELL of q at p realizes (p - average cost) * q less its fee. A resolved market pays 1 per winning share and
0 per losing one, which realizes what is left. A fill is counted once, however often it is reported.

The ledger also says whose fills the shares came from: per source (``strategy:NAME``, ``mcp:CLIENT``), the
shares its fills bought less those they sold, so an agent can be kept to selling what it bought itself.

Marking (``marked``): a complete set (one share of every outcome of a market, or of every YES of a neg-risk
event) merges back into 1 collateral whatever the books say, so it is worth exactly 1; only what is left over
is marked to the books.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import NamedTuple

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

    def unrealized(self, mark: Mapping[str, Decimal], sets: Iterable[Sequence[str]] = ()) -> Decimal:
        """Complete sets at 1, the rest marked to the given prices; a token with no mark is held at cost."""
        return sum((x.unrealized for x in marked(self.holdings.values(), mark, sets).values()), ZERO)

    def market_sets(self, outcomes: Mapping[str, Sequence[str]]) -> list[Sequence[str]]:
        """The complete sets the holdings may hold: every outcome of each market held (``outcomes``: market -> its
        tokens, every one of them)."""
        held = {h.market for h in self.holdings.values() if h.size > 0}
        return [outcomes[k] for k in sorted(held) if k in outcomes]

    def positions(self) -> list[m.Position]:
        return [h.position() for h in self.holdings.values() if h.size or h.realized]


class Marked(NamedTuple):
    unrealized: Decimal  # what the shares are worth less what they cost
    exposed: Decimal  # the cost of the shares in no complete set: what a resolution can still take
    in_sets: Decimal  # shares in complete sets


def marked(holdings: Iterable[Holding], mark: Mapping[str, Decimal],
           sets: Iterable[Sequence[str]] = ()) -> dict[str, Marked]:
    """Each open holding marked, by token: shares in a complete set at the set's payout, the rest to ``mark``.

    ``sets``: groups of tokens one share of each of which pays exactly 1 (every outcome of a market; every YES of a
    neg-risk event, when every market of it is known). A set is matched as many times as its smallest holding
    allows; sets sharing a token are matched in the order given. A set's 1 is shared over its tokens as the books
    price them (the mark, else the average cost) plus an equal part of what the set is worth beyond that sum, so
    a market whose books already price the set at 1 shows each token as marked, and per-token and per-market
    figures add up to the total exactly. What is left over is marked to ``mark``, or held at cost without one.
    """
    held = {h.token_id: h for h in holdings if h.size}
    free = {t: h.size for t, h in held.items() if h.size > 0}  # shares not in a set yet
    in_sets: dict[str, Decimal] = {}  # token -> shares matched in sets
    value: dict[str, Decimal] = {}  # token -> what its matched shares are worth
    for group in sets:
        tokens = list(dict.fromkeys(group))
        if len(tokens) < 2:  # one outcome alone is a bet, not a set
            continue
        matched = min(free.get(t, ZERO) for t in tokens)
        if matched <= 0:
            continue
        at_prices = [matched * mark[t] if t in mark else held[t].cost * matched / held[t].size for t in tokens]
        beyond = matched - sum(at_prices, ZERO)
        part = beyond / len(tokens)
        parts = [part] * (len(tokens) - 1) + [beyond - part * (len(tokens) - 1)]  # the last takes any rounding
        for token, priced, extra in zip(tokens, at_prices, parts):
            free[token] -= matched
            in_sets[token] = in_sets.get(token, ZERO) + matched
            value[token] = value.get(token, ZERO) + priced + extra
    out = {}
    for token, h in held.items():
        matched = in_sets.get(token, ZERO)
        rest = h.size - matched
        if not matched:
            out[token] = Marked(h.size * mark[token] - h.cost if token in mark else ZERO,
                                h.cost if h.size > 0 else ZERO, ZERO)
        elif not rest:
            out[token] = Marked(value[token] - h.cost, ZERO, matched)
        else:
            rest_cost = h.cost * rest / h.size  # at the average cost, as a sell would release it
            rest_value = rest * mark[token] if token in mark else rest_cost
            out[token] = Marked(value[token] + rest_value - h.cost, rest_cost, matched)
    return out
