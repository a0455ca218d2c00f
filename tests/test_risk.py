"""Risk across processes: the local venue, scanner, executor and risk each in their own process; the test pushes
signals where strategies and agents would, and reads the verdicts on ``decisions`` and the orders' fate on
``executions``. One test per reason code; the daily-loss test comes last because its loss stays."""
from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path

import httpx
import pytest

from services import messages as m

from .conftest import child_env, wait_for
from .trading_harness import Trading
from .venue_harness import Venue, tokens

LIMITS = {"max_order_notional": "20", "max_position_per_token": "12", "max_position_per_market": "20",
          "max_gross_exposure": "45", "max_open_orders": "8", "max_signals_per_minute": "6",
          "max_price_deviation": "0.05", "max_daily_loss": "1.5"}
AGENT = {"max_order_notional": "5", "max_daily_notional": "8", "max_signals_per_minute": "3"}
RISK_ENV = {**{f"POLYBOT_SERVICES__RISK__OPTIONS__LIMITS__{k.upper()}": v for k, v in LIMITS.items()},
            **{f"POLYBOT_SERVICES__RISK__OPTIONS__AGENT__{k.upper()}": v for k, v in AGENT.items()}}
_sources = itertools.count(1)


class Desk:
    """The test's seat on the mesh: pushes signals, reads verdicts and executions."""

    def __init__(self, root: Path, risk_env: dict[str, str] = RISK_ENV, seed: int = 43) -> None:
        self.venue = Venue(root / "venue", seed, 100, "--still", "--markets", "80")
        self.risk_env = risk_env
        self.mesh = Trading(root, self.venue, {"scanner": "ping_s = 0.3, stale_after_s = 1.5", "executor": "",
                                               "risk": ""})
        self.signals, self.decisions, self.executions = self.mesh.start_risk_desk({"scanner": {}, "executor": {}},
                                                                                  risk_env)
        self.seen: dict[str, m.Message] = {}
        self.events: list[m.Message] = []

    def market(self, low: str = "0.3", high: str = "0.7") -> tuple[dict, str, str]:
        """A fresh market with its best bid between ``low`` and ``high`` (0.3 and 0.7: the sizes below mean the
        same money in every test)."""
        while True:
            market = self.venue.market()
            yes, no = tokens(market)
            if D(low) <= self.book(yes)[0] <= D(high):
                return market, yes, no

    def restart_risk(self, **env: str) -> None:
        """Risk stopped and started again (with ``env`` on top of its limits); it takes the executor's account."""
        self.mesh.stop("risk")
        self.mesh.start("risk", **self.risk_env, **env)
        self.mesh.wait_ready("risk")
        pid = self.mesh.procs["risk"].pid

        def heard() -> bool:  # a verdict published before the desk hears the new risk would be lost
            msgs = self.decisions.drain()
            self.seen.update((x.signal_id, x) for x in msgs if not isinstance(x, m.Heartbeat))
            return any(isinstance(x, m.Heartbeat) and x.pid == pid for x in msgs) and bool(self.signals.socket.pipes)
        wait_for(heard, what="the desk to hear the new risk")

    def book(self, token: str) -> tuple[D, D]:
        book = httpx.get(f"{self.venue.clob}/book", params={"token_id": token}).json()
        return max(D(b["price"]) for b in book["bids"]), min(D(a["price"]) for a in book["asks"])

    def decide(self, *legs: tuple[str, str, str, str] | m.Leg, source: str = "", order_type: str = "GTC",
               signal: m.Signal | None = None) -> m.SignalAccepted | m.SignalRejected:
        if signal is None:
            signal = m.Signal(source=source or f"strategy:t{next(_sources)}", legs=[
                leg if isinstance(leg, m.Leg) else m.Leg(token_id=leg[0], side=leg[1], size=D(leg[2]),
                                                         limit_price=D(leg[3]), order_type=order_type)
                for leg in legs])
        assert self.signals.send(signal)
        return self.verdict(signal.id)

    def preview(self, *legs: tuple[str, str, str, str]) -> list[str]:
        """The codes risk would refuse these legs with now (checked over control: nothing sent, nothing counted)."""
        signal = m.Signal(source="strategy:preview", legs=[
            m.Leg(token_id=t, side=s, size=D(q), limit_price=D(p)) for t, s, q, p in legs])  # type: ignore[arg-type]
        verdict = self.mesh.ask("risk", m.PreviewRequest(signal=signal))
        return [r.code for r in verdict.reasons] if isinstance(verdict, m.SignalRejected) else []

    def verdict(self, signal_id: str) -> m.SignalAccepted | m.SignalRejected:
        def arrived():
            for msg in self.decisions.drain():
                if not isinstance(msg, m.Heartbeat):
                    self.seen[msg.signal_id] = msg
            return self.seen.pop(signal_id, None)
        return wait_for(arrived, what=f"risk's verdict on {signal_id}", timeout=10)

    def execution(self, kind: type, order_id: str) -> m.Message:
        def arrived():
            self.events += [e for e in self.executions.drain() if not isinstance(e, m.Heartbeat)]
            return next((e for e in self.events if isinstance(e, kind) and e.order_id == order_id), None)
        return wait_for(arrived, what=f"{kind.__name__} for {order_id}", timeout=15)

    def cancel_all(self, verdicts: list[m.SignalAccepted]) -> None:
        for v in verdicts:
            assert self.signals.send(m.Cancel(source=v.source))
            for order in v.orders:
                self.execution(m.OrderCanceled, order.id)

    def close(self) -> None:
        self.mesh.close()
        self.venue.stop()


@pytest.fixture(scope="module")
def desk(tmp_path_factory) -> Iterator[Desk]:
    desk = Desk(Path(os.path.realpath(tmp_path_factory.mktemp("risk"))))
    yield desk
    desk.close()


def codes(verdict: m.Message) -> list[str]:
    assert isinstance(verdict, m.SignalRejected), verdict
    return [r.code for r in verdict.reasons]


def test_a_signal_within_every_limit_becomes_orders_that_fill_at_the_venue(desk: Desk) -> None:
    _, yes, no = desk.market()
    bid, ask = desk.book(yes)
    verdict = desk.decide((yes, "BUY", "5", str(ask)), order_type="FOK")
    assert isinstance(verdict, m.SignalAccepted), verdict
    order, = verdict.orders
    fill = desk.execution(m.Fill, order.id)
    assert (fill.size, fill.price, fill.signal_id) == (D(5), ask, verdict.signal_id)


def test_off_tick_below_minimum_and_too_far_legs_are_each_named_and_the_good_leg_is_not_sent(desk: Desk) -> None:
    _, yes, no = desk.market()
    bid, ask = desk.book(yes)
    nbid, nask = desk.book(no)
    verdict = desk.decide((yes, "BUY", "5", str(bid - D("0.005"))), (yes, "BUY", "2", str(bid)),
                          (no, "BUY", "5", str(nask + D("0.10"))), (no, "BUY", "5", str(nbid)))
    assert codes(verdict) == ["TICK_SIZE", "MIN_SIZE", "PRICE_TOO_FAR"]
    assert [r.leg for r in verdict.reasons] == [0, 1, 2]
    too_far = verdict.reasons[2]
    assert (too_far.limit, too_far.value) == (D("0.05"), D("0.10"))


def test_order_notional_and_position_limits_give_the_largest_size_that_would_pass(desk: Desk) -> None:
    _, yes, no = desk.market()
    bid, _ = desk.book(yes)
    price = bid - D("0.05")
    big = desk.decide((yes, "BUY", str((25 / price).quantize(D(1), rounding="ROUND_UP")), str(price)))
    notional = next(r for r in big.reasons if r.code == "ORDER_NOTIONAL")
    assert notional.limit == D(20) and notional.max_size == (D(20) / price).quantize(D("0.01"), rounding="ROUND_DOWN")
    first = desk.decide((yes, "BUY", str((D(10) / price).quantize(D(1))), str(price)))
    assert isinstance(first, m.SignalAccepted)
    desk.execution(m.OrderAck, first.orders[0].id)
    held = first.orders[0].size * price
    size = (5 / price).quantize(D(1), rounding="ROUND_UP")
    second = desk.decide((yes, "BUY", str(size), str(price)))
    reason, = second.reasons
    assert (reason.code, reason.limit, reason.value) == ("POSITION_TOKEN", D(12), held + size * price)
    assert reason.max_size == ((D(12) - held) / price).quantize(D("0.01"), rounding="ROUND_DOWN")
    nprice = desk.book(no)[0] - D("0.05")
    market = desk.decide((no, "BUY", str((11 / nprice).quantize(D(1), rounding="ROUND_UP")), str(nprice)))
    assert codes(market) == ["POSITION_MARKET"] and market.reasons[0].limit == D(20)
    desk.cancel_all([first])


def test_gross_exposure_and_open_orders_count_what_rests_across_markets(desk: Desk) -> None:
    resting = []
    for _ in range(4):
        _, yes, _ = desk.market()
        bid, _ = desk.book(yes)
        price = bid - D("0.05")
        verdict = desk.decide((yes, "BUY", str((D(11) / price).quantize(D(1))), str(price)))
        if isinstance(verdict, m.SignalRejected):
            assert codes(verdict) == ["GROSS_EXPOSURE"]
            break
        resting.append(verdict)
    assert len(resting) == 4 or codes(verdict) == ["GROSS_EXPOSURE"]
    _, yes, _ = desk.market()
    bid, _ = desk.book(yes)
    many = desk.decide(*[(yes, "BUY", "5", str(bid - D("0.05")))] * 9)
    assert "OPEN_ORDERS" in codes(many)
    reason = next(r for r in many.reasons if r.code == "OPEN_ORDERS")
    assert reason.limit == 8 and reason.value == len(resting) + 9  # the first test's FOK filled: it is not open
    desk.cancel_all(resting)


def test_unknown_resolved_and_stale_markets_are_refused(desk: Desk) -> None:
    assert codes(desk.decide(("no-such-token", "BUY", "5", "0.5"))) == ["MARKET_NOT_TRADEABLE"]
    target, yes, _ = desk.market()
    bid, _ = desk.book(yes)
    httpx.post(f"{desk.venue.clob}/_admin/resolve", json={"market": target["conditionId"], "winner": "Yes"})
    wait_for(lambda: desk.preview((yes, "BUY", "5", str(bid))) == ["MARKET_NOT_TRADEABLE"],
             what="risk to learn the market resolved")
    assert codes(desk.decide((yes, "BUY", "5", str(bid)))) == ["MARKET_NOT_TRADEABLE"]
    _, other, _ = desk.market()
    obid, _ = desk.book(other)
    httpx.post(f"{desk.venue.clob}/_admin/stall", json={"seconds": 4})
    wait_for(lambda: desk.preview((other, "BUY", "5", str(obid))) == ["STALE_BOOK"], what="the book to go stale",
             timeout=15)
    verdict = desk.decide((other, "BUY", "5", str(obid)))
    assert codes(verdict) == ["STALE_BOOK"] and verdict.reasons[0].max_size == 0
    wait_for(lambda: desk.preview((other, "BUY", "5", str(obid))) == [], what="fresh books after the stall",
             timeout=20)
    fresh = desk.decide((other, "BUY", "5", str(obid)))
    assert isinstance(fresh, m.SignalAccepted), fresh
    desk.cancel_all([fresh])


def test_a_source_over_its_rate_and_an_agent_over_its_tighter_budget_are_refused(desk: Desk) -> None:
    _, yes, _ = desk.market()
    bid, _ = desk.book(yes)
    verdicts = [desk.decide((yes, "BUY", "5", "0.01"), source="strategy:busy") for _ in range(7)]
    assert [type(v).__name__ for v in verdicts] == ["SignalAccepted"] * 6 + ["SignalRejected"]
    rate, = verdicts[-1].reasons
    assert (rate.code, rate.limit, rate.value) == ("SIGNAL_RATE", D(6), D(6))
    price = bid - D("0.05")
    agent = desk.decide((yes, "BUY", "25", str(price)), source="mcp:claude")  # 25 x >= 0.25: over the agent's 5
    notional = next(r for r in agent.reasons if r.code == "ORDER_NOTIONAL")
    assert notional.limit == D(5) and notional.max_size == (5 / price).quantize(D("0.01"), rounding="ROUND_DOWN")
    size = (5 / price).quantize(D(1), rounding="ROUND_DOWN")  # just under 5 each: two are over the budget of 8
    spent = [desk.decide((yes, "BUY", str(size), str(price)), source="mcp:claude") for _ in range(2)]
    assert isinstance(spent[0], m.SignalAccepted)
    budget, = spent[1].reasons
    assert budget.code == "AGENT_BUDGET" and budget.limit == D(8) and budget.value == 2 * size * price
    desk.cancel_all(verdicts[:6] + spent[:1])


def test_a_halted_risk_refuses_everything_and_cancels_what_rests_until_resumed(desk: Desk) -> None:
    _, yes, _ = desk.market()
    bid, _ = desk.book(yes)
    resting = desk.decide((yes, "BUY", "5", str(bid - D("0.05"))))
    desk.execution(m.OrderAck, resting.orders[0].id)
    assert isinstance(desk.mesh.ask("risk", m.HaltRequest(reason="drill")), m.Ok)
    desk.execution(m.OrderCanceled, resting.orders[0].id)
    halted = desk.decide((yes, "BUY", "5", str(bid - D("0.05"))))
    assert codes(halted) == ["HALTED"] and "drill" in halted.reasons[0].message
    desk.mesh.ask("risk", m.ResumeRequest())
    again = desk.decide((yes, "BUY", "5", str(bid - D("0.05"))))
    assert isinstance(again, m.SignalAccepted)
    desk.cancel_all([again])


def test_a_repeated_signal_is_refused_and_a_signal_without_legs_is_bad(desk: Desk) -> None:
    _, yes, _ = desk.market()
    bid, _ = desk.book(yes)
    signal = m.Signal(source="strategy:once", legs=[m.Leg(token_id=yes, side="BUY", size=D(5),
                                                          limit_price=bid - D("0.05"))])
    first = desk.decide(signal=signal)
    assert isinstance(first, m.SignalAccepted)
    assert codes(desk.decide(signal=signal)) == ["DUPLICATE_SIGNAL"]
    assert codes(desk.decide()) == ["BAD_SIGNAL"]
    desk.cancel_all([first])


def test_limits_and_their_use_can_be_read_over_control(desk: Desk) -> None:
    reply = wait_for(lambda: (r := desk.mesh.ask("risk", m.RiskRequest())) and r.open_orders == 0 and r,
                     what="risk to see every test's orders canceled")
    assert isinstance(reply, m.RiskReply) and not reply.halted
    assert reply.limits["max_gross_exposure"] == D(45) and reply.limits["agent.max_daily_notional"] == D(8)
    used = {u.name: u for u in reply.usage}
    assert used["max_open_orders"].used == reply.open_orders == 0
    assert any(p.size == 5 for p in reply.positions)  # the first test's fill
    shown = subprocess.run([sys.executable, "-m", "services", "--config", str(desk.mesh.config_file), "risk"],
                           env=child_env(), capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("risk: trading; 0 open orders")
    assert re.search(r"^max_gross_exposure\s+45\s+\d+\.\d\d", shown.stdout, re.M), shown.stdout
    assert re.search(r"^agent\.max_daily_notional\s+8\b", shown.stdout, re.M), shown.stdout


def test_sources_past_the_first_hundred_share_one_metric_series(desk: Desk) -> None:
    # Any peer on signals may name itself anything: 150 names must not make 150 series.
    for k in range(150):
        desk.decide(m.Leg(token_id="no-such-token", side="BUY", size=D("5"), limit_price=D("0.5")),
                    source=f"strategy:passing-name-{k}")
    text = httpx.get(desk.mesh.detail("risk")["metrics"]).text
    series = re.findall(r'^polybot_signals_total\{[^}]*source="([^"]+)"', text, re.M)
    assert 'other' in series and len(series) <= 101, len(series)


def test_with_the_executor_gone_signals_are_refused_and_a_new_risk_waits_for_its_account(desk: Desk) -> None:
    _, yes, _ = desk.market()
    bid, _ = desk.book(yes)
    assert desk.mesh.detail("risk")["executor_connected"] == "True"
    desk.mesh.stop("executor", kill=True)
    wait_for(lambda: desk.mesh.detail("risk").get("executor_connected") == "False",
             what="risk's status to say no executor takes its orders")
    assert codes(desk.decide((yes, "BUY", "5", str(bid - D("0.05"))))) == ["EXECUTOR_DOWN"]
    desk.mesh.stop("risk")  # a risk that starts now cannot take the executor's account: it refuses everything
    desk.mesh.start("risk", **RISK_ENV)
    wait_for(lambda: desk.mesh.detail("risk").get("synced") == "True", what="the new risk to sync markets")
    wait_for(lambda: desk.signals.socket.pipes and desk.decisions.socket.pipes, what="the desk to reconnect")
    assert codes(desk.decide((yes, "BUY", "5", str(bid - D("0.05"))))) == ["NOT_READY"]
    desk.mesh.start("executor")
    desk.mesh.wait_ready("risk")  # reconciled with the new executor's account, which takes its orders
    back = desk.decide((yes, "BUY", "5", str(bid - D("0.05"))))
    assert isinstance(back, m.SignalAccepted), back
    desk.cancel_all([back])


def test_a_marked_loss_past_the_daily_limit_stops_buys_but_lets_sells_through(desk: Desk) -> None:
    target, yes, no = desk.market()
    _, ask = desk.book(yes)
    size = (10 / ask).quantize(D(1), rounding="ROUND_DOWN")  # under every position limit; 0.2 lower loses >= 2
    bought = desk.decide((yes, "BUY", str(size), str(ask)), order_type="FOK")
    assert isinstance(bought, m.SignalAccepted), bought
    desk.execution(m.Fill, bought.orders[0].id)
    httpx.post(f"{desk.venue.clob}/_admin/move", json={"market": target["conditionId"], "price": str(ask - D("0.2"))})
    refused = wait_for(lambda: (v := desk.decide((no, "BUY", "5", str(desk.book(no)[0])))) and isinstance(
        v, m.SignalRejected) and v, what="the marked loss to stop buys")
    loss, = refused.reasons
    assert loss.code == "DAILY_LOSS" and loss.limit == D("1.5") and loss.value >= D("1.5")
    bid, _ = desk.book(yes)
    assert isinstance(desk.decide((yes, "SELL", "5", str(bid))), m.SignalAccepted)
