"""The scanner's logic on its own, no processes, fed frames captured from Polymarket: books kept to the venue's,
markets going stale and live again, new listings completed from Gamma, and the snapshot a late subscriber gets."""
from __future__ import annotations

import json
from decimal import Decimal as D
from pathlib import Path

import msgspec

from services import messages as m
from services.books import Books
from services.market_view import MarketView
from services.venues.polymarket import feed, schema

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "polymarket"  # beside the repo; see SOURCES.md
T0 = 1_790_000_000 * 10**9
BURST = json.loads((FIXTURES / "ws_market_price_change_crossing_burst.json").read_text())  # book, 49 changes, book
BURST_MARKET = BURST[0]["market"]


def captured(name: str) -> str:
    return (FIXTURES / name).read_text()


def frame(raw: str | dict, now: int = T0) -> tuple[feed.Prices, feed.Events]:
    """One market-channel frame as the adapter hands it to the scanner."""
    return feed.normalize(schema.decode_market_frame(raw if isinstance(raw, str) else json.dumps(raw)), now)


def market(condition_id: str, *tokens: str) -> m.MarketNew:
    return m.MarketNew(ts_ns=T0, market=condition_id, question=f"{condition_id}?",
                       outcomes=[m.Outcome(token_id=t, name=n) for t, n in zip(tokens, ("Yes", "No"))])


def burst_view() -> tuple[MarketView, list[str]]:
    """A view that follows the burst's market, loaded and with its one feed subscribed."""
    tokens = sorted({c["asset_id"] for msg in BURST[1:-1] for c in msg["price_changes"]})
    view = MarketView()
    view.load([market(BURST_MARKET, *tokens)], T0)
    view.following(1)
    view.feed_connected(0)
    return view, tokens


def test_books_kept_through_a_captured_burst_equal_the_venues_closing_snapshot() -> None:
    view, _ = burst_view()
    published: list[m.Message] = []
    for msg in BURST[:-1]:
        published += view.update(*frame(msg), T0).prices
    closing = Books()
    closing.apply(frame(BURST[-1])[0][0])
    token = BURST[-1]["asset_id"]
    assert view.books.levels[token] == closing.levels[token]
    # What went out on prices rebuilds the same book: subscribers keep theirs as the scanner keeps its own.
    rebuilt = Books()
    for msg in published:
        rebuilt.apply(msg)
    assert rebuilt.levels == view.books.levels
    assert [type(p) for p in published] == [m.BookSnapshot] + [m.BookDelta] * 49


def test_a_lost_feed_makes_its_markets_stale_once_and_a_fresh_snapshot_makes_them_live() -> None:
    view, tokens = burst_view()
    other = market("0xother", "o-yes", "o-no")
    view.load([other], T0)
    view.update(*frame(BURST[0]), T0)  # its first book: live
    down = view.down([*tokens, "not-followed"], "market feed silent", T0 + 1)
    assert [(s.ts_ns, s.markets, s.stale, s.reason) for s in down.events] == [
        (T0 + 1, [BURST_MARKET], True, "market feed silent")]
    assert view.down(tokens, "market feed silent", T0 + 2).events == []  # already stale: not said twice
    changes = view.update(*frame(BURST[1]), T0 + 3)  # level changes alone do not make a book fresh
    assert changes.events == [] and view.stale == {BURST_MARKET, other.market}  # other: no book yet
    fresh = view.update(*frame(BURST[-1]), T0 + 4)
    assert [(s.markets, s.stale, s.reason) for s in fresh.events] == [([BURST_MARKET], False, "fresh snapshot")]
    assert fresh.prices and view.stale == {other.market}


def test_a_started_view_holds_every_market_stale_until_its_first_book_and_then_says_it_is_fresh() -> None:
    # A scanner started while the venue was down: its subscribers still hold the markets stale from the one
    # before, so it must say fresh once the books come, though it never saw them go stale itself.
    view, tokens = burst_view()
    assert view.stale == {BURST_MARKET}
    assert view.down(tokens, "market feed silent", T0 + 1).events == []  # stale already: not said twice
    assert view.update(*frame(BURST[1]), T0 + 2).events == []  # level changes alone are no book
    fresh = view.update(*frame(BURST[0]), T0 + 3)
    assert [(s.ts_ns, s.markets, s.stale) for s in fresh.events] == [(T0 + 3, [BURST_MARKET], False)]
    assert view.stale == set() and view.update(*frame(BURST[-1]), T0 + 4).events == []  # fresh already


def test_a_new_listing_waits_for_gammas_description_and_is_followed_once() -> None:
    view, _ = burst_view()
    listing = captured("ws_market_new_market_msg.json")
    out = view.update(*frame(listing), T0)
    listed, = out.listed
    assert out.events == [] and out.prices == []  # the channel's listing lacks fees and sizes: it does not go out
    assert [o.token_id for o in listed.outcomes] == json.loads(listing)["assets_ids"]
    assert view.update(*frame(listing), T0).listed == []  # a repeated listing is not followed again
    gamma = msgspec.structs.replace(listed, fee_rate=D("0.02"), min_size=D(5), neg_risk=True)
    assert view.described(listed, gamma, T0).events == [gamma]
    assert view.markets[listed.market] == gamma


def test_a_listing_gamma_never_describes_is_announced_and_kept_as_not_accepting_orders() -> None:
    view, _ = burst_view()
    listed, = view.update(*frame(captured("ws_market_new_market_msg.json")), T0).listed
    announced, = view.described(listed, None, T0 + 5).events
    assert not announced.accepting_orders and announced.ts_ns == T0 + 5 and announced.market == listed.market
    reply = view.snapshot(m.SnapshotRequest(markets=[listed.market]), T0 + 6)
    assert reply.markets == [announced]  # the snapshot says what events said


def test_a_tick_size_change_goes_out_and_the_snapshot_keeps_the_new_tick() -> None:
    change = json.loads(captured("ws_market_tick_size_msg.json"))
    view = MarketView()
    view.load([market(change["market"], change["asset_id"], "no")], T0)
    view.following(0)
    out = view.update(*frame(captured("ws_market_tick_size_msg.json")), T0)
    assert [(e.market, e.new_tick_size) for e in out.events] == [(change["market"], D("0.01"))]
    assert view.snapshot(m.SnapshotRequest(), T0).markets[0].tick_size == D("0.01")


def test_a_resolution_goes_out_as_it_came() -> None:
    view, _ = burst_view()
    out = view.update(*frame(captured("ws_market_resolved_msg.json")), T0)
    resolved, = out.events
    assert isinstance(resolved, m.MarketResolved) and resolved.winning_outcome == "Yes"


def test_markets_loaded_from_gamma_are_announced_and_their_tokens_followed() -> None:
    gamma = msgspec.json.decode(captured("gamma_market_live.json"), type=schema.GammaMarket)
    listed = feed.market_new(gamma, T0)
    view = MarketView()
    announced, stale = view.load([listed], T0 + 1).events
    assert announced == listed  # and stale until its first book:
    assert (stale.ts_ns, stale.markets, stale.stale) == (T0 + 1, [listed.market], True)
    assert view.tokens() == gamma.parsed_clob_token_ids()


def test_the_snapshot_waits_for_every_feed_and_gives_books_best_first_for_the_markets_asked() -> None:
    view = MarketView()
    view.load([market(BURST_MARKET, BURST[0]["asset_id"]), market("0xother", "o-yes")], T0)
    assert isinstance(view.snapshot(m.SnapshotRequest(), T0), m.Error)  # markets in, feeds not started
    view.following(2)
    view.feed_connected(0)
    refused = view.snapshot(m.SnapshotRequest(), T0)
    assert isinstance(refused, m.Error) and "not ready" in refused.message
    view.feed_connected(1)
    view.update(*frame(BURST[0]), T0)
    view.down(["o-yes"], "market feed silent", T0)
    reply = view.snapshot(m.SnapshotRequest(markets=[BURST_MARKET]), T0 + 1)
    assert isinstance(reply, m.SnapshotReply) and reply.ts_ns == T0 + 1 and reply.stale == []
    assert [mk.market for mk in reply.markets] == [BURST_MARKET]
    book, = reply.books.books
    bids, asks = [lv.price for lv in book.bids], [lv.price for lv in book.asks]
    assert bids == sorted(bids, reverse=True) and asks == sorted(asks) and bids[0] < asks[0]
    assert len(bids) == len(BURST[0]["bids"]) and len(asks) == len(BURST[0]["asks"])
    assert view.snapshot(m.SnapshotRequest(), T0).stale == ["0xother"]
