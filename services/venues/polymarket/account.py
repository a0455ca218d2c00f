"""Read-only questions about one account at Polymarket, for ``polybot doctor``: the CLOB through
py-clob-client-v2, both channels over a short-lived WebSocket. Library errors and wire shapes stop here: callers
get our types and VenueErrors.

The client sends its own signature type with every balance question, and the venue answers for the owner's
wallet of that type, so there is one client per wallet kind asked about.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

import msgspec
from py_clob_client_v2 import ClobClient
from py_clob_client_v2.clob_types import ApiCreds, AssetType, BalanceAllowanceParams
from py_clob_client_v2.config import get_contract_config
from py_clob_client_v2.exceptions import PolyApiException, PolyException
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import connect

from .. import base
from ..base import VenueError
from . import schema
from .client import UNITS, venue_error

T = TypeVar("T")
NOT_DERIVABLE = "Could not derive api key"  # the venue has no key for this (address, nonce) yet
HEARTBEAT_MISMATCH = "Invalid Heartbeat ID"
# The exchanges orders are signed for, by the name a person reads (py-clob-client-v2 ContractConfig fields).
EXCHANGE_NAMES = {"exchange_v2": "exchange V2", "neg_risk_exchange_v2": "neg-risk exchange V2",
                  "exchange_v3": "exchange V3"}


@dataclass(frozen=True)
class Funds:
    """A wallet's pUSD and what each exchange (by address) may spend of it; None: unlimited."""

    collateral: Decimal
    allowances: dict[str, Decimal | None]


class _SimplifiedMarket(msgspec.Struct, frozen=True):
    """An item of ``GET /sampling-simplified-markets``."""

    condition_id: str
    tokens: list[schema.ClobToken]
    active: bool = False
    closed: bool = True
    accepting_orders: bool = False


class _Page(msgspec.Struct, frozen=True):
    data: list[_SimplifiedMarket]


class AccountProbe:
    """One owner key at one CLOB. Every call is one request (or a few), bounded by the client's own timeout."""

    def __init__(self, clob_url: str, chain_id: int, private_key: str) -> None:
        # The client logs every refusal at ERROR; here a refusal is an answer, reported by the caller.
        logging.getLogger("py_clob_client_v2").setLevel(logging.CRITICAL)
        self.host, self.chain_id = clob_url.rstrip("/"), chain_id
        self._key = private_key
        self._creds: ApiCreds | None = None
        self._clients: dict[int, ClobClient] = {}
        self.owner: str = self._client(0).get_address()
        try:
            contracts = get_contract_config(chain_id)
        except Exception:  # the client raises a bare Exception for a chain it has no contracts for
            raise VenueError(base.REJECTED, f"py-clob-client-v2 knows no exchanges on chain {chain_id}") from None
        self.exchanges = {getattr(contracts, field): name for field, name in EXCHANGE_NAMES.items()}

    def _client(self, signature_type: int) -> ClobClient:
        if signature_type not in self._clients:
            self._clients[signature_type] = ClobClient(self.host, chain_id=self.chain_id, key=self._key,
                                                       signature_type=signature_type, creds=self._creds)
        return self._clients[signature_type]

    @staticmethod
    def _call(fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except PolyException as exc:
            raise venue_error(exc) from None
        except (msgspec.ValidationError, KeyError, TypeError, ValueError) as exc:
            raise VenueError(base.UNAVAILABLE, f"unexpected answer from the venue: {exc}") from None

    # ------------------------------------------------------------ public

    def answers(self) -> None:
        """The CLOB answers ``/ok``."""
        self._call(self._client(0).get_ok)

    def server_time_s(self) -> int:
        """The venue's clock, in whole seconds."""
        return int(self._call(self._client(0).get_server_time))

    def active_token(self) -> str:
        """A token of a market open for orders (from the first page of sampling markets), "" if none is listed."""
        page = self._call(msgspec.convert, self._call(self._client(0).get_sampling_simplified_markets), _Page)
        for market in page.data:
            if market.active and market.accepting_orders and not market.closed and market.tokens:
                return market.tokens[0].token_id
        return ""

    # ------------------------------------------------------------ credentials (L1, then L2)

    def derive_credentials(self) -> bool:
        """Use the API credentials the key derives (L1); if the venue has none for it yet, create them, as the
        executor would at start. True when they were created."""
        client = self._client(0)
        try:
            creds, created = self._call(client.derive_api_key), False
        except VenueError as exc:
            if NOT_DERIVABLE not in exc.message:
                raise
            creds, created = self._call(client.create_api_key), True
        self.use_credentials(creds.api_key, creds.api_secret, creds.api_passphrase)
        return created

    def use_credentials(self, api_key: str, secret: str, passphrase: str) -> None:
        self._creds = ApiCreds(api_key, secret, passphrase)
        for client in self._clients.values():
            client.set_api_creds(self._creds)

    def api_keys(self) -> list[str]:
        """The owner's API keys, asked with the credentials in use (L2): AUTH when the venue refuses them."""
        answer = self._call(self._client(0).get_api_keys)
        return list(answer.get("apiKeys") or []) if isinstance(answer, dict) else []

    def ws_auth(self) -> dict[str, str]:
        creds = self._creds
        return {"apiKey": creds.api_key, "secret": creds.api_secret, "passphrase": creds.api_passphrase}

    # ------------------------------------------------------------ the account (L2)

    def closed_only(self) -> bool:
        answer = self._call(self._client(0).get_closed_only_mode)
        if not isinstance(answer, dict) or not isinstance(answer.get("closed_only"), bool):
            raise VenueError(base.UNAVAILABLE, f"unexpected answer from the venue: {answer!r}")
        return answer["closed_only"]

    def funds(self, signature_type: int) -> Funds:
        """The pUSD of the owner's wallet of this signature type and each exchange's allowance of it."""
        answer = self._call(self._client(signature_type).get_balance_allowance,
                            BalanceAllowanceParams(asset_type=AssetType.COLLATERAL))
        found = self._call(msgspec.convert, answer, schema.BalanceAllowance)
        return Funds(collateral=Decimal(found.balance) / UNITS,
                     allowances={x: None if int(v) >= 2**255 else Decimal(v) / UNITS
                                 for x, v in found.allowances.items()})

    def token_approvals(self, signature_type: int, token_id: str) -> dict[str, bool]:
        """Whether each exchange may move the wallet's outcome tokens (needed to sell them)."""
        answer = self._call(self._client(signature_type).get_balance_allowance,
                            BalanceAllowanceParams(asset_type=AssetType.CONDITIONAL, token_id=token_id))
        found = self._call(msgspec.convert, answer, schema.BalanceAllowance)
        return {x: int(v) > 0 for x, v in found.allowances.items()}

    def open_orders(self) -> int:
        return len(self._call(self._client(0).get_open_orders))

    def heartbeat(self) -> bool:
        """One heartbeat round trip. True: it started the venue's dead-man switch (none was running); False: one
        was already running (the venue refused the empty id and named the one it expects, changing nothing)."""
        try:
            self._client(0).post_heartbeat("")
        except PolyApiException as exc:
            error = exc.error_msg
            if exc.status_code == 400 and isinstance(error, dict) and error.get("error_msg") == HEARTBEAT_MISMATCH:
                return False
            raise venue_error(exc) from None
        except PolyException as exc:
            raise venue_error(exc) from None
        return True


# ------------------------------------------------------------ the channels

def _session(url: str, timeout_s: float, first: list[str], expect: Callable[[str], str | None]) -> str:
    """Connect, send ``first``, and return what ``expect`` makes of the first frame it accepts (it returns None
    for frames to skip); VenueError when the channel cannot be reached, closes, or stays silent."""
    try:
        with connect(url, open_timeout=timeout_s, close_timeout=1, max_size=2**24) as ws:
            for frame in first:
                ws.send(frame)
            while True:
                seen = expect(str(ws.recv(timeout=timeout_s)))
                if seen is not None:
                    return seen
    except TimeoutError:
        raise VenueError(base.UNAVAILABLE, f"no answer from {url} within {timeout_s:g} s") from None
    except ConnectionClosed as exc:
        why = exc.rcvd.reason if exc.rcvd and exc.rcvd.reason else "no reason given"
        raise VenueError(base.AUTH if exc.rcvd and exc.rcvd.code == 1008 else base.UNAVAILABLE,
                         f"{url} closed the connection ({why})") from None
    except (OSError, InvalidHandshake, InvalidURI) as exc:
        raise VenueError(base.UNAVAILABLE, f"cannot connect to {url}: {exc}") from None


def market_channel_book(url: str, token_id: str, timeout_s: float) -> str:
    """Subscribe to one token on the market channel and wait for its book; returns the token's id."""
    def book(frame: str) -> str | None:
        if not frame.startswith(("{", "[")):
            return None  # a text frame ("NO NEW ASSETS")
        try:
            messages = schema.decode_market_frame(frame)
        except msgspec.MsgspecError as exc:
            raise VenueError(base.UNAVAILABLE, f"{url} sent a frame that is not the market channel's: {exc}") from None
        return next((m.asset_id for m in messages if isinstance(m, schema.WsBook)), None)

    subscribe = json.dumps({"type": "market", "assets_ids": [token_id], "initial_dump": True})
    return _session(url, timeout_s, [subscribe], book)


def user_channel_pong(url: str, auth: dict[str, str], timeout_s: float) -> str:
    """Subscribe to the account's user channel, PING, and wait for the PONG: the venue handles a connection's
    frames in order, so the PONG comes after it took (or refused, by closing) the subscription."""
    subscribe = json.dumps({"type": "user", "auth": auth, "markets": []})
    return _session(url, timeout_s, [subscribe, "PING"], lambda frame: frame if frame == "PONG" else None)
