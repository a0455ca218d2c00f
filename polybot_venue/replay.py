"""Replay mode: the venue plays back a recording (``polybot record``, ``services.backtest.simulated``) on its market
channel, so the whole mesh can run live on a feed whose every book is known.

The venue lists the recording's opening markets (Gamma and the CLOB serve them as any) with their opening books,
and once started (``/_admin/replay``) sets each market's book to the recorded one, a recorded message at a time,
at the pace asked. It does so through the house's orders, so the market channel publishes each change as it
publishes any (``price_change``, then ``best_bid_ask``): a scanner connected to it sees the recording's books, in
the recording's order. A binary market has one book here (its NO side mirrors its YES side), so a recorded book
is set through its YES token; a recording's NO book that does not mirror its YES book (none from Polymarket or
this venue does) plays as the YES book's mirror. Tick changes, resolutions and later listings play too. What
does not: recorded trades (``last_trade_price`` needs a taker; the books already show what trades took) and
halts. The recording is read with the mesh's own reader, the one place the venue reads a format of the mesh's.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .engine import ZERO, Engine, Market
from .life import HOUSE, Life, News

if TYPE_CHECKING:
    from services import messages as m

SHARES = Decimal(10) ** 7  # what the house holds of each token, to offer


@dataclass
class Playback:
    """A recording's messages, played into the venue's engine one at a time."""

    engine: Engine
    life: Life
    messages: list[m.Message]
    played: int = 0
    per_s: float = 0.0  # 0: paused
    started_s: float = 0.0
    started_at: int = 0  # messages played when the pace was last set
    quotes: dict[str, dict[tuple[str, Decimal], tuple[str, Decimal]]] = field(default_factory=dict)
    ids: Iterator[int] = field(default_factory=itertools.count)
    books: Any = None  # the recorded books as played so far (services.books.Books)

    @classmethod
    def load(cls, engine: Engine, life: Life, folder: str | Path) -> Playback:
        """The recording's opening markets listed and their opening books set, before anyone listens."""
        from services import messages as m
        from services.books import Books
        from services.recording import read

        playback = cls(engine, life, list(read(folder)))
        books = playback.books = Books()
        for msg in playback.messages:
            if isinstance(msg, m.MarketNew):
                playback._list(msg)
            elif isinstance(msg, m.BookSnapshot):
                playback._books(books, books.apply(msg))
            elif not isinstance(msg, m.MarketStale):
                break
            playback.played += 1
        return playback

    @property
    def total(self) -> int:
        return len(self.messages)

    def pace(self, per_s: float, now_s: float) -> None:
        """Play ``per_s`` messages a second from now (0 pauses)."""
        self.per_s, self.started_s, self.started_at = per_s, now_s, self.played

    def step(self, now_s: float) -> Iterator[News]:
        """The news of each message due by ``now_s``, one message at a time (each is published on its own)."""
        if self.per_s <= 0:
            return
        due = min(self.total, self.started_at + int((now_s - self.started_s) * self.per_s))
        while self.played < due:
            msg = self.messages[self.played]
            self.played += 1
            yield self.play(msg)

    def play(self, msg: m.Message) -> News:
        from services import messages as m

        news = News()
        match msg:
            case m.BookSnapshot() | m.BookDelta():
                news.touched.update(self._books(self.books, self.books.apply(msg)))
            case m.MarketNew() if msg.market not in self.engine.markets:
                news.listed.append(self._list(msg))
                news.touched.update(o.token_id for o in msg.outcomes)
            case m.TickSizeChange() if msg.market in self.engine.markets:
                self.life.change_tick(self.engine.markets[msg.market], msg.new_tick_size, news)
            case m.MarketResolved() if msg.market in self.engine.markets:
                market = self.engine.markets[msg.market]
                if not market.closed:
                    self.quotes.pop(market.condition_id, None)
                    self.life.resolve(market, msg.winning_token_id, news)
        return news

    # ------------------------------------------------------------ the recording's markets and books

    def _list(self, msg: m.MarketNew) -> Market:
        market = Market(condition_id=msg.market, question=msg.question, slug=msg.slug or msg.market,
                        tokens=(msg.outcomes[0].token_id, msg.outcomes[1].token_id),
                        outcomes=(msg.outcomes[0].name, msg.outcomes[1].name), tick=msg.tick_size,
                        min_size=msg.min_size, fee_rate=msg.fee_rate, fee_exponent=msg.fee_exponent,
                        rebate_rate=msg.rebate_rate, neg_risk=msg.neg_risk,
                        neg_risk_market_id=msg.neg_risk_market_id, end_ms=msg.end_ts_ms,
                        accepting_orders=msg.accepting_orders, market_id=str(len(self.engine.markets) + 1),
                        protocol=msg.protocol)
        self.engine.add_market(market)
        self.engine.fund(self.life.house, shares={token: SHARES for token in market.tokens})
        self.life.fair[market.condition_id] = Decimal("0.5")
        return market

    def _books(self, books, touched: set[str]) -> set[str]:
        """Set the books of the markets of ``touched`` to the recorded ones; the tokens whose books changed."""
        out: set[str] = set()
        for condition_id in sorted({self.engine.token_market[t].condition_id for t in touched
                                    if t in self.engine.token_market}):
            market = self.engine.markets[condition_id]
            yes, no = market.tokens
            if yes in books.levels:
                bids, asks = books.levels[yes]["BUY"], books.levels[yes]["SELL"]
            else:  # only the NO book was recorded: its mirror
                levels = books.levels.get(no, {"BUY": {}, "SELL": {}})
                bids = {1 - p: s for p, s in levels["SELL"].items()}
                asks = {1 - p: s for p, s in levels["BUY"].items()}
            self._set(market, {("BUY", p): s for p, s in bids.items() if s > 0}
                      | {("SELL", p): s for p, s in asks.items() if s > 0})
            out.update(market.tokens)
        return out

    def _set(self, market: Market, target: dict[tuple[str, Decimal], Decimal]) -> None:
        """The house's YES orders become exactly ``target`` (side, price) -> size: the levels that changed are
        taken away first, then the new ones rest (the house never meets itself, so a recorded crossed book rests
        crossed, as the living markets' mispricings do)."""
        quotes = self.quotes.setdefault(market.condition_id, {})
        changed = [key for key, (_, size) in quotes.items() if target.get(key) != size]
        if changed:
            self.engine.cancel(HOUSE, [quotes.pop(key)[0] for key in changed])
        if market.closed:
            return
        with _any_size(market):  # a recorded level may be smaller than an order may be
            for side, price in sorted(target.keys() - quotes.keys()):
                order_id = f"replay-{next(self.ids)}"
                self.engine.place(order_id=order_id, owner=HOUSE, address=self.life.house, token_id=market.tokens[0],
                                  side=side, price=price, size=target[side, price])
                quotes[side, price] = (order_id, target[side, price])

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
