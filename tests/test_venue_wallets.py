"""Every wallet type through the real py-clob-client-v2: EOA (0), proxy (1), Safe (2) and deposit wallet (3), with
wallets derived from the owner as the official clients derive them (polybot_venue/WALLETS.md)."""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
from eth_account import Account
from eth_utils import keccak
from py_clob_client_v2 import ClobClient
from py_clob_client_v2.clob_types import AssetType, BalanceAllowanceParams, OrderArgsV2

from polybot_venue import wallets
from polybot_venue.server import ready_made_account

from .test_venue_clob import best, rejection
from .venue_harness import Venue, tokens

SEED = 17
COLLATERAL = BalanceAllowanceParams(asset_type=AssetType.COLLATERAL)
NOT_THE_KEYS_SIGNER = "the order signer address has to be the address of the API KEY"
USE_DEPOSIT_WALLET = "maker address not allowed, please use the deposit wallet flow"
WALLET_OF = {1: wallets.proxy_wallet, 2: wallets.safe_wallet, 3: wallets.deposit_wallet_beacon}


@pytest.fixture(scope="module")
def venue(tmp_path_factory) -> Iterator[Venue]:
    venue = Venue(Path(os.path.realpath(tmp_path_factory.mktemp("wallets"))) / "s", SEED)
    yield venue
    venue.stop()


def wallet_client(venue: Venue, kind: int, funder: str | None = None, key: str | None = None,
                  collateral: int = 1_000) -> ClobClient:
    """A client for a new owner trading through its wallet of ``kind`` (or ``funder``), funded and approved as the
    owner would on chain (here through the admin endpoints)."""
    key = key or Account.create().key.hex()
    owner = Account.from_key(key).address
    funder = funder or (WALLET_OF[kind](owner) if kind else owner)
    client = ClobClient(venue.clob, chain_id=137, key=key, signature_type=kind, funder=funder)
    client.set_api_creds(client.create_or_derive_api_key())
    if collateral:
        venue.admin("fund", address=funder, collateral=collateral)
        venue.admin("approve", address=funder, exchange="all", unlimited=True)
    return client


# ------------------------------------------------------------ derivations

def test_the_proxy_init_code_hashes_to_the_relayer_clients_constant() -> None:
    c = wallets.CONSTANTS[137]
    assert "0x" + keccak(wallets.proxy_init_code(c.proxy_factory, c.proxy_implementation)).hex() == (
        "0xd21df8dc65880a8606f09fe0ce3df9b8869287ab0b058be05aa9e8af6330a00b")


def test_each_wallet_of_an_owner_is_the_address_polymarket_client_derives_for_it() -> None:
    owner = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"  # the vectors WALLETS.md §2 took from polymarket-client
    assert wallets.proxy_wallet(owner) == "0x365f0CA36Ae1f641E02fE3B7743673da42A13A70"
    assert wallets.safe_wallet(owner) == "0xd93B25cb943D14d0d34FBaF01Fc93a0f8b5F6E47"
    assert wallets.deposit_wallet_uups(owner) == "0xdf8b9E8f9AB23f261F6e1B171B7454ae6E46Ba76"
    assert wallets.deposit_wallet_beacon(owner) == "0xBc0fF067b7740Eff76C1ca93c875Ba6B890d6B50"


def test_a_real_mainnet_owner_derives_its_real_deposit_wallet() -> None:
    # py-clob-client-v2 issue #64: this EOA's deposit wallet on Polygon.
    owner = "0x14f30BA5B7e09789FE63a90ad8C0AC8e6eD90cD7"
    assert wallets.deposit_wallet_uups(owner) == "0xc3b18537e951175B063EA8CA755896a6705a88C6"
    assert wallets.deposit_wallets(owner) == ("0xbF810238e71C544b2677cA6Ea287D9735D3533f5",
                                              "0xc3b18537e951175B063EA8CA755896a6705a88C6")
    assert wallets.is_wallet_of(owner, "0xc3b18537e951175b063ea8ca755896a6705a88c6", wallets.POLY_1271)
    assert not wallets.is_wallet_of(owner, "0xc3b18537e951175B063EA8CA755896a6705a88C6", wallets.POLY_PROXY)


def test_amoy_has_no_proxy_wallet_and_no_known_beacon_wallet() -> None:
    owner = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    with pytest.raises(ValueError):
        wallets.proxy_wallet(owner, 80002)
    assert wallets.deposit_wallet_beacon(owner, 80002) is None
    assert wallets.safe_wallet(owner, 80002) == wallets.safe_wallet(owner, 137)


# ------------------------------------------------------------ trading through each wallet

@pytest.mark.parametrize("kind", [1, 2, 3], ids=["proxy", "safe", "deposit-wallet"])
def test_an_owner_trades_through_its_wallet_and_balance_allowance_reports_that_wallet(venue: Venue,
                                                                                      kind: int) -> None:
    client = wallet_client(venue, kind)
    wallet = client.builder.funder
    yes, _ = tokens(venue.market())
    resting = client.create_and_post_order(OrderArgsV2(token_id=yes, price=0.02, size=10, side="BUY"))
    assert resting["success"] and resting["status"] == "live"
    assert [o["maker_address"] for o in client.get_open_orders()] == [wallet]
    _, ask = best(client, yes)
    crossing = client.create_and_post_order(OrderArgsV2(token_id=yes, price=float(ask), size=10, side="BUY"))
    assert crossing["status"] == "matched" and crossing["tradeIDs"]
    spent = int(Decimal(crossing["makingAmount"]) * 10**6)
    assert client.get_balance_allowance(COLLATERAL)["balance"] == str(1_000_000_000 - spent)
    shares = client.get_balance_allowance(BalanceAllowanceParams(asset_type=AssetType.CONDITIONAL, token_id=yes))
    assert shares["balance"] == "10000000"
    # The owner's EOA itself holds nothing: balances are the funder wallet's.
    eoa = ClobClient(venue.clob, chain_id=137, key=client.signer.private_key, creds=client.creds)
    assert eoa.get_balance_allowance(COLLATERAL)["balance"] == "0"


def test_a_proxy_order_whose_maker_is_another_owners_proxy_is_refused(venue: Venue) -> None:
    someone_else = Account.create().address
    victim = wallets.proxy_wallet(someone_else)
    client = wallet_client(venue, 1, funder=victim)
    yes, _ = tokens(venue.market())
    order = client.create_order(OrderArgsV2(token_id=yes, price=0.02, size=10, side="BUY"))
    status, text = rejection(lambda: client.post_order(order))
    assert (status, text) == (400, "invalid signature")


def test_a_safe_order_signed_as_a_proxy_order_is_refused(venue: Venue) -> None:
    key = Account.create().key.hex()
    owner = Account.from_key(key).address
    client = wallet_client(venue, 1, funder=wallets.safe_wallet(owner), key=key)
    yes, _ = tokens(venue.market())
    status, text = rejection(lambda: client.create_and_post_order(OrderArgsV2(token_id=yes, price=0.02, size=10,
                                                                              side="BUY")))
    assert (status, text) == (400, "invalid signature")


def test_a_deposit_wallet_order_for_another_owners_wallet_is_refused_as_not_the_api_keys(venue: Venue) -> None:
    client = wallet_client(venue, 3, funder=wallets.deposit_wallet_beacon(Account.create().address))
    yes, _ = tokens(venue.market())
    status, text = rejection(lambda: client.create_and_post_order(OrderArgsV2(token_id=yes, price=0.02, size=10,
                                                                              side="BUY")))
    assert (status, text) == (400, NOT_THE_KEYS_SIGNER)


def test_an_owner_with_a_legacy_uups_deposit_wallet_trades_through_it(venue: Venue) -> None:
    key = Account.create().key.hex()
    client = wallet_client(venue, 3, funder=wallets.deposit_wallet_uups(Account.from_key(key).address), key=key)
    yes, _ = tokens(venue.market())
    assert client.get_balance_allowance(COLLATERAL)["balance"] == "1000000000"
    placed = client.create_and_post_order(OrderArgsV2(token_id=yes, price=0.02, size=10, side="BUY"))
    assert placed["status"] == "live"


def _tamper(signature: str, at: int) -> str:
    """Flip one bit of the byte at ``at`` of a 0x-hex signature."""
    i = 2 + 2 * at
    return signature[:i] + format(int(signature[i:i + 2], 16) ^ 1, "02x") + signature[i + 2:]


@pytest.mark.parametrize("at", [10, 65 + 5, 97 + 5, 129 + 5, 316],
                         ids=["inner-signature", "app-domain-separator", "contents-hash", "contents-type", "length"])
def test_a_deposit_wallet_order_with_a_tampered_erc7739_wrapper_is_refused(venue: Venue, at: int) -> None:
    client = wallet_client(venue, 3)
    yes, _ = tokens(venue.market())
    order = client.create_order(OrderArgsV2(token_id=yes, price=0.02, size=10, side="BUY"))
    assert len(order.signature) == 2 + 2 * 317
    status, text = rejection(lambda: client.post_order(replace(order, signature=_tamper(order.signature, at))))
    assert (status, text) == (400, "invalid signature")
    assert client.get_open_orders() == []


def test_a_deposit_wallet_order_with_a_plain_eoa_signature_is_refused(venue: Venue) -> None:
    client = wallet_client(venue, 3)
    yes, _ = tokens(venue.market())
    order = client.create_order(OrderArgsV2(token_id=yes, price=0.02, size=10, side="BUY"))
    status, text = rejection(lambda: client.post_order(replace(order, signature=order.signature[:2 + 130])))
    assert (status, text) == (400, "invalid signature")


# ------------------------------------------------------------ the deposit-wallet flow for new accounts

@pytest.fixture(scope="module")
def strict_venue(tmp_path_factory) -> Iterator[Venue]:
    venue = Venue(Path(os.path.realpath(tmp_path_factory.mktemp("strict"))) / "s", SEED + 1, 100,
                  "--still", "--deposit-wallet-flow")
    yield venue
    venue.stop()


def test_the_deposit_wallet_flow_refuses_a_new_accounts_eoa_order_and_accepts_its_deposit_wallet_order(
        strict_venue: Venue) -> None:
    key = Account.create().key.hex()
    yes, _ = tokens(strict_venue.market())
    eoa = wallet_client(strict_venue, 0, key=key)
    status, text = rejection(lambda: eoa.create_and_post_order(OrderArgsV2(token_id=yes, price=0.02, size=10,
                                                                           side="BUY")))
    assert (status, text) == (400, USE_DEPOSIT_WALLET)
    deposit = wallet_client(strict_venue, 3, key=key)
    placed = deposit.create_and_post_order(OrderArgsV2(token_id=yes, price=0.02, size=10, side="BUY"))
    assert placed["status"] == "live"


def test_the_deposit_wallet_flow_lets_the_ready_made_account_trade_from_its_eoa(strict_venue: Venue) -> None:
    client = strict_venue.client(key=ready_made_account(strict_venue.seed).private_key)
    yes, _ = tokens(strict_venue.market())
    placed = client.create_and_post_order(OrderArgsV2(token_id=yes, price=0.02, size=10, side="BUY"))
    assert placed["status"] == "live"
