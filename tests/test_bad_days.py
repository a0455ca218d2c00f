"""The venue's bad days, across processes: a matching-engine restart and its post-only window, a burst past the rate
limit, heartbeats that fail, a wallet that cannot pay. The local venue, scanner, executor and risk run as processes;
the test sends signals where a strategy would and checks, against the venue's own record of every order that
reached it, that no order was sent twice, that every accepted signal's orders ended (filled, canceled or refused with
a reason) and that only post-only orders came in the post-only window."""
from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path

import httpx
import pytest
from eth_account import Account

from services import messages as m
from services.venues import base

from .conftest import wait_for
from .trading_harness import Trading
from .venue_harness import Venue, tokens

RISK_ENV = {"POLYBOT_SERVICES__RISK__OPTIONS__LIMITS__MAX_OPEN_ORDERS": "400",
            "POLYBOT_SERVICES__RISK__OPTIONS__LIMITS__MAX_POSITION_PER_TOKEN": "5000",
            "POLYBOT_SERVICES__RISK__OPTIONS__LIMITS__MAX_POSITION_PER_MARKET": "10000"}
EXECUTOR = "heartbeat_s = 0.3, post_only_after_restart_s = 3.0, restart_retry_s = 1.0, funds_recheck_s = 0.3"
ENDED = (m.OrderRejected, m.OrderCanceled)
_ids = itertools.count(1)


class Seat:
    """The test's seat on the mesh: sends signals, keeps every verdict and execution it hears."""

    def __init__(self, root: Path, seed: int, executor_env: dict[str, str] | None = None,
                 venue_args: tuple[str, ...] = ()) -> None:
        self.venue = Venue(root / "venue", seed, 100, "--still", *venue_args)
        self.mesh = Trading(root, self.venue, {"scanner": "", "executor": EXECUTOR, "risk": ""})
        self.signals, self.decisions, self.executions = self.mesh.start_risk_desk(
            {"scanner": {}, "executor": executor_env or {}}, RISK_ENV)
        self.verdicts: dict[str, m.SignalAccepted | m.SignalRejected] = {}
        self.heard: list[m.Message] = []

    def listen(self) -> None:
        for msg in self.decisions.drain():
            if isinstance(msg, (m.SignalAccepted, m.SignalRejected)):
                self.verdicts[msg.signal_id] = msg
        self.heard += [e for e in self.executions.drain() if not isinstance(e, m.Heartbeat)]

    def send(self, *legs: m.Leg) -> m.Signal:
        signal = m.Signal(source=f"strategy:bad-days-{next(_ids)}", legs=list(legs))
        assert self.signals.send(signal)
        return signal

    def decide(self, *legs: m.Leg) -> m.SignalAccepted | m.SignalRejected:
        signal = self.send(*legs)

        def arrived():
            self.listen()
            return self.verdicts.get(signal.id)
        return wait_for(arrived, what=f"risk's verdict on {signal.id}", timeout=10)

    def fate(self, order_id: str) -> m.Message | None:
        """How the order ended, or its ack while it rests: the last thing said of it."""
        said = [e for e in self.heard if getattr(e, "order_id", None) == order_id]
        ended = [e for e in said if isinstance(e, (*ENDED, m.Fill))]
        return ended[-1] if ended else next((e for e in said if isinstance(e, m.OrderAck)), None)

    def accepted(self) -> list[m.SignalAccepted]:
        return [v for v in self.verdicts.values() if isinstance(v, m.SignalAccepted)]

    def answered(self, verdicts: list[m.SignalAccepted]) -> dict[str, m.Message]:
        """Every order of these signals answered by the venue or refused; their last word."""
        ids = [o.id for v in verdicts for o in v.orders]

        def all_answered():
            self.listen()
            fates = {i: self.fate(i) for i in ids}
            return fates if all(fates.values()) else None
        return wait_for(all_answered, what="every accepted order to be answered", timeout=30)

    def cancel_resting(self, verdicts: list[m.SignalAccepted]) -> None:
        """Cancel what rests; every accepted order has then ended: filled, canceled or refused."""
        for source in {v.source for v in verdicts}:
            assert self.signals.send(m.Cancel(source=source, reason="the test is over"))
        ids = [o.id for v in verdicts for o in v.orders]

        def ended():
            self.listen()
            return all(isinstance(self.fate(i), ENDED) or self.filled(i) for i in ids)
        wait_for(ended, what="every accepted order to end", timeout=30)

    def filled(self, order_id: str) -> bool:
        order = next(o for v in self.accepted() for o in v.orders if o.id == order_id)
        return sum((f.size for f in self.heard if isinstance(f, m.Fill) and f.order_id == order_id), D(0)) >= order.size

    def conditions(self) -> list[str]:
        return [c.code for c in self.mesh.ask("risk", m.RiskRequest()).venue]

    def book(self, token: str) -> tuple[D, D]:
        book = httpx.get(f"{self.venue.clob}/book", params={"token_id": token}).json()
        return max(D(b["price"]) for b in book["bids"]), min(D(a["price"]) for a in book["asks"])

    def resting_buy(self, token: str, k: int, post_only: bool) -> m.Leg:
        """A BUY below the best bid (it rests), a tick or more lower each time."""
        bid, _ = self.book(token)
        return m.Leg(token_id=token, side="BUY", size=D("5"), limit_price=bid - D("0.01") * (1 + k % 4),
                     post_only=post_only)

    def received(self) -> list[dict]:
        return self.venue.admin("received")["orders"]

    def close(self) -> None:
        self.mesh.close()
        self.venue.stop()


def codes(verdict: m.Message) -> set[str]:
    return {r.code for r in getattr(verdict, "reasons", [])}


def assert_sent_once(received: list[dict]) -> None:
    ids = [r["id"] for r in received]
    twice = {i for i in ids if ids.count(i) > 1}
    assert not twice, f"orders that reached the venue more than once: {sorted(twice)}"


@pytest.fixture(scope="module")
def seat(tmp_path_factory) -> Iterator[Seat]:
    seat = Seat(tmp_path_factory.mktemp("bad-days"), seed=61)
    try:
        yield seat
    finally:
        seat.close()


def test_through_a_restart_no_order_goes_twice_each_ends_with_a_reason_and_only_post_only_ones_come_in_its_window(
        seat: Seat) -> None:
    market = seat.venue.market()
    yes, no = tokens(market)
    window = seat.venue.admin("restart", seconds=3, post_only_seconds=3)
    seen_by_agents: set[str] = set()
    k = 0
    # A strategy's signals one after another, plain and post-only in turn, through the restart, its post-only window
    # and a moment after: until a plain order has been accepted again once the venue's window is over.
    while True:
        verdict = seat.decide(seat.resting_buy(yes if k % 3 else no, k, post_only=k % 2 == 1))
        k += 1
        if codes(verdict) & {base.RESTARTING, base.POST_ONLY_WINDOW}:
            seen_by_agents |= set(seat.conditions())  # what get_risk shows an agent now
        over = time.time() * 1000 > window["post_only_until_ms"]
        if over and isinstance(verdict, m.SignalAccepted) and not verdict.orders[0].post_only:
            break
        assert time.time() * 1000 < window["post_only_until_ms"] + 15_000, "plain orders never went again"
    accepted = seat.accepted()
    fates = seat.answered(accepted)
    refused_by_risk = [c for v in seat.verdicts.values() for c in codes(v)]
    refused_by_executor = [f.code for f in fates.values() if isinstance(f, m.OrderRejected)]
    # The first order met the restart at the venue and was refused for it, and risk refused the next ones itself.
    assert base.RESTARTING in refused_by_executor and base.RESTARTING in refused_by_risk
    assert base.POST_ONLY_WINDOW in refused_by_risk and seen_by_agents & {base.RESTARTING, base.POST_ONLY_WINDOW}
    assert set(refused_by_executor) <= {base.RESTARTING, base.POST_ONLY_WINDOW}
    assert all(f.message for f in fates.values() if isinstance(f, m.OrderRejected))
    received = seat.received()
    assert_sent_once(received)
    in_window = [r for r in received if r["phase"] == "post_only"]
    assert in_window and all(r["post_only"] for r in in_window), "only post-only orders in the post-only window"
    wait_for(lambda: not seat.conditions(), what="the venue's conditions to clear")
    seat.cancel_resting(accepted)


def test_a_burst_is_paced_to_the_tier_and_a_stricter_venues_429s_refuse_orders_with_a_reason_never_sending_twice(
        seat: Seat) -> None:
    market = seat.venue.market()
    yes, no = tokens(market)
    before = len(seat.received())
    # 200 orders at once: the Standard tier's burst is 60, then 40 a second, and our limiter keeps under it. Orders
    # that would wait for it past their age limit are refused unsent, with why.
    legs = [seat.resting_buy(yes if k % 2 else no, k, post_only=False) for k in range(200)]
    burst = [seat.send(leg) for leg in legs]  # at once
    wait_for(lambda: (seat.listen(), all(s.id in seat.verdicts for s in burst))[1], what="200 verdicts")
    accepted = [seat.verdicts[s.id] for s in burst]
    assert all(isinstance(v, m.SignalAccepted) for v in accepted)
    fates = seat.answered(accepted)
    placed = [f for f in fates.values() if isinstance(f, m.OrderAck)]
    assert all(isinstance(f, m.OrderAck) or f.code == base.RATE_LIMITED for f in fates.values())
    paced = seat.received()[before:]
    assert len(paced) == len(placed) >= 100 and not any(r["rate_limited"] for r in paced)
    seat.cancel_resting(accepted)
    # A venue stricter than the tier we were told (5 a second): its 429s refuse orders, each sent once, with why.
    seat.venue.admin("rate-limits", orders={"rate": 5, "burst": 5})
    try:
        before = len(seat.received())
        legs = [seat.resting_buy(yes if k % 2 else no, k, post_only=False) for k in range(20)]
        burst = [seat.send(leg) for leg in legs]
        wait_for(lambda: (seat.listen(), all(s.id in seat.verdicts for s in burst))[1], what="20 verdicts")
        accepted = [v for s in burst if isinstance(v := seat.verdicts[s.id], m.SignalAccepted)]
        fates = seat.answered(accepted)
    finally:
        seat.venue.admin("rate-limits")
    limited = [f for f in fates.values() if isinstance(f, m.OrderRejected)]
    assert limited and all(f.code == base.RATE_LIMITED and f.message for f in limited)
    assert any(isinstance(f, m.OrderAck) for f in fates.values())
    assert int(seat.mesh.detail("executor")["rate_limit_holds"]) > 0
    assert_sent_once(seat.received()[before:])
    seat.cancel_resting(accepted)


def test_failing_heartbeats_stop_new_orders_before_the_venue_cancels_the_resting_ones(seat: Seat) -> None:
    market = seat.venue.market()
    yes, _ = tokens(market)
    resting = seat.decide(seat.resting_buy(yes, 0, post_only=False))
    assert isinstance(seat.answered([resting])[resting.orders[0].id], m.OrderAck)
    seat.venue.admin("heartbeats", refuse=True)
    try:
        wait_for(lambda: base.HEARTBEAT_FAILING in seat.conditions(), what="risk to hear that heartbeats fail")
        refused = seat.decide(seat.resting_buy(yes, 1, post_only=True))
        assert base.HEARTBEAT_FAILING in codes(refused)
        # The venue has not canceled the resting order yet: risk stopped new orders first.
        assert seat.fate(resting.orders[0].id).__class__ is m.OrderAck
    finally:
        seat.venue.admin("heartbeats", refuse=False)
    wait_for(lambda: base.HEARTBEAT_FAILING not in seat.conditions(), what="heartbeats to be answered again")
    again = seat.decide(seat.resting_buy(yes, 2, post_only=False))
    assert isinstance(again, m.SignalAccepted)
    seat.cancel_resting([resting, again])


def test_a_wallet_without_allowance_is_a_state_with_a_fix_not_a_stream_of_rejections(tmp_path: Path) -> None:
    key = Account.create()
    seat = Seat(tmp_path, seed=62, executor_env={"POLYBOT_PRIVATE_KEY": key.key.hex()})
    try:
        seat.venue.admin("fund", address=key.address, collateral="100")
        yes, _ = tokens(seat.venue.market())
        first = seat.decide(seat.resting_buy(yes, 0, post_only=False))
        assert isinstance(first, m.SignalAccepted)
        assert seat.answered([first])[first.orders[0].id].code == base.BALANCE  # the venue's refusal
        wait_for(lambda: base.NO_ALLOWANCE in seat.conditions(), what="the executor to tell what is short")
        refused = seat.decide(seat.resting_buy(yes, 1, post_only=False))
        reason = next(r for r in refused.reasons if r.code == base.NO_ALLOWANCE)
        assert "approve" in reason.message and key.address in reason.message
        sells_pass = seat.mesh.ask("risk", m.PreviewRequest(signal=m.Signal(source="strategy:p", legs=[
            m.Leg(token_id=yes, side="SELL", size=D("5"), limit_price=D("0.99"))])))
        assert base.NO_ALLOWANCE not in codes(sells_pass)
        seat.venue.admin("approve", address=key.address, unlimited=True)
        wait_for(lambda: base.NO_ALLOWANCE not in seat.conditions(), what="the approval to be seen")
        after = seat.decide(seat.resting_buy(yes, 2, post_only=False))
        assert isinstance(seat.answered([after])[after.orders[0].id], m.OrderAck)
        assert [v for v in seat.verdicts.values() if isinstance(v, m.SignalAccepted)] == [first, after]
    finally:
        seat.close()
