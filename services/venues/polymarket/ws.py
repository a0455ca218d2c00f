"""One client for both of Polymarket's WebSockets (the market and the user channel), kept connected.

A connection sends its subscription, then PINGs every ``ping_s``. It is up ("connected") once the PONG to
its first PING arrives: the venue handles a connection's frames in order, so by then it has taken the
subscription, and a market channel's initial dump has arrived. A connection silent for ``stale_after_s``
(not even a PONG) or failing is down; it reconnects with exponential backoff and jitter, sending the
subscription anew. Text frames (PONG and the like) stop here; the channel's data frames go on.
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from urllib.parse import urlparse

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidURI, WebSocketException

TEXT_FRAMES = frozenset({"PONG", "NO NEW ASSETS", "INVALID OPERATION"})
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ChannelOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    ping_s: float = 10.0
    stale_after_s: float = 30.0  # a connection silent this long (not even a PONG) is down
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0


def market_subscription(assets: list[str]) -> str:
    return json.dumps({"type": "market", "assets_ids": assets, "initial_dump": True, "custom_feature_enabled": True})


def more_assets(assets: list[str]) -> str:
    """A market-channel request to follow these assets too, on a connection already subscribed."""
    return json.dumps({"operation": "subscribe", "assets_ids": assets})


def user_subscription(auth: dict[str, str]) -> str:
    return json.dumps({"type": "user", "auth": auth, "markets": []})


def _nothing(*_: object) -> None:
    return None


class Channel:
    """One WebSocket to ``url``, kept connected until cancelled; ``name`` says which in logs."""

    def __init__(self, url: str, name: str, log: logging.Logger, options: ChannelOptions = ChannelOptions(),
                 rng: random.Random | None = None) -> None:
        self.url = url
        self.name = name
        self.log = log
        self.options = options
        self.rng = rng or random.Random()
        self.connects = 0  # connections that came up (the PONG to their first PING arrived)
        self.frames = 0  # data frames received
        self._backoff = options.reconnect_initial_s

    async def run(self, subscription: Callable[[], str], on_frame: Callable[[str | bytes], str | None],
                  on_connected: Callable[[], None] = _nothing, on_down: Callable[[str], None] = _nothing) -> None:
        """Connect and reconnect for good. Each connection first sends ``subscription()``; ``on_frame`` gets each
        data frame and may return a text to send back on the same connection; ``on_down`` gets why a
        connection was lost ("silent", or the error)."""
        opts = self.options
        proxy = None if urlparse(self.url).hostname in LOOPBACK else True
        while True:
            why = "closed"
            try:
                async with connect(self.url, proxy=proxy, ping_interval=None, compression=None, max_size=None,
                                   open_timeout=10) as ws:
                    await self._session(ws, subscription(), on_frame, on_connected)
            except (TimeoutError, OSError, WebSocketException, InvalidHandshake, InvalidURI) as exc:
                why = "silent" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
            on_down(why)
            delay = self._backoff * (1 + self.rng.random() / 2)  # jitter: reconnecting clients do not stampede
            self.log.warning("%s down (%s); reconnecting in %.2fs", self.name, why, delay, extra={"url": self.url})
            await asyncio.sleep(delay)
            self._backoff = min(self._backoff * 2, opts.reconnect_max_s)

    async def _session(self, ws: ClientConnection, subscription: str, on_frame: Callable[[str | bytes], str | None],
                       on_connected: Callable[[], None]) -> None:
        await ws.send(subscription)
        await ws.send("PING")
        pinger = asyncio.create_task(self._ping(ws), name=f"{self.name} ping")
        try:
            up = False
            while True:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation that arrives as
                # recv completes (gh-86296), and the channel then never stops.
                async with asyncio.timeout(self.options.stale_after_s):
                    raw = await ws.recv()
                self._backoff = self.options.reconnect_initial_s  # the venue answers: a later loss starts afresh
                if raw == "PONG" and not up:
                    up = True
                    self.connects += 1
                    self.log.info("%s connected", self.name, extra={"url": self.url})
                    on_connected()
                elif raw not in TEXT_FRAMES:
                    self.frames += 1
                    if (reply := on_frame(raw)) is not None:
                        await ws.send(reply)
        finally:
            pinger.cancel()

    async def _ping(self, ws: ClientConnection) -> None:
        try:
            while True:
                await asyncio.sleep(self.options.ping_s)
                await ws.send("PING")
        except WebSocketException:
            return  # the connection is gone; the reader sees that and reconnects
