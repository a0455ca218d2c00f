"""Polymarket CLOB V2 authentication as the venue sees it: L1 (EIP-712), L2 (HMAC) and signed orders.

Everything here checks exactly the bytes py-clob-client-v2 signs, so the real
client works against the local venue unchanged.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_utils import is_hex_address, keccak, to_checksum_address

# The real venue's texts: one per level, whatever the cause, so a failure leaks nothing.
_L1_INVALID = "Invalid L1 Request headers"
_L2_INVALID = "Unauthorized/Invalid api key"

_CLOB_AUTH_MESSAGE = "This message attests that I control the given wallet"

EXCHANGE_V2: dict[int, str] = {
    137: "0xE111180000d2663C0091e4f400237545B87B996B",
    80002: "0xE111180000d2663C0091e4f400237545B87B996B",
}
NEG_RISK_EXCHANGE_V2: dict[int, str] = {
    137: "0xe2222d279d744050d28e00520010520000310F59",
    80002: "0xe2222d279d744050d28e00520010520000310F59",
}
# Exchange V3 (EIP-712 domain version "3") settles protocol-v2 positions; it has no neg-risk twin
# (py-clob-client-v2 config.py `exchange_v3`, WALLETS.md §3).
EXCHANGE_V3: dict[int, str] = {
    137: "0xe3333700cA9d93003F00f0F71f8515005F6c00Aa",
    80002: "0x9fE6e61422AdB6F610d8597F9684b16912D50C3D",
}

_DOMAIN_FIELDS = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
]
_CLOB_AUTH_TYPE = [
    {"name": "address", "type": "address"},
    {"name": "timestamp", "type": "string"},
    {"name": "nonce", "type": "uint256"},
    {"name": "message", "type": "string"},
]
_ORDER_TYPE = [
    {"name": "salt", "type": "uint256"},
    {"name": "maker", "type": "address"},
    {"name": "signer", "type": "address"},
    {"name": "tokenId", "type": "uint256"},
    {"name": "makerAmount", "type": "uint256"},
    {"name": "takerAmount", "type": "uint256"},
    {"name": "side", "type": "uint8"},
    {"name": "signatureType", "type": "uint8"},
    {"name": "timestamp", "type": "uint256"},
    {"name": "metadata", "type": "bytes32"},
    {"name": "builder", "type": "bytes32"},
]
_ORDER_TYPE_STRING = ("Order(uint256 salt,address maker,address signer,uint256 tokenId,uint256 makerAmount,"
                      "uint256 takerAmount,uint8 side,uint8 signatureType,uint256 timestamp,bytes32 metadata,"
                      "bytes32 builder)").encode()
# ERC-7739 nested typed data, as the clients sign type-3 orders (WALLETS.md §1): the deposit wallet's own domain
# travels as struct fields, the exchange's domain is the outer one.
_TYPED_DATA_SIGN_TYPEHASH = keccak(
    b"TypedDataSign(Order contents,string name,string version,uint256 chainId,address verifyingContract,bytes32 salt)"
    + _ORDER_TYPE_STRING)
_SESSION_SIGNER_MAGIC = bytes.fromhex("6492" * 16)  # ends a session signer's envelope (see session_signature)
_SECP256K1_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0
_SIDES = {"BUY": 0, "SELL": 1}
_SIGNATURE_TYPES = (0, 1, 2, 3)  # EOA, POLY_PROXY, POLY_GNOSIS_SAFE, POLY_1271
_HEX = re.compile(r"0x[0-9a-fA-F]*")
_UINT256_MAX = 2**256 - 1


class AuthError(Exception):
    """A request the venue refuses to authenticate; `message` is the venue's own text."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ApiCredentials:
    """One API key as the venue issued it; `address` is checksummed."""

    api_key: str
    secret: str
    passphrase: str
    address: str
    nonce: int = 0  # the L1 nonce it was created for


def derive_credentials(venue_secret: bytes, address: str, nonce: int) -> ApiCredentials:
    """The credentials for (address, nonce): the same every time, so derive-api-key needs no storage."""
    def material(label: str) -> bytes:
        seed = f"{label}\x00{address.lower()}\x00{nonce}".encode()
        return hmac.new(venue_secret, seed, hashlib.sha256).digest()

    return ApiCredentials(
        api_key=str(uuid.UUID(bytes=material("api-key")[:16], version=4)),
        secret=base64.urlsafe_b64encode(material("secret")).decode(),
        passphrase=material("passphrase").hex(),
        address=to_checksum_address(address),
        nonce=nonce,
    )


def check_l1(headers: Mapping[str, str], chain_id: int) -> tuple[str, int]:
    """Verify L1 headers (an EIP-712 ClobAuth signature); return (checksummed address, nonce)."""
    address = _checksum(_header(headers, "POLY_ADDRESS"))
    signature = _header(headers, "POLY_SIGNATURE")
    timestamp = _header(headers, "POLY_TIMESTAMP")
    nonce_text = _header(headers, "POLY_NONCE")
    if address is None or signature is None or timestamp is None or nonce_text is None:
        raise AuthError(_L1_INVALID)
    try:
        nonce = int(nonce_text)
        signable = encode_typed_data(full_message={
            "primaryType": "ClobAuth",
            "types": {"EIP712Domain": _DOMAIN_FIELDS, "ClobAuth": _CLOB_AUTH_TYPE},
            "domain": {"name": "ClobAuthDomain", "version": "1", "chainId": chain_id},
            # The client signs the timestamp as a string: use the header's text as sent.
            "message": {"address": address, "timestamp": timestamp, "nonce": nonce,
                        "message": _CLOB_AUTH_MESSAGE},
        })
        recovered = Account.recover_message(signable, signature=signature)
    except Exception:  # any malformed part (nonce, signature, encoding) is the same refusal
        raise AuthError(_L1_INVALID) from None
    if recovered != address:
        raise AuthError(_L1_INVALID)
    return address, nonce


def hmac_signature(secret: str, timestamp: str, method: str, path: str, body: str | None) -> str:
    """The L2 signature the client computes: urlsafe-base64 HMAC-SHA256 of timestamp+method+path+body."""
    message = f"{timestamp}{method}{path}"
    if body:
        # The client signs str(body).replace("'", '"'); mirror it so bodies with a quote still verify.
        message += body.replace("'", '"')
    digest = hmac.new(base64.urlsafe_b64decode(secret), message.encode("utf-8"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("utf-8")


def check_l2(
    headers: Mapping[str, str],
    method: str,
    path: str,
    body: bytes,
    lookup: Callable[[str], ApiCredentials | None],
) -> ApiCredentials:
    """Verify L2 headers against the stored key; `path` excludes the query string, `body` is the raw bytes."""
    address = _header(headers, "POLY_ADDRESS")
    signature = _header(headers, "POLY_SIGNATURE")
    timestamp = _header(headers, "POLY_TIMESTAMP")
    api_key = _header(headers, "POLY_API_KEY")
    passphrase = _header(headers, "POLY_PASSPHRASE")
    if address is None or signature is None or timestamp is None or api_key is None or passphrase is None:
        raise AuthError(_L2_INVALID)
    creds = lookup(api_key)
    if creds is None:
        raise AuthError(_L2_INVALID)
    if not hmac.compare_digest(passphrase.encode(), creds.passphrase.encode()):
        raise AuthError(_L2_INVALID)
    if address.lower() != creds.address.lower():
        raise AuthError(_L2_INVALID)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise AuthError(_L2_INVALID) from None
    expected = hmac_signature(creds.secret, timestamp, method.upper(), path, text)
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        raise AuthError(_L2_INVALID)
    return creds


@dataclass(frozen=True)
class SignedOrder:
    """The `order` object of POST /order, validated; addresses checksummed, bytes32 fields 0x + 64 hex."""

    salt: int
    maker: str
    signer: str
    tokenId: str
    makerAmount: int
    takerAmount: int
    side: Literal["BUY", "SELL"]
    expiration: int
    signatureType: int
    timestamp: int
    metadata: str
    builder: str
    signature: str

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> SignedOrder:
        """Parse the client's JSON order; ValueError names the missing or invalid field."""
        if not isinstance(obj, Mapping):
            raise ValueError("order must be a JSON object")

        def field(name: str) -> Any:
            if name not in obj or obj[name] is None:
                raise ValueError(f"order is missing field {name!r}")
            return obj[name]

        side = field("side")
        if side not in _SIDES:
            raise ValueError(f"order field 'side' must be 'BUY' or 'SELL', got {side!r}")
        signature_type = _uint(field("signatureType"), "signatureType")
        if signature_type not in _SIGNATURE_TYPES:
            raise ValueError(f"order field 'signatureType' must be one of {_SIGNATURE_TYPES}, got {signature_type}")
        token_id = field("tokenId")
        _uint(token_id, "tokenId")
        signature = field("signature")
        if not isinstance(signature, str) or not _HEX.fullmatch(signature) or len(signature) % 2:
            raise ValueError("order field 'signature' must be 0x-prefixed hex")
        return cls(
            salt=_uint(field("salt"), "salt"),
            maker=_address(field("maker"), "maker"),
            signer=_address(field("signer"), "signer"),
            tokenId=str(token_id),  # kept as sent: it is also the key the venue looks markets up by
            makerAmount=_uint(field("makerAmount"), "makerAmount"),
            takerAmount=_uint(field("takerAmount"), "takerAmount"),
            side=side,
            expiration=_uint(field("expiration"), "expiration"),
            signatureType=signature_type,
            timestamp=_uint(field("timestamp"), "timestamp"),
            metadata=_bytes32(field("metadata"), "metadata"),
            builder=_bytes32(field("builder"), "builder"),
            signature=signature,
        )


def exchange_domain(chain_id: int, neg_risk: bool, version: int = 2) -> tuple[str, str]:
    """(domain version, verifying contract) of the exchange an order is for: version 3 is exchange V3 whatever
    the market's neg risk, as the clients sign it."""
    if version == 3:
        return "3", EXCHANGE_V3[chain_id]
    return "2", (NEG_RISK_EXCHANGE_V2 if neg_risk else EXCHANGE_V2)[chain_id]


def order_hash(order: SignedOrder, chain_id: int, neg_risk: bool, version: int = 2) -> str:
    """The order's EIP-712 hash (0x-prefixed lower-case hex): the order id."""
    message = _order_message(order, chain_id, neg_risk, version)
    return "0x" + keccak(b"\x19" + message.version + message.header + message.body).hex()


def recover_order_signer(order: SignedOrder, chain_id: int, neg_risk: bool, version: int = 2) -> str:
    """The checksummed address whose key signed the order under this domain; ValueError if none can."""
    try:
        return Account.recover_message(_order_message(order, chain_id, neg_risk, version), signature=order.signature)
    except Exception:
        raise ValueError("invalid signature") from None


@dataclass(frozen=True)
class SessionSignature:
    """A deposit-wallet signature made by a session signer: the envelope names the signer, ``inner`` is its ERC-7739
    signature (0x hex), made exactly as the wallet's owner would make one."""

    signer: str  # checksummed
    inner: str


def session_signature(signature: str) -> SessionSignature | None:
    """The session-signer envelope of a type-3 signature, or None when the signature is the owner's own; ValueError
    when it ends in the envelope's magic but is malformed.

    polymarket-client ``_internal/wallet.py`` ``wrap_deposit_wallet_session_signer_signature``:
    ``abi.encode(bytes32 leftpad(signer), bytes32 0, bytes inner) ‖ 0x6492…6492`` (32 bytes of magic). The magic is
    ERC-6492's, but the layout is not ERC-6492's; Polymarket's ts-sdk review calls it "6492" for want of a name."""
    try:
        raw = bytes.fromhex(signature[2:])
    except ValueError:
        raise ValueError("invalid signature") from None
    if len(raw) < 32 or raw[-32:] != _SESSION_SIGNER_MAGIC:
        return None
    try:
        signer_id, zero, inner = abi_decode(["bytes32", "bytes32", "bytes"], raw[:-32], strict=True)
    except Exception:  # eth_abi raises several types for short or inconsistent data: all mean a bad envelope
        raise ValueError("invalid signature") from None
    if signer_id[:12] != bytes(12) or zero != bytes(32) or abi_encode(
            ["bytes32", "bytes32", "bytes"], [signer_id, zero, inner]) != raw[:-32]:
        raise ValueError("invalid signature")  # only the canonical encoding: one envelope, one byte string
    return SessionSignature(signer=to_checksum_address(signer_id[12:]), inner="0x" + inner.hex())


def recover_deposit_wallet_owner(order: SignedOrder, chain_id: int, neg_risk: bool, version: int = 2,
                                 signature: str | None = None) -> str:
    """The checksummed EOA whose key signed a type-3 order's ERC-7739 ``TypedDataSign`` wrapper for the order's
    wallet (``signature``, default the order's own: a session signer's sits inside its envelope); ValueError unless
    the wrapper is for this very order under this exchange's domain."""
    try:
        sig = bytes.fromhex((order.signature if signature is None else signature)[2:])
    except ValueError:
        raise ValueError("invalid signature") from None
    # r ‖ s ‖ v ‖ appDomainSeparator ‖ contentsHash ‖ contents type ‖ uint16 length of the contents type
    if len(sig) < 131 or len(sig) != 131 + int.from_bytes(sig[-2:], "big"):
        raise ValueError("invalid signature")
    inner, app, contents, contents_type = sig[:65], sig[65:97], sig[97:129], sig[129:-2]
    message = _order_message(order, chain_id, neg_risk, version)
    if app != message.header or contents != message.body or contents_type != _ORDER_TYPE_STRING:
        raise ValueError("invalid signature")
    wallet = keccak(abi_encode(
        ["bytes32", "bytes32", "bytes32", "bytes32", "uint256", "address", "bytes32"],
        [_TYPED_DATA_SIGN_TYPEHASH, contents, keccak(b"DepositWallet"), keccak(b"1"), chain_id, order.maker,
         bytes(32)]))
    digest = keccak(b"\x19\x01" + app + wallet)
    if int.from_bytes(inner[32:64], "big") > _SECP256K1_HALF_N:  # Solady's ECDSA takes low s only
        raise ValueError("invalid signature")
    try:
        return Account._recover_hash(digest, signature=inner)
    except Exception:
        raise ValueError("invalid signature") from None


def _order_message(order: SignedOrder, chain_id: int, neg_risk: bool, version: int = 2) -> SignableMessage:
    domain_version, exchange = exchange_domain(chain_id, neg_risk, version)
    return encode_typed_data(full_message={
        "primaryType": "Order",
        "types": {
            "EIP712Domain": [*_DOMAIN_FIELDS, {"name": "verifyingContract", "type": "address"}],
            "Order": _ORDER_TYPE,
        },
        "domain": {"name": "Polymarket CTF Exchange", "version": domain_version, "chainId": chain_id,
                   "verifyingContract": exchange},
        "message": {  # `expiration` is sent but not signed
            "salt": order.salt,
            "maker": order.maker,
            "signer": order.signer,
            "tokenId": int(order.tokenId),
            "makerAmount": order.makerAmount,
            "takerAmount": order.takerAmount,
            "side": _SIDES[order.side],
            "signatureType": order.signatureType,
            "timestamp": order.timestamp,
            "metadata": bytes.fromhex(order.metadata[2:]),
            "builder": bytes.fromhex(order.builder[2:]),
        },
    })


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by name, whatever its case (starlette lower-cases, the client upper-cases)."""
    value = headers.get(name)
    if value is None:
        wanted = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == wanted), None)
    return value


def _checksum(value: str | None) -> str | None:
    return to_checksum_address(value) if value is not None and is_hex_address(value) else None


def _uint(value: Any, name: str) -> int:
    """An unsigned 256-bit integer sent as a JSON number or a decimal string."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        number = int(value)
    else:
        raise ValueError(f"order field {name!r} must be an unsigned integer, got {value!r}")
    if not 0 <= number <= _UINT256_MAX:
        raise ValueError(f"order field {name!r} is out of range for uint256: {value!r}")
    return number


def _address(value: Any, name: str) -> str:
    if not isinstance(value, str) or not is_hex_address(value):
        raise ValueError(f"order field {name!r} must be a 0x-prefixed 20-byte address, got {value!r}")
    return to_checksum_address(value)


def _bytes32(value: Any, name: str) -> str:
    # The client left-pads short hex to 32 bytes before signing; do the same.
    if not isinstance(value, str) or not _HEX.fullmatch(value) or len(value) > 66:
        raise ValueError(f"order field {name!r} must be 0x-prefixed hex of at most 32 bytes, got {value!r}")
    return "0x" + value[2:].lower().zfill(64)
