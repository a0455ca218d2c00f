"""Polymarket's REST and WebSocket payloads as msgspec Structs: one schema for the real venue and ours.

Naming: Python names are snake_case everywhere; the wire spelling lives only in
the Struct (``rename="camel"`` for Gamma and the order response, ``name=`` for
the spellings camel-casing cannot produce, e.g. ``questionID``, ``orderID``, and
for the one-letter keys of ``/clob-markets``). One style for every caller, and
``msgspec.structs.fields(S)[i].encode_name`` still gives the exact wire key.

Types are strict (a string where the wire has a number fails to decode) but
unknown keys are ignored: Polymarket adds fields without notice. Required
fields are the ones every captured payload carries and the adapter cannot
trade without; anything a capture omits or sends as null is Optional with a
default. Evolve by adding fields with defaults, never by loosening a type.
"""
from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Union

import msgspec
from msgspec import Struct, field

from ... import messages as m

Side = Literal["BUY", "SELL"]
OrderType = Literal["GTC", "GTD", "FOK", "FAK"]
TraderSide = Literal["TAKER", "MAKER"]
# Statuses stay `str`: the venue puts free text in them (a killed FOK order's
# status is "CANCELED_order couldn't be fully filled. ...").


class _Wire(Struct, frozen=True, kw_only=True):
    """Base of every payload: frozen, unknown keys ignored."""


class _Camel(_Wire, frozen=True, kw_only=True, rename="camel"):
    """A payload whose wire keys are camelCase (Gamma, POST /order's answer)."""


def json_list(text: str) -> list[str]:
    """A list Gamma sends JSON-encoded inside a string (``"[\\"Yes\\", \\"No\\"]"``)."""
    return msgspec.json.decode(text, type=list[str])


def is_v2_position_id(asset_id: str) -> bool:
    """Whether an asset id is a protocol-v2 position id (bits 40-103 clear), whose orders are for exchange V3: how
    the unified SDK decides (polymarket-client ``_internal/protocol.py``), where the CLOB's answers say nothing."""
    return asset_id.isascii() and asset_id.isdigit() and int(asset_id) < 2**256 and (
        int(asset_id) & (((1 << 64) - 1) << 40)) == 0


# ---------------------------------------------------------------- numbers
# The venue's numbers come as strings (CLOB) or JSON numbers (Gamma); each is made exact here, and refused with a
# ValueError saying which and why when it is not a finite number in its range (a JSON 1e400 is a float infinity).


MAX_FEE_EXPONENT = 10


def number(value: str | float | int | Decimal, what: str) -> Decimal:
    """A finite number, exact (a float through its shortest text)."""
    try:
        out = Decimal(value if isinstance(value, str) else str(value))
    except InvalidOperation:
        raise ValueError(f"{what} is not a number: {value!r}") from None
    if not out.is_finite():
        raise ValueError(f"{what} is not a finite number: {value!r}")
    return out


def price(value: str | float | int | Decimal, what: str) -> Decimal:
    """A price, rate or share of something: a number between 0 and 1."""
    out = number(value, what)
    if not 0 <= out <= 1:
        raise ValueError(f"{what} {value!r} is not between 0 and 1")
    return out


def quantity(value: str | float | int | Decimal, what: str) -> Decimal:
    """Shares or USDC: a number no larger than any market holds (``messages.MAX_QUANTITY``)."""
    out = number(value, what)
    if not -m.MAX_QUANTITY <= out <= m.MAX_QUANTITY:
        raise ValueError(f"{what} {value!r} is beyond {m.MAX_QUANTITY:f}, more than any market holds")
    return out


def fee_exponent(value: float, what: str) -> Decimal:
    """The exponent of a fee curve (fee = shares x rate x (p(1 - p))^exponent): Polymarket's are 1 and 2."""
    out = number(value, what)
    if not 0 < out <= MAX_FEE_EXPONENT:
        raise ValueError(f"{what} {value!r} is not in (0, {MAX_FEE_EXPONENT}]")
    return out


# ---------------------------------------------------------------- Gamma


class FeeSchedule(_Camel, frozen=True, kw_only=True):
    exponent: float
    rate: float
    taker_only: bool
    rebate_rate: float


class GammaTag(_Camel, frozen=True, kw_only=True):
    id: str
    label: str | None = None
    slug: str | None = None


class GammaMarket(_Camel, frozen=True, kw_only=True):
    """One market from Gamma ``GET /markets`` (or inside an event)."""

    id: str
    question: str
    condition_id: str
    slug: str
    outcomes: str  # JSON-encoded list: use parsed_outcomes()
    outcome_prices: str  # JSON-encoded list of decimal strings
    clob_token_ids: str  # JSON-encoded list of token ids (decimal strings), YES first
    active: bool
    closed: bool
    accepting_orders: bool
    enable_order_book: bool
    order_price_min_tick_size: float
    order_min_size: float
    neg_risk: bool
    end_date: str
    question_id: str | None = field(default=None, name="questionID")
    description: str | None = None
    start_date: str | None = None  # in every capture, but nothing to trade depends on it
    end_date_iso: str | None = None
    event_start_time: str | None = None  # crypto up/down markets: when the measured window opens
    archived: bool | None = None
    neg_risk_market_id: str | None = field(default=None, name="negRiskMarketID")
    neg_risk_request_id: str | None = field(default=None, name="negRiskRequestID")
    group_item_title: str | None = None  # the outcome's name inside a neg-risk event
    best_bid: float | None = None
    best_ask: float | None = None
    last_trade_price: float | None = None
    spread: float | None = None
    volume_num: float | None = None
    liquidity_num: float | None = None
    fees_enabled: bool | None = None
    fee_type: str | None = None  # null in captures of fee-free markets
    fee_schedule: FeeSchedule | None = None  # absent on fee-free markets
    maker_base_fee: int | None = None
    taker_base_fee: int | None = None
    accepting_orders_timestamp: str | None = None
    events: list[GammaEvent] | None = None
    version: str | None = None  # "v1" | "v2": protocol-v2 markets' tokens are position ids, traded on exchange V3

    def parsed_outcomes(self) -> list[str]:
        return json_list(self.outcomes)

    def parsed_outcome_prices(self) -> list[str]:
        return json_list(self.outcome_prices)

    def parsed_clob_token_ids(self) -> list[str]:
        return json_list(self.clob_token_ids)


class GammaEvent(_Camel, frozen=True, kw_only=True):
    """One event from Gamma ``GET /events``; also the stub inside a market's ``events``."""

    id: str
    slug: str
    title: str
    ticker: str | None = None
    description: str | None = None
    start_date: str | None = None
    end_date: str | None = None
    active: bool | None = None
    closed: bool | None = None
    archived: bool | None = None
    neg_risk: bool | None = None
    neg_risk_market_id: str | None = field(default=None, name="negRiskMarketID")
    enable_neg_risk: bool | None = None
    enable_order_book: bool | None = None
    liquidity: float | None = None
    volume: float | None = None
    open_interest: float | None = None
    markets: list[GammaMarket] = []  # absent when the event is nested in a market
    tags: list[GammaTag] = []


class GammaMarketsPage(_Wire, frozen=True, kw_only=True):
    """One page of Gamma ``GET /markets/keyset``; ``next_cursor`` (as ``after_cursor``) asks for the next, and is
    absent or null on the last. The markets stay raw, so that one Gamma describes badly can be skipped alone."""

    markets: list[msgspec.Raw]
    next_cursor: str | None = None


# ---------------------------------------------------------------- CLOB REST


class BookLevel(_Wire, frozen=True, kw_only=True):
    price: str
    size: str


class ClobBook(_Wire, frozen=True, kw_only=True):
    """``GET /book``: best level LAST on both sides (bids ascending, asks descending)."""

    market: str
    asset_id: str
    timestamp: str  # ms
    hash: str
    bids: list[BookLevel]
    asks: list[BookLevel]
    min_order_size: str
    tick_size: str
    neg_risk: bool
    last_trade_price: str  # "" before the first trade


class OrderResponse(_Camel, frozen=True, kw_only=True):
    """``POST /order`` (and each item of ``POST /orders``)."""

    success: bool
    order_id: str = field(name="orderID")
    error_msg: str | None = None  # "" or null when there is no error
    status: str | None = None  # live | matched | delayed | unmatched
    making_amount: str | None = None
    taking_amount: str | None = None
    transactions_hashes: list[str] | None = None
    trade_ids: list[str] | None = field(default=None, name="tradeIDs")


class OpenOrder(_Wire, frozen=True, kw_only=True):
    """One item of ``GET /data/orders`` (and ``GET /data/order/{id}``)."""

    id: str
    status: str
    owner: str
    maker_address: str
    market: str
    asset_id: str
    side: Side
    price: str
    original_size: str
    size_matched: str
    outcome: str
    order_type: OrderType
    created_at: int  # a JSON number, unlike most timestamps
    expiration: str | None = None
    associate_trades: list[str] | None = None


class OpenOrdersPage(_Wire, frozen=True, kw_only=True):
    data: list[OpenOrder]
    next_cursor: str  # "LTE=" on the last page
    limit: int | None = None
    count: int | None = None


class MakerOrder(_Wire, frozen=True, kw_only=True):
    """A resting order a trade filled: inside REST trades and user-channel trades."""

    order_id: str
    owner: str
    maker_address: str
    asset_id: str
    matched_amount: str
    price: str
    outcome: str
    fee_rate_bps: str
    side: Side | None = None  # absent in several captures


class ClobTrade(_Wire, frozen=True, kw_only=True):
    """One item of ``GET /data/trades``."""

    id: str
    taker_order_id: str
    market: str
    asset_id: str
    side: Side
    size: str
    price: str
    fee_rate_bps: str
    status: str  # MATCHED | MINED | CONFIRMED | RETRYING | FAILED
    match_time: str
    last_update: str
    outcome: str
    bucket_index: int
    owner: str
    maker_address: str
    trader_side: TraderSide
    maker_orders: list[MakerOrder]
    transaction_hash: str | None = None  # clients poll until it appears


class TradesPage(_Wire, frozen=True, kw_only=True):
    data: list[ClobTrade]
    next_cursor: str
    limit: int | None = None
    count: int | None = None


class ClobToken(_Wire, frozen=True, kw_only=True):
    token_id: str
    outcome: str
    price: float | None = None
    winner: bool | None = None


class ClobMarket(_Wire, frozen=True, kw_only=True):
    """``GET /markets/{condition_id}`` (and each item of the paged ``GET /markets``)."""

    condition_id: str
    question: str
    tokens: list[ClobToken]
    active: bool
    closed: bool
    accepting_orders: bool
    enable_order_book: bool
    minimum_order_size: float
    minimum_tick_size: float
    neg_risk: bool
    question_id: str | None = None
    description: str | None = None
    market_slug: str | None = None
    end_date_iso: str | None = None
    archived: bool | None = None
    accepting_order_timestamp: str | None = None
    game_start_time: str | None = None
    seconds_delay: int | None = None
    maker_base_fee: int | None = None
    taker_base_fee: int | None = None
    neg_risk_market_id: str | None = None
    neg_risk_request_id: str | None = None
    is_50_50_outcome: bool | None = None
    tags: list[str] | None = None


class BalanceAllowance(_Wire, frozen=True, kw_only=True):
    """``GET /balance-allowance``: the balance and each exchange's allowance, as 6-decimal integer strings."""

    balance: str
    allowances: dict[str, str] = {}


class RebatedFee(_Wire, frozen=True, kw_only=True):
    """One row of ``GET /rebates/current?date=&maker_address=`` (the answer is a list of them, or null when there
    are none): a maker's rebates on one day in one market. No capture of it exists; the shape is Polymarket's API
    reference's (``date`` there is a bare day, ours ends in ``T00:00:00Z``: read its first 10 characters)."""

    date: str
    condition_id: str
    asset_address: str = ""
    maker_address: str = ""
    rebated_fees_usdc: str  # USDC, 6 decimals


class ClobMarketInfoToken(_Wire, frozen=True, kw_only=True):
    token_id: str = field(name="t")
    outcome: str = field(name="o")


class ClobFeeInfo(_Wire, frozen=True, kw_only=True):
    rate: float = field(default=0.0, name="r")
    exponent: float = field(default=0.0, name="e")
    taker_only: bool | None = field(default=None, name="to")


class ClobMarketInfo(_Wire, frozen=True, kw_only=True):
    """``GET /clob-markets/{condition_id}``, the compact form the client caches tick, neg risk and fees from.

    No capture of it exists; the shape is POLYMARKET_WIRE.md's and what
    py-clob-client-v2 reads (``t`` and ``mts`` directly, the rest with defaults).
    """

    condition_id: str = field(name="c")
    tokens: list[ClobMarketInfoToken] = field(name="t")
    min_tick_size: float = field(name="mts")
    min_order_size: float | None = field(default=None, name="mos")
    neg_risk: bool = field(default=False, name="nr")
    fee: ClobFeeInfo | None = field(default=None, name="fd")


# ---------------------------------------------------------------- market channel
# Every captured market-channel message carries `event_type`, so the union is
# tagged by it; decode_market_frame still copes with a frame that lacks it.


class _MarketEvent(_Wire, frozen=True, kw_only=True, tag_field="event_type"):
    pass


class WsBook(_MarketEvent, frozen=True, kw_only=True, tag="book"):
    """A full snapshot of one token's book (the initial dump, and after a crossing burst)."""

    market: str
    asset_id: str
    timestamp: str
    hash: str
    bids: list[BookLevel]
    asks: list[BookLevel]
    tick_size: str | None = None
    last_trade_price: str | None = None


class WsPriceChangeItem(_Wire, frozen=True, kw_only=True):
    asset_id: str
    price: str
    size: str  # the new total at this level; "0" removes it
    side: Side
    hash: str
    best_bid: str | None = None  # older frames had no best_bid/best_ask
    best_ask: str | None = None


class WsPriceChange(_MarketEvent, frozen=True, kw_only=True, tag="price_change"):
    market: str
    timestamp: str
    price_changes: list[WsPriceChangeItem]


class WsLastTradePrice(_MarketEvent, frozen=True, kw_only=True, tag="last_trade_price"):
    market: str
    asset_id: str
    price: str
    size: str
    side: Side
    fee_rate_bps: str
    timestamp: str
    transaction_hash: str | None = None


class WsTickSizeChange(_MarketEvent, frozen=True, kw_only=True, tag="tick_size_change"):
    market: str
    asset_id: str
    old_tick_size: str
    new_tick_size: str
    timestamp: str


class WsBestBidAsk(_MarketEvent, frozen=True, kw_only=True, tag="best_bid_ask"):
    market: str
    asset_id: str
    best_bid: str
    best_ask: str
    spread: str
    timestamp: str


class WsNewMarketEvent(_Wire, frozen=True, kw_only=True):
    id: str
    slug: str
    title: str
    ticker: str | None = None
    description: str | None = None


class WsNewMarket(_MarketEvent, frozen=True, kw_only=True, tag="new_market"):
    """A market was listed. Unlike Gamma, lists are real lists and the tick size is a string."""

    id: str
    question: str
    market: str
    slug: str
    assets_ids: list[str]
    outcomes: list[str]
    timestamp: str
    condition_id: str | None = None
    clob_token_ids: list[str] | None = None
    active: bool | None = None
    description: str | None = None
    order_price_min_tick_size: str | None = None
    group_item_title: str | None = None
    game_start_time: str | None = None
    tags: list[str] | None = None
    event_message: WsNewMarketEvent | None = None


class WsMarketResolved(_MarketEvent, frozen=True, kw_only=True, tag="market_resolved"):
    id: str
    market: str
    assets_ids: list[str]
    winning_asset_id: str
    winning_outcome: str
    timestamp: str
    tags: list[str] | None = None


MarketMessage = Union[WsBook, WsPriceChange, WsLastTradePrice, WsTickSizeChange, WsBestBidAsk, WsNewMarket,
                      WsMarketResolved]

# ---------------------------------------------------------------- user channel


class _UserEvent(_Wire, frozen=True, kw_only=True, tag_field="event_type"):
    pass


class WsOrder(_UserEvent, frozen=True, kw_only=True, tag="order"):
    type: Literal["PLACEMENT", "UPDATE", "CANCELLATION"]
    id: str
    owner: str
    market: str
    asset_id: str
    side: Side
    price: str
    original_size: str
    size_matched: str  # "" on a killed FOK
    outcome: str
    timestamp: str
    associate_trades: list[str] | None = None
    status: str | None = None
    order_type: OrderType | None = None
    maker_address: str | None = None
    order_owner: str | None = None
    created_at: str | None = None
    expiration: str | None = None


class WsTrade(_UserEvent, frozen=True, kw_only=True, tag="trade"):
    type: Literal["TRADE"]
    id: str
    taker_order_id: str
    market: str
    asset_id: str
    side: Side
    size: str
    price: str
    fee_rate_bps: str
    status: str  # MATCHED | MINED | CONFIRMED | RETRYING | FAILED
    outcome: str
    owner: str
    match_time: str  # POLYMARKET_WIRE.md says `matchtime`; every capture says `match_time`
    last_update: str
    timestamp: str
    trader_side: TraderSide
    maker_orders: list[MakerOrder]
    transaction_hash: str | None = None
    maker_address: str | None = None
    trade_owner: str | None = None
    bucket_index: int | None = None


UserMessage = Union[WsOrder, WsTrade]

# ---------------------------------------------------------------- frames

_MARKET_FRAME = msgspec.json.Decoder(Union[MarketMessage, list[MarketMessage]])
_USER_FRAME = msgspec.json.Decoder(Union[UserMessage, list[UserMessage]])

# A message without `event_type` is told apart by a key only its kind has (first match wins).
_MARKET_KEYS = (("price_changes", "price_change"), ("bids", "book"), ("new_tick_size", "tick_size_change"),
                ("winning_asset_id", "market_resolved"), ("assets_ids", "new_market"),
                ("fee_rate_bps", "last_trade_price"), ("spread", "best_bid_ask"))


def _market_kind(item: dict[str, Any]) -> str | None:
    return next((kind for key, kind in _MARKET_KEYS if key in item), None)


def _user_kind(item: dict[str, Any]) -> str | None:
    # The user channel's `type` names the kind: TRADE for trades, PLACEMENT/UPDATE/CANCELLATION for orders.
    kind = item.get("type")
    return None if kind is None else "trade" if kind == "TRADE" else "order"


def _decode_frame(raw: bytes | str, decoder: msgspec.json.Decoder, union: Any,
                  kind_of: Callable[[dict[str, Any]], str | None]) -> list:
    try:
        decoded = decoder.decode(raw)
        return decoded if isinstance(decoded, list) else [decoded]
    except msgspec.ValidationError:
        items = msgspec.json.decode(raw)
        items = items if isinstance(items, list) else [items]
        if not all(isinstance(i, dict) for i in items) or all("event_type" in i for i in items):
            raise  # not a missing tag: a real type error
        tagged = [i if "event_type" in i else {**i, "event_type": kind_of(i)} for i in items]
        return msgspec.convert(tagged, list[union])  # strict, exactly as from JSON


def decode_market_frame(raw: bytes | str) -> list[MarketMessage]:
    """One market-channel frame (an object or an array of them) as a list of messages.

    A message lacking ``event_type`` is classified by its keys (``bids`` → book,
    ``price_changes`` → price_change, ...). Plain-text frames (``PONG``,
    ``NO NEW ASSETS``) are not JSON and raise ``msgspec.DecodeError``: the
    caller handles them before decoding.
    """
    return _decode_frame(raw, _MARKET_FRAME, MarketMessage, _market_kind)


def decode_user_frame(raw: bytes | str) -> list[UserMessage]:
    """One user-channel frame as a list of messages; without ``event_type``, ``type`` decides."""
    return _decode_frame(raw, _USER_FRAME, UserMessage, _user_kind)
