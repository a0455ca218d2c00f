"""The local venue as a service: Gamma and CLOB REST on 127.0.0.1, one engine, seeded markets."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import msgspec
import uvicorn
from eth_account import Account
from websockets.asyncio.server import serve as ws_serve

from ...runtime import Service
from . import auth
from .app import VenueState, clob_app, gamma_app
from .channels import Channels
from .engine import Engine
from .markets import generate, seed_liquidity

TICK_S = 0.25  # how often GTD expiry and heartbeat silence are checked


class VenueOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    gamma_port: int = 8790
    clob_port: int = 8791
    ws_port: int = 8792  # market channel at /ws/market, user channel at /ws/user
    seed: int = 7
    markets: int = 20  # binary markets
    events: int = 3  # multi-outcome neg-risk events
    outcomes: int = 4  # markets per event
    chain_id: int = 137
    page_size: int = 100  # items per page of /data/orders, /data/trades, /markets
    starting_collateral: int = 10_000  # pUSD a new account is credited with
    mined_after_ms: int = 300  # a trade's MATCHED -> MINED -> CONFIRMED, as seen on the user channel
    confirmed_after_ms: int = 800


@dataclass(frozen=True)
class ReadyAccount:
    private_key: str
    address: str
    credentials: auth.ApiCredentials


def venue_secret(seed: int) -> bytes:
    return hashlib.sha256(f"polybot-local-venue:{seed}".encode()).digest()


def ready_made_account(seed: int) -> ReadyAccount:
    """A ready-made account: its key is derived from the seed; its API credentials the way the venue derives any."""
    key = "0x" + hashlib.sha256(f"polybot-local-venue:test-account:{seed}".encode()).hexdigest()
    address = Account.from_key(key).address
    return ReadyAccount(key, address, auth.derive_credentials(venue_secret(seed), address, 0))


def house_address(seed: int) -> str:
    return Account.from_key("0x" + hashlib.sha256(f"polybot-local-venue:house:{seed}".encode()).hexdigest()).address


def build_state(options: VenueOptions, clock=None) -> VenueState:
    clock = clock or (lambda: time.time_ns() // 1_000_000)
    universe = generate(options.seed, options.markets, options.events, options.outcomes, now_ms=clock())
    engine = Engine(universe.markets, clock)
    seed_liquidity(engine, universe, house_address(options.seed), options.seed)
    return VenueState(engine=engine, events={e.id: e for e in universe.events}, chain_id=options.chain_id,
                      secret=venue_secret(options.seed), page_size=options.page_size,
                      starting_collateral=Decimal(options.starting_collateral))


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service runtime owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def addresses(options: VenueOptions) -> dict[str, str]:
    return {"gamma": f"http://{options.host}:{options.gamma_port}",
            "clob": f"http://{options.host}:{options.clob_port}",
            "market_ws": f"ws://{options.host}:{options.ws_port}/ws/market",
            "user_ws": f"ws://{options.host}:{options.ws_port}/ws/user"}


class Venue(Service):
    """Serves Polymarket's Gamma and CLOB REST APIs and its WebSocket channels over a local matching engine."""

    Options = VenueOptions

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.state = build_state(ctx.options)
        self.channels = Channels(self.state)
        self.channels.remember(self.state.engine.token_market)
        self.state.engine.outbox.clear()  # the house's opening quotes are history, not news
        self.servers: list[_Server] = []

    async def run(self) -> None:
        opts = self.ctx.options
        engine = self.state.engine
        for app, port in ((gamma_app(self.state), opts.gamma_port),
                          (clob_app(self.state, self.channels.after_change), opts.clob_port)):
            config = uvicorn.Config(app, host=opts.host, port=port, log_level="warning", lifespan="off",
                                    access_log=False)
            self.servers.append(_Server(config))
        serving = [asyncio.create_task(s.serve()) for s in self.servers]
        try:
            async with ws_serve(self.channels.serve, opts.host, opts.ws_port, ping_interval=None,
                                compression=None, max_size=2**20):
                while True:
                    canceled = engine.tick()
                    engine.advance_trades(opts.mined_after_ms, opts.confirmed_after_ms)
                    self.channels.after_change(o.token_id for o in canceled)
                    await asyncio.sleep(TICK_S)
        finally:
            for server in self.servers:
                server.should_exit = True
            await asyncio.gather(*serving, return_exceptions=True)

    def detail(self) -> dict[str, str]:
        engine = self.state.engine
        return {**addresses(self.ctx.options), "markets": str(len(engine.markets)),
                "open_orders": str(sum(1 for o in engine.orders.values() if o.status == "LIVE")),
                "trades": str(len(engine.trade_log))}
