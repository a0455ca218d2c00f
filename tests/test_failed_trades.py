"""A trade that FAILED on chain after its fill was counted is reversed, everywhere; positions say what is settled.

Pure parts first (the ledger, the order desk, risk's engine, the venue's engine), then a real mesh: the local venue
(its trades held pending until told), scanner, executor, risk and analytics as processes; the test plays the
strategies on ``signals``. The venue fails one trade after it MATCHED and confirms another; afterwards the
executor's account, risk's positions, ``polybot positions`` and the venue's own balances agree, and again after
the executor restarts."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path

import httpx
import pytest

from polybot_venue.engine import Engine, Market, VenueError
from polybot_venue.server import ready_made_account
from services import messages as m
from services.ledger import Ledger
from services.risk.engine import RiskEngine
from services.risk.limits import AgentLimits, Limits

from .conftest import child_env, wait_for
from .test_order_desk import T0, Books, order, trade
from .trading_harness import Trading
from .venue_harness import Venue, tokens


def fill(trade_id: str, side: str, size: str, price: str, fee: str = "0", source: str = "strategy:a",
         liquidity: str = "TAKER", rebate: str = "0", status: str = "MATCHED", token: str = "yes",
         ts_ns: int = T0) -> m.Fill:
    return m.Fill(ts_ns=ts_ns, order_id=f"o-{trade_id}", venue_order_id=f"v-{trade_id}", trade_id=trade_id,
                  token_id=token, market="mk", side=side, price=D(price), size=D(size), fee=D(fee),  # type: ignore[arg-type]
                  liquidity=liquidity, status=status, source=source, venue_ts_ms=1_790_000_000_000,  # type: ignore[arg-type]
                  rebate=D(rebate))


def failed(f: m.Fill) -> m.FillStatus:
    return m.FillStatus(ts_ns=f.ts_ns + 1, fill=f, status="FAILED")


def confirmed(f: m.Fill) -> m.FillStatus:
    return m.FillStatus(ts_ns=f.ts_ns + 1, fill=f, status="CONFIRMED")


def state(ledger: Ledger) -> tuple:
    """Everything a ledger says: positions (with pending), whose shares, realized PnL, rebates credited."""
    return (sorted(ledger.positions(), key=lambda p: p.token_id), ledger.source_holdings(), ledger.realized(),
            ledger.rebates.credits(), ledger.rebates.total())


FILLS = [fill("t1", "BUY", "10", "0.40", fee="0.048", source="strategy:a"),
         fill("t2", "BUY", "5", "0.60", liquidity="MAKER", rebate="0.012", source="strategy:b"),
         fill("t3", "SELL", "4", "0.70", fee="0.0168", source="strategy:a"),
         fill("t4", "BUY", "6", "0.30", fee="0.0252", source="strategy:a", token="no")]


# ---------------------------------------------------------------- the ledger


@pytest.mark.parametrize("gone", range(len(FILLS)))
def test_a_failed_fill_leaves_the_ledger_exactly_as_if_it_had_never_been(gone: int) -> None:
    ledger = Ledger()
    for f in FILLS:
        ledger.apply(f)
    assert ledger.moved(failed(FILLS[gone]))
    never = Ledger()
    for f in FILLS[:gone] + FILLS[gone + 1:]:
        never.apply(f)
    assert state(ledger) == state(never)  # position, cost basis, realized, fees, whose shares, rebate estimate
    assert not ledger.moved(failed(FILLS[gone])) and state(ledger) == state(never)  # reported twice: once
    assert not ledger.apply(FILLS[gone]) and state(ledger) == state(never)  # a late MATCHED report: still out


def test_a_failed_fill_is_reversed_across_a_resolution_too() -> None:
    ledger, never = Ledger(), Ledger()
    for f in FILLS:
        ledger.apply(f)
    ledger.settle("mk", "yes")
    ledger.moved(failed(FILLS[0]))
    for f in FILLS[1:]:
        never.apply(f)
    never.settle("mk", "yes")
    assert state(ledger) == state(never)


def test_pending_shares_are_those_not_confirmed_and_a_confirmed_fill_is_settled() -> None:
    ledger = Ledger()
    for f in FILLS[:3]:
        ledger.apply(f)
    yes = ledger.holdings["yes"]
    assert (yes.size, yes.pending, yes.settled) == (D(11), D(11), D(0))  # 10 + 5 - 4, all pending
    assert ledger.moved(confirmed(FILLS[0])) and (yes.pending, yes.settled) == (D(1), D(10))
    assert not ledger.moved(confirmed(FILLS[0])) and yes.pending == D(1)  # said twice: once
    ledger.moved(confirmed(FILLS[2]))  # the sale settled: 4 of the 10 left the wallet
    assert (yes.size, yes.pending, yes.settled) == (D(11), D(5), D(6))
    ledger.moved(failed(FILLS[1]))
    yes = ledger.holdings["yes"]  # rebuilt
    assert (yes.size, yes.pending, yes.settled) == (D(6), D(0), D(6))
    ledger.apply(fill("t9", "BUY", "2", "0.5", status="CONFIRMED"))  # first heard of settled: never pending
    assert (yes.size, yes.pending) == (D(8), D(0))
    assert [(p.size, p.pending) for p in ledger.positions()] == [(D(8), D(0))]


def test_a_fill_failed_before_it_was_counted_never_counts() -> None:
    ledger = Ledger()
    f = fill("t1", "BUY", "10", "0.40")
    assert not ledger.moved(failed(f)) and ledger.positions() == []
    assert not ledger.apply(f) and ledger.positions() == []


def test_a_fill_in_a_loaded_view_is_taken_back_from_it() -> None:
    """Risk's ledger holds the executor's reconciled view; a fill in it that fails later comes off it."""
    whole = Ledger()
    for f in FILLS[:2]:
        whole.apply(f)
    view = Ledger()
    view.load(whole.positions(), whole.source_holdings(), as_of_ns=T0 + 10)
    view.moved(failed(FILLS[0]))
    alone = Ledger()
    alone.apply(FILLS[1])
    held, = [p for p in view.positions() if p.size]
    assert (held.size, held.size * held.avg_price, held.pending) == (D(5), D(3), D(5))
    assert (held.realized, held.fees) == (D(0), D(0))  # the fee of the failed buy is back
    assert view.source_holdings() == alone.source_holdings()


# ---------------------------------------------------------------- the order desk


def test_the_desk_publishes_a_settled_and_a_failed_fill_once_and_a_restart_gives_the_same_positions() -> None:
    books = Books()
    t = books.sent(order("a", size="10"))
    u = books.sent(order("b", size="5", price="0.50"))
    books.desk.fill(trade("t1", t, "10"))
    books.desk.fill(trade("t2", u, "5", price="0.50"))
    books.desk.fill(trade("t1", t, "10", status="MINED"))  # still pending: nothing to say
    books.desk.fill(trade("t1", t, "10", status="CONFIRMED"))
    books.desk.fill(trade("t2", u, "5", price="0.50", status="RETRYING"))
    books.desk.fill(trade("t2", u, "5", price="0.50", status="FAILED"))
    books.desk.fill(trade("t2", u, "5", price="0.50", status="FAILED"))  # the stream and reconciliation both say it
    books.desk.fill(trade("t2", u, "5", price="0.50"))  # a late MATCHED: it stays out
    said = [(s.fill.trade_id, s.status) for s in books.of(m.FillStatus)]
    assert said == [("t1", "CONFIRMED"), ("t2", "FAILED")] and len(books.of(m.Fill)) == 2
    assert books.of(m.FillStatus)[1].fill == books.of(m.Fill)[1]  # it names the fill it reverses
    held, = books.desk.ledger.positions()
    assert (held.size, held.pending, held.avg_price) == (D(10), D(0), D("0.40"))
    assert (t.filled, u.filled, u.cost) == (D(10), D(0), D(0))
    assert books.desk.counts["failed_after_fill"] == 1
    after = Books()
    after.desk.restore(books.journal)
    assert after.desk.ledger.positions() == books.desk.ledger.positions()
    assert after.desk.orders["b"].filled == 0 and after.out == []
    after.desk.fill(trade("t2", u, "5", price="0.50", status="FAILED"))  # the venue says it again after the restart
    assert after.out == [] and after.desk.ledger.positions() == books.desk.ledger.positions()


def test_the_accounts_history_fails_quietly() -> None:
    """A trade of the account found at start (not this executor's order) counts unpublished; so does its failing."""
    books = Books()
    stranger = books.sent(order("x"))
    books.desk.by_venue.pop(stranger.venue_order_id)
    books.desk.reconcile([], [trade("h1", stranger, "10")], startup=True)
    assert books.desk.ledger.positions()[0].size == D(10)
    books.desk.fill(trade("h1", stranger, "10", status="FAILED"))
    assert books.desk.ledger.positions() == [] and books.out == []


# ---------------------------------------------------------------- risk


def test_risk_reverses_a_failed_fill_and_its_exposure_on_the_same_message() -> None:
    risk = RiskEngine(Limits(), AgentLimits())
    f, g = FILLS[0], FILLS[3]
    for x in (f, g):
        risk.observe(x)
    assert risk.token_exposure("yes") == D(4)
    risk.observe(failed(f))
    assert risk.token_exposure("yes") == 0 and [p.token_id for p in risk.ledger.positions()] == ["no"]
    assert risk.ledger.held_by("strategy:a", "yes") == 0 and risk.ledger.held_by("strategy:a", "no") == D(6)
    risk.observe(confirmed(g))
    assert risk.ledger.holdings["no"].pending == 0


def test_risk_taking_the_executors_account_keeps_what_came_since_a_fill_and_a_failure() -> None:
    """The account is older than a fill and a failure risk heard while asking for it: both apply on top of it."""
    risk = RiskEngine(Limits(), AgentLimits())
    old, new = FILLS[0], fill("t5", "BUY", "3", "0.50", ts_ns=T0 + 100)
    risk.observe(old)
    account = m.AccountReply(ts_ns=T0 + 50, mode="live", positions=risk.ledger.positions(),
                             holdings=risk.ledger.source_holdings())
    meanwhile = [new, m.FillStatus(ts_ns=T0 + 101, fill=old, status="FAILED")]
    for msg in meanwhile:
        risk.observe(msg)
    risk.reconcile(account, T0 + 40, meanwhile)
    held, = risk.ledger.positions()
    assert (held.size, held.pending, held.size * held.avg_price, held.fees) == (D(3), D(3), D("1.5"), D(0))
    assert risk.ledger.source_holdings() == [m.SourceHolding(source="strategy:a", token_id="yes", market="mk",
                                                             size=D(3))]


# ---------------------------------------------------------------- the venue


def engine() -> tuple[Engine, Market]:
    market = Market(condition_id="c1", question="q", slug="q", tokens=("Y", "N"), fee_rate=D("0.02"),
                    rebate_rate=D("0.25"))
    now = [1_790_000_000_000]
    e = Engine([market], lambda: now[0])
    for who in ("maker", "taker"):
        e.fund(who, D(100), {"Y": D(50)})
        e.approve(who, collateral=D(1000), conditional=True)
    return e, market


def balances(e: Engine) -> dict:
    """Every wallet's money, and the rebates accrued (0 and nothing alike)."""
    def some(d: dict) -> dict:
        return {k: v for k, v in d.items() if v}
    return {k: (a.collateral, some(a.shares), a.held_collateral, some(a.held_shares), some(a.allowances))
            for k, a in e.accounts.items() if a.collateral or some(a.shares)} | {"rebates": some(e.rebates)}


@pytest.mark.parametrize("taker_side", ["BUY", "SELL"])
def test_the_venue_fails_a_trade_and_every_balance_is_as_before_it(taker_side: str) -> None:
    e, _ = engine()
    maker_side = "SELL" if taker_side == "BUY" else "BUY"
    e.place(order_id="m1", owner="M", address="maker", token_id="Y", side=maker_side, price=D("0.40"), size=D(20))
    before = balances(e)
    placed = e.place(order_id="t1", owner="T", address="taker", token_id="Y", side=taker_side, price=D("0.40"),
                     size=D(10), order_type="FOK")
    tr, = placed.trades
    assert tr.fee > 0 and balances(e) != before
    e.outbox.clear()
    e.fail_trade(tr.id, retrying=True)
    assert tr.status == "RETRYING" and balances(e) != before  # on its way to failing: nothing moved back yet
    e.fail_trade(tr.id)
    assert tr.status == "FAILED" and [x[1].status for x in e.outbox] == ["FAILED", "FAILED"]
    after = balances(e)
    after["maker"] = (after["maker"][0], after["maker"][1], *before["maker"][2:])  # the maker's order rests on
    assert after == before
    with pytest.raises(VenueError, match="FAILED: only a MATCHED"):
        e.fail_trade(tr.id)
    assert e.advance_trades(0, 0) == []  # a failed trade confirms no more


def test_the_venue_refuses_to_fail_a_trade_whose_shares_were_spent_since() -> None:
    e, _ = engine()
    e.place(order_id="m1", owner="M", address="maker", token_id="Y", side="SELL", price=D("0.40"), size=D(20))
    tr, = e.place(order_id="t1", owner="T", address="taker", token_id="Y", side="BUY", price=D("0.40"), size=D(10),
                  order_type="FOK").trades
    e.place(order_id="s1", owner="T", address="taker", token_id="Y", side="SELL", price=D("0.90"), size=D(55))
    with pytest.raises(VenueError, match="no longer holds"):
        e.fail_trade(tr.id)
    e.confirm_trade(tr.id)
    with pytest.raises(VenueError, match="is CONFIRMED"):
        e.fail_trade(tr.id)


# ---------------------------------------------------------------- a real mesh

SEED = 67
CONDITIONAL = "CONDITIONAL"


class Mesh(Trading):
    """Scanner, executor, risk and analytics on a still venue whose trades never confirm on their own; the test sends
    orders as risk would (risk still hears every fill) and settles or fails trades through the venue's admin."""

    def __init__(self, root: Path) -> None:
        self.venue_proc = Venue(root / "venue", SEED, 100, "--still", "--confirmed-after-ms", "3600000")
        super().__init__(root, self.venue_proc, {"scanner": "", "executor": "", "risk": "", "analytics": ""})
        self.orders = self.bus.outbound("orders")
        self.account = self.venue.client(ready_made_account(SEED).private_key)

    def buy_at_ask(self, oid: str, market: dict) -> str:
        """A FOK BUY of 5 YES at the best ask, counted by the executor; returns the venue's id of its trade."""
        before = {t["id"] for t in self.account.get_trades()}
        fills = int(self.detail("executor")["fills"])
        yes, _ = tokens(market)
        ask = httpx.get(f"{self.venue.clob}/book", params={"token_id": yes}).json()["asks"][-1]["price"]
        assert self.orders.send(m.Order(id=oid, signal_id=f"sig-{oid}", leg=0, source="strategy:test", token_id=yes,
                                        market=market["conditionId"], side="BUY", size=D(5), limit_price=D(ask),
                                        order_type="FOK"))
        wait_for(lambda: int(self.detail("executor")["fills"]) == fills + 1, what=f"the executor to count {oid}")
        new, = [t["id"] for t in self.account.get_trades() if t["id"] not in before]
        return new

    def executor_positions(self) -> dict[str, tuple[D, D, D, D]]:
        reply = wait_for(lambda: isinstance(r := self.ask("executor", m.AccountRequest()), m.AccountReply) and r,
                         what="the executor's account")
        return figures(reply.positions)

    def risk_positions(self) -> dict[str, tuple[D, D, D, D]]:
        reply = self.ask("risk", m.RiskRequest())
        assert isinstance(reply, m.RiskReply), reply
        return figures(reply.positions)

    def cli_positions(self) -> dict[str, tuple[D, D, D, D]]:
        """``polybot positions --json``: (size, settled, pending, cost) per token."""
        out = subprocess.run([sys.executable, "-m", "services", "--config", str(self.config_file), "positions",
                              "--json"], env=child_env(), capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "catching up" not in out.stderr, out.stderr
        rows = json.loads(out.stdout)
        assert all(D(r["size"]) == D(r["settled"]) + D(r["pending"]) for r in rows)
        return {r["token_id"]: (D(r["size"]), D(r["pending"]), D(r["cost"]), D(r["fees"])) for r in rows}

    def venue_holdings(self) -> tuple[dict[str, D], D]:
        """The venue's own word: the account's shares of each token it traded, and its collateral."""
        from py_clob_client_v2.clob_types import AssetType, BalanceAllowanceParams
        traded = {t["asset_id"] for t in self.account.get_trades()}
        shares = {token: D(self.account.get_balance_allowance(BalanceAllowanceParams(
            asset_type=AssetType.CONDITIONAL, token_id=token))["balance"]) / 10**6 for token in traded}
        collateral = D(self.account.get_balance_allowance(
            BalanceAllowanceParams(asset_type=AssetType.COLLATERAL))["balance"]) / 10**6
        return {t: s for t, s in shares.items() if s}, collateral


    def close(self) -> None:
        super().close()
        self.venue.stop()


def figures(positions: list[m.Position]) -> dict[str, tuple[D, D, D, D]]:
    """(size, pending, cost, fees) per token held."""
    return {p.token_id: (p.size, p.pending, p.size * p.avg_price, p.fees) for p in positions if p.size}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Iterator[Mesh]:
    mesh = Mesh(Path(os.path.realpath(tmp_path_factory.mktemp("failed"))))
    try:
        mesh.start_desk(mesh.orders)
        yield mesh
    finally:
        mesh.close()


def test_a_trade_failed_after_its_fill_is_reversed_everywhere_and_positions_say_what_is_settled(mesh: Mesh) -> None:
    first, second = mesh.venue.market(), mesh.venue.market()
    _, start = mesh.venue_holdings()
    gone = mesh.buy_at_ask("ft-gone", first)  # fails on chain after it was counted
    kept = mesh.buy_at_ask("ft-kept", first)  # stays pending
    settled = mesh.buy_at_ask("ft-settled", second)  # confirmed
    yes_first, yes_second = tokens(first)[0], tokens(second)[0]
    counted = mesh.executor_positions()
    assert counted[yes_first][:2] == (D(10), D(10)) and counted[yes_second][:2] == (D(5), D(5))  # all pending

    assert mesh.venue.admin("fail-trade", trade=gone)["status"] == "FAILED"
    assert mesh.venue.admin("confirm-trade", trade=settled)["status"] == "CONFIRMED"

    trades = {t["id"]: t for t in mesh.account.get_trades()}
    assert trades[gone]["status"] == "FAILED" and trades[settled]["status"] == "CONFIRMED"
    assert trades[kept]["status"] in ("MATCHED", "MINED")
    live = [t for t in trades.values() if t["status"] != "FAILED"]
    shares, collateral = mesh.venue_holdings()
    assert shares == {yes_first: D(5), yes_second: D(5)}  # the venue gave the failed trade's shares back
    paid = sum((D(t["size"]) * D(t["price"]) for t in live), D(0))
    expected = {yes_first: (D(5), D(5), D(5) * D(trades[kept]["price"])),
                yes_second: (D(5), D(0), D(5) * D(trades[settled]["price"]))}

    def agreed() -> bool:
        return ({t: f[:3] for t, f in mesh.executor_positions().items()} == expected
                and {t: f[:3] for t, f in mesh.risk_positions().items()} == expected)
    wait_for(agreed, what="the executor and risk to reverse the failed fill and settle the confirmed one")
    ours = mesh.executor_positions()
    fees = sum((f[3] for f in ours.values()), D(0))
    assert collateral == start - paid - fees  # the money: the failed trade's price and fee came back
    assert mesh.risk_positions() == ours
    wait_for(lambda: {t: f[:3] for t, f in mesh.cli_positions().items()} == expected,
             what="analytics to reverse the failed fill")
    assert {t: f[3] for t, f in mesh.cli_positions().items()} == {t: f[3] for t, f in ours.items()}
    statuses = mesh.ask("analytics", m.QueryRequest(
        sql="SELECT trade_id, status FROM executions WHERE kind = 'FillStatus' AND seq IS NOT NULL ORDER BY seq"))
    assert isinstance(statuses, m.QueryReply) and statuses.rows == [[gone, "FAILED"], [settled, "CONFIRMED"]]

    mesh.stop("executor")  # a restart rebuilds the same positions from the journal
    mesh.start("executor")
    mesh.wait_ready("executor")
    assert mesh.executor_positions() == ours
    wait_for(lambda: mesh.risk_positions() == ours, what="risk to take the restarted executor's account")
    assert {t: f[:3] for t, f in mesh.cli_positions().items()} == expected
    assert mesh.venue_holdings() == (shares, collateral)
