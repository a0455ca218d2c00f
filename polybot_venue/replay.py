"""Replay mode: the venue plays a recorded feed back on its market channel, so a whole mesh can run live on a
feed whose every book is known.

The venue lists the feed's opening markets (Gamma and the CLOB serve them as any) with their opening books, and
once started (``/_admin/replay``, or ``replay_per_s``) plays the feed one moment at a time, at the pace asked:
a moment sets books to the recorded levels, lists a market, changes a tick or resolves a market. Books are set
through the house's orders, so the market channel publishes each change as it publishes any (``price_change``,
then ``best_bid_ask``): a scanner connected to it sees the recorded books in the recorded order. A binary market
has one book here (its NO side mirrors its YES side), so a book is given as its YES token's levels. Trades are not
played (a ``last_trade_price`` needs a taker; the books already show what trades took).

The feed is the venue's own data (``Market``, and the steps below); ``services/venues/local.py`` makes one from
a recording of the mesh (``polybot venue --replay FOLDER``), so the venue reads nothing of the mesh's.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal

from .engine import ZERO, Engine, Market
from .life import HOUSE, Life, News

SHARES = Decimal(10) ** 7  # what the house holds of each token, to offer
Levels = dict[tuple[str, Decimal], Decimal]  # (BUY|SELL, YES price) -> size


@dataclass(frozen=True)
class Change:
    """What a moment does to one market."""

    condition_id: str


@dataclass(frozen=True)
class Book(Change):
    """The market's YES book becomes exactly these levels."""

    levels: Levels


@dataclass(frozen=True)
class Tick(Change):
    """Its tick size changes (``tick_size_change`` on the channel)."""

    tick: Decimal


@dataclass(frozen=True)
class Resolved(Change):
    """It resolves: closed, its orders canceled, 1 paid per share of ``winner`` (its winning token)."""

    winner: str


@dataclass(frozen=True)
class Listed:
    """A market lists (the house funded to quote it), its book empty until a ``Book`` sets it."""

    market: Market


Step = Book | Listed | Tick | Resolved


@dataclass
class Feed:
    """What to play: the markets and books at the start, then moments (each published on its own)."""

    markets: list[Market]
    books: list[Book]
    moments: list[list[Step]]


@dataclass
class Playback:
    engine: Engine
    life: Life
    moments: list[list[Step]]
    played: int = 0
    per_s: float = 0.0  # 0: paused
    started_s: float = 0.0
    started_at: int = 0  # moments played when the pace was last set
    quotes: dict[str, dict[tuple[str, Decimal], tuple[str, Decimal]]] = field(default_factory=dict)
    ids: Iterator[int] = field(default_factory=itertools.count)

    @classmethod
    def start(cls, engine: Engine, life: Life, feed: Feed) -> Playback:
        """The feed's opening markets listed and their books set, before anyone listens."""
        playback = cls(engine, life, feed.moments)
        for market in feed.markets:
            playback._list(market)
        for book in feed.books:
            playback._set(book)
        return playback

    @property
    def total(self) -> int:
        return len(self.moments)

    def pace(self, per_s: float, now_s: float) -> None:
        """Play ``per_s`` moments a second from now (0 pauses)."""
        self.per_s, self.started_s, self.started_at = per_s, now_s, self.played

    def step(self, now_s: float) -> Iterator[News]:
        """The news of each moment due by ``now_s``, one moment at a time."""
        if self.per_s <= 0:
            return
        due = min(self.total, self.started_at + int((now_s - self.started_s) * self.per_s))
        while self.played < due:
            moment = self.moments[self.played]
            self.played += 1
            yield self.play(moment)

    def play(self, moment: list[Step]) -> News:
        news = News()
        markets = self.engine.markets
        for step in moment:
            match step:
                case Book() if step.condition_id in markets:
                    self._set(step)
                    news.touched.update(markets[step.condition_id].tokens)
                case Listed() if step.market.condition_id not in markets:
                    news.listed.append(self._list(step.market))
                    news.touched.update(step.market.tokens)
                case Tick() if step.condition_id in markets:
                    self.life.change_tick(markets[step.condition_id], step.tick, news)
                case Resolved() if step.condition_id in markets and not markets[step.condition_id].closed:
                    self.quotes.pop(step.condition_id, None)
                    self.life.resolve(markets[step.condition_id], step.winner, news)
        return news

    def _list(self, market: Market) -> Market:
        self.engine.add_market(market)
        self.engine.fund(self.life.house, shares={token: SHARES for token in market.tokens})
        self.life.fair[market.condition_id] = Decimal("0.5")
        return market

    def _set(self, book: Book) -> None:
        """The house's YES orders become exactly the book's levels: those that changed are taken away first, then
        the new ones rest (the house never meets itself, so a recorded crossed book rests crossed, as the living
        markets' mispricings do)."""
        market = self.engine.markets[book.condition_id]
        quotes = self.quotes.setdefault(book.condition_id, {})
        changed = [key for key, (_, size) in quotes.items() if book.levels.get(key) != size]
        if changed:
            self.engine.cancel(HOUSE, [quotes.pop(key)[0] for key in changed])
        if market.closed:
            return
        with _any_size(market):  # a recorded level may be smaller than an order may be
            for side, price in sorted(book.levels.keys() - quotes.keys()):
                order_id = f"replay-{next(self.ids)}"
                size = book.levels[side, price]
                self.engine.place(order_id=order_id, owner=HOUSE, address=self.life.house, token_id=market.tokens[0],
                                  side=side, price=price, size=size)
                quotes[side, price] = (order_id, size)

    def detail(self) -> dict[str, str]:
        return {"replay_played": str(self.played), "replay_total": str(self.total),
                "replay_per_s": f"{self.per_s:g}"}


@contextmanager
def _any_size(market: Market) -> Iterator[None]:
    """The market's minimum order size lifted while the house rests recorded levels (only the house: nothing
    else runs meanwhile)."""
    minimum, market.min_size = market.min_size, ZERO
    try:
        yield
    finally:
        market.min_size = minimum
