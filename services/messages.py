"""Every message on the mesh: frozen, tagged msgspec Structs, msgpack on the wire.

Prices and sizes are ``Decimal`` (exact; msgpack carries them as strings).
Every message carries ``id``, ``ts_ns`` (origin time) and ``trace_id``; a
message caused by another passes the cause's ``trace_id`` on, so one trade can
be followed hop by hop. Evolve the schema only by adding fields with defaults:
decoders ignore fields they do not know, so old and new peers interoperate.
"""
from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Union

from msgspec import Struct, field
from msgspec import inspect as mi

_ID_PREFIX = os.urandom(6).hex()
_ID_COUNTER = itertools.count(1)


def new_id() -> str:
    """A process-unique, mesh-unique id: a random per-process prefix and a counter."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):x}"


def _reset_id_prefix_after_fork() -> None:
    global _ID_PREFIX, _ID_COUNTER
    _ID_PREFIX = os.urandom(6).hex()
    _ID_COUNTER = itertools.count(1)


os.register_at_fork(after_in_child=_reset_id_prefix_after_fork)

Side = Literal["BUY", "SELL"]
OrderType = Literal["GTC", "GTD", "FOK", "FAK"]
Liquidity = Literal["TAKER", "MAKER"]


class Message(Struct, frozen=True, kw_only=True, tag_field="type", tag=True):
    """Base of every bus message; the tag is the class name."""

    id: str = field(default_factory=new_id)
    ts_ns: int = field(default_factory=time.time_ns)
    trace_id: str = field(default_factory=new_id)


# ---------------------------------------------------------------- market data (prices)


class Level(Struct, frozen=True, array_like=True):
    price: Decimal
    size: Decimal


class Book(Struct, frozen=True, kw_only=True):
    """One token's full book. Bids best first (descending), asks best first (ascending)."""

    token_id: str
    market: str
    bids: list[Level]
    asks: list[Level]
    venue_ts_ms: int = 0
    hash: str = ""
    tick_size: Decimal | None = None


class BookSnapshot(Message, frozen=True, kw_only=True):
    """Full books, usually from one venue frame (the initial dump carries many)."""

    books: list[Book]


class LevelChange(Struct, frozen=True, kw_only=True):
    """The new total ``size`` at ``price`` on one side of one token's book; 0 removes the level."""

    token_id: str
    market: str
    side: Side
    price: Decimal
    size: Decimal
    best_bid: Decimal | None = None
    best_ask: Decimal | None = None
    venue_ts_ms: int = 0


class BookDelta(Message, frozen=True, kw_only=True):
    """Level changes, batched: one bus message per venue frame."""

    changes: list[LevelChange]


class LastTrade(Message, frozen=True, kw_only=True):
    token_id: str
    market: str
    price: Decimal
    size: Decimal
    side: Side
    fee_rate_bps: int = 0
    venue_ts_ms: int = 0


# ---------------------------------------------------------------- market lifecycle (events)


class Outcome(Struct, frozen=True, kw_only=True):
    token_id: str
    name: str


class MarketNew(Message, frozen=True, kw_only=True):
    market: str
    question: str
    outcomes: list[Outcome]
    slug: str = ""
    tick_size: Decimal = Decimal("0.01")
    min_size: Decimal = Decimal("5")
    neg_risk: bool = False
    neg_risk_market_id: str = ""
    end_ts_ms: int = 0
    fee_rate: Decimal = Decimal("0")
    accepting_orders: bool = True
    fee_exponent: Decimal = Decimal("1")  # feeSchedule.exponent: fee = shares x rate x (p(1 - p))^exponent
    volume: Decimal = Decimal("0")  # as Gamma reported it when the market was loaded (USDC)
    liquidity: Decimal = Decimal("0")
    protocol: str = "v1"  # Gamma's `version`: "v2" markets' tokens are protocol-v2 position ids (exchange V3)
    rebate_rate: Decimal = Decimal("0")  # feeSchedule.rebateRate: the share of each taker fee paid to the trade's maker


class TickSizeChange(Message, frozen=True, kw_only=True):
    token_id: str
    market: str
    old_tick_size: Decimal
    new_tick_size: Decimal


class MarketHalted(Message, frozen=True, kw_only=True):
    market: str
    reason: str = ""


class MarketResolved(Message, frozen=True, kw_only=True):
    """A market resolved. The scanner publishes it on ``events`` as the venue announces it; the executor publishes
    it on ``executions``, numbered like its other records (``seq``, ``stream``; 0 and "" on ``events``), when it
    settles shares of the market it holds: from the scanner's word, or from the venue's when asked."""

    market: str
    winning_token_id: str
    winning_outcome: str = ""
    seq: int = 0
    stream: str = ""


class MarketStale(Message, frozen=True, kw_only=True):
    """The scanner's feed for these markets went silent (stale=True) or came back with fresh books (False)."""

    markets: list[str]
    stale: bool = True
    reason: str = ""


# ---------------------------------------------------------------- signals


class Leg(Struct, frozen=True, kw_only=True):
    token_id: str
    side: Side
    size: Decimal
    limit_price: Decimal
    order_type: OrderType = "GTC"
    market: str = ""
    post_only: bool = False  # rest only: refused by the venue rather than take liquidity
    expires_s: int = 0  # GTD only: when the order expires, epoch seconds (at least a minute ahead)


class Signal(Message, frozen=True, kw_only=True):
    """An intent to trade, from a strategy (``strategy:NAME``) or an agent (``mcp:CLIENT``)."""

    source: str
    legs: list[Leg]
    rationale: str = ""
    cause_id: str = ""  # the market-data message that prompted it
    cause_ts_ns: int = 0


class Cancel(Message, frozen=True, kw_only=True):
    """Cancel resting orders: by client order id, or every order of ``source`` on a token or a market.

    Sent on ``signals`` like a signal (so risk sees it), passed on unchanged to the executor on ``orders``.
    Risk never refuses a cancel, halted or not. With no ids, token or market it cancels all of ``source``'s orders.
    A cancel from risk itself (source ``risk``, sent when trading is halted) cancels every open order.
    """

    source: str
    order_ids: list[str] = []
    token_id: str = ""
    market: str = ""
    reason: str = ""


# ---------------------------------------------------------------- orders and risk verdicts (orders, decisions)


class Order(Message, frozen=True, kw_only=True):
    """One leg of an accepted signal; ``id`` is the client order id, stable across retries."""

    signal_id: str
    leg: int
    source: str
    token_id: str
    market: str
    side: Side
    size: Decimal
    limit_price: Decimal
    order_type: OrderType = "GTC"
    post_only: bool = False
    expires_s: int = 0


class Reason(Struct, frozen=True, kw_only=True):
    """Why risk refused, as data: the check's code, its limit, the value seen, the largest size that would pass."""

    code: str
    message: str
    leg: int | None = None
    limit: Decimal | None = None
    value: Decimal | None = None
    max_size: Decimal | None = None


class SignalAccepted(Message, frozen=True, kw_only=True):
    """Risk's yes: the orders it sent; ``signal`` is what was decided on (so consumers of decisions see it whole)."""

    signal_id: str
    source: str
    orders: list[Order]
    signal: Signal | None = None
    # Numbered by risk as it publishes on ``decisions``, in its journal (``stream`` names the journal, ``seq`` counts
    # from 1), as the executor numbers ``executions``; 0: not numbered (an answer to a preview, or an older risk).
    seq: int = 0
    stream: str = ""


class SignalRejected(Message, frozen=True, kw_only=True):
    signal_id: str
    source: str
    reasons: list[Reason]
    signal: Signal | None = None
    seq: int = 0  # numbered by risk, as SignalAccepted.seq
    stream: str = ""


class SignalPending(Message, frozen=True, kw_only=True):
    """An agent's signal that passed every check and waits for a human's approval (live money); it expires."""

    signal_id: str
    source: str
    expires_ts_ns: int
    signal: Signal | None = None
    seq: int = 0  # numbered by risk, as SignalAccepted.seq
    stream: str = ""


class StrategyApproved(Message, frozen=True, kw_only=True):
    """Risk took an operator's approval of an agent-authored strategy (``polybot strategy approve``): the code's
    sha256 that may run as ``strategy:NAME`` and the budget it runs under. On ``decisions``, so the audit log keeps
    the hash of every approved version."""

    name: str
    sha256: str
    class_name: str = ""
    budget: dict[str, Decimal] = {}
    markets: list[str] = []  # the markets it may trade; empty: any
    by: str = ""  # who approved it
    approved_ts_ns: int = 0
    seq: int = 0  # numbered by risk, as SignalAccepted.seq
    stream: str = ""


# ---------------------------------------------------------------- order lifecycle (executions)


class OrderAck(Message, frozen=True, kw_only=True):
    order_id: str
    venue_order_id: str
    status: str = "live"
    signal_id: str = ""
    source: str = ""
    submitted_ts_ns: int = 0  # when the order was handed to the venue client
    # Numbered by the executor, in its journal (``stream`` names the journal, ``seq`` counts from 1); a subscriber that
    # sees a gap asks for the records after its last (CatchUpRequest). 0: not numbered (an older executor, or one
    # whose journal could not keep it).
    seq: int = 0
    stream: str = ""


class OrderRejected(Message, frozen=True, kw_only=True):
    order_id: str
    code: str
    message: str = ""
    signal_id: str = ""
    source: str = ""
    seq: int = 0  # numbered by the executor, as OrderAck.seq
    stream: str = ""


class Fill(Message, frozen=True, kw_only=True):
    order_id: str
    venue_order_id: str
    trade_id: str
    token_id: str
    market: str
    side: Side
    price: Decimal
    size: Decimal
    fee: Decimal = Decimal("0")
    liquidity: Liquidity = "TAKER"
    status: str = "MATCHED"
    signal_id: str = ""
    source: str = ""
    venue_ts_ms: int = 0
    # A maker fill's rebate as we estimate it (the market's rebate_rate x the taker fee of the trade), counted until
    # the venue reports that day's rebates for the market (``Rebate``); paper and backtest fills are never reported.
    rebate: Decimal = Decimal("0")
    seq: int = 0  # numbered by the executor, as OrderAck.seq
    stream: str = ""


class FillStatus(Message, frozen=True, kw_only=True):
    """A counted fill's trade moved on at the venue: ``CONFIRMED`` (settled on chain: its shares are the wallet's) or
    ``FAILED`` (its settlement failed on chain: nothing changed hands, so the fill is reversed, as if it had never
    been). ``fill`` is the fill as first published (its ``status`` the one it was counted with). A Fill is pending
    from MATCHED (MINED and RETRYING too) until one of these says otherwise; one the venue reports FAILED before it
    was counted is never counted, and has none."""

    fill: Fill
    status: Literal["CONFIRMED", "FAILED"]
    seq: int = 0  # numbered by the executor, as OrderAck.seq
    stream: str = ""


class Rebate(Message, frozen=True, kw_only=True):
    """The maker rebates the venue reports for the account on one UTC day in one market: a total, not an increment
    (a later report for the same day and market replaces an earlier one).

    ``final``: the day is over at the venue, so the total will not change; Polymarket pays a day's rebates into
    the wallet after it ends (once at least $1 is owed). Whether they were paid is not on the wire.
    """

    day: str  # YYYY-MM-DD, UTC
    market: str
    maker: str  # the wallet address the rebates are for
    amount: Decimal  # USDC, to the micro-unit
    final: bool = False
    seq: int = 0  # numbered by the executor, as OrderAck.seq
    stream: str = ""


class OrderCanceled(Message, frozen=True, kw_only=True):
    order_id: str
    venue_order_id: str = ""
    remaining: Decimal = Decimal("0")
    reason: str = ""
    signal_id: str = ""
    source: str = ""
    seq: int = 0  # numbered by the executor, as OrderAck.seq
    stream: str = ""


class VenueCondition(Struct, frozen=True, kw_only=True):
    """Something that keeps the venue from taking some of our orders now, as the executor learned it from the
    venue's answers: a matching-engine restart (VENUE_RESTARTING), the post-only window after it
    (POST_ONLY_WINDOW), heartbeats that fail (HEARTBEAT_FAILING), a wallet that cannot pay (NO_BALANCE,
    NO_ALLOWANCE). Risk refuses the orders it applies to with its code and message."""

    code: str
    message: str  # what it means and what to do about it
    since_ts_ns: int = 0
    until_ts_ns: int = 0  # when it is expected to end; 0: until the venue shows otherwise
    side: str = ""  # only orders of this side; "": every side
    post_only_pass: bool = False  # post-only orders are not held back (the post-only window)
    available: Decimal | None = None  # NO_BALANCE: the wallet's collateral (USDC) as last read


class VenueStatus(Message, frozen=True, kw_only=True):
    """The executor's view of what the venue takes now, published whenever it changes (and now and then while any
    condition holds); no conditions: the venue takes every order."""

    conditions: list[VenueCondition] = []


class Exposure(Struct, frozen=True, kw_only=True):
    token_id: str
    market: str
    side: Side
    size: Decimal
    avg_price: Decimal


class ResidualExposure(Message, frozen=True, kw_only=True):
    """A multi-leg signal that did not complete: what was filled and is now held unhedged."""

    signal_id: str
    source: str
    reason: str
    exposure: list[Exposure]
    seq: int = 0  # numbered by the executor, as OrderAck.seq
    stream: str = ""


class Heartbeat(Message, frozen=True, kw_only=True):
    """Sent by every publisher now and then, so subscribers can tell silence from a dead peer."""

    service: str
    pid: int
    seq: int


# ---------------------------------------------------------------- control (REQ/REP)


class StatusRequest(Message, frozen=True, kw_only=True):
    pass


class HaltRequest(Message, frozen=True, kw_only=True):
    reason: str = ""


class ResumeRequest(Message, frozen=True, kw_only=True):
    pass


class ThrottleRequest(Message, frozen=True, kw_only=True):
    """Backpressure, to a signal producer: send at most ``max_signals_per_s`` until released or ``for_s`` passes.

    The executor sends it while it lags and repeats it, so a producer that restarts is throttled again and one
    whose release was lost is freed when the throttle runs out. ``throttle=False`` releases at once.
    """

    throttle: bool = True
    max_signals_per_s: float = 1.0
    for_s: float = 5.0
    reason: str = ""
    by: str = ""


class RestartRequest(Message, frozen=True, kw_only=True):
    """To the supervisor: restart one service, now, without backoff."""

    service: str


class ReloadRequest(Message, frozen=True, kw_only=True):
    """To the supervisor: read the config (and the approved strategies) again; start the services new to it, stop
    those gone from it, restart those whose settings changed, and leave the rest running."""

    by: str = ""


class StrategyChanged(Message, frozen=True, kw_only=True):
    """To risk: the operator approved or stopped the agent-authored strategy ``name``; risk reads its approval and
    budget again from the strategy store (nothing in the request can set them)."""

    name: str
    by: str = ""


class ShutdownRequest(Message, frozen=True, kw_only=True):
    """To the supervisor: stop every service, then itself."""


class SnapshotRequest(Message, frozen=True, kw_only=True):
    """To the scanner: everything a late subscriber needs to start from (markets, books, stale set).

    With ``markets`` (condition ids), only those markets and their books.
    """

    markets: list[str] = []


class SnapshotReply(Message, frozen=True, kw_only=True):
    """Newer prices/events messages (ts_ns after this reply's) apply on top of it; older ones are in it."""

    markets: list[MarketNew]
    books: BookSnapshot
    stale: list[str] = []


class SocketCounters(Struct, kw_only=True):
    sent: int = 0
    received: int = 0
    dropped: int = 0
    undecodable: int = 0
    oversized: int = 0  # frames over the bus's size cap: refused at send, or skipped on arrival
    disconnects: int = 0  # connections to peers that ended (a peer stopped, or NNG cut a frame far over the cap)
    lag_ms: float = 0.0  # latest receive lag (now - origin), ms
    lag_ms_max: float = 0.0


class ServiceState(Struct, frozen=True, kw_only=True):
    name: str
    state: Literal["starting", "running", "halted", "stopping", "down"]
    pid: int = 0
    uptime_s: float = 0.0
    restarts: int = 0
    sockets: dict[str, SocketCounters] = {}
    last_error: str = ""
    halt_reason: str = ""
    detail: dict[str, str] = {}


class PreviewRequest(Message, frozen=True, kw_only=True):
    """To risk: check this signal as if it arrived now; answered with the verdict, nothing sent, nothing counted."""

    signal: Signal


class RiskRequest(Message, frozen=True, kw_only=True):
    """To risk: its limits, their use, the agent budget, halted or not."""


class ApproveRequest(Message, frozen=True, kw_only=True):
    """To risk: a human approves or declines a pending signal, at a terminal (`polybot approve`) or in the MCP
    client's own confirmation dialog (elicitation; the MCP server forwards the human's answer). No tool sends it
    on an agent's word."""

    signal_id: str
    approve: bool = True
    by: str = ""
    via: Literal["operator", "client"] = "operator"


class Position(Struct, frozen=True, kw_only=True):
    token_id: str
    market: str
    size: Decimal  # shares held (negative only if the venue let a sell exceed the holding)
    avg_price: Decimal  # average cost of the shares held
    realized: Decimal = Decimal("0")  # realized PnL, after fees
    fees: Decimal = Decimal("0")
    # Of ``size``, the net shares of fills whose trade is not confirmed on chain yet (MATCHED, MINED, RETRYING):
    # negative for a pending sell. ``size - pending`` is settled: what the wallet holds on chain now.
    pending: Decimal = Decimal("0")


class SourceHolding(Struct, frozen=True, kw_only=True):
    """The shares of a token one source's own fills bought, less those they sold (an agent sells only these).

    ``selling``: how many of them the source's open SELL orders already offer (risk fills it in; the executor,
    which only counts fills, leaves it 0)."""

    source: str
    token_id: str
    market: str
    size: Decimal
    selling: Decimal = Decimal("0")


class OpenOrder(Struct, frozen=True, kw_only=True):
    order_id: str
    venue_order_id: str
    signal_id: str
    source: str
    token_id: str
    market: str
    side: Side
    price: Decimal
    size: Decimal
    filled: Decimal
    status: str
    order_type: OrderType = "GTC"
    ts_ns: int = 0


class Usage(Struct, frozen=True, kw_only=True):
    """One limit and how much of it is used now (for per-token or per-market limits, by the worst one)."""

    name: str
    limit: Decimal
    used: Decimal
    scope: str = ""  # the token, market or source the figure belongs to


class RiskReply(Message, frozen=True, kw_only=True):
    halted: bool
    halt_reason: str = ""
    limits: dict[str, Decimal] = {}
    usage: list[Usage] = []
    positions: list[Position] = []
    open_orders: int = 0
    realized_pnl: Decimal = Decimal("0")
    marked_pnl: Decimal = Decimal("0")
    pending: list[SignalPending] = []  # agent signals waiting for a human's approval
    client_approval: bool = False  # agent signals wait for a human, who may answer in the MCP client's dialog
    holdings: list[SourceHolding] = []  # the positions by whose fills bought them: what each agent may sell
    venue: list[VenueCondition] = []  # what keeps the venue from taking some orders now, as risk last heard


class AccountRequest(Message, frozen=True, kw_only=True):
    """To the executor: its open orders and positions as it knows them (reconciled with the venue)."""


class AccountReply(Message, frozen=True, kw_only=True):
    mode: str
    positions: list[Position] = []
    orders: list[OpenOrder] = []
    reconciled_ts_ns: int = 0
    holdings: list[SourceHolding] = []  # the positions by the source whose fills bought them, from the journal
    # The venue's collateral (USDC) and the least exchange allowance, as last read (balance_ts_ns); None: not
    # read yet, or paper trading, which spends none.
    collateral: Decimal | None = None
    allowance: Decimal | None = None
    balance_ts_ns: int = 0
    venue: list[VenueCondition] = []  # what keeps the venue from taking some orders now (VenueStatus)


# What the executor numbers on ``executions`` (``seq``, ``stream``): everything it journals and publishes.
Numbered = Union[OrderAck, OrderRejected, Fill, OrderCanceled, ResidualExposure, Rebate, MarketResolved, FillStatus]
# What risk numbers on ``decisions``: every verdict it publishes.
NumberedVerdict = Union[SignalAccepted, SignalRejected, SignalPending, StrategyApproved]


class CatchUpRequest(Message, frozen=True, kw_only=True):
    """To the executor (or risk): its numbered ``executions`` (``decisions``) records after ``after_seq`` of
    ``stream``, oldest first, at most ``max_records`` (0: none, only the numbering). Another stream than its own (or
    ""): from its first."""

    stream: str = ""
    after_seq: int = 0
    max_records: int = 500


class CatchUpReply(Message, frozen=True, kw_only=True):
    """The executor's (risk's) numbered records after the asked seq; ``first_seq``: the oldest it still keeps (those
    before it were compacted away), ``last_seq``: the latest it numbered."""

    stream: str
    first_seq: int = 0
    last_seq: int = 0
    records: list[Union[Numbered, NumberedVerdict]] = []


class QueryRequest(Message, frozen=True, kw_only=True):
    """To analytics: a named query with parameters, or read-only SQL; at most ``max_rows`` rows come back."""

    name: str = ""
    params: dict[str, str] = {}
    sql: str = ""
    max_rows: int = 1000


class QueryReply(Message, frozen=True, kw_only=True):
    """Cells are str, int, float, bool or None; exact numbers (prices, sizes, money) come as decimal strings."""

    columns: list[str]
    rows: list[list[str | int | float | bool | None]]
    truncated: bool = False
    # Analytics has not yet recorded everything the executor and risk published (it was down, or missed some): it is
    # asking their journals for them; ``behind`` of them are known missing (0 while it has not heard how many).
    catching_up: bool = False
    behind: int = 0

    def incomplete(self) -> str:
        """What to tell whoever reads the answer while analytics is catching up; "" when it is not."""
        if not self.catching_up:
            return ""
        what = (f"{self.behind} records (orders, fills, risk's verdicts) published while it was not listening are not "
                "recorded yet" if self.behind else "it has not yet heard from the executor and risk what it missed")
        return (f"analytics is catching up: {what}, so fills, positions, PnL and signals with their verdicts may be "
                "incomplete; ask again shortly")


class StatusReply(Message, frozen=True, kw_only=True):
    service: ServiceState
    children: list[ServiceState] = []  # the supervisor's view of its services


class Ok(Message, frozen=True, kw_only=True):
    request_id: str
    detail: str = ""


class Error(Message, frozen=True, kw_only=True):
    request_id: str
    message: str


# ---------------------------------------------------------------- unions per socket

PricesMsg = Union[BookSnapshot, BookDelta, LastTrade, Heartbeat]
EventsMsg = Union[MarketNew, TickSizeChange, MarketHalted, MarketResolved, MarketStale, Heartbeat]
SignalsMsg = Union[Signal, Cancel]
OrdersMsg = Union[Order, Cancel]
ExecutionsMsg = Union[OrderAck, OrderRejected, Fill, OrderCanceled, ResidualExposure, Rebate, MarketResolved,
                      FillStatus, VenueStatus, Heartbeat]
DecisionsMsg = Union[SignalAccepted, SignalRejected, SignalPending, StrategyApproved, Heartbeat]
ControlRequest = Union[StatusRequest, HaltRequest, ResumeRequest, ThrottleRequest, RestartRequest, ShutdownRequest,
                       SnapshotRequest, PreviewRequest, RiskRequest, ApproveRequest, AccountRequest, QueryRequest,
                       CatchUpRequest, ReloadRequest, StrategyChanged]
ControlReply = Union[StatusReply, Ok, Error, SnapshotReply, SignalAccepted, SignalRejected, RiskReply, AccountReply,
                     QueryReply, CatchUpReply]


# ---------------------------------------------------------------- numbers

# Every number on the mesh is finite. Prices lie in [0, 1]; shares and the money a fill moves stay within
# MAX_QUANTITY, far beyond any market yet small enough that sums, products and rounding to the venue's steps stay
# exact within Decimal's 28 digits (1e26 shares, quantized to cents, already raise InvalidOperation).
MAX_QUANTITY = Decimal("1e15")
PRICES = frozenset({"price", "limit_price", "best_bid", "best_ask", "tick_size", "old_tick_size", "new_tick_size"})
QUANTITIES = frozenset({"size", "filled", "remaining", "selling", "min_size", "fee", "rebate", "amount"})
# Risk refuses these with reasons (BAD_SIGNAL) when their numbers are bad, so their sender hears why; the bus
# passes them on. Every other message with a bad number is counted as undecodable and skipped where it arrives.
ANSWERED_BY_RISK = (Signal, PreviewRequest)


def number_fault(msg: Struct) -> str:
    """Why a message's numbers cannot be trusted (where, which value, what was expected), or "" when they can."""
    try:
        if _checker(type(msg))(msg):
            return ""
    except InvalidOperation:  # a NaN compared: look for it below
        pass
    found = _struct_fault(msg)
    return "" if found is None else f"{found[0]} = {found[1]}"


# This runs on every message a socket receives: a check compiled once per class says whether every number is
# good (a NaN makes its range comparison raise, an infinity fails it); only a message that fails is walked again
# to say where and why.
_CHECKERS: dict[type, Callable[[Any], bool]] = {}


def _checker(cls: type) -> Callable[[Any], bool]:
    found = _CHECKERS.get(cls)
    if found is None:
        info = mi.type_info(cls)
        parts = [(f.name, check) for f in info.fields if (check := _value_check(f.type, f.name)) is not None]

        def found(obj: Any) -> bool:
            for name, check in parts:
                if not check(getattr(obj, name)):
                    return False
            return True
        _CHECKERS[cls] = found
    return found


def _value_check(t: mi.Type, name: str) -> Callable[[Any], bool] | None:
    """A check of one field's value, or None when it cannot hold a Decimal."""
    match t:
        case mi.DecimalType():
            if name in PRICES:
                return lambda v: 0 <= v <= 1
            if name in QUANTITIES:
                return lambda v: -MAX_QUANTITY <= v <= MAX_QUANTITY
            return Decimal.is_finite
        case mi.FloatType():  # a duration, a rate, a lag: finite (an infinite throttle would never end)
            return math.isfinite
        case mi.StructType():
            return lambda v: _checker(v.__class__)(v)
        case mi.ListType(item_type=item):
            check = _value_check(item, name)
            return None if check is None else lambda v: all(map(check, v))
        case mi.DictType(value_type=value):
            check = _value_check(value, name)
            return None if check is None else lambda v: all(map(check, v.values()))
        case mi.UnionType(types=types):
            checks = [c for x in types if (c := _value_check(x, name)) is not None]
            if not checks:
                return None
            if len(checks) == 1 and all(isinstance(x, mi.NoneType) or _may_hold_decimal(x) for x in types):
                one = checks[0]
                return lambda v: v is None or one(v)
            return lambda v: _fault(v, name) is None
    return None


# Each returns (where, why) for the first bad number, or None; the path is built only for a bad one.
def _struct_fault(obj: Struct) -> tuple[str, str] | None:
    for name in _numeric_fields(type(obj)):
        if (found := _fault(getattr(obj, name), name)) is not None:
            return name + found[0], found[1]
    return None


def _fault(value: Any, name: str) -> tuple[str, str] | None:
    if value.__class__ is Decimal:
        if not value.is_finite():
            return "", f"{value} is not a finite number"
        if name in PRICES and not 0 <= value <= 1:
            return "", f"{value} is not a price between 0 and 1"
        if name in QUANTITIES and not -MAX_QUANTITY <= value <= MAX_QUANTITY:
            return "", f"{value} is beyond {MAX_QUANTITY:f}, more than any market holds"
    elif value.__class__ is float:
        if not math.isfinite(value):
            return "", f"{value} is not a finite number"
    elif isinstance(value, Struct):
        if (found := _struct_fault(value)) is not None:
            return "." + found[0], found[1]
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if (found := _fault(item, name)) is not None:
                return f"[{i}]{found[0]}", found[1]
    elif isinstance(value, dict):
        for key, item in value.items():
            if (found := _fault(item, name)) is not None:
                return f"[{key!r}]{found[0]}", found[1]
    return None


_NUMERIC_FIELDS: dict[type, tuple[str, ...]] = {}


def _numeric_fields(cls: type) -> tuple[str, ...]:
    """The fields of a Struct that may hold a Decimal, at any depth (worked out once per class)."""
    found = _NUMERIC_FIELDS.get(cls)
    if found is None:
        found = _NUMERIC_FIELDS[cls] = tuple(f.name for f in mi.type_info(cls).fields if _may_hold_decimal(f.type))
    return found


def _may_hold_decimal(t: mi.Type) -> bool:
    """May hold a number that is checked: a Decimal or a float, at any depth."""
    match t:
        case mi.DecimalType() | mi.FloatType() | mi.StructType():
            return True
        case mi.ListType(item_type=item):
            return _may_hold_decimal(item)
        case mi.DictType(value_type=value):
            return _may_hold_decimal(value)
        case mi.UnionType(types=types):
            return any(_may_hold_decimal(x) for x in types)
    return False


def tag_of(cls: type[Message]) -> str:
    return cls.__struct_config__.tag


def members(union: object) -> tuple[type[Message], ...]:
    """The message classes of a socket's union."""
    args = getattr(union, "__args__", None)
    return tuple(args) if args else (union,)  # type: ignore[return-value]
