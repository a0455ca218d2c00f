"""The scanner: the venue's market data as batched book updates on ``prices`` and lifecycle on ``events``.

It loads markets from Gamma and follows them on the market channel through the Polymarket adapter
(``venues.polymarket.market``: one connection per 500 assets, PINGs every ``ping_s``, and when a
connection fails or goes silent past ``stale_after_s`` it reconnects with exponential backoff and jitter
and resubscribes). What to publish is ``MarketView``'s: a lost connection's markets go stale until its
fresh snapshot marks them live again. This module only wires the two to the bus.
"""
from __future__ import annotations

import asyncio

import msgspec

from . import messages as m
from .config import venue_urls
from .market_view import MarketView, Outbox
from .runtime import Service
from .venues.base import VenueError
from .venues.polymarket import feed
from .venues.polymarket.market import ASSETS_PER_CONNECTION, MarketData, Meters
from .venues.polymarket.ws import ChannelOptions


class ScannerOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    assets_per_connection: int = ASSETS_PER_CONNECTION
    ping_s: float = 10.0
    stale_after_s: float = 30.0  # a connection silent this long (not even PONG) is stale: its markets too
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0
    gamma_page: int = 100
    gamma_timeout_s: float = 10.0


class Scanner(Service):
    publishes = ("prices", "events")
    Options = ScannerOptions

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        opts = ctx.options
        metrics = ctx.metrics
        frames = metrics.counter("venue_frames", "market-channel frames received")
        bad = metrics.counter("venue_frames_bad", "market-channel frames and Gamma markets skipped as unreadable")
        reconnects = metrics.counter("ws_reconnects", "venue WebSocket reconnections", ["channel"])
        self.m_latency = metrics.histogram("venue_request_seconds", "venue requests, by operation", ["op"])
        self.m_errors = metrics.counter("venue_errors", "venue requests that failed, by operation", ["op"])
        self.m_markets = metrics.gauge("markets", "markets known, and how many of them are stale", ["state"])
        urls = venue_urls(ctx.config)
        channel = ChannelOptions(ping_s=opts.ping_s, stale_after_s=opts.stale_after_s,
                                 reconnect_initial_s=opts.reconnect_initial_s, reconnect_max_s=opts.reconnect_max_s)
        self.source = MarketData(urls.gamma_url, urls.market_ws_url, ctx.log, channel=channel,
                                 assets_per_connection=opts.assets_per_connection, gamma_page=opts.gamma_page,
                                 gamma_timeout_s=opts.gamma_timeout_s, clock=ctx.clock,
                                 meters=Meters(frame=frames.inc, bad=bad.inc, reconnect=reconnects.labels("market").inc,
                                               request=self._request))
        self.view = MarketView()
        self.tasks: set[asyncio.Task] = set()  # asking Gamma for newly listed markets
        self.feeds: list[asyncio.Task] = []

    def _request(self, op: str, seconds: float, failed: bool) -> None:
        self.m_latency.labels(op).observe(seconds)
        if failed:
            self.m_errors.labels(op).inc()

    def _publish(self, out: Outbox) -> None:
        for msg in out.prices:
            sent = self.ctx.send("prices", msg)
            if self.ctx.tracing and isinstance(msg, (m.BookSnapshot, m.BookDelta)):
                self.ctx.tracing.book(msg, sent)
        for msg in out.events:
            self.ctx.send("events", msg)

    async def run(self) -> None:
        self._publish(self.view.load(await self._markets(), self.ctx.clock()))
        tokens = self.view.tokens()
        self.ctx.log.info("loaded %d markets (%d assets)", len(self.view.markets), len(tokens))
        feeds = self.source.follow(tokens, self)
        self.feeds = [asyncio.create_task(f.run(), name=f"feed-{f.number}") for f in feeds]
        self.view.following(len(feeds))
        try:
            await asyncio.gather(*self.feeds)  # they run until the service stops; a bug in one stops the service
        finally:
            for task in self.feeds:
                task.cancel()

    async def _markets(self) -> list[m.MarketNew]:
        backoff = self.ctx.options.reconnect_initial_s
        while True:  # Gamma may not be up yet (the venue starts alongside us)
            try:
                return await self.source.markets()
            except VenueError as exc:
                self.ctx.log.warning("Gamma not reachable (%s); retrying in %.1fs", exc.message, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.ctx.options.reconnect_max_s)

    async def _describe(self, listed: m.MarketNew) -> None:
        gamma = await self.source.describe(listed.market)
        if gamma is None:
            self.ctx.log.error("Gamma never described new market %s; it is announced as not accepting orders",
                               listed.market)
        self._publish(self.view.described(listed, gamma, self.ctx.clock()))

    # ------------------------------------------------------------ the adapter's callbacks (market.Listener)

    def on_data(self, prices: feed.Prices, events: feed.Events, now_ns: int) -> list[str]:
        out = self.view.update(prices, events, now_ns)
        self._publish(out)
        for listed in out.listed:
            task = asyncio.get_running_loop().create_task(self._describe(listed))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return [o.token_id for listed in out.listed for o in listed.outcomes]

    def on_connected(self, number: int) -> None:
        self.view.feed_connected(number)

    def on_down(self, assets: list[str], reason: str) -> None:
        self._publish(self.view.down(assets, reason, self.ctx.clock()))

    # ------------------------------------------------------------ the runtime's

    def control(self, request: m.Message) -> m.Message | None:
        if isinstance(request, m.SnapshotRequest):
            return self.view.snapshot(request, self.ctx.clock())
        return None

    def sample(self) -> None:
        self.m_markets.labels("all").set(len(self.view.markets))
        self.m_markets.labels("stale").set(len(self.view.stale))

    def detail(self) -> dict[str, str]:
        view, source = self.view, self.source
        return {"markets": str(len(view.markets)), "books": str(len(view.books.levels)), "stale": str(len(view.stale)),
                "frames": str(source.frames), "bad_frames": str(source.bad_frames),
                "reconnects": str(source.reconnects), "connections": str(len(self.feeds))}
