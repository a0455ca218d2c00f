"""The local venue (``polybot_venue``) as a service of the mesh: started by `polybot up` and `polybot venue`, with
a control socket, logs and a status line like any other service. The venue itself knows nothing of the mesh: a
recording it replays (``replay``) is read here and handed to it as its own data (``polybot_venue.replay.Feed``)."""
from __future__ import annotations

from pathlib import Path

from polybot_venue.engine import Market
from polybot_venue.replay import Book, Feed, Listed, Resolved, Step, Tick
from polybot_venue.server import LocalVenue, VenueOptions, detail, serve

from .. import messages as m
from ..books import Books
from ..recording import read
from ..runtime import Service, StartupError


def market_of(msg: m.MarketNew, number: int) -> Market:
    """A recorded market as the venue lists it (``number``: its Gamma id)."""
    yes, no = msg.outcomes[:2]
    return Market(condition_id=msg.market, question=msg.question, slug=msg.slug or msg.market,
                  tokens=(yes.token_id, no.token_id), outcomes=(yes.name, no.name), tick=msg.tick_size,
                  min_size=msg.min_size, fee_rate=msg.fee_rate, fee_exponent=msg.fee_exponent,
                  rebate_rate=msg.rebate_rate, neg_risk=msg.neg_risk, neg_risk_market_id=msg.neg_risk_market_id,
                  end_ms=msg.end_ts_ms, accepting_orders=msg.accepting_orders, market_id=str(number),
                  protocol=msg.protocol)


def feed(folder: str | Path) -> Feed:
    """A recording as the venue plays it: its opening markets and books, then a moment per recorded message that
    changes a book, lists a market, changes a tick or resolves one (trades, halts and staleness are not played).
    A book is its YES token's, or the mirror of its NO token's where only that was recorded."""
    books = Books()
    markets: dict[str, Market] = {}  # condition id -> the market
    of_token: dict[str, Market] = {}
    out = Feed(markets=[], books=[], moments=[])

    def levels(market: Market) -> Book:
        yes, no = market.tokens
        if yes in books.levels:
            bids, asks = books.levels[yes]["BUY"], books.levels[yes]["SELL"]
        else:  # only the NO book was recorded: the YES book is its mirror
            mirror = books.levels[no]
            bids = {1 - p: q for p, q in mirror["SELL"].items()}
            asks = {1 - p: q for p, q in mirror["BUY"].items()}
        return Book(condition_id=market.condition_id, levels={("BUY", p): q for p, q in bids.items() if q > 0}
                    | {("SELL", p): q for p, q in asks.items() if q > 0})

    opening = True  # the recording's start: the scanner's snapshot
    for msg in read(folder):
        opening = opening and isinstance(msg, m.MarketNew | m.MarketStale | m.BookSnapshot)
        match msg:
            case m.MarketNew() if msg.market not in markets:
                market = markets[msg.market] = market_of(msg, 100_000 + len(markets))
                of_token.update((token, market) for token in market.tokens)
                if opening:
                    out.markets.append(market)
                else:
                    out.moments.append([Listed(market)])
            case m.BookSnapshot() | m.BookDelta():
                touched = sorted({of_token[t].condition_id for t in books.apply(msg) if t in of_token})
                steps: list[Step] = [levels(markets[c]) for c in touched]
                if opening:
                    out.books.extend(steps)
                elif steps:
                    out.moments.append(steps)
            case m.TickSizeChange() if msg.market in markets:
                out.moments.append([Tick(condition_id=msg.market, tick=msg.new_tick_size)])
            case m.MarketResolved() if msg.market in markets:
                out.moments.append([Resolved(condition_id=msg.market, winner=msg.winning_token_id)])
    return out


class Venue(Service):
    """Serves Polymarket's Gamma and CLOB REST APIs and its WebSocket channels over a local matching engine."""

    Options = VenueOptions

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        options: VenueOptions = ctx.options
        try:
            self.venue = LocalVenue(options, feed=feed(options.replay) if options.replay else None)
        except (OSError, ValueError) as exc:
            raise StartupError(f"replay {options.replay}: {exc}") from None

    async def run(self) -> None:
        await serve(self.venue, halted=lambda: self.ctx.halted)

    def detail(self) -> dict[str, str]:
        return detail(self.venue)
