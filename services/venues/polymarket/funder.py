"""The account live orders are signed for, from ``[account]`` and the key, and why it cannot be when they disagree.

The key is always the owner's EOA: it signs the orders and holds the API key. The funder is what makes the orders
and holds the money: the EOA itself, or the owner's proxy wallet, Safe or deposit wallet. A wallet kind and a funder
that are not the key's own can never trade (the exchange checks that the maker is the signer's wallet of the
signature type): ``match_wallet`` says why, naming the config key and the fix, and that stops the executor at start
and fails ``polybot doctor``.
"""
from __future__ import annotations

from dataclasses import dataclass

from eth_account import Account
from eth_utils import to_checksum_address

from ...config import AccountConfig
from ...runtime import StartupError
from . import wallets
from .wallets import WALLET_NAMES


@dataclass(frozen=True)
class Wallet:
    kind: str  # "eoa", "proxy", "safe" or "deposit"
    owner: str  # the key's address: the order signer (types 0-2) and the API key's address
    funder: str  # the order maker, whose balance and allowances trade
    configured: bool = False  # the funder is account.funder, not derived from the key
    note: str = ""  # what the log should say beside it

    @property
    def signature_type(self) -> int:
        return wallets.KINDS.index(self.kind)

    def describe(self) -> str:
        if self.kind == "eoa":
            return f"the key's own address {self.owner}"
        source = "as configured in account.funder" if self.configured else "derived from the key"
        note = f"; {self.note}" if self.note else ""
        return f"{WALLET_NAMES[self.kind]} {self.funder} of {self.owner} ({source}{note})"


def owner_of(private_key: str) -> str:
    """The key's address; StartupError (never showing the key) if it is not a key."""
    try:
        return Account.from_key(private_key).address
    except Exception:  # eth_account raises several types, some quoting the input: say nothing of it
        raise StartupError("POLYBOT_PRIVATE_KEY: not a private key (32 bytes as 64 hex digits, 0x optional)") \
            from None


@dataclass(frozen=True)
class Mismatch:
    """Why ``[account]`` and the key cannot trade together: what is wrong (naming the config key first) and what
    to set instead."""
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.message}: {self.fix}"


def match_wallet(account: AccountConfig, owner: str, chain_id: int) -> Wallet | Mismatch:
    """The wallet ``[account]`` names for this owner, its funder derived when not given; or why the wallet kind, the
    funder and the key do not belong together."""
    kind = account.wallet
    if kind == "eoa":  # the config refuses a funder here
        return Wallet("eoa", owner, owner)
    name = WALLET_NAMES[kind]
    derived = wallets.derived_wallets(owner, chain_id)
    mine = derived.get(kind, ())
    if not mine:
        where = " (Polymarket's proxy factory is on Polygon only)" if kind == "proxy" else ""
        others = ", ".join(f'"{k}"' for k in derived)
        return Mismatch(f"account.wallet: chain {chain_id} has no {name} to trade through{where}",
                        f"set account.wallet to one of {others}")
    # Where the deposit-wallet beacon is only read on chain, only the legacy deposit wallet is derived here.
    beaconless = kind == "deposit" and chain_id not in wallets.DEPOSIT_BEACON
    if not account.funder:
        if beaconless:
            return Mismatch(f"account.funder: chain {chain_id}'s deposit wallets are derived from a beacon read on "
                            "chain, which this adapter does not read",
                            "set account.funder to your deposit wallet's address")
        return Wallet(kind, owner, mine[0])
    funder = to_checksum_address(account.funder)
    found = wallets.kind_of(owner, funder, chain_id)
    if found == kind:
        legacy = kind == "deposit" and funder != mine[0]
        return Wallet(kind, owner, funder, configured=True, note="the key's legacy deposit wallet" if legacy else "")
    if found is None and beaconless:
        return Wallet(kind, owner, funder, configured=True,
                      note=f"not checked: chain {chain_id}'s current deposit wallets cannot be derived here")
    expected = f'account.funder = "{mine[0]}" (or leave it empty to derive it)'
    if found == "eoa":
        return Mismatch(f"account.funder: {funder} is the address of POLYBOT_PRIVATE_KEY itself, not a {name}",
                        f'set account.wallet = "eoa" and remove account.funder, or set {expected}')
    if found:
        return Mismatch(f'account.wallet: "{kind}", but account.funder {funder} is the {WALLET_NAMES[found]} of '
                        f"POLYBOT_PRIVATE_KEY's address {owner}",
                        f'set account.wallet = "{found}", or set {expected} to trade through its {name}')
    return Mismatch(f"account.funder: {funder} is not the {name} of {owner}, the address of POLYBOT_PRIVATE_KEY "
                    f"(that is {mine[0]})",
                    f"set {expected}, or set POLYBOT_PRIVATE_KEY to the key of the wallet's owner")


def wallet_for(account: AccountConfig, owner: str, chain_id: int) -> Wallet:
    """``match_wallet``'s wallet; StartupError, saying what to fix, when there is none."""
    match = match_wallet(account, owner, chain_id)
    if isinstance(match, Mismatch):
        raise StartupError(str(match))
    return match


def foreign_api_key(owner: str) -> StartupError:
    """The venue does not take the configured API key from this owner."""
    return StartupError(f"POLYBOT_API_KEY: the venue refuses this API key for {owner}, the address of "
                        "POLYBOT_PRIVATE_KEY (an API key works only with the key that created it): set "
                        "POLYBOT_API_KEY, POLYBOT_API_SECRET and POLYBOT_API_PASSPHRASE to credentials created with "
                        "this key, or unset all three to derive them from it")


def undeployed(wallet: Wallet) -> StartupError:
    """The relayer says the deposit wallet does not exist yet."""
    how = "account.funder names" if wallet.configured else "the key derives"
    return StartupError(f"account.funder: the deposit wallet {wallet.funder} that {how} is not deployed (the "
                        "relayer says so): create it (polymarket.com, or polymarket-client's SecureClient.create), "
                        "fund it and approve the exchanges, then start again; or set account.funder to the deposit "
                        "wallet you have")
