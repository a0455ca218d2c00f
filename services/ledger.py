"""Positions from fills, the venue's way: fees in collateral, average cost, realized PnL after fees, settlement.

A BUY of q at p adds q shares at cost q*p; its fee (taker only, in collateral) is realized as a loss at once.
A SELL of q at p realizes (p - average cost) * q less its fee. A resolved market pays 1 per winning share and
0 per losing one, which realizes what is left. A fill is counted once, however often it is reported.

Settlement on chain (``FillStatus``): a fill is pending (its trade MATCHED, MINED or RETRYING) until its trade is
CONFIRMED (settled); each holding says how many of its shares are pending (``Holding.pending``, net: a pending
sell counts negative), the rest are settled. A trade that FAILED after its fill was counted is reversed exactly:
the holdings are rebuilt from what they were built from (the fills and settlements since the start, or since
``load``) without it, so position, cost basis, realized PnL, fees, whose shares they are and the rebate estimate
are as if it had never been. A fill that was already in a loaded view (risk's reconciled positions) cannot be
replayed; it is taken back at its price and the average cost now (exact for a buy, as near as can be for a sell).

The ledger also says whose fills the shares came from: per source (``strategy:NAME``, ``mcp:CLIENT``), the
shares its fills bought less those they sold, so an agent can be kept to selling what it bought itself.

Marking (``marked``): a complete set (one share of every outcome of a market, or of every YES of a neg-risk
event) merges back into 1 collateral whatever the books say, so it is worth exactly 1; only what is left over
is marked to the books.

Maker rebates (``Rebates``) are counted per UTC day and market, as the venue pays them: the total the venue
reported for that day and market (``Rebate``), else our estimate (the sum of the maker fills' ``rebate``, floored
to the micro-unit as the venue floors its totals). They are PnL apart from ``realized`` and ``unrealized``.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from decimal import ROUND_FLOOR, Decimal
from typing import NamedTuple

import msgspec

from . import messages as m

ZERO = Decimal(0)
ONE = Decimal(1)
MICRO = Decimal("0.000001")  # the venue reports and pays rebates in micro-units of USDC


FAILED = "FAILED"
SETTLED = "CONFIRMED"


def pending(status: str) -> bool:
    """A fill whose trade is not settled on chain yet (nor failed): MATCHED, MINED, RETRYING."""
    return status.upper() not in (SETTLED, FAILED)


class Holding:
    __slots__ = ("token_id", "market", "size", "cost", "realized", "fees", "pending")

    def __init__(self, token_id: str, market: str) -> None:
        self.token_id = token_id
        self.market = market
        self.size = ZERO
        self.cost = ZERO  # what the shares held cost, fees apart
        self.realized = ZERO
        self.fees = ZERO
        self.pending = ZERO  # of size, the net shares of fills not settled on chain yet

    @property
    def settled(self) -> Decimal:
        return self.size - self.pending

    @property
    def avg_price(self) -> Decimal:
        return self.cost / self.size if self.size else ZERO

    def position(self) -> m.Position:
        return m.Position(token_id=self.token_id, market=self.market, size=self.size, avg_price=self.avg_price,
                          realized=self.realized, fees=self.fees, pending=self.pending)


def utc_day(ms: int) -> str:
    """The UTC day (YYYY-MM-DD) of an epoch time in ms: the day the venue counts a trade's rebate in."""
    return time.strftime("%Y-%m-%d", time.gmtime(ms // 1000))


class Earned(NamedTuple):
    """One maker fill's part in its day's rebates in its market."""

    source: str
    token_id: str
    estimate: Decimal  # the fill's rebate as we estimate it
    weight: Decimal  # its fee-curve weight, size x p(1 - p): how the venue shares a market's rebates out


class Credit(NamedTuple):
    """Rebates credited to one (market, source, token): ``amount`` in all, ``estimated`` the part of it that the
    venue has not reported (yet)."""

    market: str
    source: str
    token_id: str
    amount: Decimal
    estimated: Decimal


class Rebates:
    """Maker rebates per (UTC day, market): the venue's reported total where it gave one, else our estimate.

    A day's amount in a market is shared out over the maker fills that earned it, by their estimates (by their
    fee-curve weights where every estimate is 0), in micro-units, the last fill taking what rounding leaves, so the
    parts add up to the amount exactly. An amount the venue reported where we know of no maker fill is credited to
    the market alone (no source, no token).
    """

    def __init__(self) -> None:
        self.earned: dict[tuple[str, str], list[Earned]] = {}  # (day, market) -> our maker fills
        self.estimates: dict[tuple[str, str], Decimal] = {}  # (day, market) -> the sum of their estimates
        self.reports: dict[tuple[str, str], m.Rebate] = {}  # (day, market) -> the venue's latest report

    def fill(self, fill: m.Fill) -> None:
        """Count a maker fill (the caller counts each fill once); taker fills earn nothing."""
        if fill.liquidity != "MAKER":
            return
        day = utc_day(fill.venue_ts_ms or fill.ts_ns // 1_000_000)
        weight = fill.size * fill.price * (ONE - fill.price)
        key = (day, fill.market)
        self.earned.setdefault(key, []).append(Earned(fill.source, fill.token_id, fill.rebate, weight))
        self.estimates[key] = self.estimates.get(key, ZERO) + fill.rebate

    def unfill(self, fill: m.Fill) -> None:
        """Take back a maker fill counted by ``fill`` (its trade failed)."""
        if fill.liquidity != "MAKER":
            return
        key = (utc_day(fill.venue_ts_ms or fill.ts_ns // 1_000_000), fill.market)
        earned = self.earned.get(key, [])
        mine = Earned(fill.source, fill.token_id, fill.rebate, fill.size * fill.price * (ONE - fill.price))
        if mine not in earned:
            return
        earned.remove(mine)  # equal entries are alike: whichever goes, what is left is the same
        self.estimates[key] -= fill.rebate
        if not earned:
            del self.earned[key], self.estimates[key]

    def report(self, msg: m.Rebate) -> bool:
        """The venue's total for a day and market; False when it says nothing new."""
        key = (msg.day, msg.market)
        known = self.reports.get(key)
        if known is not None and (known.amount, known.final) == (msg.amount, msg.final):
            return False
        self.reports[key] = msg
        return True

    def _amount(self, key: tuple[str, str]) -> tuple[Decimal, bool]:
        """A day's rebates in a market and whether they are our estimate."""
        report = self.reports.get(key)
        if report is not None:
            return report.amount, False
        return self.estimates[key].quantize(MICRO, ROUND_FLOOR), True

    def credits(self) -> list[Credit]:
        """What every (market, source, token) is credited, summed over days; by market, source, token."""
        out: dict[tuple[str, str, str], list[Decimal]] = {}
        for key in self.earned.keys() | self.reports.keys():
            amount, estimated = self._amount(key)
            for (source, token), part in _shares(amount, self.earned.get(key, [])):
                acc = out.setdefault((key[1], source, token), [ZERO, ZERO])
                acc[0] += part
                if estimated:
                    acc[1] += part
        return [Credit(market, source, token, amount, estimated)
                for (market, source, token), (amount, estimated) in sorted(out.items()) if amount]

    def total(self) -> tuple[Decimal, Decimal]:
        """(every rebate credited, the part of it estimated)."""
        amount = estimated = ZERO
        for key in self.estimates.keys() | self.reports.keys():
            value, guess = self._amount(key)
            amount += value
            estimated += value if guess else ZERO
        return amount, estimated


def _shares(amount: Decimal, earned: list[Earned]) -> list[tuple[tuple[str, str], Decimal]]:
    """``amount`` shared over the fills that earned it, by estimate, else by fee-curve weight, else equally."""
    if not earned:
        return [(("", ""), amount)]
    weights = [e.estimate for e in earned]
    if not any(weights):
        weights = [e.weight for e in earned]
    if not any(weights):
        weights = [ONE] * len(earned)
    whole = sum(weights, ZERO)
    parts = [(amount * w / whole).quantize(MICRO, ROUND_FLOOR) for w in weights[:-1]]
    parts.append(amount - sum(parts, ZERO))  # the last takes what rounding leaves
    return [((e.source, e.token_id), part) for e, part in zip(earned, parts)]


Settlement = tuple[str, str]  # a resolved market: (market, winning token)


class Ledger:
    def __init__(self) -> None:
        self.holdings: dict[str, Holding] = {}
        self.by_source: dict[tuple[str, str], Decimal] = {}  # (source, token) -> net shares its fills bought
        self.seen: set[tuple[str, str]] = set()  # (trade id, order id): a fill reported twice counts once
        self.rebates = Rebates()
        # What the holdings are built from, to rebuild them without a fill whose trade failed: the view ``load``
        # gave (and its time), then every fill and settlement since, in order.
        self.base: tuple[list[m.Position], list[m.SourceHolding]] = ([], [])
        self.base_ns = 0
        self.history: list[m.Fill | Settlement] = []
        self.counted: dict[tuple[str, str], m.Fill] = {}  # the fills in ``history``
        self.unsettled: set[tuple[str, str]] = set()  # counted fills still pending on chain
        self.reversed: set[tuple[str, str]] = set()  # fills whose trade failed
        self.resolved: set[str] = set()  # markets settled

    def holding(self, token_id: str, market: str = "") -> Holding:
        held = self.holdings.get(token_id)
        if held is None:
            held = self.holdings[token_id] = Holding(token_id, market)
        elif market and not held.market:
            held.market = market
        return held

    def apply(self, fill: m.Fill) -> bool:
        """Count one fill (pending or settled, as its status says); False when it was counted before, or its trade
        failed before it was counted (it never counts)."""
        key = (fill.trade_id, fill.order_id)
        if key in self.seen or fill.status.upper() == FAILED:
            return False
        self.seen.add(key)
        self.history.append(fill)
        self.counted[key] = fill
        if pending(fill.status):
            self.unsettled.add(key)
        self.rebates.fill(fill)
        self._count(fill)
        return True

    def moved(self, msg: m.FillStatus) -> bool:
        """A counted fill's trade settled (CONFIRMED: its shares are no longer pending) or failed (FAILED: the fill
        is reversed exactly). A status of a fill never heard of counts it as what it now is (one this ledger missed
        is counted settled; one that failed stays uncounted); one in the loaded view (counted before ``load``, or
        made before the view was) changes that view. False when it changes nothing."""
        fill, key = msg.fill, (msg.fill.trade_id, msg.fill.order_id)
        if key in self.reversed:
            return False
        unheard = key not in self.seen and fill.ts_ns > self.base_ns  # else counted, or in the loaded view
        if unheard and msg.status == SETTLED:
            return self.apply(msgspec.structs.replace(fill, status=msg.status))
        sign = fill.size if fill.side == "BUY" else -fill.size
        if msg.status == SETTLED:
            if key in self.counted and key not in self.unsettled:
                return False
            self.unsettled.discard(key)
            if fill.market not in self.resolved:  # a resolved market's shares were redeemed: none pend
                self.holding(fill.token_id, fill.market).pending -= sign
            return True
        self.seen.add(key)
        self.reversed.add(key)
        if unheard:  # never counted here: it never will be
            return False
        self.unsettled.discard(key)
        self.rebates.unfill(fill)
        if key in self.counted:
            del self.counted[key]
            self._rebuild()
        else:
            self._uncount(fill, sign)
        return True

    def _count(self, fill: m.Fill) -> None:
        held = self.holding(fill.token_id, fill.market)
        whose = (fill.source, fill.token_id)
        self.by_source[whose] = self.by_source.get(whose, ZERO) + (fill.size if fill.side == "BUY" else -fill.size)
        if (fill.trade_id, fill.order_id) in self.unsettled:
            held.pending += fill.size if fill.side == "BUY" else -fill.size
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

    def _rebuild(self) -> None:
        """The holdings from the loaded view and the history again, leaving out the reversed fills."""
        self._load(*self.base)
        for event in self.history:
            if isinstance(event, m.Fill):
                if (event.trade_id, event.order_id) not in self.reversed:
                    self._count(event)
            else:
                self._settle(*event)

    def _uncount(self, fill: m.Fill, sign: Decimal) -> None:
        """A fill in the loaded view taken back: a buy exactly; a sell at the average cost now (the one it released
        is not known)."""
        held = self.holding(fill.token_id, fill.market)
        whose = (fill.source, fill.token_id)
        self.by_source[whose] = self.by_source.get(whose, ZERO) - sign
        if fill.market not in self.resolved:
            held.pending -= sign  # it was pending: a trade that failed was never confirmed
        held.fees -= fill.fee
        held.realized += fill.fee
        if fill.side == "BUY":
            held.size -= fill.size
            held.cost -= fill.size * fill.price
            if held.size <= 0:
                held.cost = ZERO
        else:
            restored = held.avg_price * fill.size
            held.realized -= fill.size * fill.price - restored
            held.cost += restored
            held.size += fill.size

    def rebate(self, msg: m.Rebate) -> bool:
        """The venue's report of a day's maker rebates in a market; False when it says nothing new."""
        return self.rebates.report(msg)

    def settle(self, market: str, winning_token_id: str) -> None:
        """A resolved market: every share of it is redeemed at 1 (winner) or 0."""
        self.history.append((market, winning_token_id))
        self.resolved.add(market)
        self._settle(market, winning_token_id)

    def _settle(self, market: str, winning_token_id: str) -> None:
        for held in self.holdings.values():
            if held.market != market:
                continue
            held.pending = ZERO
            if held.size:
                payout = ONE if held.token_id == winning_token_id else ZERO
                held.realized += held.size * payout - held.cost
                held.size, held.cost = ZERO, ZERO
        for source, token in [k for k in self.by_source if self.holdings[k[1]].market == market]:
            del self.by_source[(source, token)]

    def load(self, positions: Iterable[m.Position], by_source: Iterable[m.SourceHolding] = (),
             as_of_ns: int = 0) -> None:
        """Replace every holding with a reconciled view (the executor's, which it reconciled with the venue), made
        at ``as_of_ns``: the fills made up to then, and how their trades settled up to then, are in it, and nothing
        since is (the caller applies what came since again, and only that: a fill's time tells which it is)."""
        self.base = (list(positions), list(by_source))
        self.base_ns = as_of_ns
        self.history, self.counted, self.seen, self.unsettled, self.reversed = [], {}, set(), set(), set()
        self._load(*self.base)

    def _load(self, positions: list[m.Position], by_source: list[m.SourceHolding]) -> None:
        self.holdings = {}
        for pos in positions:
            held = self.holding(pos.token_id, pos.market)
            held.size, held.cost = pos.size, pos.size * pos.avg_price
            held.realized, held.fees, held.pending = pos.realized, pos.fees, pos.pending
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
