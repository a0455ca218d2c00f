"""The executor's gate and the adapter's rate limiter, pure: what the venue's answers reveal (a restart, its post-only
window, failing heartbeats, a wallet that cannot pay), what each lets through, and pacing to the venue's tiers."""
from __future__ import annotations

from decimal import Decimal

import pytest

from polybot_venue.operations import TIERS as VENUE_TIERS
from services import messages as m
from services.executor.gate import Gate, Go, Refuse, Wait
from services.executor.options import ExecutorOptions
from services.risk.engine import RiskEngine
from services.risk.limits import AgentLimits, Limits
from services.venues import base
from services.venues.polymarket.limits import TIERS, RateLimiter

D = Decimal
S = 1_000_000_000  # ns per second
NOW = 1_790_000_000 * S


def order(side: str = "BUY", post_only: bool = False, ts_ns: int = NOW) -> m.Order:
    return m.Order(ts_ns=ts_ns, signal_id="s", leg=0, source="strategy:t", token_id="t1", market="0xm", side=side,
                   size=D("10"), limit_price=D("0.40"), order_type="GTC", post_only=post_only)


def gate(**options: object) -> Gate:
    return Gate(ExecutorOptions(**options))


def test_a_restart_refuses_what_cannot_wait_and_holds_what_can_until_it_ends() -> None:
    g = gate()
    g.restarting(NOW, 90)
    restart = g.conditions[base.RESTARTING]
    assert restart.until_ts_ns == NOW + 90 * S and "restarting" in restart.message
    refused = g.verdict(order(), NOW, deadline_ns=NOW + 3 * S)
    assert isinstance(refused, Refuse) and refused.code == base.RESTARTING
    assert g.verdict(order(post_only=True), NOW, NOW + 3 * S).code == base.RESTARTING  # post-only too: nothing goes
    assert g.verdict(order(), NOW, deadline_ns=NOW + 100 * S) == Wait(NOW + 90 * S, base.RESTARTING)


def test_a_restart_without_retry_after_lasts_the_configured_guess_and_is_never_shortened() -> None:
    g = gate(restart_retry_s=5.0)
    g.restarting(NOW, 0)
    assert g.conditions[base.RESTARTING].until_ts_ns == NOW + 5 * S
    version = g.version
    g.restarting(NOW + 1 * S, 2)  # a later answer that says less keeps the longer window
    assert (g.conditions[base.RESTARTING].until_ts_ns, g.version) == (NOW + 5 * S, version)


def test_the_end_of_a_restart_opens_the_post_only_window_in_which_only_post_only_orders_go() -> None:
    g = gate(post_only_after_restart_s=120.0)
    g.restarting(NOW, 10)
    g.tick(NOW + 9 * S)
    assert base.RESTARTING in g.conditions
    g.tick(NOW + 10 * S)
    assert list(g.conditions) == [base.POST_ONLY_WINDOW]
    at = NOW + 11 * S
    assert g.verdict(order(post_only=True, ts_ns=at), at, at + 3 * S) == Go()
    assert g.verdict(order(side="SELL", ts_ns=at), at, at + 3 * S).code == base.POST_ONLY_WINDOW
    g.post_only(at, 4)  # the venue's own word (retry_after_seconds) replaces the guess
    assert g.conditions[base.POST_ONLY_WINDOW].until_ts_ns == at + 4 * S
    g.tick(at + 4 * S)
    assert not g.conditions and g.verdict(order(ts_ns=at), at + 4 * S, at + 7 * S) == Go()


def test_a_post_only_answer_without_a_time_keeps_the_window_it_knows() -> None:
    g = gate(post_only_after_restart_s=120.0)
    g.post_only(NOW, 30)
    g.post_only(NOW + S, 0)
    assert g.conditions[base.POST_ONLY_WINDOW].until_ts_ns == NOW + 30 * S


def test_failing_heartbeats_refuse_every_new_order_until_one_is_answered() -> None:
    g = gate()
    g.heartbeats("no answer within 10.0s", NOW)
    refused = g.verdict(order(post_only=True), NOW, NOW + 3600 * S)
    assert refused.code == base.HEARTBEAT_FAILING and "cancels every open order" in refused.message
    g.heartbeats("", NOW + S)
    assert not g.conditions and g.verdict(order(), NOW, NOW + 3 * S) == Go()


def test_a_wallet_without_allowance_holds_back_buys_until_its_allowance_covers_its_money() -> None:
    g = gate()
    g.funds(NOW, base.Balance(collateral=D("100"), allowance=D("0")), D("4"), "0xF")
    short = g.conditions[base.NO_ALLOWANCE]
    assert short.side == "BUY" and "approve" in short.message and "0xF" in short.message
    assert g.verdict(order(), NOW, NOW + 3 * S).code == base.NO_ALLOWANCE
    assert g.verdict(order(side="SELL"), NOW, NOW + 3 * S) == Go()
    g.funds_read(base.Balance(collateral=D("100"), allowance=D("50")))
    assert base.NO_ALLOWANCE in g.conditions
    g.funds_read(base.Balance(collateral=D("100"), allowance=D("1e70")))
    assert not g.conditions


def test_a_wallet_short_of_money_is_reported_with_what_it_holds_and_ends_when_it_holds_more() -> None:
    g = gate()
    g.funds(NOW, base.Balance(collateral=D("3"), allowance=D("1e70")), D("4"), "0xF")
    poor = g.conditions[base.NO_BALANCE]
    assert (poor.code, poor.available, poor.side) == (base.NO_BALANCE, D("3"), "BUY")
    assert g.verdict(order(), NOW, NOW + 3 * S) == Go()  # the venue judges each BUY against its balance itself
    g.funds_read(base.Balance(collateral=D("3"), allowance=D("1e70")))
    assert base.NO_BALANCE in g.conditions
    g.funds_read(base.Balance(collateral=D("50"), allowance=D("1e70")))
    assert not g.conditions


def test_an_order_waits_for_its_rate_limit_tokens_only_within_its_age_limit() -> None:
    g = gate()
    assert g.verdict(order(), NOW, NOW + 3 * S, rate_delay_s=0.5) == Wait(NOW + S // 2, base.RATE_LIMITED)
    refused = g.verdict(order(), NOW, NOW + 3 * S, rate_delay_s=4.0)
    assert refused.code == base.RATE_LIMITED and "age limit" in refused.message


def test_every_change_moves_the_version_and_nothing_else_does() -> None:
    g = gate()
    versions = [g.version]
    g.heartbeats("down", NOW)
    versions.append(g.version)
    g.heartbeats("down", NOW + S)  # the same condition again: no change to publish
    versions.append(g.version)
    g.heartbeats("", NOW + 2 * S)
    versions.append(g.version)
    assert versions == [0, 1, 1, 2]


# ------------------------------------------------------------ risk hears the conditions


def engine_with(conditions: list[m.VenueCondition]) -> RiskEngine:
    engine = RiskEngine(Limits(), AgentLimits())
    engine.observe(m.MarketNew(market="0xm", question="q", outcomes=[m.Outcome(token_id="t1", name="Yes"),
                                                                     m.Outcome(token_id="t2", name="No")],
                               tick_size=D("0.01"), min_size=D("5")))
    engine.observe(m.BookSnapshot(books=[m.Book(token_id="t1", market="0xm", bids=[m.Level(D("0.39"), D("100"))],
                                                asks=[m.Level(D("0.41"), D("100"))])]))
    engine.observe(m.VenueStatus(conditions=conditions))
    return engine


def signal(side: str = "BUY", post_only: bool = False, size: str = "10") -> m.Signal:
    return m.Signal(source="strategy:t", legs=[m.Leg(token_id="t1", market="0xm", side=side, size=D(size),
                                                     limit_price=D("0.40"), post_only=post_only)])


def codes(engine: RiskEngine, sig: m.Signal, now: int = NOW) -> set[str]:
    return {r.code for r in engine.check(sig, now)}


def test_risk_refuses_what_the_venue_will_not_take_with_the_executors_reason() -> None:
    g = gate()
    g.restarting(NOW, 60)
    engine = engine_with(g.status())
    assert base.RESTARTING in codes(engine, signal(post_only=True))
    assert base.RESTARTING not in codes(engine, signal(), now=NOW + 61 * S)  # over: the executor says what follows
    g.tick(NOW + 61 * S)
    engine.observe(m.VenueStatus(conditions=g.status()))
    assert base.POST_ONLY_WINDOW in codes(engine, signal(), now=NOW + 62 * S)
    assert base.POST_ONLY_WINDOW not in codes(engine, signal(post_only=True), now=NOW + 62 * S)


def test_risk_refuses_buys_the_wallet_cannot_pay_for_counting_its_open_buys() -> None:
    g = gate()
    g.funds(NOW, base.Balance(collateral=D("5"), allowance=D("1e70")), D("6"), "0xF")
    engine = engine_with(g.status())
    refused = [r for r in engine.check(signal(size="20"), NOW) if r.code == base.NO_BALANCE]
    assert refused and refused[0].limit == D("5") and refused[0].value == D("8")  # 20 x 0.40
    assert base.NO_BALANCE not in codes(engine, signal(size="10"))  # 4.00 of 5
    assert base.NO_BALANCE not in codes(engine, signal(side="SELL", size="20"))
    engine.accept(signal(size="10"), NOW)  # 4.00 now held by an open BUY
    assert base.NO_BALANCE in codes(engine, signal(size="5"))


# ------------------------------------------------------------ the rate limiter


def test_our_tiers_are_the_venues() -> None:
    assert TIERS == {name: tier[:4] for name, tier in VENUE_TIERS.items()}


def test_the_limiter_lets_a_burst_through_then_paces_to_the_tiers_rate_with_headroom() -> None:
    limiter = RateLimiter("standard")  # orders: 40/s, burst 60; kept to 90% of each
    assert limiter.take("orders", 54, 100.0) == 0
    assert limiter.delay("orders", 1, 100.0) == pytest.approx(1 / 36)
    assert limiter.take("orders", 15, 100.0) == pytest.approx(15 / 36)
    assert limiter.take("orders", 1, 100.0) == pytest.approx(16 / 36)  # queued behind the first that waits
    assert limiter.delay("orders", 1, 101.0) == pytest.approx(0.0)
    assert limiter.delay("cancels", 108, 100.0) == 0  # cancels have their own bucket


def test_a_429_holds_its_class_for_its_retry_after() -> None:
    limiter = RateLimiter("gold")
    limiter.hold("orders", 7.0, 10.0)
    assert limiter.delay("orders", 1, 10.0) == pytest.approx(7.0)
    assert limiter.delay("cancels", 1, 10.0) == 0
    assert limiter.delay("orders", 1, 17.0) == 0


def test_an_unknown_tier_is_refused_naming_the_tiers() -> None:
    with pytest.raises(ValueError, match="standard, copper"):
        RateLimiter("platinum-ish")
