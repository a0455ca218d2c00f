"""Polymarket's relayer as the unified SDK uses it, served on the CLOB port: it deploys deposit wallets and runs
their signed batches of approvals on the venue's chain (``chain.py``); plus the CLOB's builder API keys that
authenticate to it (WALLETS.md §5).

Keys. A builder key comes from the CLOB, ``POST /auth/builder-api-key`` with the account's L2 headers (the SDK's
``create_builder_api_key``), and may submit for any owner: builders relay for their users. A relayer API key is
made on polymarket.com's settings page on the real venue; here ``POST /_admin/relayer-key {"address"}`` issues
one, and it may submit only for its own address (``RELAYER_API_KEY_ADDRESS`` must be the key's owner, and the
transaction's ``from`` that address). Reads need no key.

Transactions. ``WALLET-CREATE`` deploys the owner's (beacon) deposit wallet; ``WALLET`` runs a batch the owner
signed (EIP-712 ``Batch`` under the wallet's ``DepositWallet`` domain) at the wallet's next nonce before its
deadline, and its calls may only be the approvals ``chain.py`` runs. The relayer checks what the contracts would
and refuses at submission, 400 with a message, anything they would revert, so an accepted transaction always
confirms: ``STATE_NEW``, then ``STATE_EXECUTED`` (with its hash) and ``STATE_MINED`` as the chain mines it, then
``STATE_CONFIRMED``. Proxy and Safe transactions are not served.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hashlib
import hmac
import itertools
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import is_hex_address, keccak, to_checksum_address
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import auth, wallets
from .chain import MAX_UINT256, Chain, Refused
from .engine import VenueError

NEW, EXECUTED, MINED, CONFIRMED = "STATE_NEW", "STATE_EXECUTED", "STATE_MINED", "STATE_CONFIRMED"
MAX_CALLS = 50  # calls in one batch (the SDK's trading setup makes 17)
_BUILDER_HEADERS = ("POLY_BUILDER_API_KEY", "POLY_BUILDER_PASSPHRASE", "POLY_BUILDER_SIGNATURE",
                    "POLY_BUILDER_TIMESTAMP")
_NOT_SERVED = ("the venue's relayer runs deposit-wallet transactions only (WALLET-CREATE, WALLET); {kind} is not "
               "served: approve a proxy or Safe wallet through /_admin/approve")


@dataclass(frozen=True)
class BuilderKey:
    key: str
    secret: str
    passphrase: str
    owner: str  # the CLOB account that created it
    created_ms: int
    revoked_ms: int | None = None


@dataclass
class Relayed:
    """A transaction the relayer accepted, and the chain transaction it sent."""

    id: str
    type: str
    sender: str  # `from`: the owner EOA
    to: str
    wallet: str
    chain_hash: str
    submitted_ms: int
    nonce: str = ""
    signature: str = ""
    metadata: str = ""


def _field(payload: Mapping, name: str) -> Any:
    if name not in payload or payload[name] is None:
        raise VenueError(f"missing field {name!r}")
    return payload[name]


def _address(value: Any, name: str) -> str:
    if not isinstance(value, str) or not is_hex_address(value):
        raise VenueError(f"{name} must be a 0x-prefixed 20-byte address, got {value!r}")
    return to_checksum_address(value)


def _uint(value: Any, name: str) -> int:
    """A uint256 sent as a decimal string (as the SDK sends nonces, deadlines and values)."""
    if not isinstance(value, str) or not value.isascii() or not value.isdigit() or len(value) > 78:
        raise VenueError(f"{name} must be an unsigned integer as a decimal string, got {value!r}")
    number = int(value)
    if number > MAX_UINT256:
        raise VenueError(f"{name} is out of range for uint256")
    return number


def _hex_bytes(value: Any, name: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x") or len(value) % 2:
        raise VenueError(f"{name} must be 0x-prefixed hex bytes")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise VenueError(f"{name} must be 0x-prefixed hex bytes") from None


def _builder_signature(secret: str, timestamp: str, method: str, path: str, body: str) -> str:
    """The builder HMAC as the SDK computes it (``_internal/hmac.py``): urlsafe-base64 HMAC-SHA256 of
    timestamp + method + path + body, keyed by the urlsafe-base64-decoded secret."""
    key = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
    digest = hmac.new(key, f"{timestamp}{method}{path}{body}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    return headers.get(name) or headers.get(name.lower())


def batch_typed_data(wallet: str, nonce: int, deadline: int, calls: list[tuple[str, int, bytes]],
                     chain_id: int) -> dict:
    """The EIP-712 ``Batch`` a deposit wallet's owner signs (polymarket-client
    ``_internal/actions/relayer/signing/deposit_wallet.py``)."""
    return {
        "domain": {"name": "DepositWallet", "version": "1", "chainId": chain_id, "verifyingContract": wallet},
        "types": {
            "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                             {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}],
            "Batch": [{"name": "wallet", "type": "address"}, {"name": "nonce", "type": "uint256"},
                      {"name": "deadline", "type": "uint256"}, {"name": "calls", "type": "Call[]"}],
            "Call": [{"name": "target", "type": "address"}, {"name": "value", "type": "uint256"},
                     {"name": "data", "type": "bytes"}],
        },
        "primaryType": "Batch",
        "message": {"wallet": wallet, "nonce": nonce, "deadline": deadline,
                    "calls": [{"target": t, "value": v, "data": d} for t, v, d in calls]},
    }


@dataclass
class Relayer:
    chain: Chain
    secret: bytes  # derives keys and ids
    builder_keys: dict[str, BuilderKey] = field(default_factory=dict)
    relayer_keys: dict[str, str] = field(default_factory=dict)  # key -> owner address (checksummed)
    transactions: dict[str, Relayed] = field(default_factory=dict)
    _ids: itertools.count = field(default_factory=itertools.count, init=False, repr=False)

    @functools.cached_property
    def address(self) -> str:
        """The relayer's own account, which sends its transactions and pays their gas."""
        return Account.from_key(hashlib.sha256(self.secret + b":relayer").digest()).address

    def _derive(self, label: str, *parts: object) -> bytes:
        return hmac.new(self.secret, "\x00".join(map(str, (label, *parts))).encode(), hashlib.sha256).digest()

    # ------------------------------------------------------------ keys

    def issue_builder_key(self, owner: str) -> BuilderKey:
        index = sum(1 for k in self.builder_keys.values() if k.owner.lower() == owner.lower())
        key = BuilderKey(key=str(uuid.UUID(bytes=self._derive("builder-key", owner.lower(), index)[:16], version=4)),
                         secret=base64.urlsafe_b64encode(self._derive("builder-secret", owner.lower(), index)).decode(),
                         passphrase=self._derive("builder-passphrase", owner.lower(), index).hex(),
                         owner=owner, created_ms=self.chain.now())
        self.builder_keys[key.key] = key
        return key

    def issue_relayer_key(self, owner: str) -> str:
        index = sum(1 for o in self.relayer_keys.values() if o.lower() == owner.lower())
        key = str(uuid.UUID(bytes=self._derive("relayer-key", owner.lower(), index)[:16], version=4))
        self.relayer_keys[key] = to_checksum_address(owner)
        return key

    def builder_key(self, headers: Mapping[str, str], method: str, path: str, body: bytes) -> BuilderKey:
        """The live builder key whose POLY_BUILDER_* headers sign this request; AuthError otherwise."""
        given = {name: _header(headers, name) for name in _BUILDER_HEADERS}
        if None in given.values():
            raise auth.AuthError(f"missing builder headers: {', '.join(n for n, v in given.items() if v is None)}")
        key = self.builder_keys.get(given["POLY_BUILDER_API_KEY"])
        if key is None or key.revoked_ms is not None or not hmac.compare_digest(
                given["POLY_BUILDER_PASSPHRASE"].encode(), key.passphrase.encode()):
            raise auth.AuthError("invalid builder api key")
        try:
            expected = _builder_signature(key.secret, given["POLY_BUILDER_TIMESTAMP"], method.upper(), path,
                                          body.decode())
        except (UnicodeDecodeError, binascii.Error):
            raise auth.AuthError("invalid builder signature") from None
        if not hmac.compare_digest(given["POLY_BUILDER_SIGNATURE"].encode(), expected.encode()):
            raise auth.AuthError("invalid builder signature")
        return key

    def authenticate(self, headers: Mapping[str, str], method: str, path: str, body: bytes) -> str | None:
        """Whom a submission may act for: a relayer key's owner, or None (anyone) for a builder key."""
        relayer_key = _header(headers, "RELAYER_API_KEY")
        if relayer_key is not None:
            owner = self.relayer_keys.get(relayer_key)
            claimed = _header(headers, "RELAYER_API_KEY_ADDRESS") or ""
            if owner is None or owner.lower() != claimed.lower():
                raise auth.AuthError("invalid relayer api key: RELAYER_API_KEY_ADDRESS must be the address that owns "
                                     "the key")
            return owner
        if _header(headers, "POLY_BUILDER_API_KEY") is not None:
            self.builder_key(headers, method, path, body)
            return None
        raise auth.AuthError("authenticate with a builder API key (POLY_BUILDER_* headers) or a relayer API key "
                             "(RELAYER_API_KEY and RELAYER_API_KEY_ADDRESS)")

    # ------------------------------------------------------------ wallets

    def deployed(self, address: str) -> bool:
        """Whether a smart wallet exists at ``address``: deployed through the relayer, or holding or having
        approved anything (the admin endpoints stand in for deposits and approvals, which need the wallet)."""
        self.chain.settle()
        key = address.lower()
        if key in self.chain.deployed:
            return True
        account = self.chain.engine.accounts.get(key)
        return account is not None and bool(
            account.collateral or any(account.shares.values()) or any(account.allowances.values())
            or account.approved)

    def deposit_wallet(self, owner: str) -> str:
        """The owner's deposit wallet: the one deployed (the legacy UUPS one if only it is), else the beacon one."""
        candidates = wallets.deposit_wallets(owner, self.chain.chain_id)
        return next((w for w in candidates if self.deployed(w)), candidates[0])

    def nonce(self, wallet: str) -> int:
        self.chain.settle()
        return self.chain.wallet_nonces.get(wallet.lower(), 0)

    # ------------------------------------------------------------ transactions

    def submit(self, caller: str | None, payload: Any) -> Relayed:
        """Check a submission as the relayer and the contracts would, and send it; VenueError says why not."""
        if not isinstance(payload, dict):
            raise VenueError("the body must be a JSON object")
        kind = _field(payload, "type")
        if kind in ("PROXY", "SAFE", "SAFE-CREATE"):
            raise VenueError(_NOT_SERVED.format(kind=kind))
        if kind not in ("WALLET-CREATE", "WALLET"):
            raise VenueError(f"unknown transaction type {kind!r}: one of WALLET-CREATE, WALLET, PROXY, SAFE, "
                             "SAFE-CREATE")
        sender = _address(_field(payload, "from"), "from")
        if caller is not None and caller.lower() != sender.lower():
            raise VenueError(f"a relayer API key acts only for its own address {caller}, not for {sender}", 403)
        factory = wallets.CONSTANTS[self.chain.chain_id].deposit_wallet_factory
        if _address(_field(payload, "to"), "to") != factory:
            raise VenueError(f"to must be the deposit wallet factory {factory}")
        metadata = payload.get("metadata", "")
        if not isinstance(metadata, str) or len(metadata) > 500:
            raise VenueError("metadata must be a string of at most 500 characters")
        if kind == "WALLET-CREATE":
            return self._create(sender, factory, metadata)
        return self._batch(sender, factory, metadata, payload)

    def _relay(self, kind: str, sender: str, to: str, wallet: str, effects: list[Callable[[], None]],
               **details: str) -> Relayed:
        n = next(self._ids)
        tx_id = str(uuid.UUID(bytes=self._derive("relayed", n)[:16], version=4))
        sent = self.chain.send("0x" + keccak(self._derive("relayed-hash", n)).hex(), self.address, to, effects,
                               wallet=wallet)
        relayed = Relayed(id=tx_id, type=kind, sender=sender, to=to, wallet=wallet, chain_hash=sent.hash,
                          submitted_ms=sent.sent_ms, **details)
        self.transactions[tx_id] = relayed
        return relayed

    def _create(self, owner: str, factory: str, metadata: str) -> Relayed:
        wallet = wallets.deposit_wallet_beacon(owner, self.chain.chain_id)
        if wallet is None:
            raise VenueError(f"chain {self.chain.chain_id} has no known deposit wallet beacon to deploy")
        if self.chain.pending_for(wallet):
            raise VenueError(f"wallet has in-flight action: the deployment of {wallet} is not mined yet")
        if self.deployed(wallet):
            raise VenueError(f"deposit wallet {wallet} is already deployed")
        return self._relay("WALLET-CREATE", owner, factory, wallet,
                           [lambda: self.chain.deployed.add(wallet.lower())], metadata=metadata)

    def _batch(self, sender: str, factory: str, metadata: str, payload: dict) -> Relayed:
        params = _field(payload, "depositWalletParams")
        if not isinstance(params, dict):
            raise VenueError("depositWalletParams must be an object")
        wallet = _address(_field(params, "depositWallet"), "depositWalletParams.depositWallet")
        nonce = _uint(_field(payload, "nonce"), "nonce")
        deadline = _uint(_field(params, "deadline"), "depositWalletParams.deadline")
        raw_calls = _field(params, "calls")
        if not isinstance(raw_calls, list) or not 1 <= len(raw_calls) <= MAX_CALLS:
            raise VenueError(f"depositWalletParams.calls must be a list of 1 to {MAX_CALLS} calls")
        calls = []
        for i, call in enumerate(raw_calls):
            if not isinstance(call, dict):
                raise VenueError(f"call {i} must be an object with target, value and data")
            calls.append((_address(_field(call, "target"), f"call {i} target"),
                          _uint(_field(call, "value"), f"call {i} value"),
                          _hex_bytes(_field(call, "data"), f"call {i} data")))
        signature = _hex_bytes(_field(payload, "signature"), "signature")
        if len(signature) != 65:
            raise VenueError("signature must be the owner's 65-byte signature of the batch (session-signer "
                             "signatures are not served)")
        try:
            signer = Account.recover_message(
                encode_typed_data(full_message=batch_typed_data(wallet, nonce, deadline, calls, self.chain.chain_id)),
                signature=signature)
        except Exception:  # any malformed part is the same refusal
            raise VenueError("invalid batch signature") from None
        if signer != sender:
            raise VenueError(f"invalid batch signature: it is signed by {signer}, not by from {sender}")
        if not wallets.is_wallet_of(signer, wallet, wallets.POLY_1271, self.chain.chain_id):
            raise VenueError(f"{wallet} is not the deposit wallet of the batch's signer {signer}")
        if not self.deployed(wallet):
            raise VenueError(f"deposit wallet {wallet} is not deployed: submit a WALLET-CREATE first")
        if self.chain.pending_for(wallet):
            raise VenueError(f"wallet has in-flight action: a transaction of {wallet} is not mined yet")
        expected = self.nonce(wallet)
        if nonce != expected:
            raise VenueError(f"batch nonce {nonce} does not match on-chain nonce {expected}")
        if deadline < self.chain.now() // 1000:
            raise VenueError(f"the batch's deadline {deadline} has passed")
        try:
            approvals = [self.chain.decode(target, data, value) for target, value, data in calls]
        except Refused as exc:
            raise VenueError(exc.message) from None

        def run() -> None:
            for approval in approvals:
                self.chain.approve(wallet, approval)
            self.chain.wallet_nonces[wallet.lower()] = expected + 1
        return self._relay("WALLET", sender, factory, wallet, [run], nonce=str(nonce),
                           signature="0x" + signature.hex(), metadata=metadata)

    def state(self, relayed: Relayed) -> str:
        self.chain.settle()
        sent = self.chain.transactions[relayed.chain_hash]
        elapsed = self.chain.now() - relayed.submitted_ms
        if not sent.mined:
            return NEW if elapsed < self.chain.mined_after_ms // 2 else EXECUTED
        return MINED if elapsed < self.chain.confirmed_after_ms else CONFIRMED

    def transaction(self, tx_id: str) -> Relayed:
        relayed = self.transactions.get(tx_id)
        if relayed is None:
            raise VenueError("transaction not found", 404)
        return relayed


def relayer_routes(relayer: Relayer) -> list[Route]:
    """The relayer's endpoints the clients call, on the CLOB port (set the SDK's ``relayer_url`` to the CLOB)."""

    def answer(fn):
        async def endpoint(request: Request) -> Response:
            try:
                return await fn(request)
            except auth.AuthError as exc:
                return JSONResponse({"error": exc.message}, status_code=exc.status)
            except VenueError as exc:
                return JSONResponse({"error": exc.message}, status_code=exc.status)
        return endpoint

    def query_address(request: Request) -> str:
        return _address(request.query_params.get("address"), "address")

    def query_type(request: Request, allowed: tuple[str, ...]) -> str | None:
        kind = request.query_params.get("type")
        if kind is not None and kind not in allowed:
            raise VenueError(f"type must be one of {', '.join(allowed)}")
        return kind

    async def deployed(request: Request) -> Response:
        # `GET /deployed?address&type`, which the unified SDK asks for a deposit, proxy or Safe wallet.
        query_type(request, ("WALLET", "PROXY", "SAFE"))
        return JSONResponse({"deployed": relayer.deployed(query_address(request))})

    async def submit(request: Request) -> Response:
        raw = await request.body()
        caller = relayer.authenticate(request.headers, request.method, request.url.path, raw)
        try:
            payload = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise VenueError("invalid JSON body") from None
        relayed = relayer.submit(caller, payload)
        return JSONResponse({"transactionID": relayed.id, "state": relayer.state(relayed)})

    def hash_of(relayed: Relayed, state: str) -> str | None:
        return None if state == NEW else relayed.chain_hash

    async def transaction(request: Request) -> Response:
        # The unified SDK's poll (`poll.py`): snake_case, transaction_hash present (null until broadcast).
        relayed = relayer.transaction(request.path_params["id"])
        state = relayer.state(relayed)
        return JSONResponse({"transaction_id": relayed.id, "transaction_hash": hash_of(relayed, state),
                             "state": state, "type": relayed.type, "from": relayed.sender, "to": relayed.to})

    async def transaction_by_query(request: Request) -> Response:
        # The docs' `GET /transaction?id=`: a list, camelCase (api-reference/relayer/get-a-transaction-by-id).
        relayed = relayer.transaction(request.query_params.get("id", ""))
        state = relayer.state(relayed)
        return JSONResponse([{"transactionID": relayed.id, "transactionHash": hash_of(relayed, state) or "",
                              "from": relayed.sender, "to": relayed.to, "proxyAddress": relayed.wallet,
                              "nonce": relayed.nonce, "signature": relayed.signature, "state": state,
                              "type": relayed.type, "owner": relayed.sender, "metadata": relayed.metadata}])

    async def execute_params(request: Request) -> Response:
        # `GET /v1/account/transactions/params?address=<owner>&type=WALLET` -> the relayer and the wallet's nonce.
        owner = query_address(request)
        kind = query_type(request, ("WALLET", "SAFE", "PROXY"))
        if kind is None:
            raise VenueError("type is required: WALLET")
        if kind != "WALLET":
            raise VenueError(_NOT_SERVED.format(kind=kind))
        return JSONResponse({"address": relayer.address, "nonce": str(relayer.nonce(relayer.deposit_wallet(owner)))})

    async def not_served(request: Request) -> Response:
        raise VenueError(_NOT_SERVED.format(kind="PROXY"))

    routes = [Route("/deployed", deployed), Route("/submit", submit, methods=["POST"]),
              Route("/v1/account/transactions/params", execute_params),
              Route("/v1/account/transactions/{id}", transaction), Route("/transaction", transaction_by_query),
              Route("/relay-payload", not_served)]
    return [Route(r.path, answer(r.endpoint), methods=r.methods) for r in routes]


def builder_key_routes(relayer: Relayer, credentials: Callable[[str], auth.ApiCredentials | None]) -> list[Route]:
    """The CLOB's builder API keys: create and list them with the account's L2 headers, revoke one with its own
    builder headers (polymarket-client ``_internal/actions/auth.py``)."""
    path = "/auth/builder-api-key"

    async def endpoint(request: Request) -> Response:
        raw = await request.body()
        try:
            if request.method == "DELETE":
                if _header(request.headers, "POLY_BUILDER_API_KEY") is None:
                    # py-clob-client-v2's revoke_builder_api_key sends L2 headers only, which name no key.
                    return JSONResponse({"error": "authenticate the revocation with the builder key's own "
                                                  "POLY_BUILDER_* headers: they name the key to revoke"},
                                        status_code=400)
                key = relayer.builder_key(request.headers, request.method, request.url.path, raw)
                relayer.builder_keys[key.key] = dataclasses.replace(key, revoked_ms=relayer.chain.now())
                return JSONResponse("OK")
            creds = auth.check_l2(request.headers, request.method, request.url.path, raw, credentials)
        except auth.AuthError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        if request.method == "POST":
            key = relayer.issue_builder_key(creds.address)
            return JSONResponse({"key": key.key, "secret": key.secret, "passphrase": key.passphrase})
        return JSONResponse([{"key": k.key, "createdAt": k.created_ms, "revokedAt": k.revoked_ms}
                             for k in relayer.builder_keys.values() if k.owner.lower() == creds.address.lower()])

    return [Route(path, endpoint, methods=["GET", "POST", "DELETE"])]
