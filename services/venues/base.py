"""What the executor sees of a venue: our own order, fill and error types, and the small async interface
that the live venue (``polymarket.client.PolymarketVenue``) and the paper venue (``paper.PaperVenue``)
both implement. Venue wire formats and third-party exceptions never get past an implementation.
"""
from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Literal, Protocol

from msgspec import Struct

from .. import messages as m

ZERO = Decimal(0)
ONE = Decimal(1)
FEE_QUANTUM = Decimal("0.00001")
SIZE_QUANTUM = Decimal("0.01")  # order sizes carry at most 2 decimals at every tick size
GTD_MIN_LEAD_S = 60  # a GTD order's expiration must be at least this many seconds ahead when it arrives

# Why an order was refused: OrderRejected.code. Venue texts map onto these (see polymarket.client).
TICK_SIZE = "TICK_SIZE"
MIN_SIZE = "MIN_SIZE"
PRICE_RANGE = "PRICE_RANGE"
BALANCE = "BALANCE"
FOK_UNFILLED = "FOK_UNFILLED"
POST_ONLY_CROSSES = "POST_ONLY_CROSSES"
DUPLICATE = "DUPLICATE"
MARKET_CLOSED = "MARKET_CLOSED"
EXPIRATION = "EXPIRATION"
UNKNOWN_MARKET = "UNKNOWN_MARKET"
AUTH = "AUTH"
RATE_LIMITED = "RATE_LIMITED"
UNAVAILABLE = "VENUE_UNAVAILABLE"
# The venue's bad days: a matching-engine restart (425), the post-only window after it, heartbeats that fail, and
# an account whose wallet cannot pay (its balance, or the exchanges' allowance to spend it).
RESTARTING = "VENUE_RESTARTING"
POST_ONLY_WINDOW = "POST_ONLY_WINDOW"
HEARTBEAT_FAILING = "HEARTBEAT_FAILING"
NO_BALANCE = "NO_BALANCE"
NO_ALLOWANCE = "NO_ALLOWANCE"
REJECTED = "REJECTED"  # refused, for a reason no other code names (the message says which)


class VenueError(Exception):
    """The venue refused, or could not be asked. ``unknown`` means a request may or may not have taken effect;
    ``retry_after_s``, when the venue said how long to wait before asking again (0: it did not)."""

    def __init__(self, code: str, message: str, unknown: bool = False, retry_after_s: float = 0.0) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.unknown = unknown
        self.retry_after_s = retry_after_s


class MarketRules(Struct, frozen=True, kw_only=True):
    token_id: str
    market: str
    tick: Decimal
    min_size: Decimal
    neg_risk: bool = False
    fee_rate: Decimal = ZERO
    complement: str = ""  # the other token of a binary market: its book mirrors this one's
    fee_exponent: Decimal = ONE
    exchange_version: int = 2  # the exchange its orders are signed for: 3 (exchange V3) for protocol-v2 positions
    rebate_rate: Decimal = ZERO  # the share of each taker fee the venue pays the trade's maker


class OrderRequest(Struct, frozen=True, kw_only=True):
    """One order as the venue gets it: price and size already rounded to the market's rules."""

    client_id: str
    token_id: str
    market: str
    side: m.Side
    price: Decimal
    size: Decimal
    order_type: m.OrderType
    rules: MarketRules
    post_only: bool = False
    expires_s: int = 0
    created_ms: int = 0  # signed into the order, so the same order always has the same venue id


class Placed(Struct, frozen=True, kw_only=True):
    """The venue's answer to one order of a batch: accepted (``status``) or refused (``code``)."""

    venue_order_id: str
    status: str = ""  # live | matched | delayed | unmatched
    matched: Decimal = ZERO  # shares matched at once
    code: str = ""
    message: str = ""

    @property
    def ok(self) -> bool:
        return not self.code


class VenueOrder(Struct, frozen=True, kw_only=True):
    """An order's state at the venue, from a REST answer or the user stream."""

    venue_order_id: str
    token_id: str
    market: str
    side: m.Side
    price: Decimal
    size: Decimal
    matched: Decimal
    status: Literal["LIVE", "MATCHED", "CANCELED"]
    order_type: m.OrderType = "GTC"
    reason: str = ""  # why it was canceled, when the venue says
    created_ms: int = 0


class VenueFill(Struct, frozen=True, kw_only=True):
    """One of our orders' part in one trade. ``fee_rate`` is the rate the trade reports (``charges`` takes the
    market's where the trade gives none)."""

    trade_id: str
    venue_order_id: str
    token_id: str
    market: str
    side: m.Side
    price: Decimal
    size: Decimal
    liquidity: m.Liquidity
    fee_rate: Decimal = ZERO
    status: str = "MATCHED"
    ts_ms: int = 0
    fee: Decimal | None = None  # set by a venue that charges it itself (paper); else the executor computes it
    rebate: Decimal | None = None  # a maker fill's estimated rebate, likewise


class Balance(Struct, frozen=True, kw_only=True):
    """The account's collateral (USDC) and what the exchanges may spend of it; None: not reported."""

    collateral: Decimal
    allowance: Decimal | None = None


class Resolution(Struct, frozen=True, kw_only=True):
    """A market's outcome as the venue reports it when asked: ``winner`` is the winning token, "" while the market
    has not resolved (or where the venue cannot tell)."""

    market: str
    winner: str = ""
    outcome: str = ""  # the winning outcome's name


VenueEvent = VenueFill | VenueOrder
OnEvents = Callable[[list[VenueEvent]], None]


class Venue(Protocol):
    """What the executor needs from a venue. Every call returns within its own timeout or raises VenueError."""

    mode: str  # "live" | "paper"

    async def start(self, on_events: OnEvents, on_connected: Callable[[], None]) -> None:
        """Connect and run until cancelled: the user stream and heartbeats. ``on_connected`` after every
        (re)connection of the stream, so the executor reconciles what it may have missed."""

    async def prepare(self, orders: list[OrderRequest]) -> list[Placed]:
        """Make each order ready to send (signed): the venue id it will have, known before it is sent, or why
        it cannot be sent (a Placed with a ``code``)."""

    async def place(self, orders: list[OrderRequest]) -> list[Placed]:
        """Submit together, in this order; one Placed per order. VenueError when the whole batch failed."""

    async def cancel(self, venue_order_ids: list[str]) -> dict[str, str]:
        """Each id mapped to "" when canceled, else the venue's reason."""

    async def open_orders(self) -> list[VenueOrder]: ...

    async def order(self, venue_order_id: str) -> VenueOrder | None:
        """The order as the venue knows it; None when it never reached the venue."""

    async def trades(self, token_ids: list[str] | None = None) -> list[VenueFill]:
        """Our fills, every one the venue still reports (all tokens, or just these)."""

    async def rules(self, token_id: str, market: str) -> MarketRules:
        """A market's rules from the venue itself, for a token the scanner has not described."""

    async def balance(self) -> Balance | None:
        """The account's collateral and allowance; None where there is no account to ask (paper)."""

    async def resolution(self, market: str) -> Resolution:
        """Whether a market has resolved, and to which token: asked for the markets held, so a resolution announced
        while no one listened is settled all the same."""

    def send_delay(self, orders: int) -> float:
        """Seconds until ``orders`` more orders may go without passing the venue's rate limit (0: now)."""

    def heartbeat_failing(self) -> str:
        """Why the venue's heartbeats fail now; "" while they are answered, or where there are none."""

    def observe(self, msg: m.Message) -> None:
        """Market data from the bus (the paper venue fills against it; the live venue ignores it)."""

    def close(self) -> None: ...

    def detail(self) -> dict[str, str]: ...


def fee_per_share(price: Decimal, rate: Decimal, exponent: Decimal = ONE) -> Decimal:
    """The taker fee on one share, unrounded: rate x (p(1 - p))^exponent (py-clob-client-v2 ``fees.py``)."""
    if not rate:
        return ZERO
    curve = price * (ONE - price)
    return rate * (curve if exponent == ONE else curve ** exponent)


def taker_fee(shares: Decimal, price: Decimal, rate: Decimal, exponent: Decimal = ONE) -> Decimal:
    """Polymarket's taker fee in collateral: shares x rate x (p(1 - p))^exponent, floored to 5 decimals.
    Makers pay none."""
    return (shares * fee_per_share(price, rate, exponent)).quantize(FEE_QUANTUM, rounding=ROUND_FLOOR)


def maker_rebate(shares: Decimal, price: Decimal, rules: MarketRules) -> Decimal:
    """What a trade earns its maker: the market's rebate rate x the trade's taker fee, unrounded (the venue sums a
    day's rebates per market and floors the total to the micro-unit). The fee curve p(1 - p) is symmetric, so the
    fee at the maker's price is the taker's, whichever token the taker bought."""
    if not rules.rebate_rate:
        return ZERO
    return rules.rebate_rate * taker_fee(shares, price, rules.fee_rate, rules.fee_exponent)


def charges(fill: VenueFill, rules: MarketRules | None) -> tuple[Decimal, Decimal]:
    """(fee paid, rebate estimated) of one fill: as the venue set them where it did (paper), else by the market's
    fee schedule (a taker's fee at the rate its trade reports, else the market's); no rules, no rebate."""
    if fill.fee is not None:
        fee = fill.fee
    elif fill.liquidity == "TAKER":
        fee = taker_fee(fill.size, fill.price, fill.fee_rate or (rules.fee_rate if rules is not None else ZERO),
                        rules.fee_exponent if rules is not None else ONE)
    else:
        fee = ZERO
    if fill.rebate is not None:
        rebate = fill.rebate
    elif fill.liquidity == "MAKER" and rules is not None:
        rebate = maker_rebate(fill.size, fill.price, rules)
    else:
        rebate = ZERO
    return fee, rebate


def round_price(side: m.Side, price: Decimal, tick: Decimal) -> Decimal:
    """To the tick, never more aggressive than asked: a BUY rounds down, a SELL up."""
    steps = (price / tick).to_integral_value(rounding=ROUND_FLOOR if side == "BUY" else ROUND_CEILING)
    return steps * tick


def round_size(size: Decimal) -> Decimal:
    return size.quantize(SIZE_QUANTUM, rounding=ROUND_FLOOR)


def rules_from(market: m.MarketNew) -> dict[str, MarketRules]:
    """A market's rules per token, from the scanner's description of it."""
    tokens = [o.token_id for o in market.outcomes]
    out = {}
    for token in tokens:
        other = [t for t in tokens if t != token]
        out[token] = MarketRules(token_id=token, market=market.market, tick=market.tick_size,
                                 min_size=market.min_size, neg_risk=market.neg_risk, fee_rate=market.fee_rate,
                                 fee_exponent=market.fee_exponent, complement=other[0] if len(tokens) == 2 else "",
                                 exchange_version=3 if market.protocol == "v2" else 2, rebate_rate=market.rebate_rate)
    return out
