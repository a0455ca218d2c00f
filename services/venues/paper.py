"""Paper trading: orders filled against the live book the scanner publishes, never better than it allowed.

Taking: an order walks the opposite levels at their own prices up to its limit and never takes more than a
level displays. What it took stays taken (the real book does not know about us) until that level empties:
on later updates the taken amount is capped at what the level shows, so two orders cannot take the same
size. Takers pay the venue's fee; makers pay none and earn an estimated rebate (the market's rebate rate x
the taker fee of the fill: the venue's rule). A binary market's two books mirror each other (a YES ask at p
is a NO bid at 1 - p), so liquidity is counted once in whichever token it is seen through.

Resting: the remainder of a GTC/GTD order rests at its limit behind ``ahead``, the size the level showed
when it arrived. The conservative rules, so a paper fill is never earlier or larger than a real one:
- The level shrinking below ``ahead`` shrinks ``ahead`` to the level (orders ahead of us can have left);
  a level that shrinks but stays above ``ahead`` is assumed to have lost orders behind us.
- A trade at our price, or through it, first consumes what is still ahead of us, then fills us. The part
  of it the level's shrinking already took off ``ahead`` (the venue shows the level change before the
  trade print) is not counted twice; a shrink no print explains by the token's next book change was
  cancels, and is forgotten.
- Opposite liquidity shown at or through our price (someone rested where we would have been hit) fills
  us, less whatever of our own side is ahead of us (better prices, then our queue).
"""
from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import msgspec

from .. import messages as m
from ..books import Books
from . import base
from .base import (GTD_MIN_LEAD_S, ONE, ZERO, MarketRules, OnEvents, OrderRequest, Placed, VenueError, VenueFill,
                   VenueOrder)

Key = tuple[str, str, Decimal]  # (token, book side BUY=bids/SELL=asks, price), in the canonical token's terms


def _flip(side: str) -> str:
    return "SELL" if side == "BUY" else "BUY"


@dataclass
class Resting:
    order: OrderRequest
    venue_order_id: str
    remaining: Decimal
    ahead: Decimal  # displayed size ahead of us at our price
    shrunk: Decimal = ZERO  # what the level's shrinking took off ``ahead`` that no trade print has explained yet
    fills: int = 0


class PaperBook:
    """The matching, pure: prices and events in, our fills out (returned, and kept for ``trades``)."""

    def __init__(self, clock_ms: Callable[[], int]) -> None:
        self.clock_ms = clock_ms
        self.books = Books()
        self.rules: dict[str, MarketRules] = {}
        self.resting: dict[str, Resting] = {}
        self.states: dict[str, VenueOrder] = {}
        self.taken: dict[Key, Decimal] = {}
        self.fills: list[VenueFill] = []

    # ------------------------------------------------------------ book views

    def _key(self, token: str, side: str, price: Decimal) -> Key:
        complement = self._complement(token)
        if complement and complement < token:  # one name for liquidity seen through either book
            return complement, _flip(side), ONE - price
        return token, side, price

    def _displayed(self, token: str, side: str, price: Decimal) -> Decimal:
        levels = self.books.levels.get(token)
        if levels is not None:
            return levels[side].get(price, ZERO)
        rules = self.rules.get(token)
        if rules is not None and rules.complement in self.books.levels:
            return self.books.levels[rules.complement][_flip(side)].get(ONE - price, ZERO)
        return ZERO

    def _available(self, token: str, side: str, price: Decimal) -> Decimal:
        return max(ZERO, self._displayed(token, side, price) - self.taken.get(self._key(token, side, price), ZERO))

    def _opposite(self, token: str, side: str, limit: Decimal) -> list[tuple[Decimal, Decimal]]:
        """(price, available) of the levels an order of ``side`` at ``limit`` can take, best first."""
        levels = self.books.levels.get(token, {"BUY": {}, "SELL": {}})
        if side == "BUY":
            prices = sorted(p for p in levels["SELL"] if p <= limit)
            book_side = "SELL"
        else:
            prices = sorted((p for p in levels["BUY"] if p >= limit), reverse=True)
            book_side = "BUY"
        return [(p, a) for p in prices if (a := self._available(token, book_side, p)) > 0]

    def _take(self, token: str, side: str, price: Decimal, qty: Decimal) -> None:
        key = self._key(token, "SELL" if side == "BUY" else "BUY", price)
        self.taken[key] = self.taken.get(key, ZERO) + qty

    # ------------------------------------------------------------ orders

    def place(self, order: OrderRequest, venue_order_id: str) -> tuple[Placed, list[VenueFill]]:
        if venue_order_id in self.states:
            return Placed(venue_order_id=venue_order_id, code=base.DUPLICATE,
                          message=f"order {venue_order_id} is invalid. Duplicated."), []
        refused = self._check(order)
        if refused:
            return Placed(venue_order_id=venue_order_id, code=refused[0], message=refused[1]), []
        levels = self._opposite(order.token_id, order.side, order.price)
        if order.post_only and levels:
            return Placed(venue_order_id=venue_order_id, code=base.POST_ONLY_CROSSES,
                          message="invalid post-only order: order crosses book"), []
        if order.order_type == "FOK" and sum((a for _, a in levels), ZERO) < order.size:
            return Placed(venue_order_id=venue_order_id, code=base.FOK_UNFILLED,
                          message="order couldn't be fully filled. FOK orders are fully filled or killed."), []
        resting = Resting(order, venue_order_id, order.size, ZERO)
        fills = []
        for price, available in levels:
            if resting.remaining <= 0:
                break
            qty = min(resting.remaining, available)
            self._take(order.token_id, order.side, price, qty)
            fills.append(self._fill(resting, price, qty, "TAKER"))
        matched = order.size - resting.remaining
        if resting.remaining > 0 and order.order_type in ("GTC", "GTD"):
            own = "BUY" if order.side == "BUY" else "SELL"
            resting.ahead = self._displayed(order.token_id, own, order.price)
            self.resting[venue_order_id] = resting
            status = "LIVE"
        else:
            status = "CANCELED" if resting.remaining > 0 else "MATCHED"
        self._state(resting, status, "FAK remainder" if status == "CANCELED" else "")
        return Placed(venue_order_id=venue_order_id, status="matched" if fills else "live", matched=matched), fills

    def _check(self, order: OrderRequest) -> tuple[str, str] | None:
        rules = self.rules.get(order.token_id)
        if rules is None or order.token_id not in self.books.levels:
            return base.UNKNOWN_MARKET, f"no book for token {order.token_id} yet"
        tick = rules.tick
        if order.price % tick:
            return base.TICK_SIZE, f"Price ({order.price}) breaks minimum tick size rule: {tick}"
        if not tick <= order.price <= ONE - tick:
            return base.PRICE_RANGE, f"Price ({order.price}) is out of range: min {tick}, max {ONE - tick}"
        if order.order_type in ("GTC", "GTD") and order.size < rules.min_size:
            return base.MIN_SIZE, f"Size ({order.size}) lower than the minimum: {rules.min_size}"
        if order.size <= 0:
            return base.MIN_SIZE, f"Size ({order.size}) must be positive"
        if order.order_type == "GTD" and order.expires_s < self.clock_ms() // 1000 + GTD_MIN_LEAD_S:
            return base.EXPIRATION, f"Expiration must be at least {GTD_MIN_LEAD_S}s in the future"
        if order.post_only and order.order_type in ("FOK", "FAK"):
            return base.REJECTED, "invalid post-only order: post-only is only supported for GTC and GTD orders"
        return None

    def restore(self, order: OrderRequest, venue_order_id: str, matched: Decimal, fills: int) -> None:
        """An order that rested before a restart rests again, at the back of its level's queue."""
        own = "BUY" if order.side == "BUY" else "SELL"
        resting = Resting(order, venue_order_id, order.size - matched,
                          self._displayed(order.token_id, own, order.price), fills=fills)
        self.resting[venue_order_id] = resting
        self._state(resting, "LIVE")

    def cancel(self, venue_order_id: str) -> str:
        resting = self.resting.pop(venue_order_id, None)
        if resting is None:
            known = venue_order_id in self.states
            return "order can't be canceled: it is already matched or canceled" if known else "order not found"
        self._state(resting, "CANCELED", "canceled")
        return ""

    def _fill(self, resting: Resting, price: Decimal, qty: Decimal, liquidity: m.Liquidity) -> VenueFill:
        order = resting.order
        resting.remaining -= qty
        resting.fills += 1
        rules = self.rules.get(order.token_id, order.rules)  # the market's schedule as it stands at the match
        taker = liquidity == "TAKER"
        fill = VenueFill(trade_id=f"paper-{resting.venue_order_id[6:22]}-{resting.fills}",
                         venue_order_id=resting.venue_order_id, token_id=order.token_id, market=order.market,
                         side=order.side, price=price, size=qty, liquidity=liquidity, fee_rate=rules.fee_rate,
                         fee=base.taker_fee(qty, price, rules.fee_rate, rules.fee_exponent) if taker else ZERO,
                         rebate=ZERO if taker else base.maker_rebate(qty, price, rules), ts_ms=self.clock_ms(),
                         status="CONFIRMED")  # no chain to settle on: settled at once
        self.fills.append(fill)
        return fill

    def _state(self, resting: Resting, status: str, reason: str = "") -> VenueOrder:
        order = resting.order
        state = VenueOrder(venue_order_id=resting.venue_order_id, token_id=order.token_id, market=order.market,
                           side=order.side, price=order.price, size=order.size,
                           matched=order.size - resting.remaining, status=status,  # type: ignore[arg-type]
                           order_type=order.order_type, reason=reason, created_ms=order.created_ms)
        self.states[resting.venue_order_id] = state
        return state

    # ------------------------------------------------------------ market data

    def observe(self, msg: m.Message) -> list[base.VenueEvent]:
        """Apply one prices or events message; what it did to our resting orders."""
        match msg:
            case m.MarketNew():
                self.rules.update(base.rules_from(msg))
                return []
            case m.TickSizeChange():
                rules = self.rules.get(msg.token_id)
                if rules is not None:
                    self.rules[msg.token_id] = msgspec.structs.replace(rules, tick=msg.new_tick_size)
                return []
            case m.BookSnapshot() | m.BookDelta():
                touched = self.books.apply(msg)
                self._cap_taken(touched)
                return self._after_book(touched) + self._expire()
            case m.LastTrade():
                return self._after_trade(msg) + self._expire()
        return []

    def _cap_taken(self, touched: set[str]) -> None:
        for key in [k for k in self.taken if k[0] in touched or self._complement(k[0]) in touched]:
            shown = self._displayed(*key)
            if shown <= 0:
                del self.taken[key]
            else:
                self.taken[key] = min(self.taken[key], shown)

    def _complement(self, token: str) -> str:
        rules = self.rules.get(token)
        return rules.complement if rules is not None else ""

    def _after_book(self, touched: set[str]) -> list[base.VenueEvent]:
        events: list[base.VenueEvent] = []
        for resting in list(self.resting.values()):
            order = resting.order
            if order.token_id not in touched and self._complement(order.token_id) not in touched:
                continue
            own = "BUY" if order.side == "BUY" else "SELL"
            level = self._displayed(order.token_id, own, order.price)
            resting.shrunk = ZERO  # the prints of the last change came before this one
            if level < resting.ahead:
                resting.shrunk = resting.ahead - level
                resting.ahead = level
            crossing = self._opposite(order.token_id, order.side, order.price)
            if not crossing:
                continue
            levels = self.books.levels.get(order.token_id, {"BUY": {}, "SELL": {}})[own]
            better = sum((s for p, s in levels.items() if (p > order.price if own == "BUY" else p < order.price)),
                         ZERO)
            room = sum((a for _, a in crossing), ZERO) - better - resting.ahead
            events += self._maker_fills(resting, crossing, min(resting.remaining, room))
        return events

    def _maker_fills(self, resting: Resting, crossing: list[tuple[Decimal, Decimal]], qty: Decimal) -> list:
        """Fill a resting order for ``qty`` at its own price, taking the crossing liquidity best first."""
        if qty <= 0:
            return []
        order = resting.order
        left = qty
        for price, available in crossing:
            take = min(left, available)
            self._take(order.token_id, order.side, price, take)
            left -= take
            if left <= 0:
                break
        return self._filled(resting, qty)

    def _filled(self, resting: Resting, qty: Decimal) -> list[base.VenueEvent]:
        events: list[base.VenueEvent] = [self._fill(resting, resting.order.price, qty, "MAKER")]
        if resting.remaining <= 0:
            del self.resting[resting.venue_order_id]
            events.append(self._state(resting, "MATCHED"))
        else:
            self._state(resting, "LIVE")
        return events

    def _after_trade(self, trade: m.LastTrade) -> list[base.VenueEvent]:
        # The print names the taker's token; the complement's book saw the same trade mirrored.
        views = [(trade.token_id, trade.price, trade.side)]
        complement = self._complement(trade.token_id)
        if complement:
            views.append((complement, ONE - trade.price, _flip(trade.side)))
        events: list[base.VenueEvent] = []
        for token, price, taker_side in views:
            for resting in [r for r in self.resting.values() if r.order.token_id == token]:
                order = resting.order
                if order.side == taker_side:
                    continue
                if (order.side == "BUY" and price > order.price) or (order.side == "SELL" and price < order.price):
                    continue
                size = trade.size
                explained = min(size, resting.shrunk)
                resting.shrunk -= explained
                size -= explained
                eaten = min(resting.ahead, size)
                resting.ahead -= eaten
                qty = min(resting.remaining, size - eaten)
                if qty > 0:
                    events += self._filled(resting, qty)
        return events

    def _expire(self) -> list[base.VenueEvent]:
        now_s = self.clock_ms() // 1000
        gone = [r for r in self.resting.values() if r.order.order_type == "GTD" and 0 < r.order.expires_s <= now_s]
        events: list[base.VenueEvent] = []
        for resting in gone:
            del self.resting[resting.venue_order_id]
            events.append(self._state(resting, "CANCELED", "expired"))
        return events


def paper_order_id(client_id: str) -> str:
    return "paper-" + hashlib.sha256(f"polybot-order:{client_id}".encode()).hexdigest()


class PaperVenue:
    """The paper book behind the executor's venue interface."""

    mode = "paper"

    def __init__(self, clock_ns: Callable[[], int], read_resolution: Callable[[str], base.Resolution] | None = None,
                 timeout_s: float = 10.0) -> None:
        self.book = PaperBook(lambda: clock_ns() // 1_000_000)
        self.on_events: OnEvents = lambda events: None
        self.read_resolution = read_resolution  # the papered venue's own word (blocking), if it can be asked
        self.timeout_s = timeout_s

    async def start(self, on_events: OnEvents, on_connected: Callable[[], None]) -> None:
        self.on_events = on_events
        on_connected()

    async def prepare(self, orders: list[OrderRequest]) -> list[Placed]:
        return [Placed(venue_order_id=paper_order_id(o.client_id)) for o in orders]

    async def place(self, orders: list[OrderRequest]) -> list[Placed]:
        out = []
        for order in orders:
            placed, fills = self.book.place(order, paper_order_id(order.client_id))
            if fills:
                self.on_events(list(fills))
            out.append(placed)
        return out

    async def cancel(self, venue_order_ids: list[str]) -> dict[str, str]:
        return {i: self.book.cancel(i) for i in venue_order_ids}

    async def open_orders(self) -> list[VenueOrder]:
        return [self.book.states[i] for i in self.book.resting]

    async def order(self, venue_order_id: str) -> VenueOrder | None:
        return self.book.states.get(venue_order_id)

    async def trades(self, token_ids: list[str] | None = None) -> list[VenueFill]:
        return [f for f in self.book.fills if token_ids is None or f.token_id in token_ids]

    async def rules(self, token_id: str, market: str) -> MarketRules:
        raise VenueError(base.UNKNOWN_MARKET, f"token {token_id}: no market description from the scanner")

    async def balance(self) -> base.Balance | None:
        return None  # paper trading spends no collateral

    async def resolution(self, market: str) -> base.Resolution:
        """Resolutions are real even where fills are not: asked of the venue being papered."""
        if self.read_resolution is None:
            return base.Resolution(market=market)
        try:
            async with asyncio.timeout(self.timeout_s):
                return await asyncio.to_thread(self.read_resolution, market)
        except TimeoutError:
            raise VenueError(base.UNAVAILABLE, f"no answer within {self.timeout_s}s") from None

    def send_delay(self, orders: int) -> float:
        return 0.0  # paper has no rate limit

    def heartbeat_failing(self) -> str:
        return ""  # nor heartbeats

    def restore(self, order: OrderRequest, venue_order_id: str, matched: Decimal, fills: int) -> None:
        self.book.restore(order, venue_order_id, matched, fills)

    def observe(self, msg: m.Message) -> None:
        events = self.book.observe(msg)
        if events:
            self.on_events(events)

    def close(self) -> None:
        pass

    def detail(self) -> dict[str, str]:
        return {"paper_resting": str(len(self.book.resting)), "paper_fills": str(len(self.book.fills))}
