"""The order desk, pure: order states, fills and positions; venue answers in, ``executions`` messages out.

An order is ``pending`` when taken, ``submitting`` once journaled with its venue id and handed to the venue,
then ``live``, ``matched``, ``canceled`` or ``rejected``; ``unknown`` when it was sent and no answer says what
became of it (only reconciliation can tell). No I/O here: the service asks the venue and tells the desk what it
said; messages go out through ``publish`` (executions, then the journal), state through ``record`` (journal).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

from .. import messages as m
from ..ledger import Ledger
from ..venues import base
from ..venues.base import ONE, ZERO, MarketRules, OrderRequest, Placed, VenueError, VenueFill, VenueOrder
from .journal import JournalError, Submitting, Taken

OPEN = ("pending", "submitting", "unknown", "live")
IOC = ("FOK", "FAK")
RISK_SOURCE = "risk"  # a Cancel from risk itself (its kill switch) covers every source's orders
UNANSWERED = ("pending", "submitting")  # taken, and the venue has not answered yet

# Why the executor refused an order itself: OrderRejected.code, beside the venue's codes in venues.base.
HALTED = "HALTED"
NOT_SUBMITTED = "NOT_SUBMITTED"
SIGNAL_FAILED = "SIGNAL_FAILED"
STOPPING = "STOPPING"
STALE_ORDER = "STALE_ORDER"
JOURNAL_FAILED = "JOURNAL_FAILED"  # the journal could not record it (a full disk): not sent, never sent later


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

    def __init__(self, publish: Callable[[m.Message], None], record: Callable[[Any], None],
                 clock: Callable[[], int]) -> None:
        self.publish = publish  # send on executions, then journal
        self.record = record  # journal only
        self.clock = clock  # ns since the epoch: the time of each message, and of each send
        self.orders: dict[str, Tracked] = {}
        self.by_venue: dict[str, Tracked] = {}
        self.signals: dict[str, list[Tracked]] = {}
        self.failed: set[str] = set()  # signals whose residual exposure was reported
        self.ledger = Ledger()
        self.seen: set[tuple[str, str]] = set()  # (trade id, venue order id): counted, or failed before it was
        self.history: set[tuple[str, str]] = set()  # counted, not published: the account's history found at start
        self.foreign: dict[str, VenueOrder] = {}  # open orders of the account that are not ours
        self.rules: dict[str, MarketRules] = {}
        self.winners: dict[str, str] = {}  # market -> its winning token, for every resolution heard
        self.counts: Counter[str] = Counter()

    def _track(self, order: m.Order) -> Tracked:
        tracked = self.orders[order.id] = Tracked(order)
        self.signals.setdefault(order.signal_id, []).append(tracked)
        return tracked

    def restore(self, records: Iterable[Any]) -> list[Tracked]:
        """Rebuild from the journal's records; returns the orders taken but never sent (refused at start, never
        sent late)."""
        for rec in records:
            self.replay(rec)
        return [t for t in self.orders.values() if t.status == "pending"]

    def replay(self, rec: Any) -> None:
        """One journal record: rebuild state as it was, publishing nothing."""
        match rec:
            case Taken(order=order):
                if order.id not in self.orders:  # a record written twice counts once
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
                if self.ledger.apply(rec) and (t := self.orders.get(rec.order_id)) is not None:
                    self._count_fill(t, rec.size, rec.price)
            case m.FillStatus():
                self._moved(rec)
            case m.ResidualExposure():
                self.failed.add(rec.signal_id)
            case m.MarketResolved():
                self.winners[rec.market] = rec.winning_token_id
                self.ledger.settle(rec.market, rec.winning_token_id)
            case m.Rebate():
                self.ledger.rebate(rec)

    def resolved(self, msg: m.MarketResolved) -> None:
        """A market resolved, as the scanner heard it or the venue said when asked: its shares are redeemed, 1 per
        winning share and 0 per losing one. Settling shares held is published on ``executions`` (numbered and
        journaled), so risk and analytics settle them too, even if they missed the scanner's word; a resolution
        heard again finds nothing left to settle and publishes nothing. One of a market not held is only
        journaled, the first time."""
        first = msg.market not in self.winners
        self.winners[msg.market] = msg.winning_token_id
        if self.holds(msg.market):
            self.counts["settlements"] += 1
            self.publish(m.MarketResolved(ts_ns=self.clock(), trace_id=msg.trace_id, market=msg.market,
                                          winning_token_id=msg.winning_token_id,
                                          winning_outcome=msg.winning_outcome))
        elif first:
            try:
                self.record(msg)
            except JournalError:  # nothing was held: there is nothing to rebuild from it
                self.counts["journal_errors"] += 1
        self.ledger.settle(msg.market, msg.winning_token_id)

    def holds(self, market: str) -> bool:
        return any(h.size and h.market == market for h in self.ledger.holdings.values())

    def unsettled(self) -> list[str]:
        """The markets whose shares the account holds: the venue is asked whether they resolved, in case the
        resolution was announced while no one listened."""
        return sorted({h.market for h in self.ledger.holdings.values() if h.size and h.market})

    def venue_resolution(self, found: base.Resolution) -> None:
        """The venue's answer when asked about a market held: resolved, it is settled as if announced."""
        if found.winner and self.holds(found.market):
            self.resolved(m.MarketResolved(ts_ns=self.clock(), market=found.market, winning_token_id=found.winner,
                                           winning_outcome=found.outcome))

    def take(self, order: m.Order) -> Tracked | None:
        """A new order; None when its id was taken before (it is never sent twice). One the journal cannot record
        is refused at once (JOURNAL_FAILED), so whoever counts it open hears that it is not."""
        if order.id in self.orders:
            self.counts["duplicates"] += 1
            return None
        t = self._track(order)
        try:
            self.record(Taken(order=order))
        except JournalError as exc:
            self._unrecorded(t, exc)
        return t

    def _unrecorded(self, t: Tracked, exc: JournalError) -> None:
        self.counts["journal_errors"] += 1
        self.reject(t, JOURNAL_FAILED, f"not sent: the executor could not record the order ({exc}); free disk "
                                       "space under the state directory, then send it again")

    def _msg(self, t: Tracked, cls: type, **fields: Any) -> Any:
        o = t.order
        return cls(ts_ns=self.clock(), trace_id=o.trace_id, order_id=o.id, signal_id=o.signal_id, source=o.source,
                   **fields)

    def reject(self, t: Tracked, code: str, message: str) -> None:
        if not t.open:
            return
        t.status, t.failure = "rejected", f"leg {t.order.leg} rejected ({code}): {message}"
        self.counts["rejected"] += 1
        self.publish(self._msg(t, m.OrderRejected, code=code, message=message))

    def submitting(self, t: Tracked, venue_order_id: str, price: Decimal, size: Decimal) -> bool:
        """About to be sent: journaled with the venue id it will have first, so it is never sent twice; False (and
        refused) when the journal cannot record that: it must not go."""
        now_ns = self.clock()
        try:
            self.record(Submitting(order_id=t.order.id, venue_order_id=venue_order_id, price=price, size=size,
                                   submitted_ts_ns=now_ns))
        except JournalError as exc:
            self._unrecorded(t, exc)
            return False
        t.status, t.venue_order_id, t.price, t.size, t.submitted_ts_ns = "submitting", venue_order_id, price, size, now_ns
        t.inflight = True
        self.by_venue[venue_order_id] = t
        return True

    def ack(self, t: Tracked, status: str) -> None:
        if t.acked:
            return
        t.acked = True
        self.publish(self._msg(t, m.OrderAck, venue_order_id=t.venue_order_id, status=status,
                               submitted_ts_ns=t.submitted_ts_ns))

    def answered(self, t: Tracked, answer: Placed | VenueError) -> None:
        """The one place the venue's answer to sending an order lands: placed (``Placed``, perhaps matched at once),
        refused with a code (a ``Placed`` with a code, or a ``VenueError`` for the whole batch), or unknown (a
        ``VenueError`` that may have taken effect, or a duplicate: it reached the venue before, since our venue id
        is derived from the client id). An unknown order stays open until reconciliation finds out."""
        t.inflight = False
        if isinstance(answer, Placed) and answer.ok:
            self._placed(t, answer)
        elif answer.unknown if isinstance(answer, VenueError) else answer.code == base.DUPLICATE:
            if t.open:  # the user channel may have told its fate already
                t.status = "unknown"
        else:
            self.reject(t, answer.code, answer.message)

    def _placed(self, t: Tracked, placed: Placed) -> None:
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
        """One fill, counted once, pending until its trade is CONFIRMED (then ``FillStatus`` says it settled) or
        FAILED (then ``FillStatus`` reverses it). One whose trade failed before it was counted is never counted.
        ``publish=False`` counts it in the positions only (history found at start); so are its later statuses."""
        key = (f.trade_id, f.venue_order_id)
        status = f.status.upper()
        if key in self.seen:
            t = self.by_venue.get(f.venue_order_id)
            counted = self.ledger.counted.get((f.trade_id, t.order.id if t is not None else f.venue_order_id))
            if counted is not None and status in ("CONFIRMED", "FAILED"):
                self._status(counted, status, publish and key not in self.history)
            return
        self.seen.add(key)
        if status == "FAILED":  # the trade did not settle: nothing changed hands
            self.counts["failed_trades"] += 1
            return
        t = self.by_venue.get(f.venue_order_id)
        fee, rebate = base.charges(f, self.rules.get(f.token_id))
        o = t.order if t is not None else None
        fill = m.Fill(ts_ns=self.clock(), trace_id=o.trace_id if o else m.new_id(),
                      order_id=o.id if o else f.venue_order_id, venue_order_id=f.venue_order_id, trade_id=f.trade_id,
                      token_id=f.token_id, market=f.market, side=f.side, price=f.price, size=f.size, fee=fee,
                      liquidity=f.liquidity, status=f.status, signal_id=o.signal_id if o else "",
                      source=o.source if o else "", venue_ts_ms=f.ts_ms, rebate=rebate)
        self.ledger.apply(fill)
        if t is not None:
            self.ack(t, "matched")
            self._count_fill(t, f.size, f.price)
        if publish:
            self.counts["fills"] += 1
            self.publish(fill)
        else:
            self.history.add(key)

    def _status(self, fill: m.Fill, status: str, publish: bool) -> None:
        """A counted fill's trade settled or failed: the positions follow, and (unless it is history) executions
        hear it."""
        msg = m.FillStatus(ts_ns=self.clock(), trace_id=fill.trace_id, fill=fill, status=status)  # type: ignore[arg-type]
        if not self._moved(msg):
            return
        if status == "FAILED":
            self.counts["failed_after_fill"] += 1
        if publish:
            self.publish(msg)

    def _moved(self, msg: m.FillStatus) -> bool:
        """The ledger and the order's fill count follow a settled or failed trade; False when nothing changed."""
        fill = msg.fill
        if not self.ledger.moved(msg):
            return False
        if msg.status == "FAILED":
            if (t := self.orders.get(fill.order_id)) is not None:
                t.filled -= fill.size
                t.cost -= fill.size * fill.price
        return True

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

    def looked_up(self, t: Tracked, state: VenueOrder | None) -> None:
        """The venue's answer when asked about one order: its state, or None when it does not know the order."""
        if state is not None:
            self.update(state)
        elif t.status in ("submitting", "unknown"):
            self.reject(t, NOT_SUBMITTED, "the venue never received it")
        else:
            self.end(t, t.remaining, "the venue no longer knows the order")

    def reconcile(self, open_orders: list[VenueOrder], trades: list[VenueFill], startup: bool) -> None:
        """The venue's word on the account: every trade it reports (each counted once) and its open orders (ours
        updated, the others kept as foreign). At start, fills of orders this executor never placed are the
        account's history, not news: counted, not published."""
        for f in trades:
            self.fill(f, publish=not startup or f.venue_order_id in self.by_venue)
        self.foreign = {}
        for v in open_orders:
            self.update(v)

    @staticmethod
    def unexplained(t: Tracked, live: set[str], read_ns: int) -> bool:
        """An open order that the venue's list of open orders (read at ``read_ns``) should name and does not:
        sent before it was read and answered since. Only the venue can say what became of it."""
        return not (t.status == "pending" or t.inflight or t.venue_order_id in live or t.submitted_ts_ns >= read_ns)

    # ------------------------------------------------------------ canceling and failing signals

    def cancel(self, targets: Iterable[Tracked], reason: str) -> list[Tracked]:
        """Cancel these orders: one not sent yet ends now (it never will be sent), one on its way is canceled once
        the venue has answered; returns those to cancel at the venue now."""
        at_venue = []
        for t in targets:
            if t.status == "pending":
                self.end(t, t.size, reason)
            elif t.inflight:
                t.cancel_reason = reason
            elif t.open:
                t.cancel_reason = reason  # the user channel may report the cancel before the REST answer
                at_venue.append(t)
        return at_venue

    def signal_failure(self, sid: str) -> str:
        """Why a multi-leg signal failed (a leg refused, or an FOK/FAK leg not filled whole), when it did and was
        not unwound yet; else ""."""
        legs = self.signals.get(sid, [])
        failed = [t for t in legs if t.failure]
        multi_leg = len(legs) > 1 or any(t.order.leg > 0 for t in legs)
        return failed[0].failure if failed and multi_leg and sid not in self.failed else ""

    def unwinding(self, sid: str) -> list[Tracked]:
        """A failed signal is being unwound: its orders from now on are refused; returns its legs still open."""
        self.failed.add(sid)
        return [t for t in self.signals.get(sid, []) if t.open]

    def residual(self, sid: str, reason: str) -> None:
        """An unwound signal's report: what its legs filled, now held unhedged."""
        legs = self.signals.get(sid, [])
        exposure = [m.Exposure(token_id=t.order.token_id, market=t.order.market, side=t.order.side, size=t.filled,
                               avg_price=t.cost / t.filled) for t in legs if t.filled > 0]
        first = legs[0].order
        self.publish(m.ResidualExposure(ts_ns=self.clock(), trace_id=first.trace_id, signal_id=sid,
                                        source=first.source, reason=reason, exposure=exposure))

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



class Refusal(NamedTuple):
    code: str
    message: str


def sendable(order: m.Order, rules: MarketRules) -> OrderRequest | Refusal:
    """The order as the venue gets it, price and size rounded to the market's rules (never more aggressive than
    asked); or why it cannot be sent as it is."""
    price = base.round_price(order.side, order.limit_price, rules.tick)
    size = base.round_size(order.size)
    if not rules.tick <= price <= ONE - rules.tick:
        return Refusal(base.PRICE_RANGE, f"price {order.limit_price} rounds to {price}, outside "
                                         f"[{rules.tick}, {ONE - rules.tick}]")
    if size <= 0:
        return Refusal(base.MIN_SIZE, f"size {order.size} rounds to {size}")
    return request(order, rules, price, size)


def request(order: m.Order, rules: MarketRules, price: Decimal, size: Decimal) -> OrderRequest:
    """The order at this price and size. Its creation time is the order's own, so the same order always signs
    to the same venue order (and id)."""
    return OrderRequest(client_id=order.id, token_id=order.token_id, market=order.market or rules.market,
                        side=order.side, price=price, size=size, order_type=order.order_type, rules=rules,
                        post_only=order.post_only, expires_s=order.expires_s, created_ms=order.ts_ns // 1_000_000)
