"""One strategy file, three ways to run it, the same signals: the in-process backtest (risk, the executor's desk,
paper fills), the mesh replay (a real strategies process fed from the bus), and live: the real mesh (scanner,
strategies, risk, a paper executor) against the local venue playing the recording back on its market channel.

The strategy is written here, as an author would, on ``polybot_strategy`` alone: none of ours is like it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from polybot_venue.life import LifeOptions
from polybot_venue.server import LocalVenue, VenueOptions
from services import messages as m
from services.backtest.engine import backtest
from services.backtest.mesh import replay_mesh
from services.backtest.simulated import generate
from services.books import Books
from services.recording import read
from services.venues.local import feed

from .conftest import wait_for
from .trading_harness import Trading
from .venue_harness import Venue

SEED = 41
MAKER = '''"""Spread reverting: bid one tick inside a spread at least min_ticks wide, post-only, for the spread to close
onto it; when the spread narrows below that, or the bid moves, take the quote away (and requote)."""
from decimal import Decimal

import polybot_strategy as ps


class SpreadParams(ps.Params):
    min_ticks: int = 2
    size: Decimal = Decimal("10")


class SpreadMaker(ps.Strategy):
    name = "spread_maker"
    Params = SpreadParams

    def __init__(self, params=None):
        super().__init__(params)
        self.quoted = {}  # YES token -> the price of our bid

    def on_message(self, msg):
        out = []
        for token in sorted(self.track(msg)):
            market = self.markets.get(self.token_market.get(token, ""))
            if market is None or token != market.outcomes[0].token_id or market.market in self.closed:
                continue
            bid, ask = self.books.best_bid(token), self.books.best_ask(token)
            want = None
            if bid and ask and ask[0] - bid[0] >= self.params.min_ticks * market.tick_size:
                want = ps.round_price(bid[0] + market.tick_size, market.tick_size, "BUY")
            if self.quoted.get(token) == want:
                continue
            if token in self.quoted:
                out.append(ps.cancel(self, msg, token_id=token, reason="the spread moved"))
                del self.quoted[token]
            if want is not None and not ps.why_not(market, want, self.params.size):
                out.append(ps.signal(self, msg, [ps.buy(token, self.params.size, want, market=market.market,
                                                        post_only=True)], rationale=f"spread {ask[0] - bid[0]}"))
                self.quoted[token] = want
        return out
'''


@pytest.fixture(scope="module")
def maker(tmp_path_factory) -> tuple[Path, str, Path]:
    """The strategy file, its spec, and a recording of the local venue's books (no trades: every level is the
    house's, so the venue can play them back exactly)."""
    root = Path(os.path.realpath(tmp_path_factory.mktemp("paths")))
    (root / "spread_maker.py").write_text(MAKER)
    recording = root / "rec"
    generate(recording, SEED, 20, markets=3, events=0,
             life=LifeOptions(requotes_per_s=6, trades_per_s=0, gaps_per_s=0.3, resolutions_per_s=0))
    return root, f"{root / 'spread_maker.py'}:SpreadMaker", recording


def asked(signals) -> list[tuple]:
    """What each signal asks for, whoever ran it: its source and legs (tokens, sides, prices, sizes, types)."""
    return [(s.source, tuple(s.legs)) for s in signals if isinstance(s, m.Signal)]


def test_the_venue_replays_a_recordings_books_exactly_trades_and_resolutions_included(tmp_path: Path) -> None:
    recording = tmp_path / "rec"
    generate(recording, SEED, 15, markets=3, events=1,
             life=LifeOptions(requotes_per_s=6, trades_per_s=3, gaps_per_s=0.5, resolutions_per_s=0.3))
    venue = LocalVenue(VenueOptions(replay=str(recording)), feed=feed(recording))
    engine, playback = venue.state.engine, venue.playback
    # Before it plays: the recording's opening markets, each with its opening book.
    opening = {mk.market for mk in read(recording) if isinstance(mk, m.MarketNew)}
    assert set(engine.markets) <= opening and len(engine.markets) == 3 + 4 + 3 + 4  # binary, an event, v2 both
    assert all(engine.book_levels(mk.tokens[0]) != ([], []) for mk in engine.markets.values())
    playback.pace(10 ** 6, 0.0)
    for news in playback.step(1.0):
        venue.publish(news)
    assert playback.played == playback.total
    final = Books()
    for msg in read(recording):
        final.apply(msg)
    resolved = [mk for mk in engine.markets.values() if mk.closed]
    assert resolved, "no market resolved in the recording"
    for token, levels in final.levels.items():
        if engine.token_market[token].closed:
            continue
        bids, asks = engine.book_levels(token)
        assert (dict(bids), dict(asks)) == ({p: q for p, q in levels["BUY"].items() if q},
                                            {p: q for p, q in levels["SELL"].items() if q}), token


def heard(mesh: Trading) -> tuple[list[int], list[int], int] | None:
    """What the scanner sent on prices and events, what the strategies received of it, and how many messages
    the strategies handled (of every socket); None unless the scanner sent nothing while it was read."""
    sockets = ("prices", "events")
    first, strategies, then = mesh.status("scanner"), mesh.status("strategies"), mesh.status("scanner")
    if None in (first, strategies, then) or [first.sockets[s].sent for s in sockets] != \
            [then.sockets[s].sent for s in sockets]:
        return None
    got = strategies.sockets
    return ([then.sockets[s].sent for s in sockets], [got[s].received for s in sockets],
            int(strategies.detail["handled"]) - got["executions"].received)


def test_in_process_and_through_the_mesh_the_file_gives_the_same_signals(maker) -> None:
    _, spec, recording = maker
    result = backtest(recording, spec)
    assert len(result.signals) >= 10 and result.cancels >= 5, "the recording moved no spread"
    assert {s.source for s in result.signals} == {"strategy:spread_maker"}
    through = replay_mesh(recording, spec)
    assert asked(through) == asked(result.signals)
    assert sum(isinstance(s, m.Cancel) for s in through) == result.cancels


def test_live_on_the_replayed_feed_the_file_gives_the_same_signals(maker) -> None:
    root, spec, recording = maker
    in_process = backtest(recording, spec)
    venue = Venue(root / "venue", SEED, 100, "--replay", str(recording))
    strategies = f'max_book_age_ms = 0, strategies = {{ spread_maker = {{ class = "{spec}" }} }}'
    mesh = Trading(root, venue, {"scanner": "", "strategies": strategies, "risk": "", "executor": ""})
    decisions = mesh.bus.inbound("decisions")
    try:
        # The executor fills on paper, so the venue's books stay the recording's: no order of ours rests in them.
        mesh.start("scanner", "executor", "risk", POLYBOT_MODE="paper")
        mesh.wait_ready("scanner", "executor", "risk")
        wait_for(lambda: decisions.socket.pipes, what="the decisions subscription")
        mesh.start("strategies")  # its first signals (on the opening books) find risk ready
        mesh.wait_ready("strategies")
        before = wait_for(lambda: heard(mesh), what="a moment the scanner sends nothing")
        final = Books()
        for msg in read(recording):
            final.apply(msg)
        played = venue.admin("replay", per_s=200)
        assert int(played["replay_total"]) > 100  # moments: book changes, after the opening books
        wait_for(lambda: (lambda d: d["replay_played"] == d["replay_total"])(venue.admin("replay")),
                 what="the venue to play the recording", timeout=30)

        def books_seen() -> bool:
            seen = mesh.ask("scanner", m.SnapshotRequest()).books.books
            return {b.token_id: ({lv.price: lv.size for lv in b.bids}, {lv.price: lv.size for lv in b.asks})
                    for b in seen} == {t: ({p: s for p, s in lv["BUY"].items() if s},
                                           {p: s for p, s in lv["SELL"].items() if s})
                                       for t, lv in final.levels.items()}
        wait_for(books_seen, what="the scanner to see the recording's last books", timeout=30)

        def handled_all() -> bool:
            now = heard(mesh)
            if now is None:
                return False
            sent, received, handled = now
            return all(r - r0 >= s - s0 for s, r, s0, r0 in zip(sent, received, *before[:2])) \
                and handled >= sum(received)
        wait_for(handled_all, what="the strategies to handle all the scanner sent", timeout=30)
        # All it will send is sent now; risk gives each signal a verdict (a cancel goes on with none).
        outputs = int(mesh.detail("strategies")["signals"])
        assert outputs == len(in_process.signals) + in_process.cancels
        verdicts: list[m.Message] = []

        def every_verdict() -> bool:
            verdicts.extend(x for x in decisions.drain() if isinstance(x, m.SignalAccepted | m.SignalRejected))
            return len(verdicts) >= len(in_process.signals)
        wait_for(every_verdict, what="risk's verdict on every signal", timeout=30)
    finally:
        mesh.close()
        venue.stop()
    live = [v.signal for v in sorted(verdicts, key=lambda v: v.signal.ts_ns)]
    assert asked(live) == asked(in_process.signals)
    assert any(isinstance(v, m.SignalAccepted) for v in verdicts), "risk let none of the maker's bids through"
