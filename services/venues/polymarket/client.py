"""Polymarket through py-clob-client-v2: the only module that imports it. Its exceptions become VenueErrors.

Orders are signed here, not by ``ClobClient.create_order``, for one reason: idempotency. The client draws a
random salt and stamps the current time, so the same order signed twice gets two venue ids. Here the salt
is derived from our client order id and the signed timestamp is the Order's own creation time, so an order
always hashes to the same venue id: it is known (and journaled) before the order is sent, and the venue
itself refuses a second copy as a duplicate. Orders go out in one ``POST /orders`` batch, built with the
client's own payload and L2-header functions (``ClobClient.post_orders`` would block for up to 30 s polling
trades for their transaction hashes, which the executor gets from the user channel instead).

Each order is signed for the configured account (``funder.Wallet``) as the client's own ``OrderBuilder`` would:
maker = the funder, signer = the key's EOA (a proxy, a Safe or the EOA itself: a plain EIP-712 signature) or the
deposit wallet itself (its ERC-7739 ``TypedDataSign`` wrapper, which ``ExchangeOrderBuilderV2`` makes for type 3).
Before the first order the account is checked against the venue: the API key must be the EOA's, and a deposit
wallet must exist (the relayer's ``/deployed``, which also tells which of the owner's two deposit wallets is his).

Blocking calls run on a small thread pool with a timeout each, so the event loop never waits on the venue.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import ROUND_FLOOR, Decimal
from typing import Any, TypeVar

import httpx
import msgspec
from py_clob_client_v2 import ClobClient
from py_clob_client_v2.clob_types import ApiCreds, AssetType, BalanceAllowanceParams, RequestArgs, TradeParams
from py_clob_client_v2.config import get_contract_config
from py_clob_client_v2.constants import BYTES32_ZERO
from py_clob_client_v2.exceptions import PolyApiException, PolyException
from py_clob_client_v2.headers.headers import create_level_2_headers
from py_clob_client_v2.http_helpers import helpers
from py_clob_client_v2.order_builder.builder import OrderBuilder
from py_clob_client_v2.order_utils import ExchangeOrderBuilderV2, OrderDataV2, Side
from py_clob_client_v2.order_utils.model.order_data_v2 import order_to_json_v2

from ...config import AccountConfig, PolymarketConfig
from ...runtime import StartupError
from .. import base
from ..base import (Balance, MarketRules, OnEvents, OrderRequest, Placed, Resolution, VenueError, VenueFill,
                    VenueOrder)
from . import schema, wallets
from .funder import Wallet, foreign_api_key, owner_of, undeployed, wallet_for
from .limits import RateLimiter
from .user import UserFeed, fills_of, order_of

T = TypeVar("T")
UNITS = Decimal(10**6)  # amounts inside a signed order are 6-decimal integers
BATCH = 15  # orders per POST /orders, the venue's limit
CENTS = Decimal("0.01")
SHARES_DP = Decimal("0.0001")
MAX_RETRY_AFTER_S = 3600.0  # a longer Retry-After is not believed
REDERIVE_S = 10.0  # after a 401, credentials are derived again at most this often

# The venue's refusal texts (see POLYMARKET_WIRE.md), by what they mean; first match wins.
_CODES = (("breaks minimum tick size", base.TICK_SIZE), ("lower than the minimum", base.MIN_SIZE),
          ("not enough balance", base.BALANCE), ("fully filled or killed", base.FOK_UNFILLED),
          ("crosses book", base.POST_ONLY_CROSSES), ("duplicated", base.DUPLICATE),
          ("out of range", base.PRICE_RANGE), ("invalid price", base.PRICE_RANGE),
          ("not accepting orders", base.MARKET_CLOSED), ("expiration", base.EXPIRATION),
          ("market not found", base.UNKNOWN_MARKET),
          # A batch's order in the post-only window after a restart: nothing placed.
          ("post-only mode", base.POST_ONLY_WINDOW))


def classify(text: str) -> str:
    lowered = text.lower()
    return next((code for needle, code in _CODES if needle in lowered), base.REJECTED)


def _message(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("error") or error.get("errorMsg") or error)
    return str(error)


def _post_only_mode(error: Any) -> bool:
    return isinstance(error, dict) and error.get("code") == "post_only_mode"


def refusal(status: int | None, error: Any, retry_after_s: float = 0.0) -> VenueError:
    """The venue's answer other than 200 as our own error: refusals keep the venue's text; a restart, its post-only
    window and a rate limit say the venue took nothing and when to ask again; other trouble is ``unknown``."""
    text = _message(error)
    if status == 425:  # a matching-engine restart: orders and cancels are refused until it is over
        return VenueError(base.RESTARTING, f"the matching engine is restarting: {text} (status 425)",
                          retry_after_s=retry_after_s)
    if _post_only_mode(error):  # the window after a restart: only post-only orders (and cancels) are taken
        seconds = error.get("retry_after_seconds")
        given = seconds if isinstance(seconds, (int, float)) and 0 <= seconds <= MAX_RETRY_AFTER_S else 0
        return VenueError(base.POST_ONLY_WINDOW, f"{text} (status {status})", retry_after_s=given or retry_after_s)
    if status is None or status >= 500:
        return VenueError(base.UNAVAILABLE, f"{text} (status {status})", unknown=True)
    if status == 429:
        return VenueError(base.RATE_LIMITED, text, retry_after_s=retry_after_s)
    if status in (401, 403):
        return VenueError(base.AUTH, text)
    if status == 404:
        return VenueError(base.UNKNOWN_MARKET if "market" in text.lower() else base.REJECTED, text)
    return VenueError(classify(text), text)


def venue_error(exc: PolyException) -> VenueError:
    """A client exception as our own error (py-clob-client-v2 keeps no headers, so no Retry-After)."""
    if isinstance(exc, PolyApiException):
        return refusal(exc.status_code, exc.error_msg)
    return VenueError(classify(str(exc.msg)), str(exc.msg))


def retry_after(value: str | None) -> float:
    """A Retry-After header's seconds; 0 when absent or not a number of seconds within reason (an HTTP date is
    not worth trusting over our own clock)."""
    try:
        seconds = float(value or "")
    except ValueError:
        return 0.0
    return seconds if 0 <= seconds <= MAX_RETRY_AFTER_S else 0.0


def salt_of(client_id: str) -> int:
    """The order's salt, from its client id (48 bits: exact in any JSON reader)."""
    return int.from_bytes(hashlib.sha256(f"polybot-order:{client_id}".encode()).digest()[:6], "big")


def amounts(order: OrderRequest) -> tuple[int, int]:
    """(makerAmount, takerAmount) in 6-decimal units.

    A limit order trades ``size`` shares at ``price``. A market order (FOK/FAK) BUY is an amount of collateral
    (at most 2 decimals, the shares it buys at most 4), so its size rounds down to what that allows.
    """
    size, price = order.size, order.price
    if order.order_type in ("FOK", "FAK") and order.side == "BUY":
        maker = (size * price).quantize(CENTS, rounding=ROUND_FLOOR)
        taker = (maker / price).quantize(SHARES_DP, rounding=ROUND_FLOOR)
    elif order.side == "BUY":
        maker, taker = size * price, size
    else:
        maker, taker = size, size * price
    maker_units, taker_units = (int((x * UNITS).to_integral_value(rounding=ROUND_FLOOR)) for x in (maker, taker))
    if maker_units <= 0 or taker_units <= 0:
        raise VenueError(base.MIN_SIZE, f"size {size} at {price} is too small to express as an order")
    return maker_units, taker_units


def balance_of(found: schema.BalanceAllowance) -> Balance:
    """Each exchange the account trades through has its own allowance: what may be spent is the least of them
    (unbounded: an approval "without limit" is the largest uint256)."""
    allowances = [schema.number(v, f"the allowance of {x}") for x, v in found.allowances.items()]
    return Balance(collateral=schema.quantity(schema.number(found.balance, "balance") / UNITS, "balance (USDC)"),
                   allowance=min(allowances) / UNITS if allowances else None)


def rules_of(info: schema.ClobMarketInfo, token_id: str, market: str) -> MarketRules:
    tokens = [t.token_id for t in info.tokens]
    fee = info.fee
    return MarketRules(token_id=token_id, market=market, tick=schema.price(info.min_tick_size, "min_tick_size"),
                       min_size=schema.quantity(info.min_order_size or 5, "min_order_size"), neg_risk=info.neg_risk,
                       fee_rate=schema.price(fee.rate, "fee rate") if fee else base.ZERO,
                       # an absent exponent means the curve as every capture has it, 1
                       fee_exponent=schema.fee_exponent(fee.exponent, "fee exponent") if fee and fee.exponent else base.ONE,
                       complement=next((t for t in tokens if t != token_id), "") if len(tokens) == 2 else "",
                       exchange_version=3 if schema.is_v2_position_id(token_id) else 2)


def resolution_of(found: schema.ClobMarket) -> Resolution:
    """A market's outcome from the CLOB's ``GET /markets/{condition_id}``: resolved once it is closed and one token
    is its ``winner``. Closed with no winner is trading ended, the outcome not known yet (or a 50-50 split, which
    pays what no single winner describes): not resolved."""
    winners = [t for t in found.tokens if t.winner]
    if not found.closed or len(winners) != 1:
        return Resolution(market=found.condition_id)
    return Resolution(market=found.condition_id, winner=winners[0].token_id, outcome=winners[0].outcome)


def call(fn: Callable[..., T], *args: Any) -> T:
    """A client call (or the decoding of its answer), its failures as our own errors."""
    try:
        return fn(*args)
    except PolyException as exc:
        raise venue_error(exc) from None
    except (msgspec.ValidationError, KeyError, TypeError, ValueError) as exc:
        raise VenueError(base.UNAVAILABLE, f"unexpected answer from the venue: {exc}", unknown=True) from None


def market_resolution(client: ClobClient, market: str) -> Resolution:
    """``GET /markets/{condition_id}``, read as the market's resolution."""
    found = call(msgspec.convert, call(client.get_market, market), schema.ClobMarket)
    if found.condition_id.lower() != market.lower():
        raise VenueError(base.REJECTED, f"asked for market {market}, the venue described {found.condition_id}")
    return resolution_of(found)


class MarketReader:
    """The CLOB's public market reads, which need no account: what paper trading asks of the venue it papers."""

    def __init__(self, host: str, chain_id: int) -> None:
        self._client = ClobClient(host.rstrip("/"), chain_id=chain_id)

    def resolution(self, market: str) -> Resolution:
        return market_resolution(self._client, market)


class Clob:
    """The CLOB REST API, blocking, through py-clob-client-v2."""

    def __init__(self, host: str, chain_id: int, private_key: str, creds: dict[str, str] | None = None,
                 account: AccountConfig = AccountConfig(), relayer_url: str = "", timeout_s: float = 10.0) -> None:
        self.host = host.rstrip("/")
        # Orders and cancels go through a client of our own: py-clob-client-v2's drops the answer's headers, and
        # with them the Retry-After of a 425, 503 or 429. The environment's proxy settings apply, as to the client's.
        self._http = httpx.Client(timeout=timeout_s)
        self.chain_id = chain_id
        self.relayer_url = relayer_url.rstrip("/")
        self.wallet = wallet_for(account, owner_of(private_key), chain_id)
        self._client = ClobClient(self.host, chain_id=chain_id, key=private_key,
                                  signature_type=self.wallet.signature_type, funder=self.wallet.funder)
        self.address: str = self._client.get_address()  # the EOA: it holds the API key
        self.given_creds = bool(creds)
        if creds:
            self._client.set_api_creds(ApiCreds(creds["api_key"], creds["api_secret"], creds["api_passphrase"]))
        self.unchecked = ""  # why part of the account could not be checked at start, if it could not
        self._signed: dict[str, dict] = {}  # client id -> signed payload, until it is sent

    @property
    def funder(self) -> str:
        """The address that makes our orders and holds the money."""
        return self._client.builder.funder

    _call = staticmethod(call)

    def connect(self) -> None:
        """API credentials: given ones (which must be the key's: StartupError if not), else created or derived with
        the key (L1); then, for a deposit wallet, which one it is and that it exists."""
        if self._client.creds is None:
            self._client.set_api_creds(self._call(self._client.create_or_derive_api_key))
        elif self.given_creds:
            self._check_api_key()
        if self.wallet.kind == "deposit":
            self._check_deposit_wallet()

    def _check_api_key(self) -> None:
        """The venue answers an API key's L2 headers only from the address that created it (polymarket-client
        checks given credentials the same way: ``GET /auth/api-keys``, a 401 or a list without them is not ours)."""
        try:
            answer = self._client.get_api_keys()
        except PolyApiException as exc:
            if exc.status_code == 401:
                raise foreign_api_key(self.address) from None
            raise venue_error(exc) from None
        except PolyException as exc:
            raise venue_error(exc) from None
        keys = answer.get("apiKeys") if isinstance(answer, dict) else None
        if isinstance(keys, list) and self.api_key not in keys:
            raise foreign_api_key(self.address)

    def _deployed(self, address: str) -> bool | None:
        """The relayer's word on whether a wallet exists; None when it cannot be asked."""
        if not self.relayer_url:
            return None
        try:
            answer = helpers.get(f"{self.relayer_url}/deployed", params={"address": address, "type": "WALLET"})
        except PolyException:
            return None
        deployed = answer.get("deployed") if isinstance(answer, dict) else None
        return deployed if isinstance(deployed, bool) else None

    def _check_deposit_wallet(self) -> None:
        """As polymarket-client resolves an owner's deposit wallet: the legacy one if the relayer has it deployed,
        else the current one; and the wallet must exist before it can sign anything (ERC-1271)."""
        wallet = self.wallet
        if not wallet.configured:
            legacy = wallets.legacy_deposit_wallet(wallet.owner, self.chain_id)
            if legacy != wallet.funder and self._deployed(legacy):
                wallet = self.wallet = Wallet("deposit", wallet.owner, legacy, note="its legacy deposit wallet, "
                                              "which the relayer has deployed")
                self._client.builder = OrderBuilder(self._client.signer, wallet.signature_type, legacy)
        deployed = self._deployed(wallet.funder)
        if deployed is False:
            raise undeployed(wallet)
        self.unchecked = "" if deployed else (f"could not ask the relayer at {self.relayer_url or '(none configured)'} "
                                              "whether the deposit wallet is deployed")

    def rederive(self) -> None:
        """Credentials again from the key (L1), after the venue refused ours (revoked, or lost at the venue)."""
        self._client.set_api_creds(self._call(self._client.create_or_derive_api_key))

    @property
    def api_key(self) -> str:
        return self._client.creds.api_key

    def close(self) -> None:
        self._http.close()

    def ws_auth(self) -> dict[str, str]:
        creds = self._client.creds
        return {"apiKey": creds.api_key, "secret": creds.api_secret, "passphrase": creds.api_passphrase}

    # ------------------------------------------------------------ orders

    def prepare(self, orders: list[OrderRequest]) -> list[Placed]:
        """Sign each order; its venue id, or why it cannot be an order."""
        out = []
        for order in orders:
            try:
                venue_id, payload = self._sign(order)
            except VenueError as exc:
                out.append(Placed(venue_order_id="", code=exc.code, message=exc.message))
                continue
            self._signed[order.client_id] = payload
            out.append(Placed(venue_order_id=venue_id))
        return out

    def _sign(self, order: OrderRequest) -> tuple[str, dict]:
        maker, taker = amounts(order)
        contracts = get_contract_config(self.chain_id)
        salt = str(salt_of(order.client_id))
        if order.rules.exchange_version == 3:
            # A protocol-v2 position: exchange V3 and domain "3" whatever the neg risk, as the official client signs
            # an order given a position_id (py-clob-client-v2 order_builder/builder.py).
            builder = ExchangeOrderBuilderV2(contracts.exchange_v3, self.chain_id, self._client.signer,
                                             generate_salt=lambda: salt, domain_version="3")
        else:
            exchange = contracts.neg_risk_exchange_v2 if order.rules.neg_risk else contracts.exchange_v2
            builder = ExchangeOrderBuilderV2(exchange, self.chain_id, self._client.signer, generate_salt=lambda: salt)
        # Maker, signer and signature type as the client's OrderBuilder.build_order sets them for its
        # signature_type and funder; the builder wraps a type-3 signature in ERC-7739 itself.
        account = self._client.builder
        data = OrderDataV2(maker=account.funder, tokenId=order.token_id, makerAmount=str(maker),
                           takerAmount=str(taker), side=Side.BUY if order.side == "BUY" else Side.SELL,
                           signer=account._v2_order_signer(), signatureType=account.signature_type,
                           timestamp=str(order.created_ms), metadata=BYTES32_ZERO, builder=BYTES32_ZERO,
                           expiration=str(order.expires_s if order.order_type == "GTD" else 0))
        try:
            signed = builder.build_signed_order(data)
        except ValueError as exc:
            raise VenueError(base.REJECTED, f"cannot sign the order: {exc}") from None
        venue_id = builder.build_order_hash(builder.build_order_typed_data(signed))
        return venue_id, order_to_json_v2(signed, self.api_key, order.order_type, order.post_only, False)

    def place(self, orders: list[OrderRequest]) -> list[Placed]:
        """Send prepared orders in batches; one Placed per order, in order."""
        out: list[Placed] = []
        payloads = [self._signed.pop(o.client_id) for o in orders]
        for start in range(0, len(payloads), BATCH):
            answer = self._request("POST", "/orders", payloads[start:start + BATCH])
            responses = self._call(msgspec.convert, answer, list[schema.OrderResponse])
            chunk = orders[start:start + BATCH]
            if len(responses) != len(chunk):
                raise VenueError(base.UNAVAILABLE, f"{len(responses)} answers to {len(chunk)} orders", unknown=True)
            # An answer whose numbers are not numbers leaves what happened unknown: reconciliation finds out.
            out += self._call(lambda: [self._placed(r, o) for r, o in zip(responses, chunk)])
        return out

    def _request(self, method: str, path: str, payload: Any) -> Any:
        """One trading request, signed with the client's L2 headers; the venue's refusals as VenueErrors (a request
        that could not connect was never sent: known, not ``unknown``)."""
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        headers = create_level_2_headers(self._client.signer, self._client.creds,
                                         RequestArgs(method=method, request_path=path, body=payload,
                                                     serialized_body=body))
        try:
            response = self._http.request(method, f"{self.host}{path}", content=body.encode(),
                                          headers={**headers, "Content-Type": "application/json"})
        except httpx.ConnectError as exc:
            raise VenueError(base.UNAVAILABLE, f"cannot connect to {self.host}: {exc}") from None
        except httpx.HTTPError as exc:
            raise VenueError(base.UNAVAILABLE, f"{type(exc).__name__}: {exc}", unknown=True) from None
        try:
            answer = response.json()
        except ValueError:
            answer = response.text
        if response.status_code != 200:
            raise refusal(response.status_code, answer, retry_after(response.headers.get("Retry-After")))
        return answer

    @staticmethod
    def _placed(response: schema.OrderResponse, order: OrderRequest) -> Placed:
        if not response.success or response.error_msg:
            text = response.error_msg or "refused"
            return Placed(venue_order_id=response.order_id, code=classify(text), message=text)
        # Shares matched at once: what a BUY took in, what a SELL gave.
        matched = response.taking_amount if order.side == "BUY" else response.making_amount
        return Placed(venue_order_id=response.order_id, status=response.status or "live",
                      matched=schema.quantity(matched, "the shares matched") if matched else base.ZERO)

    def cancel(self, venue_order_ids: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for start in range(0, len(venue_order_ids), 1000):
            answer = self._request("DELETE", "/orders", venue_order_ids[start:start + 1000])
            if not isinstance(answer, dict):
                raise VenueError(base.UNAVAILABLE, f"unexpected answer to a cancel: {answer!r}", unknown=True)
            out.update({i: "" for i in answer.get("canceled") or []})
            out.update({i: str(why) for i, why in (answer.get("not_canceled") or {}).items()})
        return out

    def open_orders(self) -> list[VenueOrder]:
        items = self._call(self._client.get_open_orders)
        return self._call(lambda: [order_of(o) for o in msgspec.convert(items, list[schema.OpenOrder])])

    def order(self, venue_order_id: str) -> VenueOrder | None:
        try:
            item = self._call(self._client.get_order, venue_order_id)
        except VenueError as exc:
            if exc.code in (base.REJECTED, base.UNKNOWN_MARKET) and "not found" in exc.message.lower():
                return None
            raise
        if not item:
            return None
        return self._call(lambda: order_of(msgspec.convert(item, schema.OpenOrder)))

    def trades(self, token_ids: list[str] | None = None) -> list[VenueFill]:
        items: list = []
        for params in [TradeParams(asset_id=t) for t in token_ids] if token_ids else [None]:
            items += self._call(self._client.get_trades, params)
        return self._call(lambda: [fill for trade in msgspec.convert(items, list[schema.ClobTrade])
                                   for fill in fills_of(trade, self.api_key, self.funder)])

    def balance(self) -> Balance:
        answer = self._call(self._client.get_balance_allowance, BalanceAllowanceParams(asset_type=AssetType.COLLATERAL))
        found = self._call(msgspec.convert, answer, schema.BalanceAllowance)
        return self._call(balance_of, found)

    def heartbeat(self, heartbeat_id: str) -> str:
        """Send one heartbeat with the last id; return the id for the next. A refused id (400 "Invalid Heartbeat ID",
        e.g. after a lost answer) is retried once with the id the venue says it expects."""
        try:
            answer = self._client.post_heartbeat(heartbeat_id)
        except PolyApiException as exc:
            error = exc.error_msg
            mismatch = isinstance(error, dict) and error.get("error_msg") == "Invalid Heartbeat ID"
            if not (exc.status_code == 400 and mismatch and isinstance(error.get("heartbeat_id"), str)):
                raise venue_error(exc) from None
            answer = self._call(self._client.post_heartbeat, error["heartbeat_id"])
        except PolyException as exc:
            raise venue_error(exc) from None
        return str(answer.get("heartbeat_id", "")) if isinstance(answer, dict) else ""

    def resolution(self, market: str) -> Resolution:
        return market_resolution(self._client, market)

    def rules(self, token_id: str, market: str) -> MarketRules:
        if not market:
            raise VenueError(base.UNKNOWN_MARKET, f"token {token_id}: the order names no market")
        info = self._call(msgspec.convert, self._call(self._client.get_clob_market_info, market),
                          schema.ClobMarketInfo)
        tokens = [t.token_id for t in info.tokens]
        if token_id not in tokens:
            raise VenueError(base.UNKNOWN_MARKET, f"token {token_id} is not in market {market}")
        return self._call(rules_of, info, token_id, market)


class PolymarketVenue:
    """The live venue for the executor: the CLOB off the event loop, the user channel, heartbeats."""

    mode = "live"

    def __init__(self, urls: PolymarketConfig, private_key: str, creds: dict[str, str] | None,
                 log: logging.Logger, timeout_s: float = 10.0, workers: int = 4, heartbeat_s: float = 5.0,
                 ping_s: float = 10.0, stale_after_s: float = 30.0, reconnect_initial_s: float = 0.5,
                 reconnect_max_s: float = 30.0, account: AccountConfig = AccountConfig(),
                 rate_tier: str = "standard", max_wait_s: float = 3.0) -> None:
        """StartupError when the key, ``account`` and the credentials cannot trade together; the parts only the
        venue can tell (whose API key, whether a deposit wallet exists) are checked in ``start``."""
        self.clob = Clob(urls.clob_url, urls.chain_id, private_key, creds, account, urls.relayer_url, timeout_s)
        self.user_ws_url = urls.user_ws_url
        self.log = log
        self.timeout_s = timeout_s
        self.heartbeat_s = heartbeat_s
        self.feed_options = dict(ping_s=ping_s, stale_after_s=stale_after_s, reconnect_initial_s=reconnect_initial_s,
                                 reconnect_max_s=reconnect_max_s)
        self.feed: UserFeed | None = None
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="venue")
        self.heartbeats = 0
        self.heartbeat_failures = 0
        self.heartbeat_error = ""  # why the last heartbeat failed; "" once one is answered again
        self.max_wait_s = max_wait_s  # the longest a request waits for the rate limit before it is refused unsent
        self.rederived = -REDERIVE_S  # when credentials were last derived again after a 401 (monotonic seconds)
        self.rederives = 0
        try:
            self.limiter = RateLimiter(rate_tier)
        except ValueError as exc:
            raise StartupError(f"the executor's rate_tier option: {exc}") from None

    @property
    def funder(self) -> str:
        """The wallet whose trades earn the account's maker rebates: the funder, not the EOA that signs."""
        return self.clob.funder

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout_s):  # not wait_for, which can lose a cancellation on 3.11
                return await loop.run_in_executor(self._pool, fn, *args)
        except TimeoutError:
            raise VenueError(base.UNAVAILABLE, f"no answer within {self.timeout_s}s", unknown=True) from None
        except VenueError as exc:
            if exc.code == base.AUTH:
                await self._credentials_refused()
            raise
        except StartupError:
            raise
        except Exception as exc:  # anything else the client raised: whether the request took effect is unknown
            self.log.error("venue call %s failed: %s: %s", getattr(fn, "__name__", fn), type(exc).__name__, exc,
                           exc_info=exc)
            raise VenueError(base.UNAVAILABLE, f"{type(exc).__name__}: {exc}", unknown=True) from None

    async def start(self, on_events: OnEvents, on_connected: Callable[[], None]) -> None:
        delay = self.feed_options["reconnect_initial_s"]
        while True:
            try:
                await self._run(self.clob.connect)  # StartupError when the account is not the key's
                break
            except VenueError as exc:
                self.log.warning("cannot get API credentials from the venue (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.feed_options["reconnect_max_s"])
        self.log.info("venue credentials ready; trading through %s", self.clob.wallet.describe(),
                      extra={"address": self.clob.address, "funder": self.clob.funder})
        if self.clob.unchecked:
            self.log.warning("%s; if it is not, every order will be refused", self.clob.unchecked)
        self.feed = UserFeed(self.user_ws_url, self.clob.ws_auth(), self.clob.funder, self.log, **self.feed_options)
        tasks = [asyncio.create_task(self.feed.run(on_events, on_connected), name="user-channel")]
        if self.heartbeat_s > 0:
            tasks.append(asyncio.create_task(self._heartbeats(), name="venue-heartbeats"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def _heartbeats(self) -> None:
        """Once started, the venue cancels every order of ours if these stop (the executor died or hung); while
        they fail, ``heartbeat_failing`` says why, so no new order goes out that the venue is about to cancel."""
        last_id = ""
        while True:
            try:
                last_id = await self._run(self.clob.heartbeat, last_id)
                self.heartbeats += 1
                if self.heartbeat_error:
                    self.log.info("venue heartbeats answered again")
                self.heartbeat_error = ""
            except VenueError as exc:
                self.heartbeat_failures += 1
                self.heartbeat_error = exc.message
                self.log.warning("venue heartbeat failed: %s", exc)
            await asyncio.sleep(self.heartbeat_s)

    async def _credentials_refused(self) -> None:
        """The venue answered 401: derived credentials are derived again (at most every REDERIVE_S), so the calls
        after this one go through; given ones are the operator's to replace, and the log says so."""
        if self.clob.given_creds:
            self.log.error("the venue refuses POLYBOT_API_KEY (401): it was revoked, or is not this key's; set new "
                           "credentials, or unset POLYBOT_API_KEY, POLYBOT_API_SECRET and POLYBOT_API_PASSPHRASE to "
                           "derive them, and restart the executor")
            return
        now = time.monotonic()
        if now - self.rederived < REDERIVE_S:
            return
        self.rederived = now
        self.log.warning("the venue refuses our API credentials (401); deriving them again from the key")
        try:
            await self._run(self.clob.rederive)
        except VenueError as exc:
            self.log.warning("could not derive API credentials again: %s", exc)
            return
        self.rederives += 1
        if self.feed is not None:
            self.feed.renew(self.clob.ws_auth())

    def heartbeat_failing(self) -> str:
        """Why heartbeats fail now; "" while they are answered (or not started)."""
        return self.heartbeat_error

    def send_delay(self, orders: int) -> float:
        """Seconds until ``orders`` orders may go without passing the venue's rate limit."""
        return self.limiter.delay("orders", orders, time.monotonic())

    async def _paced(self, kind: str, cost: int, fn: Callable[..., T], *args: Any) -> T:
        """A trading request once its class has the tokens; refused unsent if that is more than ``max_wait_s``
        away. A 429 holds the class for its Retry-After."""
        now = time.monotonic()
        wait = self.limiter.delay(kind, cost, now)
        if wait > self.max_wait_s:
            raise VenueError(base.RATE_LIMITED, f"the venue's rate limit for {kind} has no room for {wait:.1f} s "
                                                f"(tier {self.limiter.tier}); not sent")
        self.limiter.take(kind, cost, now)
        if wait > 0:
            await asyncio.sleep(wait)  # pacing to the venue's rate, not waiting for an event
        try:
            return await self._run(fn, *args)
        except VenueError as exc:
            if exc.code == base.RATE_LIMITED:
                self.limiter.hold(kind, exc.retry_after_s or 1.0, time.monotonic())
            raise

    async def prepare(self, orders: list[OrderRequest]) -> list[Placed]:
        return await self._run(self.clob.prepare, orders)

    async def place(self, orders: list[OrderRequest]) -> list[Placed]:
        return await self._paced("orders", len(orders), self.clob.place, orders)

    async def cancel(self, venue_order_ids: list[str]) -> dict[str, str]:
        if not venue_order_ids:
            return {}
        return await self._paced("cancels", len(venue_order_ids), self.clob.cancel, venue_order_ids)

    async def open_orders(self) -> list[VenueOrder]:
        return await self._run(self.clob.open_orders)

    async def order(self, venue_order_id: str) -> VenueOrder | None:
        return await self._run(self.clob.order, venue_order_id)

    async def trades(self, token_ids: list[str] | None = None) -> list[VenueFill]:
        return await self._run(self.clob.trades, token_ids)

    async def rules(self, token_id: str, market: str) -> MarketRules:
        return await self._run(self.clob.rules, token_id, market)

    async def balance(self) -> Balance | None:
        return await self._run(self.clob.balance)

    async def resolution(self, market: str) -> Resolution:
        return await self._run(self.clob.resolution, market)

    def observe(self, msg: Any) -> None:
        pass

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.clob.close()

    def detail(self) -> dict[str, str]:
        feed = self.feed
        return {"wallet": self.clob.wallet.kind, "funder": self.clob.funder,
                "heartbeats": str(self.heartbeats), "heartbeat_failures": str(self.heartbeat_failures),
                "rate_tier": self.limiter.tier, "rate_limit_holds": str(self.limiter.holds),
                "credentials_rederived": str(self.rederives),
                "user_connects": str(feed.connects if feed else 0),
                "user_bad_frames": str(feed.bad_frames if feed else 0)}
