"""Services used by the runtime and supervisor tests: real services of the runtime, doing test-sized work."""
from __future__ import annotations

import asyncio
import os
import time
from decimal import Decimal

import msgspec

from services import messages as m
from services.runtime import Service


class TickerOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    interval_ms: int = 20


class Ticker(Service):
    """Publishes a LastTrade on ``prices`` every ``interval_ms``."""

    publishes = ("prices",)
    Options = TickerOptions

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
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


class TallyOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    handle_ms: int = 0  # time each message takes to handle, to build a backlog


class Tally(Service):
    """Counts what arrives on every data socket (SUB to the fan-out ones, PULL on signals and orders), by type."""

    consumes = {"prices": None, "events": None, "executions": None, "decisions": None, "signals": None, "orders": None}
    Options = TallyOptions

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.seen: dict[str, int] = {}

    def handle(self, socket: str, msg: m.Message) -> None:
        key = f"{socket}.{type(msg).__name__}"
        if not self.seen:
            self.ctx.log.info("first message")
        self.seen[key] = self.seen.get(key, 0) + 1
        if self.ctx.options.handle_ms:
            time.sleep(self.ctx.options.handle_ms / 1000)  # slow work, on purpose

    def detail(self) -> dict[str, str]:
        return {**{k: str(v) for k, v in self.seen.items()}, "pid": str(os.getpid())}


class Crasher(Service):
    """Dies with exit code 3 as it starts, every time."""

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        raise SystemExit(3)


class Failing(Service):
    """Its own work fails a moment after it starts."""

    async def run(self) -> None:
        raise RuntimeError("the feed is gone")


class Idle(Service):
    """No sockets and no work: it only answers control (a service to configure without binding anything)."""
