"""Complete sets priced off their payout: the pure core of the ``scan_opportunities`` tool.

A set pays exactly 1: one share of every outcome of a binary market, or one YES share of every member of a
neg-risk event (exactly one member resolves YES). Buying a set at the asks for less than 1 after taker fees,
or selling one at the bids for more than 1 after fees, is an edge. Messages and books in, frozen results
out, no I/O. ``set_edge`` and ``quote_set`` price any set from its legs' books, so the arbitrage strategy
can size its signals with the same walk.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from decimal import ROUND_FLOOR, Decimal
from typing import Literal

from msgspec import Struct, structs

from . import messages as m
from .books import Books
from .sizing import exact_buy_size
from .venues.base import fee_per_share, taker_fee

ZERO = Decimal(0)
ONE = Decimal(1)
SHARES = Decimal("0.01")  # order sizes carry 2 decimals
SELL_NOTE = ("SELL legs need one held share of every outcome per set: hold the set, or mint it by splitting "
             "1 collateral per set")

Kind = Literal["binary", "neg_risk"]


class LegBook(Struct, frozen=True, kw_only=True):
    """One leg of a set: a token and the side of its book a taker crosses (asks to buy, bids to sell), best first."""

    token_id: str
    market: str
    outcome: str
    fee_rate: Decimal
    min_size: Decimal
    levels: tuple[m.Level, ...]
    fee_exponent: Decimal = ONE


class OrderLeg(Struct, frozen=True, kw_only=True):
    """A ready-to-send leg; ``limit_price`` is the worst level it takes, so the FOK order fills whole."""

    token_id: str
    market: str
    outcome: str
    side: m.Side
    size: Decimal
    limit_price: Decimal
    order_type: m.OrderType = "FOK"

    def to_leg(self) -> m.Leg:
        return m.Leg(token_id=self.token_id, market=self.market, side=self.side, size=self.size,
                     limit_price=self.limit_price, order_type=self.order_type)


class SetQuote(Struct, frozen=True, kw_only=True):
    """A set priced against the books, and legs sized to the depth and the limits.

    ``notional``, ``fees`` and ``profit`` are for the ``sets`` the legs trade (all 0 when ``legs`` is empty,
    and ``why`` says why). ``notional`` is paid on a BUY and received on a SELL.
    """

    side: m.Side
    edge: Decimal  # per set at the best prices, after fees
    depth: Decimal  # sets whose every marginal set keeps an edge above 0 and at least min_edge
    sets: Decimal  # every leg's size
    notional: Decimal  # sum of price x shares over the levels the legs take
    fees: Decimal  # taker fees, floored to 5 dp per leg and level as the venue charges them
    profit: Decimal  # sets - notional - fees to buy; notional - fees - sets to sell
    legs: tuple[OrderLeg, ...] = ()
    why: str = ""
    note: str = ""


class Opportunity(SetQuote, frozen=True, kw_only=True):
    """A mispriced set: a binary market (``key`` its condition id) or a neg-risk event (``key`` the event id)."""

    key: str
    kind: Kind
    markets: tuple[str, ...]
    questions: tuple[str, ...]


def set_edge(side: m.Side, quotes: Iterable[tuple[Decimal, ...]]) -> Decimal:
    """One set's edge at these (price, fee rate[, fee exponent]) per leg: 1 - sum(p + fee) to buy,
    sum(p - fee) - 1 to sell."""
    fees = [(p, fee_per_share(p, rate, *exponent)) for p, rate, *exponent in quotes]
    if side == "BUY":
        return ONE - sum((p + fee for p, fee in fees), ZERO)
    return sum((p - fee for p, fee in fees), ZERO) - ONE


def quote_set(legs: Sequence[LegBook], side: m.Side, *, max_cost: Decimal, max_sets: Decimal | None = None,
              min_edge: Decimal = ZERO, max_leg_cost: Decimal | None = None) -> SetQuote | None:
    """Walk the legs' books together while the marginal set keeps its edge; None if the best prices show none.

    Legs get one size: the depth, capped by ``max_sets`` and by ``max_cost`` (which bounds what risk counts,
    size x limit price summed over the legs, plus the fees on a BUY) and by ``max_leg_cost`` (one leg's size x
    limit price, risk's per-order notional), cut to whole-cent amounts on a BUY
    (the venue signs a market BUY as a collateral amount), and at least every market's ``min_size``.
    """
    if not legs or any(not leg.levels for leg in legs):
        return None
    edge = set_edge(side, [(leg.levels[0].price, leg.fee_rate, leg.fee_exponent) for leg in legs])
    if edge <= 0 or edge < min_edge:
        return None
    depth = _depth(legs, side, min_edge)
    cap = _floor(depth if max_sets is None else min(depth, max_sets))
    affordable = _affordable(legs, side, cap, max_cost, max_leg_cost)
    size = _exact(legs, affordable) if side == "BUY" else affordable
    note = SELL_NOTE if side == "SELL" else ""
    min_size = max(leg.min_size for leg in legs)
    if size <= 0 or size < min_size:
        why = _why(legs, side, depth, max_sets, max_cost, min_edge, min_size, affordable, max_leg_cost)
        return SetQuote(side=side, edge=edge, depth=depth, sets=ZERO, notional=ZERO, fees=ZERO, profit=ZERO,
                        why=why, note=note)
    fills = _fills(legs, size)
    notional = sum((p * q for leg_fills in fills for p, q in leg_fills), ZERO)
    fees = _fees(legs, fills)
    profit = size - notional - fees if side == "BUY" else notional - fees - size
    order_legs = tuple(OrderLeg(token_id=leg.token_id, market=leg.market, outcome=leg.outcome, side=side, size=size,
                                limit_price=leg_fills[-1][0]) for leg, leg_fills in zip(legs, fills))
    return SetQuote(side=side, edge=edge, depth=depth, sets=size, notional=notional, fees=fees, profit=profit,
                    legs=order_legs, note=note)


def scan(markets: Iterable[m.MarketNew], books: Books | Iterable[m.Book], *, max_cost: Decimal,
         max_sets: Decimal | None = None, min_edge: Decimal = ZERO, stale: Collection[str] = (),
         closed: Collection[str] = (), max_leg_cost: Decimal | None = None) -> list[Opportunity]:
    """Every binary market and neg-risk event whose set buys below or sells above its payout, most profit first.

    Stale, ``closed`` (halted or resolved) and not-accepting markets are skipped; an event is priced only when
    every member it has is usable and shows the side's book. ``markets`` lists every market known: an event's
    members are the markets sharing its ``neg_risk_market_id``.
    """
    known = {mk.market: mk for mk in markets}
    levels = _levels_of(books)

    def usable(mk: m.MarketNew) -> bool:
        return mk.accepting_orders and mk.market not in stale and mk.market not in closed

    def priced(key: str, kind: Kind, members: list[m.MarketNew],
               outcomes: list[tuple[m.MarketNew, m.Outcome]]) -> list[Opportunity]:
        out = []
        for side in ("BUY", "SELL"):
            legs = [LegBook(token_id=o.token_id, market=mk.market, outcome=o.name, fee_rate=mk.fee_rate,
                            fee_exponent=mk.fee_exponent, min_size=mk.min_size, levels=levels(o.token_id, side)) for mk, o in outcomes]
            quote = quote_set(legs, side, max_cost=max_cost, max_sets=max_sets, min_edge=min_edge,
                              max_leg_cost=max_leg_cost)
            if quote is not None:
                out.append(Opportunity(**structs.asdict(quote), key=key, kind=kind,
                                       markets=tuple(mk.market for mk in members),
                                       questions=tuple(mk.question for mk in members)))
        return out

    found: list[Opportunity] = []
    events: dict[str, list[m.MarketNew]] = {}
    for cid in sorted(known):
        mk = known[cid]
        if mk.neg_risk and mk.neg_risk_market_id:
            events.setdefault(mk.neg_risk_market_id, []).append(mk)
        if usable(mk) and len(mk.outcomes) >= 2:  # a neg-risk member is a binary market too
            found += priced(cid, "binary", [mk], [(mk, o) for o in mk.outcomes])
    for event_id, members in sorted(events.items()):
        if len(members) >= 2 and all(usable(mk) and mk.outcomes for mk in members):
            found += priced(event_id, "neg_risk", members, [(mk, mk.outcomes[0]) for mk in members])  # YES first
    found.sort(key=lambda o: (-o.profit, -o.edge, o.key, o.side))
    return found


# ---------------------------------------------------------------- the walk


def _levels_of(books: Books | Iterable[m.Book]) -> Callable[[str, m.Side], tuple[m.Level, ...]]:
    """A token's levels a taker on ``side`` crosses, best first, from either kind of books."""
    if isinstance(books, Books):
        def levels(token: str, side: m.Side) -> tuple[m.Level, ...]:
            book = books.levels.get(token, {}).get("SELL" if side == "BUY" else "BUY", {})
            return tuple(m.Level(p, s) for p, s in sorted(book.items(), reverse=side == "SELL") if s > 0)
        return levels
    by_token = {book.token_id: book for book in books}

    def levels_from_snapshot(token: str, side: m.Side) -> tuple[m.Level, ...]:
        book = by_token.get(token)
        if book is None:
            return ()
        crossed = book.asks if side == "BUY" else book.bids
        return tuple(sorted((lv for lv in crossed if lv.size > 0), key=lambda lv: lv.price, reverse=side == "SELL"))
    return levels_from_snapshot


def _depth(legs: Sequence[LegBook], side: m.Side, min_edge: Decimal) -> Decimal:
    """Sets available while each marginal set, at every leg's current level, keeps its edge."""
    at = [0] * len(legs)
    left = [leg.levels[0].size for leg in legs]
    total = ZERO
    while all(i < len(leg.levels) for i, leg in zip(at, legs)):
        edge = set_edge(side, [(leg.levels[i].price, leg.fee_rate, leg.fee_exponent) for i, leg in zip(at, legs)])
        if edge <= 0 or edge < min_edge:
            break
        step = min(left)
        total += step
        for k, leg in enumerate(legs):
            left[k] -= step
            if left[k] == 0:
                at[k] += 1
                left[k] = leg.levels[at[k]].size if at[k] < len(leg.levels) else ZERO
    return total


def _fills(legs: Sequence[LegBook], sets: Decimal) -> list[list[tuple[Decimal, Decimal]]]:
    """Per leg, the (price, shares) taken from each level to fill ``sets`` shares (within the depth)."""
    out = []
    for leg in legs:
        need, taken = sets, []
        for level in leg.levels:
            if need <= 0:
                break
            qty = min(need, level.size)
            taken.append((level.price, qty))
            need -= qty
        out.append(taken)
    return out


def _fees(legs: Sequence[LegBook], fills: list[list[tuple[Decimal, Decimal]]]) -> Decimal:
    return sum((taker_fee(q, p, leg.fee_rate, leg.fee_exponent)
                for leg, leg_fills in zip(legs, fills) for p, q in leg_fills), ZERO)


def _charged(legs: Sequence[LegBook], side: m.Side, sets: Decimal) -> Decimal:
    """What ``max_cost`` bounds: size x limit price over the legs, plus the fees on a BUY."""
    fills = _fills(legs, sets)
    notional = sum((sets * leg_fills[-1][0] for leg_fills in fills if leg_fills), ZERO)
    return notional + _fees(legs, fills) if side == "BUY" else notional


def _affordable(legs: Sequence[LegBook], side: m.Side, cap: Decimal, max_cost: Decimal,
                max_leg_cost: Decimal | None = None) -> Decimal:
    """The most sets (2 dp, at most ``cap``) that ``max_cost`` pays for, each leg within ``max_leg_cost``; what
    is charged never falls as sets grow."""
    def within(sets: Decimal) -> bool:
        if _charged(legs, side, sets) > max_cost:
            return False
        return max_leg_cost is None or all(sets * leg_fills[-1][0] <= max_leg_cost
                                           for leg_fills in _fills(legs, sets) if leg_fills)

    lo, hi = 0, int(cap / SHARES)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if within(mid * SHARES):
            lo = mid
        else:
            hi = mid - 1
    return (lo * SHARES).quantize(SHARES)


def _exact(legs: Sequence[LegBook], sets: Decimal) -> Decimal:
    """The most sets ≤ ``sets`` whose every leg's size x limit price is whole cents.

    A leg's limit price falls as the size falls below a level boundary, so try each range of sizes that
    shares one set of limit prices, from the top down.
    """
    while sets > 0:
        fills = _fills(legs, sets)
        exact = exact_buy_size(sets, [leg_fills[-1][0] for leg_fills in fills])
        boundary = max(sum((q for _, q in leg_fills[:-1]), ZERO) for leg_fills in fills)  # below it, better limits
        if exact > boundary:
            return exact
        sets = _floor(boundary)
    return ZERO


def _floor(shares: Decimal) -> Decimal:
    return shares.quantize(SHARES, rounding=ROUND_FLOOR)


def _why(legs: Sequence[LegBook], side: m.Side, depth: Decimal, max_sets: Decimal | None, max_cost: Decimal,
         min_edge: Decimal, min_size: Decimal, affordable: Decimal, max_leg_cost: Decimal | None = None) -> str:
    if depth < min_size:
        return f"below minimum size: only {depth} sets keep an edge of at least {min_edge}; the minimum is {min_size}"
    if max_sets is not None and max_sets < min_size:
        return f"below minimum size: max_sets {max_sets} is under the minimum {min_size}"
    if affordable < min_size and max_leg_cost is not None and _charged(legs, side, min_size) <= max_cost:
        dearest = max(leg_fills[-1][0] for leg_fills in _fills(legs, min_size) if leg_fills)
        return (f"over the per-order limit: a leg of the minimum {min_size} shares at {dearest} costs "
                f"{(min_size * dearest).normalize():f}, above {max_leg_cost}")
    if affordable < min_size:
        return (f"budget too small: max_cost {max_cost} pays for {affordable} sets; the minimum {min_size} "
                f"needs {_charged(legs, side, min_size)}")
    return (f"no size from {min_size} to {affordable} sets is a whole number of cents at every leg's limit "
            f"price, which a market BUY needs")
