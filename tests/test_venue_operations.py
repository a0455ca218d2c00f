"""The local venue operated like the real one, as our adapter meets it: a refused heartbeat id, a matching-engine
restart (425, then a post-only window) and per-signer rate limits (429); and the windows and buckets behind them.
What py-clob-client-v2 itself raises for each is in test_venue_py_clob_client."""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from py_clob_client_v2.clob_types import RequestArgs
from py_clob_client_v2.headers.headers import create_level_2_headers

from polybot_venue.operations import Bucket, Limiter, RateLimits, Restart, tier_limits
from services.venues import base
from services.venues.polymarket.client import Clob

from .venue_harness import Venue, tokens

SEED = 13


@pytest.fixture(scope="module")
def venue(tmp_path_factory) -> Iterator[Venue]:
    venue = Venue(Path(os.path.realpath(tmp_path_factory.mktemp("venue"))) / "s", SEED, 100)
    yield venue
    venue.stop()


def adapter(venue: Venue) -> tuple[Clob, Callable[..., base.OrderRequest]]:
    """Our adapter for a new funded account, and orders for it: small bids on a market of their own."""
    clob = Clob(venue.clob, 137, Account.create().key.hex())
    clob.connect()
    venue.admin("fund", address=clob.address, collateral=100)
    venue.admin("approve", address=clob.address, exchange="all", unlimited=True)
    market = venue.market()
    yes, _ = tokens(market)
    rules = clob.rules(yes, market["conditionId"])

    def order(client_id: str, post_only: bool = False) -> base.OrderRequest:
        return base.OrderRequest(client_id=client_id, token_id=yes, market=market["conditionId"], side="BUY",
                                 price=Decimal("0.02"), size=Decimal(10), order_type="GTC", rules=rules,
                                 post_only=post_only, created_ms=1)
    return clob, order


def placed(clob: Clob, order: base.OrderRequest) -> base.Placed:
    assert clob.prepare([order])[0].ok
    answer, = clob.place([order])
    return answer


def refused(clob: Clob, order: base.OrderRequest) -> base.VenueError:
    assert clob.prepare([order])[0].ok
    with pytest.raises(base.VenueError) as info:
        clob.place([order])
    return info.value


# ------------------------------------------------------------ heartbeats

def test_our_adapter_recovers_from_a_refused_heartbeat_id_by_sending_the_expected_one(venue: Venue) -> None:
    clob = Clob(venue.clob, 137, Account.create().key.hex())
    clob.connect()
    last = clob.heartbeat("")
    recovered = clob.heartbeat("an-id-the-venue-never-gave")
    assert recovered not in ("", last)
    assert clob.heartbeat(recovered)  # and the chain goes on from there


# ------------------------------------------------------------ matching-engine restart

def test_our_adapter_reads_a_restart_and_its_post_only_window_as_refusals_that_placed_nothing(venue: Venue) -> None:
    clob, order = adapter(venue)
    try:
        venue.admin("restart", seconds=90, post_only_seconds=120)
        error = refused(clob, order("down"))
        assert (error.code, error.unknown) == (base.RESTARTING, False) and "service not ready" in error.message
        assert 89 <= error.retry_after_s <= 90  # the venue's Retry-After: how long the engine stays down
        venue.admin("restart", seconds=0, post_only_seconds=120)  # the engine is back, post-only
        # Our adapter sends a batch (POST /orders): the venue answers each order, the plain one "not placed".
        taker, maker = order("taker"), order("maker", post_only=True)
        assert all(p.ok for p in clob.prepare([taker, maker]))
        answers = clob.place([taker, maker])
        assert (answers[0].code, answers[0].venue_order_id) == (base.POST_ONLY_WINDOW, "")
        assert "post-only mode" in answers[0].message
        assert (answers[1].code, answers[1].status) == ("", "live")
    finally:
        venue.admin("restart", seconds=0, post_only_seconds=0)
    assert placed(clob, order("after")).status == "live"


def test_a_restart_window_follows_the_venue_clock() -> None:
    now = 1_000_000
    restart = Restart()
    assert restart.phase(now) == "normal"
    restart.start(now, 90, 120)
    assert (restart.phase(now), restart.seconds_left(now)) == ("down", 90)
    assert (restart.phase(now + 90_000), restart.seconds_left(now + 90_000)) == ("post_only", 120)
    assert restart.phase(now + 210_000) == "normal"


# ------------------------------------------------------------ rate limits

def test_our_adapter_reads_a_429_as_rate_limited_and_not_placed(venue: Venue) -> None:
    clob, order = adapter(venue)
    venue.admin("rate-limits", orders={"rate": 0.001, "burst": 1})  # one order, then none for a quarter of an hour
    try:
        assert placed(clob, order("first")).status == "live"
        error = refused(clob, order("second"))
        assert (error.code, error.unknown) == (base.RATE_LIMITED, False)
    finally:
        venue.admin("rate-limits")


def test_a_bucket_refuses_past_its_burst_says_when_to_retry_and_refills_with_the_clock() -> None:
    limiter = Limiter(RateLimits(orders=Bucket(rate=1, burst=2)))
    assert limiter.charge("orders", "0xabc", 2, 0).allowed
    refused = limiter.charge("orders", "0xabc", 1, 0)
    assert (refused.allowed, refused.retry_after_s, refused.reset_s) == (False, 1, 1.0)
    assert limiter.charge("orders", "0xother", 1, 0).allowed  # buckets are per signer
    assert limiter.charge("cancels", "0xabc", 1, 0).allowed  # and orders and cancels are separate
    assert limiter.charge("orders", "0xabc", 1, 1_000).allowed
    assert limiter.charge("orders", "0xabc", 3, 10_000).retry_after_s == 3600  # past the burst: never as one


def test_the_default_limits_are_the_documented_standard_tier_and_each_documented_tier_keeps_its_numbers() -> None:
    assert RateLimits() == tier_limits("standard")
    assert (RateLimits().orders, RateLimits().cancels) == (Bucket(rate=40, burst=60), Bucket(rate=80, burst=120))
    gold, elite = tier_limits("gold"), tier_limits("elite")
    assert (gold.orders, gold.cancels, gold.negative_balance) == (Bucket(400, 600), Bucket(800, 1_200), True)
    assert (elite.orders, elite.cancels, elite.negative_balance) == (Bucket(600, 900), Bucket(1_200, 1_800), False)
    with pytest.raises(KeyError):
        tier_limits("mythril")


def test_cancel_all_can_take_the_cancel_bucket_below_zero_only_on_tiers_that_allow_it() -> None:
    for tier, floor in (("standard", -5.0), ("elite", 0.0)):
        limiter = Limiter(tier_limits(tier))
        burst = limiter.limits.cancels.burst
        assert limiter.charge("cancels", "0xabc", burst, 0).allowed  # cancel-all's one token, say, drains it
        limiter.debit("cancels", "0xabc", 5)  # then five orders canceled
        refused = limiter.charge("cancels", "0xabc", 1, 0)
        assert (refused.allowed, refused.remaining) == (False, floor)
        # The debt is paid back by the refill before the next cancel passes.
        rate = limiter.limits.cancels.rate
        assert refused.reset_s == pytest.approx((1 - floor) / rate)


def test_the_rate_limit_tier_endpoint_answers_the_api_keys_tier_from_the_configured_limits(venue: Venue) -> None:
    client = venue.client()

    def tier() -> httpx.Response:
        path = "/v1/user/rate-limit-tier"
        headers = create_level_2_headers(client.signer, client.creds, RequestArgs(method="GET", request_path=path))
        return httpx.get(f"{venue.clob}{path}", headers=headers)
    assert tier().json() == {"tier": "standard", "orders": {"rate": 40, "burst": 60},
                             "cancels": {"rate": 80, "burst": 120}, "negative_balance": True}
    venue.admin("rate-limits", tier="gold", orders={"rate": 400, "burst": 600})
    try:
        answer = tier()
        assert (answer.json()["tier"], answer.json()["orders"]) == ("gold", {"rate": 400, "burst": 600})
        assert answer.headers["Poly-RateLimit-Tier"] == "gold"
    finally:
        venue.admin("rate-limits")
    assert httpx.get(f"{venue.clob}/v1/user/rate-limit-tier").status_code == 401  # it is the caller's own tier


def test_rate_limits_that_are_not_finite_or_in_range_are_refused_with_the_field_named(venue: Venue) -> None:
    for bad in ({"orders": {"rate": float("nan"), "burst": 1}}, {"cancels": {"rate": 1, "burst": 0}},
                {"general": {"rate": 1e12, "burst": 5}}):
        answer = httpx.post(f"{venue.clob}/_admin/rate-limits", content=json.dumps(bad))
        assert answer.status_code == 400 and "$." in answer.json()["error"], answer.text
