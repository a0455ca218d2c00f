"""The matching engine on its own, on a simulated clock: fees, balances, time-based cancels, self-trades."""
from __future__ import annotations

import json
from decimal import Decimal as D
from pathlib import Path

import pytest

from polybot_venue.engine import UNLIMITED, Engine, Market, VenueError, taker_fee

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "polymarket"
FILLS = json.loads((FIXTURES / "chain_order_filled_taker_fees.json").read_text())


@pytest.mark.parametrize("fill", FILLS, ids=lambda f: f"{f['side']}-{f['price']}-{f['fee_rate']}")
def test_the_taker_fee_matches_every_captured_on_chain_fill_to_the_micro_unit(fill: dict) -> None:
    shares = D(fill["taker_amount_filled" if fill["side"] == "BUY" else "maker_amount_filled"]) / 10**6
    fee = taker_fee(shares, D(fill["price"]), D(fill["fee_rate"]))
    assert fee * 10**6 == D(fill["fee"])


class Clock:
    def __init__(self) -> None:
        self.ms = 1_800_000_000_000

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def world() -> tuple[Engine, Market, Clock]:
    clock = Clock()
    market = Market(condition_id="0xc", question="q", slug="q", tokens=("yes", "no"), fee_rate=D("0.05"))
    engine = Engine([market], clock)
    for who in ("alice", "bob"):
        engine.fund(who, D(1000), {"yes": D(100), "no": D(100)})
        engine.approve(who, collateral=UNLIMITED, conditional=True)
    return engine, market, clock


def place(engine: Engine, who: str, token: str, side: str, price: str, size: str, kind: str = "GTC", **kw):
    place.n = getattr(place, "n", 0) + 1
    return engine.place(order_id=f"o{place.n}", owner=who, address=who, token_id=token, side=side, price=D(price),
                        size=D(size), order_type=kind, **kw)


def test_selling_shares_one_does_not_hold_is_refused(world) -> None:
    engine, _, _ = world
    with pytest.raises(VenueError, match="not enough balance / allowance"):
        place(engine, "alice", "yes", "SELL", "0.5", "101")
    place(engine, "alice", "yes", "SELL", "0.5", "60")
    with pytest.raises(VenueError, match="not enough balance / allowance"):  # 60 of the 100 are held by the order
        place(engine, "alice", "yes", "SELL", "0.6", "41")


def test_buy_yes_and_buy_no_mint_and_both_pay_their_price_plus_the_takers_fee(world) -> None:
    engine, _, _ = world
    place(engine, "alice", "yes", "BUY", "0.40", "10")
    result = place(engine, "bob", "no", "BUY", "0.60", "10")
    assert [(t.size, t.price) for t in result.trades] == [(D(10), D("0.60"))]
    fee = taker_fee(D(10), D("0.60"), D("0.05"))
    alice, bob = engine.account("alice"), engine.account("bob")
    assert (alice.collateral, alice.shares["yes"]) == (D(1000) - D(4), D(110))
    assert (bob.collateral, bob.shares["no"]) == (D(1000) - D(6) - fee, D(110))
    assert engine.account("fees").collateral == fee and alice.held_collateral == bob.held_collateral == 0


def test_an_accounts_own_orders_never_meet(world) -> None:
    engine, _, _ = world
    place(engine, "alice", "yes", "SELL", "0.40", "10")
    result = place(engine, "alice", "yes", "BUY", "0.45", "10")
    assert result.trades == [] and result.status == "live"
    assert place(engine, "bob", "yes", "BUY", "0.40", "5").trades[0].maker.order.owner == "alice"


def test_orders_of_an_account_whose_heartbeats_stop_are_canceled_after_ten_seconds(world) -> None:
    engine, _, clock = world
    place(engine, "alice", "yes", "BUY", "0.30", "10")
    place(engine, "bob", "yes", "BUY", "0.31", "10")  # bob never heartbeats: his orders stay
    engine.heartbeat("alice")
    clock.ms += 9_000
    assert engine.tick() == []
    engine.heartbeat("alice")
    clock.ms += 10_001
    gone = engine.tick()
    assert [(o.owner, o.status) for o in gone] == [("alice", "CANCELED")]
    assert engine.account("alice").held_collateral == 0
    assert [o.owner for o in engine.open_orders()] == ["bob"]


def test_a_gtd_order_expires_and_one_expiring_within_a_minute_is_refused(world) -> None:
    engine, _, clock = world
    now_s = clock.ms // 1000
    with pytest.raises(VenueError, match="Expiration"):
        place(engine, "alice", "yes", "BUY", "0.30", "10", "GTD", expiration=now_s + 30)
    place(engine, "alice", "yes", "BUY", "0.30", "10", "GTD", expiration=now_s + 120)
    clock.ms += 119_000
    assert engine.tick() == []
    clock.ms += 1_000
    assert [o.status for o in engine.tick()] == ["CANCELED"]


def test_a_fak_order_takes_what_it_can_and_the_rest_is_killed(world) -> None:
    engine, _, _ = world
    place(engine, "alice", "yes", "SELL", "0.50", "7")
    result = place(engine, "bob", "yes", "BUY", "0.50", "20", "FAK")
    assert result.status == "matched" and result.order.matched == 7 and result.order.status == "MATCHED"
    assert engine.account("bob").held_collateral == 0
    assert engine.outbox[-1][:2] == ("order", "CANCELLATION")


def test_a_finite_allowance_is_held_by_open_orders_spent_by_fills_and_given_back_by_cancels(world) -> None:
    engine, market, _ = world
    exchange = engine.exchange_of(market)
    engine.approve("alice", collateral=D(10))
    place(engine, "alice", "yes", "BUY", "0.40", "10")  # holds 4 + a fee reserve of 0.12
    with pytest.raises(VenueError, match="the allowance is not enough"):
        place(engine, "alice", "yes", "BUY", "0.40", "15")  # another 6.18 would pass 10
    result = place(engine, "bob", "yes", "SELL", "0.40", "5")  # fills 5 of alice's 10 as maker: she pays 2.00
    assert result.trades
    alice = engine.account("alice")
    assert alice.allowances[exchange] == D("8.00") and alice.held_by_exchange[exchange] == 5 * D("0.412")
    engine.cancel("alice", [o.id for o in engine.open_orders("alice")])
    assert alice.held_by_exchange[exchange] == 0 and alice.held_collateral == 0 and alice.available_allowance(
        exchange) == D("8.00")
