"""The local venue operated like the real one, through the real py-clob-client-v2: heartbeat ids, API keys that
exist once per nonce, a matching-engine restart (425, then a post-only window) and per-signer rate limits (429)."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from py_clob_client_v2 import ClobClient
from py_clob_client_v2.clob_types import OrderArgsV2, OrderPayload, RequestArgs
from py_clob_client_v2.exceptions import PolyApiException
from py_clob_client_v2.headers.headers import create_level_2_headers

from polybot_venue.operations import Bucket, Limiter, RateLimits, Restart, tier_limits
from polybot_venue.server import ready_made_account
from services.venues import base
from services.venues.polymarket.client import Clob, venue_error

from .conftest import wait_for
from .venue_harness import Venue, tokens

SEED = 13


@pytest.fixture(scope="module")
def venue(tmp_path_factory) -> Iterator[Venue]:
    venue = Venue(Path(os.path.realpath(tmp_path_factory.mktemp("venue"))) / "s", SEED, 100)
    yield venue
    venue.stop()


def admin(venue: Venue, name: str, body: dict) -> dict:
    answer = httpx.post(f"{venue.clob}/_admin/{name}", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def refusal(call) -> PolyApiException:
    with pytest.raises(PolyApiException) as info:
        call()
    return info.value


# ------------------------------------------------------------ heartbeats

def test_a_heartbeat_with_a_stale_id_gets_400_naming_the_expected_id_and_that_id_then_passes(venue: Venue) -> None:
    client = venue.client()
    first = client.post_heartbeat()["heartbeat_id"]  # the first may send none
    second = client.post_heartbeat(first)["heartbeat_id"]
    stale = refusal(lambda: client.post_heartbeat(first))
    assert (stale.status_code, stale.error_msg) == (400, {"error_msg": "Invalid Heartbeat ID", "heartbeat_id": second})
    assert client.post_heartbeat(second)["heartbeat_id"] not in ("", second)


def test_our_adapter_recovers_from_a_refused_heartbeat_id_by_sending_the_expected_one(venue: Venue) -> None:
    clob = Clob(venue.clob, 137, Account.create().key.hex())
    clob.connect()
    last = clob.heartbeat("")
    recovered = clob.heartbeat("an-id-the-venue-never-gave")
    assert recovered not in ("", last)
    assert clob.heartbeat(recovered)  # and the chain goes on from there


# ------------------------------------------------------------ API keys

def test_a_second_create_on_a_nonce_is_refused_and_derive_on_an_unknown_nonce_is_refused(venue: Venue) -> None:
    client = ClobClient(venue.clob, chain_id=137, key=Account.create().key.hex())
    never = refusal(lambda: client.derive_api_key(nonce=5))
    assert (never.status_code, never.error_msg) == (400, {"error": "Could not derive api key!"})
    created = client.create_api_key(nonce=5)
    again = refusal(lambda: client.create_api_key(nonce=5))
    assert (again.status_code, again.error_msg) == (400, {"error": "Could not create api key"})
    assert client.derive_api_key(nonce=5) == created


def test_create_or_derive_gives_a_new_key_and_then_the_same_key_again(venue: Venue) -> None:
    client = ClobClient(venue.clob, chain_id=137, key=Account.create().key.hex())
    new = client.create_or_derive_api_key()
    assert client.create_or_derive_api_key() == new
    assert client.create_or_derive_api_key(nonce=1) not in (new, None)


def test_the_ready_made_account_counts_as_created_so_derive_gives_its_key_and_create_refuses(venue: Venue) -> None:
    account = ready_made_account(SEED)
    client = ClobClient(venue.clob, chain_id=137, key=account.private_key)
    assert refusal(client.create_api_key).error_msg == {"error": "Could not create api key"}
    assert client.create_or_derive_api_key().api_key == account.credentials.api_key


# ------------------------------------------------------------ matching-engine restart

def test_a_restart_answers_425_then_takes_only_post_only_orders_and_cancels_then_takes_everything(
        venue: Venue) -> None:
    client = venue.client()
    yes, _ = tokens(venue.market())
    resting = client.post_order(client.create_order(OrderArgsV2(token_id=yes, price=0.03, size=10, side="BUY")))
    try:
        admin(venue, "restart", {"seconds": 90, "post_only_seconds": 120})
        order = client.create_order(OrderArgsV2(token_id=yes, price=0.02, size=10, side="BUY"))
        down = refusal(lambda: client.post_order(order, post_only=True))
        # The real venue's bare text (py-clob-client #273), which the client keeps as the message.
        assert (down.status_code, down.error_msg) == (425, "service not ready")
        assert refusal(lambda: client.post_orders([])).status_code == 425
        assert refusal(lambda: client.cancel_order(OrderPayload(orderID=resting["orderID"]))).status_code == 425
        error = venue_error(down)  # our adapter: not placed, retry later
        assert (error.code, error.unknown) == (base.UNAVAILABLE, False) and "service not ready" in error.message

        admin(venue, "restart", {"seconds": 0, "post_only_seconds": 120})  # the engine is back, post-only
        taker = refusal(lambda: client.post_order(order))
        # The CLOB OpenAPI's post-only body: text, code and the wait, which the Retry-After header repeats.
        assert (taker.status_code, taker.error_msg["code"]) == (503, "post_only_mode")
        assert taker.error_msg["error"] == "post-only mode: only post-only orders and cancels are allowed"
        assert 0 < taker.error_msg["retry_after_seconds"] <= 120
        assert (venue_error(taker).code, venue_error(taker).unknown) == (base.UNAVAILABLE, False)
        assert client.post_order(order, post_only=True)["success"]
        assert client.cancel_order(OrderPayload(orderID=resting["orderID"]))["canceled"] == [resting["orderID"]]

        admin(venue, "restart", {"seconds": 0, "post_only_seconds": 0})
        again = client.create_order(OrderArgsV2(token_id=yes, price=0.01, size=10, side="BUY"))
        assert client.post_order(again)["success"]
    finally:
        admin(venue, "restart", {"seconds": 0, "post_only_seconds": 0})
        client.cancel_all()


def test_a_restart_window_follows_the_venue_clock() -> None:
    now = 1_000_000
    restart = Restart()
    assert restart.phase(now) == "normal"
    restart.start(now, 90, 120)
    assert (restart.phase(now), restart.seconds_left(now)) == ("down", 90)
    assert (restart.phase(now + 90_000), restart.seconds_left(now + 90_000)) == ("post_only", 120)
    assert restart.phase(now + 210_000) == "normal"


# ------------------------------------------------------------ rate limits

def test_past_the_order_limit_the_venue_answers_429_with_retry_after_and_takes_orders_again_once_refilled(
        venue: Venue) -> None:
    client = venue.client()
    yes, _ = tokens(venue.market())
    orders = [client.create_order(OrderArgsV2(token_id=yes, price=0.01 * (i + 1), size=5, side="BUY"))
              for i in range(3)]
    # Two orders at once, then one a second: the refusals below come well within that second, and the refused
    # order passes again at most a second later.
    admin(venue, "rate-limits", {"orders": {"rate": 1, "burst": 2}})
    try:
        first = httpx.get(f"{venue.clob}/ok")
        assert {"poly-ratelimit-remaining", "poly-ratelimit-reset", "poly-ratelimit-tier"} <= set(first.headers)
        assert client.post_order(orders[0])["success"] and client.post_order(orders[1])["success"]
        # py-clob-client-v2 raises PolyApiException on any non-200 and retries only 5xx (http_helpers/helpers.py),
        # so the 429 reaches the caller; its exception keeps no headers, so read them from a raw request.
        limited = httpx.post(f"{venue.clob}/order", json={}, headers={"POLY_ADDRESS": client.get_address()})
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert float(limited.headers["Poly-RateLimit-Remaining"]) < 1 and limited.json()["error"]
        error = venue_error(refusal(lambda: client.post_order(orders[2])))
        assert (error.code, error.unknown) == (base.RATE_LIMITED, False)
        # Waiting on the refill is the behaviour under test; the limit above keeps it to a fraction of a second.
        placed = wait_for(lambda: _placed(client, orders[2]), timeout=5, what="the order bucket to refill")
        assert placed["success"]
    finally:
        admin(venue, "rate-limits", {})
        client.cancel_all()


def _placed(client: ClobClient, order) -> dict | None:
    try:
        return client.post_order(order)
    except PolyApiException as exc:
        assert exc.status_code == 429, exc
        return None


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
    admin(venue, "rate-limits", {"tier": "gold", "orders": {"rate": 400, "burst": 600}})
    try:
        answer = tier()
        assert (answer.json()["tier"], answer.json()["orders"]) == ("gold", {"rate": 400, "burst": 600})
        assert answer.headers["Poly-RateLimit-Tier"] == "gold"
    finally:
        admin(venue, "rate-limits", {})
    assert httpx.get(f"{venue.clob}/v1/user/rate-limit-tier").status_code == 401  # it is the caller's own tier


def test_rate_limits_that_are_not_finite_or_in_range_are_refused_with_the_field_named(venue: Venue) -> None:
    for bad in ({"orders": {"rate": float("nan"), "burst": 1}}, {"cancels": {"rate": 1, "burst": 0}},
                {"general": {"rate": 1e12, "burst": 5}}):
        answer = httpx.post(f"{venue.clob}/_admin/rate-limits", content=json.dumps(bad))
        assert answer.status_code == 400 and "$." in answer.json()["error"], answer.text
