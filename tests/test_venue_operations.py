"""The local venue operated like the real one, as our adapter meets it: a refused heartbeat id, a matching-engine
restart (425, then a post-only window) and per-signer rate limits (429); and the windows and buckets behind them.
What py-clob-client-v2 itself raises for each is in test_venue_py_clob_client."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from eth_account import Account

from polybot_venue.operations import Bucket, Limiter, RateLimits, Restart
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
        assert (error.code, error.unknown) == (base.UNAVAILABLE, False) and "restarting" in error.message
        venue.admin("restart", seconds=0, post_only_seconds=120)  # the engine is back, post-only
        error = refused(clob, order("taker"))
        assert (error.code, error.unknown) == (base.UNAVAILABLE, False) and "post-only" in error.message
        assert placed(clob, order("maker", post_only=True)).status == "live"
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
