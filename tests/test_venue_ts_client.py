"""The local venue through Polymarket's official TypeScript client, @polymarket/clob-client-v2 from npm, unchanged.

tests/ts_client/flow.mjs drives the client; its package.json and package-lock.json pin every package. They are
installed once per lock into ~/.cache/polybot-tests/ts-client/<hash> (``$XDG_CACHE_HOME`` if set) and reused. The
test skips when Node (20.10 or later) or npm is missing or the npm registry cannot be reached, and fails on
anything else."""
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

from polybot_venue.engine import taker_fee
from polybot_venue.server import ready_made_account

from .cached_install import installed, step
from .conftest import child_env
from .venue_harness import Venue

SEED = 13
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


def _flow(node_and_packages: tuple[str, Path], venue: Venue, maker_key: str, taker_key: str) -> dict:
    """Run flow.mjs with the installed packages (ESM resolves them beside the script, so it runs from there)."""
    node, install = node_and_packages
    shutil.copy(FLOW / "flow.mjs", install / "flow.mjs")
    env = child_env(FLOW_GAMMA=venue.gamma, FLOW_CLOB=venue.clob, FLOW_MARKET_WS=venue.market_ws,
                    FLOW_USER_WS=venue.user_ws, FLOW_MAKER_KEY=maker_key, FLOW_TAKER_KEY=taker_key)
    done = subprocess.run([node, "--experimental-websocket", "--no-warnings", str(install / "flow.mjs")],
                          capture_output=True, text=True, timeout=FLOW_TIMEOUT_S, cwd=install, env=env)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, (
        f"flow.mjs exited {done.returncode}\nstdout: {done.stdout[-4000:]}\nstderr: {done.stderr[-4000:]}")
    return json.loads(lines[-1])


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

    r = _flow(node_and_packages, venue, maker_account.private_key, "0x" + taker.key.hex().removeprefix("0x"))

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
