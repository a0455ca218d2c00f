"""The scanner's logic: what it knows of the venue's markets, and what it publishes as they change.

Pure: no sockets, no clock. The venue adapter (``venues.polymarket.market``) hands it markets and each
frame's messages; it keeps the markets, the books and the stale set, says which markets are newly listed
(for Gamma to describe and the feed to follow), and answers snapshot requests.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from . import messages as m
from .books import Books


@dataclass
class Outbox:
    """What one step gives the scanner to do."""

    prices: list[m.BookSnapshot | m.BookDelta | m.LastTrade] = field(default_factory=list)  # to publish on prices
    events: list[m.MarketNew | m.TickSizeChange | m.MarketResolved | m.MarketStale] = field(
        default_factory=list)  # to publish on events
    listed: list[m.MarketNew] = field(default_factory=list)  # newly listed (the channel's word): for Gamma to describe


class MarketView:
    def __init__(self) -> None:
        self.markets: dict[str, m.MarketNew] = {}
        self.token_market: dict[str, str] = {}
        self.books = Books()
        self.stale: set[str] = set()
        self.loaded = False  # the markets are in, and the feeds started
        self.feeds = 0
        self.connected: set[int] = set()  # feeds that have been subscribed (and so had their initial dump)

    def load(self, markets: list[m.MarketNew], now_ns: int) -> Outbox:
        """The venue's markets at start: each is announced, and stale until its first book.

        A scanner that starts has no books, whatever the one before it said: its subscribers may hold markets
        stale from a scanner that lost the venue, or books that missed what changed while no scanner ran. So
        every market starts stale, said so, and each is announced fresh again by its first snapshot."""
        for market in markets:
            self._add(market)
        self.stale |= {mk.market for mk in markets}
        out = Outbox(events=list(markets))
        if markets:
            out.events.append(m.MarketStale(ts_ns=now_ns, markets=sorted({mk.market for mk in markets}), stale=True,
                                            reason="no book yet: the scanner started"))
        return out

    def tokens(self) -> list[str]:
        """Every known market's tokens, to follow on the market channel."""
        return list(self.token_market)

    def following(self, feeds: int) -> None:
        """The feeds have started: snapshots are ready once each has been subscribed."""
        self.feeds = feeds
        self.loaded = True

    def feed_connected(self, number: int) -> None:
        self.connected.add(number)

    @property
    def ready(self) -> bool:
        return self.loaded and len(self.connected) >= self.feeds

    def update(self, prices: list[m.BookSnapshot | m.BookDelta | m.LastTrade],
               events: list[m.MarketNew | m.TickSizeChange | m.MarketResolved], now_ns: int) -> Outbox:
        """One frame's messages: the books follow them, stale markets with fresh books are live again, a listing
        the channel announces waits for Gamma's description (``listed``), everything else goes out as it is."""
        out = Outbox(prices=list(prices))
        fresh: set[str] = set()
        for msg in prices:
            touched = self.books.apply(msg)
            if isinstance(msg, m.BookSnapshot):
                fresh |= {self.token_market[t] for t in touched if t in self.token_market}
        if fresh & self.stale:
            self.stale -= fresh
            out.events.append(m.MarketStale(ts_ns=now_ns, markets=sorted(fresh), stale=False,
                                            reason="fresh snapshot"))
        for event in events:
            if isinstance(event, m.MarketNew):
                if event.market not in self.markets:
                    self._add(event)
                    out.listed.append(event)
                continue  # the channel's listing lacks fees, minimum size and neg-risk: Gamma's goes out instead
            if isinstance(event, m.TickSizeChange) and event.market in self.markets:  # so snapshots stay current
                self.markets[event.market] = msgspec.structs.replace(self.markets[event.market],
                                                                     tick_size=event.new_tick_size)
            out.events.append(event)
        return out

    def described(self, listed: m.MarketNew, gamma: m.MarketNew | None, now_ns: int) -> Outbox:
        """A newly listed market as Gamma describes it; if Gamma never did, as not accepting orders."""
        market = gamma or msgspec.structs.replace(listed, accepting_orders=False, ts_ns=now_ns)
        self.markets[market.market] = market
        return Outbox(events=[market])

    def down(self, tokens: list[str], reason: str, now_ns: int) -> Outbox:
        """A feed was lost: its markets are stale until fresh books arrive."""
        markets = sorted({self.token_market[t] for t in tokens if t in self.token_market} - self.stale)
        if not markets:
            return Outbox()
        self.stale |= set(markets)
        return Outbox(events=[m.MarketStale(ts_ns=now_ns, markets=markets, stale=True, reason=reason)])

    def snapshot(self, request: m.SnapshotRequest, now_ns: int) -> m.SnapshotReply | m.Error:
        """Everything a late subscriber starts from (for ``request.markets``, or all)."""
        if not self.ready:
            return m.Error(request_id=request.id, message="not ready: markets and books are still loading; "
                                                           "ask again shortly")
        wanted = set(request.markets) or None
        books = [m.Book(token_id=token, market=self.token_market.get(token, ""),
                        bids=[m.Level(p, s) for p, s in sorted(side["BUY"].items(), reverse=True)],
                        asks=[m.Level(p, s) for p, s in sorted(side["SELL"].items())])
                 for token, side in self.books.levels.items()
                 if wanted is None or self.token_market.get(token) in wanted]
        markets = [mk for mk in self.markets.values() if wanted is None or mk.market in wanted]
        return m.SnapshotReply(ts_ns=now_ns, markets=markets, books=m.BookSnapshot(ts_ns=now_ns, books=books),
                               stale=sorted(mk for mk in self.stale if wanted is None or mk in wanted))

    def _add(self, market: m.MarketNew) -> None:
        self.markets[market.market] = market
        for outcome in market.outcomes:
            self.token_market[outcome.token_id] = market.market
