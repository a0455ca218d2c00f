"""`polybot doctor`: a check of everything live trading needs, one line each with ✓ or ✗ and the fix.

It asks the venue the executor would trade at, with the key, wallet and credentials the executor would use:
key, addresses, funder, API credentials, the clock, closed-only mode, balance, allowances, a heartbeat, both
channels and the risk limits against what the wallet can spend. Nothing is changed at the venue, with two
exceptions the executor makes at start anyway: an account with no API key yet gets one, and a heartbeat is
sent (only when the account has no open orders, since heartbeats that stop cancel them all).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, TypeVar

import msgspec
from eth_account import Account

from .config import (RISK_KIND, WALLET_SIGNATURE_TYPES, Config, ConfigError, Secrets, local_venue_key, service_of_kind,
                     service_options, trading_mode, venue_urls)
from .risk.limits import RiskOptions
from .venues import base
from .venues.base import VenueError
from .venues.polymarket.funder import Mismatch, match_wallet
from .venues.polymarket.wallets import KINDS, WALLET_NAMES, derived_wallets
from .venues.polymarket.account import AccountProbe, Funds, market_channel_book, user_channel_pong

T = TypeVar("T")
Status = Literal["ok", "fail", "skip"]
MARKS = {"ok": "✓", "fail": "✗", "skip": "–"}
MAX_SKEW_S = 5.0  # GTD expiries (60 s ahead at least), heartbeats (10 s) and signed timestamps all lean on the clock
CHANNEL_TIMEOUT_S = 10.0


def _wallet(kind: str, address: str) -> str:
    """A wallet as a sentence names it: "the key's own address 0x..", "the proxy wallet 0x..."."""
    return f"the key's own address {address}" if kind == "eoa" else f"the {WALLET_NAMES[kind]} {address}"


class Check(msgspec.Struct, frozen=True):
    name: str
    status: Status
    detail: str
    fix: str = ""


class Report(msgspec.Struct, frozen=True):
    venue: str  # the CLOB asked
    mode: str  # the trading mode the config runs in; the checks are for live either way
    ok: bool  # no check failed
    checks: list[Check]

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]


def run(config: Config, secrets: Secrets, clock: Callable[[], float] = time.time) -> Report:
    """Every check, in order; a check that needs what an earlier one could not give is skipped, saying so."""
    doctor = _Doctor(config, secrets, clock)
    doctor.run()
    return Report(venue=doctor.urls.clob_url, mode=trading_mode(config),
                  ok=all(c.status != "fail" for c in doctor.checks), checks=doctor.checks)


def format_report(report: Report) -> str:
    width = max(len(c.name) for c in report.checks)
    lines = [f"polybot doctor: the account at {report.venue} (mode {report.mode}; these checks are for live trading)"]
    for c in report.checks:
        lines.append(f"{MARKS[c.status]} {c.name.ljust(width)}  {c.detail}")
        if c.fix:
            lines.append(f"  {' ' * width}  fix: {c.fix}")
    lines.append(summary(report))
    return "\n".join(lines)


def summary(report: Report) -> str:
    """One line: how many checks failed, or that all passed."""
    count = {status: sum(c.status == status for c in report.checks) for status in MARKS}
    if count["fail"]:
        return f"{count['fail']} of {len(report.checks)} checks failed"
    return f"all {count['ok']} checks pass" + (f" ({count['skip']} skipped)" if count["skip"] else "")


def spendable(funds_collateral: Decimal, allowances: dict[str, Decimal | None]) -> Decimal:
    """What the exchanges can take from the wallet: its pUSD, or the least allowance when that is smaller."""
    limited = [a for a in allowances.values() if a is not None]
    return min([funds_collateral, *limited])


def limits_over(options: RiskOptions, can_spend: Decimal) -> list[tuple[str, Decimal]]:
    """The money limits of risk's options that are larger than what the wallet can spend, by their key."""
    limits, agent = options.limits, options.agent
    money = [("limits.max_order_notional", limits.max_order_notional),
             ("limits.max_position_per_token", limits.max_position_per_token),
             ("limits.max_position_per_market", limits.max_position_per_market),
             ("limits.max_gross_exposure", limits.max_gross_exposure),
             ("agent.max_order_notional", agent.max_order_notional),
             ("agent.max_daily_notional", agent.max_daily_notional)]
    return [(key, value) for key, value in money if value > can_spend]


def _amount(value: Decimal) -> str:
    return f"{value.normalize():f}"


class _Failed(Exception):
    """A venue request failed; its check's line, saying so, is already written."""


@dataclass
class _Doctor:
    config: Config
    secrets: Secrets
    clock: Callable[[], float]
    checks: list[Check] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.urls = venue_urls(self.config)
        self.local = self.config.venue == "local"
        self.kind = self.config.account.wallet
        self.key = ""
        self.owner = ""
        self.wallets: dict[str, tuple[str, ...]] = {}  # kind -> the addresses the key's wallet of it may have
        self.funder = ""  # the wallet orders are made for, once it is known to be the key's
        self.probe: AccountProbe | None = None
        self.creds = False  # the probe holds working API credentials
        self.funds: Funds | None = None  # the funder's pUSD and allowances
        self.can_spend: Decimal | None = None
        self.token = ""  # a token of a market open for orders

    def add(self, name: str, status: Status, detail: str, fix: str = "") -> bool:
        self.checks.append(Check(name, status, detail, fix))
        return status == "ok"

    def skip(self, name: str, why: str) -> bool:
        return self.add(name, "skip", f"not checked: {why}")

    def ask(self, name: str, request: str, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)``, a request to the CLOB; if it fails, the check ``name`` fails saying so (_Failed)."""
        try:
            return fn(*args)
        except VenueError as exc:
            self.add(name, "fail", f"{request} failed: {exc.message}", f"check {self.setting('clob_url')}")
            raise _Failed from None

    @staticmethod
    def attempt(check: Callable[[], object]) -> None:
        try:
            check()
        except _Failed:
            pass

    def setting(self, key: str) -> str:
        """Where the config says this of the venue (a [polymarket] key), for a fix."""
        if not self.local:
            return f"polymarket.{key}"
        return "[local_venue.options] chain_id" if key == "chain_id" else "[local_venue] options (its ports) and address"

    def run(self) -> None:
        key = self.key = self.check_key()
        if not key:
            self.skip("addresses", "no key to derive them from")
        if not (key and self.check_addresses()):
            self.skip("funder", "no address to hold it against")
        else:
            self.check_funder()
        reachable = self.check_venue()
        self.attempt(self.check_clock) if reachable else self.skip("clock", "the venue does not answer")
        self.check_credentials(key, reachable)
        for name, check in (("closed-only", self.check_closed_only), ("balance", self.check_balance)):
            self.attempt(check) if self.creds else self.skip(name, "no working API credentials")
        self.attempt(self.check_allowances)
        self.attempt(self.check_heartbeat) if self.creds else self.skip("heartbeat", "no working API credentials")
        self.check_market_channel(reachable)
        self.check_user_channel() if self.creds else self.skip("user channel", "no working API credentials")
        self.check_limits()

    # ------------------------------------------------------------ the key and the wallet

    def check_key(self) -> str:
        """The owner's key (the executor's: POLYBOT_PRIVATE_KEY, else on the local venue its ready-made account)."""
        key = self.secrets.private_key
        fix = ("export POLYBOT_PRIVATE_KEY=0x... (the key of the account's owner, 0x and 64 hex digits; secrets are "
               "read from the environment only)")
        if not key and self.local:
            seed, key = local_venue_key(self.config)
            self.owner = Account.from_key(key).address
            self.add("key", "ok", f"none set: the local venue's ready-made account for seed {seed}, as the executor "
                                  f"uses it ({self.owner})")
            return key
        if not key:
            self.add("key", "fail", "POLYBOT_PRIVATE_KEY is not set: no live order can be signed", fix)
            return ""
        try:
            self.owner = Account.from_key(key).address
        except Exception:  # the library's message may quote the key: say only that it is not one
            self.add("key", "fail", "POLYBOT_PRIVATE_KEY is not a private key", fix)
            return ""
        self.add("key", "ok", f"POLYBOT_PRIVATE_KEY is set: it signs as {self.owner}")
        return key

    def check_addresses(self) -> bool:
        chain = self.urls.chain_id
        if chain not in (137, 80002):
            return self.add("addresses", "fail", f"chain {chain} is neither Polygon (137) nor Amoy (80002)",
                            f"set {self.setting('chain_id')} to 137")
        self.wallets = derived_wallets(self.owner, chain)
        theirs = ", ".join(f"{WALLET_NAMES[kind]} {found[0]}" + "".join(f" (or the older {w})" for w in found[1:])
                           for kind, found in self.wallets.items() if kind != "eoa")
        return self.add("addresses", "ok", f"owner {self.owner}; its wallets on chain {chain}: {theirs}")

    def check_funder(self) -> bool:
        match = match_wallet(self.config.account, self.owner, self.urls.chain_id)
        if isinstance(match, Mismatch):
            return self.add("funder", "fail", match.message, match.fix)
        self.funder = match.funder
        return self.add("funder", "ok", f'account.wallet = "{self.kind}": orders are made by {match.describe()}')

    # ------------------------------------------------------------ the venue

    def check_venue(self) -> bool:
        # The public questions need no key: a throwaway one asks them when there is none.
        try:
            self.probe = AccountProbe(self.urls.clob_url, self.urls.chain_id, self._probe_key())
            self.probe.answers()
        except VenueError as exc:
            start = " (start it: `polybot venue`, or `polybot up`)" if self.local else ""
            return self.add("venue", "fail", f"the CLOB at {self.urls.clob_url} does not answer: {exc.message}",
                            f"check {self.setting('clob_url')} and the network{start}")
        return self.add("venue", "ok", f"the CLOB at {self.urls.clob_url} answers")

    def _probe_key(self) -> str:
        if self.key:
            return self.key
        return Account.create().key.hex()

    def check_clock(self) -> bool:
        before = self.clock()
        venue_s = self.ask("clock", "GET /time", self.probe.server_time_s)
        after = self.clock()
        # /time is in whole seconds: its middle is half a second on, and this machine's is the request's middle.
        skew = venue_s + 0.5 - (before + after) / 2
        if abs(skew) > MAX_SKEW_S:
            return self.add("clock", "fail", f"this machine's clock is {abs(skew):.0f} s "
                                             f"{'behind' if skew > 0 else 'ahead of'} the venue's "
                                             f"(at most {MAX_SKEW_S:g} s will do)",
                            "set this machine's clock right and keep it so: turn on NTP "
                            "(`timedatectl set-ntp true`, or chrony)")
        return self.add("clock", "ok", f"within {max(abs(skew), 1):.0f} s of the venue's /time")

    def check_credentials(self, key: str, reachable: bool) -> bool:
        names = ("POLYBOT_API_KEY", "POLYBOT_API_SECRET", "POLYBOT_API_PASSPHRASE")
        given = (self.secrets.api_key, self.secrets.api_secret, self.secrets.api_passphrase)
        if not key:
            return self.skip("credentials", "no key to derive or use them with")
        if not reachable:
            return self.skip("credentials", "the venue does not answer")
        if any(given) and not all(given):
            unset = [n for n, v in zip(names, given) if not v]
            missing = " and ".join(unset)
            self.add("credentials", "fail", f"{missing} {'is' if len(unset) == 1 else 'are'} not set: the "
                                            "executor uses all three or none",
                     f"set {missing} too, or unset all three to derive them from the key")
            return self.derive(quiet=True)
        if all(given):
            self.probe.use_credentials(*given)
            try:
                keys = self.probe.api_keys()
            except VenueError as exc:
                self.add("credentials", "fail", f"the venue refused the given API credentials ({exc.message})",
                         f"unset {', '.join(names)} to derive them from the key, or set the ones made for "
                         f"{self.owner}")
                return self.derive(quiet=True)
            if keys and self.secrets.api_key not in keys:
                self.add("credentials", "fail", f"POLYBOT_API_KEY is not one of {self.owner}'s API keys",
                         f"unset {', '.join(names)} to derive them from the key, or set the ones made for it")
                return self.derive(quiet=True)
            self.creds = True
            return self.add("credentials", "ok", f"the given API credentials work (L2) for {self.owner}")
        return self.derive(quiet=False)

    def derive(self, quiet: bool) -> bool:
        """Derive (or create) the key's API credentials; ``quiet``: only so later checks can run."""
        try:
            created = self.probe.derive_credentials()
        except VenueError as exc:
            if quiet:
                return False
            return self.add("credentials", "fail", f"the venue would not give the key API credentials (L1): "
                                                   f"{exc.message}",
                            f"check POLYBOT_PRIVATE_KEY and {self.setting('chain_id')} (the chain the key signs "
                            "for)")
        self.creds = True
        if quiet:
            return False
        how = "none existed, so they were created" if created else "derived"
        return self.add("credentials", "ok", f"the key's API credentials: {how} (L1)")

    def check_closed_only(self) -> bool:
        closed = self.ask("closed-only", "GET /auth/ban-status/closed-only", self.probe.closed_only)
        if closed:
            return self.add("closed-only", "fail", f"{self.owner} is in closed-only mode: the venue refuses every "
                                                   "order that opens a position",
                            "only selling what is held is possible: ask Polymarket support why the account is "
                            "restricted, or trade with another account")
        return self.add("closed-only", "ok", "the account may open positions (not in closed-only mode)")

    def check_balance(self) -> bool:
        if not self.funder:
            return self.skip("balance", "the funder is not the key's wallet (see above)")
        funds = self.funds = self.ask("balance", "GET /balance-allowance", self.probe.funds,
                                      WALLET_SIGNATURE_TYPES[self.kind])
        mine = _wallet(self.kind, self.funder)
        if funds.collateral > 0:
            return self.add("balance", "ok", f"{mine} holds {_amount(funds.collateral)} pUSD")
        for other in KINDS:
            if other == self.kind or other not in self.wallets:
                continue
            try:
                held = self.probe.funds(WALLET_SIGNATURE_TYPES[other]).collateral
            except VenueError:
                continue
            if held > 0:
                where = self.wallets[other][0]
                funder = "remove account.funder" if other == "eoa" else "leave account.funder empty (or set it to " \
                                                                        f"\"{where}\")"
                return self.add("balance", "fail", f"{mine} holds no pUSD, but {_wallet(other, where)} holds "
                                                   f"{_amount(held)}",
                                f'set account.wallet = "{other}" and {funder}')
        return self.add("balance", "fail", f"{mine} holds no pUSD",
                        f"deposit pUSD into {self.funder}"
                        + (" (on the local venue: POST /_admin/fund {\"address\", \"collateral\"})" if self.local
                           else " (Polymarket's deposit flow)"))

    def check_allowances(self) -> bool:
        funds = self.funds
        if funds is None:
            return self.skip("allowances", "the balance is not known")
        if funds.collateral <= 0:
            return self.skip("allowances", "no pUSD to spend")
        if not self.token:
            self.token = self._active_token()
        names = self.probe.exchanges
        approved_tokens: dict[str, bool] = {}
        if self.token:
            approved_tokens = self.ask("allowances", "GET /balance-allowance", self.probe.token_approvals,
                                       WALLET_SIGNATURE_TYPES[self.kind], self.token)
        spend = [names.get(x, x) for x, a in funds.allowances.items() if a is not None and a <= 0]
        move = [names.get(x, x) for x, ok in approved_tokens.items() if not ok]
        if not funds.allowances:
            spend = ["any exchange"]
        if spend or move:
            missing = []
            if spend:
                missing.append(f"{', '.join(spend)} may not spend its pUSD (buys are refused)")
            if move:
                missing.append(f"{', '.join(move)} may not move its outcome tokens (sells are refused)")
            local = (f"; on the local venue: POST /_admin/approve {{\"address\": \"{self.funder}\", \"exchange\": "
                     "\"all\", \"unlimited\": true}") if self.local else ""
            return self.add("allowances", "fail", f"{self.funder}: {'; '.join(missing)}",
                            "approve each exchange named from the wallet: pUSD `approve` and the conditional "
                            "tokens' `setApprovalForAll` (polymarket.com does both when the wallet first trades; "
                            f"polymarket-client sends them as one approval batch){local}")
        self.can_spend = spendable(funds.collateral, funds.allowances)
        shown = ", ".join(f"{names.get(x, x)} {'unlimited' if a is None else _amount(a)}"
                          for x, a in funds.allowances.items())
        tokens = "; outcome tokens approved for each" if approved_tokens else ""
        return self.add("allowances", "ok", f"pUSD: {shown}{tokens}")

    def _active_token(self) -> str:
        try:
            return self.probe.active_token()
        except VenueError:
            return ""

    def check_heartbeat(self) -> bool:
        open_orders = self.ask("heartbeat", "GET /data/orders", self.probe.open_orders)
        if open_orders:
            orders = "1 open order" if open_orders == 1 else f"{open_orders} open orders"
            return self.skip("heartbeat", f"the account has {orders}, and a heartbeat starts the "
                                          "venue's dead-man switch, which cancels them all once heartbeats stop; "
                                          "check again with none open")
        started = self.clock()
        try:
            fresh = self.probe.heartbeat()
        except VenueError as exc:
            return self.add("heartbeat", "fail", f"POST /v1/heartbeats failed: {exc.message}",
                            "the executor's heartbeats would fail too: check the API credentials and "
                            f"{self.setting('clob_url')}")
        ms = (self.clock() - started) * 1000
        running = "" if fresh else "; heartbeats were already running for this key (the executor's, or a check " \
                                   "made seconds ago)"
        return self.add("heartbeat", "ok", f"POST /v1/heartbeats answered in {ms:.0f} ms{running}")

    def check_market_channel(self, reachable: bool) -> bool:
        if not reachable:
            return self.skip("market channel", "the venue does not answer, so no market to subscribe to is known")
        self.token = self.token or self._active_token()
        if not self.token:
            return self.skip("market channel", "the venue lists no market open for orders to subscribe to")
        url = self.urls.market_ws_url
        try:
            market_channel_book(url, self.token, CHANNEL_TIMEOUT_S)
        except VenueError as exc:
            return self.add("market channel", "fail", exc.message, f"check {self.setting('market_ws_url')} "
                                                                   f"(now {url}) and the network")
        return self.add("market channel", "ok", f"{url}: connected, subscribed, first frame a book")

    def check_user_channel(self) -> bool:
        url = self.urls.user_ws_url
        try:
            user_channel_pong(url, self.probe.ws_auth(), CHANNEL_TIMEOUT_S)
        except VenueError as exc:
            if exc.code == base.AUTH:
                return self.add("user channel", "fail", f"{exc.message}: the API credentials were refused",
                                "check POLYBOT_API_KEY, POLYBOT_API_SECRET and POLYBOT_API_PASSPHRASE, or unset "
                                "them to derive them from the key")
            return self.add("user channel", "fail", exc.message, f"check {self.setting('user_ws_url')} "
                                                                 f"(now {url}) and the network")
        return self.add("user channel", "ok", f"{url}: connected, subscribed with the API credentials, PONG")

    def check_limits(self) -> bool:
        name = service_of_kind(self.config, RISK_KIND, "risk")
        service = self.config.services.get(name)
        if service is None or not service.enabled:
            return self.skip("risk limits", "no risk service is configured, and without one nothing trades")
        try:
            options = service_options(self.config, name, RiskOptions)
        except ConfigError as exc:
            return self.add("risk limits", "fail", str(exc), f"correct [services.{name}.options]")
        if self.can_spend is None:
            return self.skip("risk limits", "what the wallet can spend is not known")
        over = limits_over(options, self.can_spend)
        can = _amount(self.can_spend)
        if over:
            listed = ", ".join(f"{key} {_amount(value)}" for key, value in over)
            return self.add("risk limits", "fail", f"{listed}: more than the {can} pUSD {self.funder} can spend, so "
                                                   "risk would pass orders the venue refuses",
                            f"lower each (under [services.{name}.options]) to at most {can}, or deposit (and "
                            "approve) more pUSD")
        return self.add("risk limits", "ok", f"every money limit is within the {can} pUSD {self.funder} can spend")
