"""The local venue through Polymarket's unified Python SDK, polymarket-client (module ``polymarket``), unchanged.

The SDK runs in its own virtual environment, not ours: it pins older websockets and eth-account than the product
installs. tests/unified_sdk/flow.py drives it (importing only the SDK and the standard library) and
tests/unified_sdk/requirements.txt pins it; the environment is created once per requirements file in
~/.cache/polybot-tests/unified-sdk/<hash> (``$XDG_CACHE_HOME`` if set) and reused. The test skips when the package
index cannot be reached, and fails on anything else.

This side does what only we can: it starts the venue, funds and approves the accounts through the admin endpoints
(deposit wallets derived with ``polybot_venue.wallets``), answers the flow's mid-run admin requests (a restart, rate
limits), computes fees, and asserts on the one JSON result the flow prints. Both SDK accounts pass ``wallet=``, so
the SDK's default bootstrap (relayer deployment, JSON-RPC approvals) is not used; even so, a deposit wallet makes
the SDK ask the relayer ``GET /deployed`` once, which the venue answers (its relayer host is the venue's CLOB).
Every other host the flow's environment names is a closed loopback port, so a call the flow
did not expect fails instead of reaching the network."""
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

from polybot_venue.engine import taker_fee
from polybot_venue.wallets import deposit_wallet_beacon

from .cached_install import installed, step
from .conftest import child_env
from .venue_harness import Venue, tokens

SEED = 17
V2_EXCHANGE = "0xE111180000d2663C0091e4f400237545B87B996B"
NEG_RISK_V2_EXCHANGE = "0xe2222d279d744050d28e00520010520000310F59"
EXCHANGE_V3 = "0xe3333700cA9d93003F00f0F71f8515005F6c00Aa"  # protocol-v2 positions settle here
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
        r = _run_flow(sdk_python, venue, dict(
            SDK_FLOW_CLOB=venue.clob, SDK_FLOW_GAMMA=venue.gamma, SDK_FLOW_MARKET_WS=venue.market_ws,
            SDK_FLOW_USER_WS=venue.user_ws, SDK_FLOW_RELAYER=venue.clob, SDK_FLOW_MARKETS=json.dumps(wire),
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
    def deployed(wallet: str) -> bool:
        return httpx.get(f"{venue.clob}/deployed", params={"address": wallet, "type": "WALLET"}).json()["deployed"]
    assert deployed(taker_wallet) and not deployed(deposit_wallet_beacon(Account.create().address))

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
