"""Seeded markets for the local venue, and how Gamma and the CLOB describe them on the wire."""
from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import dataclass
from decimal import Decimal

from .engine import ONE, UNLIMITED, Engine, Market, fmt

TICKS = (Decimal("0.01"), Decimal("0.01"), Decimal("0.01"), Decimal("0.001"))
# Polymarket's fee schedule per category (feeSchedule in Gamma): taker rate, exponent, maker rebate share.
# Rates from the venue's docs and captures (crypto 0.07, sports 0.03, ...); every capture has exponent 1.
# Rebate shares from the Maker Rebates Program page: crypto 20 %, the other fee-charging categories 25 %.
FEE_SCHEDULES = {
    "crypto": (Decimal("0.07"), ONE, Decimal("0.2")),
    "sports": (Decimal("0.03"), ONE, Decimal("0.25")),
    "politics": (Decimal("0.04"), ONE, Decimal("0.25")),
    "finance": (Decimal("0.04"), ONE, Decimal("0.25")),
    "tech": (Decimal("0.04"), ONE, Decimal("0.25")),
    "economics": (Decimal("0.05"), ONE, Decimal("0.25")),
    "culture": (Decimal("0.05"), ONE, Decimal("0.25")),
    "weather": (Decimal("0.05"), ONE, Decimal("0.25")),
    "geopolitics": (Decimal(0), ONE, Decimal(0)),
}
SUBJECTS = {
    "politics": ["the incumbent win re-election", "the bill pass the Senate", "turnout exceed 60%",
                 "the party hold the House", "the treaty be ratified"],
    "sports": ["the home team win the final", "the champion defend the title", "the match go to overtime",
               "the record be broken this season", "the underdog reach the semifinal"],
    "crypto": ["BTC close above $150k", "ETH flip $10k", "SOL trade above $500", "a spot ETF launch",
               "stablecoin supply pass $400B"],
    "culture": ["the film gross $1B", "the album top the chart", "the show be renewed",
                "the festival sell out", "the book win the prize"],
    "finance": ["the S&P 500 close the year higher", "the bank beat earnings", "gold trade above $3k"],
    "tech": ["the phone launch in September", "the model top the leaderboard", "the merger close"],
    "economics": ["the Fed cut rates in June", "CPI come in below 3%", "unemployment rise above 5%"],
    "weather": ["the city see snow in May", "the hurricane make landfall", "July set a heat record"],
    "geopolitics": ["the ceasefire hold", "the summit take place", "the sanctions be lifted"],
}
CANDIDATES = ["Avery", "Blake", "Casey", "Devon", "Emerson", "Finley", "Harper", "Jordan"]


def _hex(seed: int, *parts: object) -> str:
    return "0x" + hashlib.sha256(":".join(map(str, (seed, *parts))).encode()).hexdigest()


def _token(seed: int, *parts: object) -> str:
    return str(int(hashlib.sha256(":".join(map(str, ("token", seed, *parts))).encode()).hexdigest(), 16))


# The modules of protocol-v2 position ids, their top byte (polymarket-client `_internal/protocol.py`; WALLETS.md §3).
BINARY_MODULE, NEG_RISK_MODULE = 1, 2


def _position_market(seed: int, i: int) -> str:
    """A protocol-v2 binary market's 31-byte structural id (62 hex digits): module 1 (binary) in the top byte, and
    zeros where its position ids keep reserved bits 40-103 -- how the unified SDK tells a position id from a token
    id (polymarket-client `_internal/protocol.py`)."""
    h = hashlib.sha256(f"v2-market:{seed}:{i}".encode()).hexdigest()
    return f"{BINARY_MODULE:02x}" + h[:36] + "0" * 16 + h[36:44]


def _onchain_event_id(seed: int, event: int) -> str:
    """A protocol-v2 neg-risk event's on-chain id: 32 bytes, module 2 on top, the position ids' reserved bits zero,
    and the bottom three bytes zero, as polymarket-client's Gamma model requires of `onchainEventId`
    (models/gamma/market.py): they hold a member's index (two bytes) and an outcome (one) in its position ids."""
    h = hashlib.sha256(f"v2-neg-risk:{seed}:{event}".encode()).hexdigest()
    return f"0x{NEG_RISK_MODULE:02x}" + h[:36] + "0" * 16 + h[36:40] + "000000"


def _neg_risk_position_market(onchain_event_id: str, member: int) -> str:
    """A neg-risk member's 31-byte structural id: its event's on-chain id with the member's index in the two bytes
    above the outcome byte (numbered from 1 here, so no member's condition id is the event's own id; the real
    numbering is not on record)."""
    return onchain_event_id[2:-6] + f"{member + 1:04x}"


def is_v2_position_id(asset_id: str) -> bool:
    """Whether an asset id is a protocol-v2 position id, as the unified SDK decides it."""
    return asset_id.isdigit() and int(asset_id) < 2**256 and int(asset_id) & (((1 << 64) - 1) << 40) == 0


@dataclass
class Event:
    id: str
    slug: str
    title: str
    markets: list[Market]
    neg_risk_market_id: str
    description: str = ""
    start_ms: int = 0
    protocol: str = "v1"  # Gamma's `version`: a "v2" event's markets are protocol-v2 neg-risk members


@dataclass
class Universe:
    markets: list[Market]
    events: list[Event]
    fair: dict[str, Decimal]  # condition id -> fair YES price the house quotes around


def schedule(market: Market, category: str) -> Market:
    """``market`` with ``category``'s fee schedule."""
    market.category = category
    market.fee_rate, market.fee_exponent, market.rebate_rate = FEE_SCHEDULES[category]
    return market


def generate(seed: int, binary: int = 20, events: int = 3, outcomes: int = 4, now_ms: int | None = None,
             v2: int = 0, v2_events: int = 0) -> Universe:
    """The same seed gives the same markets, ids and prices; ``v2`` protocol-v2 binary markets, then ``v2_events``
    protocol-v2 neg-risk events of ``outcomes`` markets each, come last."""
    rng = random.Random(seed)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    markets, evs, fair = [], [], {}
    categories = sorted(SUBJECTS)
    for i in range(binary):
        category = categories[i % len(categories)]
        subject = SUBJECTS[category][(i // len(categories)) % len(SUBJECTS[category])]
        tick = rng.choice(TICKS)
        market = Market(
            condition_id=_hex(seed, "market", i), question=f"Will {subject} (#{i + 1})?",
            slug=f"{subject.lower().replace(' ', '-').replace('$', '').replace('%', 'pct')}-{i + 1}",
            tokens=(_token(seed, i, "yes"), _token(seed, i, "no")), tick=tick, end_ms=now_ms + rng.randint(2, 120) * 86_400_000,
            market_id=str(500_000 + i), description=f"Resolves Yes if {subject}. Local venue market, seed {seed}.",
            start_ms=now_ms)
        markets.append(schedule(market, category))
        fair[market.condition_id] = (Decimal(rng.randint(10, 90)) / 100).quantize(tick)
    for e in range(events):
        neg_id = _hex(seed, "event", e)
        names = CANDIDATES[:outcomes]
        weights = [rng.random() + 0.2 for _ in names]
        total = sum(weights)
        members = []
        for j, name in enumerate(names):
            market = Market(
                condition_id=_hex(seed, "event", e, j), question=f"Will {name} win contest {e + 1}?",
                slug=f"{name.lower()}-wins-contest-{e + 1}", tokens=(_token(seed, "e", e, j, "yes"),
                                                                     _token(seed, "e", e, j, "no")),
                tick=Decimal("0.01"), neg_risk=True, neg_risk_market_id=neg_id,
                event_id=str(90_000 + e), end_ms=now_ms + 60 * 86_400_000, market_id=str(600_000 + e * 10 + j),
                start_ms=now_ms, group_item_title=name,
                description=f"Resolves Yes if {name} wins contest {e + 1}; exactly one outcome resolves Yes.")
            members.append(schedule(market, "politics"))
            price = Decimal(weights[j] / total).quantize(Decimal("0.01"))
            fair[market.condition_id] = min(max(price, Decimal("0.02")), Decimal("0.98"))
        markets.extend(members)
        evs.append(Event(id=str(90_000 + e), slug=f"contest-{e + 1}", title=f"Who will win contest {e + 1}?",
                         markets=members, neg_risk_market_id=neg_id, start_ms=now_ms,
                         description=f"Exactly one of {', '.join(names)} wins contest {e + 1}."))
    for k in range(v2):
        # Gamma `version: "v2"`: the outcomes are position ids (structural id ‖ outcome index), the condition id is
        # the structural id padded to 32 bytes, as the unified SDK pads it; orders are signed for exchange V3.
        category = categories[k % len(categories)]
        subject = SUBJECTS[category][-1 - k // len(categories) % len(SUBJECTS[category])]
        structural = _position_market(seed, k)
        tick = rng.choice(TICKS)
        market = Market(
            condition_id="0x" + structural + "00", question=f"Will {subject} (v2 #{k + 1})?",
            slug=f"{subject.lower().replace(' ', '-').replace('$', '').replace('%', 'pct')}-v2-{k + 1}",
            tokens=(str(int(structural + "00", 16)), str(int(structural + "01", 16))), tick=tick,
            end_ms=now_ms + rng.randint(2, 120) * 86_400_000, market_id=str(800_000 + k), start_ms=now_ms,
            description=f"Resolves Yes if {subject}. Local venue protocol-v2 market, seed {seed}.", protocol="v2")
        markets.append(schedule(market, category))
        fair[market.condition_id] = (Decimal(rng.randint(10, 90)) / 100).quantize(tick)
    for e in range(v2_events):
        # A neg-risk event on protocol v2: each member's outcomes are position ids of the neg-risk module, signed for
        # exchange V3 like any protocol-v2 position (there is no neg-risk V3 exchange). Gamma ties the members
        # together by the event's on-chain id (`onchainEventId`, also given as negRiskMarketID here).
        onchain_id = _onchain_event_id(seed, e)
        names = CANDIDATES[:outcomes]
        weights = [rng.random() + 0.2 for _ in names]
        members = []
        for j, name in enumerate(names):
            structural = _neg_risk_position_market(onchain_id, j)
            market = Market(
                condition_id="0x" + structural + "00", question=f"Will {name} win v2 contest {e + 1}?",
                slug=f"{name.lower()}-wins-v2-contest-{e + 1}",
                tokens=(str(int(structural + "00", 16)), str(int(structural + "01", 16))),
                tick=Decimal("0.01"), neg_risk=True, neg_risk_market_id=onchain_id, event_id=str(95_000 + e),
                end_ms=now_ms + 60 * 86_400_000, market_id=str(850_000 + e * 10 + j), start_ms=now_ms,
                group_item_title=name, protocol="v2",
                description=f"Resolves Yes if {name} wins v2 contest {e + 1}; exactly one outcome resolves Yes.")
            members.append(schedule(market, "politics"))
            price = Decimal(weights[j] / sum(weights)).quantize(Decimal("0.01"))
            fair[market.condition_id] = min(max(price, Decimal("0.02")), Decimal("0.98"))
        markets.extend(members)
        evs.append(Event(id=str(95_000 + e), slug=f"v2-contest-{e + 1}", title=f"Who will win v2 contest {e + 1}?",
                         markets=members, neg_risk_market_id=onchain_id, start_ms=now_ms, protocol="v2",
                         description=f"Exactly one of {', '.join(names)} wins v2 contest {e + 1}."))
    return Universe(markets=markets, events=evs, fair=fair)


def seed_liquidity(engine: Engine, universe: Universe, house: str, seed: int, levels: int = 5) -> None:
    """The house account quotes both sides of every market around its fair price."""
    rng = random.Random(seed + 1)
    engine.fund(house, collateral=Decimal(10) ** 9)
    engine.approve(house, collateral=UNLIMITED, conditional=True)
    for market in universe.markets:
        yes, no = market.tokens
        engine.fund(house, shares={yes: Decimal(10) ** 7, no: Decimal(10) ** 7})
        fair = universe.fair[market.condition_id]
        for k in range(1, levels + 1):
            for side, price in (("BUY", fair - market.tick * k), ("SELL", fair + market.tick * k)):
                if not market.tick <= price <= ONE - market.tick:
                    continue
                size = Decimal(rng.randint(20, 400))
                engine.place(order_id=_hex(seed, "house", market.condition_id, side, k), owner="house",
                             address=house, token_id=yes, side=side, price=price, size=size)


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def _question_id(market: Market) -> str:
    return "0x" + hashlib.sha256(f"question:{market.condition_id}".encode()).hexdigest()


def _fee_type(market: Market) -> str | None:
    return f"{market.category}_fees" if market.category and market.fee_rate else None


def _num(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def fee_schedule(market: Market) -> dict:
    """Gamma's ``feeSchedule``, as the captured markets write it."""
    return {"exponent": _num(market.fee_exponent), "rate": float(market.fee_rate), "takerOnly": True,
            "rebateRate": float(market.rebate_rate)}


def _event_stub(event: Event) -> dict:
    """An event as Gamma nests it inside each of its markets."""
    closed = all(m.closed for m in event.markets)
    return {"id": event.id, "ticker": event.slug, "slug": event.slug, "title": event.title,
            "description": event.description, "resolutionSource": "", "startDate": _iso(event.start_ms),
            "startTime": _iso(max(m.end_ms for m in event.markets)), "endDate": _iso(max(m.end_ms for m in event.markets)),
            "active": not closed, "closed": closed, "archived": False, "negRisk": True, "enableNegRisk": True,
            "negRiskAugmented": False, "enableOrderBook": True, "negRiskMarketID": event.neg_risk_market_id,
            "version": event.protocol}


def outcome_prices(engine: Engine, market: Market) -> list[Decimal]:
    """Each outcome's price as Gamma's ``outcomePrices`` and the CLOB's token ``price`` give it: the YES book's
    midpoint (0.5 each while a side is empty), and 1 and 0 once the market has resolved."""
    if market.winner:
        return [ONE if t == market.winner else Decimal(0) for t in market.tokens]
    bid, ask = engine.best(market.tokens[0])
    if bid is None or ask is None:
        return [Decimal("0.5"), Decimal("0.5")]
    mid = (bid + ask) / 2
    return [mid, ONE - mid]


def gamma_market(engine: Engine, market: Market, events: dict[str, Event]) -> dict:
    """A market as Gamma writes it: camelCase, lists as JSON-encoded strings."""
    yes = market.tokens[0]
    bid, ask = engine.best(yes)
    last = engine.last_trade.get(yes)
    prices = outcome_prices(engine, market)
    event = events.get(market.event_id)
    bids, asks = engine.book_levels(yes)
    out = {
        "id": market.market_id,
        "question": market.question,
        "conditionId": market.condition_id,
        "questionID": _question_id(market),
        "slug": market.slug,
        "description": market.description,
        "resolutionSource": "",
        "startDate": _iso(market.start_ms),
        "startDateIso": _iso(market.start_ms)[:10],
        "endDate": _iso(market.end_ms),
        "endDateIso": _iso(market.end_ms)[:10],
        "outcomes": json.dumps(list(market.outcomes)),
        "outcomePrices": json.dumps([fmt(p) for p in prices]),
        "clobTokenIds": json.dumps(list(market.tokens)),
        "active": market.active,
        "closed": market.closed,
        "archived": False,
        "acceptingOrders": market.accepting_orders,
        "acceptingOrdersTimestamp": _iso(market.start_ms),
        "enableOrderBook": True,
        "orderPriceMinTickSize": float(market.tick),
        "orderMinSize": float(market.min_size) if market.min_size % 1 else int(market.min_size),
        "negRisk": market.neg_risk,
        "negRiskMarketID": market.neg_risk_market_id,
        "negRiskRequestID": _question_id(market) if market.neg_risk else "",
        "groupItemTitle": market.group_item_title,
        "bestBid": float(bid) if bid is not None else None,
        "bestAsk": float(ask) if ask is not None else None,
        "spread": float(ask - bid) if bid is not None and ask is not None else None,
        "lastTradePrice": float(last[0]) if last else 0,
        "volumeNum": float(engine.volume.get(market.condition_id, Decimal(0))),
        "liquidityNum": float(sum(p * s for p, s in bids + asks)),
        "makerBaseFee": 0,
        "takerBaseFee": int(market.fee_rate * 10_000),
        "feesEnabled": market.fee_rate > 0,
        "feeType": _fee_type(market),
        "feeSchedule": fee_schedule(market),
        "version": market.protocol,
    }
    if market.protocol == "v2":
        # What polymarket-client's Gamma model reads of a protocol-v2 market (models/gamma/market.py): the outcomes'
        # position ids (`positionIds`, deprecated there but still read), the v2 resolution state, the oracle request
        # (the condition, or for a neg-risk member its parent event) and the parent event's on-chain id.
        out["positionIds"] = json.dumps(list(market.tokens))
        out["resolutionStatus"] = "resolved" if market.winner else "active"
        out["requestId"] = market.neg_risk_market_id if market.neg_risk else market.condition_id
        if market.neg_risk:
            out["onchainEventId"] = market.neg_risk_market_id
    if event is not None:
        out["events"] = [_event_stub(event)]
    return out


def gamma_event(engine: Engine, event: Event, events: dict[str, Event]) -> dict:
    return {**_event_stub(event), "tags": [{"id": "1", "label": "Local venue", "slug": "local-venue"}],
            "markets": [gamma_market(engine, m, events) for m in event.markets]}


def clob_market(engine: Engine, market: Market) -> dict:
    """A market as the CLOB's /markets writes it."""
    return {
        "enable_order_book": True, "active": market.active, "closed": market.closed, "archived": False,
        "accepting_orders": market.accepting_orders, "minimum_order_size": float(market.min_size),
        "minimum_tick_size": float(market.tick), "condition_id": market.condition_id,
        "question_id": _question_id(market), "question": market.question,
        "description": market.description, "market_slug": market.slug, "end_date_iso": _iso(market.end_ms),
        "neg_risk": market.neg_risk, "neg_risk_market_id": market.neg_risk_market_id,
        "taker_base_fee": int(market.fee_rate * 10_000), "maker_base_fee": 0,
        "accepting_order_timestamp": _iso(market.start_ms), "game_start_time": None, "seconds_delay": 0,
        "neg_risk_request_id": _question_id(market) if market.neg_risk else "", "is_50_50_outcome": False,
        "tags": ["Local venue"],
        "rewards": {"rates": None, "min_size": 0, "max_spread": 0},  # no liquidity reward program here
        "tokens": [{"token_id": t, "outcome": o, "price": float(p), "winner": t == market.winner}
                   for t, o, p in zip(market.tokens, market.outcomes, outcome_prices(engine, market))],
    }


def simplified_market(engine: Engine, market: Market) -> dict:
    """A market as the CLOB's /simplified-markets writes it: the tradable essentials only."""
    full = clob_market(engine, market)
    return {"condition_id": market.condition_id, "tokens": full["tokens"], "rewards": full["rewards"],
            "active": market.active, "closed": market.closed, "archived": False,
            "accepting_orders": market.accepting_orders}


def clob_market_info(market: Market) -> dict:
    """The compact /clob-markets/{condition_id} answer the client caches tick, neg risk and fees from."""
    return {"c": market.condition_id, "t": [{"t": t, "o": o} for t, o in zip(market.tokens, market.outcomes)],
            "mts": float(market.tick), "mos": float(market.min_size), "nr": market.neg_risk,
            "fd": {"r": float(market.fee_rate), "e": _num(market.fee_exponent), "to": True}}
