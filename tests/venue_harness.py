"""A local venue in its own process, for tests: `polybot venue` on free ports, and real clients for it."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import httpx
from eth_account import Account
from py_clob_client_v2 import ClobClient

from .conftest import child_env, only, wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Venue:
    def __init__(self, state: Path, seed: int, page_size: int = 100, *extra: str) -> None:
        self.seed = seed
        self.gamma_port, self.clob_port, self.ws_port = _free_port(), _free_port(), _free_port()
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

    def client(self, key: str | None = None, funded: bool | None = None) -> ClobClient:
        """A client for the account of ``key`` (a new one by default). A new account starts with nothing, as on the
        real venue; unless ``funded`` is False it gets 10000 pUSD and approves every exchange, as its owner would
        on chain (here through the admin endpoints)."""
        client = ClobClient(self.clob, chain_id=137, key=key or Account.create().key.hex())
        client.set_api_creds(client.create_or_derive_api_key())
        if funded if funded is not None else key is None:
            self.admin("fund", address=client.get_address(), collateral=10_000)
            self.admin("approve", address=client.get_address(), exchange="all", unlimited=True)
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


def mesh_config(root: Path, venue: Venue, services: str) -> Path:
    """A config file for a mesh under ``root`` that talks to ``venue`` (and does not start one of its own), of the
    services given (their ``[services.NAME]`` tables) and no other."""
    path = root / "polybot.toml"
    path.write_text(
        f'state_dir = "{root / "mesh"}"\n[bus]\nheartbeat_s = 0.2\n'
        f"[local_venue]\nstart = false\noptions = {{ gamma_port = {venue.gamma_port}, "
        f"clob_port = {venue.clob_port}, ws_port = {venue.ws_port}, seed = {venue.seed} }}\n{only(services)}")
    return path
