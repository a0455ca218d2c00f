"""Fees and maker rebates: the formula against captured fills, per-category schedules, what Gamma serves and the
scanner reads, and a real venue process charging takers and paying makers back."""
from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path

import httpx
import msgspec
import pytest
from py_clob_client_v2.clob_types import AssetType, BalanceAllowanceParams, OrderArgsV2, TradeParams

from polybot_venue import engine as venue_engine
from polybot_venue.engine import UNLIMITED, Engine, Market, taker_fee
from polybot_venue.markets import FEE_SCHEDULES, clob_market_info, fee_schedule, gamma_market, generate, schedule
from services.opportunities import set_edge
from services.venues import base
from services.venues.polymarket import feed, schema

from .venue_harness import Venue, tokens

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "polymarket"
FILLS = json.loads((FIXTURES / "chain_order_filled_taker_fees.json").read_text())
SEED = 29


def shares_of(fill: dict) -> D:
    return D(fill["taker_amount_filled" if fill["side"] == "BUY" else "maker_amount_filled"]) / 10**6


def test_the_venue_and_the_mesh_compute_every_captured_fill_to_the_micro_unit_with_one_formula() -> None:
    for fill in FILLS:
        expected = D(fill["fee"]) / 10**6
        for fee in (taker_fee, base.taker_fee):
            assert fee(shares_of(fill), D(fill["price"]), D(fill["fee_rate"]), D(1)) == expected, fill


@pytest.mark.parametrize("rate, exponent", [("0.07", "1"), ("0.03", "1"), ("0.05", "2"), ("0.04", "0.5"), ("0", "1")])
def test_the_fee_is_shares_times_rate_times_the_curve_to_the_exponent_floored_to_five_places(rate, exponent) -> None:
    for shares, price in ((D("7.575758"), D("0.66")), (D("21.13"), D("0.7")), (D(100), D("0.5")), (D(5), D("0.971"))):
        exact = shares * D(rate) * (price * (1 - price)) ** D(exponent)
        fee = taker_fee(shares, price, D(rate), D(exponent))
        assert fee == base.taker_fee(shares, price, D(rate), D(exponent))
        assert fee == exact.quantize(D("0.00001"), rounding="ROUND_FLOOR") and 0 <= exact - fee < D("0.00001")


def test_seeded_markets_carry_their_categorys_schedule_the_same_for_the_same_seed() -> None:
    universe = generate(SEED, now_ms=0)
    assert [(m.category, m.fee_rate, m.fee_exponent, m.rebate_rate) for m in universe.markets] == \
        [(m.category, m.fee_rate, m.fee_exponent, m.rebate_rate) for m in generate(SEED, now_ms=0).markets]
    assert {m.category for m in universe.markets} == set(FEE_SCHEDULES)
    rates = {m.category: m.fee_rate for m in universe.markets}
    assert rates == {"crypto": D("0.07"), "sports": D("0.03"), "politics": D("0.04"), "finance": D("0.04"),
                     "tech": D("0.04"), "economics": D("0.05"), "culture": D("0.05"), "weather": D("0.05"),
                     "geopolitics": D(0)}
    assert all(m.rebate_rate == (D("0.2") if m.category == "crypto" else D(0) if not m.fee_rate else D("0.25"))
               for m in universe.markets)


def stock(engine: Engine, who: str, collateral: D, shares: dict[str, D] | None = None) -> None:
    """Deposit into ``who``'s wallet and approve every exchange without limit, as its owner would on chain."""
    engine.fund(who, collateral, shares)
    engine.approve(who, collateral=UNLIMITED, conditional=True)


def fee_world(rate: str, exponent: str = "1", rebate: str = "0.25") -> tuple[Engine, Market]:
    market = Market(condition_id="0xc", question="q", slug="q", tokens=("yes", "no"), fee_rate=D(rate),
                    fee_exponent=D(exponent), rebate_rate=D(rebate))
    engine = Engine([market], lambda: 1_800_000_000_000)  # 2027-01-15 UTC
    for who in ("maker", "taker"):
        stock(engine, who, D(1000), {"yes": D(100), "no": D(100)})
    return engine, market


@pytest.mark.parametrize("rate, exponent", [("0.04", "1"), ("0.05", "2")])
def test_takers_pay_the_fee_makers_pay_nothing_and_accrue_the_rebate_rate_times_it(rate, exponent) -> None:
    engine, market = fee_world(rate, exponent)
    engine.place(order_id="m", owner="maker", address="maker", token_id="yes", side="BUY", price=D("0.4"), size=D(30))
    result = engine.place(order_id="t", owner="taker", address="taker", token_id="yes", side="SELL", price=D("0.4"),
                          size=D(30))
    trade, = result.trades
    fee = taker_fee(D(30), D("0.4"), D(rate), D(exponent))
    assert trade.fee == fee > 0
    assert engine.account("taker").collateral == 1000 + 30 * D("0.4") - fee
    assert engine.account("maker").collateral == 1000 - 30 * D("0.4")
    assert engine.rebated("2027-01-15", "maker") == [("0xc", (fee * D("0.25")).quantize(D("0.000001"), "ROUND_FLOOR"))]
    assert engine.rebated("2027-01-15", "taker") == []


def test_rebates_are_paid_to_the_maker_from_the_fees_after_the_day_ends_once_they_reach_a_dollar() -> None:
    clock = [1_800_000_000_000]
    market = Market(condition_id="0xc", question="q", slug="q", tokens=("yes", "no"), fee_rate=D("0.07"),
                    rebate_rate=D("0.2"))
    engine = Engine([market], lambda: clock[0])
    stock(engine, "maker", D(10_000))
    stock(engine, "taker", D(0), {"yes": D(1000)})
    engine.place(order_id="m", owner="maker", address="maker", token_id="yes", side="BUY", price=D("0.5"), size=D(400))
    engine.place(order_id="t", owner="taker", address="taker", token_id="yes", side="SELL", price=D("0.5"), size=D(400))
    rebate = taker_fee(D(400), D("0.5"), D("0.07")) * D("0.2")  # 7 x 0.2 = 1.4
    before = engine.account("maker").collateral
    engine.tick()
    assert engine.account("maker").collateral == before  # the day is not over
    clock[0] += 86_400_000
    engine.tick()
    assert engine.account("maker").collateral == before + rebate
    assert engine.account("fees").collateral == D(7) - rebate
    assert engine.rebated("2027-01-15", "maker") == [("0xc", rebate)]  # still reported once paid


def test_a_geopolitics_market_charges_nothing_and_accrues_no_rebate() -> None:
    market = next(m for m in generate(SEED, now_ms=0).markets if m.category == "geopolitics")
    engine = Engine([market], lambda: 1_800_000_000_000)
    yes = market.tokens[0]
    stock(engine, "maker", D(1000))
    stock(engine, "taker", D(0), {yes: D(100)})
    engine.place(order_id="m", owner="maker", address="maker", token_id=yes, side="BUY", price=D("0.5"), size=D(50))
    trade, = engine.place(order_id="t", owner="taker", address="taker", token_id=yes, side="SELL", price=D("0.5"),
                          size=D(50)).trades
    assert trade.fee == 0 and engine.account("taker").collateral == 25 and engine.rebates == {}
    assert gamma_market(engine, market, {})["feesEnabled"] is False


@pytest.mark.parametrize("category, exponent", [("crypto", "1"), ("sports", "1"), ("geopolitics", "1"),
                                                ("economics", "2")])
def test_gamma_carries_the_fee_schedule_and_the_scanner_reads_the_right_fee_figures(category, exponent) -> None:
    market = schedule(next(m for m in generate(SEED, now_ms=0).markets), category)
    market.fee_exponent = D(exponent)
    engine = Engine([market], lambda: 0)
    wire = json.loads(json.dumps(gamma_market(engine, market, {})))
    rate, _, rebate = FEE_SCHEDULES[category]
    assert wire["feeSchedule"] == {"exponent": int(exponent), "rate": float(rate), "takerOnly": True,
                                   "rebateRate": float(rebate)} == fee_schedule(market)
    assert wire["feesEnabled"] is (rate > 0) and wire["feeType"] == (f"{category}_fees" if rate else None)
    new = feed.market_new(msgspec.convert(wire, schema.GammaMarket), 0)
    assert (new.fee_rate, new.fee_exponent) == (rate, D(exponent))
    rules = base.rules_from(new)[market.tokens[0]]
    assert (rules.fee_rate, rules.fee_exponent) == (rate, D(exponent))
    info = msgspec.convert(clob_market_info(market), schema.ClobMarketInfo)
    assert (D(str(info.fee.rate)), D(str(info.fee.exponent))) == (rate, D(exponent))
    p = D("0.3")
    assert set_edge("BUY", [(p, rate, D(exponent))]) == 1 - p - base.fee_per_share(p, rate, D(exponent))
    assert base.fee_per_share(p, rate, D(exponent)) == venue_engine.fee_per_share(p, rate, D(exponent))


@pytest.fixture(scope="module")
def venue(tmp_path_factory) -> Iterator[Venue]:
    venue = Venue(Path(os.path.realpath(tmp_path_factory.mktemp("venue"))) / "s", SEED)
    yield venue
    venue.stop()


def collateral(client) -> D:
    answer = client.get_balance_allowance(BalanceAllowanceParams(asset_type=AssetType.COLLATERAL))
    return D(answer["balance"]) / 10**6


def test_the_venue_charges_the_taker_reports_the_makers_rebate_and_pays_it_on_request(venue: Venue) -> None:
    market = next(m for m in venue.markets if m["feesEnabled"] and m["feeSchedule"]["rate"] == 0.07)
    rate, rebate_rate = D(str(market["feeSchedule"]["rate"])), D(str(market["feeSchedule"]["rebateRate"]))
    yes, no = tokens(market)
    maker, taker = venue.client(), venue.client()
    bid = D(maker.get_order_book(yes)["bids"][-1]["price"])
    price = bid + D("0.01")  # inside the spread: rests, and the taker meets it first
    maker.create_and_post_order(OrderArgsV2(token_id=yes, price=float(price), size=40, side="BUY"))
    start = collateral(taker)
    # Buying NO at 1 - price meets the YES bid (a pair is minted); the taker pays the fee at its own price.
    filled = taker.create_and_post_order(OrderArgsV2(token_id=no, price=float(1 - price), size=40, side="BUY"))
    assert filled["status"] == "matched"
    fee = taker_fee(D(40), 1 - price, rate)
    trade, = [t for t in taker.get_trades(TradeParams(market=market["conditionId"])) if t["trader_side"] == "TAKER"]
    assert trade["fee_rate_bps"] == str(int(rate * 10_000)) and trade["maker_orders"][0]["fee_rate_bps"] == "0"
    assert collateral(taker) == start - 40 * (1 - price) - fee
    day = time.strftime("%Y-%m-%d", time.gmtime(httpx.get(f"{venue.clob}/time").json()))
    owed = (fee * rebate_rate).quantize(D("0.000001"), "ROUND_FLOOR")
    rows = httpx.get(f"{venue.clob}/rebates/current", params={"date": day, "maker_address": maker.get_address()}).json()
    assert rows == [{"date": f"{day}T00:00:00Z", "condition_id": market["conditionId"],
                     "asset_address": "0xC011a7E12a19f7B1f670d46F03B03f3342E82DFB",
                     "maker_address": maker.get_address(), "rebated_fees_usdc": f"{owed:.6f}"}]
    assert httpx.get(f"{venue.clob}/rebates/current", params={"date": day, "maker_address": taker.get_address()}
                     ).json() is None
    before = collateral(maker)
    paid = httpx.post(f"{venue.clob}/_admin/pay-rebates", json={}).json()["paid"]
    assert D(paid[maker.get_address().lower()]) == owed
    assert collateral(maker) == before + owed
