"""Local venue auth: what the real py-clob-client-v2 signs (L1, L2, V2 orders) verifies; anything altered does not."""
from __future__ import annotations

import base64
import json
import re
from dataclasses import replace

import pytest
from py_clob_client_v2.clob_types import ApiCreds, CreateOrderOptions, OrderArgsV2, RequestArgs
from py_clob_client_v2.headers.headers import create_level_1_headers, create_level_2_headers
from py_clob_client_v2.order_builder.builder import OrderBuilder
from py_clob_client_v2.order_utils import ExchangeOrderBuilderV2
from py_clob_client_v2.order_utils.model.order_data_v2 import order_to_json_v2
from py_clob_client_v2.signer import Signer
from starlette.datastructures import Headers

from polybot_venue import auth

CHAIN = 137
# Anvil's well-known development keys: never funded anywhere that matters.
KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
ADDRESS = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
OTHER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
OTHER_ADDRESS = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
VENUE_SECRET = b"local-venue-test-secret"
TOKEN = "71321045679252212594626385532706912750332728571942532289631379312455583992563"
L1_TEXT = "Invalid L1 Request headers"
L2_TEXT = "Unauthorized/Invalid api key"


def as_starlette(headers: dict[str, str]) -> Headers:
    """Headers as the venue's handlers see them: starlette lower-cases the names."""
    return Headers(headers=headers)


def l1_refusal(headers: dict[str, str]) -> str:
    with pytest.raises(auth.AuthError) as err:
        auth.check_l1(as_starlette(headers), CHAIN)
    assert err.value.status == 401
    return err.value.message


@pytest.fixture
def signer() -> Signer:
    return Signer(KEY, CHAIN)


@pytest.fixture
def creds() -> auth.ApiCredentials:
    return auth.derive_credentials(VENUE_SECRET, ADDRESS, 0)


def client_creds(creds: auth.ApiCredentials, **changes: str) -> ApiCreds:
    fields = {"api_key": creds.api_key, "api_secret": creds.secret, "api_passphrase": creds.passphrase}
    return ApiCreds(**{**fields, **changes})


def client_order(signer: Signer, *, neg_risk: bool = False, side: str = "BUY"):
    builder = OrderBuilder(signer)
    return builder.build_order(OrderArgsV2(token_id=TOKEN, price=0.45, size=10, side=side),
                               CreateOrderOptions(tick_size="0.01", neg_risk=neg_risk), version=2)


def on_the_wire(order, owner: str = "key") -> dict:
    """The `order` object as the venue receives it: serialized exactly as post_order does, then parsed."""
    payload = order_to_json_v2(order, owner, "GTC")
    return json.loads(json.dumps(payload, separators=(",", ":"), ensure_ascii=False))["order"]


def recovered_or_none(order: auth.SignedOrder, neg_risk: bool) -> str | None:
    try:
        return auth.recover_order_signer(order, CHAIN, neg_risk)
    except ValueError:
        return None


# ------------------------------------------------------------------ L1


def test_client_l1_headers_verify_and_return_the_clients_address_and_nonce(signer):
    headers = create_level_1_headers(signer, nonce=7, timestamp=1_700_000_000)
    assert auth.check_l1(as_starlette(headers), CHAIN) == (ADDRESS, 7)
    assert auth.check_l1(headers, CHAIN) == (ADDRESS, 7)  # upper-case names, as the client sends them


def test_l1_headers_signed_for_another_chain_are_refused():
    headers = create_level_1_headers(Signer(KEY, 80002), nonce=0)
    assert l1_refusal(headers) == L1_TEXT


def test_l1_signature_with_one_byte_changed_is_refused(signer):
    headers = create_level_1_headers(signer, nonce=0)
    sig = headers["POLY_SIGNATURE"]
    headers["POLY_SIGNATURE"] = sig[:40] + format(int(sig[40:42], 16) ^ 1, "02x") + sig[42:]
    assert l1_refusal(headers) == L1_TEXT


def test_l1_headers_claiming_another_address_are_refused(signer):
    headers = create_level_1_headers(signer, nonce=0)
    headers["POLY_ADDRESS"] = OTHER_ADDRESS
    assert l1_refusal(headers) == L1_TEXT


@pytest.mark.parametrize("name, value", [("POLY_NONCE", "seven"), ("POLY_NONCE", None), ("POLY_SIGNATURE", None),
                                         ("POLY_TIMESTAMP", None), ("POLY_ADDRESS", "not-an-address")])
def test_l1_headers_missing_or_malformed_are_refused(signer, name, value):
    headers = create_level_1_headers(signer, nonce=0)
    if value is None:
        del headers[name]
    else:
        headers[name] = value
    assert l1_refusal(headers) == L1_TEXT


def test_l1_timestamp_is_checked_as_the_exact_text_signed(signer):
    headers = create_level_1_headers(signer, nonce=0, timestamp=1_700_000_000)
    headers["POLY_TIMESTAMP"] = "01700000000"  # same number, different string
    assert l1_refusal(headers) == L1_TEXT


# ------------------------------------------------------------------ credentials


def test_derived_credentials_are_deterministic_per_address_and_nonce_and_shaped_like_the_venues():
    first = auth.derive_credentials(VENUE_SECRET, ADDRESS, 0)
    assert auth.derive_credentials(VENUE_SECRET, ADDRESS.lower(), 0) == first
    assert first.address == ADDRESS
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", first.api_key)
    assert len(base64.urlsafe_b64decode(first.secret)) == 32
    assert re.fullmatch(r"[0-9a-f]{64}", first.passphrase)

    others = [auth.derive_credentials(VENUE_SECRET, ADDRESS, 1), auth.derive_credentials(VENUE_SECRET, OTHER_ADDRESS, 0),
              auth.derive_credentials(b"another venue", ADDRESS, 0)]
    for other in others:
        assert {other.api_key, other.secret, other.passphrase}.isdisjoint({first.api_key, first.secret, first.passphrase})


# ------------------------------------------------------------------ L2


def l2_check(headers: dict[str, str], method: str, path: str, body: bytes,
             known: auth.ApiCredentials) -> auth.ApiCredentials:
    return auth.check_l2(as_starlette(headers), method, path, body, {known.api_key: known}.get)


def l2_refusal(headers: dict[str, str], method: str, path: str, body: bytes, known: auth.ApiCredentials) -> str:
    with pytest.raises(auth.AuthError) as err:
        l2_check(headers, method, path, body, known)
    assert err.value.status == 401
    return err.value.message


def signed_post(signer: Signer, creds: ApiCreds, payload: object) -> tuple[dict[str, str], bytes]:
    """Headers and body exactly as the client's post_order builds them."""
    serialized = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    headers = create_level_2_headers(signer, creds, RequestArgs(method="POST", request_path="/order",
                                                                body=payload, serialized_body=serialized))
    return headers, serialized.encode("utf-8")


def test_client_l2_headers_over_a_posted_order_verify(signer, creds):
    payload = order_to_json_v2(client_order(signer), creds.api_key, "GTC")
    headers, body = signed_post(signer, client_creds(creds), payload)
    assert l2_check(headers, "POST", "/order", body, creds) == creds


def test_client_l2_headers_on_a_get_without_body_verify(signer, creds):
    headers = create_level_2_headers(signer, client_creds(creds), RequestArgs(method="GET", request_path="/data/orders"))
    assert l2_check(headers, "GET", "/data/orders", b"", creds) == creds


def test_body_with_non_ascii_and_a_single_quote_verifies_as_the_client_signs_it(signer, creds):
    # The client signs str(body).replace("'", '"') but sends the body unchanged; the venue mirrors that.
    headers, body = signed_post(signer, client_creds(creds), {"note": "l'été"})
    assert l2_check(headers, "POST", "/order", body, creds) == creds


def test_l2_body_changed_by_one_byte_is_refused(signer, creds):
    headers, body = signed_post(signer, client_creds(creds), {"orderID": "0xabc1"})
    assert l2_refusal(headers, "POST", "/order", body.replace(b"abc1", b"abc2"), creds) == L2_TEXT


def test_l2_signature_for_another_path_or_method_is_refused(signer, creds):
    headers, body = signed_post(signer, client_creds(creds), {"orderID": "0xabc"})
    assert l2_refusal(headers, "POST", "/orders", body, creds) == L2_TEXT
    assert l2_refusal(headers, "DELETE", "/order", body, creds) == L2_TEXT


def test_l2_wrong_passphrase_is_refused(signer, creds):
    headers, body = signed_post(signer, client_creds(creds, api_passphrase="0" * 64), {"a": 1})
    assert l2_refusal(headers, "POST", "/order", body, creds) == L2_TEXT


def test_l2_unknown_api_key_is_refused(signer, creds):
    stranger = auth.derive_credentials(VENUE_SECRET, ADDRESS, 99)
    headers, body = signed_post(signer, client_creds(stranger), {"a": 1})
    assert l2_refusal(headers, "POST", "/order", body, creds) == L2_TEXT


def test_l2_signed_with_the_wrong_secret_is_refused(signer, creds):
    wrong = base64.urlsafe_b64encode(b"\x01" * 32).decode()
    headers, body = signed_post(signer, client_creds(creds, api_secret=wrong), {"a": 1})
    assert l2_refusal(headers, "POST", "/order", body, creds) == L2_TEXT


def test_l2_key_used_from_another_address_is_refused(creds):
    headers, body = signed_post(Signer(OTHER_KEY, CHAIN), client_creds(creds), {"a": 1})
    assert l2_refusal(headers, "POST", "/order", body, creds) == L2_TEXT


@pytest.mark.parametrize("name", ["POLY_ADDRESS", "POLY_SIGNATURE", "POLY_TIMESTAMP", "POLY_API_KEY", "POLY_PASSPHRASE"])
def test_l2_missing_header_is_refused(signer, creds, name):
    headers, body = signed_post(signer, client_creds(creds), {"a": 1})
    del headers[name]
    assert l2_refusal(headers, "POST", "/order", body, creds) == L2_TEXT


# ------------------------------------------------------------------ signed orders


def test_client_order_recovers_to_the_clients_address_and_its_hash_is_the_clients_own(signer):
    built = client_order(signer)
    order = auth.SignedOrder.from_json(on_the_wire(built))
    assert auth.recover_order_signer(order, CHAIN, neg_risk=False) == ADDRESS == order.signer == order.maker

    client = ExchangeOrderBuilderV2(auth.EXCHANGE_V2[CHAIN], CHAIN, signer)
    expected = client.build_order_hash(client.build_order_typed_data(built))
    assert auth.order_hash(order, CHAIN, neg_risk=False) == expected
    assert auth.order_hash(auth.SignedOrder.from_json(on_the_wire(built)), CHAIN, neg_risk=False) == expected
    assert re.fullmatch(r"0x[0-9a-f]{64}", expected)


def test_sell_order_recovers_to_the_clients_address(signer):
    order = auth.SignedOrder.from_json(on_the_wire(client_order(signer, side="SELL")))
    assert order.side == "SELL"
    assert auth.recover_order_signer(order, CHAIN, neg_risk=False) == ADDRESS


def test_plain_order_checked_as_neg_risk_recovers_to_another_address_and_hashes_differently(signer):
    order = auth.SignedOrder.from_json(on_the_wire(client_order(signer)))
    assert recovered_or_none(order, neg_risk=True) != ADDRESS
    assert auth.order_hash(order, CHAIN, neg_risk=True) != auth.order_hash(order, CHAIN, neg_risk=False)


def test_neg_risk_order_recovers_only_under_the_neg_risk_domain(signer):
    order = auth.SignedOrder.from_json(on_the_wire(client_order(signer, neg_risk=True)))
    assert auth.recover_order_signer(order, CHAIN, neg_risk=True) == ADDRESS
    assert recovered_or_none(order, neg_risk=False) != ADDRESS


def test_expiration_is_not_signed_so_changing_it_keeps_id_and_signer(signer):
    order = auth.SignedOrder.from_json(on_the_wire(client_order(signer)))
    later = replace(order, expiration=order.expiration + 3600)
    assert auth.order_hash(later, CHAIN, False) == auth.order_hash(order, CHAIN, False)
    assert auth.recover_order_signer(later, CHAIN, False) == ADDRESS


def test_order_with_a_signed_field_changed_no_longer_recovers_to_the_signer(signer):
    order = auth.SignedOrder.from_json(on_the_wire(client_order(signer)))
    assert recovered_or_none(replace(order, makerAmount=order.makerAmount + 1), neg_risk=False) != ADDRESS


def test_order_signature_with_one_byte_changed_does_not_recover_to_the_signer(signer):
    order = auth.SignedOrder.from_json(on_the_wire(client_order(signer)))
    sig = order.signature  # 0x + r(64) + s(64) + v(2)
    for at in (10, 100):  # a byte of r (recovery may fail outright) and a byte of s
        tampered = sig[:at] + format(int(sig[at:at + 2], 16) ^ 1, "02x") + sig[at + 2:]
        assert recovered_or_none(replace(order, signature=tampered), neg_risk=False) != ADDRESS


def test_order_signature_that_cannot_recover_at_all_is_an_invalid_signature(signer):
    order = auth.SignedOrder.from_json(on_the_wire(client_order(signer)))
    with pytest.raises(ValueError, match="invalid signature"):
        auth.recover_order_signer(replace(order, signature="0x1234"), CHAIN, neg_risk=False)


@pytest.mark.parametrize("name", ["salt", "maker", "signer", "tokenId", "makerAmount", "takerAmount", "side",
                                  "expiration", "signatureType", "timestamp", "metadata", "builder", "signature"])
def test_order_json_missing_a_field_is_rejected_naming_it(signer, name):
    wire = on_the_wire(client_order(signer))
    del wire[name]
    with pytest.raises(ValueError, match=f"order is missing field '{name}'"):
        auth.SignedOrder.from_json(wire)


@pytest.mark.parametrize("name, value", [("side", "HOLD"), ("makerAmount", "1.5"), ("salt", -1), ("maker", "0x12"),
                                         ("signatureType", 9), ("metadata", "0x" + "0" * 66), ("signature", "zz")])
def test_order_json_with_an_invalid_field_is_rejected_naming_it(signer, name, value):
    wire = on_the_wire(client_order(signer))
    wire[name] = value
    with pytest.raises(ValueError, match=f"'{name}'"):
        auth.SignedOrder.from_json(wire)


def test_order_json_that_is_not_an_object_is_rejected():
    with pytest.raises(ValueError, match="order must be a JSON object"):
        auth.SignedOrder.from_json([])  # type: ignore[arg-type]
