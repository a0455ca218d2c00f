"""The local venue's HTTP side: Gamma and CLOB REST apps over one engine (Starlette)."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from decimal import Decimal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from . import auth, operations, wallets
from .engine import MAX_UINT, UNLIMITED, Engine, Market, Order, Trade, VenueError, allowance_units, fmt, units
from .markets import Event, clob_market, clob_market_info, gamma_event, gamma_market, simplified_market

END_CURSOR = "LTE="  # base64("-1"): the last page
# The real venue's texts (py-clob-client-v2 issues #49, #58, #53, #76; WALLETS.md §4).
_NOT_THE_KEYS_SIGNER = "the order signer address has to be the address of the API KEY"
_USE_DEPOSIT_WALLET = "maker address not allowed, please use the deposit wallet flow"
# A signature that does not verify, as the V2 venue words it: 400 {"error": "invalid signature"} (rs-clob-client-v2
# #21 and py-clob-client-v2 #32, both on the V2 venue after the 2026-04-28 cutover; WALLETS.md "Unconfirmed / open").
INVALID_SIGNATURE = "invalid signature"
# An account that may only close positions, as Polymarket's docs give the refusal of its orders (POST /order, 400).
CLOSED_ONLY = "'{address}' address in closed only mode"
# An order signed for the other exchange version (V2 vs V3): the clients look for this text and refetch /version
# (py-clob-client-v2 constants.py ORDER_VERSION_MISMATCH_ERROR; WALLETS.md §3).
ORDER_VERSION_MISMATCH = "order_version_mismatch"
RECEIVED_KEPT = 100_000  # orders remembered as received (AppState.received)


@dataclass
class VenueState:
    engine: Engine
    events: dict[str, Event]
    chain_id: int
    secret: bytes  # derives API credentials
    page_size: int = 100
    starting_collateral: Decimal = Decimal(10_000)
    fund_new_accounts: bool = False  # a convenience for tests: each new account is funded and approves every exchange
    credentials: dict[str, auth.ApiCredentials] = field(default_factory=dict)  # api key -> creds
    funded: set[str] = field(default_factory=set)
    order_delay_s: float = 0.0  # set by the admin endpoint: how long placing an order takes, as on a slow venue
    read_delay_s: float = 0.0  # and how long reading the account's orders and trades takes
    created: set[tuple[str, int]] = field(default_factory=set)  # (address lower-case, nonce) given a key
    heartbeat_ids: dict[str, str] = field(default_factory=dict)  # api key -> the id its next heartbeat must send
    restart: operations.Restart = field(default_factory=operations.Restart)
    limiter: operations.Limiter = field(default_factory=operations.Limiter)
    deposit_wallet_flow: bool = False  # new accounts may not make orders from their EOA (type 0), as on the real venue
    grandfathered: set[str] = field(default_factory=set)  # owners (lower-case) exempt from deposit_wallet_flow
    deposit_wallets: dict[str, str] = field(default_factory=dict)  # owner lower-case -> the deposit wallet it used
    session_keys: wallets.SessionKeys = field(default_factory=wallets.SessionKeys)  # signers wallets authorised
    closed_only: set[str] = field(default_factory=set)  # owners (lower-case) that may only close positions
    clock_offset_ms: int = 0  # how far the venue's clock (what /time says) is from this machine's
    # Every order that reached the order endpoints, whatever the answer (the last RECEIVED_KEPT): its hash, the
    # restart phase it came in, whether it was post-only and whether the rate limit turned it away. Tests check
    # by it that no order was sent twice and that only post-only orders came in the post-only window.
    received: deque = field(default_factory=lambda: deque(maxlen=RECEIVED_KEPT))
    heartbeats_refused: bool = False  # set by the admin endpoint: heartbeats answer 503, as in an outage of them

    def register(self, address: str, nonce: int) -> auth.ApiCredentials:
        creds = auth.derive_credentials(self.secret, address, nonce)
        self.credentials[creds.api_key] = creds
        # Like the real venue, a new account starts with nothing: no pUSD and no approvals (unless told otherwise).
        if self.fund_new_accounts and address.lower() not in self.funded:
            self.fund(address)
        return creds

    def fund(self, address: str) -> None:
        """Credit ``starting_collateral`` once and approve every exchange without limit: a ready test wallet."""
        self.funded.add(address.lower())
        self.engine.fund(address, collateral=self.starting_collateral)
        self.engine.approve(address, collateral=UNLIMITED, conditional=True)


MAX_BATCH = 15  # orders in one POST /orders


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class Refusal(Exception):
    """A refusal whose body or headers are more than ``{"error": ...}``: a JSON object, or text sent as text/plain."""

    def __init__(self, status: int, body: dict | str, headers: dict[str, str] | None = None) -> None:
        super().__init__(body)
        self.status, self.body, self.headers = status, body, headers or {}

    def response(self) -> Response:
        if isinstance(self.body, str):
            return PlainTextResponse(self.body, status_code=self.status, headers=self.headers)
        return JSONResponse(self.body, status_code=self.status, headers=self.headers)


# What each rate-limited CLOB request draws on: (method, path) -> bucket; the rest draw on "general" per IP.
_BUCKETS = {("POST", "/order"): "orders", ("POST", "/orders"): "orders", ("DELETE", "/order"): "cancels",
            ("DELETE", "/orders"): "cancels", ("DELETE", "/cancel-all"): "cancels",
            ("DELETE", "/cancel-market-orders"): "cancels"}


def _cost(raw: bytes, path: str) -> int:
    """Tokens a request costs: a batch one per item (the docs' rule), anything else one."""
    if path != "/orders":
        return 1
    try:
        items = json.loads(raw) if raw else []
    except json.JSONDecodeError:
        return 1
    return max(1, len(items)) if isinstance(items, list) else 1


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


def _cursor(offset: int) -> str:
    return base64.b64encode(str(offset).encode()).decode()


def _page(items: list, cursor: str | None, size: int) -> tuple[list, str]:
    try:
        offset = int(base64.b64decode(cursor or "MA==").decode())
    except (ValueError, UnicodeDecodeError):
        raise VenueError("invalid next_cursor") from None
    if offset < 0:
        return [], END_CURSOR
    chunk = items[offset: offset + size]
    return chunk, _cursor(offset + size) if offset + size < len(items) else END_CURSOR


def book_json(engine: Engine, token_id: str) -> dict:
    market = engine.market_of(token_id)
    bids, asks = engine.book_levels(token_id)
    last = engine.last_trade.get(token_id)
    book = {
        "market": market.condition_id,
        "asset_id": token_id,
        "timestamp": str(engine.clock()),
        "hash": "",
        # Best level last on both sides: the client's market-price walk reads from the end.
        "bids": [{"price": fmt(p), "size": fmt(s)} for p, s in reversed(bids)],
        "asks": [{"price": fmt(p), "size": fmt(s)} for p, s in reversed(asks)],
        "min_order_size": fmt(market.min_size),
        "tick_size": fmt(market.tick),
        "neg_risk": market.neg_risk,
        "last_trade_price": fmt(last[0]) if last else "",
    }
    book["hash"] = hashlib.sha1(json.dumps(book, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
    return book


def order_json(order: Order) -> dict:
    return {
        "id": order.id, "status": order.status, "owner": order.owner, "maker_address": order.address,
        "market": order.market.condition_id, "asset_id": order.token_id, "side": order.side,
        "original_size": fmt(order.size), "size_matched": fmt(order.matched), "price": fmt(order.price),
        "outcome": order.market.outcome_of(order.token_id), "expiration": str(order.expiration),
        "order_type": order.order_type, "associate_trades": list(order.trades), "created_at": order.created_ms // 1000,
    }


def trade_json(trade: Trade, owner: str) -> dict:
    taker, maker = trade.taker, trade.maker.order
    as_taker = taker.owner == owner
    return {
        "id": trade.id, "taker_order_id": taker.id, "market": trade.market.condition_id,
        "asset_id": taker.token_id if as_taker else maker.token_id,
        "side": taker.side if as_taker else maker.side,
        "size": fmt(trade.size), "price": fmt(trade.price if as_taker else trade.maker.price),
        "fee_rate_bps": str(int(trade.market.fee_rate * 10_000)), "status": trade.status,
        "match_time": str(trade.match_ms // 1000), "last_update": str(trade.last_update_ms // 1000),
        "outcome": trade.market.outcome_of(taker.token_id if as_taker else maker.token_id),
        "bucket_index": 0, "owner": owner, "maker_address": taker.address if as_taker else maker.address,
        "transaction_hash": trade.transaction_hash, "trader_side": "TAKER" if as_taker else "MAKER",
        "maker_orders": [{
            "order_id": maker.id, "owner": maker.owner, "maker_address": maker.address,
            "matched_amount": fmt(trade.maker.size), "price": fmt(trade.maker.price),
            "fee_rate_bps": "0", "asset_id": maker.token_id, "outcome": trade.market.outcome_of(maker.token_id),
            "side": maker.side}],
    }


COLLATERAL_ADDRESS = "0xC011a7E12a19f7B1f670d46F03B03f3342E82DFB"  # pUSD on Polygon, as rebates name it


def rebates_json(engine: Engine, day: str, maker: str) -> list[dict] | None:
    """``GET /rebates/current``: one row per market the maker earned rebates in on ``day``; null if none (as live)."""
    rows = [{"date": f"{day}T00:00:00Z", "condition_id": market, "asset_address": COLLATERAL_ADDRESS,
             "maker_address": maker, "rebated_fees_usdc": f"{amount:.6f}"}
            for market, amount in engine.rebated(day, maker)]
    return rows or None


# /prices-history's intervals, in seconds back from now ("1m" is a month, as on the real venue); max is all.
INTERVALS = {"1h": 3_600, "6h": 21_600, "1d": 86_400, "1w": 604_800, "1m": 2_592_000}


def price_history(engine: Engine, token_id: str, start_s: int, end_s: int, fidelity_min: int) -> list[dict]:
    """``GET /prices-history``: the token's traded price from the venue's own trade log, one point per
    ``fidelity_min``-minute bucket (its last trade), stamped with the bucket's start in seconds."""
    width = max(1, fidelity_min) * 60
    buckets: dict[int, Decimal] = {}
    for trade in engine.trade_log:
        t = trade.match_ms // 1000
        if not start_s <= t <= end_s:
            continue
        if trade.taker.token_id == token_id:
            buckets[t - t % width] = trade.price
        elif trade.maker.order.token_id == token_id:
            buckets[t - t % width] = trade.maker.price
    return [{"t": t, "p": float(p)} for t, p in sorted(buckets.items())]


def empty_page(size: int) -> dict:
    """A CLOB page with nothing on it, the last one: for data the venue does not keep (rewards, V1 orders)."""
    return {"limit": size, "count": 0, "next_cursor": END_CURSOR, "data": []}


def _amount(raw: int) -> Decimal:
    return Decimal(raw) / Decimal(10**6)


def clob_app(state: VenueState, on_change: Callable[[list[str]], None] | None = None) -> Starlette:
    """The CLOB REST API. ``on_change`` hears which tokens' books changed (for the market channel)."""
    engine = state.engine
    changed = on_change or (lambda tokens: None)

    async def body_json(request: Request):
        raw = await request.body()
        try:
            return raw, (json.loads(raw) if raw else None)
        except json.JSONDecodeError:
            raise VenueError("invalid JSON body") from None

    def l2(request: Request, raw: bytes) -> auth.ApiCredentials:
        return auth.check_l2(request.headers, request.method, request.url.path, raw, state.credentials.get)

    def token_param(request: Request) -> str:
        token = request.query_params.get("token_id")
        if not token:
            raise VenueError("token_id is required")
        engine.market_of(token)
        return token

    def limited(request: Request, raw: bytes) -> tuple[operations.Charge, str, str]:
        bucket = _BUCKETS.get((request.method, request.url.path), "general")
        signer = request.headers.get("POLY_ADDRESS")
        who = signer.lower() if bucket != "general" and signer else (request.client.host if request.client else "")
        return state.limiter.charge(bucket, who, _cost(raw, request.url.path), engine.clock()), bucket, who

    def note_received(request: Request, raw: bytes, rate_limited: bool) -> None:
        if request.method != "POST" or request.url.path not in ("/order", "/orders"):
            return
        try:
            given = json.loads(raw)
        except ValueError:
            return
        phase = state.restart.phase(engine.clock())
        for payload in given if isinstance(given, list) else [given]:
            try:
                signed = auth.SignedOrder.from_json(payload.get("order") or {})
                market = engine.market_of(signed.tokenId)
            except (AttributeError, TypeError, ValueError, VenueError):  # not an order: nothing to note
                continue
            state.received.append({"id": auth.order_hash(signed, state.chain_id, market.neg_risk,
                                                         market.exchange_version),
                                   "phase": phase, "post_only": payload.get("postOnly") is True,
                                   "rate_limited": rate_limited})

    def handler(fn):
        async def wrapped(request: Request) -> Response:
            charge, _, _ = limited(request, await request.body())
            note_received(request, await request.body(), not charge.allowed)
            try:
                if not charge.allowed:
                    raise Refusal(429, {"error": operations.RATE_LIMITED},
                                  {"Retry-After": str(charge.retry_after_s)})
                response = await fn(request)
            except auth.AuthError as exc:
                response = _error(exc.message, exc.status)
            except VenueError as exc:
                response = _error(exc.message, exc.status)
            except Refusal as exc:
                response = exc.response()
            # Every answer says where the caller stands (py-sdk rate_limit.py reads these).
            response.headers["Poly-RateLimit-Remaining"] = _number(charge.remaining)
            response.headers["Poly-RateLimit-Reset"] = _number(round(charge.reset_s, 3))
            response.headers["Poly-RateLimit-Tier"] = state.limiter.limits.tier
            return response
        return wrapped

    def restarting(placing: list[dict] | None = None) -> None:
        """Refuse what a restart forbids now: everything while the engine is down (425), orders that are not
        post-only in the window after (503, code post_only_mode); ``placing`` None is a cancel."""
        now = engine.clock()
        phase = state.restart.phase(now)
        seconds_left = state.restart.seconds_left(now)
        retry = {"Retry-After": str(seconds_left)}
        if phase == "down":
            raise Refusal(425, operations.RESTARTING, retry)
        if phase == "post_only" and placing is not None and not all(p.get("postOnly") is True for p in placing):
            raise Refusal(503, {"error": operations.POST_ONLY, "code": operations.POST_ONLY_CODE,
                                "retry_after_seconds": seconds_left}, retry)

    # ------------------------------------------------------------ public

    async def ok(request):
        return PlainTextResponse("OK")

    async def server_time(request):
        return JSONResponse((engine.clock() + state.clock_offset_ms) // 1000)

    async def version(request):
        return JSONResponse({"version": 2})

    async def book(request):
        return JSONResponse(book_json(engine, token_param(request)))

    async def books(request):
        _, items = await body_json(request)
        return JSONResponse([book_json(engine, item["token_id"]) for item in items or []])

    def _mid(token: str) -> Decimal | None:
        bid, ask = engine.best(token)
        return (bid + ask) / 2 if bid is not None and ask is not None else None

    async def midpoint(request):
        mid = _mid(token_param(request))
        text = fmt(mid) if mid is not None else "0"
        return JSONResponse({"mid": text, "mid_price": text})

    async def midpoints(request):
        _, items = await body_json(request)
        return JSONResponse({i["token_id"]: fmt(m) if (m := _mid(i["token_id"])) is not None else "0"
                             for i in items or []})

    def _price(token: str, side: str) -> str:
        bid, ask = engine.best(token)
        # The price a BUY pays is the best ask; a SELL gets the best bid.
        best = ask if side.upper() == "BUY" else bid
        return fmt(best) if best is not None else "0"

    async def price(request):
        return JSONResponse({"price": _price(token_param(request), request.query_params.get("side", "BUY"))})

    async def prices(request):
        _, items = await body_json(request)
        out: dict = {}
        for item in items or []:
            out.setdefault(item["token_id"], {})[item["side"]] = _price(item["token_id"], item["side"])
        return JSONResponse(out)

    def _spread(token: str) -> str:
        bid, ask = engine.best(token)
        return fmt(ask - bid) if bid is not None and ask is not None else "0"

    async def spread(request):
        return JSONResponse({"spread": _spread(token_param(request))})

    async def spreads(request):
        _, items = await body_json(request)
        return JSONResponse({i["token_id"]: _spread(i["token_id"]) for i in items or []})

    def _last(token: str) -> dict:
        last = engine.last_trade.get(token)
        return {"price": fmt(last[0]) if last else "0", "side": last[1] if last else ""}

    async def last_trade_price(request):
        return JSONResponse(_last(token_param(request)))

    async def last_trades_prices(request):
        _, items = await body_json(request)
        return JSONResponse([{"token_id": i["token_id"], **_last(i["token_id"])} for i in items or []])

    async def tick_size(request):
        return JSONResponse({"minimum_tick_size": float(engine.market_of(token_param(request)).tick)})

    async def neg_risk(request):
        return JSONResponse({"neg_risk": engine.market_of(token_param(request)).neg_risk})

    async def fee_rate(request):
        # The taker rate in basis points, as /markets' taker_base_fee; only version-1 orders carry it.
        return JSONResponse({"base_fee": int(engine.market_of(token_param(request)).fee_rate * 10_000)})

    async def rebates(request):
        day, maker = request.query_params.get("date", ""), request.query_params.get("maker_address", "")
        if not re.fullmatch(r"0x[0-9a-fA-F]{40}", maker):
            raise VenueError("Invalid maker_address")
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day[:10]):
            raise VenueError("Invalid date")
        return JSONResponse(rebates_json(engine, day[:10], maker))

    async def market_by_token(request):
        return JSONResponse({"condition_id": engine.market_of(request.path_params["token_id"]).condition_id})

    def _market(condition_id: str):
        market = engine.markets.get(condition_id)
        if market is None:
            raise VenueError("market not found", 404)
        return market

    async def clob_market_compact(request):
        return JSONResponse(clob_market_info(_market(request.path_params["condition_id"])))

    async def one_market(request):
        return JSONResponse(clob_market(engine, _market(request.path_params["condition_id"])))

    async def markets(request):
        items = [clob_market(engine, m) for m in engine.markets.values()]
        chunk, nxt = _page(items, request.query_params.get("next_cursor"), state.page_size)
        return JSONResponse({"limit": state.page_size, "count": len(chunk), "next_cursor": nxt, "data": chunk})

    def market_page(request, render, only_sampling: bool) -> JSONResponse:
        found = [m for m in engine.markets.values()
                 if not only_sampling or (m.active and m.accepting_orders and not m.closed)]
        chunk, nxt = _page([render(m) for m in found], request.query_params.get("next_cursor"), state.page_size)
        return JSONResponse({"limit": state.page_size, "count": len(chunk), "next_cursor": nxt, "data": chunk})

    # "Sampling" markets are the ones whose books are sampled for liquidity rewards: here, every market open
    # for orders (the venue runs no reward programs, so no market is singled out).
    async def sampling_markets(request):
        return market_page(request, partial(clob_market, engine), True)

    async def simplified_markets(request):
        return market_page(request, partial(simplified_market, engine), False)

    async def sampling_simplified_markets(request):
        return market_page(request, partial(simplified_market, engine), True)

    async def prices_history(request):
        q = request.query_params
        token = q.get("market", "")
        if not token:
            raise VenueError("market is required")
        engine.market_of(token)
        now_s = engine.clock() // 1000
        try:
            fidelity = int(q.get("fidelity", "1"))
            if q.get("interval"):
                interval = q["interval"]
                if interval not in INTERVALS and interval not in ("max", "all"):
                    raise VenueError(f"invalid interval {interval}: one of {', '.join(INTERVALS)}, max")
                start, end = now_s - INTERVALS.get(interval, now_s), now_s
            elif q.get("startTs") and q.get("endTs"):
                start, end = int(q["startTs"]), int(q["endTs"])
            else:
                raise VenueError("either interval or both startTs and endTs are required")
        except ValueError:
            raise VenueError("startTs, endTs and fidelity must be integers") from None
        return JSONResponse({"history": price_history(engine, token, start, end, fidelity)})

    # Liquidity rewards: the venue runs no reward programs, so every answer is empty, in the paged shape.
    async def rewards_markets(request):
        return JSONResponse(empty_page(state.page_size))

    async def rewards_user(request):
        l2(request, b"")
        return JSONResponse(empty_page(state.page_size))

    async def rewards_user_total(request):
        l2(request, b"")
        return JSONResponse([])

    async def rewards_user_percentages(request):
        l2(request, b"")
        return JSONResponse({})

    # ------------------------------------------------------------ auth

    def creds_json(creds: auth.ApiCredentials) -> JSONResponse:
        return JSONResponse({"apiKey": creds.api_key, "secret": creds.secret, "passphrase": creds.passphrase})

    async def create_api_key(request):
        address, nonce = auth.check_l1(request.headers, state.chain_id)
        if (address.lower(), nonce) in state.created:  # the real venue's answer; create_or_derive then derives
            return _error("Could not create api key")
        state.created.add((address.lower(), nonce))
        return creds_json(state.register(address, nonce))

    async def derive_api_key(request):
        address, nonce = auth.check_l1(request.headers, state.chain_id)
        if (address.lower(), nonce) not in state.created:
            return _error("Could not derive api key!")
        return creds_json(state.register(address, nonce))

    async def closed_only(request):
        creds = l2(request, b"")
        return JSONResponse({"closed_only": creds.address.lower() in state.closed_only})

    async def delete_api_key(request):
        # Revokes the key the request is signed with; its (address, nonce) can then be given a key again.
        creds = l2(request, b"")
        state.credentials.pop(creds.api_key, None)
        state.heartbeat_ids.pop(creds.api_key, None)
        state.created.discard((creds.address.lower(), creds.nonce))
        return JSONResponse("OK")  # the unified SDK's delete_api_key accepts exactly this

    async def api_keys(request):
        creds = l2(request, b"")
        keys = [c.api_key for c in state.credentials.values() if c.address.lower() == creds.address.lower()]
        return JSONResponse({"apiKeys": keys})

    # ------------------------------------------------------------ orders

    def authorise(creds: auth.ApiCredentials, signed: auth.SignedOrder, market: Market) -> None:
        """Refuse an order its API key's holder may not make: the exchange's signature rules for each wallet type
        (WALLETS.md §4), with the API key's address as the EOA that signed, under the domain of the exchange that
        settles the market (V3 for protocol-v2 positions, else V2 or neg-risk V2)."""
        kind, holder = signed.signatureType, creds.address
        neg_risk, version = market.neg_risk, market.exchange_version
        other = 2 if version == 3 else 3  # the exchange a client that guessed the version wrong signed for
        if kind == wallets.POLY_1271:
            # Maker and signer are both the deposit wallet. Its owner signs, or a session signer the wallet has
            # authorised, inside its envelope; either way the one who signed holds the API key.
            wallet, now_s = signed.maker, engine.clock() / 1000
            if signed.signer != wallet:
                raise VenueError(INVALID_SIGNATURE)
            try:
                session = auth.session_signature(signed.signature)
            except ValueError:
                raise VenueError(INVALID_SIGNATURE) from None
            if session is None:
                if not wallets.is_wallet_of(holder, wallet, kind, state.chain_id):
                    # A session signer must sign inside its envelope: bare, the wallet reads it as its owner's.
                    authorised = state.session_keys.allows(wallet, holder, wallets.CLOB_SCOPE, now_s)
                    raise VenueError(INVALID_SIGNATURE if authorised else _NOT_THE_KEYS_SIGNER)
                inner = signed.signature
            elif session.signer != holder or not state.session_keys.allows(wallet, holder, wallets.CLOB_SCOPE, now_s):
                raise VenueError(_NOT_THE_KEYS_SIGNER)
            else:
                inner = session.inner

            def recovered(v: int) -> str:
                try:
                    return auth.recover_deposit_wallet_owner(signed, state.chain_id, neg_risk, v, signature=inner)
                except ValueError:
                    return ""
            if recovered(version) != holder:
                raise VenueError(ORDER_VERSION_MISMATCH if recovered(other) == holder else INVALID_SIGNATURE)
            if session is None:
                state.deposit_wallets[holder.lower()] = wallet
        else:
            if signed.signer != holder:
                raise VenueError(_NOT_THE_KEYS_SIGNER)

            def recovered(v: int) -> str:
                try:
                    return auth.recover_order_signer(signed, state.chain_id, neg_risk, v)
                except ValueError:
                    return ""
            signer = recovered(version)
            if signer != signed.signer and recovered(other) == signed.signer:
                raise VenueError(ORDER_VERSION_MISMATCH)
            if signer != signed.signer or not wallets.is_wallet_of(signer, signed.maker, kind, state.chain_id):
                raise VenueError(INVALID_SIGNATURE)
            if kind == wallets.EOA and state.deposit_wallet_flow and holder.lower() not in state.grandfathered:
                raise VenueError(_USE_DEPOSIT_WALLET)

    def funder(owner: str, kind: int) -> str:
        """The wallet of ``kind`` that the owner trades through: for a deposit wallet the one its orders used, else
        the one it signs for as a session signer, else the one that holds anything (an existing owner's UUPS
        wallet), else the one a new owner gets (beacon)."""
        if kind == wallets.EOA:
            return owner
        if kind == wallets.POLY_PROXY:
            return wallets.proxy_wallet(owner, state.chain_id)
        if kind == wallets.POLY_GNOSIS_SAFE:
            return wallets.safe_wallet(owner, state.chain_id)
        if kind == wallets.POLY_1271:
            if owner.lower() in state.deposit_wallets:
                return state.deposit_wallets[owner.lower()]
            if session_wallet := state.session_keys.wallet_of(owner, wallets.CLOB_SCOPE, engine.clock() / 1000):
                return session_wallet
            candidates = wallets.deposit_wallets(owner, state.chain_id)
            return next((w for w in candidates if w.lower() in engine.accounts), candidates[0])
        raise VenueError("invalid signature_type")

    def _place(creds: auth.ApiCredentials, payload: dict) -> dict:
        try:
            signed = auth.SignedOrder.from_json(payload.get("order") or {})
        except ValueError as exc:
            raise VenueError(f"invalid order payload: {exc}") from None
        if payload.get("owner") != creds.api_key:
            raise VenueError("the order owner does not match the API key", 400)
        market = engine.market_of(signed.tokenId)
        order_id = auth.order_hash(signed, state.chain_id, market.neg_risk, market.exchange_version)
        authorise(creds, signed, market)
        if signed.side == "BUY" and creds.address.lower() in state.closed_only:
            # Closing positions is selling what is held; a BUY opens (or adds to) one.
            raise VenueError(CLOSED_ONLY.format(address=creds.address))
        order_type = payload.get("orderType", "GTC")
        if order_type not in ("GTC", "GTD", "FOK", "FAK"):
            raise VenueError(f"invalid order type: {order_type}")
        if signed.makerAmount <= 0 or signed.takerAmount <= 0:
            raise VenueError(f"order {order_id} is invalid. Amounts must be positive")
        maker, taker = _amount(signed.makerAmount), _amount(signed.takerAmount)
        if signed.side == "BUY":
            size, price = taker, maker / taker
        else:
            size, price = maker, taker / maker
        if order_type in ("FOK", "FAK"):
            # Market orders carry a worst price that the amounts express only approximately.
            price = price.quantize(market.tick)
        placement = engine.place(order_id=order_id, owner=creds.api_key, address=signed.maker,
                                 token_id=signed.tokenId, side=signed.side, price=price, size=size,
                                 order_type=order_type, expiration=signed.expiration,
                                 post_only=bool(payload.get("postOnly")))
        changed([signed.tokenId])
        return {"success": True, "errorMsg": "", "orderID": order_id, "status": placement.status,
                "makingAmount": fmt(placement.making), "takingAmount": fmt(placement.taking),
                "transactionsHashes": [t.transaction_hash for t in placement.trades],
                "tradeIDs": [t.id for t in placement.trades]}

    def not_placed(why: str) -> dict:
        return {"errorMsg": why, "orderID": "", "status": "", "makingAmount": "", "takingAmount": "",
                "transactionsHashes": [], "tradeIDs": []}

    async def post_order(request):
        raw, payload = await body_json(request)
        creds = l2(request, raw)
        restarting([payload if isinstance(payload, dict) else {}])
        if state.order_delay_s:
            await asyncio.sleep(state.order_delay_s)
        return JSONResponse(_place(creds, payload or {}))

    async def post_orders(request):
        raw, payloads = await body_json(request)
        creds = l2(request, raw)
        if not isinstance(payloads, list):
            raise VenueError("Invalid order payload")
        if len(payloads) > MAX_BATCH:
            raise VenueError(f"Too many orders in payload: {len(payloads)}, max allowed: {MAX_BATCH}")
        restarting([])  # 425 while the engine is down; in the post-only window each order is answered on its own
        post_only_window = state.restart.phase(engine.clock()) == "post_only"
        if state.order_delay_s:
            await asyncio.sleep(state.order_delay_s)
        out = []
        for payload in payloads:
            if post_only_window and not (isinstance(payload, dict) and payload.get("postOnly") is True):
                # The docs' per-order answer in the post-only window: "success" true, yet nothing placed.
                out.append({"success": True, **not_placed(operations.POST_ONLY)})
                continue
            try:
                out.append(_place(creds, payload))
            except VenueError as exc:
                out.append({"success": False, **not_placed(exc.message)})
        return JSONResponse(out)

    def _cancel(creds: auth.ApiCredentials, ids: list[str]) -> JSONResponse:
        restarting()
        tokens = [engine.orders[i].token_id for i in ids if i in engine.orders]
        canceled, not_canceled = engine.cancel(creds.api_key, ids)
        changed(tokens)
        return JSONResponse({"canceled": canceled, "not_canceled": not_canceled})

    async def cancel_order(request):
        raw, payload = await body_json(request)
        creds = l2(request, raw)
        return _cancel(creds, [(payload or {}).get("orderID", "")])

    async def cancel_orders(request):
        raw, payload = await body_json(request)
        creds = l2(request, raw)
        return _cancel(creds, list(payload or [])[:1000])

    async def cancel_all(request):
        raw, _ = await body_json(request)
        creds = l2(request, raw)
        answer = _cancel(creds, [o.id for o in engine.open_orders(creds.api_key)])
        charge_canceled(creds, answer)
        return answer

    async def cancel_market_orders(request):
        raw, payload = await body_json(request)
        creds = l2(request, raw)
        payload = payload or {}
        ids = [o.id for o in engine.open_orders(creds.api_key, payload.get("market", ""), payload.get("asset_id", ""))]
        answer = _cancel(creds, ids)
        charge_canceled(creds, answer)
        return answer

    def charge_canceled(creds: auth.ApiCredentials, answer: JSONResponse) -> None:
        # The docs: cancel-all and cancel-market-orders cost one token, then one more per order canceled.
        state.limiter.debit("cancels", creds.address.lower(), len(json.loads(answer.body)["canceled"]))

    async def get_order(request):
        if state.read_delay_s:
            await asyncio.sleep(state.read_delay_s)
        creds = l2(request, b"")
        order = engine.orders.get(request.path_params["order_id"])
        if order is None or order.owner != creds.api_key:
            return JSONResponse(None)
        return JSONResponse(order_json(order))

    async def open_orders(request):
        if state.read_delay_s:
            await asyncio.sleep(state.read_delay_s)
        creds = l2(request, b"")
        q = request.query_params
        items = [order_json(o) for o in engine.open_orders(creds.api_key, q.get("market", ""),
                                                             q.get("asset_id", ""), q.get("id", ""))]
        chunk, nxt = _page(items, q.get("next_cursor"), state.page_size)
        return JSONResponse({"data": chunk, "next_cursor": nxt, "limit": state.page_size, "count": len(chunk)})

    async def trades(request):
        if state.read_delay_s:
            await asyncio.sleep(state.read_delay_s)
        creds = l2(request, b"")
        q = request.query_params
        mine = [t for t in engine.trade_log
                if creds.api_key in (t.taker.owner, t.maker.order.owner)
                and (not q.get("id") or t.id == q["id"])
                and (not q.get("market") or t.market.condition_id == q["market"])
                and (not q.get("asset_id") or q["asset_id"] in (t.taker.token_id, t.maker.order.token_id))]
        items = [trade_json(t, creds.api_key) for t in mine]
        chunk, nxt = _page(items, q.get("next_cursor"), state.page_size)
        return JSONResponse({"data": chunk, "next_cursor": nxt, "limit": state.page_size, "count": len(chunk)})

    async def pre_migration_orders(request):
        l2(request, b"")
        return JSONResponse(empty_page(state.page_size))  # the venue was born on V2: no V1 orders to migrate

    # Scoring is for liquidity rewards, which the venue does not run: no order scores. Another owner's order,
    # or one that does not exist, answers false as well.
    async def order_scoring(request):
        l2(request, b"")
        return JSONResponse({"scored": False})

    async def orders_scoring(request):
        raw, ids = await body_json(request)
        l2(request, raw)
        if not isinstance(ids, list):
            raise VenueError("the body must be a list of order ids")
        return JSONResponse({str(i): False for i in ids})

    # The venue sends no notifications (fills and cancels go out on the user channel): the list is empty.
    async def notifications(request):
        l2(request, b"")
        return JSONResponse([])

    async def drop_notifications(request):
        """Mark notifications read: ``ids`` is required, comma-separated notification ids (integers); the answer
        is the JSON string "OK", a bad list 400 "Invalid ids" (the CLOB OpenAPI, DELETE /notifications)."""
        l2(request, b"")
        ids = request.query_params.get("ids", "").split(",")
        if not all(i.isascii() and i.isdigit() for i in ids):  # "".split(",") is [""]: missing ids fail too
            raise VenueError("Invalid ids")
        return JSONResponse("OK")

    async def session_signers(request):
        """``GET /v1/user/session-signers``: the signers the caller's deposit wallet has authorised and not yet seen
        expire, as polymarket-client reads them (``_internal/actions/session_keys.py`` ``_FetchSessionKeysResponse``:
        ``{"wallet", "signers": [{"address", "scopes", "valid_until"}]}``, unix seconds)."""
        creds = l2(request, b"")
        wallet = funder(creds.address, wallets.POLY_1271)
        keys = state.session_keys.active(wallet, engine.clock() / 1000)
        return JSONResponse({"wallet": wallet, "signers": [
            {"address": k.address, "scopes": list(k.scopes), "valid_until": k.valid_until_s} for k in keys]})

    async def rate_limit_tier(request):
        """``GET /v1/user/rate-limit-tier``: the trading tier of the API key's signer, from the venue's configured
        limits. No client calls it; the docs page (api-reference/account/get-rate-limit-tier) says it returns the
        tier, and its response schema was not readable: ``tier`` is the tier's name, the buckets beside it are
        this venue's own (rate per second and burst, as operations.RateLimits holds them)."""
        l2(request, b"")
        limits = state.limiter.limits
        return JSONResponse({"tier": limits.tier,
                             "orders": {"rate": limits.orders.rate, "burst": limits.orders.burst},
                             "cancels": {"rate": limits.cancels.rate, "burst": limits.cancels.burst},
                             "negative_balance": limits.negative_balance})

    async def heartbeat(request):
        raw, payload = await body_json(request)
        creds = l2(request, raw)
        if state.heartbeats_refused:  # the deadline is not refreshed: the owner's orders go when it passes
            raise Refusal(503, {"error": "heartbeats are unavailable"})
        given = (payload or {}).get("heartbeat_id", "") if isinstance(payload, dict) else ""
        expected = state.heartbeat_ids.get(creds.api_key)
        if creds.api_key not in engine.heartbeats:
            expected = None  # never started, or stopped long enough that its orders were canceled: start afresh
        if expected is not None and given != expected:
            # py-sdk models/clob/order_heartbeats.py OrderHeartbeatMismatchResponse; the deadline is not refreshed.
            raise Refusal(400, {"error_msg": "Invalid Heartbeat ID", "heartbeat_id": expected})
        engine.heartbeat(creds.api_key)
        new_id = hashlib.sha256(f"{creds.api_key}:{engine.clock()}:{given}".encode()).hexdigest()[:32]
        state.heartbeat_ids[creds.api_key] = new_id
        return JSONResponse({"heartbeat_id": new_id})

    async def balance_allowance(request):
        """The funder wallet's balance of one asset and what each exchange may move of it, as 6-decimal integer
        strings. On the real venue ``/update`` first re-reads the chain; here the state is always current."""
        creds = l2(request, b"")
        q = request.query_params
        try:
            kind = int(q.get("signature_type", "0"))
            wallet = funder(creds.address, kind)
        except ValueError:  # not a number, or a wallet this chain has no factory for
            raise VenueError("invalid signature_type") from None
        account = engine.account(wallet)
        asset_type = q.get("asset_type", "COLLATERAL").upper()
        if asset_type == "COLLATERAL":
            return JSONResponse({"balance": units(account.collateral),
                                 "allowances": {x: allowance_units(account.allowances.get(x, Decimal(0)))
                                                for x in engine.exchanges}})
        if asset_type in ("CONDITIONAL", "CONDITIONAL-V2"):
            # CONDITIONAL-V2 is how the unified SDK asks about a protocol-v2 position before selling it;
            # py-clob-client-v2 knows only CONDITIONAL and sends that for every token, so both answer alike.
            token = q.get("token_id", "")
            if not token:
                raise VenueError(f"token_id is required for asset_type {asset_type}")
            return JSONResponse({"balance": units(account.shares.get(token, Decimal(0))),
                                 "allowances": {x: str(MAX_UINT) if x in account.approved else "0"
                                                for x in engine.exchanges}})
        raise VenueError(f"invalid asset_type {asset_type}: COLLATERAL, CONDITIONAL or CONDITIONAL-V2")

    routes = [
        Route("/ok", ok), Route("/time", server_time), Route("/version", version),
        Route("/book", book), Route("/books", books, methods=["POST"]),
        Route("/midpoint", midpoint), Route("/midpoints", midpoints, methods=["POST"]),
        Route("/price", price), Route("/prices", prices, methods=["POST"]),
        Route("/spread", spread), Route("/spreads", spreads, methods=["POST"]),
        Route("/last-trade-price", last_trade_price),
        Route("/last-trades-prices", last_trades_prices, methods=["POST"]),
        Route("/tick-size", tick_size), Route("/neg-risk", neg_risk), Route("/fee-rate", fee_rate),
        Route("/rebates/current", rebates),
        Route("/markets-by-token/{token_id}", market_by_token),
        Route("/clob-markets/{condition_id}", clob_market_compact),
        Route("/markets", markets), Route("/markets/{condition_id}", one_market),
        Route("/sampling-markets", sampling_markets), Route("/simplified-markets", simplified_markets),
        Route("/sampling-simplified-markets", sampling_simplified_markets),
        Route("/prices-history", prices_history),
        Route("/rewards/markets/current", rewards_markets), Route("/rewards/markets/{condition_id}", rewards_markets),
        Route("/rewards/user", rewards_user), Route("/rewards/user/markets", rewards_user),
        Route("/rewards/user/total", rewards_user_total),
        Route("/rewards/user/percentages", rewards_user_percentages),
        Route("/auth/api-key", create_api_key, methods=["POST"]),
        Route("/auth/api-key", delete_api_key, methods=["DELETE"]), Route("/auth/derive-api-key", derive_api_key),
        Route("/auth/api-keys", api_keys), Route("/auth/ban-status/closed-only", closed_only),
        Route("/order", post_order, methods=["POST"]), Route("/order", cancel_order, methods=["DELETE"]),
        Route("/orders", post_orders, methods=["POST"]), Route("/orders", cancel_orders, methods=["DELETE"]),
        Route("/cancel-all", cancel_all, methods=["DELETE"]),
        Route("/cancel-market-orders", cancel_market_orders, methods=["DELETE"]),
        Route("/data/order/{order_id}", get_order), Route("/data/orders", open_orders),
        Route("/data/trades", trades), Route("/data/pre-migration-orders", pre_migration_orders),
        Route("/order-scoring", order_scoring), Route("/orders-scoring", orders_scoring, methods=["POST"]),
        Route("/notifications", notifications), Route("/notifications", drop_notifications, methods=["DELETE"]),
        Route("/v1/user/session-signers", session_signers), Route("/v1/user/rate-limit-tier", rate_limit_tier),
        Route("/v1/heartbeats", heartbeat, methods=["POST"]), Route("/heartbeats", heartbeat, methods=["POST"]),
        Route("/balance-allowance", balance_allowance), Route("/balance-allowance/update", balance_allowance),
    ]
    return Starlette(routes=[Route(r.path, handler(r.endpoint), methods=r.methods) for r in routes])


def gamma_app(state: VenueState) -> Starlette:
    """Gamma: market and event metadata, with its quirks (camelCase, lists as JSON strings)."""
    engine = state.engine

    def flag(value: str | None) -> bool | None:
        return None if value is None else value.lower() == "true"

    def paged(request: Request, items: list) -> list:
        q = request.query_params
        try:
            offset, limit = int(q.get("offset", 0)), int(q.get("limit", 100))
        except ValueError:
            raise VenueError("limit and offset must be integers") from None
        return items[offset: offset + limit]

    # The keyset listings, unasked, list protocol-v1 (CTF) markets and events only: "omitting version uses the
    # current server default of CTF markets (v1)" (polymarket-client clients/public.py list_markets, list_events).
    # Whether the offset listings do the same is not on record; here they list every version.
    def versions(request: Request, default: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(request.query_params.getlist("version")) or default

    def matching_markets(request: Request, default_versions: tuple[str, ...] = ("v1", "v2")) -> list:
        q = request.query_params
        found = list(engine.markets.values())
        for key, attr in (("active", "active"), ("closed", "closed")):
            if (want := flag(q.get(key))) is not None:
                found = [m for m in found if getattr(m, attr) == want]
        if q.get("slug"):
            found = [m for m in found if m.slug in q.getlist("slug")]
        if q.get("condition_ids"):
            found = [m for m in found if m.condition_id in q.getlist("condition_ids")]
        if q.get("clob_token_ids"):
            wanted = set(q.getlist("clob_token_ids"))
            found = [m for m in found if wanted & set(m.tokens)]
        protocols = versions(request, default_versions)
        return [m for m in found if m.protocol in protocols]

    def matching_events(request: Request, default_versions: tuple[str, ...] = ("v1", "v2")) -> list:
        q = request.query_params
        found = list(state.events.values())
        if (want := flag(q.get("closed"))) is not None:
            found = [e for e in found if all(m.closed for m in e.markets) == want]
        if q.get("slug"):
            found = [e for e in found if e.slug in q.getlist("slug")]
        protocols = versions(request, default_versions)
        return [e for e in found if e.protocol in protocols]

    def keyset(request: Request, items: list, key: Callable, render: Callable, name: str) -> Response:
        """A keyset page: the items after ``after_cursor`` in order of their numeric id; the last page has no
        ``next_cursor`` (the unified SDK stops when it is missing). The cursor is the last id given, encoded."""
        q = request.query_params
        try:
            limit = int(q.get("limit", 100))
            after = int(base64.b64decode(q["after_cursor"]).decode()) if q.get("after_cursor") else None
        except (ValueError, UnicodeDecodeError):
            return _error("invalid limit or after_cursor")
        if limit < 1:
            return _error("limit must be positive")
        ordered = sorted(items, key=lambda item: int(key(item)))
        rest = [item for item in ordered if after is None or int(key(item)) > after]
        chunk = rest[:limit]
        body: dict = {name: [render(item) for item in chunk]}
        if len(rest) > limit:
            body["next_cursor"] = base64.b64encode(str(key(chunk[-1])).encode()).decode()
        return JSONResponse(body)

    def page_of(request: Request, rendered: list[dict]) -> Response:
        """One offset page of a listing, or the venue's 400 for a bad limit or offset."""
        try:
            return JSONResponse(paged(request, rendered))
        except VenueError as exc:
            return _error(exc.message)

    async def markets(request: Request) -> Response:
        q = request.query_params
        rendered = [gamma_market(engine, m, state.events) for m in matching_markets(request)]
        if order := q.get("order"):
            if rendered and order not in rendered[0]:
                return _error(f"cannot order by {order}")
            rendered.sort(key=lambda r: (r[order] is None, r[order]), reverse=flag(q.get("ascending")) is False)
        return page_of(request, rendered)

    async def markets_keyset(request: Request) -> Response:
        return keyset(request, matching_markets(request, ("v1",)), lambda m: m.market_id,
                      lambda m: gamma_market(engine, m, state.events), "markets")

    async def events(request: Request) -> Response:
        return page_of(request, [gamma_event(engine, e, state.events) for e in matching_events(request)])

    async def events_keyset(request: Request) -> Response:
        return keyset(request, matching_events(request, ("v1",)), lambda e: e.id,
                      lambda e: gamma_event(engine, e, state.events), "events")

    async def one_market(request: Request) -> Response:
        market = next((m for m in engine.markets.values() if m.market_id == request.path_params["id"]), None)
        if market is None:
            return _error("market not found", 404)
        return JSONResponse(gamma_market(engine, market, state.events))

    # The keyset routes come before /markets/{id}, which would otherwise take "keyset" for an id.
    return Starlette(routes=[Route("/markets", markets), Route("/events", events),
                             Route("/markets/keyset", markets_keyset), Route("/events/keyset", events_keyset),
                             Route("/markets/{id}", one_market)])

