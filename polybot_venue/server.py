"""The local venue served: Gamma and CLOB REST and both WebSocket channels on 127.0.0.1, over one engine and
seeded, living markets; the relayer and JSON-RPC (``/rpc``) on the CLOB port; plus an admin endpoint for tests to
script exact situations."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import msgspec
import uvicorn
from eth_account import Account
from eth_utils import is_hex_address, to_checksum_address
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from websockets.asyncio.server import serve as ws_serve

from . import auth, operations, ports, wallets
from .app import VenueState, clob_app, gamma_app
from .chain import Chain, rpc_routes
from .channels import Channels
from .engine import UNLIMITED, Engine, VenueError, allowance_units, units
from .life import Life, LifeOptions, News
from .markets import generate, seed_liquidity
from .ports import HOST, PORTS
from .relayer import Relayer, builder_key_routes, relayer_routes
from .replay import Feed, Playback

LOOPBACK = ("127.0.0.1", "::1", "localhost")
TICK_S = 0.25  # how often GTD expiry, heartbeat silence, trade confirmations and chain transactions are checked
LIFE_S = 0.05  # how often the living markets step
SESSION_KEY_LIFETIME_S = 4_315 * 3600  # what the unified SDK asks for (polymarket-client actions/session_keys.py)


class VenueOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str = HOST
    gamma_port: int = PORTS["gamma_port"]
    clob_port: int = PORTS["clob_port"]
    ws_port: int = PORTS["ws_port"]  # market channel at /ws/market, user channel at /ws/user
    seed: int = ports.SEED
    markets: int = 20  # binary markets
    events: int = 3  # multi-outcome neg-risk events
    outcomes: int = 4  # markets per event
    v2_markets: int = 3  # protocol-v2 binary markets (Gamma version "v2"): position ids, orders for exchange V3
    v2_events: int = 1  # protocol-v2 neg-risk events of ``outcomes`` markets: module-2 position ids, exchange V3
    chain_id: int = 137
    page_size: int = 100  # items per page of /data/orders, /data/trades, /markets
    starting_collateral: int = 10_000  # pUSD a funded account is credited with
    fund_test_account: bool = True  # the ready-made account starts funded, every exchange approved without limit
    fund_new_accounts: bool = False  # so does every new account (the real venue: 0 balance, 0 allowance)
    # A trade's MATCHED -> MINED -> CONFIRMED, as seen on the user channel; also when a transaction on the venue's
    # chain (an approval, a wallet deployment) is mined and takes effect, and when it is confirmed.
    mined_after_ms: int = 300
    confirmed_after_ms: int = 800
    heartbeat_timeout_ms: int = 10_000  # once an account heartbeats, this much silence cancels its orders
    deposit_wallet_flow: bool = False  # refuse EOA-maker (type 0) orders from accounts other than the ready-made one
    still: bool = False  # no living markets: books move only when someone trades (and on admin requests)
    life: LifeOptions = LifeOptions()
    # A recording of the mesh to play back on the market channel (replay.py) instead of the seeded, living markets
    # (read by the mesh's side: `polybot venue --replay`); it plays once started (/_admin/replay), or at once at
    # replay_per_s recorded messages a second when that is above 0.
    replay: str = ""
    replay_per_s: float = 0.0
    rate_limits: operations.RateLimits = operations.RateLimits()  # 429s past these; /_admin/rate-limits changes them


@dataclass(frozen=True)
class ReadyAccount:
    private_key: str
    address: str
    credentials: auth.ApiCredentials


def venue_secret(seed: int) -> bytes:
    return hashlib.sha256(f"polybot-local-venue:{seed}".encode()).digest()


def ready_made_account(seed: int) -> ReadyAccount:
    """A ready-made account: its key is derived from the seed; its API credentials the way the venue derives any."""
    key = ports.ready_made_key(seed)
    address = Account.from_key(key).address
    return ReadyAccount(key, address, auth.derive_credentials(venue_secret(seed), address, 0))


def house_address(seed: int) -> str:
    return Account.from_key("0x" + hashlib.sha256(f"polybot-local-venue:house:{seed}".encode()).hexdigest()).address


class LocalVenue:
    """The whole venue in memory: engine, seeded markets, living markets, channels."""

    def __init__(self, options: VenueOptions, clock=None, feed: Feed | None = None) -> None:
        """``feed``: what to play back instead of living markets (replay.py)."""
        clock = clock or (lambda: time.time_ns() // 1_000_000)
        self.options = options
        if options.replay and feed is None:
            raise ValueError(f"replay {options.replay}: the venue reads no recording of the mesh; serve it with "
                             "`polybot venue --replay FOLDER`, which does")
        universe = generate(options.seed, options.markets, options.events, options.outcomes, now_ms=clock(),
                            v2=options.v2_markets, v2_events=options.v2_events) if feed is None else \
            generate(options.seed, 0, 0, now_ms=clock())  # the feed's markets instead
        engine = Engine(universe.markets, clock, heartbeat_timeout_ms=options.heartbeat_timeout_ms,
                        exchanges=(auth.EXCHANGE_V2[options.chain_id], auth.NEG_RISK_EXCHANGE_V2[options.chain_id],
                                   auth.EXCHANGE_V3[options.chain_id]))
        seed_liquidity(engine, universe, house_address(options.seed), options.seed)
        self.state = VenueState(engine=engine, events={e.id: e for e in universe.events}, chain_id=options.chain_id,
                                secret=venue_secret(options.seed), page_size=options.page_size,
                                starting_collateral=Decimal(options.starting_collateral),
                                fund_new_accounts=options.fund_new_accounts,
                                deposit_wallet_flow=options.deposit_wallet_flow)
        self.state.limiter.set(options.rate_limits)
        # The ready-made account's key (nonce 0) exists from the start, as if created: derive gives it, create
        # refuses, and the credentials the command line prints work at once.
        ready = ready_made_account(options.seed)
        self.state.created.add((ready.address.lower(), 0))
        self.state.register(ready.address, 0)
        self.state.grandfathered.add(ready.address.lower())  # an old account: it may still trade from its EOA
        if options.fund_test_account:
            self.state.fund(ready.address)
        # The chain's transactions (approvals, wallet deployments) mine and confirm as trades do.
        self.chain = Chain(engine, options.chain_id, options.mined_after_ms, options.confirmed_after_ms)
        self.relayer = Relayer(self.chain, venue_secret(options.seed))
        self.life = Life(engine, universe, house_address(options.seed), options.seed, options.life)
        self.playback = Playback.start(engine, self.life, feed) if feed is not None else None
        if self.playback is not None and options.replay_per_s > 0:
            self.playback.pace(options.replay_per_s, time.monotonic())
        self.channels = Channels(self.state)
        self.channels.remember(engine.token_market)
        engine.outbox.clear()  # the house's opening quotes are history, not news

    def publish(self, news: News) -> int:
        """Send a step's news to the channels; returns how many book levels changed."""
        self.channels.publish_news(news)
        return self.channels.after_change(news.touched)


def admin_routes(venue: LocalVenue) -> list[Route]:
    """``/_admin/*``: script exact situations. Not part of Polymarket's API; loopback only, like the venue."""
    engine, life = venue.state.engine, venue.life

    async def body(request: Request) -> dict:
        try:
            data = json.loads(await request.body() or b"{}")
        except json.JSONDecodeError:
            raise VenueError("invalid JSON body") from None
        if not isinstance(data, dict):
            raise VenueError("the body must be a JSON object")
        return data

    def market_of(data: dict):
        market = engine.markets.get(str(data.get("market", "")))
        if market is None:
            raise VenueError("unknown market: give its condition id as \"market\"", 404)
        return market

    def number(data: dict, key: str, default: str | None = None) -> Decimal:
        try:
            return Decimal(str(data[key] if key in data else default))
        except (InvalidOperation, TypeError):
            raise VenueError(f"{key} must be a number") from None

    def run(action):
        async def endpoint(request: Request) -> JSONResponse:
            try:
                news = News()
                result = action(await body(request), news)
                venue.publish(news)
                return JSONResponse(result)
            except VenueError as exc:
                return JSONResponse({"error": exc.message}, status_code=exc.status)
        return endpoint

    def gap(data: dict, news: News) -> dict:
        size, lifetime = number(data, "size", "50"), int(number(data, "lifetime_ms", "60000"))
        width = number(data, "gap", "0.05")
        if "event" in data:
            event = venue.state.events.get(str(data["event"]))
            if event is None:
                raise VenueError("unknown event: give its Gamma id as \"event\"", 404)
            return life.open_event_gap(event, width, engine.clock(), size, lifetime, news)
        return life.open_gap(market_of(data), width, engine.clock(), size, lifetime, news)

    def move(data: dict, news: News) -> dict:
        market = market_of(data)
        return {"market": market.condition_id, "fair": str(life.move(market, number(data, "price"), news))}

    def resolve(data: dict, news: News) -> dict:
        market = market_of(data)
        winner = str(data.get("winner", ""))
        if winner in market.outcomes:
            winner = market.tokens[market.outcomes.index(winner)]
        if winner not in market.tokens:
            raise VenueError(f"winner must be one of {list(market.outcomes)} or a token id")
        life.resolve(market, winner, news)
        return {"market": market.condition_id, "winning_asset_id": winner}

    def tick(data: dict, news: News) -> dict:
        market = market_of(data)
        life.change_tick(market, number(data, "tick"), news)
        return {"market": market.condition_id, "tick": str(market.tick)}

    def list_market(data: dict, news: News) -> dict:
        market = life.list_market(engine.clock(), news)
        return {"market": market.condition_id, "tokens": list(market.tokens)}

    async def restart(request: Request) -> JSONResponse:
        """A matching-engine restart from now: ``seconds`` of 425s to orders and cancels, then
        ``post_only_seconds`` when only post-only orders (and cancels) pass. ``{"seconds": 0, "post_only_seconds": 0}``
        ends one; ``seconds`` 0 alone starts straight in the post-only window."""
        try:
            data = await body(request)
            seconds, post_only = float(data.get("seconds", 90)), float(data.get("post_only_seconds", 120))
        except (VenueError, TypeError, ValueError):
            seconds = post_only = -1.0
        if not (0 <= seconds <= 3600 and 0 <= post_only <= 3600):
            return JSONResponse({"error": "seconds and post_only_seconds must be numbers from 0 to 3600"},
                                status_code=400)
        now = engine.clock()
        window = venue.state.restart
        window.start(now, seconds, post_only)
        return JSONResponse({"phase": window.phase(now), "down_until_ms": window.down_until_ms,
                             "post_only_until_ms": window.post_only_until_ms})

    async def rate_limits(request: Request) -> JSONResponse:
        """Replace the rate limits (buckets start full): a RateLimits as JSON, e.g.
        ``{"orders": {"rate": 1, "burst": 2}}``; what is not given keeps the venue's option."""
        try:
            given = await body(request)
            limits = msgspec.convert({**msgspec.to_builtins(venue.options.rate_limits), **given},
                                     operations.RateLimits)
        except (VenueError, msgspec.ValidationError) as exc:
            return JSONResponse({"error": f"give RateLimits fields (orders, cancels, general: {{rate, burst}}; "
                                          f"tier): {exc}"}, status_code=400)
        venue.state.limiter.set(limits)
        return JSONResponse(msgspec.to_builtins(limits))

    def pay_rebates(data: dict, news: News) -> dict:
        """Pay every maker the rebates accrued so far, today's too, with no minimum (the daily payout, now)."""
        return {"paid": {maker: str(amount) for maker, amount in engine.pay_rebates().items()}}

    def address_of(data: dict) -> str:
        address = str(data.get("address", ""))
        if not (address.startswith("0x") and len(address) == 42):
            raise VenueError("give the wallet's address as \"address\" (0x and 40 hex digits)")
        return address

    def fund(data: dict, news: News) -> dict:
        """A deposit: pUSD (``collateral``) and conditional tokens (``shares``, token id -> amount) arrive in the
        wallet, as a transfer on chain would bring them."""
        address = address_of(data)
        collateral = number(data, "collateral", "0")
        shares = data.get("shares") or {}
        if not isinstance(shares, dict):
            raise VenueError("shares must map token ids to amounts")
        amounts = {str(token): number(shares, token) for token in shares}
        for token in amounts:
            engine.market_of(token)
        if collateral < 0 or any(amount < 0 for amount in amounts.values()):
            raise VenueError("a deposit is not negative")
        engine.fund(address, collateral, amounts)
        account = engine.account(address)
        return {"address": address, "collateral": units(account.collateral),
                "shares": {token: units(account.shares[token]) for token in amounts}}

    def approve(data: dict, news: News) -> dict:
        """The wallet's approvals, as its own transactions on chain would set them: ``amount`` pUSD (or
        ``unlimited``) the exchange may spend, and ``conditional`` whether it may move the wallet's tokens;
        ``exchange`` is an exchange's address or "all"."""
        address = address_of(data)
        which = str(data.get("exchange", "all"))
        exchanges = None if which == "all" else [x for x in engine.exchanges if x.lower() == which.lower()] or [which]
        unlimited = data.get("unlimited") is True
        collateral = UNLIMITED if unlimited else number(data, "amount") if "amount" in data else None
        conditional = data.get("conditional", True if unlimited else None)
        if collateral is None and conditional is None:
            raise VenueError("give \"amount\" (pUSD), \"unlimited\": true or \"conditional\": true|false")
        if collateral is not None and collateral < 0:
            raise VenueError("amount must not be negative")
        if conditional is not None and not isinstance(conditional, bool):
            raise VenueError("conditional must be true or false")
        account = engine.approve(address, exchanges, collateral, conditional)
        return {"address": address,
                "allowances": {x: allowance_units(account.allowances.get(x, Decimal(0))) for x in engine.exchanges},
                "conditional": {x: x in account.approved for x in engine.exchanges}}

    def session_key(data: dict, news: News) -> dict:
        """A deposit wallet's session signer, as the wallet's own ``authorizeSessionSigner`` sets it on chain:
        ``signer`` may sign orders for ``wallet`` (inside the session envelope) for ``scopes`` (default ["ALL"]; "ALL"
        stands alone) until ``valid_until`` (unix seconds; default the unified SDK's lifetime, 4315 hours from
        now). ``"revoke": true`` withdraws the grant instead, as ``revokeSessionSigner``."""
        wallet = checksummed(data, "wallet")
        signer = checksummed(data, "signer")
        if data.get("revoke") is True:
            return {"wallet": wallet, "signer": signer, "revoked": venue.state.session_keys.revoke(wallet, signer)}
        scopes = data.get("scopes", [wallets.ALL_SCOPES])
        if (not isinstance(scopes, list) or not scopes or not all(isinstance(x, str) and x for x in scopes)
                or (wallets.ALL_SCOPES in scopes and len(scopes) > 1)):
            raise VenueError('scopes must be a non-empty list of names, with "ALL" only on its own')
        now_s = engine.clock() // 1000
        valid_until = data.get("valid_until", now_s + SESSION_KEY_LIFETIME_S)
        if isinstance(valid_until, bool) or not isinstance(valid_until, int) or not now_s < valid_until < 2**40:
            raise VenueError("valid_until must be a whole number of unix seconds in the future")
        venue.state.session_keys.authorize(wallet, wallets.SessionKey(signer, tuple(scopes), valid_until))
        return {"wallet": wallet, "signer": signer, "scopes": scopes, "valid_until": valid_until}

    def closed_only(data: dict, news: News) -> dict:
        """Put the account of the owner ``address`` (the API key's address) in closed-only mode, or take it out
        (``"closed_only": false``): /auth/ban-status/closed-only says so, and its BUY orders are refused with the
        real venue's text; SELLs, which close positions, and cancels pass."""
        owner = checksummed(data, "address")
        flag = data.get("closed_only", True)
        if not isinstance(flag, bool):
            raise VenueError("closed_only must be true or false")
        (venue.state.closed_only.add if flag else venue.state.closed_only.discard)(owner.lower())
        return {"address": owner, "closed_only": flag}

    def heartbeats(data: dict, news: News) -> dict:
        """``{"refuse": true}``: heartbeats answer 503 until ``{"refuse": false}`` (their deadline keeps running)."""
        refuse = data.get("refuse", True)
        if not isinstance(refuse, bool):
            raise VenueError("refuse must be true or false")
        venue.state.heartbeats_refused = refuse
        return {"refuse": refuse}

    def pending_trade(data: dict) -> str:
        """The trade named by ``{"trade": id}``, or ``{"market": condition id}``: its latest trade not confirmed yet."""
        if "trade" in data:
            return str(data["trade"])
        if "market" in data:
            market = market_of(data)
            pending = [t for t in engine.trade_log
                       if t.market is market and t.status in ("MATCHED", "MINED", "RETRYING")]
            if not pending:
                raise VenueError(f"market {market.condition_id} has no trade that is not confirmed yet", 404)
            return pending[-1].id
        raise VenueError("give the trade's id as \"trade\", or a market's condition id as \"market\"")

    def fail_trade(data: dict, news: News) -> dict:
        """A trade's settlement fails on chain: it turns FAILED (``"retrying": true``: RETRYING, nothing moved yet),
        its balances go back as if it never matched, and both sides hear its status on the user channel and in
        /data/trades, as from Polymarket."""
        retrying = data.get("retrying", False)
        if not isinstance(retrying, bool):
            raise VenueError("retrying must be true or false")
        trade = engine.fail_trade(pending_trade(data), retrying)
        return {"trade": trade.id, "status": trade.status, "market": trade.market.condition_id}

    def confirm_trade(data: dict, news: News) -> dict:
        """A trade settles on chain now (CONFIRMED), before ``confirmed_after_ms`` would confirm it."""
        trade = engine.confirm_trade(pending_trade(data))
        return {"trade": trade.id, "status": trade.status, "market": trade.market.condition_id}

    def received(data: dict, news: News) -> dict:
        """Every order that reached the order endpoints lately, in order, whatever the answer (AppState.received)."""
        return {"orders": list(venue.state.received)}

    def clock(data: dict, news: News) -> dict:
        """Set the venue's clock ``offset_ms`` from this machine's, as ``/time`` reports it (what a client on a
        skewed clock sees); the engine keeps its own time, so expiries and heartbeats stay as they were."""
        offset = data.get("offset_ms", 0)
        if isinstance(offset, bool) or not isinstance(offset, int) or abs(offset) > 86_400_000:
            raise VenueError("offset_ms must be a whole number of milliseconds within a day either way")
        venue.state.clock_offset_ms = offset
        return {"offset_ms": offset, "time": (engine.clock() + offset) // 1000}

    def checksummed(data: dict, key: str) -> str:
        value = data.get(key)
        if not isinstance(value, str) or not is_hex_address(value):
            raise VenueError(f"give {key} as an address (0x and 40 hex digits)")
        return to_checksum_address(value)

    def relayer_key(data: dict, news: News) -> dict:
        """A relayer API key for ``address`` (polymarket.com's settings page makes them on the real venue)."""
        address = address_of(data)
        return {"apiKey": venue.relayer.issue_relayer_key(address), "address": address}

    async def drop(request: Request) -> JSONResponse:
        return JSONResponse({"dropped": await venue.channels.drop_all()})

    async def latency(request: Request) -> JSONResponse:
        """From now on placing orders takes ``orders_ms``, reading the account's orders and trades ``reads_ms``
        (0 puts either back); market data stays as quick."""
        try:
            data = await body(request)
            given = {key: float(data[key]) for key in ("orders_ms", "reads_ms") if key in data}
        except (VenueError, TypeError, ValueError):
            given = {}
        if not given or not all(0 <= ms <= 60_000 for ms in given.values()):
            return JSONResponse({"error": "give orders_ms, reads_ms or both, each a number of milliseconds from 0 "
                                          "to 60000"}, status_code=400)
        if "orders_ms" in given:
            venue.state.order_delay_s = given["orders_ms"] / 1000
        if "reads_ms" in given:
            venue.state.read_delay_s = given["reads_ms"] / 1000
        return JSONResponse(given)

    async def stall(request: Request) -> JSONResponse:
        try:
            seconds = float((await body(request)).get("seconds", 1))
        except (VenueError, TypeError, ValueError):
            return JSONResponse({"error": "seconds must be a number"}, status_code=400)
        # Freeze the whole venue (REST, WebSockets, markets) right after answering, as a hung server would.
        asyncio.get_running_loop().call_soon(time.sleep, min(seconds, 60.0))
        return JSONResponse({"stalling_s": seconds})

    def replay(data: dict, news: News) -> dict:
        """Replay mode: play the recording at ``per_s`` messages a second (0 pauses); either way, where it is."""
        if venue.playback is None:
            raise VenueError("the venue is not replaying a recording: serve it with `polybot venue --replay FOLDER`")
        if "per_s" in data:
            venue.playback.pace(float(number(data, "per_s")), time.monotonic())
        return venue.playback.detail()

    def loopback_only(endpoint):
        async def guarded(request: Request) -> JSONResponse:
            # The venue may listen on every interface (in a container); its admin answers this machine only.
            if request.client is None or request.client.host not in LOOPBACK:
                return JSONResponse({"error": "the admin endpoints answer loopback clients only"}, status_code=403)
            return await endpoint(request)
        return guarded

    endpoints = {"gap": run(gap), "move": run(move), "resolve": run(resolve), "tick": run(tick),
                 "list": run(list_market), "pay-rebates": run(pay_rebates), "fund": run(fund),
                 "approve": run(approve), "relayer-key": run(relayer_key), "drop-connections": drop, "stall": stall,
                 "latency": latency, "restart": restart, "rate-limits": rate_limits, "session-key": run(session_key),
                 "closed-only": run(closed_only), "clock": run(clock), "received": run(received),
                 "fail-trade": run(fail_trade), "confirm-trade": run(confirm_trade),
                 "heartbeats": run(heartbeats), "replay": run(replay)}
    return [Route(f"/_admin/{name}", loopback_only(endpoint), methods=["POST"]) for name, endpoint in endpoints.items()]


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


async def serve(venue: LocalVenue, halted: Callable[[], bool] = lambda: False) -> None:
    """Serve ``venue`` until cancelled: Gamma and CLOB (with the admin routes) over HTTP, both channels over
    WebSocket, the living markets stepping (unless still or ``halted()``), expiries and confirmations ticking."""
    opts = venue.options
    engine = venue.state.engine
    clob = clob_app(venue.state, venue.channels.after_change)
    clob.router.routes.extend([*admin_routes(venue), *relayer_routes(venue.relayer), *rpc_routes(venue.chain),
                               *builder_key_routes(venue.relayer, venue.state.credentials.get)])
    servers = [_Server(uvicorn.Config(app, host=opts.host, port=port, log_level="warning", lifespan="off",
                                      access_log=False))
               for app, port in ((gamma_app(venue.state), opts.gamma_port), (clob, opts.clob_port))]
    serving = [asyncio.create_task(s.serve()) for s in servers]
    try:
        async with ws_serve(venue.channels.serve, opts.host, opts.ws_port, ping_interval=None,
                            compression=None, max_size=2**20):
            next_tick = 0.0
            while True:
                now = time.monotonic()
                if venue.playback is not None:
                    for news in venue.playback.step(now):
                        venue.publish(news)
                elif not opts.still and not halted():
                    venue.publish(venue.life.step(engine.clock()))
                if now >= next_tick:
                    canceled = engine.tick()
                    venue.chain.settle()
                    engine.advance_trades(opts.mined_after_ms, opts.confirmed_after_ms)
                    venue.channels.after_change(o.token_id for o in canceled)
                    next_tick = now + TICK_S
                await asyncio.sleep(LIFE_S)
    finally:
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*serving, return_exceptions=True)


def detail(venue: LocalVenue) -> dict[str, str]:
    """What a status line shows of the venue: its addresses and counts."""
    engine = venue.state.engine
    return {**addresses(venue.options), "markets": str(len(engine.markets)),
            "open_orders": str(sum(1 for o in engine.orders.values() if o.status == "LIVE")),
            "trades": str(len(engine.trade_log)),
            "living": str(not venue.options.still and venue.playback is None),
            **(venue.playback.detail() if venue.playback is not None else {})}
