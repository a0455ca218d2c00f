"""The funder wallets an owner EOA trades through: proxy (type 1), Safe (type 2), deposit wallet (type 3).

Each is a CREATE2 address derived from the owner exactly as polymarket-client's ``_internal/wallet.py`` and the
builder-relayer-client derive it (WALLETS.md §2), so the venue knows whose wallet an order's maker is.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from eth_utils import keccak, to_canonical_address, to_checksum_address

EOA, POLY_PROXY, POLY_GNOSIS_SAFE, POLY_1271 = 0, 1, 2, 3


@dataclass(frozen=True)
class WalletConstants:
    """One chain's factories and implementations (polymarket-client ``environments.py``)."""

    proxy_factory: str | None
    proxy_implementation: str | None
    safe_factory: str
    safe_init_code_hash: str
    deposit_wallet_factory: str
    deposit_wallet_implementation: str
    deposit_wallet_beacon: str | None


_SAFE_INIT_CODE_HASH = "0x2bce2127ff07fb632d16c8347c4ebf501f4841168bed00d9e6ef715ddb6fcecf"
_DEPOSIT_WALLET_FACTORY = "0x00000000000Fb5C9ADea0298D729A0CB3823Cc07"
CONSTANTS: dict[int, WalletConstants] = {
    137: WalletConstants(
        proxy_factory="0xaB45c5A4B0c941a2F231C04C3f49182e1A254052",
        proxy_implementation="0x44e999d5c2F66Ef0861317f9A4805AC2e90aEB4f",
        safe_factory="0xaacFeEa03eb1561C4e67d661e40682Bd20E3541b",
        safe_init_code_hash=_SAFE_INIT_CODE_HASH,
        deposit_wallet_factory=_DEPOSIT_WALLET_FACTORY,
        deposit_wallet_implementation="0x58CA52ebe0DadfdF531Cde7062e76746de4Db1eB",
        deposit_wallet_beacon="0x7A18EDfe055488A3128f01F563e5B479D92ffc3a",
    ),
    # Amoy: no proxy factory ("Proxy factory unsupported on Amoy testnet"); its beacon is read on chain only.
    80002: WalletConstants(
        proxy_factory=None,
        proxy_implementation=None,
        safe_factory="0xaacFeEa03eb1561C4e67d661e40682Bd20E3541b",
        safe_init_code_hash=_SAFE_INIT_CODE_HASH,
        deposit_wallet_factory=_DEPOSIT_WALLET_FACTORY,
        deposit_wallet_implementation="0x50a88fE9a441cB4c9c2aD6A2207CE2795C7D7Fbd",
        deposit_wallet_beacon=None,
    ),
}


def create2(factory: str, salt: bytes, init_code_hash: bytes) -> str:
    """The checksummed address ``factory`` deploys with CREATE2 for this salt and init code hash."""
    return to_checksum_address(keccak(b"\xff" + to_canonical_address(factory) + salt + init_code_hash)[12:])


def proxy_init_code(factory: str, implementation: str) -> bytes:
    """The proxy factory's clone init code (polymarket-client ``wallet.py``; ctf-exchange ``PolyProxyLib.sol``)."""
    return bytes.fromhex(
        "3d3d606380380380913d393d73" + to_canonical_address(factory).hex()
        + "5af4602a57600080fd5b602d8060366000396000f3363d3d373d3d3d363d73" + to_canonical_address(implementation).hex()
        + "5af43d82803e903d91602b57fd5bf352e831dd"
    ) + (0x20).to_bytes(32, "big") + bytes(32)


def proxy_wallet(owner: str, chain_id: int = 137) -> str:
    """The owner's Polymarket proxy wallet (type 1); ValueError on a chain without a proxy factory."""
    c = CONSTANTS[chain_id]
    if c.proxy_factory is None or c.proxy_implementation is None:
        raise ValueError(f"chain {chain_id} has no proxy wallet factory")
    salt = keccak(to_canonical_address(owner))  # abi.encodePacked(owner): 20 bytes
    return create2(c.proxy_factory, salt, keccak(proxy_init_code(c.proxy_factory, c.proxy_implementation)))


def safe_wallet(owner: str, chain_id: int = 137) -> str:
    """The owner's Gnosis Safe (type 2)."""
    c = CONSTANTS[chain_id]
    salt = keccak(bytes(12) + to_canonical_address(owner))  # abi.encode(owner): 32 bytes
    return create2(c.safe_factory, salt, bytes.fromhex(c.safe_init_code_hash[2:]))


def _deposit_wallet_args(factory: str, owner: str) -> bytes:
    # abi.encode(address factory, bytes32 walletId) with walletId the owner left-padded to 32 bytes
    return bytes(12) + to_canonical_address(factory) + bytes(12) + to_canonical_address(owner)


def uups_init_code(implementation: str, args: bytes) -> bytes:
    """Solady ``initCodeERC1967(impl, args)``: an ERC-1967 proxy with immutable args."""
    head = (0x61003D3D8160233D3973 + (len(args) << 56)).to_bytes(10, "big")
    return (head + to_canonical_address(implementation) + bytes.fromhex(
        "6009" "5155f3363d3d373d3d363d7f360894a13ba1a3210667c828492db98dca3e2076"
        "cc3735a920a3ca505d382bbc545af43d6000803e6038573d6000fd5b3d6000f3") + args)


def beacon_init_code(beacon: str, args: bytes) -> bytes:
    """Solady ``initCodeERC1967BeaconProxy(beacon, args)``: a beacon proxy with immutable args."""
    head = (0x6100523D8160233D3973 + (len(args) << 56)).to_bytes(10, "big")
    return (head + to_canonical_address(beacon) + bytes.fromhex(
        "60195155f3363d3d373d3d363d602036600436635c60da"
        "1b60e01b36527fa3f0ad74e5423aebfd80d3ef4346578335a9a72aeaee59ff6c"
        "b3582b35133d50545afa5036515af43d6000803e604d573d6000fd5b3d6000f3") + args)


def deposit_wallet_uups(owner: str, chain_id: int = 137) -> str:
    """The owner's deposit wallet as first deployed (UUPS, "legacy"): what existing owners have."""
    c = CONSTANTS[chain_id]
    args = _deposit_wallet_args(c.deposit_wallet_factory, owner)
    return create2(c.deposit_wallet_factory, keccak(args), keccak(uups_init_code(c.deposit_wallet_implementation, args)))


def deposit_wallet_beacon(owner: str, chain_id: int = 137) -> str | None:
    """The owner's deposit wallet as deployed now (beacon proxy); None where the beacon is not known."""
    c = CONSTANTS[chain_id]
    if c.deposit_wallet_beacon is None:
        return None
    args = _deposit_wallet_args(c.deposit_wallet_factory, owner)
    return create2(c.deposit_wallet_factory, keccak(args), keccak(beacon_init_code(c.deposit_wallet_beacon, args)))


def deposit_wallets(owner: str, chain_id: int = 137) -> tuple[str, ...]:
    """Every address the owner's deposit wallet may have: the current (beacon) one first, then the UUPS one."""
    beacon = deposit_wallet_beacon(owner, chain_id)
    return (*([beacon] if beacon else []), deposit_wallet_uups(owner, chain_id))


def is_wallet_of(owner: str, wallet: str, signature_type: int, chain_id: int = 137) -> bool:
    """Whether ``wallet`` is the funder wallet of ``signature_type`` that ``owner`` controls."""
    wallet = wallet.lower()
    if signature_type == EOA:
        return wallet == owner.lower()
    if signature_type == POLY_PROXY:
        c = CONSTANTS[chain_id]
        return c.proxy_factory is not None and wallet == proxy_wallet(owner, chain_id).lower()
    if signature_type == POLY_GNOSIS_SAFE:
        return wallet == safe_wallet(owner, chain_id).lower()
    if signature_type == POLY_1271:
        return wallet in (w.lower() for w in deposit_wallets(owner, chain_id))
    return False


# ------------------------------------------------------------ session signers

ALL_SCOPES, CLOB_SCOPE = "ALL", "CLOB"


@dataclass(frozen=True)
class SessionKey:
    """A signer a deposit wallet lets sign for it until ``valid_until_s`` (unix seconds), for ``scopes``."""

    address: str  # checksummed
    scopes: tuple[str, ...]
    valid_until_s: int

    def allows(self, scope: str, now_s: float) -> bool:
        return now_s < self.valid_until_s and (ALL_SCOPES in self.scopes or scope in self.scopes)


@dataclass
class SessionKeys:
    """Which session signers each deposit wallet has authorised: the venue's stand-in for the wallet's own
    ``authorizeSessionSigner(address,uint256)`` / ``revokeSessionSigner(address)`` (polymarket-client
    ``_internal/actions/relayer/calls.py``), which the owner sends through the relayer."""

    _by_wallet: dict[str, dict[str, SessionKey]] = field(default_factory=dict)  # wallet -> signer lower -> key

    def authorize(self, wallet: str, key: SessionKey) -> None:
        """Authorise ``key`` for ``wallet``, replacing an earlier grant to the same signer."""
        self._by_wallet.setdefault(to_checksum_address(wallet), {})[key.address.lower()] = key

    def revoke(self, wallet: str, signer: str) -> bool:
        """Withdraw ``signer``'s grant; whether there was one."""
        return self._by_wallet.get(to_checksum_address(wallet), {}).pop(signer.lower(), None) is not None

    def active(self, wallet: str, now_s: float) -> list[SessionKey]:
        """The wallet's grants that have not expired, oldest first."""
        return [k for k in self._by_wallet.get(to_checksum_address(wallet), {}).values() if now_s < k.valid_until_s]

    def allows(self, wallet: str, signer: str, scope: str, now_s: float) -> bool:
        """Whether ``signer`` may sign for ``wallet`` in ``scope`` now."""
        key = self._by_wallet.get(to_checksum_address(wallet), {}).get(signer.lower())
        return key is not None and key.allows(scope, now_s)

    def wallet_of(self, signer: str, scope: str, now_s: float) -> str | None:
        """A wallet (checksummed) ``signer`` may sign for now, the first granted; None if none."""
        return next((wallet for wallet, keys in self._by_wallet.items()
                     if (key := keys.get(signer.lower())) is not None and key.allows(scope, now_s)), None)
