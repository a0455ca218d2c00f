"""Recordings of any length from the local venue, with no network and no wall clock.

The venue is built and stepped on a simulated clock; its market-channel payloads (the same JSON it would send
on ``/ws/market``) and its Gamma markets go through the scanner's own decoding (``polymarket.schema``) and
normalising (``polymarket.feed``), in the order the scanner publishes them: every market, the books of the
initial dump, then what the living markets do. Message ids are derived from the seed instead of the process,
so the same arguments give byte-identical segment files.

    python -m services.backtest.simulated --seed 7 --seconds 600 --out DIR
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from polybot_venue.channels import Client
from polybot_venue.life import LifeOptions
from polybot_venue.markets import gamma_market
from polybot_venue.server import LocalVenue, VenueOptions

from .. import messages as m
from ..recording import SUFFIX, RecordingInfo, RecordingWriter
from ..market_view import MarketView
from ..venues.polymarket import feed, schema
from ..venues.polymarket.market import ASSETS_PER_CONNECTION
from ..venues.polymarket.ws import TEXT_FRAMES

START_MS = 1_800_000_000_000  # 2027-01-15: a fixed start, so nothing depends on when a recording was made


class SimClock:
    """The venue's clock (``() -> ms``), moved by hand."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms

    @property
    def ns(self) -> int:
        return self.ms * 1_000_000


@dataclass(eq=False)
class _Connection(Client):
    """A market-channel client the channel code pushes to as to a socket; the frames wait here to be read."""

    frames: deque[str] = field(default_factory=deque)

    def send(self, text: str) -> None:
        self.frames.append(text)


class _Ids:
    """Message ids from the seed, in the shape of ``messages.new_id``: the same run, the same ids."""

    def __init__(self, seed: int) -> None:
        self.prefix = hashlib.sha256(f"polybot-local-venue:recording:{seed}".encode()).hexdigest()[:12]
        self.n = 0

    def _next(self) -> str:
        self.n += 1
        return f"{self.prefix}{self.n:x}"

    def stamp(self, batch: list[m.Message]) -> list[m.Message]:
        """New ids for one origin's messages; the messages that shared a trace still share one."""
        traces: dict[str, str] = {}
        return [msgspec.structs.replace(msg, id=self._next(),
                                        trace_id=traces.setdefault(msg.trace_id, self._next()))
                for msg in batch]


class _Scanner:
    """What the scanner does with the venue's data: its own logic (``market_view.MarketView``), fed as the
    Polymarket adapter (``venues.polymarket.market``) feeds it, with the sockets and HTTP replaced by direct
    calls into the venue's code.

    There is no staleness here (no connection can fail), so no MarketStale is published."""

    def __init__(self, venue: LocalVenue, clock: SimClock, ids: _Ids, assets_per_connection: int) -> None:
        self.venue = venue
        self.clock = clock
        self.ids = ids
        self.per_connection = assets_per_connection
        self.view = MarketView()
        self.connections: list[_Connection] = []

    def _gamma(self, condition_ids: set[str] | None = None) -> list[schema.GammaMarket]:
        """Gamma's open markets (or those of ``condition_ids``), as the adapter decodes them."""
        state = self.venue.state
        found = [mk for mk in state.engine.markets.values()
                 if (not mk.closed if condition_ids is None else mk.condition_id in condition_ids)]
        body = json.dumps([gamma_market(state.engine, mk, state.events) for mk in found], ensure_ascii=False,
                          separators=(",", ":"))
        return [msgspec.convert(raw, schema.GammaMarket) for raw in msgspec.json.decode(body)]

    def start(self) -> Iterator[m.Message]:
        """Every market from Gamma, then one connection per ``assets_per_connection`` assets and its dump."""
        loaded = self.view.load([feed.market_new(gamma, self.clock.ns) for gamma in self._gamma()], self.clock.ns)
        for market in loaded.events:
            yield from self.ids.stamp([market])
        tokens = self.view.tokens()
        for i in range(0, len(tokens), self.per_connection):
            connection = _Connection(ws=None, channel="market")
            self.connections.append(connection)
            self.venue.channels.clients.add(connection)  # as Channels.serve does for a new socket
            self._ask(connection, {"type": "market", "assets_ids": tokens[i:i + self.per_connection],
                                   "initial_dump": True, "custom_feature_enabled": True})
        yield from self.read()

    def _ask(self, connection: _Connection, request: dict) -> None:
        self.venue.channels._on_message(connection, json.dumps(request))  # what the socket would hand the venue

    def read(self) -> Iterator[m.Message]:
        """Everything the connections hold, connection by connection, as the scanner publishes it."""
        for connection in self.connections:
            while connection.frames:
                yield from self._on_frame(connection, connection.frames.popleft())

    def _on_frame(self, connection: _Connection, raw: str) -> Iterator[m.Message]:
        if raw in TEXT_FRAMES:
            return
        now_ns = self.clock.ns
        out = self.view.update(*feed.normalize(schema.decode_market_frame(raw), now_ns), now_ns)
        yield from self.ids.stamp([*out.prices, *out.events])
        new_assets: list[str] = []
        for listed in out.listed:
            new_assets += [o.token_id for o in listed.outcomes]
            described = next((feed.market_new(gamma, now_ns) for gamma in self._gamma({listed.market})
                              if gamma.condition_id == listed.market), None)
            yield from self.ids.stamp(self.view.described(listed, described, now_ns).events)
        if new_assets:
            self._ask(connection, {"operation": "subscribe", "assets_ids": new_assets})


def simulate(seed: int, seconds: float, *, markets: int = 20, events: int = 3, outcomes: int = 4,
             life: LifeOptions | None = None, step_ms: int = 100, start_ms: int = START_MS,
             assets_per_connection: int = ASSETS_PER_CONNECTION) -> Iterator[m.Message]:
    """What the scanner would publish on ``prices`` and ``events`` for the local venue seeded with ``seed``,
    over ``seconds`` of simulated time stepped every ``step_ms``: the same arguments, the same messages."""
    if seconds < 0:
        raise ValueError(f"seconds must be 0 or more, not {seconds}")
    if step_ms <= 0:
        raise ValueError(f"step_ms must be above 0, not {step_ms}")
    if assets_per_connection <= 0:
        raise ValueError(f"assets_per_connection must be above 0, not {assets_per_connection}")
    clock = SimClock(start_ms)
    venue = LocalVenue(VenueOptions(seed=seed, markets=markets, events=events, outcomes=outcomes,
                                    life=life or LifeOptions()), clock=clock)
    scanner = _Scanner(venue, clock, _Ids(seed), assets_per_connection)
    yield from scanner.start()
    # The venue's loop (server.Venue.run) also runs engine.tick and advance_trades; they only expire GTD
    # orders, cancel for silent heartbeats and confirm trades on the user channel, none of which the living
    # markets' own orders (GTC and FAK, no heartbeats) or the market channel ever see.
    end_ms = start_ms + round(seconds * 1000)
    venue.life.step(clock.ms)  # the first step only starts the life's clock
    while clock.ms < end_ms:
        clock.ms = min(clock.ms + step_ms, end_ms)
        venue.publish(venue.life.step(clock.ms))
        yield from scanner.read()


def generate(folder: str | Path, seed: int, seconds: float, *, markets: int = 20, events: int = 3,
             outcomes: int = 4, life: LifeOptions | None = None, step_ms: int = 100, start_ms: int = START_MS,
             rotate_bytes: int = 64 << 20, rotate_s: float = 3600.0) -> RecordingInfo:
    """Record ``simulate(...)`` into a new recording folder (segments rotated by size and market time)."""
    folder = Path(folder)
    if rotate_bytes <= 0 or rotate_s <= 0:
        raise ValueError("rotate_bytes and rotate_s must be above 0")
    if folder.is_dir() and any(folder.glob("seg-*" + SUFFIX)):
        raise FileExistsError(f"{folder} already holds a recording; give a new or empty folder")
    first = last = 0
    names: set[str] = set()
    with RecordingWriter(folder, rotate_bytes, rotate_s, flush_s=0) as writer:
        for msg in simulate(seed, seconds, markets=markets, events=events, outcomes=outcomes, life=life,
                            step_ms=step_ms, start_ms=start_ms):
            writer.write(msg)
            first = first or msg.ts_ns
            last = msg.ts_ns
            if isinstance(msg, m.MarketNew):
                names.add(msg.market)
        seq, written = writer.seq, writer.written
    files = sorted(folder.glob("seg-*" + SUFFIX))
    return RecordingInfo(path=str(folder), segments=seq, bytes=sum(f.stat().st_size for f in files),
                         started_ns=first, ended_ns=last, messages=written, markets=len(names))


def _rate(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number, 0 or more, not {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.backtest.simulated",
                                     description="Record what the scanner would publish for the local venue, "
                                                 "on a simulated clock (no network): the same seed and length "
                                                 "give the same files.")
    parser.add_argument("--seed", type=int, default=VenueOptions().seed)
    parser.add_argument("--seconds", type=_rate, required=True, help="simulated market time to record")
    parser.add_argument("--out", required=True, help="a new or empty folder for the segments")
    parser.add_argument("--markets", type=int, default=VenueOptions().markets, help="binary markets")
    parser.add_argument("--events", type=int, default=VenueOptions().events, help="multi-outcome events")
    defaults = LifeOptions()
    for name in ("requotes_per_s", "trades_per_s", "gaps_per_s", "resolutions_per_s"):
        parser.add_argument("--" + name.replace("_", "-"), type=_rate, default=getattr(defaults, name))
    parser.add_argument("--step-ms", type=int, default=100, help="how often the living markets step")
    parser.add_argument("--rotate-mb", type=_rate, default=64.0, help="a new segment after this many MB...")
    parser.add_argument("--rotate-s", type=_rate, default=3600.0, help="... or this many seconds of market time")
    args = parser.parse_args(argv)
    life = msgspec.structs.replace(defaults, requotes_per_s=args.requotes_per_s, trades_per_s=args.trades_per_s,
                                   gaps_per_s=args.gaps_per_s, resolutions_per_s=args.resolutions_per_s)
    out = Path(args.out).expanduser().resolve()
    try:
        info = generate(out, args.seed, args.seconds, markets=args.markets, events=args.events, life=life,
                        step_ms=args.step_ms, rotate_bytes=max(1, int(args.rotate_mb * (1 << 20))),
                        rotate_s=args.rotate_s)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"recorded {info.messages} messages, {info.markets} markets, {info.segments} segments, "
          f"{info.bytes} bytes, {(info.ended_ns - info.started_ns) / 1e9:.1f}s of market time (seed {args.seed}) "
          f"to {info.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
