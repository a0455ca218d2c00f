"""Living markets: the house requotes around drifting fair prices, noise traders print trades, mispricings
open briefly, ticks shrink near the edges, markets resolve and new ones list. Seeded: the same seed and
the same sequence of steps give the same history.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from decimal import Decimal

import msgspec

from .engine import ONE, UNLIMITED, ZERO, Engine, Market, VenueError
from .markets import Event, Universe, _hex, _token, schedule

HOUSE = "house"
NOISE = "noise"


class LifeOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    requotes_per_s: float = 4.0  # house requotes (each moves several levels); raise for load tests
    trades_per_s: float = 0.5  # noise trades taking the best price
    gaps_per_s: float = 0.05  # mispricings: a binary market's YES+NO asks, or an event's YES asks, sum below 1
    gap: float = 0.06  # how far below 1 they sum
    gap_ms: int = 1500  # how long a mispricing stays before the house pulls it
    resolutions_per_s: float = 0.002  # a market resolves and a new one lists
    levels: int = 5


@dataclass
class Gap:
    order_ids: list[str]
    expires_ms: int
    markets: list[str]


@dataclass
class News:
    """What happened in a step, beyond the book: for the market channel's lifecycle messages."""

    touched: set[str] = field(default_factory=set)  # tokens whose books changed
    tick_changes: list[tuple[Market, str, Decimal, Decimal]] = field(default_factory=list)
    resolved: list[Market] = field(default_factory=list)
    listed: list[Market] = field(default_factory=list)


class Life:
    def __init__(self, engine: Engine, universe: Universe, house: str, seed: int, options: LifeOptions) -> None:
        self.engine = engine
        self.universe = universe
        self.events: dict[str, Event] = {e.id: e for e in universe.events}
        self.house = house
        self.noise = "0x" + hashlib.sha256(f"noise:{seed}".encode()).hexdigest()[:40]
        self.options = options
        self.rng = random.Random(seed + 2)
        self.seed = seed
        self.gaps: list[Gap] = []
        self.listed = 0
        self.last_ms: int | None = None
        self.fair = dict(universe.fair)
        engine.fund(self.noise, collateral=Decimal(10) ** 9)
        engine.approve(self.noise, collateral=UNLIMITED, conditional=True)
        self._order_no = 0

    # ------------------------------------------------------------ driving

    def step(self, now_ms: int) -> News:
        """Advance to ``now_ms``: each kind of event happens at its rate, drawn from the seeded generator."""
        news = News()
        elapsed = 0.0 if self.last_ms is None else (now_ms - self.last_ms) / 1000
        self.last_ms = now_ms
        for gap in [g for g in self.gaps if g.expires_ms <= now_ms]:
            self._pull(gap, news)
        live = [m for m in self.engine.markets.values() if not m.closed]
        if not live:
            return news
        for _ in range(self._count(self.options.requotes_per_s * elapsed)):
            self.move(self.rng.choice(live), news=news)
        for _ in range(self._count(self.options.trades_per_s * elapsed)):
            self._noise_trade(self.rng.choice(live), news)
        for _ in range(self._count(self.options.gaps_per_s * elapsed)):
            if self.universe.events and self.rng.random() < 0.3:
                self.open_event_gap(self.rng.choice(list(self.events.values())), Decimal(str(self.options.gap)),
                                    now_ms, news=news)
            else:
                binary = [m for m in live if not m.neg_risk] or live
                self.open_gap(self.rng.choice(binary), Decimal(str(self.options.gap)), now_ms, news=news)
        for _ in range(self._count(self.options.resolutions_per_s * elapsed)):
            binary = [m for m in live if not m.neg_risk]
            if binary:
                market = self.rng.choice(binary)
                self.resolve(market, market.tokens[0 if self.fair[market.condition_id] >= Decimal("0.5") else 1],
                             news)
                self.list_market(now_ms, news)
        return news

    def _count(self, expected: float) -> int:
        """How many events happen this step: the whole part, plus one more with the fractional chance."""
        whole = int(expected)
        return whole + (1 if self.rng.random() < expected - whole else 0)

    def _id(self, *parts: object) -> str:
        self._order_no += 1
        return _hex(self.seed, "life", self._order_no, *parts)

    # ------------------------------------------------------------ the house

    def move(self, market: Market, price: Decimal | None = None, news: News | None = None) -> Decimal:
        """Set (or drift) a market's fair YES price and requote the house around it."""
        news = news if news is not None else News()
        fair = self.fair[market.condition_id]
        if price is None:
            price = fair + market.tick * self.rng.choice((-2, -1, -1, 1, 1, 2))
        low, high = market.tick * 2, ONE - market.tick * 2
        price = min(max(price.quantize(market.tick), low), high)
        self.fair[market.condition_id] = price
        if (price <= Decimal("0.04") or price >= Decimal("0.96")) and market.tick > Decimal("0.001"):
            self.change_tick(market, Decimal("0.001"), news)
        self._requote(market, news)
        return price

    def _requote(self, market: Market, news: News) -> None:
        engine = self.engine
        book = engine.books[market.condition_id]  # its resting orders, not every order the engine ever held
        mine = [o.id for o in sorted((o for q in (*book.bids.values(), *book.asks.values()) for o in q
                                      if o.owner == HOUSE), key=lambda o: o.seq)]
        engine.cancel(HOUSE, mine)
        fair = self.fair[market.condition_id]
        yes = market.tokens[0]
        for k in range(1, self.options.levels + 1):
            for side, price in (("BUY", fair - market.tick * k), ("SELL", fair + market.tick * k)):
                if market.tick <= price <= ONE - market.tick:
                    self._house(market, yes, side, price, Decimal(self.rng.randint(20, 400)))
        news.touched.update(market.tokens)

    def _house(self, market: Market, token: str, side: str, price: Decimal, size: Decimal) -> str | None:
        order_id = self._id(market.condition_id, side, price)
        try:
            self.engine.place(order_id=order_id, owner=HOUSE, address=self.house, token_id=token, side=side,
                              price=price, size=size)
        except VenueError:
            return None  # e.g. the house ran out of shares of a token: skip this quote
        return order_id

    def _noise_trade(self, market: Market, news: News) -> None:
        token = self.rng.choice(market.tokens)
        side = self.rng.choice(("BUY", "SELL"))
        bid, ask = self.engine.best(token)
        price = ask if side == "BUY" else bid
        if price is None:
            return
        size = max(market.min_size, Decimal(self.rng.randint(5, 40)))
        if side == "SELL":
            self.engine.fund(self.noise, shares={token: size})
        try:
            self.engine.place(order_id=self._id("noise"), owner=NOISE, address=self.noise, token_id=token, side=side,
                              price=price, size=size, order_type="FAK")
        except VenueError:
            return
        news.touched.update(market.tokens)

    # ------------------------------------------------------------ mispricings

    def open_gap(self, market: Market, gap: Decimal, now_ms: int, size: Decimal = Decimal(50),
                 lifetime_ms: int | None = None, news: News | None = None) -> dict:
        """Offer YES and NO so that their asks sum to 1 - gap, for a while (the house does not self-match)."""
        news = news if news is not None else News()
        fair = self.fair[market.condition_id]
        yes_ask = (fair - gap / 2).quantize(market.tick)
        no_ask = (ONE - gap - yes_ask).quantize(market.tick)
        yes, no = market.tokens
        ids = [i for i in (self._house(market, yes, "SELL", yes_ask, size),
                           self._house(market, no, "SELL", no_ask, size)) if i]
        self.gaps.append(Gap(ids, now_ms + (lifetime_ms or self.options.gap_ms), [market.condition_id]))
        news.touched.update(market.tokens)
        return {"market": market.condition_id, "asks": {yes: str(yes_ask), no: str(no_ask)},
                "sum": str(yes_ask + no_ask), "size": str(size)}

    def open_event_gap(self, event: Event, gap: Decimal, now_ms: int, size: Decimal = Decimal(50),
                       lifetime_ms: int | None = None, news: News | None = None) -> dict:
        """Offer every outcome's YES so that the asks sum to 1 - gap."""
        news = news if news is not None else News()
        members = [m for m in event.markets if not m.closed]
        fairs = [self.fair[m.condition_id] for m in members]
        total = sum(fairs, ZERO)
        asks = [((f / total) * (ONE - gap)).quantize(m.tick, rounding="ROUND_FLOOR") for f, m in zip(fairs, members)]
        ids = [i for m, a in zip(members, asks) if (i := self._house(m, m.tokens[0], "SELL", max(a, m.tick), size))]
        self.gaps.append(Gap(ids, now_ms + (lifetime_ms or self.options.gap_ms), [m.condition_id for m in members]))
        for m in members:
            news.touched.update(m.tokens)
        return {"event": event.id, "asks": {m.tokens[0]: str(max(a, m.tick)) for m, a in zip(members, asks)},
                "sum": str(sum((max(a, m.tick) for m, a in zip(members, asks)), ZERO)), "size": str(size)}

    def _pull(self, gap: Gap, news: News) -> None:
        self.gaps.remove(gap)
        self.engine.cancel(HOUSE, gap.order_ids)
        for condition_id in gap.markets:
            news.touched.update(self.engine.markets[condition_id].tokens)

    # ------------------------------------------------------------ lifecycle

    def change_tick(self, market: Market, tick: Decimal, news: News) -> None:
        if tick == market.tick:
            return
        old, market.tick = market.tick, tick
        for token in market.tokens:
            news.tick_changes.append((market, token, old, tick))

    def resolve(self, market: Market, winner: str, news: News) -> None:
        """Close the market, cancel its orders and pay 1 per winning share."""
        engine = self.engine
        engine.cancel_market(market.condition_id)
        market.closed, market.active, market.accepting_orders, market.winner = True, False, False, winner
        for account in engine.accounts.values():
            held = account.shares.pop(winner, ZERO)
            account.collateral += held
            for token in market.tokens:
                account.shares.pop(token, None)
        self.gaps = [g for g in self.gaps if market.condition_id not in g.markets]
        news.resolved.append(market)
        news.touched.update(market.tokens)

    def list_market(self, now_ms: int, news: News) -> Market:
        self.listed += 1
        n = self.listed
        market = schedule(Market(
            condition_id=_hex(self.seed, "listed", n), question=f"Will the listed proposition #{n} hold?",
            slug=f"listed-proposition-{n}", tokens=(_token(self.seed, "listed", n, "yes"),
                                                    _token(self.seed, "listed", n, "no")),
            end_ms=now_ms + 30 * 86_400_000, start_ms=now_ms,
            market_id=str(700_000 + n), description=f"A market listed by the local venue (seed {self.seed})."),
            "politics")
        self.engine.add_market(market)
        self.engine.fund(self.house, shares={t: Decimal(10) ** 7 for t in market.tokens})
        self.fair[market.condition_id] = Decimal(self.rng.randint(20, 80)) / 100
        self._requote(market, news)
        news.listed.append(market)
        return market
