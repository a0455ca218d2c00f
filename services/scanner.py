"""The scanner: the venue's market data as batched book updates on ``prices`` and lifecycle on ``events``.

It loads markets from Gamma, subscribes on the market channel (one connection per 500 assets), keeps
each book from snapshots and price changes, PINGs every ``ping_s``, and when a connection fails or goes
silent past ``stale_after_s`` it marks that connection's markets stale, reconnects with exponential
backoff and jitter, resubscribes, and rebuilds from the fresh snapshot (then marks them live again).
"""
from __future__ import annotations

import asyncio
import json
import random
import time
from urllib.parse import urlparse

import httpx
import msgspec
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidURI, WebSocketException

from . import messages as m
from .books import Books
from .config import venue_urls
from .runtime import Service
from .venues.polymarket import feed, schema

TEXT_FRAMES = ("PONG", "NO NEW ASSETS", "INVALID OPERATION")


class ScannerOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    assets_per_connection: int = 500  # Polymarket's limit per market-channel connection
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
        self.urls = venue_urls(ctx.config)
        self.markets: dict[str, m.MarketNew] = {}
        self.token_market: dict[str, str] = {}
        self.books = Books()
        self.stale: set[str] = set()
        self.tasks: set[asyncio.Task] = set()  # fetching the details of newly listed markets
        self.frames = 0
        self.bad_frames = 0
        self.reconnects = 0
        self.feeds: list[asyncio.Task] = []
        self.dumped: set[int] = set()  # feeds that have had their first snapshot
        self.loaded = False  # markets loaded from Gamma
        self.rng = random.Random()
        metrics = ctx.metrics
        self.m_frames = metrics.counter("venue_frames", "market-channel frames received")
        self.m_bad = metrics.counter("venue_frames_bad", "market-channel frames and Gamma markets skipped as unreadable")
        self.m_reconnects = metrics.counter("ws_reconnects", "venue WebSocket reconnections", ["channel"])
        self.m_latency = metrics.histogram("venue_request_seconds", "venue requests, by operation", ["op"])
        self.m_errors = metrics.counter("venue_errors", "venue requests that failed, by operation", ["op"])
        self.m_markets = metrics.gauge("markets", "markets known, and how many of them are stale", ["state"])

    # ------------------------------------------------------------ markets

    async def load_markets(self) -> list[m.MarketNew]:
        """Every open market from Gamma, paged; a market Gamma describes badly is skipped and counted."""
        found: list[m.MarketNew] = []
        opts = self.ctx.options
        async with httpx.AsyncClient(base_url=self.urls.gamma_url, timeout=opts.gamma_timeout_s) as client:
            offset = 0
            while True:
                response = await self._gamma(client, "gamma_markets", {"closed": "false", "limit": opts.gamma_page,
                                                                       "offset": offset})
                page = msgspec.json.decode(response.content)
                for raw in page:
                    try:
                        market = msgspec.convert(raw, schema.GammaMarket)
                        found.append(feed.market_new(market, self.ctx.clock()))
                    except (msgspec.ValidationError, ValueError) as exc:
                        self.bad_frames += 1
                        self.m_bad.inc()
                        self.ctx.log.warning("skipping a Gamma market: %s", exc)
                if len(page) < opts.gamma_page:
                    return found
                offset += opts.gamma_page

    async def _gamma(self, client: httpx.AsyncClient, op: str, params: dict) -> httpx.Response:
        """GET Gamma's /markets, timed and counted."""
        started = time.perf_counter()
        try:
            response = await client.get("/markets", params=params)
            response.raise_for_status()
            return response
        except httpx.HTTPError:
            self.m_errors.labels(op).inc()
            raise
        finally:
            self.m_latency.labels(op).observe(time.perf_counter() - started)

    def _add_market(self, market: m.MarketNew) -> list[str]:
        self.markets[market.market] = market
        tokens = [o.token_id for o in market.outcomes]
        for token in tokens:
            self.token_market[token] = market.market
        return tokens

    # ------------------------------------------------------------ run

    async def run(self) -> None:
        backoff = self.ctx.options.reconnect_initial_s
        while True:  # Gamma may not be up yet (the venue starts alongside us)
            try:
                markets = await self.load_markets()
                break
            except (httpx.HTTPError, msgspec.DecodeError) as exc:
                self.ctx.log.warning("Gamma not reachable (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.ctx.options.reconnect_max_s)
        tokens = []
        for market in markets:
            tokens += self._add_market(market)
            self.ctx.send("events", market)
        self.ctx.log.info("loaded %d markets (%d assets)", len(markets), len(tokens))
        size = self.ctx.options.assets_per_connection
        self.feeds = [asyncio.create_task(self._feed(tokens[i:i + size], i // size), name=f"feed-{i // size}")
                      for i in range(0, len(tokens), size)]
        self.loaded = True
        try:
            await asyncio.gather(*self.feeds)  # they run until the service stops; a bug in one stops the service
        finally:
            for task in self.feeds:
                task.cancel()

    async def _feed(self, assets: list[str], number: int) -> None:
        opts = self.ctx.options
        url = self.urls.market_ws_url
        loopback = urlparse(url).hostname in ("127.0.0.1", "localhost", "::1")
        backoff = opts.reconnect_initial_s
        first = True
        while True:
            try:
                async with connect(url, proxy=None if loopback else True, ping_interval=None, compression=None,
                                   max_size=None, open_timeout=10) as ws:
                    await ws.send(json.dumps({"type": "market", "assets_ids": assets, "initial_dump": True,
                                              "custom_feature_enabled": True}))
                    if not first:
                        self.reconnects += 1
                        self.m_reconnects.labels("market").inc()
                    first = False
                    self.ctx.log.info("market feed connected", extra={"url": url, "assets": len(assets)})
                    pinger = asyncio.create_task(self._ping(ws))
                    try:
                        while True:
                            # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation that
                            # arrives as recv completes (gh-86296), and the feed then never stops.
                            async with asyncio.timeout(opts.stale_after_s):
                                raw = await ws.recv()
                            backoff = opts.reconnect_initial_s
                            new_assets = self._on_frame(raw, assets)
                            self.dumped.add(number)
                            if new_assets:
                                assets += new_assets
                                await ws.send(json.dumps({"operation": "subscribe", "assets_ids": new_assets}))
                    finally:
                        pinger.cancel()
            except (TimeoutError, OSError, WebSocketException, InvalidHandshake, InvalidURI) as exc:
                why = "silent" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
                self._mark_stale(assets, f"market feed {why}")
            delay = backoff * (1 + self.rng.random() / 2)  # jitter: reconnecting clients do not stampede
            self.ctx.log.warning("market feed down; reconnecting in %.2fs", delay)
            await asyncio.sleep(delay)
            backoff = min(backoff * 2, opts.reconnect_max_s)

    async def _ping(self, ws) -> None:
        while True:
            await asyncio.sleep(self.ctx.options.ping_s)
            await ws.send("PING")

    # ------------------------------------------------------------ frames

    def _on_frame(self, raw: str | bytes, assets: list[str]) -> list[str]:
        """Publish one frame's messages; returns assets of newly listed markets to subscribe to."""
        now = self.ctx.clock()
        self.frames += 1
        self.m_frames.inc()
        if raw in TEXT_FRAMES:
            return []
        try:
            decoded = schema.decode_market_frame(raw)
            prices, events = feed.normalize(decoded, now)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            self.bad_frames += 1
            self.m_bad.inc()
            self.ctx.log.warning("skipping a market-channel frame: %s", exc)
            return []
        fresh: set[str] = set()
        for msg in prices:
            touched = self.books.apply(msg)
            if isinstance(msg, m.BookSnapshot):
                fresh |= {self.token_market[t] for t in touched if t in self.token_market}
            sent = self.ctx.send("prices", msg)
            if self.ctx.tracing and isinstance(msg, (m.BookSnapshot, m.BookDelta)):
                self.ctx.tracing.book(msg, sent)
        if fresh & self.stale:  # fresh books arrived for stale markets: they are live again
            self.stale -= fresh
            self.ctx.send("events", m.MarketStale(ts_ns=now, markets=sorted(fresh), stale=False,
                                                  reason="fresh snapshot"))
        new_assets: list[str] = []
        for event in events:
            if isinstance(event, m.MarketNew):
                if event.market not in self.markets:
                    new_assets += self._add_market(event)
                    self._spawn(self._complete(event))
                continue  # the channel's listing lacks fees, minimum size and neg-risk: Gamma's goes out instead
            if isinstance(event, m.TickSizeChange) and event.market in self.markets:  # so snapshots stay current
                self.markets[event.market] = msgspec.structs.replace(self.markets[event.market],
                                                                     tick_size=event.new_tick_size)
            self.ctx.send("events", event)
        return new_assets

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _complete(self, listed: m.MarketNew, attempts: int = 5) -> None:
        """Publish a newly listed market as Gamma describes it; if Gamma never does, as not accepting orders."""
        opts = self.ctx.options
        delay = opts.reconnect_initial_s
        for _ in range(attempts):
            try:
                async with httpx.AsyncClient(base_url=self.urls.gamma_url, timeout=opts.gamma_timeout_s) as client:
                    response = await self._gamma(client, "gamma_market", {"condition_ids": listed.market})
                for raw in msgspec.json.decode(response.content):
                    market = feed.market_new(msgspec.convert(raw, schema.GammaMarket), self.ctx.clock())
                    if market.market == listed.market:
                        self.markets[market.market] = market
                        self.ctx.send("events", market)
                        return
            except (httpx.HTTPError, msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                self.ctx.log.warning("Gamma has no details of new market %s yet (%s)", listed.market, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, opts.reconnect_max_s)
        self.ctx.log.error("Gamma never described new market %s; it is announced as not accepting orders",
                           listed.market)
        self.ctx.send("events", msgspec.structs.replace(listed, accepting_orders=False, ts_ns=self.ctx.clock()))

    def _mark_stale(self, assets: list[str], reason: str) -> None:
        markets = sorted({self.token_market[a] for a in assets if a in self.token_market} - self.stale)
        if markets:
            self.stale |= set(markets)
            self.ctx.send("events", m.MarketStale(ts_ns=self.ctx.clock(), markets=markets, stale=True, reason=reason))

    def control(self, request: m.Message) -> m.Message | None:
        if isinstance(request, m.SnapshotRequest):
            if not self.loaded or len(self.dumped) < len(self.feeds):
                return m.Error(request_id=request.id, message="not ready: markets and books are still loading; "
                                                               "ask again shortly")
            now = self.ctx.clock()
            wanted = set(request.markets) or None
            books = [m.Book(token_id=token, market=self.token_market.get(token, ""),
                            bids=[m.Level(p, s) for p, s in sorted(side["BUY"].items(), reverse=True)],
                            asks=[m.Level(p, s) for p, s in sorted(side["SELL"].items())])
                     for token, side in self.books.levels.items()
                     if wanted is None or self.token_market.get(token) in wanted]
            markets = [mk for mk in self.markets.values() if wanted is None or mk.market in wanted]
            return m.SnapshotReply(ts_ns=now, markets=markets, books=m.BookSnapshot(ts_ns=now, books=books),
                                   stale=sorted(mk for mk in self.stale if wanted is None or mk in wanted))
        return None

    def sample(self) -> None:
        self.m_markets.labels("all").set(len(self.markets))
        self.m_markets.labels("stale").set(len(self.stale))

    def detail(self) -> dict[str, str]:
        return {"markets": str(len(self.markets)), "books": str(len(self.books.levels)), "stale": str(len(self.stale)),
                "frames": str(self.frames), "bad_frames": str(self.bad_frames), "reconnects": str(self.reconnects),
                "connections": str(len(self.feeds))}
