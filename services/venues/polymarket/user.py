"""The account's side of Polymarket: the user channel (our orders and trades as they happen), and the
conversion of its order and trade payloads (also what REST returns) into the venue-neutral types.

The feed authenticates with the API credentials, PINGs, and after every (re)connection waits for the
PONG to its first PING (the venue handles a connection's frames in order, so by then it has taken the
subscription) before telling the executor, which then reconciles over REST: nothing between the old
connection and the new one is missed.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal

import msgspec

from ..base import ZERO, OnEvents, VenueEvent, VenueFill, VenueOrder
from . import schema
from .ws import Channel, ChannelOptions, user_subscription


def _dec(parse: Callable[[str, str], Decimal], text: str | None, what: str) -> Decimal:
    """``text`` through ``parse`` (schema.price or quantity: ValueError if it is not one); absent or "" is 0."""
    return parse(text, what) if text else ZERO


def _ms(text: str | int | None) -> int:
    """A venue time as ms: it sends seconds in some places and ms in others, as strings or numbers; 0 when it is
    not a time (not an integer, or beyond what the bus carries)."""
    try:
        value = int(text or 0)
    except (TypeError, ValueError):
        return 0
    value = value * 1000 if 0 < value < 10**11 else value
    return value if 0 <= value < 2**63 else 0


def order_status(status: str | None, kind: str = "") -> str:
    """LIVE, MATCHED or CANCELED, from the venue's status text (a killed FOK's is "CANCELED_<why>")."""
    text = (status or "").upper()
    if kind == "CANCELLATION" or text.startswith("CANCEL"):
        return "CANCELED"
    if text.startswith("MATCHED"):
        return "MATCHED"
    return "LIVE"


def order_of(order: schema.OpenOrder | schema.WsOrder) -> VenueOrder:
    kind = getattr(order, "type", "")
    status = order_status(order.status, kind)
    reason = ""
    if status == "CANCELED":
        text = order.status or ""
        reason = text.split("_", 1)[1] if text.upper().startswith("CANCELED_") else "canceled at the venue"
    return VenueOrder(venue_order_id=order.id, token_id=order.asset_id, market=order.market, side=order.side,
                      price=_dec(schema.price, order.price, "price"),
                      size=_dec(schema.quantity, order.original_size, "original_size"),
                      matched=_dec(schema.quantity, order.size_matched, "size_matched"),
                      status=status, order_type=order.order_type or "GTC", reason=reason,
                      created_ms=_ms(order.created_at))


def fills_of(trade: schema.ClobTrade | schema.WsTrade, api_key: str, address: str) -> list[VenueFill]:
    """Our part in one trade: the taker order's whole fill, or each of our maker orders' matched amounts."""
    rate = _dec(schema.quantity, trade.fee_rate_bps, "fee_rate_bps") / 10_000
    if not 0 <= rate <= 1:
        raise ValueError(f"fee_rate_bps {trade.fee_rate_bps!r} is not between 0 and 10000")
    ts = _ms(trade.match_time) if trade.match_time.isdigit() else _ms(getattr(trade, "timestamp", 0))
    if trade.trader_side == "TAKER":
        return [VenueFill(trade_id=trade.id, venue_order_id=trade.taker_order_id, token_id=trade.asset_id,
                          market=trade.market, side=trade.side, price=_dec(schema.price, trade.price, "price"),
                          size=_dec(schema.quantity, trade.size, "size"),
                          liquidity="TAKER", fee_rate=rate, status=trade.status, ts_ms=ts)]
    ours = [mo for mo in trade.maker_orders
            if mo.owner == api_key or mo.maker_address.lower() == address.lower()]
    return [VenueFill(trade_id=trade.id, venue_order_id=mo.order_id, token_id=mo.asset_id, market=trade.market,
                      side=mo.side or ("SELL" if trade.side == "BUY" else "BUY"),
                      price=_dec(schema.price, mo.price, "maker_orders.price"),
                      size=_dec(schema.quantity, mo.matched_amount, "maker_orders.matched_amount"), liquidity="MAKER",
                      status=trade.status, ts_ms=ts)
            for mo in ours]


def events_of(raw: str | bytes, api_key: str, address: str) -> list[VenueEvent]:
    """One user-channel frame as venue events; raises msgspec/ValueError errors on a malformed frame."""
    out: list[VenueEvent] = []
    for msg in schema.decode_user_frame(raw):
        if isinstance(msg, schema.WsTrade):
            out += fills_of(msg, api_key, address)
        else:
            out.append(order_of(msg))
    return out


class UserFeed:
    """The user channel, kept connected (``ws.Channel``); its events go to ``on_events``."""

    def __init__(self, url: str, auth: dict[str, str], address: str, log: logging.Logger, ping_s: float = 10.0,
                 stale_after_s: float = 30.0, reconnect_initial_s: float = 0.5, reconnect_max_s: float = 30.0) -> None:
        self._auth = auth  # apiKey, secret, passphrase: sent to the venue, never logged
        self.address = address
        self.log = log
        self.channel = Channel(url, "user channel", log, ChannelOptions(
            ping_s=ping_s, stale_after_s=stale_after_s, reconnect_initial_s=reconnect_initial_s,
            reconnect_max_s=reconnect_max_s))
        self.bad_frames = 0

    @property
    def connects(self) -> int:
        """Connections that came up: subscribed, and the PONG to their first PING back."""
        return self.channel.connects

    async def run(self, on_events: OnEvents, on_connected: Callable[[], None]) -> None:
        """Connect and reconnect for good; ``on_connected`` once the venue has taken each subscription."""
        await self.channel.run(lambda: user_subscription(self._auth), lambda raw: self._frame(raw, on_events),
                               on_connected)

    def renew(self, auth: dict[str, str]) -> None:
        """New API credentials (the old ones were refused): the next connection subscribes with them."""
        self._auth = auth

    def _frame(self, raw: str | bytes, on_events: OnEvents) -> None:
        try:
            events = events_of(raw, self._auth["apiKey"], self.address)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            self.bad_frames += 1
            self.log.warning("skipping a user-channel frame: %s", exc)
            return
        if events:
            on_events(events)
