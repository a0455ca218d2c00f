"""What the tools take and give: pydantic models, so every tool has an input and an output schema.

Money, prices and sizes are decimal strings in outputs (exact, as the venue has them) and numbers or strings
in inputs.
"""
from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, field_validator

from services.messages import MAX_QUANTITY
from services.venues.base import GTD_MIN_LEAD_S

Side = Literal["BUY", "SELL"]
OrderType = Literal["GTC", "GTD", "FOK", "FAK"]


def _within_any_market(value: Decimal) -> Decimal:
    if value > MAX_QUANTITY:
        raise ValueError(f"{value} is more than any market holds: give at most {MAX_QUANTITY:f}, and mind your "
                         "limits (get_risk shows them)")
    return value


# Inputs that are amounts: finite (pydantic refuses NaN and infinities), positive, and no more than any market holds.
Shares = Annotated[Decimal, Field(gt=0), AfterValidator(_within_any_market)]
Usdc = Annotated[Decimal, Field(gt=0), AfterValidator(_within_any_market)]



# Set on an answer read from analytics while it is catching up on records it missed (it was down).
INCOMPLETE = Field(None, description="Set while analytics is catching up on records it missed (it was down): these "
                                     "figures may be incomplete; ask again shortly")

class OutcomeView(BaseModel):
    name: str = Field(description="The outcome, e.g. Yes or No, or a candidate in a multi-outcome event")
    token_id: str | None = Field(None, description="The token to trade this outcome with (get_market gives it; "
                                                   "a leg may name the market and outcome instead)")
    best_bid: str | None = Field(None, description="Highest bid, or null with no bids")
    bid_size: str | None = Field(None, description="Shares bid at best_bid")
    best_ask: str | None = Field(None, description="Lowest ask, or null with no asks")
    ask_size: str | None = Field(None, description="Shares offered at best_ask")
    last_trade: str | None = Field(None, description="Price of the latest trade seen, if any")


class MarketSummary(BaseModel):
    market: str = Field(description="The market's condition id")
    question: str
    slug: str = Field(description="Also names the market wherever a tool takes one")
    outcomes: list[OutcomeView]
    volume: str = Field(description="Volume in USDC, as the venue reported it when the market was loaded")
    liquidity: str
    spread: str | None = Field(None, description="Best ask minus best bid of the first outcome, when both show")
    end: str | None = Field(None, description="End date (UTC, ISO 8601), if any")
    accepting_orders: bool
    stale: bool = Field(description="True while the feed for this market reconnects: risk refuses orders on it")
    tick_size: str = Field(description="Prices must be multiples of this")
    min_size: str = Field(description="Smallest order, in shares")
    fee_rate: str = Field(description="Taker fee rate: fee = shares x rate x p x (1 - p); makers pay none")
    event: str = Field("", description="The neg-risk event's id (its markets share it; exactly one resolves YES), "
                                       "or empty")


class MarketList(BaseModel):
    markets: list[MarketSummary]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page; null on the last")
    total: int = Field(description="How many markets matched")


class MarketIndex(BaseModel):
    markets: list[MarketSummary]


class MarketDetail(MarketSummary):
    neg_risk: bool = Field(description="Part of a multi-outcome event where exactly one outcome resolves YES")


class Level(BaseModel):
    price: str
    size: str = Field(description="Shares shown at this price")


class OrderBook(BaseModel):
    token_id: str
    market: str
    outcome: str
    bids: list[Level] = Field(description="Best (highest) first")
    asks: list[Level] = Field(description="Best (lowest) first")
    stale: bool


MIN_PRICE = Decimal("0.0001")  # the finest tick a market has


def _money_text(value: object) -> object:
    """'$10', ' 10 USDC' -> '10': the unit written out is no reason to refuse a number."""
    if isinstance(value, str):
        return value.strip().removeprefix("$").removesuffix("USDC").removesuffix("usdc").strip().replace(",", "")
    return value


class LegIn(BaseModel):
    token_id: str | None = Field(None, description="The outcome's token id (from get_market or scan_opportunities); "
                                                   "or give market and outcome instead")
    market: str | None = Field(None, description="The market's condition id or slug, with `outcome`")
    outcome: str | None = Field(None, description="Outcome name within `market`, e.g. Yes")
    side: Side = Field(description="BUY or SELL (any case)")
    size: Decimal | None = Field(None, description="Shares; or give `notional` (USDC) instead")
    notional: Decimal | None = Field(None, description="USDC to spend at the limit price; converted to shares "
                                                       "(rounded down to what the venue fills exactly)")
    limit_price: Decimal = Field(description="Worst price accepted, in USDC per share between 0 and 1 (0.45, not "
                                             "45), on the market's tick")
    order_type: OrderType = Field("GTC", description="GTC rests; FOK fills whole now or not at all; FAK fills what "
                                                     "it can now; GTD rests until `expires`")
    post_only: bool = Field(False, description="GTC/GTD only: rest without taking; refused if it would cross")
    expires: str | None = Field(None, description="GTD only, and required there: when it expires, a duration "
                                                  "from now (30m, 2h, 1d) or an ISO time; at least "
                                                  f"{GTD_MIN_LEAD_S} s ahead")

    @field_validator("side", mode="before")
    @classmethod
    def _side(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("order_type", mode="before")
    @classmethod
    def _order_type(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, value: object) -> object:
        if isinstance(value, str) and "$" in value:
            raise ValueError(f"size is in shares, not dollars: to spend {value.strip()} give `notional` "
                             f"{_money_text(value)} instead of `size`")
        return value

    @field_validator("notional", mode="before")
    @classmethod
    def _notional(cls, value: object) -> object:
        return _money_text(value)

    @field_validator("limit_price", mode="before")
    @classmethod
    def _price(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().endswith(("c", "¢")):
            try:
                cents = Decimal(value.strip().rstrip("c¢").strip())
            except InvalidOperation:
                cents = None
            if cents is None or not cents.is_finite():
                raise ValueError(f"limit_price is a number of USDC per share between 0 and 1 (0.45), not "
                                 f"{value.strip()[:40]!r}")
            raise ValueError(f"limit_price is in USDC per share: {value.strip()} is {cents / 100}")
        return _money_text(value)

    @field_validator("size", "notional")
    @classmethod
    def _positive(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and not (value.is_finite() and value > 0):
            raise ValueError(f"must be a positive number, not {value}")
        return value if value is None else _within_any_market(value)

    @field_validator("limit_price")
    @classmethod
    def _in_range(cls, value: Decimal) -> Decimal:
        if not value.is_finite():
            raise ValueError(f"must be a number between 0 and 1, not {value}")
        if 1 <= value < 100:
            raise ValueError(f"prices run between 0 and 1 (USDC per share): a price of {value} is written "
                             f"{(value / 100).normalize():f}")
        if not 0 < value < 1:
            raise ValueError(f"prices run between 0 and 1 (USDC per share), exclusive; {value} is outside")
        if value < MIN_PRICE:
            raise ValueError(f"{value:.3g} is below the finest tick any market has ({MIN_PRICE}); give a price on "
                             "the market's tick (get_market shows it)")
        return value


class LegOut(BaseModel):
    """A leg ready to pass to propose_signal as it is (outcome is for reading)."""

    token_id: str
    outcome: str
    side: Side
    size: str
    limit_price: str
    order_type: OrderType


class OpportunityView(BaseModel):
    key: str = Field(description="The market's condition id (binary) or the neg-risk event's id")
    kind: Literal["binary", "neg_risk"]
    question: str = Field(description="The market's question; for an event, its members' questions joined")
    side: Side = Field(description="BUY: the set costs less than the 1 it pays; SELL: its bids pay more than 1")
    edge: str = Field(description="USDC per set at the best prices, after taker fees")
    depth: str = Field(description="Sets available while each further set keeps its edge")
    sets: str = Field(description="Sets the legs trade: the depth, cut to your limits and to exact fills")
    cost: str = Field(description="USDC the legs pay (BUY) or receive (SELL) before fees")
    fees: str = Field(description="Taker fees on those sets, as the venue charges them")
    profit: str = Field(description="Locked-in USDC for those sets: sets - cost - fees (BUY)")
    legs: list[LegOut] = Field(description="Pass as propose_signal's legs (FOK: all fill or none); empty when "
                                           "`why` says it cannot be sized")
    why: str = Field("", description="Why no legs: below the minimum size, budget too small...")
    note: str = ""


class Opportunities(BaseModel):
    opportunities: list[OpportunityView] = Field(description="Most profit first")
    scanned: int = Field(description="Markets looked at")
    max_cost: str = Field(description="The most one opportunity's legs may cost: your agent budget left")
    next_step: str


class ReasonView(BaseModel):
    code: str = Field(description="Reason code, e.g. ORDER_NOTIONAL, POSITION_TOKEN, AGENT_BUDGET, STALE_BOOK")
    message: str
    leg: int | None = None
    limit: str | None = Field(None, description="The limit that was hit")
    value: str | None = Field(None, description="The value risk saw")
    max_size: str | None = Field(None, description="The largest size of this leg that would pass (0: none would)")


class Verdict(BaseModel):
    signal_id: str
    status: Literal["accepted", "rejected", "pending", "pending_approval"] = Field(
        description="pending: risk had not answered within the wait, follow it with get_signal; "
                    "pending_approval: it passed every check and waits for a human to approve it (live money)")
    expires: str | None = Field(None, description="pending_approval: when it expires unapproved (UTC)")
    next_step: str | None = Field(None, description="What happens next, in words")
    reasons: list[ReasonView] = []
    max_size: str | None = Field(None, description="The largest size (every leg the same) that would pass every "
                                                   "size-bound check, when a size-bound check refused")
    order_ids: list[str] = Field([], description="One client order id per leg, for get_signal and cancel_orders")
    legs: list[dict[str, str]] = Field([], description="The legs as sent: token, side, size, limit, type, and post_only and expires_s when set")
    outcome: Outcome | None = Field(None, description="With wait='fills': what the orders did")


class LegResult(BaseModel):
    order_id: str
    outcome: str = Field(description="The outcome traded, e.g. Yes")
    side: Side
    asked: str = Field(description="Shares the order asked for")
    filled: str = Field(description="Shares filled")
    avg_price: str | None = Field(None, description="Average fill price, when it filled")
    fees: str = Field(description="Fees paid on its fills, in USDC")
    state: str = Field(description="filled, partial, rest canceled, canceled, rejected: why, resting, or open "
                                   "(no final answer within the wait)")


class Outcome(BaseModel):
    done: bool = Field(description="Every order has its final answer (filled, killed, rejected) or rests")
    legs: list[LegResult]
    paid: str = Field(description="USDC paid for buys less USDC received for sells, before fees")
    fees: str = Field(description="Total fees, in USDC")
    residual: str | None = Field(None, description="A multi-leg signal that did not complete: what is held "
                                                   "unhedged, as the executor reported it")


class Approval(BaseModel):
    """The client's confirmation dialog for a signal that waits for a human (live money)."""

    approve: bool = Field(False, description="Send these orders now, with real money")


class Hop(BaseModel):
    at_ms: str = Field(description="Milliseconds after the book update that caused the signal")
    hop: str
    actor: str
    detail: str


class SignalTrace(BaseModel):
    signal_id: str
    status: str = Field(description="rejected, accepted, open, filled, partially filled, canceled...")
    hops: list[Hop]
    orders: list[dict[str, str | None]]
    fills: list[dict[str, str | None]]
    incomplete: str | None = INCOMPLETE


class OpenOrderView(BaseModel):
    order_id: str
    signal_id: str
    source: str
    token_id: str
    market: str
    side: Side
    price: str
    size: str
    filled: str
    status: str
    order_type: str


class OpenOrders(BaseModel):
    orders: list[OpenOrderView]
    mode: str = Field(description="live or paper")


class CancelResult(BaseModel):
    order_id: str
    canceled: bool
    remaining: str | None = None
    detail: str


class CancelResults(BaseModel):
    canceled: int = Field(description="How many were confirmed canceled")
    results: list[CancelResult]
    detail: str


class UsageView(BaseModel):
    name: str
    limit: str
    used: str
    scope: str = ""


class HoldingView(BaseModel):
    token_id: str
    market: str
    size: str = Field(description="Shares this client's own fills bought and still hold")
    selling: str = Field(description="How many of them this client's open SELL orders already offer")
    sellable: str = Field(description="The most a new SELL of this token may be (size less selling)")


class VenueConditionView(BaseModel):
    code: str = Field(description="VENUE_RESTARTING, POST_ONLY_WINDOW, HEARTBEAT_FAILING, NO_BALANCE or NO_ALLOWANCE: "
                                  "risk refuses the orders it applies to with this code")
    message: str = Field(description="What it means and what to do")
    until: str | None = Field(None, description="When it is expected to end (UTC); null: until the venue shows "
                                                "otherwise")
    applies_to: str = Field(description="Which orders it holds back, e.g. `every order`, `BUY orders`, `orders that "
                                        "are not post-only`")


class RiskView(BaseModel):
    source: str = Field(description="This client's source name: its signals, orders and fills carry it")
    venue_conditions: list[VenueConditionView] = Field(
        [], description="What keeps the venue from taking some orders now (a restart, its post-only window, failing "
                        "heartbeats, a wallet that cannot pay); empty: it takes every order")
    collateral: str | None = Field(None, description="USDC the account holds at the venue, as last read; null in "
                                                     "paper mode or before the executor has read it")
    allowance: str | None = Field(None, description="USDC the exchanges may spend of it (`unlimited` when approved "
                                                    "without bound); orders beyond it are refused by the venue")
    balance_at: str | None = Field(None, description="When collateral and allowance were read (UTC)")
    halted: bool
    halt_reason: str
    limits: dict[str, str]
    usage: list[UsageView]
    agent_budget_left: str = Field(description="USDC this client may still commit today under "
                                               "agent.max_daily_notional")
    agent_signals_left_this_minute: int
    open_orders: int
    realized_pnl: str
    marked_pnl: str
    holdings: list[HoldingView] = Field(
        [], description="The shares this client bought itself: an agent sells only these (SOURCE_POSITION), unless "
                        "the operator allows more (limit agent.sell_any_source = 1)")


class FillView(BaseModel):
    at: str = Field(description="When the venue reported it (UTC)")
    trade_id: str
    order_id: str
    signal_id: str
    source: str = Field(description="Whose order: strategy:NAME or mcp:CLIENT")
    market: str
    outcome: str = Field(description="The outcome bought or sold, e.g. Yes")
    side: Side
    price: str
    size: str = Field(description="Shares")
    fee: str = Field(description="Fee paid, in USDC")
    liquidity: str = Field(description="taker or maker")
    status: str = Field(description="The trade's settlement on chain: MATCHED, MINED or RETRYING (pending), "
                                    "CONFIRMED (settled); a fill whose trade FAILED is reversed and not listed")


class FillPage(BaseModel):
    fills: list[FillView] = Field(description="Newest first")
    next_cursor: str | None = Field(None, description="Pass as `cursor` for older fills; null on the last page")
    incomplete: str | None = INCOMPLETE


class SignalSummary(BaseModel):
    signal_id: str
    at: str = Field(description="When it was sent (UTC)")
    source: str
    verdict: str = Field(description="accepted, rejected, pending approval, or none yet")
    orders: int = Field(description="Orders risk sent for it")
    legs: str
    reasons: str = Field("", description="Why risk refused it")
    rationale: str = ""


class SignalPage(BaseModel):
    signals: list[SignalSummary] = Field(description="Newest first")
    next_cursor: str | None = Field(None, description="Pass as `cursor` for older signals; null on the last page")
    incomplete: str | None = INCOMPLETE


class PositionView(BaseModel):
    market: str = Field(description="With outcome, names the position wherever a tool takes a market and an "
                                    "outcome (close_position, a leg)")
    question: str
    outcome: str
    size: str = Field(description="Shares held, counting fills whose trade is not settled on chain yet")
    settled: str = Field(description="Of size, the shares settled on chain (their trades CONFIRMED): what the wallet "
                                     "holds now")
    pending: str = Field(description="Of size, the net shares of fills whose trade is not settled yet (MATCHED, "
                                     "MINED, RETRYING; a pending sell counts negative). A trade that fails is reversed "
                                     "out of size, cost and PnL")
    avg_price: str = Field(description="Average cost per share")
    cost: str = Field(description="USDC paid for the shares held")
    mark: str | None = Field(None, description="The mid (or last trade) it is valued at; null with neither")
    unrealized: str | None = Field(None, description="Value at the mark (a complete set at its payout) minus cost")
    realized: str
    fees: str
    rebates: str = Field("0", description="Maker rebates this outcome's fills earned: as the venue reported them, "
                                          "else estimated (the market's rebate rate x the taker fee)")
    rebates_estimated: str = Field("0", description="The part of rebates that is our estimate, not yet reported by "
                                                    "the venue")
    pnl: str = Field(description="realized + unrealized + rebates")
    in_sets: str = Field(description="Shares held with every other outcome of the market: worth 1 per set")


class Positions(BaseModel):
    source: str = Field(description="Whose positions: a source, or `all` for the account as a whole")
    positions: list[PositionView]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page; null on the last")
    incomplete: str | None = INCOMPLETE


class PnlRow(BaseModel):
    group: str = Field(description="The market, source or token; `total` for the whole")
    question: str = Field("", description="The market's question, grouped by market or token")
    realized: str
    unrealized: str
    fees: str
    rebates: str = Field("0", description="Maker rebates earned: as the venue reported them per day and market, "
                                          "else estimated (the market's rebate rate x the taker fee)")
    rebates_estimated: str = Field("0", description="The part of rebates that is our estimate, not yet reported by "
                                                    "the venue (paper fills never are)")
    open_cost: str
    total: str = Field(description="realized + unrealized + rebates")
    total_at_since: str | None = Field(None, description="With since: the total as it stood then")
    period_realized: str | None = None
    period_fees: str | None = None
    period_rebates: str | None = None
    period_pnl: str | None = Field(None, description="With since: the change over the period")


class Pnl(BaseModel):
    by: str
    rows: list[PnlRow]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page; null on the last")
    incomplete: str | None = INCOMPLETE


class Rows(BaseModel):
    columns: list[str]
    rows: list[dict[str, str | int | float | bool | None]]
    next_cursor: str | None = None
