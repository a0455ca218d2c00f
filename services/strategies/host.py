"""The strategies service: hosts the configured strategies, feeds them the bus, pushes their signals.

With shards (``shard`` k of ``shards`` n) each process sees only the markets whose condition id hashes
to its shard, so markets can be split across several strategy processes; risk pulls from all of them.
"""
from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from .. import messages as m
from ..runtime import Service, StartupError
from ..sync import start_from_scanner
from . import REGISTRY

class StrategiesOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    strategies: dict[str, dict[str, Any]] = msgspec.field(default_factory=lambda: {"arbitrage": {}})
    shard: int = 0
    shards: int = 1
    scanner: str = "scanner"  # the service whose snapshot a (re)started host begins from


def shard_of(condition_id: str, shards: int) -> int:
    return int(hashlib.sha256(condition_id.encode()).hexdigest(), 16) % shards


class Strategies(Service):
    consumes = {"prices": None, "events": None, "executions": None}
    publishes = ("signals",)
    Options = StrategiesOptions

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        opts = ctx.options
        if not 0 <= opts.shard < opts.shards:
            raise StartupError(f"shard {opts.shard} is not within shards {opts.shards}")
        self.strategies = []
        for name, params in opts.strategies.items():
            if name not in REGISTRY:
                raise StartupError(f"unknown strategy {name!r}; known: {', '.join(sorted(REGISTRY))}")
            cls = REGISTRY[name]
            try:
                self.strategies.append(cls(msgspec.convert(params, cls.Params)))
            except msgspec.ValidationError as exc:
                raise StartupError(f"strategy {name}: {exc}") from None
        self.mine: set[str] = set()  # condition ids of this shard
        self.synced = False
        self.backlog: list[m.Message] = []  # what arrived before the scanner's snapshot
        self.sent = 0
        self.dropped = 0

    async def run(self) -> None:
        """Start from the scanner's snapshot, then the messages that came after it, then live."""
        await start_from_scanner(self.ctx, self.ctx.options.scanner, self._feed, self._take_backlog)

    def _take_backlog(self) -> list[m.Message]:
        backlog, self.backlog, self.synced = self.backlog, [], True
        return backlog

    def handle(self, socket: str, msg: m.Message) -> None:
        if isinstance(msg, m.Heartbeat):
            return
        if not self.synced:
            self.backlog.append(msg)
            return
        self._feed(msg)

    def _feed(self, msg: m.Message) -> None:
        if isinstance(msg, m.MarketNew):
            # An event's members stay together: its arbitrage needs every outcome.
            if shard_of(msg.neg_risk_market_id or msg.market, self.ctx.options.shards) != self.ctx.options.shard:
                return
            self.mine.add(msg.market)
        for strategy in self.strategies:
            for signal in strategy.on_message(msg):
                if self.ctx.halted and isinstance(signal, m.Signal):
                    continue  # cancels still go: they only lower risk
                # A strategy is pure and stamps its cause's time; the hop's own time is when it leaves here.
                signal = msgspec.structs.replace(signal, ts_ns=self.ctx.clock())
                if self.ctx.send("signals", signal):
                    self.sent += 1
                else:
                    self.dropped += 1

    def detail(self) -> dict[str, str]:
        return {"strategies": ",".join(s.name for s in self.strategies), "markets": str(len(self.mine)),
                "synced": str(self.synced),
                "signals": str(self.sent), "signals_dropped": str(self.dropped)}
