"""The wallets an owner's key trades through on Polymarket, derived as Polymarket's clients derive them.

Each is a CREATE2 address of a factory, salted by the owner: the proxy wallet (signature type 1), the Gnosis Safe
(type 2) and the deposit wallet (type 3; ERC-1271). Constants and init code from polymarket-client
``_internal/wallet.py`` and ``environments.py`` (see polybot_venue/WALLETS.md §2, which the local venue follows too;
the trading services keep their own copy so they never import the venue).
"""
from __future__ import annotations

from eth_utils import keccak, to_canonical_address, to_checksum_address

# Polygon's factories; Amoy (80002) has no proxy factory, and its deposit-wallet beacon is only read on chain.
PROXY_FACTORY = {137: "0xaB45c5A4B0c941a2F231C04C3f49182e1A254052"}
# keccak of the proxy factory's clone init code (builder-relayer-client PROXY_INIT_CODE_HASH)
PROXY_INIT_CODE_HASH = bytes.fromhex("d21df8dc65880a8606f09fe0ce3df9b8869287ab0b058be05aa9e8af6330a00b")
SAFE_FACTORY = {137: "0xaacFeEa03eb1561C4e67d661e40682Bd20E3541b", 80002: "0xaacFeEa03eb1561C4e67d661e40682Bd20E3541b"}
SAFE_INIT_CODE_HASH = bytes.fromhex("2bce2127ff07fb632d16c8347c4ebf501f4841168bed00d9e6ef715ddb6fcecf")
DEPOSIT_FACTORY = {137: "0x00000000000Fb5C9ADea0298D729A0CB3823Cc07", 80002: "0x00000000000Fb5C9ADea0298D729A0CB3823Cc07"}
DEPOSIT_BEACON = {137: "0x7A18EDfe055488A3128f01F563e5B479D92ffc3a"}
DEPOSIT_IMPLEMENTATION = {137: "0x58CA52ebe0DadfdF531Cde7062e76746de4Db1eB",
                          80002: "0x50a88fE9a441cB4c9c2aD6A2207CE2795C7D7Fbd"}


def _on(table: dict[int, str], chain_id: int, what: str) -> str:
    if chain_id not in table:
        raise ValueError(f"chain {chain_id} has no {what}")
    return table[chain_id]


def _create2(factory: str, salt: bytes, init_code_hash: bytes) -> str:
    return to_checksum_address(keccak(b"\xff" + to_canonical_address(factory) + salt + init_code_hash)[12:])


def proxy_wallet(owner: str, chain_id: int = 137) -> str:
    """The owner's Polymarket proxy wallet (type 1): salted by the owner's 20 bytes."""
    factory = _on(PROXY_FACTORY, chain_id, "proxy wallet factory")
    return _create2(factory, keccak(to_canonical_address(owner)), PROXY_INIT_CODE_HASH)


def safe_wallet(owner: str, chain_id: int = 137) -> str:
    """The owner's Gnosis Safe (type 2): salted by the owner as a 32-byte word."""
    factory = _on(SAFE_FACTORY, chain_id, "Safe factory")
    return _create2(factory, keccak(to_canonical_address(owner).rjust(32, b"\0")), SAFE_INIT_CODE_HASH)


def _wallet_args(factory: str, owner: str) -> bytes:
    """abi.encode(address factory, bytes32 walletId), the wallet id being the owner left-padded."""
    return to_canonical_address(factory).rjust(32, b"\0") + to_canonical_address(owner).rjust(32, b"\0")


def _erc1967_with_args(prefix: int, target: str, body: str, args: bytes) -> bytes:
    """Solady's ERC-1967 proxy init code carrying immutable ``args`` (its length goes into the first opcodes)."""
    return (prefix + (len(args) << 56)).to_bytes(10, "big") + to_canonical_address(target) + bytes.fromhex(body) + args


def deposit_wallet(owner: str, chain_id: int = 137) -> str:
    """The owner's deposit wallet (type 3) as new wallets are deployed: a beacon proxy (``initCodeERC1967Beacon``)."""
    beacon = _on(DEPOSIT_BEACON, chain_id, "known deposit-wallet beacon")
    factory = _on(DEPOSIT_FACTORY, chain_id, "deposit-wallet factory")
    args = _wallet_args(factory, owner)
    init = _erc1967_with_args(
        0x6100523D8160233D3973, beacon,
        "60195155f3363d3d373d3d363d602036600436635c60da1b60e01b36527fa3f0ad74e5423aebfd80d3ef4346578335a9a72aea"
        "ee59ff6cb3582b35133d50545afa5036515af43d6000803e604d573d6000fd5b3d6000f3", args)
    return _create2(factory, keccak(args), keccak(init))


def legacy_deposit_wallet(owner: str, chain_id: int = 137) -> str:
    """The owner's deposit wallet as first deployed (UUPS, ``initCodeERC1967``): what older owners still have."""
    factory = _on(DEPOSIT_FACTORY, chain_id, "deposit-wallet factory")
    args = _wallet_args(factory, owner)
    init = _erc1967_with_args(
        0x61003D3D8160233D3973, DEPOSIT_IMPLEMENTATION[chain_id],
        "60095155f3363d3d373d3d363d7f360894a13ba1a3210667c828492db98dca3e2076cc3735a920a3ca505d382bbc545af43d6000"
        "803e6038573d6000fd5b3d6000f3", args)
    return _create2(factory, keccak(args), keccak(init))


KINDS = ("eoa", "proxy", "safe", "deposit")  # [account] wallet, by signature type: 0, 1, 2, 3
WALLET_NAMES = {"eoa": "own address", "proxy": "proxy wallet", "safe": "Safe", "deposit": "deposit wallet"}


def derived_wallets(owner: str, chain_id: int) -> dict[str, tuple[str, ...]]:
    """The addresses each wallet kind of ``owner`` may have on this chain (the one new wallets get first); a kind
    the chain cannot derive is left out."""
    out: dict[str, tuple[str, ...]] = {"eoa": (to_checksum_address(owner),)}
    for kind, derive in (("proxy", (proxy_wallet,)), ("safe", (safe_wallet,)),
                         ("deposit", (deposit_wallet, legacy_deposit_wallet))):
        found = []
        for fn in derive:
            try:
                found.append(fn(owner, chain_id))
            except ValueError:  # this chain has no such wallet
                pass
        if found:
            out[kind] = tuple(found)
    return out


def kind_of(owner: str, wallet: str, chain_id: int = 137) -> str | None:
    """Which of the owner's wallets ``wallet`` is ("eoa", "proxy", "safe" or "deposit"); None if none of them."""
    wanted = wallet.lower()
    return next((kind for kind, found in derived_wallets(owner, chain_id).items()
                 if wanted in (w.lower() for w in found)), None)
