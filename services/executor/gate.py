"""What the venue takes now, pure: the conditions its answers reveal, and what each means for an order about to go.

A matching-engine restart (425) refuses every order and cancel until it is over, and the venue then takes only
post-only orders for a while; heartbeats that fail mean the venue will soon cancel every order; a wallet without
allowance cannot pay for a BUY. Each is a ``VenueCondition`` with a code and a message that says what to do; the
executor publishes them (``VenueStatus``) so risk refuses the orders they apply to before they are made.

An order meets the gate before it is signed and journaled, and goes, waits (still pending, so a cancel ends it)
until a window ends if its age limit allows, or is refused with the condition's code. Nothing is sent twice: an
order that meets a restart or the post-only window at the venue is refused with that reason, not sent again.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import NamedTuple

from .. import messages as m
from ..venues import base
from .options import ExecutorOptions

WINDOWS = (base.RESTARTING, base.POST_ONLY_WINDOW)  # conditions with an end, worth waiting for


class Go(NamedTuple):
    pass


class Wait(NamedTuple):
    until_ns: int
    code: str


class Refuse(NamedTuple):
    code: str
    message: str


def clock_time(ts_ns: int) -> str:
    return dt.datetime.fromtimestamp(ts_ns / 1e9, dt.timezone.utc).strftime("%H:%M:%S UTC")


def applies(condition: m.VenueCondition, order: m.Order) -> bool:
    if condition.side and condition.side != order.side:
        return False
    return not (condition.post_only_pass and order.post_only)


class Gate:
    """The venue's conditions as its answers reveal them; ``version`` moves on every change (publish then)."""

    def __init__(self, options: ExecutorOptions) -> None:
        self.options = options
        self.conditions: dict[str, m.VenueCondition] = {}
        self.version = 0

    def _set(self, condition: m.VenueCondition) -> None:
        if self.conditions.get(condition.code) != condition:
            self.conditions[condition.code] = condition
            self.version += 1

    def clear(self, code: str) -> None:
        if self.conditions.pop(code, None) is not None:
            self.version += 1

    def status(self) -> list[m.VenueCondition]:
        return list(self.conditions.values())

    # ------------------------------------------------------------ what the venue said

    def restarting(self, now_ns: int, retry_after_s: float) -> None:
        """A 425: the engine restarts until ``retry_after_s`` from now (or our own guess when the venue gives none)."""
        until = now_ns + int((retry_after_s or self.options.restart_retry_s) * 1e9)
        guess = "" if retry_after_s else " (the venue did not say how long: an order after that asks again)"
        known = self.conditions.get(base.RESTARTING)
        if known is not None and known.until_ts_ns >= until:
            return
        self._set(m.VenueCondition(
            code=base.RESTARTING, since_ts_ns=known.since_ts_ns if known else now_ns, until_ts_ns=until,
            message=f"the venue's matching engine is restarting (Polymarket restarts it weekly, for about 90 s): "
                    f"it takes no orders or cancels until about {clock_time(until)}{guess}, then only post-only "
                    "orders for a while; send new orders after that"))

    def post_only(self, now_ns: int, retry_after_s: float) -> None:
        """The post-only window after a restart, until ``retry_after_s`` from now (the venue's word), else for as
        long as the window usually lasts (``post_only_after_restart_s``) unless one is known already."""
        known = self.conditions.get(base.POST_ONLY_WINDOW)
        if not retry_after_s and known is not None and known.until_ts_ns > now_ns:
            return
        until = now_ns + int((retry_after_s or self.options.post_only_after_restart_s) * 1e9)
        guess = "" if retry_after_s else " (as long as the window usually lasts: the venue did not say)"
        self._set(m.VenueCondition(
            code=base.POST_ONLY_WINDOW, since_ts_ns=known.since_ts_ns if known else now_ns, until_ts_ns=until,
            post_only_pass=True,
            message=f"after its restart the venue takes only post-only orders (and cancels) until about "
                    f"{clock_time(until)}{guess}: send post_only orders that rest on the book, or wait until then"))

    def tick(self, now_ns: int) -> None:
        """Windows that ran out end; a restart that ends opens the post-only window that follows it."""
        restart = self.conditions.get(base.RESTARTING)
        if restart is not None and restart.until_ts_ns <= now_ns:
            self.clear(base.RESTARTING)
            self.post_only(now_ns, 0)
        window = self.conditions.get(base.POST_ONLY_WINDOW)
        if window is not None and window.until_ts_ns <= now_ns:
            self.clear(base.POST_ONLY_WINDOW)

    def heartbeats(self, failing: str, now_ns: int) -> None:
        """Why the venue's heartbeats fail now, or "" when they are answered."""
        if not failing:
            self.clear(base.HEARTBEAT_FAILING)
            return
        known = self.conditions.get(base.HEARTBEAT_FAILING)
        self._set(m.VenueCondition(
            code=base.HEARTBEAT_FAILING, since_ts_ns=known.since_ts_ns if known else now_ns,
            message=f"the venue's heartbeats fail ({failing}); once they stop for about 10 s the venue cancels "
                    "every open order, so no new order goes out until they are answered again"))

    def funds(self, now_ns: int, balance: base.Balance, needed: Decimal, funder: str) -> None:
        """The venue refused a BUY of ``needed`` USDC as more than the wallet can pay: say which of balance and
        allowance is short, and what to do."""
        if balance.allowance is not None and balance.allowance < needed:
            self._set(m.VenueCondition(
                code=base.NO_ALLOWANCE, since_ts_ns=now_ns, side="BUY",
                message=f"the exchanges may spend only {balance.allowance:.2f} USDC of the wallet {funder} (it holds "
                        f"{balance.collateral:.2f}): approve them to spend its USDC (on polymarket.com, or with your "
                        "wallet's approvals; `polybot doctor` checks), then BUY orders go out again"))
        else:
            self._set(m.VenueCondition(
                code=base.NO_BALANCE, since_ts_ns=now_ns, side="BUY", available=balance.collateral,
                message=f"the wallet {funder} holds {balance.collateral:.2f} USDC, less than the BUY of "
                        f"{needed:.2f} it was refused for with its open BUYs: deposit USDC to it, or send "
                        "smaller BUYs"))

    def funds_read(self, balance: base.Balance) -> None:
        """A later reading of the wallet: an allowance that covers what it holds ends NO_ALLOWANCE; more USDC than
        when the venue refused ends NO_BALANCE (the venue says again if it is still not enough)."""
        short = self.conditions.get(base.NO_ALLOWANCE)
        if short is not None and (balance.allowance is None or balance.allowance >= balance.collateral):
            self.clear(base.NO_ALLOWANCE)
        poor = self.conditions.get(base.NO_BALANCE)
        if poor is not None and poor.available is not None and balance.collateral > poor.available:
            self.clear(base.NO_BALANCE)

    # ------------------------------------------------------------ an order about to go

    def verdict(self, order: m.Order, now_ns: int, deadline_ns: int, rate_delay_s: float = 0.0) -> Go | Wait | Refuse:
        """Whether ``order`` may go now: it may wait until a window ends (or its rate-limit tokens are there) if it
        can still go before ``deadline_ns``, its age limit; else it is refused with why."""
        waits: list[Wait] = []
        for condition in self.conditions.values():
            if not applies(condition, order) or condition.code == base.NO_BALANCE:  # the venue judges the balance
                continue
            if condition.code in WINDOWS and condition.until_ts_ns <= deadline_ns:
                waits.append(Wait(condition.until_ts_ns, condition.code))
            else:
                return Refuse(condition.code, condition.message)
        if rate_delay_s > 0:
            ready = now_ns + int(rate_delay_s * 1e9)
            if ready > deadline_ns:
                return Refuse(base.RATE_LIMITED, f"the venue's rate limit for orders has no room for "
                                                 f"{rate_delay_s:.1f} s, past the order's age limit; send it again "
                                                 "later, or fewer orders at a time")
            waits.append(Wait(ready, base.RATE_LIMITED))
        return max(waits) if waits else Go()
