"""Live trading through every kind of Polymarket account: `polybot up` against the local venue signs for a proxy
wallet, a Safe and a deposit wallet (exchange V2 and, for protocol-v2 positions, V3), the venue verifies each
signature, and positions, PnL and collateral match the venue's to the cent; an account whose key, wallet kind,
funder and API key do not belong together stops the executor at start with a message that says what to fix.

The wallets a key owns come from the venue's own derivation (polybot_venue.wallets), not from the code under test.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from py_clob_client_v2 import ClobClient
from py_clob_client_v2.clob_types import AssetType, BalanceAllowanceParams, TradeParams

from polybot_venue import wallets as venue_wallets
from polybot_venue.engine import taker_fee
from polybot_venue.server import ready_made_account
from services import messages as m
from services.bus import Bus
from services.config import AccountConfig, load
from services.venues.base import OrderRequest
from services.venues.polymarket import wallets
from services.runtime import StartupError
from services.venues.polymarket.funder import wallet_for
from services.venues.polymarket.client import Clob

from .conftest import Mesh, child_env, risk_takes_signals, wait_for
from .venue_harness import Venue, mesh_config, tokens

SEED = 61
KINDS = {"eoa": 0, "proxy": 1, "safe": 2, "deposit": 3}
WALLET_OF = {"eoa": lambda owner: owner, "proxy": venue_wallets.proxy_wallet, "safe": venue_wallets.safe_wallet,
             "deposit": venue_wallets.deposit_wallet_beacon}
COLLATERAL = BalanceAllowanceParams(asset_type=AssetType.COLLATERAL)
FUNDS = 10_000


@pytest.fixture(scope="module")
def venue(tmp_path_factory) -> Iterator[Venue]:
    # A protocol-v2 market for each wallet kind's mesh.
    venue = Venue(Path(os.path.realpath(tmp_path_factory.mktemp("accounts"))) / "venue", SEED, 100, "--still",
                  "--v2-markets", "6")
    yield venue
    venue.stop()


# ------------------------------------------------------------ which wallet of the owner an address is

def test_an_address_is_told_apart_as_the_owners_wallet_of_its_kind_or_none() -> None:
    owner = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"  # the vectors of WALLETS.md §2 (derivations: test_doctor)
    assert wallets.derived_wallets(owner, 137) == {
        "eoa": (owner,), "proxy": ("0x365f0CA36Ae1f641E02fE3B7743673da42A13A70",),
        "safe": ("0xd93B25cb943D14d0d34FBaF01Fc93a0f8b5F6E47",),
        "deposit": ("0xBc0fF067b7740Eff76C1ca93c875Ba6B890d6B50", "0xdf8b9E8f9AB23f261F6e1B171B7454ae6E46Ba76")}
    assert wallets.kind_of(owner, "0x365f0ca36ae1f641e02fe3b7743673da42a13a70") == "proxy"
    assert wallets.kind_of(owner, "0xdf8b9E8f9AB23f261F6e1B171B7454ae6E46Ba76") == "deposit"  # the legacy one
    assert wallets.kind_of(owner, owner.lower()) == "eoa"
    assert wallets.kind_of(owner, Account.create().address) is None


def test_on_amoy_a_proxy_account_cannot_start_and_only_the_legacy_deposit_wallet_is_derived() -> None:
    owner = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    assert wallets.derived_wallets(owner, 80002) == {
        "eoa": (owner,), "safe": (wallets.safe_wallet(owner, 137),),
        "deposit": (venue_wallets.deposit_wallet_uups(owner, 80002),)}
    with pytest.raises(StartupError) as refused:
        wallet_for(AccountConfig(wallet="proxy"), owner, 80002)
    assert str(refused.value) == ("account.wallet: chain 80002 has no proxy wallet to trade through (Polymarket's "
                                  'proxy factory is on Polygon only): set account.wallet to one of "eoa", "safe", '
                                  '"deposit"')
    with pytest.raises(StartupError, match="set account.funder to your deposit wallet's address"):
        wallet_for(AccountConfig(wallet="deposit"), owner, 80002)


# ------------------------------------------------------------ `polybot up` through each wallet kind

class Up(Mesh):
    """`polybot up` with the default services, trading for a fresh owner through its wallet of ``kind``, against
    the module's venue; the wallet funded and approved as its owner would on chain."""

    def __init__(self, state: Path, venue: Venue, kind: str) -> None:
        options = f"gamma_port = {venue.gamma_port}, clob_port = {venue.clob_port}, ws_port = {venue.ws_port}"
        super().__init__(state, f'[account]\nwallet = "{kind}"\n',
                         venue=f"false\noptions = {{ {options}, seed = {venue.seed} }}")
        self.venue, self.kind = venue, kind
        self.key = Account.create().key.hex()
        self.owner = Account.from_key(self.key).address
        self.funder = WALLET_OF[kind](self.owner)
        venue.admin("fund", address=self.funder, collateral=FUNDS)
        venue.admin("approve", address=self.funder, exchange="all", unlimited=True)
        # The venue's own view of the account: the same owner and wallet, through the real client.
        self.client: ClobClient = venue.client(self.key, funded=False, wallet=KINDS[kind])

    def start_live(self) -> None:
        log = open(self.state.parent / "up.log", "w")
        self.up = subprocess.Popen([sys.executable, "-m", "services", "--config", str(self.config), "up"],
                                   env=child_env(POLYBOT_PRIVATE_KEY=self.key), stdout=log, stderr=subprocess.STDOUT)
        wait_for(self.ready, what="every service to run and sync", timeout=60)

    def ready(self) -> bool:
        try:
            rows = self.status()
        except (ValueError, KeyError):
            return False
        wanted = {"analytics", "scanner", "executor", "risk", "strategies"}
        heard = rows.get("analytics", {}).get("sockets", {})
        return wanted <= set(rows) and all(rows[n]["state"] == "running" for n in wanted) \
            and risk_takes_signals(rows["risk"]["detail"]) and rows["strategies"]["detail"].get("synced") == "True" \
            and all(heard.get(sock, {}).get("received", 0) > 0 for sock in ("decisions", "executions"))

    def cli_json(self, *args: str) -> list[dict]:
        result = self.cli(*args, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def executor_collateral(self) -> D | None:
        """The collateral the executor last read from the venue, as its account reply says."""
        self.bus = getattr(self, "bus", None) or Bus(load(self.config, {}))
        with self.bus.requester("executor", 3000) as req:
            reply = req.request(m.AccountRequest())
        return reply.collateral if isinstance(reply, m.AccountReply) else None

    def stop(self) -> None:
        super().stop()
        if getattr(self, "bus", None):
            self.bus.close()


def gap_market(venue: Venue, v2: bool) -> dict:
    """An untouched binary market, protocol v1 (exchange V2) or v2 (exchange V3), whose trades pay fees."""
    pool = venue.v2_markets if v2 else venue.markets
    market = next(mk for mk in pool if mk.get("feesEnabled") and not mk.get("_taken"))
    market["_taken"] = True
    return market


def fee(trade: dict) -> D:
    """The venue's fee for one of its trade records: the taker pays, by Polymarket's formula."""
    return taker_fee(D(trade["size"]), D(trade["price"]), D(trade["fee_rate_bps"]) / 10_000) \
        if trade["trader_side"] == "TAKER" else D(0)


@pytest.fixture
def up(request: pytest.FixtureRequest, venue: Venue, state_dir: Path) -> Iterator[Up]:
    up = Up(state_dir, venue, request.param)
    request.node.meshes = [up]  # a failure's report shows its logs and status
    try:
        up.start_live()
        yield up
    finally:
        up.stop()


@pytest.mark.parametrize("up", list(KINDS), indirect=True)
def test_polybot_up_trades_through_the_wallet_and_matches_the_venue_to_the_cent(venue: Venue, up: Up) -> None:
    kind = up.kind
    detail = up.status()["executor"]["detail"]
    assert (detail["wallet"], detail["funder"]) == (kind, up.funder)

    markets = [gap_market(venue, v2=False), gap_market(venue, v2=True)]
    for market in markets:
        answer = httpx.post(f"{venue.clob}/_admin/gap", json={"market": market["conditionId"], "gap": "0.08",
                                                               "size": "30"})
        assert answer.status_code == 200 and D(answer.json()["sum"]) == D("0.92"), answer.text

    def venue_trades(market: dict) -> list[dict]:
        trades = up.client.get_trades(TradeParams(market=market["conditionId"]))
        return trades if {t["asset_id"] for t in trades} == set(tokens(market)) and \
            all(sum(D(t["size"]) for t in trades if t["asset_id"] == tok) == 30 for tok in tokens(market)) else []
    spent = D(0)
    for market in markets:
        trades = wait_for(lambda: venue_trades(market), what=f"both legs of {market['conditionId']} to fill",
                          timeout=20)
        # Every order the venue matched was made by the wallet and signed for it: the venue checked the signature
        # against the owner's key under the exchange of the market (it refuses any other, test_venue_wallets).
        assert {t["maker_address"] for t in trades} == {up.funder}
        assert {t["owner"] for t in trades} == {up.client.creds.api_key}

        def positions() -> list[dict]:
            rows = [r for r in up.cli_json("positions") if r["market"] == market["conditionId"]]
            return rows if len(rows) == 2 and all(D(r["size"]) == 30 for r in rows) else []
        held = {r["token_id"]: r for r in wait_for(positions, what="DuckDB to hold both legs")}
        for token in tokens(market):
            legs = [t for t in trades if t["asset_id"] == token]
            cost, fees = sum(D(t["size"]) * D(t["price"]) for t in legs), sum(fee(t) for t in legs)
            row = held[token]
            assert (D(row["size"]), D(row["cost"]), D(row["fees"]), D(row["realized"])) == (D(30), cost, fees, -fees)
        pnl, = [r for r in up.cli_json("pnl", "--by", "market") if r["market"] == market["conditionId"]]
        assert D(pnl["fees"]) == sum(fee(t) for t in trades) > 0
        assert D(pnl["open_cost"]) == sum(D(t["size"]) * D(t["price"]) for t in trades)
        orders = wait_for(lambda: (rows := up.cli_json("orders", "--market", market["conditionId"]))
                          and all(r["status"] == "filled" for r in rows) and rows, what="both orders filled")
        # Reconciled: each order is the one the venue matched, by the id the executor computed before sending it.
        assert len(orders) == 2 and {r["venue_order_id"] for r in orders} == {t["taker_order_id"] for t in trades}
        spent += sum(D(t["size"]) * D(t["price"]) + fee(t) for t in trades)

    # The funder paid for it all, and the executor reads the funder's balance.
    balance = D(up.client.get_balance_allowance(COLLATERAL)["balance"]) / 10**6
    assert balance == FUNDS - spent
    wait_for(lambda: up.executor_collateral() == balance, what="the executor to read the funder's balance")


# ------------------------------------------------------------ the deposit wallet an owner already has

def test_an_owner_whose_legacy_deposit_wallet_is_deployed_trades_through_it_as_polymarket_client_would(
        venue: Venue) -> None:
    key = Account.create().key.hex()
    owner = Account.from_key(key).address
    legacy = venue_wallets.deposit_wallet_uups(owner)
    venue.admin("fund", address=legacy, collateral=100)  # on the venue, a wallet that holds anything is deployed
    venue.admin("approve", address=legacy, exchange="all", unlimited=True)
    clob = Clob(venue.clob, 137, key, account=AccountConfig(wallet="deposit"), relayer_url=venue.clob)
    assert clob.funder == venue_wallets.deposit_wallet_beacon(owner)  # what a new owner gets, until the venue is asked
    clob.connect()
    assert (clob.funder, clob.unchecked) == (legacy, "")
    assert clob.wallet.describe() == (f"deposit wallet {legacy} of {owner} (derived from the key; its legacy deposit "
                                      "wallet, which the relayer has deployed)")
    assert clob.balance().collateral == 100
    market = gap_market(venue, v2=False)
    yes, _ = tokens(market)
    order = OrderRequest(client_id="legacy-1", token_id=yes, market=market["conditionId"], side="BUY",
                         price=D("0.02"), size=D("10"), order_type="GTC", rules=clob.rules(yes, market["conditionId"]),
                         created_ms=1_800_000_000_000)
    prepared, = clob.prepare([order])
    placed, = clob.place([order])
    assert (placed.status, placed.venue_order_id) == ("live", prepared.venue_order_id)
    mine = venue.client(key, funded=False, wallet=3, funder=legacy).get_open_orders()
    assert [(o["id"], o["maker_address"]) for o in mine] == [(placed.venue_order_id, legacy)]


def test_a_configured_legacy_deposit_wallet_is_taken_and_the_log_says_it_is_not_the_derived_one() -> None:
    owner = "0x14f30BA5B7e09789FE63a90ad8C0AC8e6eD90cD7"
    legacy = "0xc3b18537e951175b063ea8ca755896a6705a88c6"  # its wallet as the config may spell it, in lower case
    wallet = wallet_for(AccountConfig(wallet="deposit", funder=legacy), owner, 137)
    assert (wallet.funder, wallet.signature_type) == ("0xc3b18537e951175B063EA8CA755896a6705a88C6", 3)
    assert wallet.describe() == ("deposit wallet 0xc3b18537e951175B063EA8CA755896a6705a88C6 of " + owner
                                 + " (as configured in account.funder; the key's legacy deposit wallet)")


# ------------------------------------------------------------ set-ups that cannot trade: the executor says what to fix

def refused_start(venue: Venue, root: Path, key: str, account: str, **env: str) -> tuple[int, list[str]]:
    """Start the executor alone, live, for ``key`` and this ``[account]`` table; its exit code and what it logged
    as the reason it cannot start."""
    root.mkdir(parents=True, exist_ok=True)
    config = mesh_config(root, venue, '[services.executor]\nkind = "services.executor:Executor"\n'
                                      'options = { scanner = "" }\n' + f"[account]\n{account}\n")
    proc = subprocess.run([sys.executable, "-m", "services", "--config", str(config), "run", "executor"],
                          env=child_env(POLYBOT_MODE="live", POLYBOT_PRIVATE_KEY=key, **env), capture_output=True,
                          text=True, timeout=60)
    assert key[2:] not in proc.stderr + (root / "mesh" / "logs" / "executor.log").read_text()
    lines = [json.loads(line) for line in (root / "mesh" / "logs" / "executor.log").read_text().splitlines()]
    return proc.returncode, [line["msg"].removeprefix("cannot start: ") for line in lines
                             if line["msg"].startswith("cannot start: ")]


# Each set-up: (owner, venue) -> ([account] table, environment, exit code, the message). A wrong config stops the
# executor as it is built (exit 2); what only the venue can tell stops it once it has asked (exit 1).

def _a_funder_that_is_not_the_keys_wallet(owner: str, venue: Venue) -> tuple[str, dict, int, str]:
    stranger, mine = venue_wallets.proxy_wallet(Account.create().address), venue_wallets.proxy_wallet(owner)
    return (f'wallet = "proxy"\nfunder = "{stranger}"', {}, 2,
            f"account.funder: {stranger} is not the proxy wallet of {owner}, the address of POLYBOT_PRIVATE_KEY (that "
            f'is {mine}): set account.funder = "{mine}" (or leave it empty to derive it), or set POLYBOT_PRIVATE_KEY '
            "to the key of the wallet's owner")


def _the_keys_safe_as_its_proxy_wallet(owner: str, venue: Venue) -> tuple[str, dict, int, str]:
    safe, proxy = venue_wallets.safe_wallet(owner), venue_wallets.proxy_wallet(owner)
    return (f'wallet = "proxy"\nfunder = "{safe.lower()}"', {}, 2,
            f'account.wallet: "proxy", but account.funder {safe} is the Safe of POLYBOT_PRIVATE_KEY\'s address '
            f'{owner}: set account.wallet = "safe", or set account.funder = "{proxy}" (or leave it empty to derive '
            "it) to trade through its proxy wallet")


def _the_keys_own_address_as_its_deposit_wallet(owner: str, venue: Venue) -> tuple[str, dict, int, str]:
    deposit = venue_wallets.deposit_wallet_beacon(owner)
    return (f'wallet = "deposit"\nfunder = "{owner}"', {}, 2,
            f"account.funder: {owner} is the address of POLYBOT_PRIVATE_KEY itself, not a deposit wallet: set "
            f'account.wallet = "eoa" and remove account.funder, or set account.funder = "{deposit}" (or leave it '
            "empty to derive it)")


def _an_api_key_of_another_address(owner: str, venue: Venue) -> tuple[str, dict, int, str]:
    other = ready_made_account(venue.seed).credentials  # a key the venue issued, to another address
    return ('wallet = "safe"', dict(POLYBOT_API_KEY=other.api_key, POLYBOT_API_SECRET=other.secret,
                                    POLYBOT_API_PASSPHRASE=other.passphrase), 1,
            f"POLYBOT_API_KEY: the venue refuses this API key for {owner}, the address of POLYBOT_PRIVATE_KEY (an API "
            "key works only with the key that created it): set POLYBOT_API_KEY, POLYBOT_API_SECRET and "
            "POLYBOT_API_PASSPHRASE to credentials created with this key, or unset all three to derive them from it")


def _a_deposit_wallet_the_relayer_has_not_deployed(owner: str, venue: Venue) -> tuple[str, dict, int, str]:
    return ('wallet = "deposit"', {}, 1,
            f"account.funder: the deposit wallet {venue_wallets.deposit_wallet_beacon(owner)} that the key derives is "
            "not deployed (the relayer says so): create it (polymarket.com, or polymarket-client's "
            "SecureClient.create), fund it and approve the exchanges, then start again; or set account.funder to the "
            "deposit wallet you have")


SET_UPS = [_a_funder_that_is_not_the_keys_wallet, _the_keys_safe_as_its_proxy_wallet,
           _the_keys_own_address_as_its_deposit_wallet, _an_api_key_of_another_address,
           _a_deposit_wallet_the_relayer_has_not_deployed]


@pytest.mark.parametrize("set_up", SET_UPS, ids=[f.__name__.strip("_") for f in SET_UPS])
def test_a_set_up_that_cannot_trade_stops_the_executor_before_any_order_saying_what_to_fix(
        venue: Venue, state_dir: Path, set_up) -> None:
    key = Account.create().key.hex()
    account, env, code, message = set_up(Account.from_key(key).address, venue)
    assert refused_start(venue, state_dir.parent, key, account, **env) == (code, [message])
