"""What the tools take and give: pydantic models, so every tool has an input and an output schema.

Money, prices and sizes are decimal strings in outputs (exact, as the venue has them) and numbers or strings
in inputs.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field

from services.venues.base import GTD_MIN_LEAD_S

Side = Literal["BUY", "SELL"]
OrderType = Literal["GTC", "GTD", "FOK", "FAK"]


class OutcomeView(BaseModel):
    name: str = Field(description="The outcome, e.g. Yes or No, or a candidate in a multi-outcome event")
    token_id: str = Field(description="The token to trade this outcome with (a leg's token_id)")
    best_bid: str | None = Field(None, description="Highest bid, or null with no bids")
    best_ask: str | None = Field(None, description="Lowest ask, or null with no asks")
    last_trade: str | None = Field(None, description="Price of the latest trade seen, if any")


class MarketSummary(BaseModel):
    market: str = Field(description="The market's condition id")
    question: str
    slug: str
    outcomes: list[OutcomeView]
    volume: str = Field(description="Volume in USDC, as the venue reported it when the market was loaded")
    liquidity: str
    spread: str | None = Field(None, description="Best ask minus best bid of the first outcome, when both show")
    end: str | None = Field(None, description="End date (UTC, ISO 8601), if any")
    accepting_orders: bool
    stale: bool = Field(description="True while the feed for this market reconnects: risk refuses orders on it")


class MarketList(BaseModel):
    markets: list[MarketSummary]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page; null on the last")
    total: int = Field(description="How many markets matched")


class MarketIndex(BaseModel):
    markets: list[MarketSummary]


class MarketDetail(MarketSummary):
    tick_size: str = Field(description="Prices must be multiples of this")
    min_size: str = Field(description="Smallest order, in shares")
    fee_rate: str = Field(description="Taker fee rate: fee = shares x rate x p x (1 - p); makers pay none")
    neg_risk: bool = Field(description="Part of a multi-outcome event where exactly one outcome resolves YES")
    event: str = Field(description="The neg-risk event's id, or empty")


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


class LegIn(BaseModel):
    token_id: str | None = Field(None, description="The outcome's token id (from get_market); or give market and "
                                                   "outcome instead")
    market: str | None = Field(None, description="Condition id of the market, with `outcome`")
    outcome: str | None = Field(None, description="Outcome name within `market`, e.g. Yes")
    side: Side
    size: Decimal | None = Field(None, gt=0, description="Shares; or give `notional` instead")
    notional: Decimal | None = Field(None, gt=0, description="USDC to spend at the limit price; converted to "
                                                             "shares (rounded down to 0.01)")
    limit_price: Decimal = Field(gt=0, lt=1, description="Worst price accepted, on the market's tick")
    order_type: OrderType = Field("GTC", description="GTC rests; FOK fills whole now or not at all; FAK fills what "
                                                     "it can now; GTD rests until it expires (give expires_s)")
    expires_s: int | None = Field(None, gt=0, description="GTD only, and required there: when the order expires, "
                                                          f"in epoch seconds, at least {GTD_MIN_LEAD_S} s from now")
    post_only: bool = Field(False, description="Rest only (GTC or GTD): the venue refuses it rather than let it "
                                               "take liquidity")


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
    order_ids: list[str] = Field([], description="One client order id per leg, for get_signal and cancel_order")
    legs: list[dict[str, str]] = Field([], description="The legs as sent: token, side, size, limit, type")


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


class RiskView(BaseModel):
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


class Rows(BaseModel):
    columns: list[str]
    rows: list[dict[str, str | int | float | bool | None]]
    next_cursor: str | None = None
