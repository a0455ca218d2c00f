"""Numbers that are not numbers (NaN, sNaN, infinities, sizes beyond any market), where they enter the mesh: a
signal to risk is refused with BAD_SIGNAL and a reason; any other message with one is counted and skipped; a
journal record with one is skipped at start and neither the executor nor risk stops. The local venue, scanner,
executor and risk each run in their own process; the test sits where strategies and agents would."""
from __future__ import annotations

import json
import os
import re
from unittest.mock import ANY
from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path

import anyio
import msgspec
import pytest
from mcp.client.client import Client
from mcp_types import Implementation

from polybot_mcp.server import build
from services import messages as m
from services.bus import Bus, BusError
from services.config import ensure_state_dir, load
from services.executor.journal import Taken
from services.venues.polymarket import client, feed, schema, user

from .conftest import wait_for
from .test_wire_schema import FIXTURES
from .trading_harness import Trading
from .venue_harness import Venue, tokens

BAD = ["NaN", "sNaN", "-NaN", "Infinity", "-Infinity", "1E+26", "1E+999999"]
T0 = 1_700_000_000_000_000_000


class Seat:
    """The mesh, started with a journal that holds bad fills, and the test's sockets on it."""

    def __init__(self, root: Path) -> None:
        self.venue = Venue(root / "venue", 47, 100, "--still", "--markets", "20")
        self.mesh = Trading(root, self.venue, {"scanner": "", "executor": "", "risk": ""})
        self.held = tokens(self.venue.market())[0]
        self.journal = self.mesh.config.state_path / "executor" / "journal-live.jsonl"
        self.journal.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.journal.write_bytes(b"".join(msgspec.json.encode(r) + b"\n" for r in self._journal()))
        self.signals, self.decisions, self.executions = self.mesh.start_risk_desk({"scanner": {}, "executor": {}}, {})
        self.seen: dict[str, m.Message] = {}

    def _journal(self) -> list:
        """What the executor wrote before it stopped: an order, a fill of Infinity, one of 1e26 shares, a good one."""
        order = m.Order(id="journaled", ts_ns=T0, signal_id="s0", leg=0, source="strategy:old", token_id=self.held,
                        market="mk", side="BUY", size=D(10), limit_price=D("0.4"))

        def fill(trade: str, size: str) -> m.Fill:
            return m.Fill(ts_ns=T0, order_id=order.id, venue_order_id="0xv", trade_id=trade, token_id=self.held,
                          market="mk", side="BUY", price=D("0.4"), size=D(size), source="strategy:old")
        return [Taken(order=order), fill("t-inf", "Infinity"), fill("t-huge", "1E+26"), fill("t-good", "10")]

    def verdict(self, signal: m.Signal) -> m.Message:
        assert self.signals.send(signal)

        def arrived():
            for msg in self.decisions.drain():
                if not isinstance(msg, m.Heartbeat):
                    self.seen[msg.signal_id] = msg
            return self.seen.pop(signal.id, None)
        return wait_for(arrived, what=f"risk's verdict on {signal.id}", timeout=10)

    def close(self) -> None:
        self.mesh.close()
        self.venue.stop()


@pytest.fixture(scope="module")
def seat(tmp_path_factory) -> Iterator[Seat]:
    seat = Seat(Path(os.path.realpath(tmp_path_factory.mktemp("numbers"))))
    yield seat
    seat.close()


def leg(token: str, size: str, price: str) -> m.Leg:
    return m.Leg(token_id=token, side="BUY", size=D(size), limit_price=D(price))


def test_a_journal_fill_that_is_not_a_number_is_skipped_and_risk_still_takes_the_executors_account(seat: Seat) -> None:
    detail = seat.mesh.detail("executor")
    assert detail["journal_bad_lines"] == "2", detail
    log = seat.mesh.log("executor")
    assert "size = Infinity, not a number" in log and "1E+26" in log, log[-3000:]
    assert seat.mesh.detail("risk")["reconciled"] == "True"
    reply = seat.mesh.ask("risk", m.RiskRequest())
    assert isinstance(reply, m.RiskReply)
    held = {p.token_id: p.size for p in reply.positions}
    assert held[seat.held] == 10  # the good fill counts; the bad ones do not


@pytest.mark.parametrize("bad", BAD)
def test_a_signal_with_a_size_or_price_that_is_not_a_number_is_refused_as_bad_with_where_it_was(
        seat: Seat, bad: str) -> None:
    yes, no = tokens(seat.venue.market())
    signal = m.Signal(source="strategy:fuzz", legs=[leg(yes, "5", "0.3"), leg(no, bad, "0.3"), leg(yes, "5", bad)])
    verdict = seat.verdict(signal)
    assert isinstance(verdict, m.SignalRejected), verdict
    assert [(r.code, r.leg) for r in verdict.reasons] == [("BAD_SIGNAL", 1), ("BAD_SIGNAL", 2)]
    assert verdict.reasons[0].message.startswith(f"leg 1: size = {D(bad)} is ")
    assert verdict.reasons[1].message.startswith(f"leg 2: limit_price = {D(bad)} is ")
    assert all("between 0 and 1" in r.message for r in verdict.reasons)
    assert verdict.signal is None  # not echoed: every receiver would have to skip it


def test_a_preview_with_a_number_that_is_not_a_number_is_answered_with_the_reason(seat: Seat) -> None:
    yes, _ = tokens(seat.venue.market())
    verdict = seat.mesh.ask("risk", m.PreviewRequest(signal=m.Signal(source="mcp:x", legs=[leg(yes, "NaN", "0.5")])))
    assert isinstance(verdict, m.SignalRejected) and [r.code for r in verdict.reasons] == ["BAD_SIGNAL"], verdict


def test_after_bad_numbers_risk_still_decides_and_the_executor_still_takes_orders(seat: Seat) -> None:
    bus = Bus(seat.mesh.config)
    orders = bus.outbound("orders")  # where risk sends; an order with a bad number is skipped by the executor
    wait_for(lambda: orders.socket.pipes, what="the executor's orders socket")
    before = seat.mesh.status("executor").sockets["orders"].undecodable
    assert orders.send(m.Order(signal_id="s", leg=0, source="strategy:fuzz", token_id=seat.held, market="mk",
                               side="BUY", size=D("NaN"), limit_price=D("0.5")))
    wait_for(lambda: seat.mesh.status("executor").sockets["orders"].undecodable == before + 1,
             what="the executor to count the order with a NaN size as bad")
    bus.close()
    yes, _ = tokens(seat.venue.market())
    verdict = seat.verdict(m.Signal(source="strategy:after", legs=[leg(yes, "5", "0.01")]))
    assert isinstance(verdict, m.SignalAccepted), verdict
    assert seat.mesh.status("executor").state == "running" and seat.mesh.status("risk").state == "running"
    assert seat.signals.send(m.Cancel(source="strategy:after"))


def test_a_control_reply_with_a_bad_number_is_refused_with_why_and_the_next_one_comes_through(tmp_path: Path) -> None:
    config = load(None, {"POLYBOT_STATE_DIR": str(tmp_path), "HOME": str(tmp_path)})
    ensure_state_dir(config)
    bus = Bus(config)
    replier = bus.replier("svc")
    answers = [m.RiskReply(halted=False, realized_pnl=D("NaN")), m.RiskReply(halted=False, realized_pnl=D(3))]
    replier.serve(lambda req: answers.pop(0))
    with bus.requester("svc", 3000) as req:
        with pytest.raises(BusError, match=r"untrustworthy reply .*RiskReply: realized_pnl = NaN is not a finite"):
            req.request(m.RiskRequest())
        assert req.request(m.RiskRequest()) == m.RiskReply(halted=False, realized_pnl=D(3), id=ANY, ts_ns=ANY,
                                                            trace_id=ANY)
    replier.close()
    bus.close()


def test_a_throttle_for_ever_or_at_a_rate_that_is_not_a_number_is_refused_with_why(tmp_path: Path) -> None:
    """Floats are checked too: an infinite ``for_s`` would throttle a strategies host for good."""
    config = load(None, {"POLYBOT_STATE_DIR": str(tmp_path), "HOME": str(tmp_path)})
    ensure_state_dir(config)
    bus = Bus(config)
    replier = bus.replier("svc")
    replier.serve(lambda req: m.Ok(request_id=req.id))
    with bus.requester("svc", 3000) as req:
        for bad, where in ((dict(for_s=float("inf")), "for_s = inf"), (dict(max_signals_per_s=float("nan")),
                                                                         "max_signals_per_s = nan")):
            reply = req.request(m.ThrottleRequest(**{"throttle": True, "for_s": 5.0, "max_signals_per_s": 1.0,
                                                     **bad}))
            assert isinstance(reply, m.Error) and f"{where} is not a finite number" in reply.message
        assert isinstance(req.request(m.ThrottleRequest(throttle=True, for_s=5.0, max_signals_per_s=1.0)), m.Ok)
    replier.close()
    bus.close()


# ---------------------------------------------------------------- venue answers


def test_a_market_frame_with_a_number_that_is_not_one_is_refused_with_which_and_why() -> None:
    level = {"event_type": "book", "market": "mk", "asset_id": "t", "timestamp": "1", "hash": "h",
             "bids": [{"price": "0.4", "size": "10"}], "asks": [{"price": "0.6", "size": "10"}]}
    change = {"event_type": "price_change", "market": "mk", "timestamp": "1", "price_changes": [
        {"asset_id": "t", "price": "0.4", "size": "10", "side": "BUY", "hash": "h", "best_bid": "0.4"}]}
    trade = {"event_type": "last_trade_price", "market": "mk", "asset_id": "t", "price": "0.5", "size": "1",
             "side": "BUY", "fee_rate_bps": "0", "timestamp": "1"}
    tick = {"event_type": "tick_size_change", "market": "mk", "asset_id": "t", "old_tick_size": "0.01",
            "new_tick_size": "0.001", "timestamp": "1"}
    cases = [({**level, "bids": [{"price": "NaN", "size": "10"}]}, "a level's price is not a finite number"),
             ({**level, "asks": [{"price": "0.6", "size": "1e26"}]}, "a level's size '1e26' is beyond"),
             ({**change, "price_changes": [{**change["price_changes"][0], "best_bid": "Infinity"}]},
              "best_bid is not a finite number"),
             ({**change, "price_changes": [{**change["price_changes"][0], "price": "1.5"}]},
              "price '1.5' is not between 0 and 1"),
             ({**trade, "price": "sNaN"}, "price is not a finite number"),
             ({**tick, "new_tick_size": "-Infinity"}, "new_tick_size is not a finite number")]
    for good in (level, change, trade, tick):
        prices, events = feed.normalize(schema.decode_market_frame(msgspec.json.encode(good)), T0)
        assert prices or events
    for frame, why in cases:
        with pytest.raises(ValueError, match=re.escape(why)):
            feed.normalize(schema.decode_market_frame(msgspec.json.encode(frame)), T0)


def test_a_gamma_market_with_a_fee_rate_or_exponent_out_of_range_is_refused() -> None:
    raw = json.loads((FIXTURES / "gamma_market_live.json").read_bytes())
    fees = {"exponent": 1, "rate": 0.02, "takerOnly": True, "rebateRate": 0.2}
    good = {**raw, "feesEnabled": True, "feeSchedule": fees}
    assert feed.market_new(msgspec.convert(good, schema.GammaMarket), T0).fee_rate == D("0.02")
    for bad, why in [({"rate": 2.5}, "feeSchedule.rate 2.5 is not between 0 and 1"),
                     ({"exponent": -400.0}, "feeSchedule.exponent -400.0 is not in (0, 10]"),
                     ({"rebateRate": -0.5}, "feeSchedule.rebateRate -0.5 is not between 0 and 1")]:
        market = msgspec.convert({**good, "feeSchedule": {**fees, **bad}}, schema.GammaMarket)
        with pytest.raises(ValueError, match=re.escape(why)):
            feed.market_new(market, T0)


@pytest.mark.parametrize(("field", "value", "why"), [
    ("price", "NaN", "price is not a finite number"),
    ("size", "Infinity", "size is not a finite number"),
    ("size", "1e26", "size '1e26' is beyond"),
    ("fee_rate_bps", "1e9", "fee_rate_bps '1e9' is not between 0 and 10000"),
])
def test_a_user_channel_trade_with_a_number_that_is_not_one_is_refused_with_why(field: str, value: str,
                                                                                  why: str) -> None:
    trade = json.loads((FIXTURES / "ws_user_trade_full.json").read_bytes())
    trade = {**trade, "trader_side": "TAKER"}
    assert user.events_of(json.dumps(trade), "key", "0xme")
    with pytest.raises(ValueError, match=re.escape(why)):
        user.events_of(json.dumps({**trade, field: value}), "key", "0xme")


def test_an_order_from_the_venue_with_a_size_that_is_not_a_number_is_refused_with_why() -> None:
    order = json.loads((FIXTURES / "ws_user_order_placement.json").read_bytes())
    assert user.events_of(json.dumps(order), "key", "0xme")
    with pytest.raises(ValueError, match="original_size is not a finite number"):
        user.events_of(json.dumps({**order, "original_size": "-Infinity"}), "key", "0xme")


def test_rest_answers_with_numbers_that_are_not_numbers_are_refused_and_an_unlimited_allowance_is_kept() -> None:
    unlimited = str(2**256 - 1)
    balance = client.balance_of(schema.BalanceAllowance(balance="12500000", allowances={"a": unlimited, "b": "7"}))
    assert (balance.collateral, balance.allowance) == (D("12.5"), D("0.000007"))
    with pytest.raises(ValueError, match="balance is not a finite number"):
        client.balance_of(schema.BalanceAllowance(balance="NaN"))
    with pytest.raises(ValueError, match="the allowance of a is not a number"):
        client.balance_of(schema.BalanceAllowance(balance="1", allowances={"a": "lots"}))
    info = schema.ClobMarketInfo(condition_id="mk", tokens=[schema.ClobMarketInfoToken(token_id="t", outcome="Yes")],
                                 min_tick_size=0.01, fee=schema.ClobFeeInfo(rate=0.02, exponent=-50))
    with pytest.raises(ValueError, match=r"fee exponent -50 is not in \(0, 10\]"):
        client.rules_of(info, "t", "mk")
    assert client.rules_of(msgspec.structs.replace(info, fee=None), "t", "mk").tick == D("0.01")
    with pytest.raises(ValueError, match="min_tick_size is not a finite number"):
        client.rules_of(msgspec.structs.replace(info, min_tick_size=float("inf")), "t", "mk")


# ---------------------------------------------------------------- tool inputs


def tool_errors(tmp_path: Path, calls: list[tuple[str, dict]]) -> list[str]:
    """Each call's error text from a real MCP client session (the arguments are refused before any mesh is asked,
    so none runs)."""
    config = load(None, {"POLYBOT_STATE_DIR": str(tmp_path), "HOME": str(tmp_path)})

    async def session() -> list[str]:
        async with Client(build(config), mode="auto", client_info=Implementation(name="Fuzz", version="1")) as c:
            results = [await c.call_tool(tool, args) for tool, args in calls]
        assert all(r.is_error for r in results), [r.content for r in results]
        return [r.content[0].text for r in results]
    return anyio.run(session)


def test_a_tool_given_a_size_price_or_amount_that_is_not_a_number_says_what_to_give_instead(tmp_path: Path) -> None:
    def legs(**bad: object) -> dict:
        return {"legs": [{"token_id": "t", "side": "BUY", "size": "5", "limit_price": "0.5", **bad}],
                "rationale": "fuzz"}
    texts = tool_errors(tmp_path, [
        ("propose_signal", legs(size="NaN")),
        ("propose_signal", legs(size="1e26")),
        ("preview_signal", legs(size=None, notional="$1e30")),
        ("preview_signal", legs(limit_price="Infinity")),
        ("preview_signal", legs(limit_price="xc")),
        ("close_position", {"token_id": "t", "size": "1e26"}),
        ("scan_opportunities", {"max_cost": "Infinity"}),
    ])
    assert "legs.0.size: Input should be a finite number" in texts[0]
    assert "legs.0.size: 1E+26 is more than any market holds: give at most 1000000000000000" in texts[1]
    assert "legs.0.notional: 1E+30 is more than any market holds" in texts[2]
    assert "legs.0.limit_price: Input should be a finite number" in texts[3]
    assert "legs.0.limit_price: limit_price is a number of USDC per share between 0 and 1 (0.45), not" in texts[4]
    assert "size: 1E+26 is more than any market holds: give at most 1000000000000000" in texts[5]
    assert "max_cost: Input should be a finite number" in texts[6]
