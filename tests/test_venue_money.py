"""Money as on the real venue, through the real py-clob-client-v2: a new wallet has nothing, an order needs balance
and the allowance of its market's exchange, and the admin endpoints stand in for deposits and approvals. A new
account's way from refused to trading is in test_venue_py_clob_client; here are the finer cases."""
from __future__ import annotations

import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from py_clob_client_v2.clob_types import AssetType, BalanceAllowanceParams, OrderArgsV2

from polybot_venue.server import LocalVenue, VenueOptions, ready_made_account
from services.venues import base
from services.venues.polymarket.client import Clob

from .venue_harness import Venue, best, rejection, tokens

SEED = 13
EXCHANGE = "0xE111180000d2663C0091e4f400237545B87B996B"
NEG_RISK_EXCHANGE = "0xe2222d279d744050d28e00520010520000310F59"
EXCHANGE_V3 = "0xe3333700cA9d93003F00f0F71f8515005F6c00Aa"  # protocol-v2 positions settle here
MAX = str(2**256 - 1)
COLLATERAL = BalanceAllowanceParams(asset_type=AssetType.COLLATERAL)
REFUSED = "not enough balance / allowance"


@pytest.fixture(scope="module")
def venue(tmp_path_factory) -> Iterator[Venue]:
    venue = Venue(Path(os.path.realpath(tmp_path_factory.mktemp("money"))) / "s", SEED)
    yield venue
    venue.stop()


def conditional(token: str) -> BalanceAllowanceParams:
    return BalanceAllowanceParams(asset_type=AssetType.CONDITIONAL, token_id=token)


def test_an_allowance_that_open_orders_use_up_refuses_the_next_order(venue: Venue) -> None:
    client = venue.client(funded=False)
    address = client.get_address()
    yes, _ = tokens(venue.market())
    bid, _ = best(client, yes)
    resting = OrderArgsV2(token_id=yes, price=float(bid), size=5, side="BUY")
    allowance = 5 * bid * Decimal("1.5")  # enough for one such order (and its fee), not for two
    venue.admin("fund", address=address, collateral=1000)
    venue.admin("approve", address=address, exchange="all", amount=str(allowance))
    assert client.post_order(client.create_order(resting))["status"] == "live"
    status, text = rejection(lambda: client.post_order(client.create_order(resting)))
    assert status == 400 and text.startswith(f"{REFUSED}: the allowance is not enough -> spender: {EXCHANGE}, "
                                             f"allowance: {int(allowance * 10**6)}, sum of active orders: ")
    # Cancelling gives the allowance back; raising it lets both rest.
    client.cancel_all()
    assert client.post_order(client.create_order(resting))["status"] == "live"
    venue.admin("approve", address=address, amount=100)
    assert client.post_order(client.create_order(resting))["status"] == "live"


def test_a_neg_risk_order_needs_the_neg_risk_exchanges_allowance(venue: Venue) -> None:
    client = venue.client(funded=False)
    address = client.get_address()
    member = next(m for m in httpx.get(f"{venue.gamma}/markets", params={"limit": 100}).json() if m["negRisk"])
    yes, _ = tokens(member)
    venue.admin("fund", address=address, collateral=100)
    venue.admin("approve", address=address, exchange=EXCHANGE, unlimited=True)
    bid, _ = best(client, yes)
    order = OrderArgsV2(token_id=yes, price=float(bid), size=5, side="BUY")
    status, text = rejection(lambda: client.post_order(client.create_order(order)))
    assert status == 400 and f"spender: {NEG_RISK_EXCHANGE}, allowance: 0" in text
    venue.admin("approve", address=address, exchange=NEG_RISK_EXCHANGE, unlimited=True)
    assert client.get_balance_allowance(COLLATERAL)["allowances"] == {EXCHANGE: MAX, NEG_RISK_EXCHANGE: MAX,
                                                                      EXCHANGE_V3: "0"}
    assert client.post_order(client.create_order(order))["status"] == "live"


def test_selling_needs_the_shares_and_the_exchanges_approval_to_move_them(venue: Venue) -> None:
    client = venue.client(funded=False)
    address = client.get_address()
    yes, _ = tokens(venue.market())
    _, ask = best(client, yes)
    sell = OrderArgsV2(token_id=yes, price=float(ask), size=10, side="SELL")  # rests at the ask
    status, text = rejection(lambda: client.post_order(client.create_order(sell)))
    assert status == 400 and text.startswith(f"{REFUSED}: the balance is not enough -> balance: 0, ")
    venue.admin("fund", address=address, shares={yes: 10})
    venue.admin("approve", address=address, amount=100)  # pUSD only: the tokens are not approved yet
    assert client.get_balance_allowance(conditional(yes)) == {
        "balance": "10000000", "allowances": {EXCHANGE: "0", NEG_RISK_EXCHANGE: "0", EXCHANGE_V3: "0"}}
    status, text = rejection(lambda: client.post_order(client.create_order(sell)))
    assert status == 400 and text.startswith(f"{REFUSED}: the allowance is not enough -> spender: {EXCHANGE}")
    venue.admin("approve", address=address, exchange=EXCHANGE, conditional=True)
    assert client.get_balance_allowance(conditional(yes))["allowances"] == {EXCHANGE: MAX, NEG_RISK_EXCHANGE: "0",
                                                                            EXCHANGE_V3: "0"}
    assert client.post_order(client.create_order(sell))["status"] == "live"


def test_balance_allowance_refuses_an_unknown_asset_type_and_a_conditional_without_token(venue: Venue) -> None:
    client = venue.client()
    assert rejection(lambda: client.get_balance_allowance(BalanceAllowanceParams(asset_type="SHARES"))) == (
        400, "invalid asset_type SHARES: COLLATERAL, CONDITIONAL or CONDITIONAL-V2")
    assert rejection(lambda: client.get_balance_allowance(BalanceAllowanceParams(asset_type=AssetType.CONDITIONAL))
                     ) == (400, "token_id is required for asset_type CONDITIONAL")


def test_the_admin_endpoints_refuse_what_no_chain_would_do(venue: Venue) -> None:
    address = venue.client(funded=False).get_address()
    for action, body, says in (
            ("fund", {"address": "alice", "collateral": 5}, "address"),
            ("fund", {"address": address, "collateral": -5}, "not negative"),
            ("fund", {"address": address, "shares": {"no-such-token": 5}}, "market not found"),
            ("approve", {"address": address, "exchange": "0x" + "00" * 20, "amount": 5}, "unknown exchange"),
            ("approve", {"address": address}, "amount"),
    ):
        answer = httpx.post(f"{venue.clob}/_admin/{action}", json=body)
        assert answer.status_code in (400, 404) and says in answer.json()["error"], (action, body, answer.text)


def test_the_ready_made_account_is_funded_and_approved_by_default(venue: Venue) -> None:
    client = venue.client(ready_made_account(SEED).private_key)
    assert client.get_balance_allowance(COLLATERAL) == {"balance": "10000000000",
                                                        "allowances": {EXCHANGE: MAX, NEG_RISK_EXCHANGE: MAX,
                                                                       EXCHANGE_V3: MAX}}


def test_the_knob_leaves_the_ready_made_account_as_empty_as_any_other(tmp_path: Path) -> None:
    venue = Venue(Path(os.path.realpath(tmp_path)) / "s", SEED, 100, "--still", "--no-fund-test-account")
    try:
        client = venue.client(ready_made_account(SEED).private_key)
        assert client.get_balance_allowance(COLLATERAL) == {"balance": "0", "allowances": {EXCHANGE: "0",
                                                                                           NEG_RISK_EXCHANGE: "0",
                                                                                           EXCHANGE_V3: "0"}}
    finally:
        venue.stop()


def test_fund_new_accounts_funds_and_approves_each_account_once() -> None:
    venue = LocalVenue(VenueOptions(seed=SEED, markets=2, events=1, still=True, fund_test_account=False,
                                    fund_new_accounts=True, starting_collateral=250))
    address = "0x" + "ab" * 20
    for nonce in (0, 1):
        venue.state.register(address, nonce)
    account = venue.state.engine.account(address)
    assert account.collateral == 250 and account.approved == set(venue.state.engine.exchanges)
    assert LocalVenue(VenueOptions(seed=SEED, markets=2, events=1, still=True)).state.engine.accounts.get(
        address) is None


def test_the_adapter_reads_a_finite_allowance_and_maps_the_refusal_to_balance_with_the_venues_text(
        venue: Venue) -> None:
    key = "0x" + "5a" * 32
    client = venue.client(key, funded=False)
    market = venue.market()
    yes, _ = tokens(market)
    venue.admin("fund", address=client.get_address(), collateral=100)
    venue.admin("approve", address=client.get_address(), amount=30)
    clob = Clob(venue.clob, 137, key)
    clob.connect()
    assert clob.balance() == base.Balance(collateral=Decimal(100), allowance=Decimal(30))
    rules = clob.rules(yes, market["conditionId"])
    bid, _ = best(client, yes)
    size = (Decimal(40) / bid).to_integral_value()  # about 40 pUSD: within the balance, beyond the allowance
    order = base.OrderRequest(client_id="c1", token_id=yes, market=market["conditionId"], side="BUY", price=bid,
                              size=size, order_type="GTC", rules=rules, created_ms=1)
    assert clob.prepare([order])[0].ok
    placed, = clob.place([order])
    assert placed.code == base.BALANCE and placed.message.startswith(
        f"{REFUSED}: the allowance is not enough -> spender: {EXCHANGE}, allowance: 30000000, ")
