"""The market and user WebSocket channels of the local venue, as Polymarket serves them.

Market channel (``/ws/market``): a client subscribes with
``{"type": "market", "assets_ids": [...], "initial_dump": true}``, gets an
array of ``book`` snapshots, then ``price_change`` (the new total at each
changed level, for the token and its complement), ``last_trade_price`` and
lifecycle messages (with ``custom_feature_enabled`` also ``best_bid_ask`` when a
top of book moves); ``{"operation": "subscribe"|"unsubscribe", ...}`` changes
the set later. User channel (``/ws/user``): ``{"type": "user", "auth": {...},
"markets": [...]}``, then ``order`` and ``trade`` messages for that account's
own orders. Both answer the text ``PING`` with ``PONG``.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from .app import VenueState, book_json, trade_json
from .engine import Order, Trade, fmt

QUEUE_LIMIT = 10_000  # frames waiting for one client; past it the client is too slow and is dropped

log = logging.getLogger("venue.ws")


@dataclass(eq=False)
class Client:
    ws: ServerConnection
    channel: str  # market or user
    assets: set[str] = field(default_factory=set)
    markets: set[str] = field(default_factory=set)  # user channel: condition ids (empty = all)
    owner: str = ""  # user channel: api key
    custom: bool = False  # market channel: custom_feature_enabled (best_bid_ask, new_market, market_resolved)
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))

    def push(self, payload: object) -> None:
        self.send(json.dumps(payload, separators=(",", ":")))

    def send(self, text: str) -> None:
        """Queue a text frame; a client too far behind is closed instead."""
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            log.warning("dropping a client that fell %d frames behind", QUEUE_LIMIT)
            self.close(1008, "client too slow")

    def close(self, code: int, reason: str) -> None:
        """Drop what is pending and close: the writer (waiting on this same queue) sees the close next."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait((code, reason))


def order_message(kind: str, order: Order, now_ms: int) -> dict:
    return {
        "event_type": "order", "type": kind, "id": order.id, "owner": order.owner, "order_owner": order.owner,
        "maker_address": order.address, "market": order.market.condition_id, "asset_id": order.token_id,
        "side": order.side, "price": fmt(order.price), "original_size": fmt(order.size),
        "size_matched": fmt(order.matched), "outcome": order.market.outcome_of(order.token_id),
        "order_type": order.order_type, "status": order.status, "associate_trades": list(order.trades) or None,
        "expiration": str(order.expiration), "created_at": str(order.created_ms // 1000),
        "timestamp": str(now_ms),
    }


def trade_message(trade: Trade, owner: str, now_ms: int) -> dict:
    body = trade_json(trade, owner)
    body.update(event_type="trade", type="TRADE", timestamp=str(now_ms), trade_owner=owner)
    return body


class Channels:
    def __init__(self, state: VenueState) -> None:
        self.state = state
        self.clients: set[Client] = set()
        self.published: dict[str, dict[str, dict[Decimal, Decimal]]] = {}  # token -> side -> price -> size
        self.tops: dict[str, tuple[str, str]] = {}  # token -> (best bid, best ask) as last published

    # ------------------------------------------------------------ connections

    async def serve(self, ws: ServerConnection) -> None:
        path = ws.request.path.split("?")[0].rstrip("/")
        channel = {"/ws/market": "market", "/ws/user": "user"}.get(path)
        if channel is None:
            await ws.close(1008, f"unknown channel {path}; use /ws/market or /ws/user")
            return
        client = Client(ws, channel)
        writer = asyncio.create_task(self._write(client))
        self.clients.add(client)
        try:
            async for frame in ws:
                if frame == "PING":
                    client.send("PONG")
                else:
                    self._on_message(client, frame)
        except ConnectionClosed:
            pass
        finally:
            self.clients.discard(client)
            writer.cancel()

    async def _write(self, client: Client) -> None:
        try:
            while True:
                frame = await client.queue.get()
                if isinstance(frame, tuple):
                    await client.ws.close(*frame)
                    return
                await client.ws.send(frame)
        except ConnectionClosed:
            return

    def _on_message(self, client: Client, frame: str | bytes) -> None:
        try:
            msg = json.loads(frame)
        except (json.JSONDecodeError, UnicodeDecodeError):
            client.send("INVALID OPERATION")
            return
        if not isinstance(msg, dict):
            client.send("INVALID OPERATION")
            return
        kind = str(msg.get("type", "")).lower()
        operation = str(msg.get("operation", "")).lower()
        if client.channel == "market" and (kind == "market" or operation in ("subscribe", "unsubscribe")):
            assets = [a for a in msg.get("assets_ids") or [] if a in self.state.engine.token_market]
            if operation == "unsubscribe":
                client.assets -= set(assets)
                return
            if kind == "market":
                client.custom = bool(msg.get("custom_feature_enabled"))
            new = [a for a in assets if a not in client.assets]
            client.assets |= set(new)
            if new and msg.get("initial_dump", True):
                client.push([{"event_type": "book", **book_json(self.state.engine, a)} for a in new])
            elif not new and kind == "market":
                client.send("NO NEW ASSETS")
        elif client.channel == "user" and kind == "user":
            auth = msg.get("auth") or {}
            creds = self.state.credentials.get(str(auth.get("apiKey", "")))
            if creds is None or auth.get("secret") != creds.secret or auth.get("passphrase") != creds.passphrase:
                client.close(1008, "Unauthorized/Invalid api key")
                return
            client.owner = creds.api_key
            client.markets = set(msg.get("markets") or [])
        elif client.channel == "user" and operation in ("subscribe", "unsubscribe") and client.owner:
            markets = set(msg.get("markets") or [])
            client.markets = client.markets - markets if operation == "unsubscribe" else client.markets | markets
        else:
            client.send("INVALID OPERATION")

    async def drop_all(self) -> int:
        """Close every connection (the admin endpoint uses it to test reconnects)."""
        clients = list(self.clients)
        await asyncio.gather(*(client.ws.close(1001, "going away") for client in clients))
        return len(clients)

    # ------------------------------------------------------------ publishing

    def after_change(self, tokens: Iterable[str]) -> int:
        """Publish what changed: book levels of these tokens' markets, then the engine's order and trade news.

        Returns how many level changes went out."""
        engine = self.state.engine
        now = engine.clock()
        # Sorted: a set's order changes from process to process, and so would the order of the frames.
        markets = sorted({engine.token_market[t].condition_id for t in tokens if t in engine.token_market})
        changed = sum(self._publish_levels(condition_id, now) for condition_id in markets)
        outbox, engine.outbox = engine.outbox, []
        for item in outbox:
            if item[0] == "trade":
                self._publish_trade(item[1], now)
            else:
                self._publish_order(item[1], item[2], now)
        return changed

    def _publish_levels(self, condition_id: str, now: int) -> int:
        engine = self.state.engine
        market = engine.markets[condition_id]
        changes, tops = [], []
        for token in market.tokens:
            bids, asks = engine.book_levels(token)
            current = {"BUY": dict(bids), "SELL": dict(asks)}
            before = self.published.get(token, {"BUY": {}, "SELL": {}})
            best_bid = fmt(bids[0][0]) if bids else "0"
            best_ask = fmt(asks[0][0]) if asks else "1"
            if self.tops.get(token) != (best_bid, best_ask):
                self.tops[token] = (best_bid, best_ask)
                tops.append({"event_type": "best_bid_ask", "market": condition_id, "asset_id": token,
                             "best_bid": best_bid, "best_ask": best_ask,
                             "spread": fmt(Decimal(best_ask) - Decimal(best_bid)), "timestamp": str(now)})
            for side in ("BUY", "SELL"):
                for price in sorted(set(current[side]) | set(before[side])):
                    size = current[side].get(price, Decimal(0))
                    if size != before[side].get(price, Decimal(0)):
                        changes.append({"asset_id": token, "price": fmt(price), "size": fmt(size), "side": side,
                                        "hash": "", "best_bid": best_bid, "best_ask": best_ask})
            self.published[token] = current
        if not changes:
            return 0
        hashes = {t: book_json(engine, t)["hash"] for t in market.tokens}
        for change in changes:
            change["hash"] = hashes[change["asset_id"]]
        message = {"event_type": "price_change", "market": condition_id, "timestamp": str(now),
                   "price_changes": changes}
        for client in self.clients:
            if client.channel == "market" and client.assets & set(market.tokens):
                client.push({**message, "price_changes": [c for c in changes if c["asset_id"] in client.assets]})
        # With custom features, a change at the top of a book also goes out on its own (after the levels).
        for top in tops:
            for client in self.clients:
                if client.channel == "market" and client.custom and top["asset_id"] in client.assets:
                    client.push(top)
        return len(changes)

    def publish_news(self, news) -> None:
        """Lifecycle messages from the living markets: tick size changes, resolutions, listings."""
        now = str(self.state.engine.clock())
        for market, token, old, new in news.tick_changes:
            message = {"event_type": "tick_size_change", "market": market.condition_id, "asset_id": token,
                       "old_tick_size": fmt(old), "new_tick_size": fmt(new), "timestamp": now}
            for client in self.clients:
                if client.channel == "market" and token in client.assets:
                    client.push(message)
        for market in news.resolved:
            message = {"event_type": "market_resolved", "id": market.market_id, "market": market.condition_id,
                       "assets_ids": list(market.tokens), "winning_asset_id": market.winner,
                       "winning_outcome": market.outcome_of(market.winner), "timestamp": now}
            for client in self.clients:
                if client.channel == "market" and client.custom and client.assets & set(market.tokens):
                    client.push(message)
        for market in news.listed:
            message = {"event_type": "new_market", "id": market.market_id, "question": market.question,
                       "market": market.condition_id, "condition_id": market.condition_id, "slug": market.slug,
                       "description": market.description, "assets_ids": list(market.tokens),
                       "clob_token_ids": list(market.tokens), "outcomes": list(market.outcomes), "active": True,
                       "order_price_min_tick_size": fmt(market.tick), "timestamp": now}
            for client in self.clients:
                if client.channel == "market" and client.custom:
                    client.push(message)

    def remember(self, tokens: Iterable[str]) -> None:
        """Take the current levels as already published (at start, before anyone listens)."""
        engine = self.state.engine
        for token in tokens:
            bids, asks = engine.book_levels(token)
            self.published[token] = {"BUY": dict(bids), "SELL": dict(asks)}
            self.tops[token] = (fmt(bids[0][0]) if bids else "0", fmt(asks[0][0]) if asks else "1")

    def _publish_trade(self, trade: Trade, now: int) -> None:
        if trade.status == "MATCHED":
            tick = {"event_type": "last_trade_price", "market": trade.market.condition_id,
                    "asset_id": trade.taker.token_id, "price": fmt(trade.price), "size": fmt(trade.size),
                    "side": trade.taker.side, "fee_rate_bps": str(int(trade.market.fee_rate * 10_000)),
                    "timestamp": str(now), "transaction_hash": trade.transaction_hash}
            for client in self.clients:
                if client.channel == "market" and trade.taker.token_id in client.assets:
                    client.push(tick)
        for owner in {trade.taker.owner, trade.maker.order.owner}:
            for client in self._users(owner, trade.market.condition_id):
                client.push(trade_message(trade, owner, now))

    def _publish_order(self, kind: str, order: Order, now: int) -> None:
        for client in self._users(order.owner, order.market.condition_id):
            client.push(order_message(kind, order, now))

    def _users(self, owner: str, condition_id: str) -> list[Client]:
        return [c for c in self.clients if c.channel == "user" and c.owner == owner
                and (not c.markets or condition_id in c.markets)]
