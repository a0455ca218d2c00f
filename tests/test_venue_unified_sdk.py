"""The local venue through Polymarket's unified Python SDK, polymarket-client (module ``polymarket``), unchanged.

The SDK runs in its own virtual environment, not ours: it pins older websockets and eth-account than the product
installs. tests/unified_sdk/flow.py drives it (importing only the SDK and the standard library) and
tests/unified_sdk/requirements.txt pins it; the environment is created once per requirements file in
~/.cache/polybot-tests/unified-sdk/<hash> (``$XDG_CACHE_HOME`` if set) and reused. The test skips when the package
index cannot be reached, and fails on anything else.

This side does what only we can: it starts the venue, funds and approves the accounts through the admin endpoints
(wallets derived with ``polybot_venue.wallets``), answers the flow's mid-run admin requests (a restart, rate
limits, deposits), computes fees, and asserts on the one JSON result the flow prints and on the venue's own state.
The trading test's accounts pass ``wallet=``; the wallet test runs the SDK's default flow (no ``wallet=``: it
deploys a deposit wallet through the relayer and approves through relayer batches) and an EOA's approval over
JSON-RPC. The venue's CLOB is the flow's relayer and, at ``/rpc``, its JSON-RPC endpoint. Every other host the
flow's environment names is a closed loopback port, so a call the flow did not expect fails instead of reaching
the network."""
from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from eth_utils import keccak

from polybot_venue.chain import CONTRACTS
from polybot_venue.engine import taker_fee
from polybot_venue.wallets import deposit_wallet_beacon, proxy_wallet, safe_wallet

from .cached_install import installed, step
from .conftest import child_env
from .venue_harness import Venue, tokens

SEED = 17
V2_EXCHANGE = "0xE111180000d2663C0091e4f400237545B87B996B"
NEG_RISK_V2_EXCHANGE = "0xe2222d279d744050d28e00520010520000310F59"
EXCHANGE_V3 = "0xe3333700cA9d93003F00f0F71f8515005F6c00Aa"  # protocol-v2 positions settle here
MAX = 2**256 - 1
AUTO_REDEEM = "0xa1200000d0002264C9a1698e001292D00E1b00af"  # an operator the SDK's trading setup approves
FLOW = Path(__file__).resolve().parent / "unified_sdk"
INSTALL_TIMEOUT_S = 300
FLOW_TIMEOUT_S = 120
# What pip prints when the package index is out of reach (as opposed to a bad pin or a broken package).
NETWORK_FAILURE = re.compile(r"NewConnectionError|Failed to establish a new connection|ConnectTimeoutError|"
                             r"ReadTimeoutError|ProxyError|Temporary failure in name resolution|"
                             r"Name or service not known|Network is unreachable|No route to host|Connection refused")


def _sdk_python() -> Path:
    """The Python of a virtual environment with requirements.txt installed, in a cache folder keyed by that file:
    created once, reused. (A renamed environment still works when run through bin/python; only its console scripts
    keep the old path.)"""
    requirements = FLOW / "requirements.txt"

    def build(folder: Path) -> None:
        step([sys.executable, "-m", "venv", str(folder)], 120)
        step([str(folder / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
              "--retries", "1", "--timeout", "30", "-r", str(requirements)], INSTALL_TIMEOUT_S,
             env={**os.environ, "PYTHONNOUSERSITE": "1"})
    folder = installed("unified-sdk", [requirements], build, "polymarket-client", NETWORK_FAILURE,
                       INSTALL_TIMEOUT_S)
    return folder / "bin" / "python"


def _run_flow(python: Path, venue: Venue, env: dict[str, str], script: str = "flow.py") -> dict:
    """Run ``script`` (flow.py), carry out the admin calls it asks for, and return its result; fail past
    FLOW_TIMEOUT_S."""
    env = child_env(**env)
    env.pop("PYTHONPATH")  # the flow sees the SDK's environment only, none of our packages
    deadline = time.monotonic() + FLOW_TIMEOUT_S
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen([str(python), "-I", str(FLOW / script)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, cwd=FLOW)
        lines: queue.Queue[str | None] = queue.Queue()

        def read() -> None:  # in a thread, so the loop below can give up at the deadline
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        result, seen = None, []
        try:
            while (line := lines.get(timeout=max(0.0, deadline - time.monotonic()))) is not None:
                seen.append(line)
                message = json.loads(line) if line.startswith("{") else {}
                if "admin" in message:
                    venue.admin(message["admin"], **message["body"])
                    proc.stdin.write("ok\n")
                    proc.stdin.flush()
                elif "result" in message:
                    result = message["result"]
            code = proc.wait(max(0.0, deadline - time.monotonic()))
        except (queue.Empty, subprocess.TimeoutExpired):
            code = f"nothing: killed after {FLOW_TIMEOUT_S} s"
        finally:
            proc.kill()
            proc.wait()
            reader.join(5)
        stderr.seek(0)
        assert code == 0 and result is not None, (
            f"{script} exited {code}\nstdout: {''.join(seen)[-4000:]}\nstderr: {stderr.read()[-4000:]}")
    return result


def _flow_env(venue: Venue, **extra: str) -> dict[str, str]:
    return dict(SDK_FLOW_CLOB=venue.clob, SDK_FLOW_GAMMA=venue.gamma, SDK_FLOW_MARKET_WS=venue.market_ws,
                SDK_FLOW_USER_WS=venue.user_ws, SDK_FLOW_RELAYER=venue.clob, SDK_FLOW_RPC=f"{venue.clob}/rpc", **extra)


def deployed(venue: Venue, wallet: str) -> bool:
    """What the venue's relayer says of the wallet."""
    return httpx.get(f"{venue.clob}/deployed", params={"address": wallet, "type": "WALLET"}).json()["deployed"]


def rpc(venue: Venue, method: str, *params) -> object:
    """The result of one JSON-RPC call to the venue's chain."""
    answer = httpx.post(f"{venue.clob}/rpc", json={"jsonrpc": "2.0", "id": 1, "method": method,
                                                    "params": list(params)}).json()
    assert "error" not in answer, answer
    return answer["result"]


def eth_call(venue: Venue, to: str, signature: str, *addresses: str) -> int:
    """A read of the venue's chain: a function of addresses, its one word of result as a number."""
    data = keccak(text=signature)[:4] + b"".join(bytes(12) + bytes.fromhex(a[2:]) for a in addresses)
    return int(rpc(venue, "eth_call", {"to": to, "data": "0x" + data.hex()}, "latest"), 16)


def relayer_nonce(venue: Venue, owner: str) -> int:
    """The nonce the relayer gives for the owner's deposit wallet: how many batches it has run."""
    answer = httpx.get(f"{venue.clob}/v1/account/transactions/params", params={"address": owner, "type": "WALLET"})
    return int(answer.json()["nonce"])


def fund(venue: Venue, address: str) -> None:
    venue.admin("fund", address=address, collateral=1_000)
    venue.admin("approve", address=address, exchange="all", unlimited=True)


def _market(venue: Venue) -> dict:
    """A market no other part of the flow touches, as the flow wants it, and its fee schedule."""
    market = venue.market()
    yes, no = tokens(market)
    schedule = market["feeSchedule"]
    return {"condition_id": market["conditionId"], "yes": yes, "no": no,
            "rate": Decimal(str(schedule["rate"])), "exponent": Decimal(str(schedule["exponent"]))}


@pytest.fixture(scope="module")
def sdk_python() -> Path:
    """The SDK's Python, or a skip before any venue starts."""
    return _sdk_python()


@pytest.fixture(scope="module")
def venue(tmp_path_factory) -> Iterator[Venue]:
    venue = Venue(Path(os.path.realpath(tmp_path_factory.mktemp("venue"))) / "s", SEED, 100)
    yield venue
    venue.stop()


def D(value) -> Decimal:  # noqa: N802 (reads as a literal)
    return Decimal(str(value))


def test_the_unified_sdk_lists_quotes_trades_cancels_heartbeats_hits_typed_errors_and_streams_on_the_venue(
        sdk_python: Path, venue: Venue) -> None:
    keys = {name: Account.create().key.hex() for name in ("maker", "taker", "allowance", "limited")}
    address = {name: Account.from_key(key).address for name, key in keys.items()}
    maker_wallet, limited_wallet = address["maker"], address["limited"]
    taker_wallet = deposit_wallet_beacon(address["taker"])
    allowance_wallet = deposit_wallet_beacon(address["allowance"])
    fund(venue, maker_wallet)
    fund(venue, taker_wallet)
    fund(venue, limited_wallet)
    venue.admin("fund", address=allowance_wallet, collateral=250)
    venue.admin("approve", address=allowance_wallet, exchange=V2_EXCHANGE, amount=100)
    markets = {name: _market(venue) for name in ("book", "fill", "batch", "restart", "rate_limit", "stream")}
    wire = {name: {k: m[k] for k in ("condition_id", "yes", "no")} for name, m in markets.items()}

    try:
        r = _run_flow(sdk_python, venue, _flow_env(
            venue, SDK_FLOW_MARKETS=json.dumps(wire),
            SDK_FLOW_MAKER_KEY=keys["maker"], SDK_FLOW_MAKER_WALLET=maker_wallet,
            SDK_FLOW_TAKER_KEY=keys["taker"], SDK_FLOW_TAKER_WALLET=taker_wallet,
            SDK_FLOW_ALLOWANCE_KEY=keys["allowance"], SDK_FLOW_ALLOWANCE_WALLET=allowance_wallet,
            SDK_FLOW_LIMITED_KEY=keys["limited"], SDK_FLOW_LIMITED_WALLET=limited_wallet))
    finally:
        venue.admin("restart", seconds=0, post_only_seconds=0)
        venue.admin("rate-limits")

    # The SDK classifies an EOA and a deposit wallet; for the deposit wallet it asked the venue's relayer read
    # whether it is deployed (it could not have traded otherwise), which a wallet never funded is not.
    wallets = r["wallets"]
    assert (wallets["maker_type"], wallets["taker_type"]) == ("EOA", "DEPOSIT_WALLET")
    assert (wallets["maker_wallet"], wallets["taker_wallet"]) == (maker_wallet, taker_wallet)
    assert deployed(venue, taker_wallet) and not deployed(venue, deposit_wallet_beacon(Account.create().address))

    # It lists every open market through Gamma keyset pages (7 a page): protocol v1 unless it asks for v2, whose
    # markets and neg-risk events it reads with their position ids and on-chain event ids.
    gamma = httpx.get(f"{venue.gamma}/markets", params={"limit": 500}).json()
    open_markets = {version: sorted(m["conditionId"] for m in gamma if not m["closed"] and m["version"] == version)
                    for version in ("v1", "v2")}
    assert (sorted(r["listed"]), sorted(r["listed_v2"])) == (open_markets["v1"], open_markets["v2"])
    (event,) = r["events_v2"]
    served = httpx.get(f"{venue.gamma}/events", params={"version": "v2"}).json()[0]
    assert (event["id"], event["version"], event["neg_risk"]) == (served["id"], "v2", True)
    assert event["members"] == [[tokens(m)[0], served["negRiskMarketID"], served["negRiskMarketID"]]
                                for m in served["markets"]]

    # It reads a book as the venue serves it.
    book, market = r["book"], markets["book"]
    served = httpx.get(f"{venue.clob}/book", params={"token_id": market["yes"]}).json()
    assert (book["condition_id"], book["asset_id"]) == (market["condition_id"], market["yes"]) and book["hash"]
    assert (D(book["tick_size"]), D(book["min_order_size"]), book["neg_risk"]) == (Decimal("0.01"), 5, False)
    assert [(D(p), D(s)) for p, s in book["bids"]] == [(D(lv["price"]), D(lv["size"])) for lv in served["bids"]]
    assert D(book["best_bid"]) < D(book["best_ask"])

    # A resting order is listed open, then an order from the deposit wallet fills it and both see the trade.
    fill, market = r["fill"], markets["fill"]
    yes, no = market["yes"], market["no"]
    price = D(fill["top"]["price"])
    assert price < D(fill["top"]["ask"])
    resting = fill["resting"]
    assert (resting["ok"], resting["status"], resting["trade_ids"]) == (True, "live", [])
    (listed,) = resting["listed"]
    assert (listed["id"], listed["side"], D(listed["price"]), D(listed["original_size"]),
            D(listed["size_matched"])) == (resting["order_id"], "BUY", price, 10, 0)
    assert listed["maker_address"] == maker_wallet and listed["asset_id"] == yes
    assert resting["fetched_status"] == "LIVE" and D(resting["bid_after"]) == price
    # The deposit wallet bought NO at 1 - price: it crossed the bid (YES and NO books mirror) and paid the taker fee.
    crossing = fill["crossing"]
    fee = taker_fee(Decimal(10), 1 - price, market["rate"], market["exponent"])
    assert (crossing["ok"], crossing["status"], len(crossing["trade_ids"])) == (True, "matched", 1) and fee > 0
    assert (D(crossing["taking_amount"]), D(crossing["making_amount"])) == (10, 10 * (1 - price) + fee)
    assert D(crossing["balance_before"]) - D(crossing["balance_after"]) == (10 * (1 - price) + fee) * 10**6
    assert crossing["maker_open_after"] == []
    (maker_trade,), (taker_trade,) = fill["trades"]["maker"], fill["trades"]["taker"]
    assert maker_trade["id"] == taker_trade["id"] == crossing["trade_ids"][0]
    assert (maker_trade["trader_side"], maker_trade["asset_id"], D(maker_trade["price"])) == ("MAKER", yes, price)
    assert (taker_trade["trader_side"], taker_trade["asset_id"], D(taker_trade["price"]), D(taker_trade["size"])) == (
        "TAKER", no, 1 - price, 10)
    (maker_order,) = taker_trade["maker_orders"]
    assert (maker_order["order_id"], maker_order["maker_address"], D(maker_order["matched_amount"])) == (
        resting["order_id"], maker_wallet, 10)
    assert taker_trade["maker_address"] == taker_wallet
    assert D(fill["taker_shares"]) == 10 * 10**6

    # A batch of signed orders posts in one call; one cancels by id, then the rest all at once.
    batch = r["batch"]
    ids = batch["ids"]
    assert batch["posted"] == [[True, "live"]] * 3 and sorted(batch["open"]) == sorted(ids)
    assert batch["cancel_one"] == {"canceled": [ids[0]], "not_canceled": {}}
    assert batch["cancel_some"]["canceled"] == [ids[1]] and set(batch["cancel_some"]["not_canceled"]) == {ids[0]}
    assert batch["cancel_all"]["canceled"] == [ids[2]] and batch["open_after"] == []

    # Heartbeats chain ids, and a stale id raises the typed mismatch naming the expected one.
    beat = r["heartbeat"]
    assert "OrderHeartbeatMismatchError" in beat["stale"]["raised"], beat["stale"]
    assert (beat["stale"]["status"], beat["stale"]["heartbeat_id"]) == (400, beat["second"])
    assert beat["first"] and beat["third"] not in (beat["first"], beat["second"])

    # Balance-allowance answers for a deposit wallet with what its owner deposited and approved.
    allowance = r["allowance"]
    assert (D(allowance["balance"]), {k: D(v) for k, v in allowance["allowances"].items()}) == (
        250 * 10**6, {V2_EXCHANGE: 100 * 10**6, NEG_RISK_V2_EXCHANGE: 0, EXCHANGE_V3: 0})
    assert D(allowance["maker_allowances"][V2_EXCHANGE]) == 2**256 - 1

    # A restart raises the typed restarting rejection; then post-only orders and cancels pass in the window.
    restart = r["restart"]
    down, post_only = restart["down"], restart["post_only"]
    assert "RequestRejectedError" in down["raised"], down
    assert (down["status"], down["restriction"]) == (425, "restarting")
    assert down["retry_after"] is not None and 0 < down["retry_after"] <= 5
    assert "RequestRejectedError" in post_only["raised"], post_only
    assert (post_only["status"], post_only["restriction"], post_only["code"]) == (503, "post_only", "post_only_mode")
    assert restart["resting_status"] == "live" and restart["canceled"] == [restart["resting_id"]]

    # Past the order limit the SDK raises its rate-limit error with retry-after and the venue's state.
    limit = r["rate_limit"]
    assert limit["accepted"] == [True, True]
    assert limit["updates"] and limit["last_tier"] and limit["last_remaining"] is not None
    assert "RateLimitError" in limit["limited"]["raised"], limit["limited"]
    assert limit["limited"]["retry_after"] is not None and limit["limited"]["retry_after"] >= 1
    assert limit["limited"]["rate_limit_remaining"] is not None and limit["limited"]["rate_limit_remaining"] < 1
    assert limit["refilled"] is True, "the order bucket did not refill within 5 s"

    # The SDK's market and user streams carry the book, the order and the fill.
    stream, market = r["stream"], markets["stream"]
    price = D(stream["top"]["price"])
    assert price < D(stream["top"]["ask"]) and D(stream["book_bid"]) == price - Decimal("0.01")
    assert (stream["placed"]["id"], stream["placed"]["type"], D(stream["placed"]["price"])) == (
        stream["resting_id"], "PLACEMENT", price)
    assert D(stream["best_bid"]) == price
    assert stream["fill"]["id"] == stream["crossing_trade_ids"][0] and stream["fill"]["trader_side"] == "MAKER"
    assert stream["fill"]["maker_order_id"] == stream["resting_id"]
    # The venue prints a trade on the taker's token, here NO.
    printed = stream["printed"]
    assert (printed["asset_id"], D(printed["price"]), D(printed["size"])) == (market["no"], 1 - price, 10)


def test_the_unified_sdk_deploys_its_deposit_wallet_and_approves_through_the_venues_relayer_and_json_rpc(
        sdk_python: Path, venue: Venue) -> None:
    keys = {name: Account.create().key.hex()
            for name in ("builder_owner", "default", "relayed", "eoa", "proxy", "safe")}
    address = {name: Account.from_key(key).address for name, key in keys.items()}
    default_wallet = deposit_wallet_beacon(address["default"])
    relayed_wallet = deposit_wallet_beacon(address["relayed"])
    proxy, safe = proxy_wallet(address["proxy"]), safe_wallet(address["safe"])
    assert not deployed(venue, default_wallet) and not deployed(venue, relayed_wallet)
    venue.admin("fund", address=address["eoa"], collateral=100)  # an EOA with pUSD and no approvals
    fund(venue, proxy)
    fund(venue, safe)
    relayer_key = venue.admin("relayer-key", address=address["relayed"])
    v2_market = venue.v2_markets[0]
    markets = {name: _market(venue) for name in ("default", "eoa", "proxy", "safe")}
    markets["v2"] = {"condition_id": v2_market["conditionId"], "yes": tokens(v2_market)[0], "no": tokens(v2_market)[1]}
    wire = {name: {k: m[k] for k in ("condition_id", "yes", "no")} for name, m in markets.items()}

    r = _run_flow(sdk_python, venue, _flow_env(
        venue, SDK_FLOW_PART="wallets", SDK_FLOW_MARKETS=json.dumps(wire),
        SDK_FLOW_BUILDER_OWNER_KEY=keys["builder_owner"], SDK_FLOW_BUILDER_OWNER=address["builder_owner"],
        SDK_FLOW_DEFAULT_KEY=keys["default"], SDK_FLOW_RELAYED_KEY=keys["relayed"],
        SDK_FLOW_RELAYER_API_KEY=json.dumps(relayer_key), SDK_FLOW_EOA_KEY=keys["eoa"], SDK_FLOW_EOA=address["eoa"],
        SDK_FLOW_PROXY_KEY=keys["proxy"], SDK_FLOW_PROXY_WALLET=proxy,
        SDK_FLOW_SAFE_KEY=keys["safe"], SDK_FLOW_SAFE_WALLET=safe))
    pusd, positions = CONTRACTS[137].collateral, CONTRACTS[137].position_manager
    ctf = CONTRACTS[137].conditional_tokens

    # With a builder key from the CLOB and no wallet=, the SDK deployed the owner's deposit wallet through the
    # relayer. A BUY before any deposit was refused for the balance (no approval was tried: the wallet's batch
    # nonce is 1, from the one approval below); after the deposit the venue refused it for the allowance, the SDK
    # approved pUSD to the exchange in a batch it signed, and posted it again.
    default = r["default"]
    assert (default["wallet"], default["wallet_type"], default["builder_key_listed"]) == (
        default_wallet, "DEPOSIT_WALLET", True)
    assert deployed(venue, default_wallet)
    # The requests the SDK made, as its transports logged them (a repeated poll once), are WALLETS.md §5's: the
    # relayer's deployed read (legacy wallet, then the beacon one), a deployment and its polls; a refusal for the
    # balance taken as it is; a refusal for the allowance answered by a relayer batch (its deadline from the chain's
    # latest block) and a second post.
    tx, ok = "/v1/account/transactions/{id}", 200
    requests = default["requests"]
    assert requests["create"] == [["GET", "/deployed", ok], ["POST", "/auth/api-key", ok], ["GET", "/deployed", ok],
                                  ["POST", "/submit", ok], ["GET", tx, ok]]
    assert requests["unfunded"] == [["GET", f"/markets-by-token/{markets['default']['yes']}", ok],
                                    ["GET", f"/clob-markets/{markets['default']['condition_id']}", ok],
                                    ["POST", "/order", 400]]
    assert requests["placed"] == [
        ["POST", "/order", 400], ["GET", "/balance-allowance", ok], ["GET", "/v1/account/transactions/params", ok],
        ["POST", "<rpc>", ok], ["POST", "/submit", ok], ["GET", tx, ok], ["GET", "/balance-allowance/update", ok],
        ["GET", "/balance-allowance", ok], ["POST", "/order", ok]]
    unfunded = default["unfunded"]
    assert "RequestRejectedError" in unfunded["raised"] and unfunded["status"] == 400, unfunded
    assert "the balance is not enough" in unfunded["message"], unfunded
    assert default["placed"] == {"ok": True, "status": "live", "id": default["placed"]["id"]}
    assert default["listed"] == [default["placed"]["id"]] == default["canceled"]
    assert {k: int(v) for k, v in default["allowances"].items()} == {V2_EXCHANGE: MAX, NEG_RISK_V2_EXCHANGE: 0,
                                                                      EXCHANGE_V3: 0}
    assert relayer_nonce(venue, address["default"]) == 1
    assert eth_call(venue, pusd, "allowance(address,address)", default_wallet, V2_EXCHANGE) == MAX

    # With a relayer API key, on a protocol-v2 market: the BUY approved pUSD to exchange V3, the SELL the position
    # manager's tokens to it (each its own batch); the trading setup then approved the rest in one batch, and the
    # second setup found nothing missing (three batches in all).
    relayed = r["relayed"]
    assert (relayed["wallet"], relayed["wallet_type"]) == (relayed_wallet, "DEPOSIT_WALLET")
    assert deployed(venue, relayed_wallet)
    assert (relayed["bought"]["ok"], relayed["bought"]["status"], len(relayed["bought"]["trade_ids"])) == (
        True, "matched", 1)
    assert int(relayed["shares"]) == 10 * 10**6 and int(relayed["share_allowances"][EXCHANGE_V3]) == 0
    assert (relayed["sold"]["ok"], relayed["sold"]["status"], len(relayed["sold"]["trade_ids"])) == (
        True, "matched", 1)
    assert int(relayed["shares_after_sale"]) == 0
    assert relayed["resting"]["status"] == "live" and relayed["canceled"] == [relayed["resting"]["id"]]
    assert {k: int(v) for k, v in relayed["before_setup"].items()} == {V2_EXCHANGE: 0, NEG_RISK_V2_EXCHANGE: 0,
                                                                        EXCHANGE_V3: MAX}
    assert {k: int(v) for k, v in relayed["after_setup"].items()} == {
        V2_EXCHANGE: MAX, NEG_RISK_V2_EXCHANGE: MAX, EXCHANGE_V3: MAX}
    assert relayer_nonce(venue, address["relayed"]) == 3
    assert eth_call(venue, positions, "isApprovedForAll(address,address)", relayed_wallet, EXCHANGE_V3) == 1
    assert eth_call(venue, ctf, "isApprovedForAll(address,address)", relayed_wallet, AUTO_REDEEM) == 1
    assert eth_call(venue, ctf, "isApprovedForAll(address,address)", default_wallet, AUTO_REDEEM) == 0

    # The EOA approved with a transaction of its own over JSON-RPC: one mined, the allowance it set.
    eoa = r["eoa"]
    assert eoa["wallet_type"] == "EOA" and eoa["placed"] == {"ok": True, "status": "live"}
    assert int(eoa["allowances"][V2_EXCHANGE]) == MAX and int(eoa["allowances"][EXCHANGE_V3]) == 0
    assert len(eoa["canceled"]) == 1
    assert int(rpc(venue, "eth_getTransactionCount", address["eoa"], "latest"), 16) == 1

    # Proxy and Safe wallets named by wallet= trade as themselves: the fill is the wallet's, so are the shares.
    for name, wallet, kind in (("proxy", proxy, "POLY_PROXY"), ("safe", safe, "GNOSIS_SAFE")):
        got = r[name]
        assert got["wallet_type"] == kind
        assert (got["bought"]["ok"], got["bought"]["status"], len(got["bought"]["trade_ids"])) == (
            True, "matched", 1), got
        assert int(got["shares"]) == 10 * 10**6
        (filled,) = got["trades"]
        assert (filled["id"], filled["trader_side"], filled["maker_address"]) == (
            got["bought"]["trade_ids"][0], "TAKER", wallet)
        assert D(filled["price"]) <= D(got["top"]["ask"])
        assert got["resting"]["status"] == "live" and got["canceled"] == [got["resting"]["id"]]
