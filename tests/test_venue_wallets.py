"""Wallets in depth, through the real py-clob-client-v2: each wallet of an owner derived as the official clients
derive it (polybot_venue/WALLETS.md), and the orders the venue refuses because the wallet or its signature is not the
owner's. Plain trading through each wallet type is in test_venue_py_clob_client."""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from eth_account import Account
from eth_utils import keccak
from py_clob_client_v2.clob_types import AssetType, BalanceAllowanceParams, OrderArgsV2

from polybot_venue import wallets
from polybot_venue.server import ready_made_account

from .venue_harness import Venue, rejection, tokens

SEED = 17
COLLATERAL = BalanceAllowanceParams(asset_type=AssetType.COLLATERAL)
NOT_THE_KEYS_SIGNER = "the order signer address has to be the address of the API KEY"
USE_DEPOSIT_WALLET = "maker address not allowed, please use the deposit wallet flow"


@pytest.fixture(scope="module")
def venue(tmp_path_factory) -> Iterator[Venue]:
    venue = Venue(Path(os.path.realpath(tmp_path_factory.mktemp("wallets"))) / "s", SEED)
    yield venue
    venue.stop()


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


# ------------------------------------------------------------ wallets and signatures that are not the owner's

def test_a_proxy_order_whose_maker_is_another_owners_proxy_is_refused(venue: Venue) -> None:
    someone_else = Account.create().address
    victim = wallets.proxy_wallet(someone_else)
    client = venue.client(wallet=1, funder=victim)
    yes, _ = tokens(venue.market())
    order = client.create_order(OrderArgsV2(token_id=yes, price=0.02, size=10, side="BUY"))
    status, text = rejection(lambda: client.post_order(order))
    assert (status, text) == (400, "invalid signature")


def test_a_safe_order_signed_as_a_proxy_order_is_refused(venue: Venue) -> None:
    key = Account.create().key.hex()
    owner = Account.from_key(key).address
    client = venue.client(key, funded=True, wallet=1, funder=wallets.safe_wallet(owner))
    yes, _ = tokens(venue.market())
    status, text = rejection(lambda: client.create_and_post_order(OrderArgsV2(token_id=yes, price=0.02, size=10,
                                                                              side="BUY")))
    assert (status, text) == (400, "invalid signature")


def test_a_deposit_wallet_order_for_another_owners_wallet_is_refused_as_not_the_api_keys(venue: Venue) -> None:
    client = venue.client(wallet=3, funder=wallets.deposit_wallet_beacon(Account.create().address))
    yes, _ = tokens(venue.market())
    status, text = rejection(lambda: client.create_and_post_order(OrderArgsV2(token_id=yes, price=0.02, size=10,
                                                                              side="BUY")))
    assert (status, text) == (400, NOT_THE_KEYS_SIGNER)


def test_an_owner_with_a_legacy_uups_deposit_wallet_trades_through_it(venue: Venue) -> None:
    key = Account.create().key.hex()
    client = venue.client(key, funded=True, wallet=3, funder=wallets.deposit_wallet_uups(Account.from_key(key).address))
    yes, _ = tokens(venue.market())
    assert client.get_balance_allowance(COLLATERAL)["balance"] == "10000000000"
    placed = client.create_and_post_order(OrderArgsV2(token_id=yes, price=0.02, size=10, side="BUY"))
    assert placed["status"] == "live"


def _tamper(signature: str, at: int) -> str:
    """Flip one bit of the byte at ``at`` of a 0x-hex signature."""
    i = 2 + 2 * at
    return signature[:i] + format(int(signature[i:i + 2], 16) ^ 1, "02x") + signature[i + 2:]


@pytest.mark.parametrize("at", [10, 65 + 5, 97 + 5, 129 + 5, 316],
                         ids=["inner-signature", "app-domain-separator", "contents-hash", "contents-type", "length"])
def test_a_deposit_wallet_order_with_a_tampered_erc7739_wrapper_is_refused(venue: Venue, at: int) -> None:
    client = venue.client(wallet=3)
    yes, _ = tokens(venue.market())
    order = client.create_order(OrderArgsV2(token_id=yes, price=0.02, size=10, side="BUY"))
    assert len(order.signature) == 2 + 2 * 317
    status, text = rejection(lambda: client.post_order(replace(order, signature=_tamper(order.signature, at))))
    assert (status, text) == (400, "invalid signature")
    assert client.get_open_orders() == []


def test_a_deposit_wallet_order_with_a_plain_eoa_signature_is_refused(venue: Venue) -> None:
    client = venue.client(wallet=3)
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
    eoa = strict_venue.client(key, funded=True)
    status, text = rejection(lambda: eoa.create_and_post_order(OrderArgsV2(token_id=yes, price=0.02, size=10,
                                                                           side="BUY")))
    assert (status, text) == (400, USE_DEPOSIT_WALLET)
    deposit = strict_venue.client(key, funded=True, wallet=3)
    placed = deposit.create_and_post_order(OrderArgsV2(token_id=yes, price=0.02, size=10, side="BUY"))
    assert placed["status"] == "live"


def test_the_deposit_wallet_flow_lets_the_ready_made_account_trade_from_its_eoa(strict_venue: Venue) -> None:
    client = strict_venue.client(key=ready_made_account(strict_venue.seed).private_key)
    yes, _ = tokens(strict_venue.market())
    placed = client.create_and_post_order(OrderArgsV2(token_id=yes, price=0.02, size=10, side="BUY"))
    assert placed["status"] == "live"
