"""The venue's relayer and JSON-RPC on the wire: keys, deposit-wallet deployments and batches, EOA transactions, and
the refusals for everything they do not run. (tests/test_venue_unified_sdk.py drives both with the unified SDK.)"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak
from py_clob_client_v2.clob_types import AssetType, BalanceAllowanceParams

from polybot_venue.chain import CONTRACTS
from polybot_venue.relayer import batch_typed_data
from polybot_venue.wallets import CONSTANTS, deposit_wallet_beacon

from .conftest import wait_for
from .venue_harness import Venue

SEED = 23
PUSD, CTF = CONTRACTS[137].collateral, CONTRACTS[137].conditional_tokens
FACTORY = CONSTANTS[137].deposit_wallet_factory
V2_EXCHANGE = "0xE111180000d2663C0091e4f400237545B87B996B"
EXCHANGE_V3 = "0xe3333700cA9d93003F00f0F71f8515005F6c00Aa"
STATES = ["STATE_NEW", "STATE_EXECUTED", "STATE_MINED", "STATE_CONFIRMED"]


@pytest.fixture(scope="module")
def venue(tmp_path_factory) -> Iterator[Venue]:
    venue = Venue(Path(os.path.realpath(tmp_path_factory.mktemp("relayer"))) / "s", SEED)
    yield venue
    venue.stop()


def call_data(signature: str, types: list[str], args: list) -> str:
    return "0x" + (keccak(text=signature)[:4] + abi_encode(types, args)).hex()


def approve(spender: str, amount: int) -> dict:
    return {"target": PUSD, "value": "0", "data": call_data("approve(address,uint256)", ["address", "uint256"],
                                                             [spender, amount])}


def builder_headers(key: dict, method: str, path: str, body: str = "") -> dict[str, str]:
    """POLY_BUILDER_* headers as the builder signing SDKs compute them."""
    timestamp = str(int(time.time()))
    secret = base64.urlsafe_b64decode(key["secret"])
    digest = hmac.new(secret, f"{timestamp}{method}{path}{body}".encode(), hashlib.sha256).digest()
    return {"POLY_BUILDER_API_KEY": key["key"], "POLY_BUILDER_PASSPHRASE": key["passphrase"],
            "POLY_BUILDER_TIMESTAMP": timestamp, "POLY_BUILDER_SIGNATURE": base64.urlsafe_b64encode(digest).decode()}


def relayer_headers(venue: Venue, owner: str) -> dict[str, str]:
    key = venue.admin("relayer-key", address=owner)
    return {"RELAYER_API_KEY": key["apiKey"], "RELAYER_API_KEY_ADDRESS": key["address"]}


def submit(venue: Venue, payload: dict, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{venue.clob}/submit", content=json.dumps(payload, separators=(",", ":")), headers=headers)


def create(owner: str) -> dict:
    return {"type": "WALLET-CREATE", "from": owner, "to": FACTORY, "metadata": "Deploy Deposit Wallet"}


def confirmed(venue: Venue, tx_id: str) -> list[dict]:
    """Poll the transaction until it is confirmed; every distinct answer on the way."""
    seen: list[dict] = []

    def done() -> bool:
        answer = httpx.get(f"{venue.clob}/v1/account/transactions/{tx_id}").json()
        if not seen or seen[-1] != answer:
            seen.append(answer)
        return answer["state"] == "STATE_CONFIRMED"
    wait_for(done, timeout=10, what=f"relayer transaction {tx_id} to confirm", every=0.01)
    return seen


def batch(key: str, wallet: str, nonce: int, calls: list[dict], deadline: int | None = None) -> dict:
    """A deposit wallet batch signed by ``key``, as the unified SDK submits it."""
    owner = Account.from_key(key)
    deadline = deadline if deadline is not None else int(time.time()) + 600
    typed = batch_typed_data(wallet, nonce, deadline, [(c["target"], int(c["value"]), bytes.fromhex(c["data"][2:]))
                                                       for c in calls], 137)
    signature = owner.sign_message(encode_typed_data(full_message=typed)).signature
    return {"type": "WALLET", "from": owner.address, "to": FACTORY, "nonce": str(nonce),
            "signature": "0x" + signature.hex(), "metadata": "",
            "depositWalletParams": {"depositWallet": wallet, "deadline": str(deadline), "calls": calls}}


def rpc_answer(venue: Venue, body) -> dict | list:
    answer = httpx.post(f"{venue.clob}/rpc", content=body if isinstance(body, bytes) else json.dumps(body))
    assert answer.status_code == 200, answer.text
    return answer.json()


def rpc(venue: Venue, method: str, *params):
    answer = rpc_answer(venue, {"jsonrpc": "2.0", "id": 7, "method": method, "params": list(params)})
    assert answer["id"] == 7 and "error" not in answer, answer
    return answer["result"]


def rpc_error(venue: Venue, method: str, *params) -> dict:
    answer = rpc_answer(venue, {"jsonrpc": "2.0", "id": 7, "method": method, "params": list(params)})
    assert "result" not in answer, answer
    return answer["error"]


def eth_call(venue: Venue, to: str, signature: str, types: list[str], args: list) -> int:
    return int(rpc(venue, "eth_call", {"to": to, "data": call_data(signature, types, args)}, "latest"), 16)


def deployed_wallet(venue: Venue) -> tuple[str, str, dict[str, str]]:
    """A new owner's key, its deposit wallet deployed through the relayer, and its relayer key's headers."""
    owner = Account.create()
    headers = relayer_headers(venue, owner.address)
    answer = submit(venue, create(owner.address), headers)
    assert answer.status_code == 200, answer.text
    confirmed(venue, answer.json()["transactionID"])
    return owner.key.hex(), deposit_wallet_beacon(owner.address), headers


def test_a_builder_key_from_the_clob_deploys_a_deposit_wallet_whose_transaction_goes_from_new_to_confirmed(
        venue: Venue) -> None:
    clob = venue.client()
    key = clob.create_builder_api_key()
    assert key["key"] in [k["key"] for k in clob.get_builder_api_keys()]
    owner = Account.create().address
    wallet = deposit_wallet_beacon(owner)

    def deployed() -> dict:
        return httpx.get(f"{venue.clob}/deployed", params={"address": wallet, "type": "WALLET"}).json()
    assert deployed() == {"deployed": False}

    body = json.dumps(create(owner), separators=(",", ":"))
    answer = httpx.post(f"{venue.clob}/submit", content=body, headers=builder_headers(key, "POST", "/submit", body))
    assert answer.status_code == 200, answer.text
    submitted = answer.json()
    assert submitted["state"] == "STATE_NEW" and "transactionHash" not in submitted
    seen = confirmed(venue, submitted["transactionID"])
    # The states only move forward; the hash appears once the relayer has broadcast the transaction.
    assert [STATES.index(s["state"]) for s in seen] == sorted({STATES.index(s["state"]) for s in seen})
    assert all((s["transaction_hash"] is None) == (s["state"] == "STATE_NEW") for s in seen)
    final = seen[-1]
    assert (final["transaction_id"], final["type"], final["from"]) == (submitted["transactionID"], "WALLET-CREATE",
                                                                       owner)
    assert deployed() == {"deployed": True}
    assert rpc(venue, "eth_getTransactionReceipt", final["transaction_hash"])["status"] == "0x1"
    (listed,) = httpx.get(f"{venue.clob}/transaction", params={"id": submitted["transactionID"]}).json()
    assert (listed["transactionHash"], listed["state"], listed["proxyAddress"]) == (
        final["transaction_hash"], "STATE_CONFIRMED", wallet)

    again = submit(venue, create(owner), builder_headers(key, "POST", "/submit", body))
    assert again.status_code == 400 and "already deployed" in again.json()["error"]


def test_submissions_without_a_live_key_for_their_sender_are_refused(venue: Venue) -> None:
    clob = venue.client()
    key = clob.create_builder_api_key()
    owner = Account.create().address
    body = json.dumps(create(owner), separators=(",", ":"))

    def refused(headers: dict[str, str], content: str = body) -> tuple[int, str]:
        answer = httpx.post(f"{venue.clob}/submit", content=content, headers=headers)
        return answer.status_code, answer.json()["error"]

    assert refused({})[0] == 401
    assert refused({**builder_headers(key, "POST", "/submit", body), "POLY_BUILDER_PASSPHRASE": "x"}) == (
        401, "invalid builder api key")
    signed_for_another_body = builder_headers(key, "POST", "/submit", body.replace(owner, owner.lower()))
    assert refused(signed_for_another_body) == (401, "invalid builder signature")
    mine = relayer_headers(venue, owner)
    assert refused({**mine, "RELAYER_API_KEY_ADDRESS": Account.create().address})[0] == 401
    for_someone_else = json.dumps(create(Account.create().address))
    status, error = refused(mine, for_someone_else)
    assert status == 403 and "acts only for its own address" in error
    # py-clob-client-v2 revokes with L2 headers alone, which do not say which key: refused, with the way to say it.
    with pytest.raises(Exception, match="POLY_BUILDER"):
        clob.revoke_builder_api_key()
    revoke = httpx.delete(f"{venue.clob}/auth/builder-api-key",
                          headers=builder_headers(key, "DELETE", "/auth/builder-api-key"))
    assert revoke.json() == "OK"
    assert refused(builder_headers(key, "POST", "/submit", body)) == (401, "invalid builder api key")
    (listed,) = [k for k in clob.get_builder_api_keys() if k["key"] == key["key"]]
    assert listed["revokedAt"] is not None


def test_a_signed_batch_runs_its_approvals_at_the_wallets_next_nonce_and_anything_else_is_refused(
        venue: Venue) -> None:
    key, wallet, headers = deployed_wallet(venue)
    owner = Account.from_key(key).address
    calls = [approve(V2_EXCHANGE, 123 * 10**6),
             {"target": CTF, "value": "0",
              "data": call_data("setApprovalForAll(address,bool)", ["address", "bool"], [V2_EXCHANGE, True])}]

    def refusal(payload: dict) -> str:
        answer = submit(venue, payload, headers)
        assert answer.status_code == 400, answer.text
        return answer.json()["error"]

    transfer = {"target": PUSD, "value": "0", "data": call_data("transfer(address,uint256)", ["address", "uint256"],
                                                                 [owner, 1])}
    assert refusal(batch(key, wallet, 5, calls)) == "batch nonce 5 does not match on-chain nonce 0"
    assert "deadline" in refusal(batch(key, wallet, 0, calls, deadline=int(time.time()) - 5))
    stranger = batch(Account.create().key.hex(), wallet, 0, calls)
    assert "invalid batch signature" in refusal({**stranger, "from": owner})
    assert "runs only trading approvals" in refusal(batch(key, wallet, 0, [transfer]))
    assert "not a spender the venue knows" in refusal(batch(key, wallet, 0, [approve(owner, 1)]))
    assert "may not send value" in refusal(batch(key, wallet, 0, [{**calls[0], "value": "1"}]))
    assert "decimal string" in refusal({**batch(key, wallet, 0, calls), "nonce": "0x0"})
    assert "1 to 50 calls" in refusal(batch(key, wallet, 0, []))
    undeployed = Account.create()
    other_headers = relayer_headers(venue, undeployed.address)
    answer = submit(venue, batch(undeployed.key.hex(), deposit_wallet_beacon(undeployed.address), 0, calls),
                    other_headers)
    assert answer.status_code == 400 and "is not deployed" in answer.json()["error"]
    assert eth_call(venue, PUSD, "allowance(address,address)", ["address", "address"], [wallet, V2_EXCHANGE]) == 0

    accepted = submit(venue, batch(key, wallet, 0, calls), headers)
    assert accepted.status_code == 200, accepted.text
    busy = submit(venue, batch(key, wallet, 0, calls), headers)  # before the first is mined
    assert busy.status_code == 400 and "wallet has in-flight action" in busy.json()["error"]
    confirmed(venue, accepted.json()["transactionID"])
    assert eth_call(venue, PUSD, "allowance(address,address)", ["address", "address"],
                    [wallet, V2_EXCHANGE]) == 123 * 10**6
    assert eth_call(venue, CTF, "isApprovedForAll(address,address)", ["address", "address"],
                    [wallet, V2_EXCHANGE]) == 1
    params = httpx.get(f"{venue.clob}/v1/account/transactions/params", params={"address": owner, "type": "WALLET"})
    assert params.json()["nonce"] == "1"
    assert refusal(batch(key, wallet, 0, calls)) == "batch nonce 0 does not match on-chain nonce 1"


def test_proxy_and_safe_transactions_are_refused_as_not_served(venue: Venue) -> None:
    owner = Account.create().address
    answer = submit(venue, {"type": "PROXY", "from": owner, "to": FACTORY}, relayer_headers(venue, owner))
    assert answer.status_code == 400 and "PROXY is not served" in answer.json()["error"]
    payload = httpx.get(f"{venue.clob}/relay-payload", params={"address": owner, "type": "PROXY"})
    assert payload.status_code == 400 and "not served" in payload.json()["error"]


def test_json_rpc_answers_every_request_with_a_result_or_an_error_object(venue: Venue) -> None:
    assert rpc(venue, "eth_chainId") == "0x89"
    block = rpc(venue, "eth_getBlockByNumber", "latest", False)
    assert abs(int(block["timestamp"], 16) - time.time()) < 5
    assert rpc(venue, "eth_getBlockByNumber", hex(int(block["number"], 16) + 1000), False) is None
    assert rpc_error(venue, "eth_mining")["code"] == -32601
    assert rpc_error(venue, "eth_getTransactionCount", "not an address", "latest")["code"] == -32602
    assert rpc_error(venue, "eth_getBlockByNumber")["code"] == -32602
    unknown_read = rpc_error(venue, "eth_call", {"to": PUSD, "data": "0x06fdde03"}, "latest")  # name()
    assert unknown_read["code"] == -32000 and "execution reverted" in unknown_read["message"]
    assert rpc_answer(venue, b"{not json")["error"]["code"] == -32700
    assert rpc_answer(venue, [1])[0]["error"]["code"] == -32600
    assert rpc_answer(venue, {"jsonrpc": "1.0", "id": 3, "method": "eth_chainId"})["error"]["code"] == -32600
    both = rpc_answer(venue, [{"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
                              {"jsonrpc": "2.0", "id": 2, "method": "eth_nope", "params": []}])
    assert [a["id"] for a in both] == [1, 2] and both[0]["result"] == "0x89" and both[1]["error"]["code"] == -32601


def test_an_eoas_signed_approval_is_mined_and_sets_its_allowance_on_the_venue(venue: Venue) -> None:
    owner = Account.create()
    data = call_data("approve(address,uint256)", ["address", "uint256"], [EXCHANGE_V3, 7 * 10**6])
    gas = int(rpc(venue, "eth_estimateGas", {"from": owner.address, "to": PUSD, "value": "0x0", "data": data}), 16)
    tx = {"to": PUSD, "value": 0, "data": data, "gas": gas, "gasPrice": int(rpc(venue, "eth_gasPrice"), 16),
          "nonce": int(rpc(venue, "eth_getTransactionCount", owner.address, "pending"), 16), "chainId": 137}

    def send(**changes) -> dict:
        raw = owner.sign_transaction({**tx, **changes}).raw_transaction
        return rpc_answer(venue, {"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction",
                                  "params": ["0x" + raw.hex()]})

    assert "signed for chain 1," in send(chainId=1)["error"]["message"]
    assert "nonce too high" in send(nonce=3)["error"]["message"]
    assert "intrinsic gas too low" in send(gas=21_000)["error"]["message"]
    transfer = call_data("transfer(address,uint256)", ["address", "uint256"], [owner.address, 1])
    assert "runs only trading approvals" in send(data=transfer)["error"]["message"]
    assert "runs only trading approvals" in rpc_error(venue, "eth_estimateGas", {
        "from": owner.address, "to": PUSD, "data": transfer})["message"]
    eip1559 = owner.sign_transaction({**{k: v for k, v in tx.items() if k != "gasPrice"}, "maxFeePerGas": 10**10,
                                      "maxPriorityFeePerGas": 10**9}).raw_transaction
    assert "legacy" in rpc_error(venue, "eth_sendRawTransaction", "0x" + eip1559.hex())["message"]

    tx_hash = send()["result"]
    assert int(rpc(venue, "eth_getTransactionCount", owner.address, "pending"), 16) == 1
    receipt = wait_for(lambda: rpc(venue, "eth_getTransactionReceipt", tx_hash), timeout=10, what="the receipt")
    assert (receipt["status"], receipt["from"], receipt["to"]) == ("0x1", owner.address, PUSD)
    assert int(rpc(venue, "eth_getTransactionCount", owner.address, "latest"), 16) == 1
    assert eth_call(venue, PUSD, "allowance(address,address)", ["address", "address"],
                    [owner.address, EXCHANGE_V3]) == 7 * 10**6
    # The CLOB sees the same allowance: it is the venue's one state.
    clob = venue.client(owner.key.hex(), funded=False)
    assert clob.get_balance_allowance(BalanceAllowanceParams(asset_type=AssetType.COLLATERAL))["allowances"][
        EXCHANGE_V3] == str(7 * 10**6)
    assert "nonce too low" in send()["error"]["message"]
