"""The chain as the venue's clients reach it: the approvals a wallet makes, the transactions that make them, and
JSON-RPC (``POST /rpc`` on the CLOB port) for the reads and sends the unified SDK does.

The venue keeps no EVM. Its state is the engine's (balances, and what each exchange may move), plus wallet
deployments and nonces; a transaction may carry only the trading approvals the unified SDK makes (ERC-20
``approve`` of pUSD, ERC-1155 ``setApprovalForAll`` on the conditional tokens or the position manager, to the
spenders of its ``setup_trading_approvals``), and anything else is refused with a message saying so. An approval
to an exchange changes the engine's allowances, exactly as ``/_admin/approve`` does; one to another spender is
kept and read back by ``eth_call``, with no effect on trading.

A transaction takes effect once mined, ``mined_after_ms`` after it is sent, and is confirmed ``confirmed_after_ms``
after it is sent (the venue's trade timings). Blocks are Polygon's two seconds, numbered from the clock.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import rlp  # eth-account's own dependency: it encodes the transactions this decodes
from eth_account import Account
from eth_utils import is_hex_address, keccak, to_checksum_address
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .engine import UNITS, Engine, allowance_units, units

BLOCK_MS = 2_000  # Polygon's block time
GAS_PRICE = 30 * 10**9  # what eth_gasPrice answers: 30 gwei
APPROVAL_GAS = 60_000  # what eth_estimateGas answers for an approval; a transaction must allow at least this
MAX_UINT256 = 2**256 - 1


def _selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


APPROVE = _selector("approve(address,uint256)")
SET_APPROVAL_FOR_ALL = _selector("setApprovalForAll(address,bool)")
ALLOWANCE = _selector("allowance(address,address)")
IS_APPROVED_FOR_ALL = _selector("isApprovedForAll(address,address)")
BALANCE_OF = _selector("balanceOf(address)")
BALANCE_OF_TOKEN = _selector("balanceOf(address,uint256)")


@dataclass(frozen=True)
class Contracts:
    """One chain's token contracts, and the spenders the unified SDK approves besides the exchanges (polymarket-client
    ``environments.py``; ``_internal/actions/relayer/approvals.py`` ``_required_trading_approvals``)."""

    collateral: str  # pUSD
    conditional_tokens: str  # the CTF: protocol-v1 outcome tokens
    position_manager: str | None  # protocol-v2 positions
    erc20_spenders: tuple[str, ...] = ()  # of pUSD, besides the exchanges
    ctf_operators: tuple[str, ...] = ()  # of the conditional tokens, besides the V2 exchanges
    position_operators: tuple[str, ...] = ()  # of the position manager, besides exchange V3


_ROUTER = "0x12121212006e4CD160D18e3f00711DA5c3372600"  # protocol_v2_router
_COLLATERAL_ADAPTER = "0xAdA100Db00Ca00073811820692005400218FcE1f"
_NEG_RISK_COLLATERAL_ADAPTER = "0xadA2005600Dec949baf300f4C6120000bDB6eAab"
_AUTO_REDEEM = "0xa1200000d0002264C9a1698e001292D00E1b00af"
CONTRACTS: dict[int, Contracts] = {
    137: Contracts(
        collateral="0xC011a7E12a19f7B1f670d46F03B03f3342E82DFB",
        conditional_tokens="0x4D97DCd97eC945f40cF65F87097ACe5EA0476045",
        position_manager="0x006F54F7f9A22e0000CC2AB60031000000ae9fEF",
        erc20_spenders=(_COLLATERAL_ADAPTER, _NEG_RISK_COLLATERAL_ADAPTER, _ROUTER,
                        "0xDCa4af75705dbB50f62437045afF9921947917d2"),  # perps_deposit_contract
        ctf_operators=(_COLLATERAL_ADAPTER, _NEG_RISK_COLLATERAL_ADAPTER, _AUTO_REDEEM,
                       "0x1000008dD9001B968442c1000017eaE6E0dA00Ba",  # binary_module
                       "0x200000900045e3B6259600682756002200028933"),  # neg_risk_module
        position_operators=(_ROUTER, _AUTO_REDEEM),
    ),
    # Amoy: py-clob-client-v2's config; the unified SDK has no Amoy environment, so no other spenders are known.
    80002: Contracts(collateral="0xC011a7E12a19f7B1f670d46F03B03f3342E82DFB",
                     conditional_tokens="0x69308FB512518e39F9b16112fA8d994F4e2Bf8bB", position_manager=None),
}


class Refused(Exception):
    """A call or transaction the venue's chain will not run; ``message`` says why and what it would."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Approval:
    """One approval call: ``token`` lets ``spender`` move the owner's tokens, ``amount`` pUSD units (ERC-20) or
    1/0 for approved/revoked (ERC-1155)."""

    standard: str  # "ERC20" | "ERC1155"
    token: str
    spender: str
    amount: int


@dataclass
class Transaction:
    """A transaction on the venue's chain, sent (by an EOA or the relayer) and taking effect once mined."""

    hash: str
    sender: str
    to: str
    sent_ms: int
    effects: list[Callable[[], None]]
    nonce: int | None = None  # the sender's nonce, for a transaction an EOA signed
    wallet: str | None = None  # the smart wallet it acts for, for one the relayer sent
    mined: bool = False


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _address_word(data: bytes, at: int) -> str:
    word = data[at: at + 32]
    if len(word) != 32 or any(word[:12]):
        raise Refused("malformed call data: an address argument is not a 20-byte address")
    return to_checksum_address(word[12:])


@dataclass
class Chain:
    engine: Engine
    chain_id: int
    mined_after_ms: int = 300
    confirmed_after_ms: int = 800
    deployed: set[str] = field(default_factory=set)  # smart wallets (lower-case) deployed through the relayer
    wallet_nonces: dict[str, int] = field(default_factory=dict)  # deposit wallet / Safe / proxy (lower) -> nonce
    nonces: dict[str, int] = field(default_factory=dict)  # EOA (lower) -> transactions mined
    transactions: dict[str, Transaction] = field(default_factory=dict)  # hash -> transaction, in the order sent
    pending: list[Transaction] = field(default_factory=list)  # sent, not yet mined, in the order sent
    erc20: dict[tuple[str, str], int] = field(default_factory=dict)  # (owner, spender) lower -> other spenders'
    erc1155: set[tuple[str, str, str]] = field(default_factory=set)  # (owner, token, operator) lower, others

    @property
    def contracts(self) -> Contracts:
        return CONTRACTS[self.chain_id]

    def now(self) -> int:
        return self.engine.clock()

    def block_at(self, ms: int) -> int:
        return ms // BLOCK_MS

    # ------------------------------------------------------------ approvals

    def decode(self, target: str, data: bytes, value: int) -> Approval:
        """The approval a call makes; Refused for any call that is not one the venue runs."""
        c, exchanges = self.contracts, self.engine.exchanges
        if value:
            raise Refused(f"a call may not send value (got {value} wei): the venue's chain runs approvals only")
        selector, args = data[:4], data[4:]
        target = target.lower()
        if target == c.collateral.lower() and selector == APPROVE:
            if len(args) != 64:
                raise Refused("malformed approve(address,uint256) call data")
            spender = _address_word(args, 0)
            allowed = (*exchanges, *c.erc20_spenders)
            if spender.lower() not in (a.lower() for a in allowed):
                raise Refused(f"approve of pUSD to {spender}, which is not a spender the venue knows "
                              f"(the exchanges {', '.join(exchanges)}, or {', '.join(c.erc20_spenders) or 'none'})")
            return Approval("ERC20", c.collateral, spender, int.from_bytes(args[32:64], "big"))
        if selector == SET_APPROVAL_FOR_ALL and target in (
                c.conditional_tokens.lower(), (c.position_manager or "").lower()):
            if len(args) != 64 or int.from_bytes(args[32:64], "big") > 1:
                raise Refused("malformed setApprovalForAll(address,bool) call data")
            operator, flag = _address_word(args, 0), args[63]
            is_ctf = target == c.conditional_tokens.lower()
            allowed = (*exchanges[:2], *c.ctf_operators) if is_ctf else (*exchanges[2:], *c.position_operators)
            if operator.lower() not in (a.lower() for a in allowed):
                token = "the conditional tokens" if is_ctf else "the position manager"
                raise Refused(f"setApprovalForAll on {token} for {operator}, which is not an operator the venue "
                              f"knows for it ({', '.join(allowed)})")
            return Approval("ERC1155", c.conditional_tokens if is_ctf else str(c.position_manager), operator, flag)
        raise Refused(
            f"the venue's chain runs only trading approvals: approve(address,uint256) on pUSD {c.collateral}, or "
            f"setApprovalForAll(address,bool) on the conditional tokens {c.conditional_tokens}"
            + (f" or the position manager {c.position_manager}" if c.position_manager else "")
            + f"; got selector 0x{selector.hex()} on {target}")

    def _exchange(self, approval: Approval) -> str | None:
        """The engine's exchange an approval is about, if it is about trading: pUSD to any exchange, the conditional
        tokens to the V2 exchanges, the position manager to exchange V3."""
        exchanges = self.engine.exchanges
        spender = approval.spender.lower()
        if approval.standard == "ERC20":
            candidates = exchanges
        elif approval.token.lower() == self.contracts.conditional_tokens.lower():
            candidates = exchanges[:2]
        else:
            candidates = exchanges[2:]
        return next((x for x in candidates if x.lower() == spender), None)

    def approve(self, owner: str, approval: Approval) -> None:
        """Apply an approval the owner (an EOA or a smart wallet) made."""
        exchange = self._exchange(approval)
        if approval.standard == "ERC20":
            if exchange is not None:
                self.engine.approve(owner, [exchange], collateral=Decimal(approval.amount) / UNITS)
            else:
                self.erc20[(owner.lower(), approval.spender.lower())] = approval.amount
        elif exchange is not None:
            self.engine.approve(owner, [exchange], conditional=bool(approval.amount))
        elif approval.amount:
            self.erc1155.add((owner.lower(), approval.token.lower(), approval.spender.lower()))
        else:
            self.erc1155.discard((owner.lower(), approval.token.lower(), approval.spender.lower()))

    def call(self, to: str, data: bytes) -> bytes:
        """``eth_call``: the reads of the approvals and balances the venue keeps; Refused for any other."""
        c, accounts = self.contracts, self.engine.accounts
        selector, args, target = data[:4], data[4:], to.lower()
        if target == c.collateral.lower() and selector == ALLOWANCE and len(args) == 64:
            owner, spender = _address_word(args, 0), _address_word(args, 32)
            exchange = self._exchange(Approval("ERC20", c.collateral, spender, 0))
            if exchange is None:
                return _word(self.erc20.get((owner.lower(), spender.lower()), 0))
            account = accounts.get(owner.lower())
            return _word(int(allowance_units(account.allowances.get(exchange, Decimal(0)))) if account else 0)
        if target == c.collateral.lower() and selector == BALANCE_OF and len(args) == 32:
            account = accounts.get(_address_word(args, 0).lower())
            return _word(int(units(account.collateral)) if account else 0)
        tokens = (c.conditional_tokens.lower(), (c.position_manager or "").lower())
        if target in tokens and selector == IS_APPROVED_FOR_ALL and len(args) == 64:
            owner, operator = _address_word(args, 0), _address_word(args, 32)
            token = c.conditional_tokens if target == tokens[0] else str(c.position_manager)
            exchange = self._exchange(Approval("ERC1155", token, operator, 1))
            if exchange is None:
                return _word(int((owner.lower(), token.lower(), operator.lower()) in self.erc1155))
            account = accounts.get(owner.lower())
            return _word(int(account is not None and exchange in account.approved))
        if target in tokens and selector == BALANCE_OF_TOKEN and len(args) == 64:
            account = accounts.get(_address_word(args, 0).lower())
            token_id = str(int.from_bytes(args[32:64], "big"))
            return _word(int(units(account.shares.get(token_id, Decimal(0)))) if account else 0)
        raise Refused(f"execution reverted: the venue's chain answers eth_call only for allowance, balanceOf and "
                      f"isApprovedForAll on pUSD, the conditional tokens and the position manager; got selector "
                      f"0x{selector.hex()} on {to}")

    # ------------------------------------------------------------ transactions

    def send(self, tx_hash: str, sender: str, to: str, effects: list[Callable[[], None]], *,
             nonce: int | None = None, wallet: str | None = None) -> Transaction:
        """Put a transaction on the chain; its effects apply once it is mined."""
        tx = Transaction(hash=tx_hash, sender=sender, to=to, sent_ms=self.now(), effects=effects, nonce=nonce,
                         wallet=wallet)
        self.transactions[tx.hash] = tx
        self.pending.append(tx)
        self.settle()
        return tx

    def settle(self) -> None:
        """Mine what is due: apply each transaction's effects, in the order sent."""
        now = self.now()
        while self.pending and now >= self.pending[0].sent_ms + self.mined_after_ms:
            tx = self.pending.pop(0)
            tx.mined = True
            for effect in tx.effects:
                effect()
            if tx.nonce is not None:
                self.nonces[tx.sender.lower()] = self.nonces.get(tx.sender.lower(), 0) + 1

    def pending_for(self, wallet: str) -> bool:
        """Whether a transaction for this smart wallet is sent but not yet mined."""
        self.settle()
        return any(tx.wallet is not None and tx.wallet.lower() == wallet.lower() for tx in self.pending)

    def transaction_count(self, address: str, block: str) -> int:
        """The EOA's transactions mined (``latest``), or sent (``pending``): the nonce its next one takes."""
        self.settle()
        mined = self.nonces.get(address.lower(), 0)
        if block != "pending":
            return mined
        return mined + sum(1 for tx in self.pending if tx.nonce is not None and tx.sender.lower() == address.lower())

    def send_raw(self, raw: bytes) -> str:
        """``eth_sendRawTransaction``: a signed legacy (EIP-155) transaction making one approval, sent from the
        EOA that signed it; returns its hash."""
        if not raw or raw[0] < 0xc0:
            raise Refused("only legacy (type 0) transactions are accepted; send gasPrice, not maxFeePerGas")
        try:
            fields = rlp.decode(raw)
        except rlp.exceptions.RLPException:
            raise Refused("the transaction is not valid RLP") from None
        if not isinstance(fields, list) or len(fields) != 9 or not all(isinstance(f, bytes) for f in fields):
            raise Refused("a legacy transaction has 9 fields: nonce, gasPrice, gas, to, value, data, v, r, s")
        nonce, gas_price, gas, to, value, data, v = (*(int.from_bytes(f, "big") for f in fields[:3]), fields[3],
                                                     int.from_bytes(fields[4], "big"), fields[5],
                                                     int.from_bytes(fields[6], "big"))
        if v < 35:
            raise Refused("the transaction has no replay protection: sign it for a chain id (EIP-155)")
        if (v - 35) // 2 != self.chain_id:
            raise Refused(f"the transaction is signed for chain {(v - 35) // 2}, not {self.chain_id}")
        if len(to) != 20:
            raise Refused("the transaction creates a contract; the venue's chain runs approvals only")
        try:
            sender = Account.recover_transaction(raw)
        except Exception:  # any bad signature is the same refusal
            raise Refused("invalid transaction signature") from None
        approval = self.decode(to_checksum_address(to), data, value)
        expected = self.transaction_count(sender, "pending")
        if nonce != expected:
            raise Refused(f"nonce too {'low' if nonce < expected else 'high'}: next nonce {expected}, tx nonce {nonce}")
        if gas < APPROVAL_GAS:
            raise Refused(f"intrinsic gas too low: the approval needs {APPROVAL_GAS}, the transaction allows {gas}")
        if gas_price <= 0:
            raise Refused("transaction underpriced: gasPrice must be positive")
        tx_hash = "0x" + keccak(raw).hex()
        if tx_hash in self.transactions:
            raise Refused("already known")
        self.send(tx_hash, sender, to_checksum_address(to), [lambda: self.approve(sender, approval)], nonce=nonce)
        return tx_hash

    def receipt(self, tx_hash: str) -> dict | None:
        """The transaction's receipt once mined, else None (as a node answers)."""
        self.settle()
        tx = self.transactions.get(tx_hash.lower())
        if tx is None or not tx.mined:
            return None
        mined_ms = tx.sent_ms + self.mined_after_ms
        number = self.block_at(mined_ms)
        return {"transactionHash": tx.hash, "transactionIndex": "0x0", "blockNumber": hex(number),
                "blockHash": _block_hash(number), "from": tx.sender, "to": tx.to, "status": "0x1",
                "gasUsed": hex(APPROVAL_GAS), "cumulativeGasUsed": hex(APPROVAL_GAS),
                "effectiveGasPrice": hex(GAS_PRICE), "contractAddress": None, "logs": [],
                "logsBloom": "0x" + "00" * 256, "type": "0x0"}


def _block_hash(number: int) -> str:
    return "0x" + keccak(text=f"polybot-local-venue:block:{number}").hex()


# ------------------------------------------------------------------ JSON-RPC

class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _quantity(value: Any, name: str) -> int:
    if not isinstance(value, str) or not value.startswith("0x") or len(value) > 66:
        raise RpcError(-32602, f"invalid params: {name} must be a 0x-prefixed hex quantity")
    try:
        return int(value, 16)
    except ValueError:
        raise RpcError(-32602, f"invalid params: {name} must be a 0x-prefixed hex quantity") from None


def _data(value: Any, name: str) -> bytes:
    if value is None:
        return b""
    if not isinstance(value, str) or not value.startswith("0x") or len(value) % 2:
        raise RpcError(-32602, f"invalid params: {name} must be 0x-prefixed hex bytes")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise RpcError(-32602, f"invalid params: {name} must be 0x-prefixed hex bytes") from None


def _rpc_address(value: Any, name: str) -> str:
    if not isinstance(value, str) or not is_hex_address(value):
        raise RpcError(-32602, f"invalid params: {name} must be a 0x-prefixed 20-byte address")
    return to_checksum_address(value)


def _params(params: list, count: int, method: str) -> list:
    if len(params) < count:
        raise RpcError(-32602, f"invalid params: {method} takes {count} parameter(s), got {len(params)}")
    return params


def _block_tag(value: Any) -> str:
    if value is None or value in ("latest", "pending", "safe", "finalized", "earliest"):
        return value or "latest"
    _quantity(value, "block")
    return value


def rpc_result(chain: Chain, method: str, params: list) -> Any:
    """One JSON-RPC method's result; RpcError for what a node would answer with an error object."""
    def refused(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except Refused as exc:
            raise RpcError(-32000, exc.message) from None

    if method == "eth_chainId":
        return hex(chain.chain_id)
    if method == "net_version":
        return str(chain.chain_id)
    if method == "eth_gasPrice":
        return hex(GAS_PRICE)
    if method == "eth_blockNumber":
        return hex(chain.block_at(chain.now()))
    if method == "eth_getBlockByNumber":
        tag = _block_tag(_params(params, 1, method)[0])
        latest = chain.block_at(chain.now())
        number = {"earliest": 0}.get(tag, latest) if not tag.startswith("0x") else int(tag, 16)
        if number > latest:
            return None
        return {"number": hex(number), "hash": _block_hash(number), "parentHash": _block_hash(number - 1),
                "timestamp": hex(number * BLOCK_MS // 1000), "gasLimit": hex(30_000_000), "gasUsed": "0x0",
                "baseFeePerGas": hex(GAS_PRICE), "transactions": [], "uncles": []}
    if method == "eth_getTransactionCount":
        address = _rpc_address(_params(params, 1, method)[0], "address")
        return hex(chain.transaction_count(address, _block_tag(params[1] if len(params) > 1 else None)))
    if method == "eth_estimateGas":
        tx = _params(params, 1, method)[0]
        if not isinstance(tx, dict):
            raise RpcError(-32602, "invalid params: eth_estimateGas takes a transaction object")
        if tx.get("from") is not None:
            _rpc_address(tx["from"], "from")
        to = _rpc_address(tx.get("to"), "to")
        value = _quantity(tx.get("value") or "0x0", "value")
        refused(lambda: chain.decode(to, _data(tx.get("data") or tx.get("input"), "data"), value))
        return hex(APPROVAL_GAS)
    if method == "eth_sendRawTransaction":
        return refused(lambda: chain.send_raw(_data(_params(params, 1, method)[0], "transaction")))
    if method == "eth_getTransactionReceipt":
        tx_hash = _data(_params(params, 1, method)[0], "transaction hash")
        if len(tx_hash) != 32:
            raise RpcError(-32602, "invalid params: a transaction hash is 32 bytes")
        return chain.receipt("0x" + tx_hash.hex())
    if method == "eth_call":
        tx = _params(params, 1, method)[0]
        if not isinstance(tx, dict):
            raise RpcError(-32602, "invalid params: eth_call takes a call object")
        to = _rpc_address(tx.get("to"), "to")
        data = _data(tx.get("data") or tx.get("input"), "data")
        return "0x" + refused(lambda: chain.call(to, data)).hex()
    raise RpcError(-32601, f"the method {method} does not exist/is not available")


def rpc_answer(chain: Chain, request: Any) -> dict:
    """The JSON-RPC response object for one request object."""
    if not isinstance(request, dict):
        return {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "invalid request: not an object"}}
    rid = request.get("id")
    if request.get("jsonrpc") != "2.0" or not isinstance(request.get("method"), str) or \
            not isinstance(request.get("params", []), list) or isinstance(rid, (dict, list, bool)):
        return {"jsonrpc": "2.0", "id": rid if isinstance(rid, (int, str)) else None,
                "error": {"code": -32600, "message": "invalid request: give jsonrpc \"2.0\", a method, params as a "
                                                     "list and an id"}}
    try:
        return {"jsonrpc": "2.0", "id": rid, "result": rpc_result(chain, request["method"], request.get("params", []))}
    except RpcError as exc:
        return {"jsonrpc": "2.0", "id": rid, "error": {"code": exc.code, "message": exc.message}}


MAX_BATCH = 100


def rpc_routes(chain: Chain) -> list[Route]:
    """``POST /rpc``: JSON-RPC 2.0, one request object or a batch (a list) of them."""
    async def rpc(request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return JSONResponse({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}})
        if isinstance(body, list):
            if not body or len(body) > MAX_BATCH:
                return JSONResponse({"jsonrpc": "2.0", "id": None, "error": {
                    "code": -32600, "message": f"invalid request: a batch holds 1 to {MAX_BATCH} requests"}})
            return JSONResponse([rpc_answer(chain, item) for item in body])
        return JSONResponse(rpc_answer(chain, body))

    return [Route("/rpc", rpc, methods=["POST"])]
