"""The local venue through Polymarket's unified Python SDK, polymarket-client (module ``polymarket``), unchanged.

The SDK is pointed at the venue with an environment built from production's by ``dataclasses.replace`` and
``polymarket._internal.environment.create_environment``: ``Environment`` cannot be constructed through the public
API. Both accounts pass ``wallet=`` (an EOA, and a deposit wallet funded through the admin endpoints), so the SDK's
default bootstrap (relayer deployment, JSON-RPC approvals) is not used. Even with ``wallet=``, a deposit wallet makes
the SDK ask the relayer ``GET /deployed`` once; the venue serves no relayer, so this module answers that one read
(``_Relayer``). Every other host the environment names is a closed loopback port, so a call the flow did not expect
fails instead of reaching the network."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from eth_account import Account
from polymarket import (
    PRODUCTION,
    AsyncSecureClient,
    OrderHeartbeatMismatchError,
    RateLimitError,
    RequestRejectedError,
    SecureClient,
)
from polymarket._internal.environment import create_environment, get_environment_config
from polymarket.streams import MarketBookEvent, UserOrderEvent, UserTradeEvent
from polymarket.streams._specs import MarketSpec, UserSpec

from polybot_venue.wallets import deposit_wallet_beacon

from .venue_harness import Venue, tokens

SEED = 17
NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing listens, so a stray call fails at once


class _Relayer:
    """The one relayer read the SDK makes for an explicit deposit wallet: ``GET /deployed`` → deployed."""

    def __init__(self) -> None:
        asked: list[dict[str, list[str]]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                url = urlparse(self.path)
                if url.path != "/deployed":
                    self.send_error(404)
                    return
                asked.append(parse_qs(url.query))
                body = json.dumps({"deployed": True}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.asked = asked
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def venue_environment(venue: Venue, relayer_url: str):
    """Production's environment with every host replaced: the venue's, the relayer stand-in, or nowhere."""
    config = dataclasses.replace(
        get_environment_config(PRODUCTION), chain_id=137,
        clob_url=venue.clob, gamma_url=venue.gamma,
        clob_market_ws_url=venue.market_ws, clob_user_ws_url=venue.user_ws,
        relayer_url=relayer_url, data_url=NOWHERE, rfq_url=NOWHERE, rpc_url=NOWHERE,
        rtds_ws_url=NOWHERE.replace("http", "ws"), sports_ws_url=NOWHERE.replace("http", "ws"),
        builder_gateway_url=NOWHERE, collateral_return_url=NOWHERE, perps_url=NOWHERE,
        perps_ws_url=NOWHERE.replace("http", "ws"), realtime_ws_url=NOWHERE.replace("http", "ws"),
        rfq_quoter_ws_url=NOWHERE.replace("http", "ws"), relayer_poll_frequency_ms=10)
    return create_environment(name="local-venue", config=config)


@dataclasses.dataclass
class Flow:
    venue: Venue
    relayer: _Relayer
    environment: object
    maker_key: str
    taker_key: str
    maker: SecureClient   # an EOA (signature type 0)
    taker: SecureClient   # a deposit wallet (signature type 3)
    taker_wallet: str


def fund(venue: Venue, address: str) -> None:
    venue.admin("fund", address=address, collateral=1_000)
    venue.admin("approve", address=address, exchange="all", unlimited=True)


@pytest.fixture(scope="module")
def flow(tmp_path_factory) -> Iterator[Flow]:
    venue = Venue(Path(os.path.realpath(tmp_path_factory.mktemp("venue"))) / "s", SEED, 100)
    relayer = _Relayer()
    clients: list[SecureClient] = []
    try:
        environment = venue_environment(venue, relayer.url)
        maker_key, taker_key = Account.create().key.hex(), Account.create().key.hex()
        maker_address = Account.from_key(maker_key).address
        taker_wallet = deposit_wallet_beacon(Account.from_key(taker_key).address)
        fund(venue, maker_address)
        fund(venue, taker_wallet)
        maker = SecureClient.create(private_key=maker_key, wallet=maker_address, environment=environment)
        clients.append(maker)
        taker = SecureClient.create(private_key=taker_key, wallet=taker_wallet, environment=environment)
        clients.append(taker)
        yield Flow(venue, relayer, environment, maker_key, taker_key, maker, taker, taker_wallet)
    finally:
        for client in clients:
            client.close()
        relayer.stop()
        venue.stop()


def test_the_sdk_classifies_an_eoa_and_a_deposit_wallet_and_asks_the_relayer_only_about_the_wallet(flow: Flow) -> None:
    assert (flow.maker.wallet_type, flow.taker.wallet_type) == ("EOA", "DEPOSIT_WALLET")
    assert flow.taker.wallet == flow.taker_wallet
    assert [query["address"] for query in flow.relayer.asked] == [[flow.taker_wallet]]


def test_the_sdk_lists_every_market_through_gamma_keyset_pages(flow: Flow) -> None:
    listed = list(flow.maker.list_markets(page_size=7).iter_items())
    gamma = httpx.get(f"{flow.venue.gamma}/markets", params={"limit": 500}).json()
    assert sorted(m.condition_id for m in listed) == sorted(m["conditionId"] for m in gamma if not m["closed"])
