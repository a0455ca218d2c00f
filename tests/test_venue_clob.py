"""The local venue's edge cases through the real py-clob-client-v2: orders it refuses (off the tick, under the
minimum size, a tampered signature, beyond the collateral, signed for the wrong exchange), requests it refuses for
their auth, heartbeat silence, and Gamma's filters. The client's everyday flows are in test_venue_py_clob_client."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from py_clob_client_v2.clob_types import ApiCreds, CreateOrderOptions, OrderArgsV2

from .venue_harness import Venue, rejection, tokens

SEED = 11


@pytest.fixture(scope="module")
def venue(tmp_path_factory) -> Iterator[Venue]:
    venue = Venue(Path(os.path.realpath(tmp_path_factory.mktemp("venue"))) / "s", SEED)
    yield venue
    venue.stop()


def test_a_price_off_the_tick_and_a_size_under_the_minimum_are_rejected_with_the_venues_texts(venue: Venue) -> None:
    client = venue.client()
    yes, _ = tokens(venue.market())
    # The client refuses a finer tick itself, so build with its order builder as a client with a stale tick would.
    off_tick = client.builder.build_order(OrderArgsV2(token_id=yes, price=0.481, size=10, side="BUY"),
                                          CreateOrderOptions(tick_size="0.001", neg_risk=False), version=2)
    status, text = rejection(lambda: client.post_order(off_tick))
    assert status == 400 and text.endswith("is invalid. Price (0.481) breaks minimum tick size rule: 0.01")
    small = client.create_order(OrderArgsV2(token_id=yes, price=0.3, size=2, side="BUY"))
    status, text = rejection(lambda: client.post_order(small))
    assert status == 400 and text.endswith("is invalid. Size (2) lower than the minimum: 5")


def test_an_order_with_a_tampered_signature_is_rejected(venue: Venue) -> None:
    client = venue.client()
    yes, _ = tokens(venue.market())
    order = client.create_order(OrderArgsV2(token_id=yes, price=0.2, size=10, side="BUY"))
    # One bit of r flipped: some other key, or none, recovers from it. (Not the tail: a changed s and v could
    # spell the same signature, with v as 0 rather than 27.)
    sig, at = order.signature, 10  # 0x + r(64) + s(64) + v(2)
    flipped = sig[:at] + format(int(sig[at:at + 2], 16) ^ 1, "02x") + sig[at + 2:]
    status, text = rejection(lambda: client.post_order(replace(order, signature=flipped)))
    assert (status, text) == (400, "invalid signature")
    assert client.get_open_orders() == []


def test_requests_with_a_bad_hmac_or_no_valid_l1_signature_are_unauthorized(venue: Venue) -> None:
    client = venue.client()
    good = client.creds
    client.set_api_creds(ApiCreds(api_key=good.api_key, api_secret="c2VjcmV0LW5vdC10aGUtb25lLWlzc3VlZA==",
                                  api_passphrase=good.api_passphrase))
    assert rejection(client.get_open_orders) == (401, "Unauthorized/Invalid api key")
    unsigned = httpx.get(f"{venue.clob}/auth/derive-api-key", headers={"POLY_ADDRESS": client.get_address(),
                         "POLY_SIGNATURE": "0x" + "00" * 65, "POLY_TIMESTAMP": "1", "POLY_NONCE": "0"})
    assert (unsigned.status_code, unsigned.json()) == (401, {"error": "Invalid L1 Request headers"})


def test_an_order_beyond_the_accounts_collateral_is_refused(venue: Venue) -> None:
    client = venue.client()
    market = venue.market()
    yes, _ = tokens(market)
    order = client.create_order(OrderArgsV2(token_id=yes, price=0.5, size=30_000, side="BUY"))  # 15k > 10k
    # What a BUY holds: its size at the limit plus the most taker fee it could pay, at the market's own rate.
    held = 30_000 * (Decimal("0.5") + Decimal(str(market["feeSchedule"]["rate"])) * Decimal("0.25"))
    assert rejection(lambda: client.post_order(order)) == (
        400, "not enough balance / allowance: the balance is not enough -> balance: 10000000000, "
             f"sum of active orders: 0, order amount: {int(held * 10**6)}")


def test_an_order_on_a_neg_risk_market_is_signed_for_and_accepted_under_the_neg_risk_exchange(venue: Venue) -> None:
    client = venue.client()
    member = next(m for m in httpx.get(f"{venue.gamma}/markets", params={"limit": 100}).json() if m["negRisk"])
    yes, _ = tokens(member)
    assert client.get_neg_risk(yes) is True
    placed = client.create_and_post_order(OrderArgsV2(token_id=yes, price=0.01, size=10, side="BUY"))
    assert placed["status"] == "live"
    # The same order signed under the plain exchange's domain does not verify on a neg-risk market.
    plain = client.builder.build_order(OrderArgsV2(token_id=yes, price=0.01, size=10, side="BUY"),
                                       CreateOrderOptions(tick_size="0.01", neg_risk=False), version=2)
    status, text = rejection(lambda: client.post_order(plain))
    assert (status, text) == (400, "invalid signature")


def test_orders_are_canceled_when_the_accounts_heartbeats_stop(tmp_path) -> None:
    from .conftest import wait_for

    venue = Venue(Path(os.path.realpath(tmp_path)) / "s", SEED, 100, "--still", "--heartbeat-timeout-ms", "1000")
    try:
        client, quiet = venue.client(), venue.client()
        yes, _ = tokens(venue.market())
        client.create_and_post_order(OrderArgsV2(token_id=yes, price=0.05, size=10, side="BUY"))
        quiet.create_and_post_order(OrderArgsV2(token_id=yes, price=0.04, size=10, side="BUY"))  # never heartbeats
        assert "heartbeat_id" in client.post_heartbeat()
        wait_for(lambda: client.get_open_orders() == [], what="the silent account's orders to be canceled")
        assert len(quiet.get_open_orders()) == 1
    finally:
        venue.stop()


def test_gamma_filters_orders_and_pages_markets_and_events(venue: Venue) -> None:
    gamma = venue.gamma
    everything = httpx.get(f"{gamma}/markets", params={"limit": 500}).json()
    # binary, neg-risk members, protocol-v2 binary, protocol-v2 neg-risk members
    assert len(everything) == 20 + 3 * 4 + 3 + 1 * 4
    pages = [httpx.get(f"{gamma}/markets", params={"limit": 7, "offset": o}).json() for o in range(0, 42, 7)]
    assert [m["id"] for page in pages for m in page] == [m["id"] for m in everything]
    one = everything[5]
    assert [m["id"] for m in httpx.get(f"{gamma}/markets", params={"slug": one["slug"]}).json()] == [one["id"]]
    token = json.loads(one["clobTokenIds"])[1]
    assert [m["id"] for m in httpx.get(f"{gamma}/markets", params={"clob_token_ids": token}).json()] == [one["id"]]
    by_condition = httpx.get(f"{gamma}/markets", params={"condition_ids": one["conditionId"]}).json()
    assert [m["id"] for m in by_condition] == [one["id"]]
    ends = [m["endDate"] for m in httpx.get(f"{gamma}/markets", params={"order": "endDate", "ascending": "true",
                                                                       "limit": 500}).json()]
    assert ends == sorted(ends)
    assert httpx.get(f"{gamma}/markets", params={"closed": "true"}).json() == []
    assert httpx.get(f"{gamma}/markets", params={"order": "nonsense"}).status_code == 400
    events = httpx.get(f"{gamma}/events").json()
    assert len(events) == 4 and all(len(e["markets"]) == 4 and e["negRisk"] for e in events)
    assert [e["version"] for e in events] == ["v1", "v1", "v1", "v2"]
    assert httpx.get(f"{gamma}/markets/{one['id']}").json()["conditionId"] == one["conditionId"]
