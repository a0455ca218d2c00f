"""Polymarket's market data as the mesh's messages: Gamma's markets, and the market channel's books and events.

Gamma is read through its keyset listing, ``/markets/keyset`` (what polymarket-client and NautilusTrader page
with; the offset listings are reported to be retiring, Polymarket/agents#227). Without ``version`` it lists
protocol-v1 (CTF) markets only ("omitting version uses the current server default of CTF markets (v1)":
polymarket-client ``clients/public.py`` ``list_markets``), so every request asks for both versions. The market
channel takes at most 500 assets a connection: one ``MarketFeed`` each, on ``ws.Channel``. HTTP and WebSocket
errors and the wire schema stop here; callers get ``MarketNew`` and the other mesh messages, or a ``VenueError``.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import httpx
import msgspec

from ... import messages as m
from ..base import UNAVAILABLE, VenueError
from . import feed, schema
from .ws import Channel, ChannelOptions, market_subscription, more_assets

VERSIONS = ["v1", "v2"]  # every protocol version: Gamma's keyset listings give v1 alone unless asked
ASSETS_PER_CONNECTION = 500  # Polymarket's limit per market-channel connection


def _nothing(*_: object) -> None:
    return None


@dataclass(frozen=True)
class Meters:
    """Where the market data's counts go (the scanner passes its metrics); nowhere by default."""

    frame: Callable[[], None] = _nothing  # a market-channel data frame arrived
    bad: Callable[[], None] = _nothing  # a frame or a Gamma market was skipped as unreadable
    reconnect: Callable[[], None] = _nothing  # a market-channel connection came up again
    request: Callable[[str, float, bool], None] = _nothing  # a Gamma request: its operation, seconds, failed


class Listener(Protocol):
    """What the market feeds tell their user (the scanner)."""

    def on_data(self, prices: feed.Prices, events: feed.Events, now_ns: int) -> list[str]:
        """One frame's messages; returns assets of newly listed markets to follow on the same connection."""

    def on_connected(self, number: int) -> None:
        """Feed ``number`` is subscribed (after every reconnection, too)."""

    def on_down(self, assets: list[str], reason: str) -> None:
        """A feed's connection was lost: its assets' books stop following the venue until it is back."""


class MarketData:
    """Gamma's listing and lookups, and the market-channel feeds, for one venue."""

    def __init__(self, gamma_url: str, market_ws_url: str, log: logging.Logger, *,
                 channel: ChannelOptions = ChannelOptions(), assets_per_connection: int = ASSETS_PER_CONNECTION,
                 gamma_page: int = 100, gamma_timeout_s: float = 10.0, meters: Meters = Meters(),
                 clock: Callable[[], int] = time.time_ns, rng: random.Random | None = None) -> None:
        self.gamma_url = gamma_url
        self.market_ws_url = market_ws_url
        self.log = log
        self.channel = channel
        self.assets_per_connection = assets_per_connection
        self.gamma_page = gamma_page
        self.gamma_timeout_s = gamma_timeout_s
        self.meters = meters
        self.clock = clock
        self.rng = rng or random.Random()
        self.feeds: list[MarketFeed] = []
        self.bad_gamma = 0  # Gamma markets skipped as unreadable

    # ------------------------------------------------------------ Gamma

    async def markets(self) -> list[m.MarketNew]:
        """Every open market, of both protocol versions, paged; one Gamma describes badly is skipped and counted."""
        found: list[m.MarketNew] = []
        params: dict = {"closed": "false", "limit": self.gamma_page, "version": VERSIONS}
        async with self._gamma() as client:
            while True:
                page = await self._page(client, "gamma_markets", params)
                for raw in page.markets:
                    try:
                        found.append(self._market_new(raw))
                    except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
                        self.bad_gamma += 1
                        self.meters.bad()
                        self.log.warning("skipping a Gamma market: %s", exc)
                if not page.next_cursor:
                    return found
                if page.next_cursor == params.get("after_cursor"):
                    raise VenueError(UNAVAILABLE, f"Gamma {self.gamma_url} gave the same page cursor twice")
                params["after_cursor"] = page.next_cursor

    async def market(self, condition_id: str) -> m.MarketNew | None:
        """The market as Gamma describes it, or None while Gamma does not list it."""
        async with self._gamma() as client:
            page = await self._page(client, "gamma_market", {"condition_ids": condition_id, "version": VERSIONS})
        for raw in page.markets:
            try:
                market = self._market_new(raw)
            except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
                raise VenueError(UNAVAILABLE, f"Gamma describes market {condition_id} unreadably: {exc}") from None
            if market.market == condition_id:
                return market
        return None

    async def describe(self, condition_id: str, attempts: int = 5) -> m.MarketNew | None:
        """A market the channel has just listed, as Gamma describes it, asked again with backoff while Gamma has
        not indexed it yet; None if it never does."""
        delay = self.channel.reconnect_initial_s
        for _ in range(attempts):
            try:
                if (market := await self.market(condition_id)) is not None:
                    return market
                why = "not listed yet"
            except VenueError as exc:
                why = exc.message
            self.log.warning("Gamma has no details of new market %s yet (%s)", condition_id, why)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.channel.reconnect_max_s)
        return None

    def _gamma(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.gamma_url, timeout=self.gamma_timeout_s)

    async def _page(self, client: httpx.AsyncClient, op: str, params: dict) -> schema.GammaMarketsPage:
        """GET Gamma's /markets/keyset, timed and counted; VenueError when it cannot be had or read."""
        started = time.perf_counter()
        failed = True
        try:
            response = await client.get("/markets/keyset", params=params)
            response.raise_for_status()
            page = msgspec.json.decode(response.content, type=schema.GammaMarketsPage)
            failed = False
            return page
        except httpx.HTTPError as exc:
            raise VenueError(UNAVAILABLE, f"Gamma {self.gamma_url}: {type(exc).__name__}: {exc}") from None
        except msgspec.MsgspecError as exc:
            raise VenueError(UNAVAILABLE, f"Gamma {self.gamma_url} answered what is not a page of markets: "
                                          f"{exc}") from None
        finally:
            self.meters.request(op, time.perf_counter() - started, failed)

    def _market_new(self, raw: msgspec.Raw) -> m.MarketNew:
        return feed.market_new(msgspec.json.decode(raw, type=schema.GammaMarket), self.clock())

    # ------------------------------------------------------------ the market channel

    def follow(self, assets: list[str], listener: Listener) -> list[MarketFeed]:
        """Feeds for these assets, one per ``assets_per_connection``; run each (``MarketFeed.run``)."""
        size = self.assets_per_connection
        self.feeds = [MarketFeed(self, assets[i:i + size], i // size, listener) for i in range(0, len(assets), size)]
        return self.feeds

    @property
    def bad_frames(self) -> int:
        """Market-channel frames and Gamma markets skipped as unreadable."""
        return self.bad_gamma + sum(f.bad_frames for f in self.feeds)

    @property
    def frames(self) -> int:
        return sum(f.channel.frames for f in self.feeds)

    @property
    def reconnects(self) -> int:
        return sum(max(f.channel.connects - 1, 0) for f in self.feeds)


class MarketFeed:
    """One market-channel connection and the assets it follows (more join as markets are listed)."""

    def __init__(self, source: MarketData, assets: list[str], number: int, listener: Listener) -> None:
        self.source = source
        self.assets = assets
        self.number = number
        self.listener = listener
        self.channel = Channel(source.market_ws_url, f"market feed {number}", source.log, source.channel,
                               source.rng)
        self.bad_frames = 0

    async def run(self) -> None:
        """Follow the assets until cancelled, reconnecting (and resubscribing to them all) when needed."""
        await self.channel.run(lambda: market_subscription(self.assets), self._frame, self._connected,
                               lambda why: self.listener.on_down(self.assets, f"market feed {why}"))

    def _connected(self) -> None:
        if self.channel.connects > 1:
            self.source.meters.reconnect()
        self.listener.on_connected(self.number)

    def _frame(self, raw: str | bytes) -> str | None:
        now = self.source.clock()
        self.source.meters.frame()
        try:
            prices, events = feed.normalize(schema.decode_market_frame(raw), now)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            self.bad_frames += 1
            self.source.meters.bad()
            self.source.log.warning("skipping a market-channel frame: %s", exc)
            return None
        listed = self.listener.on_data(prices, events, now)
        if not listed:
            return None
        self.assets += listed
        return more_assets(listed)
