"""The local venue through Polymarket's official TypeScript client, @polymarket/clob-client-v2 from npm, unchanged.

tests/ts_client/flow.mjs drives the client, one scenario a test: trading from an EOA (keys, markets, books,
orders, cancels, trades, heartbeats, both WebSocket channels), every wallet type (proxy, Safe, deposit wallet, with
the addresses Polymarket's relayer client derives), a protocol-v2 market (exchange V3, and the version-mismatch
answer), a new account's balance and allowance refusals, and a restart and a rate limit. Its package.json and
package-lock.json pin every package. They are installed once per lock into ~/.cache/polybot-tests/ts-client/<hash>
(``$XDG_CACHE_HOME`` if set) and reused. The tests skip when Node (20.10 or later) or npm is missing or the npm
registry cannot be reached, and fail on anything else."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
from eth_account import Account

from polybot_venue import auth, wallets
from polybot_venue.app import ORDER_VERSION_MISMATCH
from polybot_venue.engine import MAX_UINT, NOT_ENOUGH, fee_per_share, taker_fee, units
from polybot_venue.markets import is_v2_position_id
from polybot_venue.operations import POST_ONLY, POST_ONLY_CODE, RATE_LIMITED, RESTARTING
from polybot_venue.server import ready_made_account

from .cached_install import installed, step
from .conftest import child_env
from .venue_harness import Venue, tokens

SEED = 13
NOT_THE_KEYS_SIGNER = "the order signer address has to be the address of the API KEY"
FLOW = Path(__file__).resolve().parent / "ts_client"
INSTALL_TIMEOUT_S = 300
FLOW_TIMEOUT_S = 120
# What npm prints when the registry is out of reach (as opposed to a bad lock or a broken package).
NETWORK_FAILURE = re.compile(r"ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH|"
                             r"network request to .* failed|This is a problem related to network connectivity")


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the TypeScript client needs Node 20.10 or later")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    major, minor = (int(part) for part in version.lstrip("v").split(".")[:2])
    if (major, minor) < (20, 10):
        pytest.skip(f"node {version} is too old: the TypeScript client needs 20.10 or later")
    return node


def _installed() -> Path:
    """The flow's packages installed from its lock, in a cache folder keyed by the lock: installed once, reused."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: it installs the TypeScript client")
    manifests = [FLOW / "package.json", FLOW / "package-lock.json"]

    def build(folder: Path) -> None:
        for manifest in manifests:
            shutil.copy(manifest, folder)
        step([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--fetch-timeout=60000", "--fetch-retries=1",
              "--prefix", str(folder)], INSTALL_TIMEOUT_S, cwd=folder,
             env={**os.environ, "npm_config_update_notifier": "false"})
    return installed("ts-client", manifests, build, "the TypeScript client", NETWORK_FAILURE, INSTALL_TIMEOUT_S)


@pytest.fixture(scope="module")
def node_and_packages() -> tuple[str, Path]:
    """Node and the installed packages, or a skip before any venue starts."""
    return _node(), _installed()


def _flow(node_and_packages: tuple[str, Path], venue: Venue, scenario: str, markets: list[dict], **keys: str) -> dict:
    """Run one scenario of flow.mjs on ``markets`` with the installed packages (ESM resolves them beside the
    script, so it runs from there); ``keys`` (maker_key, taker_key) go in the environment."""
    node, install = node_and_packages
    shutil.copy(FLOW / "flow.mjs", install / "flow.mjs")
    env = child_env(FLOW_GAMMA=venue.gamma, FLOW_CLOB=venue.clob, FLOW_MARKET_WS=venue.market_ws,
                    FLOW_USER_WS=venue.user_ws, FLOW_MARKETS=",".join(m["conditionId"] for m in markets),
                    **{f"FLOW_{name.upper()}": value for name, value in keys.items()})
    done = subprocess.run([node, "--experimental-websocket", "--no-warnings", str(install / "flow.mjs"), scenario],
                          capture_output=True, text=True, timeout=FLOW_TIMEOUT_S, cwd=install, env=env)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, (
        f"flow.mjs {scenario} exited {done.returncode}\nstdout: {done.stdout[-4000:]}\nstderr: {done.stderr[-4000:]}")
    return json.loads(lines[-1])


def _fee_market(venue: Venue) -> dict:
    """A market no other test has touched, with a taker fee."""
    while (market := venue.market())["feeSchedule"]["rate"] <= 0:
        pass
    return market


@pytest.fixture(scope="module")
def venue(tmp_path_factory):
    venue = Venue(Path(os.path.realpath(tmp_path_factory.mktemp("venue"))) / "s", SEED)
    yield venue
    venue.stop()


def test_the_official_typescript_client_trades_cancels_and_listens_on_the_local_venue(
        node_and_packages: tuple[str, Path], venue: Venue) -> None:
    maker_account = ready_made_account(SEED)  # funded by the venue itself
    taker = Account.create()  # a new account starts empty: fund it and approve the exchanges, as its owner would
    venue.admin("fund", address=taker.address, collateral=10_000)
    venue.admin("approve", address=taker.address, exchange="all", unlimited=True)

    r = _flow(node_and_packages, venue, "trading", [_fee_market(venue)], maker_key=maker_account.private_key,
              taker_key="0x" + taker.key.hex().removeprefix("0x"))

    # API keys: the ready-made account's key is derived (it exists), the new account's created.
    assert r["keys"]["maker"] == maker_account.credentials.api_key and r["keys"]["derived_same"]
    assert r["keys"]["listed"] == [maker_account.credentials.api_key] and r["keys"]["taker"]
    assert r["server"]["ok"] == "OK" and r["server"]["version"] == 2

    # Markets: Gamma and the CLOB agree on the market the flow picked.
    market = r["market"]
    rate, exponent = Decimal(str(market["fee_rate"])), Decimal(str(market["fee_exponent"]))
    assert rate > 0 and r["clob"]["next_cursor"] == "LTE=" and r["clob"]["page_count"] == market["gamma_count"]
    assert r["clob"]["market_tokens"] == r["clob"]["info_tokens"] == [market["yes"], market["no"]]
    assert r["clob"]["simplified_count"] == r["clob"]["page_count"] and r["clob"]["simplified_next"] == "LTE="
    assert Decimal(str(r["clob"]["fee_details"]["r"])) == rate

    book = r["book"]
    assert book["hash_matches"] and book["books"] == 2 and book["bid"] < book["ask"]
    assert (book["tick_size"], book["neg_risk"], book["fee_exponent"]) == ("0.01", False, 1)
    assert Decimal(book["midpoint"]["mid_price"]) == (Decimal(str(book["bid"])) + Decimal(str(book["ask"]))) / 2

    # A resting GTC bid inside the spread.
    resting = r["resting"]
    price = Decimal(str(resting["price"]))
    assert (resting["status"], resting["success"], resting["fetched_status"]) == ("live", True, "LIVE")
    assert resting["open"] == [resting["id"]] and resting["original_size"] == "10"

    # The second account buys NO at 1 - price: it crosses the bid and pays the taker fee at the market's rate.
    crossing = r["crossing"]
    fee = taker_fee(Decimal(10), 1 - price, rate, exponent)
    assert fee > 0 and crossing["status"] == "matched" and len(crossing["trade_ids"]) == 1 and crossing["hashes"]
    assert Decimal(crossing["taking"]) == 10 and Decimal(crossing["making"]) == 10 * (1 - price) + fee
    spent = Decimal(crossing["balance_before"]) - Decimal(crossing["balance_after"])
    assert spent == (10 * (1 - price) + fee) * 10**6 and crossing["maker_open_after"] == 0

    trade_id = crossing["trade_ids"][0]
    (maker_trade,), (taker_trade,) = r["trades"]["maker"], r["trades"]["taker"]
    assert maker_trade["id"] == taker_trade["id"] == trade_id and r["trades"]["paginated"] == 1
    assert (maker_trade["trader_side"], maker_trade["asset_id"], Decimal(maker_trade["price"])) == (
        "MAKER", market["yes"], price)
    assert (taker_trade["trader_side"], taker_trade["asset_id"], Decimal(taker_trade["price"])) == (
        "TAKER", market["no"], 1 - price)
    assert Decimal(taker_trade["size"]) == 10 and taker_trade["fee_rate_bps"] == str(int(rate * 10_000))
    assert taker_trade["transaction_hash"] == crossing["hashes"][0]

    cancel = r["cancel"]
    assert cancel["response"] == {"canceled": [cancel["id"]], "not_canceled": {}}
    assert cancel["fetched_status"] == "CANCELED"

    batch = r["batch"]
    ids = batch["ids"]
    assert batch["statuses"] == ["live"] * 3 and sorted(batch["open"]) == sorted(ids)
    assert batch["cancel_orders"] == {"canceled": ids[:2], "not_canceled": {}}
    assert batch["cancel_all"] == {"canceled": ids[2:], "not_canceled": {}} and batch["open_after"] == 0

    assert r["heartbeat"]["first"] and r["heartbeat"]["second"]

    ws = r["ws"]
    assert ws["market"]["counts"].get("book", 0) >= 1 and ws["market"]["counts"].get("last_trade_price", 0) >= 1
    for side, trade in (("MAKER", ws["maker_trade"]), ("TAKER", ws["taker_trade"])):
        assert (trade["id"], trade["trader_side"], trade["taker_order_id"]) == (trade_id, side, crossing["id"])
        assert Decimal(trade["size"]) == 10
    assert ws["maker"]["counts"].get("order", 0) >= 1 and ws["taker"]["counts"].get("order", 0) >= 1


# ------------------------------------------------------------ wallet types

WALLET_OF = {1: wallets.proxy_wallet, 2: wallets.safe_wallet, 3: wallets.deposit_wallet_beacon}
EXCHANGE_V2, NEG_RISK_EXCHANGE_V2, EXCHANGE_V3 = (auth.EXCHANGE_V2[137], auth.NEG_RISK_EXCHANGE_V2[137],
                                                  auth.EXCHANGE_V3[137])


def _thrown(call: dict) -> tuple[str | None, int | None, str | None]:
    """What a client call threw: (error class, status, message); Nones if it returned."""
    return call.get("threw"), call.get("status"), call.get("message")


def _placed(call: dict) -> str | None:
    """The status the venue gave the order a client call posted; None if the call threw."""
    return (call.get("returned") or {}).get("status")


def _requests(call: dict, *paths: str) -> list[tuple[str, str, int]]:
    """The requests one client call made to ``paths``, as (method, path, status), in order."""
    return [(q["method"], q["path"], q["status"]) for q in call["requests"] if q["path"] in paths]


def test_the_typescript_client_trades_through_a_proxy_a_safe_and_a_deposit_wallet_the_venue_verifies(
        node_and_packages: tuple[str, Path], venue: Venue) -> None:
    r = _flow(node_and_packages, venue, "wallets", [_fee_market(venue) for _ in range(3)])

    # The relayer client derives polymarket-client's addresses (WALLETS.md section 2's vectors), and the same wallet
    # as the venue for each new owner: its proxy (1), its Safe (2), its deposit wallet (3, beacon).
    assert r["vector"] == {"owner": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
                           "proxy": "0x365f0CA36Ae1f641E02fE3B7743673da42A13A70",
                           "safe": "0xd93B25cb943D14d0d34FBaF01Fc93a0f8b5F6E47",
                           "beacon": "0xBc0fF067b7740Eff76C1ca93c875Ba6B890d6B50",
                           "uups": "0xdf8b9E8f9AB23f261F6e1B171B7454ae6E46Ba76"}
    owners = {int(kind): w for kind, w in r["wallets"].items()}
    assert sorted(owners) == [1, 2, 3]
    for kind, w in owners.items():
        assert w["funder"] == WALLET_OF[kind](w["owner"]) != w["owner"]
        # getBalanceAllowance sends the client's signature type: the wallet's funds; the owner's EOA has none.
        assert w["collateral"] == {"balance": "1000000000",
                                   "allowances": {x: str(MAX_UINT) for x in (EXCHANGE_V2, NEG_RISK_EXCHANGE_V2,
                                                                            EXCHANGE_V3)}}
        assert w["owner_collateral"] == "0"

    assert [(x["maker_kind"], x["taker_kind"]) for x in r["rounds"]] == [(1, 2), (2, 3), (3, 1)]
    for x in r["rounds"]:
        maker, taker = owners[x["maker_kind"]]["funder"], owners[x["taker_kind"]]["funder"]
        price = Decimal(str(x["price"]))
        cost = 10 * (1 - price) + taker_fee(Decimal(10), 1 - price, Decimal(str(x["fee_rate"])),
                                            Decimal(str(x["fee_exponent"])))
        resting, crossing, before, after = x["resting"], x["crossing"], x["before"], x["after"]
        assert resting["status"] == "live" and x["open"] == [{"id": resting["id"], "maker_address": maker}]
        assert crossing["status"] == "matched" and len(crossing["trade_ids"]) == 1
        assert (Decimal(crossing["making"]), Decimal(crossing["taking"])) == (cost, 10)
        assert x["maker_trade"] == {"id": crossing["trade_ids"][0], "trader_side": "MAKER", "maker_address": maker}
        # Each wallet paid its side and holds its shares (6-decimal units).
        assert Decimal(before["maker"]) - Decimal(after["maker"]) == 10 * price * 10**6
        assert Decimal(before["taker"]) - Decimal(after["taker"]) == cost * 10**6
        assert (before["maker_yes"], after["maker_yes"]) == (before["taker_no"], after["taker_no"]) == ("0", "10000000")
        assert maker != taker

    # Well-formed and signed, but the maker is not the signature type's wallet of the key's owner.
    wrong = r["wrong_wallet"]
    assert _thrown(wrong)[:2] == ("ApiError", 400), wrong
    assert wrong["message"] == "invalid signature"
    # Not told its wallet, a deposit-wallet client signs as its owner: the real venue's answer to that.
    unfunded = r["no_funder"]
    assert unfunded["maker"] == unfunded["signer"] == unfunded["owner"] and unfunded["signature_type"] == 3
    assert _thrown(unfunded["posted"]) == ("ApiError", 400, NOT_THE_KEYS_SIGNER)


# ------------------------------------------------------------ protocol-v2 markets

def test_a_protocol_v2_market_fills_when_the_typescript_client_is_told_to_sign_for_exchange_v3(
        node_and_packages: tuple[str, Path], venue: Venue) -> None:
    r = _flow(node_and_packages, venue, "v2", [venue.v2_markets[0], venue.market()])
    market = r["market"]
    assert market["version"] == "v2" and is_v2_position_id(market["yes"]) and is_v2_position_id(market["no"])
    assert r["book"]["neg_risk"] is False and r["book"]["bid"] < r["book"]["ask"]

    # Unasked, the client signs for V2 (the venue's /version is 2) and the venue answers 400 order_version_mismatch.
    # The client then asks /version again, hears 2 again, so it does not retry: one POST. Thrown with throwOnError,
    # returned as the body (plus status) without; the same for a V1 market's order signed for V3.
    mismatch = r["mismatch"]
    for call in (mismatch["throwing"], mismatch["v1_market_as_v3"]):
        assert _thrown(call) == ("ApiError", 400, ORDER_VERSION_MISMATCH)
    assert mismatch["returning"]["returned"] == {"error": ORDER_VERSION_MISMATCH, "status": 400}
    refetched = [("GET", "/version", 200), ("POST", "/order", 400), ("GET", "/version", 200)]
    assert _requests(mismatch["throwing"], "/version", "/order") == refetched
    assert _requests(mismatch["returning"], "/version", "/order") == refetched
    assert _requests(mismatch["v1_market_as_v3"], "/version", "/order") == refetched[1:]  # its version was cached
    assert mismatch["open_after"] == 0

    # Told (options.version 3), it rests; a deposit wallet's exact-amounts V3 order fills it.
    resting = r["resting"]
    assert (_placed(resting), resting["fetched"]) == ("live", "LIVE")
    assert _requests(resting, "/version", "/order") == [("POST", "/order", 200)]
    crossing = r["crossing"]
    price = Decimal(str(r["book"]["bid"])) + Decimal(r["book"]["tick_size"])
    cost = 10 * (1 - price) + taker_fee(Decimal(10), 1 - price, Decimal(str(market["fee_rate"])),
                                        Decimal(str(market["fee_exponent"])))
    wallet = wallets.deposit_wallet_beacon(crossing["taker_owner"])
    assert crossing["order"] == {"maker": wallet, "signer": wallet, "signature_type": 3, "signature_bytes": 317,
                                 "maker_amount": str(int(10 * (1 - price) * 10**6))}
    assert crossing["status"] == "matched" and len(crossing["trade_ids"]) == 1
    assert (Decimal(crossing["making"]), Decimal(crossing["taking"])) == (cost, 10)
    assert crossing["maker_trade"] == {"id": crossing["trade_ids"][0], "asset_id": market["yes"],
                                       "trader_side": "MAKER"}
    assert crossing["maker_open_after"] == 0
    assert crossing["maker_yes"]["balance"] == "10000000" and EXCHANGE_V3 in crossing["maker_yes"]["allowances"]
    assert crossing["taker_no"] == "10000000" and Decimal(crossing["taker_collateral"]) == (1000 - cost) * 10**6


# ------------------------------------------------------------ balances and allowances

def test_a_new_account_is_refused_until_its_wallet_is_funded_and_approved_and_then_trades(
        node_and_packages: tuple[str, Path], venue: Venue) -> None:
    market = venue.market()
    r = _flow(node_and_packages, venue, "funding", [market])
    none = {x: "0" for x in (EXCHANGE_V2, NEG_RISK_EXCHANGE_V2, EXCHANGE_V3)}
    price = Decimal(str(r["buy_price"]))
    need = units(10 * (price + fee_per_share(price, Decimal(str(market["feeSchedule"]["rate"])),
                                             Decimal(str(market["feeSchedule"]["exponent"])))))
    assert r["exchange"] == EXCHANGE_V2

    # Nothing at all: the balance is what is short.
    assert r["empty"] == {"balance": "0", "allowances": none}
    assert _thrown(r["unfunded"]) == (
        "ApiError", 400, f"{NOT_ENOUGH}: the balance is not enough -> balance: 0, sum of active orders: 0, "
                         f"order amount: {need}")
    # Funded, nothing approved: the allowance of the market's exchange is.
    assert r["funded"] == {"balance": "100000000", "allowances": none}
    assert _thrown(r["unapproved"]) == (
        "ApiError", 400, f"{NOT_ENOUGH}: the allowance is not enough -> spender: {EXCHANGE_V2}, allowance: 0, "
                         f"sum of active orders: 0, order amount (inc. fees): {need}")
    # 50 pUSD approved to exchange V2: the venue reports it, on update and on a plain read; the BUY then rests.
    approved = {"balance": "100000000", "allowances": {**none, EXCHANGE_V2: "50000000"}}
    assert r["updated"] == r["approved"] == approved
    assert _placed(r["buy"]) == "live"

    # Tokens arrive, not approved: a SELL is refused for the exchange's approval; approved, it rests.
    assert r["shares"] == {"balance": "20000000", "allowances": none}
    assert _thrown(r["unapproved_sell"]) == (
        "ApiError", 400, f"{NOT_ENOUGH}: the allowance is not enough -> spender: {EXCHANGE_V2}, allowance: 0, "
                         "order amount: 10000000")
    assert r["updated_shares"] == r["approved_shares"] == {"balance": "20000000",
                                                           "allowances": {**none, EXCHANGE_V2: str(MAX_UINT)}}
    assert _placed(r["sell"]) == "live"
    assert r["open"] == [{"id": r["buy"]["returned"]["orderID"], "side": "BUY"},
                         {"id": r["sell"]["returned"]["orderID"], "side": "SELL"}]


# ------------------------------------------------------------ restarts and rate limits

def test_a_restart_and_a_rate_limit_reach_the_typescript_client_as_its_http_helper_hands_them_on(
        node_and_packages: tuple[str, Path], venue: Venue) -> None:
    market = venue.market()
    yes, _ = tokens(market)
    try:
        r = _flow(node_and_packages, venue, "operations", [market])
    finally:  # whatever happened, the venue takes orders again for the tests after this one
        venue.admin("restart", seconds=0, post_only_seconds=0)
        venue.admin("rate-limits")
    resting = r["resting"]

    def refused(call: dict, status: int, body: dict) -> None:
        """Thrown as ApiError (throwOnError) with the body and status as its data."""
        assert (*_thrown(call), call.get("data")) == ("ApiError", status, body["error"], {**body, "status": status})

    def retry_after(call: dict) -> int:
        (seconds,) = {q["retry_after"] for q in call["requests"] if q["status"] >= 400}
        return int(seconds)

    # Down: orders (even post-only) and cancels get 425 with Retry-After; the client does not retry a 4xx, so one
    # request; it throws with throwOnError and otherwise returns {error, status}. Reads still answer.
    down, gone = r["down"], {"error": RESTARTING}
    assert r["down_admin"]["phase"] == "down"
    refused(down["order"], 425, gone)
    refused(down["cancel"], 425, gone)
    assert down["order_returned"]["returned"] == down["cancel_returned"]["returned"] == {**gone, "status": 425}
    for call, path in ((down["order"], "/order"), (down["order_returned"], "/order"), (down["cancel"], "/order")):
        assert [(q["path"], q["status"]) for q in call["requests"] if q["status"] >= 400] == [(path, 425)]
        assert 1 <= retry_after(call) <= 600
    assert down["book"] == yes and down["open"] == [resting]

    # Post-only window: a plain order gets 503 {code: post_only_mode}; retryOnError sends it once more (a 5xx is
    # transient to the client's http helper), the default client once. Post-only orders and cancels pass.
    post_only, closed = r["post_only"], {"error": POST_ONLY, "code": POST_ONLY_CODE}
    assert r["post_only_admin"]["phase"] == "post_only"
    thrown = post_only["order"]["data"]
    assert 0 < thrown.pop("retry_after_seconds") <= 600  # the window's time left, in the body as well
    refused(post_only["order"], 503, closed)
    returned = post_only["order_returned"]["returned"]
    assert 0 < returned.pop("retry_after_seconds") <= 600 and returned == {**closed, "status": 503}
    assert _requests(post_only["order"], "/order") == [("POST", "/order", 503)] * 2
    assert _requests(post_only["order_returned"], "/order") == [("POST", "/order", 503)]
    assert _placed(post_only["post_only"]) == "live"
    assert post_only["cancel"]["returned"] == {"canceled": [resting], "not_canceled": {}}
    assert r["normal_admin"]["phase"] == "normal" and _placed(r["normal"]) == "live"

    # Three orders a signer, then 429 with Retry-After for one more, alone or in a batch (one token an order); the
    # cancels' bucket is another, so cancel-all passes; with the limits back the refused order is taken.
    limited = r["limited"]
    assert r["limits"]["orders"] == {"rate": 0.001, "burst": 3}
    allowed = [call["returned"]["orderID"] for call in limited["allowed"]]
    assert [_placed(call) for call in limited["allowed"]] == ["live"] * 3
    refused(limited["order"], 429, {"error": RATE_LIMITED})
    refused(limited["batch"], 429, {"error": RATE_LIMITED})
    assert limited["order_returned"]["returned"] == {"error": RATE_LIMITED, "status": 429}
    assert _requests(limited["batch"], "/orders") == [("POST", "/orders", 429)]
    assert retry_after(limited["order"]) >= 1 and retry_after(limited["batch"]) > retry_after(limited["order"])
    assert sorted(limited["cancel_all"]["returned"]["canceled"]) == sorted(
        [post_only["post_only"]["returned"]["orderID"], r["normal"]["returned"]["orderID"], *allowed])
    assert _placed(r["after_reset"]) == "live"
    assert r["open_after_reset"] == [r["after_reset"]["returned"]["orderID"]]
