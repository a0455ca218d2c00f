"""A local venue in its own process, for tests: `polybot venue` on free ports, and real clients for it."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from py_clob_client_v2 import ClobClient
from py_clob_client_v2.exceptions import PolyApiException
from websockets.sync.client import ClientConnection

from polybot_venue import wallets

from .conftest import child_env, free_port, only, wait_for

# The wallet an owner trades through, by signature type, as the official clients derive it (polybot_venue/WALLETS.md).
WALLET_OF = {1: wallets.proxy_wallet, 2: wallets.safe_wallet, 3: wallets.deposit_wallet_beacon}


class Venue:
    def __init__(self, state: Path, seed: int, page_size: int = 100, *extra: str) -> None:
        self.seed = seed
        self.gamma_port, self.clob_port, self.ws_port = free_port(), free_port(), free_port()
        self.market_ws = f"ws://127.0.0.1:{self.ws_port}/ws/market"
        self.user_ws = f"ws://127.0.0.1:{self.ws_port}/ws/user"
        self.gamma = f"http://127.0.0.1:{self.gamma_port}"
        self.clob = f"http://127.0.0.1:{self.clob_port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services", "venue", "--seed", str(seed), "--page-size", str(page_size),
             "--gamma-port", str(self.gamma_port), "--clob-port", str(self.clob_port),
             "--ws-port", str(self.ws_port), *(extra or ("--still",))],
            env=child_env(POLYBOT_STATE_DIR=str(state)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_for(self._ready, what="the venue to serve")
        listed = httpx.get(f"{self.gamma}/markets", params={"limit": 100}).json()
        self.markets = [m for m in listed if not m["negRisk"] and m["orderPriceMinTickSize"] == 0.01
                        and m.get("version", "v1") == "v1"]
        # Protocol-v2 positions, traded on exchange V3: binary markets, and the members of neg-risk events.
        self.v2_markets = [m for m in listed if m.get("version") == "v2" and not m["negRisk"]]
        self.v2_neg_risk_markets = [m for m in listed if m.get("version") == "v2" and m["negRisk"]]
        self._next = 0

    def _ready(self) -> bool:
        assert self.proc.poll() is None, self.proc.stdout.read()
        try:
            with socket.create_connection(("127.0.0.1", self.ws_port), timeout=1):
                pass
            return httpx.get(f"{self.clob}/ok").status_code == 200 and httpx.get(f"{self.gamma}/markets").is_success
        except (httpx.TransportError, OSError):
            return False

    def market(self) -> dict:
        """A market no other test has touched."""
        market = self.markets[self._next]
        self._next += 1
        return market

    def client(self, key: str | None = None, funded: bool | None = None, wallet: int = 0,
               funder: str | None = None) -> ClobClient:
        """A client for the owner of ``key`` (a new one by default) trading through its wallet of signature type
        ``wallet`` (0 the owner's EOA itself; 1 proxy, 2 Safe, 3 deposit wallet: the one derived from the owner
        unless ``funder`` names another). A new wallet starts with nothing, as on the real venue; if ``funded``
        (by default: when no key is given) it gets 10000 pUSD and approves every exchange, as its owner would on
        chain (here through the admin endpoints)."""
        funded = key is None if funded is None else funded
        key = key or Account.create().key.hex()
        owner = Account.from_key(key).address
        funder = funder or (WALLET_OF[wallet](owner) if wallet else owner)
        client = ClobClient(self.clob, chain_id=137, key=key, signature_type=wallet, funder=funder)
        client.set_api_creds(client.create_or_derive_api_key())
        if funded:
            self.admin("fund", address=funder, collateral=10_000)
            self.admin("approve", address=funder, exchange="all", unlimited=True)
        return client

    def admin(self, action: str, **body) -> dict:
        answer = httpx.post(f"{self.clob}/_admin/{action}", json=body)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


def tokens(market: dict) -> tuple[str, str]:
    yes, no = json.loads(market["clobTokenIds"])
    return yes, no


def mesh_config(root: Path, venue: Venue, services: str, bus: str = "") -> Path:
    """A config file for a mesh under ``root`` that talks to ``venue`` (and does not start one of its own), of the
    services given (their ``[services.NAME]`` tables) and no other; ``bus``: more lines of its [bus] table."""
    path = root / "polybot.toml"
    path.write_text(
        f'state_dir = "{root / "mesh"}"\n[bus]\nheartbeat_s = 0.2\n{bus}'
        f"[local_venue]\nstart = false\noptions = {{ gamma_port = {venue.gamma_port}, "
        f"clob_port = {venue.clob_port}, ws_port = {venue.ws_port}, seed = {venue.seed} }}\n{only(services)}")
    return path


def best(client: ClobClient, token: str) -> tuple[Decimal, Decimal]:
    """The best bid and ask of ``token``'s book as the client reads it (the best level is the last of each list)."""
    book = client.get_order_book(token)
    return Decimal(book["bids"][-1]["price"]), Decimal(book["asks"][-1]["price"])


def refusal(call) -> PolyApiException:
    """What py-clob-client-v2 raises for ``call``, which must be refused."""
    with pytest.raises(PolyApiException) as info:
        call()
    return info.value


def rejection(call) -> tuple[int, str]:
    """The status and the venue's error text of a refused ``call``."""
    error = refusal(call)
    text = error.error_msg
    return error.status_code, text["error"] if isinstance(text, dict) else str(text)


def frames(ws: ClientConnection, timeout: float = 2.0):
    """Every message until ``timeout`` passes with nothing new: frames may be one object or an array."""
    while True:
        try:
            raw = ws.recv(timeout=timeout)
        except TimeoutError:
            return
        if raw in ("PONG", "NO NEW ASSETS", "INVALID OPERATION"):
            yield raw
            continue
        data = json.loads(raw)
        yield from data if isinstance(data, list) else [data]


def until(ws: ClientConnection, predicate, timeout: float = 10.0) -> list:
    """Messages up to and including the first that satisfies ``predicate``; fails after ``timeout``."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            raw = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            break
        data = raw if raw in ("PONG", "NO NEW ASSETS", "INVALID OPERATION") else json.loads(raw)
        for msg in data if isinstance(data, list) else [data]:
            seen.append(msg)
            if predicate(msg):
                return seen
    raise AssertionError(f"no matching message within {timeout}s; saw {seen[-5:]}")
