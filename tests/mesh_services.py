"""Services used by the runtime and supervisor tests: real services of the runtime, doing test-sized work."""
from __future__ import annotations

import asyncio
import os
from decimal import Decimal

import msgspec

from services import messages as m
from services.runtime import Service


class TickerOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    interval_ms: int = 20
    crash_on_start: bool = False


class Ticker(Service):
    """Publishes a LastTrade on ``prices`` every ``interval_ms``."""

    publishes = ("prices",)
    Options = TickerOptions

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        if ctx.options.crash_on_start:
            raise SystemExit(3)
        self.sent = 0

    async def run(self) -> None:
        while True:
            if not self.ctx.halted:
                self.sent += 1
                self.ctx.send("prices", m.LastTrade(token_id="t1", market="m1", price=Decimal("0.5"),
                                                    size=Decimal(self.sent), side="BUY"))
            await asyncio.sleep(self.ctx.options.interval_ms / 1000)

    def detail(self) -> dict[str, str]:
        return {"ticks": str(self.sent)}


class Tally(Service):
    """Counts what arrives on ``prices`` (SUB) and ``signals`` (PULL), by type."""

    consumes = {"prices": None, "signals": None}

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.seen: dict[str, int] = {}

    def handle(self, socket: str, msg: m.Message) -> None:
        key = f"{socket}.{type(msg).__name__}"
        self.seen[key] = self.seen.get(key, 0) + 1

    def detail(self) -> dict[str, str]:
        return {**{k: str(v) for k, v in self.seen.items()}, "pid": str(os.getpid())}
