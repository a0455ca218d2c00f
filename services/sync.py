"""Starting from another service's state: ask it over control until it answers, backing off while it is not there."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from . import messages as m
from .bus import BusError, BusTimeout, Requester
from .config import control_address
from .runtime import Context

REQUEST_TIMEOUT_MS = 5000
Reply = TypeVar("Reply", bound=m.Message)


async def ask_until(ctx: Context, service: str, request: m.Message, want: type[Reply],
                    max_delay_s: float = 5.0) -> Reply:
    """``request`` to ``service`` until the reply is a ``want``; never gives up (cancel the task to stop)."""
    delay = 0.1
    with Requester(control_address(ctx.config, service), REQUEST_TIMEOUT_MS) as req:
        while True:
            try:
                reply = await asyncio.to_thread(req.request, request)
            except (BusTimeout, BusError) as exc:
                ctx.log.warning("no answer from %s yet (%s)", service, exc)
            else:
                if isinstance(reply, want):
                    return reply
                ctx.log.warning("%s answered %s with %s", service, type(request).__name__, reply)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay_s)


async def scanner_snapshot(ctx: Context, scanner: str) -> m.SnapshotReply:
    """The scanner's snapshot, asked for once our SUBs are connected: what it publishes after it reaches us."""
    while not ctx.subscribed("prices", "events"):
        await asyncio.sleep(0.02)
    return await ask_until(ctx, scanner, m.SnapshotRequest(), m.SnapshotReply)


def snapshot_messages(reply: m.SnapshotReply) -> list[m.Message]:
    """The snapshot as the messages a subscriber would have seen: markets, the stale set, the books."""
    return [*reply.markets, m.MarketStale(ts_ns=reply.ts_ns, markets=reply.stale, stale=True, reason="at snapshot"),
            reply.books]


async def start_from_scanner(ctx: Context, scanner: str, feed: Callable[[m.Message], None],
                             take_backlog: Callable[[], list[m.Message]]) -> m.SnapshotReply:
    """Feed the scanner's snapshot, then what arrived while waiting for it and is newer than it.

    ``take_backlog`` hands over what the service collected meanwhile, and from then on the service feeds live.
    """
    reply = await scanner_snapshot(ctx, scanner)
    for msg in snapshot_messages(reply):
        feed(msg)
    for msg in take_backlog():
        if msg.ts_ns > reply.ts_ns:
            feed(msg)
    ctx.log.info("synced from the scanner's snapshot", extra={"markets": len(reply.markets),
                                                              "books": len(reply.books.books)})
    return reply
