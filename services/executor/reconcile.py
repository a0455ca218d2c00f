"""Reconciliation: the venue's word for our open orders and trades, at start, after every reconnection of its
stream and every answer lost on the way, and on a timer; what the stream missed is published then. At start,
after a reconnection and every ``resolutions_s``, the venue is also asked whether the markets held have resolved:
a resolution announced while the executor (or the scanner) was down is settled then."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from ..venues.base import VenueError
from .desk import NOT_SUBMITTED, Desk, Tracked
from .options import ExecutorOptions

Spawn = Callable[[Coroutine[Any, Any, None]], asyncio.Task]


class Reconciler:
    """Asks the venue, tells the desk. ``unsent``: orders the journal says were taken and never sent, refused
    at the startup reconciliation (never sent late); ``reconciled`` runs after each reconciliation."""

    def __init__(self, venue: Any, desk: Desk, options: ExecutorOptions, clock: Callable[[], int],
                 log: logging.Logger, spawn: Spawn, unsent: list[Tracked], reconciled: Callable[[], None]) -> None:
        self.venue = venue
        self.desk = desk
        self.options = options
        self.clock = clock
        self.log = log
        self.spawn = spawn
        self.unsent = unsent
        self.reconciled = reconciled
        self.task: asyncio.Task | None = None
        self.again = False  # asked for while one ran: run another after it
        self.reconciled_ns = 0
        self.count = 0
        self.resolutions_due = True  # ask about the markets held at the next reconciliation (at start, reconnected)

    def soon(self) -> None:
        """Reconcile now; one asked for while another runs follows it (that one may have read the venue too early)."""
        if self.task is None or self.task.done():
            self.task = self.spawn(self._while_asked())
        else:
            self.again = True

    async def _while_asked(self) -> None:
        delay, self.again = self.options.reconnect_initial_s, True
        while self.again:
            self.again = False
            if await self.run():
                continue
            if any(t.status == "unknown" and not t.inflight for t in self.desk.open_orders()):
                # The venue could not be read and only it knows what became of these: ask again soon.
                await asyncio.sleep(delay)
                delay, self.again = min(delay * 2, self.options.reconcile_s), True

    async def run(self, startup: bool = False) -> bool:
        """Take the venue's word for our open orders and trades: what the stream missed is published now.

        False when the venue could not be read (at startup it is asked until it answers)."""
        while True:
            try:
                await self._once(startup)
                return True
            except VenueError as exc:
                if not startup:
                    self.log.warning("reconciliation failed (%s); trying again later", exc)
                    return False
                self.log.warning("cannot reconcile with the venue yet (%s); retrying", exc)
                await asyncio.sleep(self.options.reconnect_initial_s)

    async def _once(self, startup: bool) -> None:
        started = self.clock()
        open_orders = await self.venue.open_orders()
        self.desk.reconcile(open_orders, await self.venue.trades(), startup)
        if startup:
            for t in self.unsent:
                self.desk.reject(t, NOT_SUBMITTED, "the executor stopped before sending it; it was not sent")
            self.unsent = []
        live = {v.venue_order_id for v in open_orders}
        for t in self.desk.open_orders():
            if self.desk.unexplained(t, live, started):
                await self.check(t)
        if self.resolutions_due:  # after the trades: shares bought while no one listened are settled too
            await self.resolutions()
        self.reconciled_ns = self.clock()
        self.count += 1
        self.reconciled()

    async def resolutions(self) -> None:
        """Ask the venue about every market held: one it says resolved is settled (and published) now. One it
        cannot answer for is asked again at the next check."""
        self.resolutions_due = False
        for market in self.desk.unsettled():
            try:
                found = await self.venue.resolution(market)
            except VenueError as exc:
                self.log.warning("cannot ask the venue whether market %s resolved (%s); asking again later", market, exc)
                continue
            self.desk.venue_resolution(found)

    async def check(self, t: Tracked) -> None:
        """Ask the venue what became of one order. VenueError when it cannot be asked."""
        self.desk.looked_up(t, await self.venue.order(t.venue_order_id))
