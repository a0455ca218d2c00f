"""The executor: risk's orders in (``orders``), the venue's answers out (``executions``), live or on paper.

Every order is written to a journal under the state directory when it arrives and again, with the venue id
it will have, before it is sent; so an order id is never sent twice, across restarts too (the venue id is
derived from the client id, so the venue would also refuse a second copy). Orders of one signal arriving
within ``leg_wait_ms`` of each other go out together, in one batch. When a leg of a multi-leg signal fails
(refused, or an FOK/FAK leg not filled whole), the signal's resting legs are canceled and what was filled
is reported as ``ResidualExposure``. Fills come from the venue's user stream and from REST reconciliation
(after every reconnection, on a timer, and at start), each counted once. Positions are kept from the fills, and
by the source whose order each fill was (so risk can keep an agent to selling its own shares).

Live mode trades through ``venues.polymarket.client`` (the local venue's ready-made account when no key
is set and ``venue = "local"``); paper mode fills against the scanner's books (``venues.paper``).
"""
from __future__ import annotations

import asyncio
import os
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Union

import msgspec

from . import messages as m
from .bus import REDIAL, BusError, Requester, topic
from .config import control_address, trading_mode, venue_urls
from .ledger import Ledger
from .runtime import Service, StartupError
from .sync import start_from_scanner
from .venues import base
from .venues.base import ONE, ZERO, Balance, MarketRules, OrderRequest, Placed, VenueError, VenueFill, VenueOrder
from .venues.polymarket.rebates import RebatePoller

OPEN = ("pending", "submitting", "unknown", "live")
IOC = ("FOK", "FAK")
HALTED = "HALTED"
NOT_SUBMITTED = "NOT_SUBMITTED"
SIGNAL_FAILED = "SIGNAL_FAILED"
STOPPING = "STOPPING"
STALE_ORDER = "STALE_ORDER"
RISK_SOURCE = "risk"  # a Cancel from risk itself (its kill switch) covers every source's orders
UNANSWERED = ("pending", "submitting")  # taken, and the venue has not answered yet
STRATEGIES_KIND = "services.strategies.host:Strategies"
BACKPRESSURE_S = 0.1  # how often the lag is looked at
THROTTLE_REFRESH_S = 1.0  # a throttle is repeated this often while it holds (it runs out after THROTTLE_FOR_S)
SETTLE_S = 0.3  # subscribers back after a restart: their number has not grown for this long
THROTTLE_FOR_S = 5.0


class ExecutorOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    scanner: str = "scanner"  # whose snapshot market rules and (paper) books start from; "" for none (live only)
    leg_wait_ms: float = 1.0  # how long a signal's first order waits for its other legs, so they go out together
    call_timeout_s: float = 10.0  # the longest one venue call may take
    workers: int = 4  # threads for venue calls
    heartbeat_s: float = 5.0  # venue heartbeats; once started, the venue cancels our orders when they stop. 0: none
    reconcile_s: float = 30.0  # REST reconciliation of orders and trades, besides after each reconnection
    ping_s: float = 10.0  # user channel
    stale_after_s: float = 30.0
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0
    fsync: bool = False  # fsync the journal on every record: survives power loss, not only a crash
    # An order older than this when it could go out is refused, not sent: risk priced it on a book that is gone
    # (orders queue up in risk's socket while the executor is down, and arrive in a burst when it is back).
    max_order_age_ms: int = 3000
    # Backpressure. The executor's lag is the age of its oldest order the venue has not answered yet (from when
    # risk sent it), or the wait of the latest order to be handled, whichever is larger. Past throttle_lag_ms the
    # signal producers are throttled over control to throttle_signals_per_s; they are released once the lag has
    # stayed under release_lag_ms for release_after_s.
    throttle_lag_ms: float = 750.0  # 0: never throttle
    release_lag_ms: float = 250.0
    release_after_s: float = 2.0
    throttle_signals_per_s: float = 1.0
    throttle_services: list[str] = []  # whom to throttle; empty: every enabled strategies host of the config
    rebates_s: float = 60.0  # live: how often the venue's report of the account's maker rebates is read; 0: never


# ---------------------------------------------------------------- the journal


class Taken(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=True):
    order: m.Order


class Submitting(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=True):
    order_id: str
    venue_order_id: str
    price: Decimal
    size: Decimal
    submitted_ts_ns: int


Record = Union[Taken, Submitting, m.OrderAck, m.OrderRejected, m.OrderCanceled, m.Fill, m.ResidualExposure,
               m.MarketResolved, m.Rebate]


class Journal:
    """Append-only JSON lines: each order as taken, before it is sent, and what became of it."""

    def __init__(self, path: Path, fsync: bool = False) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        self.path = path
        self.fsync = fsync
        self.bad = 0
        self._encoder = msgspec.json.Encoder()
        self._file: Any = None

    def replay(self) -> list[Any]:
        """Every record so far; a line that does not decode (a write cut short by a crash) is counted and skipped."""
        if not self.path.exists():
            return []
        decoder = msgspec.json.Decoder(Record)
        out = []
        for line in self.path.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                out.append(decoder.decode(line))
            except (msgspec.DecodeError, msgspec.ValidationError):
                self.bad += 1
        return out

    def open(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        self._file = os.fdopen(fd, "a+b")
        if self._file.seek(0, os.SEEK_END):
            self._file.seek(-1, os.SEEK_END)
            if self._file.read(1) != b"\n":
                self._file.write(b"\n")  # end a line a crash cut short, so the next record stands alone

    def write(self, record: Any) -> None:
        self._file.write(self._encoder.encode(record) + b"\n")
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


# ---------------------------------------------------------------- order states, fills, positions


@dataclass(eq=False)
class Tracked:
    order: m.Order
    status: str = "pending"  # pending, submitting, unknown (sent, answer lost), live, matched, canceled, rejected
    venue_order_id: str = ""
    price: Decimal = ZERO  # as sent: rounded to the market's rules
    size: Decimal = ZERO
    filled: Decimal = ZERO
    cost: Decimal = ZERO  # sum of fill size x price
    venue_matched: Decimal = ZERO  # what the venue last said had matched
    acked: bool = False
    inflight: bool = False
    submitted_ts_ns: int = 0
    cancel_reason: str = ""  # why we asked to cancel it (sent once the venue has answered, if it was on its way)
    failure: str = ""  # why this leg failed its signal

    def __post_init__(self) -> None:
        self.price = self.price or self.order.limit_price
        self.size = self.size or self.order.size

    @property
    def open(self) -> bool:
        return self.status in OPEN

    @property
    def remaining(self) -> Decimal:
        return max(ZERO, self.size - max(self.filled, self.venue_matched))


class Desk:
    """Order states and positions, pure: venue answers in, ``executions`` messages out through ``publish``."""

    def __init__(self, publish: Callable[[m.Message], None], record: Callable[[Any], None]) -> None:
        self.publish = publish  # send on executions, then journal
        self.record = record  # journal only
        self.orders: dict[str, Tracked] = {}
        self.by_venue: dict[str, Tracked] = {}
        self.signals: dict[str, list[Tracked]] = {}
        self.failed: set[str] = set()  # signals whose residual exposure was reported
        self.ledger = Ledger()
        self.seen: set[tuple[str, str]] = set()  # (trade id, venue order id)
        self.foreign: dict[str, VenueOrder] = {}  # open orders of the account that are not ours
        self.rules: dict[str, MarketRules] = {}
        self.counts: Counter[str] = Counter()

    def _track(self, order: m.Order) -> Tracked:
        tracked = self.orders[order.id] = Tracked(order)
        self.signals.setdefault(order.signal_id, []).append(tracked)
        return tracked

    def replay(self, rec: Any) -> None:
        """One journal record: rebuild state as it was, publishing nothing."""
        match rec:
            case Taken(order=order):
                self._track(order)
            case Submitting():
                t = self.orders.get(rec.order_id)
                if t is not None:
                    t.status, t.venue_order_id, t.price, t.size = "submitting", rec.venue_order_id, rec.price, rec.size
                    t.submitted_ts_ns = rec.submitted_ts_ns
                    self.by_venue[rec.venue_order_id] = t
            case m.OrderAck():
                if (t := self.orders.get(rec.order_id)) is not None:
                    t.acked = True
                    if t.open:
                        t.status = "matched" if t.order.order_type in IOC else "live"
            case m.OrderRejected() | m.OrderCanceled():
                if (t := self.orders.get(rec.order_id)) is not None:
                    t.status = "rejected" if isinstance(rec, m.OrderRejected) else "canceled"
            case m.Fill():
                self.seen.add((rec.trade_id, rec.venue_order_id))
                self.ledger.apply(rec)
                if (t := self.orders.get(rec.order_id)) is not None:
                    self._count_fill(t, rec.size, rec.price)
            case m.ResidualExposure():
                self.failed.add(rec.signal_id)
            case m.MarketResolved():
                self.ledger.settle(rec.market, rec.winning_token_id)
            case m.Rebate():
                self.ledger.rebate(rec)

    def resolved(self, msg: m.MarketResolved) -> None:
        """The venue redeems a resolved market's shares (1 per winning share, 0 per losing one)."""
        self.record(msg)
        self.ledger.settle(msg.market, msg.winning_token_id)

    def take(self, order: m.Order) -> Tracked | None:
        """A new order; None when its id was taken before (it is never sent twice)."""
        if order.id in self.orders:
            self.counts["duplicates"] += 1
            return None
        self.record(Taken(order=order))
        return self._track(order)

    def _msg(self, t: Tracked, cls: type, **fields: Any) -> Any:
        o = t.order
        return cls(trace_id=o.trace_id, order_id=o.id, signal_id=o.signal_id, source=o.source, **fields)

    def reject(self, t: Tracked, code: str, message: str) -> None:
        if not t.open:
            return
        t.status, t.failure = "rejected", f"leg {t.order.leg} rejected ({code}): {message}"
        self.counts["rejected"] += 1
        self.publish(self._msg(t, m.OrderRejected, code=code, message=message))

    def submitting(self, t: Tracked, venue_order_id: str, price: Decimal, size: Decimal, now_ns: int) -> None:
        t.status, t.venue_order_id, t.price, t.size, t.submitted_ts_ns = "submitting", venue_order_id, price, size, now_ns
        t.inflight = True
        self.by_venue[venue_order_id] = t
        self.record(Submitting(order_id=t.order.id, venue_order_id=venue_order_id, price=price, size=size,
                               submitted_ts_ns=now_ns))

    def ack(self, t: Tracked, status: str) -> None:
        if t.acked:
            return
        t.acked = True
        self.publish(self._msg(t, m.OrderAck, venue_order_id=t.venue_order_id, status=status,
                               submitted_ts_ns=t.submitted_ts_ns))

    def placed(self, t: Tracked, placed: Placed) -> None:
        """The venue's answer to sending the order."""
        t.inflight = False
        if not placed.ok:
            if placed.code == base.DUPLICATE:  # it reached the venue before (our id is deterministic): find out how
                t.status = "unknown"
            else:
                self.reject(t, placed.code, placed.message)
            return
        self.ack(t, placed.status)
        t.venue_matched = max(t.venue_matched, placed.matched)
        if not t.open:
            return
        if t.order.order_type in IOC:
            if placed.matched < t.size:
                t.failure = f"leg {t.order.leg} ({t.order.order_type}) matched {placed.matched} of {t.size}"
                self.end(t, t.size - placed.matched, f"{t.order.order_type} remainder")
            else:
                t.status = "matched"
        else:
            t.status = "matched" if t.filled >= t.size else "live"

    def end(self, t: Tracked, remaining: Decimal, reason: str) -> None:
        """Canceled: by us, by the venue, or the unmatched part of an FOK/FAK order."""
        if not t.open:
            return
        t.status = "canceled"
        self.publish(self._msg(t, m.OrderCanceled, venue_order_id=t.venue_order_id, remaining=remaining,
                               reason=reason))

    def _count_fill(self, t: Tracked, size: Decimal, price: Decimal) -> None:
        t.filled += size
        t.cost += size * price
        if t.filled >= t.size and t.open and t.status != "pending":
            t.status = "matched"

    def fill(self, f: VenueFill, publish: bool = True) -> None:
        """One fill, once. ``publish=False`` counts it in the positions only (history found at start)."""
        key = (f.trade_id, f.venue_order_id)
        if key in self.seen:
            return
        if f.status.upper() == "FAILED":  # the trade did not settle: nothing changed hands
            self.counts["failed_trades"] += 1
            return
        self.seen.add(key)
        t = self.by_venue.get(f.venue_order_id)
        fee, rebate = base.charges(f, self.rules.get(f.token_id))
        o = t.order if t is not None else None
        fill = m.Fill(trace_id=o.trace_id if o else m.new_id(), order_id=o.id if o else f.venue_order_id,
                      venue_order_id=f.venue_order_id, trade_id=f.trade_id, token_id=f.token_id, market=f.market,
                      side=f.side, price=f.price, size=f.size, fee=fee, liquidity=f.liquidity, status=f.status,
                      signal_id=o.signal_id if o else "", source=o.source if o else "", venue_ts_ms=f.ts_ms,
                      rebate=rebate)
        self.ledger.apply(fill)
        if t is not None:
            self.ack(t, "matched")
            self._count_fill(t, f.size, f.price)
        if publish:
            self.counts["fills"] += 1
            self.publish(fill)

    def update(self, v: VenueOrder) -> None:
        """An order's state as the venue reports it."""
        t = self.by_venue.get(v.venue_order_id)
        if t is None:
            if v.status == "LIVE":
                self.foreign[v.venue_order_id] = v
            else:
                self.foreign.pop(v.venue_order_id, None)
            return
        t.venue_matched = max(t.venue_matched, v.matched)
        if v.status == "CANCELED":
            self.ack(t, "live")
            if t.order.order_type in IOC and v.matched < t.size and not t.failure:
                t.failure = f"leg {t.order.leg} ({t.order.order_type}) matched {v.matched} of {t.size}"
            self.end(t, t.size - v.matched, t.cancel_reason or v.reason or "canceled at the venue")
        elif v.status == "MATCHED":
            self.ack(t, "matched")
            if t.open:
                t.status = "matched"
        else:
            self.ack(t, "live")
            if t.status in ("submitting", "unknown"):
                t.status = "live"

    def open_orders(self) -> list[Tracked]:
        return [t for t in self.orders.values() if t.open]

    def account(self, mode: str, reconciled_ns: int) -> m.AccountReply:
        orders = [m.OpenOrder(order_id=t.order.id, venue_order_id=t.venue_order_id, signal_id=t.order.signal_id,
                              source=t.order.source, token_id=t.order.token_id, market=t.order.market,
                              side=t.order.side, price=t.price, size=t.size, filled=t.filled, status=t.status,
                              order_type=t.order.order_type, ts_ns=t.order.ts_ns)
                  for t in self.open_orders()]
        # Orders of the account that this executor did not place are named by their venue id.
        orders += [m.OpenOrder(order_id=v.venue_order_id, venue_order_id=v.venue_order_id, signal_id="", source="",
                               token_id=v.token_id, market=v.market, side=v.side, price=v.price, size=v.size,
                               filled=v.matched, status="live", order_type=v.order_type, ts_ns=v.created_ms * 10**6)
                   for v in self.foreign.values()]
        # Whose fills bought what is held comes from the journal's fills (they carry their order's source).
        return m.AccountReply(mode=mode, positions=self.ledger.positions(), orders=orders,
                              reconciled_ts_ns=reconciled_ns, holdings=self.ledger.source_holdings())


def matches(cancel: m.Cancel, order: m.Order) -> bool:
    if cancel.source != RISK_SOURCE and order.source != cancel.source:
        return False
    if cancel.order_ids:
        return order.id in cancel.order_ids
    return (not cancel.token_id or order.token_id == cancel.token_id) and (not cancel.market or order.market == cancel.market)


# ---------------------------------------------------------------- the service

TIMED = ("prepare", "place", "cancel", "order", "open_orders", "trades", "rules")  # prepare: rounding and signing


class TimedVenue:
    """The venue, with each call in ``TIMED`` timed and its failures counted by operation."""

    def __init__(self, venue: Any, latency: Any, errors: Any) -> None:
        self._venue = venue
        self._latency = latency
        self._errors = errors

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._venue, name)
        if name not in TIMED:
            return call
        latency, errors = self._latency.labels(name), self._errors.labels(name)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await call(*args, **kwargs)
            except VenueError:
                errors.inc()
                raise
            finally:
                latency.observe(time.perf_counter() - started)
        return timed


class Executor(Service):
    publishes = ("executions",)
    consumes = {"orders": None, "prices": None, "events": None}
    Options = ExecutorOptions

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        opts: ExecutorOptions = ctx.options
        self.mode = trading_mode(ctx.config)
        if self.mode == "paper" and not opts.scanner:
            raise StartupError("paper trading fills against the scanner's books: set the executor's scanner option")
        self.journal = Journal(ctx.config.state_path / ctx.name / f"journal-{self.mode}.jsonl", opts.fsync)
        self.desk = Desk(self._publish, self.journal.write)
        for rec in self.journal.replay():
            self.desk.replay(rec)
        if self.journal.bad:
            ctx.log.warning("%d journal lines did not decode and were skipped", self.journal.bad)
        # Taken before a crash but never sent: refused at start, never sent late.
        self.unsent = [t for t in self.desk.orders.values() if t.status == "pending"]
        metrics = ctx.metrics
        self.m_orders = metrics.counter("orders", "orders received from risk", ["side", "order_type"])
        self.m_submitted = metrics.counter("orders_submitted", "orders handed to the venue")
        self.m_rejects = metrics.counter("order_rejects", "orders refused, by the venue or before it, by code", ["code"])
        self.m_fills = metrics.counter("fills", "fills", ["liquidity"])
        self.m_notional = metrics.counter("fill_notional_usdc", "price times shares of every fill")
        self.m_fees = metrics.counter("fees_usdc", "fees paid on fills")
        self.m_cancels = metrics.counter("cancels", "orders that ended canceled (by us, the venue or expiry)")
        self.m_residual = metrics.counter("residual_exposures", "multi-leg signals left partly filled")
        self.m_reconnects = metrics.counter("ws_reconnects", "venue WebSocket reconnections", ["channel"])
        self.m_open = metrics.gauge("open_orders", "orders open at the venue or on their way")
        self.m_positions = metrics.gauge("positions", "tokens held")
        self.connections = 0
        self.m_lag = metrics.gauge("executor_lag_seconds", "the executor's lag, as backpressure measures it")
        self.m_throttling = metrics.gauge("backpressure_throttling", "1 while the executor throttles signal producers")
        self.m_throttles = metrics.counter("backpressure_throttles", "times the executor began throttling")
        self.taken: deque[Tracked] = deque()  # in arrival order, for the age of the oldest unanswered order
        self.throttling = False
        self.throttles = 0
        self.lag_ms = 0.0
        self.venue = TimedVenue(self._venue(), metrics.histogram("venue_request_seconds", "venue calls, by operation",
                                                                 ["op"]),
                                metrics.counter("venue_errors", "venue calls that failed, by operation", ["op"]))
        self.journal.open()
        self.ready = False  # reconciled with the venue (live) or restored on the book (paper)
        self.synced = not opts.scanner
        self.connected = asyncio.Event()
        self.waiting: list[Tracked | m.Cancel] = []  # orders and cancels that came before ready
        self.market_backlog: list[m.Message] = []  # market data that came before the scanner's snapshot
        self.gathering: dict[str, list[Tracked]] = {}  # signal id -> its orders waiting for their siblings
        self.tasks: set[asyncio.Task] = set()
        self.reconciling: asyncio.Task | None = None
        self.reconcile_again = False  # asked for while one ran: run another after it
        self.reconciled_ns = 0
        self.reconciles = 0
        self.balance: Balance | None = None  # the venue's word on collateral and allowance, at balance_ns
        self.balance_ns = 0
        self.balance_due = asyncio.Event()

    def _venue(self) -> Any:
        opts: ExecutorOptions = self.ctx.options
        if self.mode == "paper":
            from .venues.paper import PaperVenue
            return PaperVenue(self.ctx.clock)
        from .venues.polymarket.client import PolymarketVenue
        secrets, config = self.ctx.secrets, self.ctx.config
        key = secrets.private_key
        if not key and config.venue == "local":
            from polybot_venue.server import VenueOptions, ready_made_account
            key = ready_made_account(int(config.local_venue.options.get("seed", VenueOptions().seed))).private_key
        if not key:
            raise StartupError("live trading needs a key: set POLYBOT_PRIVATE_KEY (or choose mode = \"paper\")")
        creds = None
        if secrets.api_key and secrets.api_secret and secrets.api_passphrase:
            creds = {"api_key": secrets.api_key, "api_secret": secrets.api_secret,
                     "api_passphrase": secrets.api_passphrase}
        return PolymarketVenue(venue_urls(config), key, creds, self.ctx.log, opts.call_timeout_s, opts.workers,
                               opts.heartbeat_s, opts.ping_s, opts.stale_after_s, opts.reconnect_initial_s,
                               opts.reconnect_max_s)

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        if self.mode == "live":  # books are for paper fills: let the SUB socket filter them out
            for kind in (m.BookSnapshot, m.BookDelta, m.LastTrade):
                self.ctx.inbound["prices"].socket.unsubscribe(topic(kind))
        tasks = [asyncio.create_task(self.venue.start(self._on_events, self._on_connected), name="venue"),
                 asyncio.create_task(self._start(), name="start"),
                 asyncio.create_task(self._reconcile_every(), name="reconcile"),
                 asyncio.create_task(self._backpressure(), name="backpressure"),
                 asyncio.create_task(self._balances(), name="balances")]
        if self.mode == "live" and self.ctx.options.rebates_s > 0:
            tasks.append(asyncio.create_task(self._rebates().run(), name="rebates"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in [*tasks, *self.tasks]:
                task.cancel()
            self.venue.close()

    def _rebates(self) -> RebatePoller:
        """The venue's reports of the account's maker rebates, published (and journaled) as they change."""
        def publish(msg: m.Rebate) -> None:
            self.desk.ledger.rebate(msg)
            self._publish(msg)
        opts: ExecutorOptions = self.ctx.options
        return RebatePoller(venue_urls(self.ctx.config).clob_url, self.venue.funder, publish, self.ctx.log,
                            self.desk.ledger.rebates.reports.values(), opts.rebates_s, opts.call_timeout_s)

    async def _start(self) -> None:
        if self.mode == "paper":  # paper needs the books before it can fill anything
            await self._sync()
        elif self.ctx.options.scanner:  # live takes rules from the venue until the scanner's arrive
            self._spawn(self._sync())
        await self.connected.wait()
        if self.mode == "paper":
            self._restore_paper()
        await self._heard_by_subscribers()
        await self._reconcile(startup=True)
        self.ready = True
        self.ctx.log.info("ready", extra={"mode": self.mode, "open_orders": len(self.desk.open_orders())})
        waiting, self.waiting = self.waiting, []
        for item in waiting:
            self._cancel(item) if isinstance(item, m.Cancel) else self._route(item)

    async def _heard_by_subscribers(self) -> None:
        """The startup reconciliation publishes what happened while this executor was down (a fill, the venue
        canceling a silent account's orders). Subscribers find a restarted publisher only at their next redial (up
        to bus.REDIAL's maximum) and lose what was sent before: so wait, bounded by that, until they are back (some
        are, and their number has stopped growing for a moment)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REDIAL["reconnect_time_max"] / 1000 + 0.25
        seen, since = -1, loop.time()
        while loop.time() < deadline:
            peers = self.ctx.peers("executions")
            if peers != seen:
                seen, since = peers, loop.time()
            elif peers and loop.time() - since >= SETTLE_S:
                return
            await asyncio.sleep(0.02)  # polling the socket's peer count, bounded by the deadline above

    async def _sync(self) -> None:
        await start_from_scanner(self.ctx, self.ctx.options.scanner, self._market, self._take_backlog)

    def _take_backlog(self) -> list[m.Message]:
        backlog, self.market_backlog, self.synced = self.market_backlog, [], True
        return backlog

    def _restore_paper(self) -> None:
        for t in self.desk.open_orders():
            rules = self.desk.rules.get(t.order.token_id)
            if t.status == "pending" or rules is None or t.order.order_type in IOC:
                continue
            self.venue.restore(self._request(t, rules, t.price, t.size), t.venue_order_id, t.filled,
                               sum(1 for trade, vid in self.desk.seen if vid == t.venue_order_id))

    def _on_connected(self) -> None:
        self.connections += 1
        if self.connections > 1:
            self.m_reconnects.labels("user").inc()
        self.connected.set()
        if self.ready:
            self._reconcile_soon()

    def on_stop(self) -> None:
        for t in [*(i for i in self.waiting if isinstance(i, Tracked)), *(t for g in self.gathering.values() for t in g)]:
            self.desk.reject(t, STOPPING, "the executor stopped before sending it")
        self.journal.close()

    def on_halt(self, reason: str) -> None:
        self.ctx.log.warning("halted: new orders are refused until resumed; cancels still go through")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.desk.counts["task_errors"] += 1
            self.ctx.log.error("executor task failed: %s: %s", type(exc).__name__, exc, exc_info=exc)

    def _publish(self, msg: m.Message) -> None:
        self.ctx.send("executions", msg)
        self.journal.write(msg)
        match msg:
            case m.Fill():
                self.balance_due.set()
                self.m_fills.labels(msg.liquidity).inc()
                self.m_notional.inc(float(msg.price * msg.size))  # Prometheus values are floats
                self.m_fees.inc(float(msg.fee))
            case m.OrderRejected():
                self.m_rejects.labels(msg.code).inc()
            case m.OrderCanceled():
                self.m_cancels.inc()
            case m.ResidualExposure():
                self.m_residual.inc()

    # ------------------------------------------------------------ inbound

    def handle(self, socket: str, msg: m.Message) -> None:
        if isinstance(msg, m.Heartbeat):
            return
        if socket == "orders":
            if isinstance(msg, m.Cancel):
                self._cancel(msg) if self.ready else self.waiting.append(msg)
            elif isinstance(msg, m.Order):
                self._take(msg)
        elif self.synced:
            self._market(msg)
        else:
            self.market_backlog.append(msg)

    def _market(self, msg: m.Message) -> None:
        if isinstance(msg, m.MarketNew):
            self.desk.rules.update(base.rules_from(msg))
        elif isinstance(msg, m.TickSizeChange) and msg.token_id in self.desk.rules:
            self.desk.rules[msg.token_id] = msgspec.structs.replace(self.desk.rules[msg.token_id],
                                                                    tick=msg.new_tick_size)
        elif isinstance(msg, m.MarketResolved):
            self.desk.resolved(msg)
        self.venue.observe(msg)

    def _take(self, order: m.Order) -> None:
        self.m_orders.labels(order.side, order.order_type).inc()
        t = self.desk.take(order)
        if t is None:
            self.ctx.log.warning("order %s was taken before; not sent again", order.id)
            return
        self.taken.append(t)
        if self.ctx.halted:
            self.desk.reject(t, HALTED, f"the executor is halted: {self.ctx.halt_reason}")
        elif order.signal_id in self.desk.failed:
            self.desk.reject(t, SIGNAL_FAILED, "another leg of its signal failed; the signal was unwound")
        elif not self.ready:
            self.waiting.append(t)
        else:
            self._route(t)

    def _route(self, t: Tracked) -> None:
        if not t.open:  # canceled while it waited
            return
        age_ms = (self.ctx.clock() - t.order.ts_ns) / 1e6
        if age_ms > self.ctx.options.max_order_age_ms:
            self.desk.reject(t, STALE_ORDER, f"the order reached the venue edge {age_ms:.0f} ms after risk sent it "
                                             f"(limit {self.ctx.options.max_order_age_ms} ms); not sent")
            return
        sid = t.order.signal_id
        group = self.gathering.get(sid)
        if group is not None:
            group.append(t)
            return
        self.gathering[sid] = [t]
        asyncio.get_running_loop().call_later(self.ctx.options.leg_wait_ms / 1000, self._flush, sid)

    def _flush(self, sid: str) -> None:
        group = self.gathering.pop(sid, [])
        if group:
            self._spawn(self._submit(group))

    # ------------------------------------------------------------ submitting

    def _request(self, t: Tracked, rules: MarketRules, price: Decimal, size: Decimal) -> OrderRequest:
        o = t.order
        return OrderRequest(client_id=o.id, token_id=o.token_id, market=o.market or rules.market, side=o.side,
                            price=price, size=size, order_type=o.order_type, rules=rules, post_only=o.post_only,
                            expires_s=o.expires_s, created_ms=o.ts_ns // 1_000_000)

    async def _rules(self, t: Tracked) -> MarketRules:
        rules = self.desk.rules.get(t.order.token_id)
        if rules is None:
            rules = self.desk.rules[t.order.token_id] = await self.venue.rules(t.order.token_id, t.order.market)
        return rules

    async def _submit(self, group: list[Tracked]) -> None:
        requests: list[tuple[Tracked, OrderRequest]] = []
        for t in group:
            if not t.open:
                continue
            try:
                rules = await self._rules(t)
            except VenueError as exc:
                self.desk.reject(t, exc.code, exc.message)
                continue
            price = base.round_price(t.order.side, t.order.limit_price, rules.tick)
            size = base.round_size(t.order.size)
            if not rules.tick <= price <= ONE - rules.tick:
                self.desk.reject(t, base.PRICE_RANGE, f"price {t.order.limit_price} rounds to {price}, outside "
                                                      f"[{rules.tick}, {ONE - rules.tick}]")
            elif size <= 0:
                self.desk.reject(t, base.MIN_SIZE, f"size {t.order.size} rounds to {size}")
            elif t.open:
                requests.append((t, self._request(t, rules, price, size)))
        sent = await self._send(requests)
        if self.ctx.tracing:  # each order's span ends once the venue has answered
            for t in group:
                self.ctx.tracing.order(t.order, t.status, t.venue_order_id, t.price, t.submitted_ts_ns, t.failure)
        for t in sent:
            if t.cancel_reason and t.status == "live":
                await self._cancel_at_venue([t], t.cancel_reason)
        await self._check_signals({t.order.signal_id for t in group})

    async def _send(self, requests: list[tuple[Tracked, OrderRequest]]) -> list[Tracked]:
        if not requests:
            return []
        try:
            prepared = await self.venue.prepare([r for _, r in requests])
        except VenueError as exc:
            for t, _ in requests:
                self.desk.reject(t, exc.code, exc.message)
            return []
        batch = []
        for (t, req), p in zip(requests, prepared):
            if not p.ok:
                self.desk.reject(t, p.code, p.message)
            elif t.open:  # journaled with its venue id before it goes: never sent twice
                self.desk.submitting(t, p.venue_order_id, req.price, req.size, self.ctx.clock())
                self.m_submitted.inc()
                batch.append((t, req))
        if not batch:
            return []
        try:
            placed = await self.venue.place([r for _, r in batch])
        except VenueError as exc:
            for t, _ in batch:
                t.inflight = False
                if exc.unknown:
                    t.status = "unknown"
                else:
                    self.desk.reject(t, exc.code, exc.message)
            if exc.unknown:
                self.ctx.log.warning("orders sent with no answer (%s); reconciling", exc)
                self._reconcile_soon()
            return [t for t, _ in batch]
        for (t, _), p in zip(batch, placed):
            self.desk.placed(t, p)
        if any(t.status == "unknown" for t, _ in batch):
            self._reconcile_soon()
        return [t for t, _ in batch]

    async def _check_signals(self, signal_ids: set[str]) -> None:
        for sid in signal_ids:
            legs = self.desk.signals.get(sid, [])
            failed = [t for t in legs if t.failure]
            multi_leg = len(legs) > 1 or any(t.order.leg > 0 for t in legs)
            if failed and multi_leg and sid not in self.desk.failed:
                await self._unwind(sid, legs, failed[0].failure)

    async def _unwind(self, sid: str, legs: list[Tracked], reason: str) -> None:
        """A multi-leg signal that failed: cancel what rests, then report what was filled and is now held."""
        self.desk.failed.add(sid)
        self.ctx.log.warning("signal %s failed (%s); canceling its resting legs", sid, reason)
        await self._cancel_orders([t for t in legs if t.open], "another leg of the signal failed")
        try:
            for f in await self.venue.trades(sorted({t.order.token_id for t in legs})):
                self.desk.fill(f)
        except VenueError as exc:
            self.ctx.log.warning("could not read the signal's trades (%s); reporting the fills seen", exc)
        exposure = [m.Exposure(token_id=t.order.token_id, market=t.order.market, side=t.order.side, size=t.filled,
                               avg_price=t.cost / t.filled) for t in legs if t.filled > 0]
        first = legs[0].order
        self._publish(m.ResidualExposure(trace_id=first.trace_id, signal_id=sid, source=first.source, reason=reason,
                                         exposure=exposure))

    # ------------------------------------------------------------ canceling

    def _cancel(self, cancel: m.Cancel) -> None:
        targets = [t for t in self.desk.open_orders() if matches(cancel, t.order)]
        foreign = list(self.desk.foreign) if cancel.source == RISK_SOURCE and not cancel.order_ids else []
        if targets or foreign:
            self._spawn(self._cancel_orders(targets, cancel.reason or f"canceled by {cancel.source}", foreign))

    async def _cancel_orders(self, targets: list[Tracked], reason: str, foreign: list[str] | None = None) -> None:
        at_venue = []
        for t in targets:
            if t.status == "pending":  # not sent yet: it never will be
                self.desk.end(t, t.size, reason)
            elif t.inflight:
                t.cancel_reason = reason  # canceled once the venue has answered
            elif t.open:
                t.cancel_reason = reason  # the user channel may report the cancel before the REST answer
                at_venue.append(t)
        await self._cancel_at_venue(at_venue, reason, foreign or [])

    async def _cancel_at_venue(self, targets: list[Tracked], reason: str, foreign: list[str] | None = None) -> None:
        ids = [t.venue_order_id for t in targets] + (foreign or [])
        if not ids:
            return
        try:
            result = await self.venue.cancel(ids)
        except VenueError as exc:
            self.ctx.log.warning("cancel failed (%s); reconciling", exc)
            self._reconcile_soon()
            return
        for t in targets:
            why = result.get(t.venue_order_id)
            if why == "":
                self.desk.end(t, t.remaining, reason)
            elif t.open:  # matched or gone meanwhile: ask what became of it
                try:
                    await self._check_order(t)
                except VenueError as exc:
                    self.ctx.log.warning("order %s: cannot read its state (%s); reconciling", t.order.id, exc)
                    self._reconcile_soon()
        for vid in foreign or []:
            if result.get(vid) == "":
                self.desk.foreign.pop(vid, None)

    # ------------------------------------------------------------ reconciling

    def _on_events(self, events: list[base.VenueEvent]) -> None:
        for event in events:
            if isinstance(event, VenueFill):
                self.desk.fill(event)
            else:
                self.desk.update(event)

    def _reconcile_soon(self) -> None:
        """Reconcile now; one asked for while another runs follows it (that one may have read the venue too early)."""
        if self.reconciling is None or self.reconciling.done():
            self.reconciling = asyncio.get_running_loop().create_task(self._reconcile_while_asked())
            self.reconciling.add_done_callback(self._done)
        else:
            self.reconcile_again = True

    async def _reconcile_while_asked(self) -> None:
        opts: ExecutorOptions = self.ctx.options
        delay, self.reconcile_again = opts.reconnect_initial_s, True
        while self.reconcile_again:
            self.reconcile_again = False
            if await self._reconcile():
                continue
            if any(t.status == "unknown" and not t.inflight for t in self.desk.open_orders()):
                # The venue could not be read and only it knows what became of these: ask again soon.
                await asyncio.sleep(delay)
                delay, self.reconcile_again = min(delay * 2, opts.reconcile_s), True

    async def _reconcile_every(self) -> None:
        while True:
            await asyncio.sleep(self.ctx.options.reconcile_s)
            if self.ready:
                self._reconcile_soon()

    async def _reconcile(self, startup: bool = False) -> bool:
        """Take the venue's word for our open orders and trades: what the stream missed is published now.

        False when the venue could not be read (at startup it is asked until it answers)."""
        while True:
            try:
                await self._reconcile_once(startup)
                return True
            except VenueError as exc:
                if not startup:
                    self.ctx.log.warning("reconciliation failed (%s); trying again later", exc)
                    return False
                self.ctx.log.warning("cannot reconcile with the venue yet (%s); retrying", exc)
                await asyncio.sleep(self.ctx.options.reconnect_initial_s)

    async def _reconcile_once(self, startup: bool) -> None:
        started = self.ctx.clock()
        open_orders = await self.venue.open_orders()
        for f in await self.venue.trades():
            # At start, fills of orders this executor never placed are the account's history, not news.
            self.desk.fill(f, publish=not startup or f.venue_order_id in self.desk.by_venue)
        live = {v.venue_order_id for v in open_orders}
        self.desk.foreign = {}
        for v in open_orders:
            self.desk.update(v)
        if startup:
            for t in self.unsent:
                self.desk.reject(t, NOT_SUBMITTED, "the executor stopped before sending it; it was not sent")
            self.unsent = []
        for t in self.desk.open_orders():
            if t.status == "pending" or t.inflight or t.venue_order_id in live or t.submitted_ts_ns >= started:
                continue
            await self._check_order(t)
        self.reconciled_ns = self.ctx.clock()
        self.reconciles += 1
        self.balance_due.set()

    async def _balances(self) -> None:
        """The collateral and allowance, read after each reconciliation and soon after fills (at most once a
        second); a failure keeps the last reading, whose time says how old it is."""
        while True:
            await self.balance_due.wait()
            self.balance_due.clear()
            try:
                self.balance = await self.venue.balance()
                self.balance_ns = self.ctx.clock() if self.balance is not None else 0
            except VenueError as exc:
                self.ctx.log.warning("could not read the collateral balance (%s); keeping the last reading", exc)
            await asyncio.sleep(1.0)  # pacing the venue's rate limit, not waiting for anything

    async def _check_order(self, t: Tracked) -> None:
        state = await self.venue.order(t.venue_order_id)
        if state is not None:
            self.desk.update(state)
        elif t.status in ("submitting", "unknown"):
            self.desk.reject(t, NOT_SUBMITTED, "the venue never received it")
        else:
            self.desk.end(t, t.remaining, "the venue no longer knows the order")

    # ------------------------------------------------------------ backpressure

    def _lag_ns(self, now: int, handled_before: int) -> int:
        taken = self.taken
        while taken and taken[0].status not in UNANSWERED:
            taken.popleft()
        oldest = now - taken[0].order.ts_ns if taken else 0
        flow = self.ctx.flows["orders"]
        inbound = flow.lag.last_ns if flow.handled != handled_before or flow.depth else 0
        return max(oldest, inbound)

    def _throttle_targets(self) -> list[str]:
        config = self.ctx.config
        return list(self.ctx.options.throttle_services) or [
            n for n in config.enabled_services if config.services[n].kind == STRATEGIES_KIND]

    async def _backpressure(self) -> None:
        """Throttle the signal producers while the executor lags; release them once it has caught up."""
        opts: ExecutorOptions = self.ctx.options
        targets = self._throttle_targets()
        if not opts.throttle_lag_ms or not targets:
            return
        requesters = {name: Requester(control_address(self.ctx.config, name), 1000) for name in targets}
        handled, told_ns, calm_since = self.ctx.flows["orders"].handled, 0, None
        try:
            while True:
                await asyncio.sleep(BACKPRESSURE_S)
                now = self.ctx.clock()
                lag_ns = self._lag_ns(now, handled)
                handled = self.ctx.flows["orders"].handled
                self.lag_ms = lag_ns / 1e6
                self.m_lag.set(lag_ns / 1e9)
                if self.lag_ms > opts.throttle_lag_ms and not self.throttling:
                    self.throttling, calm_since = True, None
                    self.throttles += 1
                    self.m_throttles.inc()
                    self.m_throttling.set(1)
                    self.ctx.log.warning("lagging %.0f ms (limit %.0f ms): throttling %s to %s signals/s",
                                         self.lag_ms, opts.throttle_lag_ms, ", ".join(targets),
                                         opts.throttle_signals_per_s)
                if not self.throttling:
                    continue
                if self.lag_ms > opts.release_lag_ms:
                    calm_since = None
                elif calm_since is None:
                    calm_since = now
                elif now - calm_since >= opts.release_after_s * 1e9:
                    self.throttling = False
                    self.m_throttling.set(0)
                    self.ctx.log.info("caught up (lag %.0f ms): releasing %s", self.lag_ms, ", ".join(targets))
                    await self._tell(requesters, m.ThrottleRequest(throttle=False, by=self.ctx.name,
                                                                   reason="the executor caught up"))
                    continue
                if now - told_ns >= THROTTLE_REFRESH_S * 1e9:
                    told_ns = now
                    await self._tell(requesters, m.ThrottleRequest(
                        max_signals_per_s=opts.throttle_signals_per_s, for_s=THROTTLE_FOR_S, by=self.ctx.name,
                        reason=f"the executor lags {self.lag_ms:.0f} ms (limit {opts.throttle_lag_ms:.0f} ms)"))
        finally:
            for requester in requesters.values():
                requester.close()

    async def _tell(self, requesters: dict[str, Requester], request: m.ThrottleRequest) -> None:
        for name, requester in requesters.items():
            try:
                reply = await asyncio.to_thread(requester.request, request)
            except BusError as exc:  # down or busy: a restarted producer is told again on the next refresh
                self.ctx.log.warning("could not tell %s to %s: %s", name,
                                     "slow down" if request.throttle else "resume", exc)
                continue
            if isinstance(reply, m.Error):
                self.ctx.log.warning("%s refused the throttle: %s", name, reply.message)

    # ------------------------------------------------------------ control

    def control(self, request: m.Message) -> m.Message | None:
        if isinstance(request, m.AccountRequest):
            if not self.ready:
                return m.Error(request_id=request.id, message="the executor has not reconciled with the venue yet; "
                                                              "ask again shortly")
            reply = self.desk.account(self.mode, self.reconciled_ns)
            if self.balance is None:
                return reply
            return msgspec.structs.replace(reply, collateral=self.balance.collateral,
                                           allowance=self.balance.allowance, balance_ts_ns=self.balance_ns)
        return None

    def sample(self) -> None:
        self.m_open.set(len(self.desk.open_orders()))
        self.m_positions.set(len(self.desk.ledger.positions()))

    def detail(self) -> dict[str, str]:
        desk = self.desk
        return {"mode": self.mode, "ready": str(self.ready), "synced": str(self.synced),
                "open_orders": str(len(desk.open_orders())), "positions": str(len(desk.ledger.positions())),
                "fills": str(desk.counts["fills"]), "rejected": str(desk.counts["rejected"]),
                "duplicates": str(desk.counts["duplicates"]), "journal_bad_lines": str(self.journal.bad),
                "reconciles": str(self.reconciles), "lag_ms": f"{self.lag_ms:.1f}",
                "throttling": str(self.throttling), "throttles": str(self.throttles),
                **self.venue.detail()}
