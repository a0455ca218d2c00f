"""Protocol-v2 positions through the real py-clob-client-v2: Gamma `version: "v2"` markets whose outcome tokens are
position ids, whose orders verify only under exchange V3 (domain version "3"), as polybot_venue/WALLETS.md §3 says.
The client's plain flow (an order signed for V3 by its position id, and the version-mismatch answer) is in
test_venue_py_clob_client; here are the positions' listing, forged signatures, balances, wallets and our executor."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from py_clob_client_v2.clob_types import BalanceAllowanceParams, OrderArgsV2
from py_clob_client_v2.config import get_contract_config
from py_clob_client_v2.order_utils import ExchangeOrderBuilderV2

from polybot_venue import auth
from polybot_venue.markets import is_v2_position_id

from .venue_harness import Venue, best, rejection, tokens

SEED = 23
MISMATCH = "order_version_mismatch"


@pytest.fixture(scope="module")
def venue(tmp_path_factory) -> Iterator[Venue]:
    venue = Venue(Path(os.path.realpath(tmp_path_factory.mktemp("v2pos"))) / "s", SEED)
    yield venue
    venue.stop()


def v2_market(venue: Venue, n: int = 0) -> dict:
    return venue.v2_markets[n]


def test_gamma_lists_v2_markets_whose_tokens_are_position_ids_the_unified_sdk_routes_to_exchange_v3(
        venue: Venue) -> None:
    assert len(venue.v2_markets) == 3
    for market in venue.v2_markets:
        yes, no = tokens(market)
        assert is_v2_position_id(yes) and is_v2_position_id(no)
        assert f"{int(yes):064x}"[:2] == "01"  # the binary module
        assert int(no) == int(yes) + 1 and market["conditionId"] == f"0x{int(yes):064x}"
    assert not any(is_v2_position_id(t) for m in venue.markets for t in tokens(m))
    only_v2 = httpx.get(f"{venue.gamma}/markets", params={"version": "v2", "limit": 500}).json()
    assert [m["id"] for m in only_v2] == [m["id"] for m in venue.v2_markets + venue.v2_neg_risk_markets]
    assert {m["version"] for m in venue.markets} == {"v1"}


def test_the_venue_keeps_answering_version_2_so_token_orders_stay_on_exchange_v2(venue: Venue) -> None:
    assert httpx.get(f"{venue.clob}/version").json() == {"version": 2}
    assert venue.client().get_version() == 2


def test_a_v2_market_order_signed_by_another_key_is_refused_as_an_invalid_signature(venue: Venue) -> None:
    client, other = venue.client(), venue.client()
    yes, _ = tokens(v2_market(venue, 1))
    order = client.create_order(OrderArgsV2(position_id=yes, price=0.02, size=10, side="BUY"))
    forged = other.create_order(OrderArgsV2(position_id=yes, price=0.02, size=10, side="BUY"))
    status, text = rejection(lambda: client.post_order(replace(order, signature=forged.signature)))
    assert (status, text) == (400, "invalid signature")


def test_balance_allowance_answers_conditional_v2_for_a_position_and_lists_exchange_v3(venue: Venue) -> None:
    client = venue.client()
    yes, _ = tokens(v2_market(venue, 2))
    _, ask = best(client, yes)
    client.create_and_post_order(OrderArgsV2(position_id=yes, price=float(ask), size=10, side="BUY"))
    v3 = get_contract_config(137).exchange_v3
    for asset_type in ("CONDITIONAL-V2", "CONDITIONAL"):
        shares = client.get_balance_allowance(BalanceAllowanceParams(asset_type=asset_type, token_id=yes))
        assert shares["balance"] == "10000000" and v3 in shares["allowances"]
    assert v3 in client.get_balance_allowance(BalanceAllowanceParams(asset_type="COLLATERAL"))["allowances"]


def test_selling_a_position_needs_exchange_v3s_approval_not_v2s(venue: Venue) -> None:
    client = venue.client(funded=False)
    owner = client.get_address()
    yes, _ = tokens(v2_market(venue, 2))
    venue.admin("fund", address=owner, collateral=100, shares={yes: 10})
    venue.admin("approve", address=owner, exchange=auth.EXCHANGE_V2[137], conditional=True, unlimited=True)
    status, text = rejection(lambda: client.create_and_post_order(OrderArgsV2(position_id=yes, price=0.98, size=10,
                                                                              side="SELL")))
    assert status == 400 and f"spender: {auth.EXCHANGE_V3[137]}" in text
    venue.admin("approve", address=owner, exchange=auth.EXCHANGE_V3[137], conditional=True)
    placed = client.create_and_post_order(OrderArgsV2(position_id=yes, price=0.98, size=10, side="SELL"))
    assert placed["status"] == "live"


@pytest.mark.parametrize("kind", [1, 2, 3], ids=["proxy", "safe", "deposit-wallet"])
def test_a_wallet_order_on_a_v2_market_verifies_under_exchange_v3(venue: Venue, kind: int) -> None:
    client = venue.client(wallet=kind)
    yes, _ = tokens(v2_market(venue))
    order = client.create_order(OrderArgsV2(position_id=yes, price=0.02, size=10, side="BUY"))
    if kind == 3:  # the ERC-7739 wrapper carries exchange V3's domain separator as the app domain
        _, v3 = auth.exchange_domain(137, False, 3)
        assert len(order.signature) == 2 + 2 * 317 and v3 == get_contract_config(137).exchange_v3
    placed = client.post_order(order)
    assert placed["status"] == "live"
    assert [o["maker_address"] for o in client.get_open_orders()] == [client.builder.funder]


def test_a_deposit_wallet_order_on_a_v2_market_signed_for_v2_is_refused_with_the_version_mismatch_text(
        venue: Venue) -> None:
    client = venue.client(wallet=3)
    yes, _ = tokens(v2_market(venue))
    as_token = client.create_order(OrderArgsV2(token_id=yes, price=0.02, size=10, side="BUY"))
    assert rejection(lambda: client.post_order(as_token)) == (400, MISMATCH)
    assert Decimal(client.get_balance_allowance(BalanceAllowanceParams(asset_type="COLLATERAL"))["balance"]) > 0


# ------------------------------------------------------------ neg-risk events on protocol v2

def test_gamma_serves_a_v2_neg_risk_event_whose_members_are_neg_risk_module_positions_tied_by_the_onchain_event(
        venue: Venue) -> None:
    (event,) = httpx.get(f"{venue.gamma}/events", params={"version": "v2"}).json()
    members = event["markets"]
    assert (event["version"], event["negRisk"], len(members)) == ("v2", True, 4)
    assert {m["id"] for m in members} == {m["id"] for m in venue.v2_neg_risk_markets}
    assert {m["onchainEventId"] for m in members} == {event["negRiskMarketID"]}
    for market in members:
        yes, no = tokens(market)
        assert (market["version"], market["negRisk"], market["resolutionStatus"]) == ("v2", True, "active")
        assert is_v2_position_id(yes) and f"{int(yes):064x}"[:2] == "02"  # the neg-risk module
        assert int(no) == int(yes) + 1 and market["conditionId"] == f"0x{int(yes):064x}"
        assert json.loads(market["positionIds"]) == [yes, no] and market["requestId"] == event["negRiskMarketID"]
    # The binary v2 markets stay on the binary module and are their own oracle requests.
    assert all(m["requestId"] == m["conditionId"] and "onchainEventId" not in m for m in venue.v2_markets)
    assert {e["version"] for e in httpx.get(f"{venue.gamma}/events", params={"limit": 50}).json()} == {"v1", "v2"}


def test_a_v2_neg_risk_order_is_signed_for_exchange_v3_rests_and_fills(venue: Venue) -> None:
    client = venue.client()
    yes, _ = tokens(venue.v2_neg_risk_markets[0])
    assert client.get_neg_risk(yes) is True  # a neg-risk market, yet its orders are for exchange V3
    order = client.create_order(OrderArgsV2(position_id=yes, price=0.01, size=10, side="BUY"))
    v3 = ExchangeOrderBuilderV2(get_contract_config(137).exchange_v3, 137, client.signer, domain_version="3")
    placed = client.post_order(order)
    assert placed["status"] == "live" and placed["orderID"] == v3.build_order_hash(v3.build_order_typed_data(order))
    _, ask = best(client, yes)
    crossing = client.create_and_post_order(OrderArgsV2(position_id=yes, price=float(ask), size=10, side="BUY"))
    assert crossing["status"] == "matched" and crossing["tradeIDs"]
    shares = client.get_balance_allowance(BalanceAllowanceParams(asset_type="CONDITIONAL-V2", token_id=yes))
    assert shares["balance"] == "10000000" and get_contract_config(137).exchange_v3 in shares["allowances"]


def test_a_v2_neg_risk_order_signed_for_the_neg_risk_v2_exchange_is_refused_with_the_version_mismatch_text(
        venue: Venue) -> None:
    client = venue.client()
    yes, _ = tokens(venue.v2_neg_risk_markets[1])
    # As a token id, /version 2 and /neg-risk true make the client sign for the neg-risk V2 exchange.
    as_token = client.create_order(OrderArgsV2(token_id=yes, price=0.01, size=10, side="BUY"))
    assert rejection(lambda: client.post_order(as_token)) == (400, MISMATCH)
    assert client.get_open_orders() == []


# ------------------------------------------------------------ our executor, through our adapter

def test_our_adapter_reads_a_v2_market_from_gamma_as_rules_for_exchange_v3(venue: Venue) -> None:
    import msgspec

    from services.venues.base import rules_from
    from services.venues.polymarket import schema
    from services.venues.polymarket.feed import market_new

    raw = httpx.get(f"{venue.gamma}/markets", params={"limit": 500}).content
    markets = msgspec.json.decode(raw, type=list[schema.GammaMarket])
    for market in markets:
        new = market_new(market, 0)
        v2 = market.version == "v2"
        assert new.protocol == ("v2" if v2 else "v1")
        assert {r.exchange_version for r in rules_from(new).values()} == {3 if v2 else 2}
        assert all(schema.is_v2_position_id(t) == v2 for t in market.parsed_clob_token_ids())


def test_the_executor_signs_a_v2_market_order_for_exchange_v3_and_it_rests_and_fills(tmp_path) -> None:
    from services import messages as m

    from .executor_harness import ExecutorMesh, order

    mesh = ExecutorMesh(Path(os.path.realpath(tmp_path)), seed=SEED + 1)
    try:
        market = mesh.venue.v2_markets[0]
        yes, _ = tokens(market)
        bid, ask = mesh.best(yes)
        resting = order("v2-rest", 0, yes, market["conditionId"], "BUY", "10", str(bid))
        crossing = order("v2-cross", 0, yes, market["conditionId"], "BUY", "10", str(ask), "FOK")
        mesh.push(resting)
        ack = mesh.wait(m.OrderAck, order_id=resting.id)[0]
        assert not mesh.of(m.OrderRejected, order_id=resting.id)
        assert [o["id"] for o in mesh.client.get_open_orders() if o["asset_id"] == yes] == [ack.venue_order_id]
        mesh.push(crossing)
        fill = mesh.wait(m.Fill, order_id=crossing.id)[0]
        assert fill.token_id == yes and fill.size == Decimal(10) and not mesh.of(m.OrderRejected, order_id=crossing.id)
    finally:
        mesh.close()
