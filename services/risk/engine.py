"""Risk's state and checks, pure: messages in, reasons and orders out, time passed in.

Every check of every leg runs, so a refusal lists every reason at once; each reason carries its limit, the
value seen and the largest size of that leg that would pass with the other legs unchanged (0 when no size
would). A signal passes whole or not at all. Accepted orders count as open at once, so the next signal is
checked against them before the executor has even seen them.
"""
from __future__ import annotations

import datetime as dt
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal

from .. import messages as m
from ..books import Books
from ..ledger import ZERO, Ledger
from ..sizing import CENTS, exact_buy_size, exact_step, is_exact
from ..venues import base
from ..venues.base import GTD_MIN_LEAD_S
from .limits import AgentLimits, Grant, Limits, is_agent

SHARES = Decimal("0.01")  # the venue's size step
RATE_WINDOW_NS = 60 * 1_000_000_000
IOC = ("FOK", "FAK")  # market orders: they take what they can now and never rest

# Reason codes.
HALTED = "HALTED"
NOT_READY = "NOT_READY"
EXECUTOR_DOWN = "EXECUTOR_DOWN"
DUPLICATE_SIGNAL = "DUPLICATE_SIGNAL"
BAD_SIGNAL = "BAD_SIGNAL"
MARKET_NOT_TRADEABLE = "MARKET_NOT_TRADEABLE"
STALE_BOOK = "STALE_BOOK"
TICK_SIZE = "TICK_SIZE"
MIN_SIZE = "MIN_SIZE"
PRICE_TOO_FAR = "PRICE_TOO_FAR"
ORDER_NOTIONAL = "ORDER_NOTIONAL"
POSITION_TOKEN = "POSITION_TOKEN"
POSITION_MARKET = "POSITION_MARKET"
GROSS_EXPOSURE = "GROSS_EXPOSURE"
DAILY_LOSS = "DAILY_LOSS"
OPEN_ORDERS = "OPEN_ORDERS"
SIGNAL_RATE = "SIGNAL_RATE"
AGENT_BUDGET = "AGENT_BUDGET"
SOURCE_POSITION = "SOURCE_POSITION"
BAD_EXPIRY = "BAD_EXPIRY"
POST_ONLY = "POST_ONLY"
INEXACT_BUY = "INEXACT_BUY"
APPROVAL_EXPIRED = "APPROVAL_EXPIRED"
DECLINED = "DECLINED"
# An agent-authored strategy's own budget (``Grant``), set when the operator approved it; the operator's limits apply
# as well.
STRATEGY_NOT_APPROVED = "STRATEGY_NOT_APPROVED"
STRATEGY_MARKET = "STRATEGY_MARKET"
STRATEGY_ORDER_NOTIONAL = "STRATEGY_ORDER_NOTIONAL"
STRATEGY_GROSS_EXPOSURE = "STRATEGY_GROSS_EXPOSURE"
STRATEGY_DAILY_LOSS = "STRATEGY_DAILY_LOSS"
STRATEGY_OPEN_ORDERS = "STRATEGY_OPEN_ORDERS"
STRATEGY_SIGNAL_RATE = "STRATEGY_SIGNAL_RATE"


def utc_day(ts_ns: int) -> str:
    return dt.datetime.fromtimestamp(ts_ns / 1e9, dt.timezone.utc).date().isoformat()


def shares_for(money: Decimal, price: Decimal) -> Decimal:
    """The most shares ``money`` buys at ``price``, on the venue's size step (0 when none)."""
    if money <= 0 or price <= 0:
        return ZERO
    return (money / price).quantize(SHARES, rounding=ROUND_DOWN)


def echoed(signal: m.Signal) -> m.Signal | None:
    """The signal to send back with its verdict: not one whose numbers are bad (every receiver would skip the
    verdict for them); its reasons say what was wrong."""
    return None if m.number_fault(signal) else signal


def bad_numbers(signal: m.Signal) -> list[m.Reason]:
    """A BAD_SIGNAL reason for each leg whose size or limit price is not a number risk can reckon with (NaN,
    infinite, beyond any market): such a signal is refused before any sum is made with it."""
    out = []
    for i, leg in enumerate(signal.legs):
        if why := m.number_fault(leg):
            out.append(m.Reason(code=BAD_SIGNAL, leg=i, max_size=ZERO, message=(
                f"leg {i}: {why}; a size is a number of shares (positive, at most {m.MAX_QUANTITY:f}) and a "
                "limit price a number between 0 and 1")))
    return out


@dataclass
class Resting:
    order: m.Order
    filled: Decimal = ZERO

    @property
    def remaining(self) -> Decimal:
        return max(self.order.size - self.filled, ZERO)

    @property
    def buy_notional(self) -> Decimal:
        return self.remaining * self.order.limit_price if self.order.side == "BUY" else ZERO


@dataclass
class Day:
    """Today's figures that outlive a restart: the realized PnL the day began with, agent spending."""

    day: str = ""
    realized_start: Decimal = ZERO
    agent_notional: dict[str, Decimal] = field(default_factory=dict)


class RiskEngine:
    def __init__(self, limits: Limits, agent: AgentLimits, recent_signals: int = 100_000,
                 order_id: Callable[[m.Signal, int], str] | None = None) -> None:
        self.limits = limits
        self.agent = agent
        # (signal, leg) -> the client order id of that leg: fresh ids in the mesh; a backtest's are its signals'.
        self.order_id = order_id or (lambda signal, leg: m.new_id())
        self.markets: dict[str, m.MarketNew] = {}
        self.token_market: dict[str, str] = {}
        # market -> its tokens, a complete set worth 1. Not a neg-risk event's YES tokens: nothing says when every
        # market of an event is known, so those are marked to the books one by one.
        self.outcomes: dict[str, list[str]] = {}
        self.tick: dict[str, Decimal] = {}  # token -> tick size (changes come per token)
        self.closed: dict[str, str] = {}  # market -> why it takes no orders
        self.stale: set[str] = set()
        self.books = Books()
        self.ledger = Ledger()
        self.open: dict[str, Resting] = {}  # client order id -> order
        self.rates: dict[str, deque[int]] = {}
        self.day = Day()
        self.recent: deque[str] = deque(maxlen=recent_signals)
        self.recent_set: set[str] = set()
        self.fills_after_ns = 0  # fills up to this time are in the reconciled positions already
        self.venue: list[m.VenueCondition] = []  # what the executor says the venue does not take now
        # Agent-authored strategies by source (strategy:NAME): what the operator granted each; a source not here is
        # a shipped or configured strategy, under the operator's limits alone.
        self.grants: dict[str, Grant] = {}
        # Today's fills of each granted source, per token: [cash in less cash out less fees, net shares]; its day's
        # PnL is that cash plus the net shares at the mids (at their average price where no mid shows).
        self.flows_day = ""
        self.flows: dict[str, dict[str, list[Decimal]]] = {}

    # ---------------------------------------------------------------- what happened

    def observe(self, msg: m.Message) -> None:
        match msg:
            case m.BookSnapshot() | m.BookDelta():
                self.books.apply(msg)
            case m.MarketNew():
                self.markets[msg.market] = msg
                self.outcomes[msg.market] = [o.token_id for o in msg.outcomes]
                for outcome in msg.outcomes:
                    self.token_market[outcome.token_id] = msg.market
                    self.tick[outcome.token_id] = msg.tick_size
                if not msg.accepting_orders:
                    self.closed[msg.market] = "not accepting orders"
                else:
                    self.closed.pop(msg.market, None)
            case m.TickSizeChange():
                self.tick[msg.token_id] = msg.new_tick_size
            case m.MarketHalted():
                self.closed[msg.market] = f"halted{': ' + msg.reason if msg.reason else ''}"
            case m.MarketResolved():
                self.closed[msg.market] = "resolved"
                self.ledger.settle(msg.market, msg.winning_token_id)
            case m.MarketStale():
                (self.stale.update if msg.stale else self.stale.difference_update)(msg.markets)
            case m.Fill():
                if msg.ts_ns > self.fills_after_ns:
                    self.ledger.apply(msg)
                self._filled(msg)
                self._flow(msg, 1)
            case m.FillStatus():  # settled, or failed and reversed
                if msg.ts_ns > self.fills_after_ns:
                    self.ledger.moved(msg)
                if msg.status == "FAILED":
                    self._flow(msg.fill, -1)
            case m.OrderRejected() | m.OrderCanceled():
                self.open.pop(msg.order_id, None)
            case m.VenueStatus():
                self.venue = list(msg.conditions)

    def _filled(self, fill: m.Fill) -> None:
        rest = self.open.get(fill.order_id)
        if rest is not None:
            rest.filled += fill.size
            if rest.remaining <= 0:
                del self.open[fill.order_id]

    def _flow(self, fill: m.Fill, sign: int) -> None:
        """Count a granted strategy's fill (sign 1) or its reversal (-1) in its day."""
        if fill.source not in self.grants:
            return
        day = utc_day(fill.ts_ns)
        if day != self.flows_day:
            self.flows_day, self.flows = day, {}
        cash, shares = (fill.price * fill.size, -fill.size) if fill.side == "SELL" else (-fill.price * fill.size,
                                                                                       fill.size)
        flow = self.flows.setdefault(fill.source, {}).setdefault(fill.token_id, [ZERO, ZERO, ZERO, ZERO])
        flow[0] += sign * (cash - fill.fee)
        flow[1] += sign * shares
        flow[2] += sign * fill.size * fill.price  # what its fills traded, for their average price
        flow[3] += sign * fill.size

    def source_day_pnl(self, source: str, now_ns: int) -> Decimal:
        """A granted strategy's PnL today from its own fills: cash in and out with fees, and its net shares at the
        mids (where no mid shows, at the average price of its fills: their fees alone count)."""
        if self.flows_day != utc_day(now_ns):
            return ZERO
        total = ZERO
        for token, (cash, shares, traded, size) in self.flows.get(source, {}).items():
            mid = self.books.mid(token)
            if mid is None:
                mid = traded / size if size else ZERO
            total += cash + shares * mid
        return total

    def source_exposure(self, source: str) -> Decimal:
        """What a source's own shares cost (at the account's average price) plus its open BUYs at their limits."""
        held = sum((self.ledger.held_by(source, token) * h.avg_price for token, h in self.ledger.holdings.items()),
                   ZERO)
        return held + sum((r.buy_notional for r in self.open.values() if r.order.source == source), ZERO)

    def source_open(self, source: str) -> int:
        return sum(1 for r in self.open.values() if r.order.source == source)

    def reconcile(self, account: m.AccountReply, asked_ns: int, meanwhile: list[m.Message]) -> None:
        """Take the executor's reconciled account; keep our own orders sent after we asked (it may not know them).

        ``meanwhile``: the executions seen while the answer was on its way; those newer than it apply on top.
        """
        self.ledger.load(account.positions, account.holdings, account.ts_ns)
        self.fills_after_ns = account.ts_ns
        self.venue = list(account.venue)
        ours = {oid: rest for oid, rest in self.open.items() if rest.order.ts_ns >= asked_ns}
        self.open = {}
        for o in account.orders:
            self.open[o.order_id] = Resting(m.Order(
                id=o.order_id, ts_ns=o.ts_ns, signal_id=o.signal_id, leg=0, source=o.source, token_id=o.token_id,
                market=o.market, side=o.side, size=o.size, limit_price=o.price, order_type=o.order_type), o.filled)
        for msg in meanwhile:  # ours saw them already; the account's orders and positions did not if newer
            if msg.ts_ns <= account.ts_ns:
                continue
            if isinstance(msg, m.Fill):
                self.ledger.apply(msg)
                self._filled(msg)
            elif isinstance(msg, m.FillStatus):
                self.ledger.moved(msg)
            elif isinstance(msg, m.OrderRejected | m.OrderCanceled):
                self.open.pop(msg.order_id, None)
            elif isinstance(msg, m.MarketResolved):  # the executor settled what it held
                self.ledger.settle(msg.market, msg.winning_token_id)
        self.open.update(ours)

    # ---------------------------------------------------------------- figures

    def mark(self) -> dict[str, Decimal]:
        """Mid prices where both sides show; elsewhere a holding stays at cost."""
        return {token: mid for token in self.ledger.holdings if (mid := self.books.mid(token)) is not None}

    def marked_pnl(self) -> Decimal:
        """What the shares held are worth beyond their cost: complete sets at the 1 they pay, the rest at the mids."""
        return self.ledger.unrealized(self.mark(), self.ledger.market_sets(self.outcomes))

    def token_exposure(self, token: str) -> Decimal:
        held = self.ledger.holdings.get(token)
        cost = held.cost if held is not None and held.size > 0 else ZERO
        return cost + sum((r.buy_notional for r in self.open.values() if r.order.token_id == token), ZERO)

    def market_exposure(self, market: str) -> Decimal:
        tokens = {t for t, mk in self.token_market.items() if mk == market}
        tokens |= {t for t, h in self.ledger.holdings.items() if h.market == market}
        tokens |= {r.order.token_id for r in self.open.values() if r.order.market == market}
        return sum((self.token_exposure(t) for t in tokens), ZERO)

    def selling(self, source: str, token: str) -> Decimal:
        """The shares of ``token`` that ``source``'s open SELL orders still offer."""
        return sum((r.remaining for r in self.open.values() if r.order.source == source
                    and r.order.token_id == token and r.order.side == "SELL"), ZERO)

    def holdings(self) -> list[m.SourceHolding]:
        """Each source's shares per token (capped at what the account holds) and what its open SELLs offer."""
        out = []
        for h in self.ledger.source_holdings():
            held = self.ledger.held_by(h.source, h.token_id)
            if h.source and held > 0:
                out.append(m.SourceHolding(source=h.source, token_id=h.token_id, market=h.market, size=held,
                                           selling=self.selling(h.source, h.token_id)))
        return out

    def gross_exposure(self) -> Decimal:
        tokens = set(self.ledger.holdings) | {r.order.token_id for r in self.open.values()}
        return sum((self.token_exposure(t) for t in tokens), ZERO)

    def daily_pnl(self, now_ns: int) -> Decimal:
        self.roll(now_ns)
        return self.ledger.realized() - self.day.realized_start + self.marked_pnl()

    def rate(self, source: str, now_ns: int) -> int:
        """The source's signals in the last minute. A source quiet for a minute is forgotten, so sources that come
        and go (any peer on ``signals`` may name itself) cost nothing once they are gone."""
        window = self.rates.get(source)
        if not window:
            return 0
        while window and window[0] <= now_ns - RATE_WINDOW_NS:
            window.popleft()
        if not window:
            del self.rates[source]
        return len(window)

    def roll(self, now_ns: int) -> bool:
        """Start a new day when the UTC date changes; True when it did."""
        today = utc_day(now_ns)
        if self.day.day == today:
            return False
        self.day = Day(today, self.ledger.realized(), {})
        return True

    # ---------------------------------------------------------------- checks

    def check(self, signal: m.Signal, now_ns: int, *, halted: str = "", ready: bool = True,
              executor_up: bool = True, recheck: bool = False) -> list[m.Reason]:
        """Every reason to refuse ``signal`` now; empty means it passes.

        ``recheck``: the signal was decided on before (it waited for approval): its id and its place in its
        source's rate are its own, so those two checks are not made again.
        """
        if halted:
            return [m.Reason(code=HALTED, message=f"trading is halted ({halted}); an operator resumes it with "
                                                 "`polybot resume`", max_size=ZERO)]
        if not ready:
            return [m.Reason(code=NOT_READY, message="risk has not yet synced markets and positions; try again "
                                                    "in a few seconds", max_size=ZERO)]
        if signal.id in self.recent_set and not recheck:
            return [m.Reason(code=DUPLICATE_SIGNAL, message=f"signal {signal.id} was decided already", max_size=ZERO)]
        if not signal.legs:
            return [m.Reason(code=BAD_SIGNAL, message="a signal needs at least one leg", max_size=ZERO)]
        if bad := bad_numbers(signal):
            return bad
        reasons: list[m.Reason] = []
        if not executor_up:
            reasons.append(m.Reason(code=EXECUTOR_DOWN, message="no executor is connected to take orders; "
                                    "`polybot status` shows whether it runs: send a new signal once it does",
                                    max_size=ZERO))
        reasons += self._venue_conditions(signal, now_ns)
        grant = self.grants.get(signal.source)
        if grant is not None:
            if not grant.approved:
                return [m.Reason(code=STRATEGY_NOT_APPROVED, message=f"{signal.source} is not an approved strategy "
                                 f"({grant.why}); only the operator runs one: `polybot strategy approve`",
                                 max_size=ZERO)]
            reasons += self._strategy_budget(signal, grant, now_ns, recheck)
        agent = is_agent(signal.source)
        rate_limit = self.agent.max_signals_per_minute if agent else self.limits.max_signals_per_minute
        seen = self.rate(signal.source, now_ns)
        if seen >= rate_limit and not recheck:
            reasons.append(m.Reason(code=SIGNAL_RATE, message=f"{signal.source} sent {seen} signals in the last "
                                    f"minute; the limit is {rate_limit}", limit=Decimal(rate_limit),
                                    value=Decimal(seen), max_size=ZERO))
        open_limit = self.limits.max_open_orders
        if len(self.open) + len(signal.legs) > open_limit:
            reasons.append(m.Reason(code=OPEN_ORDERS, message=f"{len(self.open)} orders are open; {len(signal.legs)} "
                                    f"more would pass the limit of {open_limit}", limit=Decimal(open_limit),
                                    value=Decimal(len(self.open) + len(signal.legs)), max_size=ZERO))
        buys = [i for i, leg in enumerate(signal.legs) if leg.side == "BUY"]
        if buys:
            pnl = self.daily_pnl(now_ns)
            if -pnl >= self.limits.max_daily_loss:
                reasons.append(m.Reason(code=DAILY_LOSS, message=f"today's loss {-pnl:.2f} (realized and marked) has "
                                        f"reached the limit {self.limits.max_daily_loss}; only sells pass",
                                        limit=self.limits.max_daily_loss, value=-pnl, max_size=ZERO))
        for i, leg in enumerate(signal.legs):
            reasons += self._check_leg(signal, i, leg, now_ns)
        return reasons

    def _strategy_budget(self, signal: m.Signal, grant: Grant, now_ns: int, recheck: bool) -> list[m.Reason]:
        """The budget the operator granted an agent-authored strategy: every reason it refuses ``signal``."""
        source, out = signal.source, []
        whose = f"{source}'s budget"
        seen = self.rate(source, now_ns)
        if seen >= grant.max_signals_per_minute and not recheck:
            out.append(m.Reason(code=STRATEGY_SIGNAL_RATE, message=f"{source} sent {seen} signals in the last minute; "
                                f"{whose} allows {grant.max_signals_per_minute}",
                                limit=Decimal(grant.max_signals_per_minute), value=Decimal(seen), max_size=ZERO))
        have = self.source_open(source)
        if have + len(signal.legs) > grant.max_open_orders:
            out.append(m.Reason(code=STRATEGY_OPEN_ORDERS, message=f"{source} has {have} open orders; "
                                f"{len(signal.legs)} more would pass {whose} of {grant.max_open_orders}",
                                limit=Decimal(grant.max_open_orders), value=Decimal(have + len(signal.legs)),
                                max_size=ZERO))
        if any(leg.side == "BUY" for leg in signal.legs):
            pnl = self.source_day_pnl(source, now_ns)
            if -pnl >= grant.max_daily_loss:
                out.append(m.Reason(code=STRATEGY_DAILY_LOSS, message=f"{source}'s loss today {-pnl:.2f} has reached "
                                    f"{whose} of {grant.max_daily_loss}; only its sells pass",
                                    limit=grant.max_daily_loss, value=-pnl, max_size=ZERO))
        exposure = self.source_exposure(source)
        for i, leg in enumerate(signal.legs):
            market = self.token_market.get(leg.token_id, leg.market)
            if grant.markets and market not in grant.markets:
                out.append(m.Reason(code=STRATEGY_MARKET, leg=i, max_size=ZERO, message=(
                    f"leg {i}: market {market or leg.token_id} is not one {whose} allows: "
                    f"{', '.join(sorted(grant.markets))}")))
            notional = leg.size * leg.limit_price
            if notional > grant.max_order_notional:
                out.append(m.Reason(code=STRATEGY_ORDER_NOTIONAL, leg=i, message=(
                    f"leg {i}: {leg.size} x {leg.limit_price} = {notional} is over {whose} of "
                    f"{grant.max_order_notional} an order"), limit=grant.max_order_notional, value=notional,
                    max_size=shares_for(grant.max_order_notional, leg.limit_price)))
            if leg.side == "BUY":
                others = sum((lg.size * lg.limit_price for j, lg in enumerate(signal.legs)
                              if j != i and lg.side == "BUY"), ZERO)
                after = exposure + others + notional
                if after > grant.max_gross_exposure:
                    out.append(m.Reason(code=STRATEGY_GROSS_EXPOSURE, leg=i, message=(
                        f"leg {i}: {source}'s exposure would be {after} (held and open {exposure}, this signal "
                        f"{others + notional}); {whose} is {grant.max_gross_exposure}"),
                        limit=grant.max_gross_exposure, value=after,
                        max_size=shares_for(grant.max_gross_exposure - exposure - others, leg.limit_price)))
        return out

    def _venue_conditions(self, signal: m.Signal, now_ns: int) -> list[m.Reason]:
        """What the venue will not take now, as the executor learned it: a matching-engine restart, the post-only
        window after it, heartbeats that fail, a wallet that cannot pay."""
        out = []
        for c in self.venue:
            if c.until_ts_ns and c.until_ts_ns <= now_ns:  # over; the executor's next status says what follows
                continue
            legs = [leg for leg in signal.legs
                    if (not c.side or leg.side == c.side) and not (c.post_only_pass and leg.post_only)]
            if not legs:
                continue
            if c.code != base.NO_BALANCE:
                out.append(m.Reason(code=c.code, message=c.message, max_size=ZERO))
                continue
            cost = sum((leg.size * leg.limit_price for leg in legs), ZERO)
            held = sum((r.buy_notional for r in self.open.values()), ZERO)
            if c.available is not None and held + cost > c.available:
                out.append(m.Reason(code=c.code, message=f"{c.message} (this signal's BUYs cost {cost:.2f} and open "
                                    f"BUYs hold {held:.2f})", limit=c.available, value=held + cost, max_size=ZERO))
        return out

    def _check_leg(self, signal: m.Signal, i: int, leg: m.Leg, now_ns: int) -> list[m.Reason]:
        def reason(code: str, message: str, limit: Decimal | None = None, value: Decimal | None = None,
                   max_size: Decimal | None = ZERO) -> m.Reason:
            return m.Reason(code=code, message=f"leg {i}: {message}", leg=i, limit=limit, value=value,
                            max_size=max_size)

        if leg.size <= 0 or not 0 < leg.limit_price < 1:
            return [reason(BAD_SIGNAL, f"size {leg.size} must be positive and limit price {leg.limit_price} "
                                       "between 0 and 1")]
        market_id = self.token_market.get(leg.token_id)
        if market_id is None or (leg.market and leg.market != market_id):
            where = f" in market {leg.market}" if leg.market else ""
            return [reason(MARKET_NOT_TRADEABLE, f"token {leg.token_id}{where} is not a market the scanner follows")]
        market = self.markets[market_id]
        out: list[m.Reason] = []
        end_left_s = (market.end_ts_ms * 1_000_000 - now_ns) / 1e9 if market.end_ts_ms else None
        if market_id in self.closed:
            out.append(reason(MARKET_NOT_TRADEABLE, f"market {market_id} is {self.closed[market_id]}"))
        elif end_left_s is not None and end_left_s < self.limits.min_time_to_end_s:
            out.append(reason(MARKET_NOT_TRADEABLE, f"market {market_id} ends in {max(end_left_s, 0):.0f} s, within "
                              f"the {self.limits.min_time_to_end_s} s before its end when no orders go out",
                              Decimal(self.limits.min_time_to_end_s), Decimal(int(max(end_left_s, 0)))))
        if market_id in self.stale or leg.token_id not in self.books.levels:
            out.append(reason(STALE_BOOK, f"the book of {leg.token_id} is stale (its feed is reconnecting); "
                                          "wait for fresh prices"))
        tick = self.tick.get(leg.token_id, market.tick_size)
        if leg.limit_price % tick or not tick <= leg.limit_price <= 1 - tick:
            out.append(reason(TICK_SIZE, f"limit price {leg.limit_price} is not on the tick {tick} within "
                                         f"[{tick}, {1 - tick}]", limit=tick, value=leg.limit_price, max_size=None))
        if leg.size < market.min_size:
            out.append(reason(MIN_SIZE, f"size {leg.size} is below the market's minimum {market.min_size}",
                              limit=market.min_size, value=leg.size, max_size=None))
        elif leg.size % SHARES:
            out.append(reason(MIN_SIZE, f"size {leg.size} is finer than the venue's step {SHARES}", limit=SHARES,
                              value=leg.size, max_size=leg.size.quantize(SHARES, rounding=ROUND_DOWN)))
        if not leg.size % SHARES:
            out += self._inexact_buy(signal, leg, reason)
        out += self._order_type(leg, now_ns, reason)
        out += self._price_distance(leg, reason)
        out += self._money(signal, i, leg, market_id, now_ns, reason)
        out += self._own_shares(signal, i, leg, reason)
        return out

    def _order_type(self, leg: m.Leg, now_ns: int, reason) -> list[m.Reason]:
        """An expiry on GTD only and always, far enough ahead for the venue; post-only only on orders that rest."""
        out = []
        if leg.order_type == "GTD":
            earliest = math.ceil(now_ns / 1_000_000_000) + GTD_MIN_LEAD_S
            if leg.expires_s < earliest:
                given = f"expires_s {leg.expires_s} is {earliest - leg.expires_s} s too early" if leg.expires_s \
                    else "it has no expires_s"
                out.append(reason(BAD_EXPIRY, f"a GTD order needs expires_s, the epoch second it expires, at least "
                                  f"{GTD_MIN_LEAD_S} s ahead (the venue's minimum): {earliest} or later; {given}",
                                  limit=Decimal(earliest), value=Decimal(leg.expires_s)))
        elif leg.expires_s:
            out.append(reason(BAD_EXPIRY, f"expires_s is for GTD orders only and this one is {leg.order_type}: "
                              "use order type GTD to have it expire, or leave expires_s out", limit=ZERO,
                              value=Decimal(leg.expires_s)))
        if leg.post_only and leg.order_type in IOC:
            out.append(reason(POST_ONLY, f"post_only is for orders that rest (GTC or GTD); a {leg.order_type} order "
                              "takes now or not at all: leave post_only out, or rest it as GTC", max_size=ZERO))
        return out

    def _inexact_buy(self, signal: m.Signal, leg: m.Leg, reason) -> list[m.Reason]:
        """A market BUY goes out as whole cents of USDC: a size whose cost is not whole cents fills fewer shares."""
        if leg.side != "BUY" or leg.order_type not in IOC or is_exact(leg.size, leg.limit_price):
            return []
        # Legs of one size (the sides of a pair) are offered one size that is exact for all of them.
        prices = [lg.limit_price for lg in signal.legs
                  if lg.side == "BUY" and lg.order_type in IOC and lg.size == leg.size]
        largest = exact_buy_size(leg.size, prices)
        step = exact_step([leg.limit_price])
        below = exact_buy_size(leg.size, [leg.limit_price])
        nearest = below + step if not below or below + step - leg.size < leg.size - below else below
        cost = leg.size * leg.limit_price
        together = f"; {largest.normalize():f} is the largest size exact for every leg of size {leg.size}" \
            if len(prices) > 1 else ""
        return [reason(INEXACT_BUY, f"a {leg.order_type} BUY is sent as whole cents of USDC, and {leg.size} x "
                       f"{leg.limit_price} = {cost} is not, so it would buy fewer shares than {leg.size}; sizes exact "
                       f"at {leg.limit_price} are multiples of {step.normalize():f}, the nearest "
                       f"{nearest.normalize():f}{together}",
                       limit=CENTS, value=cost, max_size=largest)]

    def _own_shares(self, signal: m.Signal, i: int, leg: m.Leg, reason) -> list[m.Reason]:
        """An agent SELLs only what its own fills bought, less what its open SELL orders already offer."""
        if leg.side != "SELL" or not is_agent(signal.source) or self.agent.sell_any_source:
            return []
        source, token = signal.source, leg.token_id
        own = self.ledger.held_by(source, token)
        selling = self.selling(source, token)
        others = sum((lg.size for j, lg in enumerate(signal.legs) if j != i and lg.side == "SELL"
                      and lg.token_id == token), ZERO)
        free = max(own - selling - others, ZERO)
        if leg.size <= free:
            return []
        held = self.ledger.holdings.get(token)
        account = held.size if held is not None and held.size > 0 else ZERO
        offered = f", {selling} of them offered by its open SELL orders already" if selling else ""
        offered += f", {others} by this signal's other legs" if others else ""
        whose = self._whose(source, token, account - own)
        return [reason(SOURCE_POSITION, f"{source} may sell only shares its own fills bought: it holds {own} of "
                       f"{token}{offered}, so {free} more at most; {whose}",
                       limit=own, value=leg.size, max_size=free)]

    def _whose(self, source: str, token: str, rest: Decimal) -> str:
        """Whose the account's other shares of ``token`` are, and how an operator lets agents sell them."""
        if rest <= 0:
            return "the account holds no other shares of it"
        bought = sorted(((s, q) for (s, t), q in self.ledger.by_source.items()
                         if t == token and s != source and s and q > 0), key=lambda sq: (-sq[1], sq[0]))
        named = [f"{q} bought by {s}" for s, q in bought]
        unknown = rest - sum((q for _, q in bought), ZERO)
        if unknown > 0:
            named.append(f"{unknown} by no source the executor's journal knows")
        return (f"the account's other {rest} shares are not its to sell ({', '.join(named)}); an operator can let "
                "agents sell them with [services.risk.options.agent] sell_any_source = true")

    def _price_distance(self, leg: m.Leg, reason) -> list[m.Reason]:
        bid, ask = self.books.best_bid(leg.token_id), self.books.best_ask(leg.token_id)
        if leg.side == "BUY":
            ref = (ask or bid or (None,))[0]
            past = leg.limit_price - ref if ref is not None else None
            against = "best ask" if ask else "best bid"
        else:
            ref = (bid or ask or (None,))[0]
            past = ref - leg.limit_price if ref is not None else None
            against = "best bid" if bid else "best ask"
        limit = self.limits.max_price_deviation
        if past is not None and past > limit:
            return [reason(PRICE_TOO_FAR, f"{leg.side} at {leg.limit_price} is {past} past the {against} {ref}; "
                                          f"the most allowed is {limit}", limit=limit, value=past)]
        return []

    def _money(self, signal: m.Signal, i: int, leg: m.Leg, market_id: str, now_ns: int, reason) -> list[m.Reason]:
        out = []
        price, notional = leg.limit_price, leg.size * leg.limit_price
        agent = is_agent(signal.source)
        cap = min(self.limits.max_order_notional, self.agent.max_order_notional) if agent \
            else self.limits.max_order_notional
        if notional > cap:
            out.append(reason(ORDER_NOTIONAL, f"{leg.size} x {price} = {notional} is over the "
                              f"{'agent ' if agent else ''}order limit {cap}", cap, notional, shares_for(cap, price)))
        if agent:
            self.roll(now_ns)
            spent = self.day.agent_notional.get(signal.source, ZERO)
            others = sum((lg.size * lg.limit_price for j, lg in enumerate(signal.legs) if j != i), ZERO)
            budget = self.agent.max_daily_notional
            if spent + others + notional > budget:
                out.append(reason(AGENT_BUDGET, f"{signal.source} has used {spent} of its daily budget {budget}; "
                                  f"this signal needs {others + notional} more", budget, spent + others + notional,
                                  shares_for(budget - spent - others, price)))
        if leg.side != "BUY":
            return out

        def other_buys(keep) -> Decimal:
            return sum((lg.size * lg.limit_price for j, lg in enumerate(signal.legs)
                        if j != i and lg.side == "BUY" and keep(lg)), ZERO)

        checks = [
            (POSITION_TOKEN, f"position in {leg.token_id}", self.limits.max_position_per_token,
             self.token_exposure(leg.token_id) + other_buys(lambda lg: lg.token_id == leg.token_id)),
            (POSITION_MARKET, f"position in market {market_id}", self.limits.max_position_per_market,
             self.market_exposure(market_id) + other_buys(
                 lambda lg: self.token_market.get(lg.token_id) == market_id)),
            (GROSS_EXPOSURE, "gross exposure", self.limits.max_gross_exposure,
             self.gross_exposure() + other_buys(lambda lg: True)),
        ]
        for code, what, limit, before in checks:
            if before + notional > limit:
                out.append(reason(code, f"{what} would be {before + notional} (held and open {before}, this leg "
                                  f"{notional}); the limit is {limit}", limit, before + notional,
                                  shares_for(limit - before, price)))
        return out

    # ---------------------------------------------------------------- decisions

    def decide(self, signal: m.Signal, now_ns: int, **conditions) -> list[m.Reason]:
        """``check`` a new signal; once decided (unless it was a duplicate) it counts toward its source's rate and
        cannot be decided again. ``conditions``: ``check``'s halted, ready and executor_up."""
        reasons = self.check(signal, now_ns, **conditions)
        if not reasons or reasons[0].code != DUPLICATE_SIGNAL:
            self.record(signal, now_ns)
        return reasons

    def verdict(self, signal: m.Signal, reasons: list[m.Reason],
                now_ns: int) -> m.SignalAccepted | m.SignalRejected:
        """Accepted with its orders (counted open from now on) when nothing refuses it, else rejected with the
        reasons: how risk turns a decided signal into orders, in the mesh and in a backtest alike."""
        if reasons:
            return m.SignalRejected(trace_id=signal.trace_id, signal_id=signal.id, source=signal.source,
                                    reasons=reasons, signal=echoed(signal))
        return m.SignalAccepted(trace_id=signal.trace_id, signal_id=signal.id, source=signal.source,
                                orders=self.accept(signal, now_ns), signal=signal)

    def record(self, signal: m.Signal, now_ns: int) -> None:
        """A decided signal counts toward its source's rate and cannot be decided again."""
        self.rates.setdefault(signal.source, deque()).append(now_ns)
        if len(self.recent) == self.recent.maxlen:
            self.recent_set.discard(self.recent[0])
        self.recent.append(signal.id)
        self.recent_set.add(signal.id)

    def accept(self, signal: m.Signal, now_ns: int) -> list[m.Order]:
        """The signal's orders, counted as open from now on."""
        orders = []
        for i, leg in enumerate(signal.legs):
            order = m.Order(id=self.order_id(signal, i), ts_ns=now_ns, trace_id=signal.trace_id, signal_id=signal.id,
                            leg=i, source=signal.source,
                            token_id=leg.token_id, market=leg.market or self.token_market[leg.token_id],
                            side=leg.side, size=leg.size, limit_price=leg.limit_price, order_type=leg.order_type,
                            post_only=leg.post_only, expires_s=leg.expires_s)
            self.open[order.id] = Resting(order)
            orders.append(order)
        if is_agent(signal.source):
            self.roll(now_ns)
            spent = sum((leg.size * leg.limit_price for leg in signal.legs), ZERO)
            self.day.agent_notional[signal.source] = self.day.agent_notional.get(signal.source, ZERO) + spent
        return orders

    def withdraw(self, orders: list[m.Order]) -> None:
        """Orders that never reached the executor are not open."""
        for order in orders:
            self.open.pop(order.id, None)

    def usage(self, now_ns: int) -> list[m.Usage]:
        lim = self.limits
        out = [m.Usage(name="max_gross_exposure", limit=lim.max_gross_exposure, used=self.gross_exposure()),
               m.Usage(name="max_open_orders", limit=Decimal(lim.max_open_orders), used=Decimal(len(self.open))),
               m.Usage(name="max_daily_loss", limit=lim.max_daily_loss, used=max(-self.daily_pnl(now_ns), ZERO))]
        tokens = set(self.ledger.holdings) | {r.order.token_id for r in self.open.values()}
        if tokens:
            worst = max(sorted(tokens), key=self.token_exposure)
            out.append(m.Usage(name="max_position_per_token", limit=lim.max_position_per_token,
                               used=self.token_exposure(worst), scope=worst))
            markets = {r.order.market for r in self.open.values()} | {
                h.market for h in self.ledger.holdings.values() if h.market}
            if markets:
                worst_m = max(sorted(markets), key=self.market_exposure)
                out.append(m.Usage(name="max_position_per_market", limit=lim.max_position_per_market,
                                   used=self.market_exposure(worst_m), scope=worst_m))
        for source in sorted(self.rates):
            if not (used := self.rate(source, now_ns)):
                continue
            limit = self.agent.max_signals_per_minute if is_agent(source) else lim.max_signals_per_minute
            out.append(m.Usage(name="max_signals_per_minute", limit=Decimal(limit), used=Decimal(used), scope=source))
        for source, grant in sorted(self.grants.items()):
            if grant.approved:
                out += [m.Usage(name="strategy.max_gross_exposure", limit=grant.max_gross_exposure,
                                used=self.source_exposure(source), scope=source),
                        m.Usage(name="strategy.max_open_orders", limit=Decimal(grant.max_open_orders),
                                used=Decimal(self.source_open(source)), scope=source),
                        m.Usage(name="strategy.max_daily_loss", limit=grant.max_daily_loss,
                                used=max(-self.source_day_pnl(source, now_ns), ZERO), scope=source)]
        for source, spent in sorted(self.day.agent_notional.items()):
            out.append(m.Usage(name="agent.max_daily_notional", limit=self.agent.max_daily_notional, used=spent,
                               scope=source))
        return out
