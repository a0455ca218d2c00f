"""Deposit-wallet session signers: a key the wallet has authorised signs orders for it inside the unified SDK's
session envelope (polybot_venue/WALLETS.md §1, §4). The unified SDK drives the whole life of one (its own venv, as in
test_venue_unified_sdk.py); py-clob-client-v2, which knows no envelope, shows what a bare session signature gets."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from eth_abi import encode as abi_encode
from eth_account import Account
from py_clob_client_v2.clob_types import OrderArgsV2

from polybot_venue import wallets
from polybot_venue.app import INVALID_SIGNATURE

from .test_venue_unified_sdk import _flow_env, _run_flow, _sdk_python
from .test_venue_wallets import NOT_THE_KEYS_SIGNER
from .venue_harness import Venue, rejection, tokens

SEED = 29
MAGIC = "6492" * 16  # the envelope's last 32 bytes (polymarket-client _internal/wallet.py)


@pytest.fixture(scope="module")
def venue(tmp_path_factory) -> Iterator[Venue]:
    venue = Venue(Path(os.path.realpath(tmp_path_factory.mktemp("session"))) / "s", SEED)
    yield venue
    venue.stop()


def funded(venue: Venue, wallet: str) -> str:
    venue.admin("fund", address=wallet, collateral=1_000)
    venue.admin("approve", address=wallet, exchange="all", unlimited=True)
    return wallet


# ------------------------------------------------------------ the unified SDK, which signs in the envelope

def test_the_unified_sdk_trades_through_a_session_key_only_while_the_wallet_authorises_it_for_the_clob(
        venue: Venue) -> None:
    python = _sdk_python()  # a skip when the package index is out of reach
    owner, session, stranger = Account.create(), Account.create(), Account.create()
    wallet = funded(venue, wallets.deposit_wallet_beacon(owner.address))
    other_wallet = funded(venue, wallets.deposit_wallet_beacon(stranger.address))
    yes, _ = tokens(venue.market())
    r = _run_flow(python, venue, _flow_env(
        venue, SDK_SESSION_TOKEN=yes, SDK_SESSION_OWNER_KEY=owner.key.hex(), SDK_SESSION_KEY=session.key.hex(), SDK_SESSION_SIGNER=session.address,
        SDK_SESSION_WALLET=wallet, SDK_SESSION_OTHER_WALLET=other_wallet), script="session_keys.py")

    # Both clients trade for the owner's deposit wallet; the session key's does not derive it, so the SDK takes it
    # for a session signer.
    assert r["wallet_types"] == ["DEPOSIT_WALLET", "DEPOSIT_WALLET"] and r["wallets"] == [wallet, wallet]
    assert r["keys_before"] == [] and r["keys_after"] == []
    for refused in ("unauthorised", "other_wallet", "other_scope", "revoked"):
        assert "RequestRejectedError" in r[refused]["raised"], (refused, r[refused])
        assert (r[refused]["status"], r[refused]["message"]) == (400, NOT_THE_KEYS_SIGNER), refused

    # Authorised for the CLOB, the key is listed to the owner and its orders rest and fill for the wallet.
    (key,) = r["keys"]
    assert (key["address"], key["scopes"]) == (session.address, ["CLOB"])
    assert 0 < key["valid_until"] - time.time() <= 4_315 * 3600
    signed = r["signed"]
    assert (signed["maker"], signed["signer"], signed["signature_type"]) == (wallet, wallet, 3)
    assert signed["signature"].endswith(MAGIC) and len(signed["signature"]) > 2 + 2 * 317 + len(MAGIC)
    assert (r["placed"]["ok"], r["placed"]["status"]) == (True, "live")
    assert r["open"] == [[r["placed"]["order_id"], wallet]] and r["canceled"] == [r["placed"]["order_id"]]
    assert int(r["balance"]) == 1_000 * 10**6  # the wallet's balance, as its session signer asks for it
    assert r["crossing"]["status"] == "matched"
    assert [t[0] for t in r["trades"]] == r["crossing"]["trade_ids"]
    assert all((maker, side) == (wallet, "TAKER") for _, maker, side in r["trades"])


# ------------------------------------------------------------ py-clob-client-v2, which signs bare

def test_a_session_keys_bare_signature_is_refused_before_and_after_the_wallet_authorises_the_key(
        venue: Venue) -> None:
    owner = Account.create()
    wallet = wallets.deposit_wallet_beacon(owner.address)
    # The session key signs the order's ERC-7739 wrapper for the owner's wallet, as py-clob-client-v2 does for
    # any POLY_1271 key: right bytes, but no envelope naming the key as a session signer.
    client = venue.client(wallet=3, funder=wallet)
    yes, _ = tokens(venue.market())
    order = client.create_order(OrderArgsV2(token_id=yes, price=0.02, size=10, side="BUY"))
    assert len(order.signature) == 2 + 2 * 317
    assert rejection(lambda: client.post_order(order)) == (400, NOT_THE_KEYS_SIGNER)
    venue.admin("session-key", wallet=wallet, signer=client.get_address())
    # Now the key is the wallet's, but bare, the wallet would read the signature as its owner's: it does not verify.
    assert rejection(lambda: client.post_order(order)) == (400, INVALID_SIGNATURE)
    assert client.get_open_orders() == []


def _envelope(signer_id: bytes, second: bytes, inner: bytes) -> str:
    return "0x" + (abi_encode(["bytes32", "bytes32", "bytes"], [signer_id, second, inner]) + bytes.fromhex(MAGIC)).hex()


@pytest.mark.parametrize("malformed", ["second-word", "signer-id-high-bytes", "truncated", "someone-elses-id"])
def test_a_malformed_or_misaddressed_session_envelope_is_refused(venue: Venue, malformed: str) -> None:
    owner = Account.create()
    wallet = wallets.deposit_wallet_beacon(owner.address)
    client = venue.client(wallet=3, funder=wallet)
    session = client.get_address()
    venue.admin("session-key", wallet=wallet, signer=session)
    yes, _ = tokens(venue.market())
    order = client.create_order(OrderArgsV2(token_id=yes, price=0.02, size=10, side="BUY"))
    inner, signer_id = bytes.fromhex(order.signature[2:]), bytes(12) + bytes.fromhex(session[2:])
    signature, expected = {
        "second-word": (_envelope(signer_id, b"\x01" * 32, inner), INVALID_SIGNATURE),
        "signer-id-high-bytes": (_envelope(b"\x01" + signer_id[1:], bytes(32), inner), INVALID_SIGNATURE),
        "truncated": (_envelope(signer_id, bytes(32), inner)[:-2 * 40] + MAGIC, INVALID_SIGNATURE),
        # An envelope naming another session signer: the key that posts is not the one named.
        "someone-elses-id": (_envelope(bytes(12) + bytes.fromhex(Account.create().address[2:]), bytes(32), inner),
                             NOT_THE_KEYS_SIGNER),
    }[malformed]
    assert rejection(lambda: client.post_order(replace(order, signature=signature))) == (400, expected)
    assert client.get_open_orders() == []


# ------------------------------------------------------------ the stand-in for the wallet's own calls

@pytest.mark.parametrize("body, complaint", [
    ({"wallet": "0x12", "signer": "0x" + "11" * 20}, "wallet"),
    ({"wallet": "0x" + "11" * 20, "signer": 7}, "signer"),
    ({"wallet": "0x" + "11" * 20, "signer": "0x" + "22" * 20, "scopes": ["ALL", "CLOB"]}, "scopes"),
    ({"wallet": "0x" + "11" * 20, "signer": "0x" + "22" * 20, "scopes": []}, "scopes"),
    ({"wallet": "0x" + "11" * 20, "signer": "0x" + "22" * 20, "valid_until": 1}, "valid_until"),
    ({"wallet": "0x" + "11" * 20, "signer": "0x" + "22" * 20, "valid_until": True}, "valid_until"),
    ({"wallet": "0x" + "11" * 20, "signer": "0x" + "22" * 20, "valid_until": 10**30}, "valid_until"),
])
def test_the_session_key_admin_endpoint_refuses_what_the_wallet_could_not_authorise(
        venue: Venue, body: dict, complaint: str) -> None:
    answer = httpx.post(f"{venue.clob}/_admin/session-key", json=body)
    assert answer.status_code == 400 and complaint in answer.json()["error"], answer.text


def test_a_grant_lapses_at_its_expiry_and_covers_only_its_scopes() -> None:
    keys, wallet, signer = wallets.SessionKeys(), "0x" + "aa" * 20, "0x" + "bb" * 20
    keys.authorize(wallet, wallets.SessionKey(Account.create().address, ("ALL",), 5_000))
    keys.authorize(wallet.upper().replace("0X", "0x"), wallets.SessionKey(signer, ("COMBOSRFQ",), 1_000))
    assert [k.address.lower() for k in keys.active(wallet, 999)][1:] == [signer]
    assert not keys.allows(wallet, signer, wallets.CLOB_SCOPE, 999)  # another venue's scope only
    assert keys.allows(wallet, signer, "COMBOSRFQ", 999) and not keys.allows(wallet, signer, "COMBOSRFQ", 1_000)
    assert len(keys.active(wallet, 1_000)) == 1 and keys.wallet_of(signer, "COMBOSRFQ", 1_000) is None
    assert keys.revoke(wallet, signer) and not keys.revoke(wallet, signer)
