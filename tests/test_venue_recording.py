"""Recordings made from the local venue on a simulated clock: reproducible, shaped like the scanner's output,
holding the venue's books and its mispricings, as long as asked, and the same whole or rotated."""
from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from services import messages as m
from services.books import Books
from services.recording import describe, read, segments
from polybot_venue.life import LifeOptions
from services.backtest.simulated import START_MS, SimClock, generate, simulate
from polybot_venue.server import LocalVenue, VenueOptions

from .conftest import ROOT, child_env

SEED, SECONDS, MARKETS, EVENTS = 3, 40, 10, 2
BUSY = LifeOptions(requotes_per_s=8, trades_per_s=4, gaps_per_s=1, resolutions_per_s=0.1)
ARGS = dict(markets=MARKETS, events=EVENTS, life=BUSY)
CLI_ARGS = ["--markets", str(MARKETS), "--events", str(EVENTS), "--requotes-per-s", "8", "--trades-per-s", "4",
            "--gaps-per-s", "1", "--resolutions-per-s", "0.1"]
ENCODE = msgspec.msgpack.Encoder().encode
# Every market the venue opens with: binary, the neg-risk events' members, protocol-v2 binary and neg-risk members.
OPENING = (MARKETS + EVENTS * VenueOptions().outcomes + VenueOptions().v2_markets
           + VenueOptions().v2_events * VenueOptions().outcomes)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("recorded") / "rec"
    generate(folder, SEED, SECONDS, **ARGS)
    return folder


@pytest.fixture(scope="module")
def messages(recorded: Path) -> list[m.Message]:
    return list(read(recorded))


def contents(folder: Path) -> list[bytes]:
    return [seg.read_bytes() for seg in segments(folder)]


def test_the_same_seed_gives_byte_identical_segments_in_another_process_and_another_seed_does_not(
        recorded: Path, tmp_path: Path) -> None:
    # Another process, with another hash seed: nothing may depend on set order or on the process.
    out = tmp_path / "again"
    done = subprocess.run([sys.executable, "-m", "services.backtest.simulated", "--seed", str(SEED),
                           "--seconds", str(SECONDS), "--out", str(out), *CLI_ARGS],
                          env=child_env(PYTHONHASHSEED="12345"), cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert contents(out) == contents(recorded)
    info = describe(out)
    assert f"recorded {info.messages} messages" in done.stdout and f"{info.bytes} bytes" in done.stdout

    generate(tmp_path / "other", SEED + 1, SECONDS, **ARGS)
    assert contents(tmp_path / "other") != contents(recorded)


def test_it_reads_back_as_the_scanners_start_then_the_living_market_in_time_order(messages: list[m.Message]) -> None:
    opening = OPENING
    markets = messages[:opening]
    assert all(isinstance(msg, m.MarketNew) for msg in markets)
    assert len({mk.market for mk in markets}) == opening
    stale, snapshot, fresh = messages[opening:opening + 3]  # each market stale until its first book, then fresh
    assert isinstance(stale, m.MarketStale) and stale.stale and stale.markets == sorted(mk.market for mk in markets)
    assert isinstance(snapshot, m.BookSnapshot)
    assert {b.token_id for b in snapshot.books} == {o.token_id for mk in markets for o in mk.outcomes}
    assert all(b.bids and b.asks for b in snapshot.books)
    assert isinstance(fresh, m.MarketStale) and not fresh.stale and fresh.markets == stale.markets

    rest = messages[opening + 3:]
    kinds = {type(msg) for msg in rest}
    assert {m.BookDelta, m.LastTrade, m.MarketResolved, m.MarketNew, m.BookSnapshot} <= kinds
    stamps = [msg.ts_ns for msg in messages]
    assert stamps == sorted(stamps)
    assert stamps[0] == START_MS * 1_000_000
    assert (SECONDS - 1) * 10**9 <= stamps[-1] - stamps[0] <= SECONDS * 10**9
    assert len({msg.id for msg in messages}) == len(messages)

    # A listing is published as Gamma describes it (fees, accepting orders), then its books arrive in the
    # same step, once the subscription the listing prompted is answered.
    for i, msg in enumerate(rest):
        if isinstance(msg, m.MarketNew):
            assert msg.accepting_orders and msg.fee_rate > 0
            tokens = {o.token_id for o in msg.outcomes}
            assert any(isinstance(later, m.BookSnapshot) and tokens == {b.token_id for b in later.books}
                       for later in rest[i + 1:] if later.ts_ns == msg.ts_ns)


def test_a_binary_market_offers_yes_and_no_for_less_than_one_at_some_point(messages: list[m.Message]) -> None:
    books = Books()
    pairs: dict[str, tuple[str, str]] = {}  # token -> the binary market's (YES, NO)
    gaps = set()
    for msg in messages:
        if isinstance(msg, m.MarketNew) and not msg.neg_risk:
            pair = tuple(o.token_id for o in msg.outcomes)
            pairs.update((t, pair) for t in pair)
        for token in books.apply(msg):
            if token in pairs:
                asks = [books.best_ask(t) for t in pairs[token]]
                if None not in asks and asks[0][0] + asks[1][0] < Decimal(1):
                    gaps.add(pairs[token])
    assert len(gaps) >= 2, "no binary market's YES and NO asks summed below 1"


def test_the_books_in_the_recording_are_the_venues_books(messages: list[m.Message]) -> None:
    books = Books()
    for msg in messages:
        books.apply(msg)
    clock = SimClock(START_MS)  # the same venue, stepped the same way, with nothing listening
    venue = LocalVenue(VenueOptions(seed=SEED, markets=MARKETS, events=EVENTS, life=BUSY), clock=clock)
    venue.life.step(clock.ms)
    while clock.ms < START_MS + SECONDS * 1000:
        clock.ms += 100
        venue.life.step(clock.ms)
    engine = venue.state.engine
    assert any(mk.closed for mk in engine.markets.values()) and len(engine.markets) > MARKETS + EVENTS * 4
    for token in engine.token_market:
        bids, asks = engine.book_levels(token)
        assert books.levels.get(token, {"BUY": {}, "SELL": {}}) == {"BUY": dict(bids), "SELL": dict(asks)}, token


def test_with_several_connections_the_dump_is_split_and_the_books_come_out_the_same(
        messages: list[m.Message]) -> None:
    split = list(simulate(SEED, SECONDS, **ARGS, assets_per_connection=6))
    opening = OPENING
    tokens = 2 * opening
    connections = -(-tokens // 6)
    # After the markets and their staleness, one dump per connection (six books each, the last the rest), each
    # followed by its markets announced fresh.
    start = split[opening + 1:opening + 1 + 2 * connections]
    dumps, fresh = start[0::2], start[1::2]
    assert all(isinstance(msg, m.BookSnapshot) for msg in dumps)
    assert all(isinstance(msg, m.MarketStale) and not msg.stale for msg in fresh)
    assert sorted(mk for msg in fresh for mk in msg.markets) == split[opening].markets
    assert [len(msg.books) for msg in dumps] == [6] * (tokens // 6) + ([tokens % 6] if tokens % 6 else [])
    assert [b for msg in dumps for b in msg.books] == messages[opening + 1].books
    whole, parts = Books(), Books()
    for msg in messages:
        whole.apply(msg)
    for msg in split:
        parts.apply(msg)
    assert parts.levels == whole.levels
    assert [msg.market for msg in split if isinstance(msg, m.MarketNew)] == \
        [msg.market for msg in messages if isinstance(msg, m.MarketNew)]


def test_a_longer_run_has_more_messages_and_starts_with_the_shorter_one(messages: list[m.Message],
                                                                         tmp_path: Path) -> None:
    generate(tmp_path / "half", SEED, SECONDS / 2, **ARGS)
    half = [ENCODE(msg) for msg in read(tmp_path / "half")]
    assert len(messages) > 1.5 * len(half)
    assert [ENCODE(msg) for msg in messages[:len(half)]] == half


@pytest.mark.parametrize("rotation", [{"rotate_bytes": 400_000}, {"rotate_s": 7}])
def test_a_rotated_recording_reads_back_as_the_same_messages_as_one_segment(
        rotation: dict, recorded: Path, messages: list[m.Message], tmp_path: Path) -> None:
    info = generate(tmp_path / "rotated", SEED, SECONDS, **ARGS, **rotation)
    assert info.segments >= 5 and len(segments(tmp_path / "rotated")) == info.segments
    assert len(segments(recorded)) == 1
    assert info.messages == len(messages)
    assert [ENCODE(msg) for msg in read(tmp_path / "rotated")] == [ENCODE(msg) for msg in messages]


def test_it_refuses_a_folder_that_already_holds_a_recording(recorded: Path) -> None:
    before = contents(recorded)
    with pytest.raises(FileExistsError, match="already holds a recording"):
        generate(recorded, SEED, 1)
    assert contents(recorded) == before
