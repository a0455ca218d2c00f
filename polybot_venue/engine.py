"""The local venue's matching engine: pure, exact (Decimal), with the clock passed in.

One book per binary market, kept in YES terms: a BUY of NO at q rests as an
ask of YES at 1 - q, a SELL of NO at q as a bid at 1 - q. So the YES and NO
books are mirrors of each other, as on the real venue, and the four ways two
orders can meet all settle the same way: each side pays or receives its own
price for the shares it buys or sells (BUY YES + BUY NO mints a pair, SELL
YES + SELL NO merges one).
"""
from __future__ import annotations

import hashlib
import itertools
import time
from bisect import insort
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal


GTD_MIN_LEAD_S = 60  # Polymarket's rule: a GTD order's expiration is at least this far ahead
ZERO = Decimal(0)
ONE = Decimal(1)
FEE_QUANTUM = Decimal("0.00001")
REBATE_QUANTUM = Decimal("0.000001")  # rebates are paid and reported in micro-units of pUSD
REBATE_MIN_PAYOUT = ONE  # Polymarket pays a day's rebates once at least $1 has accrued
HEARTBEAT_TIMEOUT_MS = 10_000
UNITS = Decimal(10**6)  # collateral and shares are 6-decimal tokens
MAX_UINT = 2**256 - 1
UNLIMITED = Decimal(MAX_UINT) / UNITS  # an approval of 2^256 - 1 units: ERC-20 tokens never spend it down
# The exchange contracts (CLOB V2) orders are settled through: regular markets, then neg-risk ones (see auth.py).
EXCHANGES = ("0xE111180000d2663C0091e4f400237545B87B996B", "0xe2222d279d744050d28e00520010520000310F59")
NOT_ENOUGH = "not enough balance / allowance"


class VenueError(Exception):
    """A request the venue refuses; ``message`` is the real venue's text."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class Market:
    condition_id: str
    question: str
    slug: str
    tokens: tuple[str, str]  # (YES, NO)
    outcomes: tuple[str, str] = ("Yes", "No")
    tick: Decimal = Decimal("0.01")
    min_size: Decimal = Decimal("5")
    fee_rate: Decimal = ZERO  # feeSchedule.rate: takers pay shares x rate x (p(1 - p))^fee_exponent
    fee_exponent: Decimal = ONE
    rebate_rate: Decimal = ZERO  # feeSchedule.rebateRate: the share of taker fees paid back to makers
    category: str = ""
    neg_risk: bool = False
    neg_risk_market_id: str = ""
    event_id: str = ""
    end_ms: int = 0
    active: bool = True
    closed: bool = False
    accepting_orders: bool = True
    winner: str = ""  # winning token once resolved
    market_id: str = ""  # Gamma's numeric id
    description: str = ""
    start_ms: int = 0
    group_item_title: str = ""  # a neg-risk member's outcome name
    protocol: str = "v1"  # Gamma's `version`: "v2" markets' tokens are protocol-v2 position ids, traded on exchange V3

    @property
    def exchange_version(self) -> int:
        """The EIP-712 domain version its orders are signed for: 3 for protocol-v2 positions, else 2."""
        return 3 if self.protocol == "v2" else 2

    def outcome_of(self, token_id: str) -> str:
        return self.outcomes[self.tokens.index(token_id)]

    def is_yes(self, token_id: str) -> bool:
        return token_id == self.tokens[0]

    def fee_per_share(self, price: Decimal) -> Decimal:
        """The taker fee on one share at ``price``, unrounded."""
        return fee_per_share(price, self.fee_rate, self.fee_exponent)


@dataclass
class Order:
    id: str
    owner: str  # api key
    address: str
    market: Market
    token_id: str
    side: str  # BUY / SELL of token_id
    price: Decimal  # in token_id's terms
    size: Decimal
    order_type: str = "GTC"
    expiration: int = 0  # seconds, GTD only
    created_ms: int = 0
    seq: int = 0
    matched: Decimal = ZERO
    status: str = "LIVE"  # LIVE, MATCHED, CANCELED
    reserve_per_share: Decimal = ZERO  # collateral (BUY) or shares (SELL) held per unfilled share
    trades: list[str] = field(default_factory=list)

    @property
    def remaining(self) -> Decimal:
        return self.size - self.matched

    @property
    def yes_side(self) -> str:
        if self.market.is_yes(self.token_id):
            return self.side
        return "SELL" if self.side == "BUY" else "BUY"

    @property
    def yes_price(self) -> Decimal:
        return self.price if self.market.is_yes(self.token_id) else ONE - self.price


@dataclass
class MakerFill:
    order: Order
    size: Decimal
    price: Decimal  # in the maker's token terms


@dataclass
class Trade:
    id: str
    market: Market
    taker: Order
    maker: MakerFill
    size: Decimal
    price: Decimal  # in the taker's token terms
    fee: Decimal  # paid by the taker, collateral
    match_ms: int
    transaction_hash: str
    status: str = "MATCHED"
    last_update_ms: int = 0


@dataclass
class Account:
    """One funder wallet's money, as the chain holds it: pUSD, conditional tokens, and what each exchange may move."""
    address: str
    collateral: Decimal = ZERO
    shares: dict[str, Decimal] = field(default_factory=dict)
    held_collateral: Decimal = ZERO
    held_shares: dict[str, Decimal] = field(default_factory=dict)
    allowances: dict[str, Decimal] = field(default_factory=dict)  # exchange -> pUSD it may spend (ERC-20 approve)
    approved: set[str] = field(default_factory=set)  # exchanges that may move its tokens (ERC-1155 setApprovalForAll)
    held_by_exchange: dict[str, Decimal] = field(default_factory=dict)  # collateral open BUYs hold, per exchange

    def available_collateral(self) -> Decimal:
        return self.collateral - self.held_collateral

    def available_allowance(self, exchange: str) -> Decimal:
        allowance = self.allowances.get(exchange, ZERO)
        return allowance if allowance >= UNLIMITED else allowance - self.held_by_exchange.get(exchange, ZERO)

    def available_shares(self, token: str) -> Decimal:
        return self.shares.get(token, ZERO) - self.held_shares.get(token, ZERO)


@dataclass
class Placement:
    order: Order
    trades: list[Trade]
    status: str  # live, matched, unmatched
    making: Decimal  # what the taker gave: collateral (BUY) or shares (SELL)
    taking: Decimal


class Book:
    """One binary market's resting orders, in YES terms, price-time priority."""

    def __init__(self) -> None:
        self.bids: dict[Decimal, deque[Order]] = {}
        self.asks: dict[Decimal, deque[Order]] = {}
        self.bid_prices: list[Decimal] = []  # ascending
        self.ask_prices: list[Decimal] = []  # ascending

    def add(self, order: Order) -> None:
        levels, prices = (self.bids, self.bid_prices) if order.yes_side == "BUY" else (self.asks, self.ask_prices)
        price = order.yes_price
        if price not in levels:
            levels[price] = deque()
            insort(prices, price)
        levels[price].append(order)

    def remove(self, order: Order) -> None:
        levels, prices = (self.bids, self.bid_prices) if order.yes_side == "BUY" else (self.asks, self.ask_prices)
        price = order.yes_price
        queue = levels.get(price)
        if queue is None:
            return
        try:
            queue.remove(order)
        except ValueError:
            return
        if not queue:
            del levels[price]
            prices.remove(price)

    def opposite(self, yes_side: str, limit: Decimal) -> Iterable[Order]:
        """Resting orders an incoming ``yes_side`` order at ``limit`` (YES terms) can meet, best first."""
        if yes_side == "BUY":
            for price in list(self.ask_prices):
                if price > limit:
                    return
                yield from list(self.asks.get(price, ()))
        else:
            for price in reversed(list(self.bid_prices)):
                if price < limit:
                    return
                yield from list(self.bids.get(price, ()))

    def depth(self, yes_side: str) -> list[tuple[Decimal, Decimal]]:
        """(price, total remaining) per level in YES terms, ascending by price."""
        levels, prices = (self.bids, self.bid_prices) if yes_side == "BUY" else (self.asks, self.ask_prices)
        return [(p, sum((o.remaining for o in levels[p]), ZERO)) for p in prices]


def fee_per_share(price: Decimal, rate: Decimal, exponent: Decimal = ONE) -> Decimal:
    """rate x (p(1 - p))^exponent: what py-clob-client-v2's fees.py charges per share."""
    if not rate:
        return ZERO
    curve = price * (ONE - price)
    return rate * (curve if exponent == ONE else curve ** exponent)


def taker_fee(shares: Decimal, price: Decimal, rate: Decimal, exponent: Decimal = ONE) -> Decimal:
    """Polymarket's taker fee in collateral: shares x rate x (p(1 - p))^exponent, floored to 5 decimals
    (the 21 captured V2 fills in fixtures/polymarket match this to the micro-unit)."""
    return (shares * fee_per_share(price, rate, exponent)).quantize(FEE_QUANTUM, rounding=ROUND_FLOOR)


def utc_day(ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ms // 1000))


def units(value: Decimal) -> str:
    """An amount as a 6-decimal integer string, as the venue reports balances and allowances."""
    return str(int((value * UNITS).to_integral_value(rounding=ROUND_FLOOR)))


def allowance_units(value: Decimal) -> str:
    """An allowance as the venue reports it: a maximal approval is exactly 2^256 - 1."""
    return str(MAX_UINT) if value >= UNLIMITED else units(value)


def fmt(value: Decimal) -> str:
    """A decimal as the venue writes it: no exponent, no trailing zeros."""
    text = f"{value.normalize():f}"
    return "0" if text in ("-0", "") else text


class Engine:
    def __init__(self, markets: Iterable[Market], clock, fee_account: str = "fees",
                 heartbeat_timeout_ms: int = HEARTBEAT_TIMEOUT_MS, exchanges: tuple[str, str] = EXCHANGES) -> None:
        self.exchanges = exchanges  # (regular, neg-risk[, V3]): the spenders a wallet approves
        self.markets: dict[str, Market] = {}
        self.token_market: dict[str, Market] = {}
        self.books: dict[str, Book] = {}
        for market in markets:
            self.add_market(market)
        self.clock = clock  # () -> ms
        self.orders: dict[str, Order] = {}
        self.trades: dict[str, Trade] = {}
        self.trade_log: list[Trade] = []
        self.accounts: dict[str, Account] = {}
        self.heartbeats: dict[str, int] = {}  # owner -> last heartbeat ms
        self.heartbeat_timeout_ms = heartbeat_timeout_ms
        self.last_trade: dict[str, tuple[Decimal, str]] = {}  # token -> (price, side)
        self.volume: dict[str, Decimal] = {}  # condition id -> traded notional
        self.fee_account = fee_account
        # What happened, for the user channel: ("order", PLACEMENT|UPDATE|CANCELLATION, Order) or ("trade", Trade).
        self.outbox: list[tuple] = []
        self.unconfirmed: list[Trade] = []
        # Maker rebates not yet paid: (UTC day, maker address lowercased, condition id) -> accrued collateral.
        self.rebates: dict[tuple[str, str, str], Decimal] = {}
        self.rebates_paid: dict[tuple[str, str, str], Decimal] = {}
        self._seq = itertools.count(1)
        self._trade_seq = itertools.count(1)

    # ---------------------------------------------------------------- setup

    def add_market(self, market: Market) -> None:
        self.markets[market.condition_id] = market
        for token in market.tokens:
            self.token_market[token] = market
        self.books[market.condition_id] = Book()

    def account(self, address: str) -> Account:
        key = address.lower()
        if key not in self.accounts:
            self.accounts[key] = Account(address=address)
        return self.accounts[key]

    def fund(self, address: str, collateral: Decimal = ZERO, shares: dict[str, Decimal] | None = None) -> None:
        account = self.account(address)
        account.collateral += collateral
        for token, amount in (shares or {}).items():
            account.shares[token] = account.shares.get(token, ZERO) + amount

    def approve(self, address: str, exchanges: Iterable[str] | None = None, collateral: Decimal | None = None,
                conditional: bool | None = None) -> Account:
        """What the wallet's on-chain approvals would do: set each exchange's pUSD allowance (ERC-20 approve sets,
        it does not add) and/or its right to move the wallet's conditional tokens; every exchange by default."""
        account = self.account(address)
        for exchange in self.exchanges if exchanges is None else exchanges:
            if exchange not in self.exchanges:
                raise VenueError(f"unknown exchange {exchange}: one of {', '.join(self.exchanges)}")
            if collateral is not None:
                account.allowances[exchange] = min(collateral, UNLIMITED)
            if conditional is not None:
                (account.approved.add if conditional else account.approved.discard)(exchange)
        return account

    def exchange_of(self, market: Market) -> str:
        """The exchange contract that settles ``market``'s orders: neg-risk markets have their own, protocol-v2
        positions settle on exchange V3 (the third, when the venue has one)."""
        if market.protocol == "v2" and len(self.exchanges) > 2:
            return self.exchanges[2]
        return self.exchanges[1] if market.neg_risk else self.exchanges[0]

    def market_of(self, token_id: str) -> Market:
        market = self.token_market.get(token_id)
        if market is None:
            raise VenueError("market not found", 404)
        return market

    # ---------------------------------------------------------------- orders

    def place(self, *, order_id: str, owner: str, address: str, token_id: str, side: str, price: Decimal,
              size: Decimal, order_type: str = "GTC", expiration: int = 0, post_only: bool = False) -> Placement:
        """Validate, match and (for GTC/GTD) rest one order; raises VenueError with the venue's text."""
        market = self.market_of(token_id)
        now = self.clock()
        if order_id in self.orders:
            raise VenueError(f"order {order_id} is invalid. Duplicated.")
        if market.closed or not market.accepting_orders:
            raise VenueError("the market is not accepting orders")
        if order_type in ("FOK", "FAK") and post_only:
            raise VenueError("invalid post-only order: post-only is only supported for GTC and GTD orders")
        if price % market.tick != 0:
            raise VenueError(f"order {order_id} is invalid. Price ({fmt(price)}) breaks minimum tick size rule: "
                             f"{fmt(market.tick)}")
        if not market.tick <= price <= ONE - market.tick:
            raise VenueError(f"order {order_id} is invalid. Price ({fmt(price)}) is out of range: "
                             f"min {fmt(market.tick)}, max {fmt(ONE - market.tick)}")
        if order_type in ("GTC", "GTD") and size < market.min_size:
            raise VenueError(f"order {order_id} is invalid. Size ({fmt(size)}) lower than the minimum: "
                             f"{fmt(market.min_size)}")
        if size <= 0:
            raise VenueError(f"order {order_id} is invalid. Size ({fmt(size)}) must be positive")
        if order_type == "GTD" and expiration < now // 1000 + GTD_MIN_LEAD_S:
            raise VenueError(f"order {order_id} is invalid. Expiration must be at least {GTD_MIN_LEAD_S}s "
                             "in the future")
        order = Order(id=order_id, owner=owner, address=address, market=market, token_id=token_id, side=side,
                      price=price, size=size, order_type=order_type, expiration=expiration, created_ms=now,
                      seq=next(self._seq))
        book = self.books[market.condition_id]
        # Self-trade prevention: an account's orders never meet each other (so one account can hold both
        # sides of a crossed book; the living markets use that for brief mispricings).
        makers = [m for m in book.opposite(order.yes_side, order.yes_price) if m.owner != owner]
        if post_only and makers:
            raise VenueError("invalid post-only order: order crosses book")
        if order_type == "FOK" and sum((m.remaining for m in makers), ZERO) < size:
            raise VenueError("order couldn't be fully filled. FOK orders are fully filled or killed.")
        account = self.account(address)
        self._hold(account, order)
        self.outbox.append(("order", "PLACEMENT", order))
        trades = self._match(order, makers, book, now)
        making = sum(((t.size * t.price + (t.fee if side == "BUY" else ZERO)) if side == "BUY" else t.size
                      for t in trades), ZERO)
        taking = sum((t.size if side == "BUY" else t.size * t.price - t.fee for t in trades), ZERO)
        if order.remaining > 0 and order_type in ("GTC", "GTD"):
            book.add(order)
        elif order.remaining > 0:  # FOK/FAK: what did not fill is killed
            self._release(order)
            order.status = "CANCELED" if order.matched == 0 else "MATCHED"
            self.outbox.append(("order", "CANCELLATION", order))
        self.orders[order_id] = order
        status = "matched" if trades else ("live" if order.status == "LIVE" else "unmatched")
        return Placement(order=order, trades=trades, status=status, making=making, taking=taking)

    def _hold(self, account: Account, order: Order) -> None:
        """Hold what ``order`` may spend, or refuse it with the venue's texts when the wallet's balance or the
        allowance of the market's exchange does not cover it plus what its open orders already hold."""
        exchange = self.exchange_of(order.market)
        if order.side == "BUY":
            # Enough for the whole size at the limit, plus the taker fee it might pay.
            order.reserve_per_share = order.price + order.market.fee_per_share(order.price)
            need = order.size * order.reserve_per_share
            if account.available_collateral() < need:
                raise VenueError(f"{NOT_ENOUGH}: the balance is not enough -> balance: {units(account.collateral)}, "
                                 f"sum of active orders: {units(account.held_collateral)}, order amount: {units(need)}")
            if account.available_allowance(exchange) < need:
                raise VenueError(
                    f"{NOT_ENOUGH}: the allowance is not enough -> spender: {exchange}, allowance: "
                    f"{units(account.allowances.get(exchange, ZERO))}, sum of active orders: "
                    f"{units(account.held_by_exchange.get(exchange, ZERO))}, order amount (inc. fees): {units(need)}")
            account.held_collateral += need
            account.held_by_exchange[exchange] = account.held_by_exchange.get(exchange, ZERO) + need
        else:
            order.reserve_per_share = ONE
            if account.available_shares(order.token_id) < order.size:
                raise VenueError(f"{NOT_ENOUGH}: the balance is not enough -> balance: "
                                 f"{units(account.shares.get(order.token_id, ZERO))}, sum of active orders: "
                                 f"{units(account.held_shares.get(order.token_id, ZERO))}, order amount: "
                                 f"{units(order.size)}")
            if exchange not in account.approved:
                raise VenueError(f"{NOT_ENOUGH}: the allowance is not enough -> spender: {exchange}, allowance: 0, "
                                 f"order amount: {units(order.size)}")
            account.held_shares[order.token_id] = account.held_shares.get(order.token_id, ZERO) + order.size

    def _release(self, order: Order, shares: Decimal | None = None) -> None:
        """Give back what ``order`` holds for ``shares`` of it (all that remains by default)."""
        qty = order.remaining if shares is None else shares
        account = self.account(order.address)
        if order.side == "BUY":
            exchange = self.exchange_of(order.market)
            account.held_collateral -= qty * order.reserve_per_share
            account.held_by_exchange[exchange] -= qty * order.reserve_per_share
        else:
            account.held_shares[order.token_id] -= qty

    def _match(self, taker: Order, makers: list[Order], book: Book, now: int) -> list[Trade]:
        trades = []
        for maker in makers:
            if taker.remaining <= 0:
                break
            qty = min(taker.remaining, maker.remaining)
            maker_price = maker.price
            yes_price = maker.yes_price
            taker_price = yes_price if taker.market.is_yes(taker.token_id) else ONE - yes_price
            fee = taker_fee(qty, taker_price, taker.market.fee_rate, taker.market.fee_exponent)
            self._settle(maker, qty, maker_price, ZERO)
            self._settle(taker, qty, taker_price, fee)
            trade_no = next(self._trade_seq)
            trade_id = f"{trade_no:08x}-{hashlib.sha256(f'{taker.id}:{maker.id}:{trade_no}'.encode()).hexdigest()[:24]}"
            trade = Trade(id=trade_id, market=taker.market, taker=taker, maker=MakerFill(maker, qty, maker_price),
                          size=qty, price=taker_price, fee=fee, match_ms=now, last_update_ms=now,
                          transaction_hash="0x" + hashlib.sha256(trade_id.encode()).hexdigest())
            for order in (taker, maker):
                order.trades.append(trade_id)
            if maker.remaining == 0:
                maker.status = "MATCHED"
                book.remove(maker)
            self.trades[trade_id] = trade
            self._accrue_rebate(trade)
            self.trade_log.append(trade)
            self.unconfirmed.append(trade)
            self.outbox += [("trade", trade), ("order", "UPDATE", maker), ("order", "UPDATE", taker)]
            self.last_trade[taker.token_id] = (taker_price, taker.side)
            self.volume[taker.market.condition_id] = self.volume.get(taker.market.condition_id, ZERO) + qty * taker_price
            self.last_trade[maker.token_id] = (maker_price, maker.side)
            trades.append(trade)
        if taker.remaining == 0:
            taker.status = "MATCHED"
        return trades

    def _settle(self, order: Order, qty: Decimal, price: Decimal, fee: Decimal) -> None:
        account = self.account(order.address)
        self._release(order, qty)
        order.matched += qty
        if order.side == "BUY":
            account.collateral -= qty * price + fee
            exchange = self.exchange_of(order.market)
            allowance = account.allowances.get(exchange, ZERO)
            if allowance < UNLIMITED:  # the exchange's transferFrom spends the approval down
                account.allowances[exchange] = max(ZERO, allowance - (qty * price + fee))
            account.shares[order.token_id] = account.shares.get(order.token_id, ZERO) + qty
        else:
            account.shares[order.token_id] -= qty
            account.collateral += qty * price - fee
        if fee:
            self.account(self.fee_account).collateral += fee

    # ---------------------------------------------------------------- rebates

    def _accrue_rebate(self, trade: Trade) -> None:
        """The maker of ``trade`` earns rebateRate x the taker fee it paid (our rule; see README: Polymarket
        splits rebateRate x a market's taker fees among its makers by fee-curve-weighted filled size, which is
        the same sum per trade, since a maker fill's fee-curve weight is that trade's taker fee)."""
        rebate = trade.fee * trade.market.rebate_rate
        if rebate:
            key = (utc_day(trade.match_ms), trade.maker.order.address.lower(), trade.market.condition_id)
            self.rebates[key] = self.rebates.get(key, ZERO) + rebate

    def rebated(self, day: str, maker: str) -> list[tuple[str, Decimal]]:
        """(condition id, rebate in collateral to the micro-unit) a maker earned on ``day``, paid or not."""
        out: dict[str, Decimal] = {}
        for book in (self.rebates, self.rebates_paid):
            for (d, address, market), amount in book.items():
                if d == day and address == maker.lower():
                    out[market] = out.get(market, ZERO) + amount
        return sorted((m, a.quantize(REBATE_QUANTUM, rounding=ROUND_FLOOR)) for m, a in out.items())

    def pay_rebates(self, before_day: str | None = None, minimum: Decimal = ZERO) -> dict[str, Decimal]:
        """Credit makers the rebates accrued on days before ``before_day`` (all of them if None), floored to the
        micro-unit, from the fee account; a maker owed less than ``minimum`` in all waits. Returns who got what."""
        owed: dict[str, list[tuple[str, str, str]]] = {}
        for key in self.rebates:
            if before_day is None or key[0] < before_day:
                owed.setdefault(key[1], []).append(key)
        paid = {}
        for maker, keys in owed.items():
            amount = sum((self.rebates[k].quantize(REBATE_QUANTUM, rounding=ROUND_FLOOR) for k in keys), ZERO)
            if amount < minimum or amount <= 0:
                continue
            for k in keys:
                self.rebates_paid[k] = self.rebates_paid.get(k, ZERO) + self.rebates.pop(k)
            self.account(maker).collateral += amount
            self.account(self.fee_account).collateral -= amount
            paid[maker] = amount
        return paid

    # ---------------------------------------------------------------- cancels

    def cancel(self, owner: str, order_ids: Iterable[str]) -> tuple[list[str], dict[str, str]]:
        canceled, not_canceled = [], {}
        for order_id in order_ids:
            order = self.orders.get(order_id)
            if order is None or order.owner != owner:
                not_canceled[order_id] = "order not found"
            elif order.status != "LIVE":
                not_canceled[order_id] = "order can't be canceled: it is already matched or canceled"
            else:
                self._cancel(order)
                canceled.append(order_id)
        return canceled, not_canceled

    def cancel_market(self, condition_id: str) -> list[Order]:
        """Cancel every live order in one market, whoever owns it (the market is closing)."""
        gone = self.open_orders(None, condition_id)
        for order in gone:
            self._cancel(order)
        return gone

    def _cancel(self, order: Order) -> None:
        self.books[order.market.condition_id].remove(order)
        self._release(order)
        order.status = "CANCELED"
        self.outbox.append(("order", "CANCELLATION", order))

    def advance_trades(self, mined_after_ms: int, confirmed_after_ms: int) -> list[Trade]:
        """Move trades along MATCHED -> MINED -> CONFIRMED as time passes; return the ones that moved."""
        now = self.clock()
        moved = []
        for trade in self.unconfirmed:
            age = now - trade.match_ms
            status = "CONFIRMED" if age >= confirmed_after_ms else "MINED" if age >= mined_after_ms else "MATCHED"
            if status != trade.status:
                trade.status, trade.last_update_ms = status, now
                moved.append(trade)
                self.outbox.append(("trade", trade))
        self.unconfirmed = [t for t in self.unconfirmed if t.status != "CONFIRMED"]
        return moved

    def confirm_trade(self, trade_id: str) -> Trade:
        """A trade settles on chain now (CONFIRMED), however young it is; refused unless it is pending."""
        trade = self._pending_trade(trade_id, "confirm")
        trade.status, trade.last_update_ms = "CONFIRMED", self.clock()
        self.unconfirmed = [t for t in self.unconfirmed if t is not trade]
        self.outbox.append(("trade", trade))
        return trade

    def _pending_trade(self, trade_id: str, what: str) -> Trade:
        trade = self.trades.get(trade_id)
        if trade is None:
            raise VenueError(f"unknown trade {trade_id}", 404)
        if trade.status not in ("MATCHED", "MINED", "RETRYING"):
            raise VenueError(f"trade {trade_id} is {trade.status}: only a MATCHED, MINED or RETRYING trade can "
                             f"{what}", 409)
        return trade

    def fail_trade(self, trade_id: str, retrying: bool = False) -> Trade:
        """A trade's settlement on chain fails: ``retrying`` marks it RETRYING (the operator resubmits; nothing
        moves yet), else it is FAILED and what it moved goes back as if it never matched: the buyer's collateral
        (price and fee) and allowance, the seller's shares, the fee account's fee and the maker's rebate accrued.
        What the orders matched stays matched: a failed trade does not reopen them. Refused for a trade already
        CONFIRMED or FAILED, or when a wallet no longer holds what would go back out of it."""
        trade = self._pending_trade(trade_id, "fail")
        if retrying:
            trade.status, trade.last_update_ms = "RETRYING", self.clock()
            self.unconfirmed = [t for t in self.unconfirmed if t is not trade]  # it confirms no more on its own
            self.outbox.append(("trade", trade))
            return trade
        sides = [(trade.taker, trade.price, trade.fee), (trade.maker.order, trade.maker.price, ZERO)]
        for order, price, fee in sides:  # what each wallet gives back must still be in it
            account = self.account(order.address)
            if order.side == "BUY" and account.available_shares(order.token_id) < trade.size:
                raise VenueError(f"trade {trade_id} cannot fail: {order.address} no longer holds the "
                                 f"{fmt(trade.size)} shares it bought (sold or held by open orders)", 409)
            if order.side == "SELL" and account.available_collateral() < trade.size * price - fee:
                raise VenueError(f"trade {trade_id} cannot fail: {order.address} no longer holds the "
                                 f"{fmt(trade.size * price - fee)} pUSD its sale brought", 409)
        for order, price, fee in sides:
            self._unsettle(order, trade.size, price, fee)
        rebate = trade.fee * trade.market.rebate_rate
        if rebate:  # taken off what the maker accrued that day, paid or not (a negative balance pays out less)
            key = (utc_day(trade.match_ms), trade.maker.order.address.lower(), trade.market.condition_id)
            self.rebates[key] = self.rebates.get(key, ZERO) - rebate
        trade.status, trade.last_update_ms = "FAILED", self.clock()
        self.unconfirmed = [t for t in self.unconfirmed if t is not trade]
        self.outbox.append(("trade", trade))
        return trade

    def _unsettle(self, order: Order, qty: Decimal, price: Decimal, fee: Decimal) -> None:
        """``_settle`` undone: the wallet's collateral, allowance and shares as before the trade."""
        account = self.account(order.address)
        if order.side == "BUY":
            account.collateral += qty * price + fee
            exchange = self.exchange_of(order.market)
            allowance = account.allowances.get(exchange, ZERO)
            if allowance < UNLIMITED:  # the transferFrom that spent it never happened
                account.allowances[exchange] = allowance + qty * price + fee
            account.shares[order.token_id] -= qty
        else:
            account.shares[order.token_id] = account.shares.get(order.token_id, ZERO) + qty
            account.collateral -= qty * price - fee
        if fee:
            self.account(self.fee_account).collateral -= fee

    def open_orders(self, owner: str | None = None, market: str = "", asset_id: str = "",
                    order_id: str = "") -> list[Order]:
        return [o for o in self.orders.values()
                if o.status == "LIVE" and (owner is None or o.owner == owner)
                and (not market or o.market.condition_id == market) and (not asset_id or o.token_id == asset_id)
                and (not order_id or o.id == order_id)]

    # ---------------------------------------------------------------- time

    def heartbeat(self, owner: str) -> None:
        self.heartbeats[owner] = self.clock()

    def tick(self) -> list[Order]:
        """Expire GTD orders and cancel the orders of owners whose heartbeats stopped; return what was canceled."""
        now = self.clock()
        self.pay_rebates(before_day=utc_day(now), minimum=REBATE_MIN_PAYOUT)
        gone = []
        silent = {owner for owner, last in self.heartbeats.items() if now - last > self.heartbeat_timeout_ms}
        for owner in silent:
            del self.heartbeats[owner]
        for order in list(self.orders.values()):
            if order.status != "LIVE":
                continue
            if order.owner in silent or (order.order_type == "GTD" and order.expiration * 1000 <= now):
                self._cancel(order)
                gone.append(order)
        return gone

    # ---------------------------------------------------------------- views

    def book_levels(self, token_id: str) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        """(bids, asks) for ``token_id`` in its own terms, each best first."""
        market = self.market_of(token_id)
        book = self.books[market.condition_id]
        yes_bids, yes_asks = book.depth("BUY"), book.depth("SELL")
        if market.is_yes(token_id):
            return list(reversed(yes_bids)), yes_asks
        return [(ONE - p, s) for p, s in yes_asks], [(ONE - p, s) for p, s in reversed(yes_bids)]

    def best(self, token_id: str) -> tuple[Decimal | None, Decimal | None]:
        bids, asks = self.book_levels(token_id)
        return (bids[0][0] if bids else None), (asks[0][0] if asks else None)
