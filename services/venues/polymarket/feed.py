"""Polymarket's market data, turned into the mesh's messages: Gamma markets and market-channel frames.

Pure functions: the scanner feeds them what it receives and publishes what they return. Every message
made from one venue frame carries that frame's receive time as its origin, so its lag and its trace
start where the scanner saw it.
"""
from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from ... import messages as m
from . import schema

Prices = list[m.BookSnapshot | m.BookDelta | m.LastTrade]
Events = list[m.MarketNew | m.TickSizeChange | m.MarketResolved]


def _dec(parse: Callable[[str | float | int, str], Decimal], text: str | float | int | None, what: str,
         default: str | None = None) -> Decimal | None:
    """``text`` through ``parse`` (schema.price, quantity or number: ValueError if it is not one); absent or "" is
    ``default``."""
    if text is None or text == "":
        return Decimal(default) if default is not None else None
    return parse(text, what)


def _int(text: str | int | None) -> int:
    """A count or a time; 0 when it is not one (not an integer, or beyond what the bus carries)."""
    try:
        value = int(text or 0)
    except (TypeError, ValueError):
        return 0
    return value if 0 <= value < 2**63 else 0


def market_new(market: schema.GammaMarket, now_ns: int) -> m.MarketNew:
    """A Gamma market as the mesh's MarketNew."""
    tokens = market.parsed_clob_token_ids()
    names = market.parsed_outcomes()
    charged = market.fee_schedule is not None and market.fees_enabled
    fee = market.fee_schedule.rate if charged else 0
    exponent = market.fee_schedule.exponent if charged and market.fee_schedule.exponent else 1
    rebate = market.fee_schedule.rebate_rate if charged else 0
    return m.MarketNew(
        ts_ns=now_ns, market=market.condition_id, question=market.question, slug=market.slug,
        outcomes=[m.Outcome(token_id=t, name=n) for t, n in zip(tokens, names)],
        tick_size=_dec(schema.price, market.order_price_min_tick_size, "orderPriceMinTickSize", "0.01"),
        min_size=_dec(schema.quantity, market.order_min_size, "orderMinSize", "5"),
        neg_risk=bool(market.neg_risk), neg_risk_market_id=market.neg_risk_market_id or "",
        end_ts_ms=_end_ms(market.end_date), fee_rate=_dec(schema.price, fee, "feeSchedule.rate", "0"),
        fee_exponent=schema.fee_exponent(exponent, "feeSchedule.exponent"), accepting_orders=bool(market.accepting_orders) and not market.closed,
        volume=_dec(schema.number, market.volume_num, "volumeNum", "0"),
        liquidity=_dec(schema.number, market.liquidity_num, "liquidityNum", "0"),
        protocol="v2" if market.version == "v2" else "v1",
        rebate_rate=_dec(schema.price, rebate, "feeSchedule.rebateRate", "0"))


def _end_ms(iso: str | None) -> int:
    if not iso:
        return 0
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return 0


def _levels(levels: list[schema.BookLevel], best_first_descending: bool) -> list[m.Level]:
    out = [m.Level(schema.price(lv.price, "a level's price"), schema.quantity(lv.size, "a level's size"))
           for lv in levels]
    out.sort(key=lambda lv: lv.price, reverse=best_first_descending)
    return out


def normalize(messages: list[schema.MarketMessage], now_ns: int) -> tuple[Prices, Events]:
    """One venue frame's messages as mesh messages: all its books in one BookSnapshot, all its level
    changes in one BookDelta, then trades and lifecycle events in order."""
    books, changes, prices, events = [], [], [], []
    trace = m.new_id()
    for msg in messages:
        match msg:
            case schema.WsBook():
                books.append(m.Book(token_id=msg.asset_id, market=msg.market, bids=_levels(msg.bids, True),
                                    asks=_levels(msg.asks, False), venue_ts_ms=_int(msg.timestamp),
                                    hash=msg.hash or "", tick_size=_dec(schema.price, msg.tick_size, "tick_size")))
            case schema.WsPriceChange():
                for c in msg.price_changes:
                    changes.append(m.LevelChange(token_id=c.asset_id, market=msg.market, side=c.side,
                                                 price=schema.price(c.price, "price"),
                                                 size=schema.quantity(c.size, "size"),
                                                 best_bid=_dec(schema.price, c.best_bid, "best_bid"),
                                                 best_ask=_dec(schema.price, c.best_ask, "best_ask"),
                                                 venue_ts_ms=_int(msg.timestamp)))
            case schema.WsLastTradePrice():
                prices.append(m.LastTrade(ts_ns=now_ns, trace_id=trace, token_id=msg.asset_id, market=msg.market,
                                          price=schema.price(msg.price, "price"),
                                          size=_dec(schema.quantity, msg.size, "size", "0"),
                                          side=msg.side or "BUY", fee_rate_bps=_int(msg.fee_rate_bps),
                                          venue_ts_ms=_int(msg.timestamp)))
            case schema.WsTickSizeChange():
                events.append(m.TickSizeChange(ts_ns=now_ns, trace_id=trace, token_id=msg.asset_id,
                                               market=msg.market,
                                               old_tick_size=schema.price(msg.old_tick_size, "old_tick_size"),
                                               new_tick_size=schema.price(msg.new_tick_size, "new_tick_size")))
            case schema.WsMarketResolved():
                events.append(m.MarketResolved(ts_ns=now_ns, trace_id=trace, market=msg.market,
                                               winning_token_id=msg.winning_asset_id,
                                               winning_outcome=msg.winning_outcome))
            case schema.WsNewMarket():
                tokens = msg.clob_token_ids or msg.assets_ids
                events.append(m.MarketNew(ts_ns=now_ns, trace_id=trace, market=msg.condition_id or msg.market,
                                          question=msg.question, slug=msg.slug,
                                          outcomes=[m.Outcome(token_id=t, name=n) for t, n in zip(tokens, msg.outcomes)],
                                          tick_size=_dec(schema.price, msg.order_price_min_tick_size,
                                                         "order_price_min_tick_size", "0.01")))
    head: Prices = []
    if books:
        head.append(m.BookSnapshot(ts_ns=now_ns, trace_id=trace, books=books))
    if changes:
        head.append(m.BookDelta(ts_ns=now_ns, trace_id=trace, changes=changes))
    return head + prices, events
