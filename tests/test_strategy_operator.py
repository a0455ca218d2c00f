"""The operator decides what runs, end to end on a real mesh trading on the local venue.

A strategy written here is proposed into the store as the MCP server's propose_strategy does (pending only); the
operator looks at it, approves it with a budget within their own limits (`polybot strategy approve`), and it runs in
a process of its own, trading through risk under its own source; its approval and code hash are in the audit log. A
new version replaces it hot (only its process restarts); absurd signals are refused under its budget; `stop` ends it
and cancels its orders; a file changed after its approval does not run, and says why."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path

import httpx
import msgspec
import pytest

from services.strategies.store import Budget, Store

from .conftest import Mesh, child_env, free_port, risk_takes_signals, wait_for

SEED = 71

# Buys `size` of the first outcome of `market` at its best ask once (it fills at once), and rests a bid on the
# second outcome at half its best bid (it stays open).
TAKER = '''from decimal import Decimal

import polybot_strategy as ps


class TakerParams(ps.Params):
    market: str = ""
    size: Decimal = Decimal("5")


class Taker(ps.Strategy):
    name = "taker"
    Params = TakerParams

    def __init__(self, params):
        super().__init__(params)
        self.done = set()

    def on_message(self, msg):
        self.track(msg)
        market = self.markets.get(self.params.market)
        if market is None or self.params.market in self.done or not self.tradeable(market.market):
            return []
        first, second = (o.token_id for o in market.outcomes)
        ask, bid = self.books.best_ask(first), self.books.best_bid(second)
        if ask is None or bid is None:
            return []
        self.done.add(market.market)
        rest = max(market.tick_size, ps.round_price(bid[0] / 2, market.tick_size, "BUY"))
        return [ps.signal(self, msg, [ps.buy(first, self.params.size, ask[0], market=market.market)], "take"),
                ps.signal(self, msg, [ps.buy(second, market.min_size, rest, market=market.market)], "rest")]
'''

# Once, it sends a signal that claims to come from someone else.
IMPOSTOR = '''import polybot_strategy as ps


class Impostor(ps.Strategy):
    name = "impostor"
    Params = ps.Params

    def __init__(self, params):
        super().__init__(params)
        self.sent = False

    def on_message(self, msg):
        if self.sent or not isinstance(msg, ps.BookSnapshot):
            return []
        self.sent = True
        return [ps.Signal(source="mcp:someone-else", legs=[ps.buy("no-such-token", 5, "0.5")], rationale="not me")]
'''


class Operated:
    """`polybot up` with the local venue, the audit service, and no strategies of its own."""

    def __init__(self, root: Path) -> None:
        ports = {"gamma_port": free_port(), "clob_port": free_port(), "ws_port": free_port()}
        options = ", ".join(f"{k} = {v}" for k, v in ports.items())
        self.mesh = Mesh(root / "state", '[services.strategies]\nenabled = false\n'
                                         '[services.audit]\nkind = "services.audit:Audit"\n',
                         venue=f"true\noptions = {{ {options}, seed = {SEED}, still = true }}")
        self.store = Store(self.mesh.state)
        self.mesh.start()
        wait_for(self.ready, what="the mesh to run and risk to take signals", timeout=60)
        gamma = f"http://127.0.0.1:{ports['gamma_port']}"
        self.markets = [mk["conditionId"] for mk in httpx.get(f"{gamma}/markets", params={"limit": 100}).json()
                        if not mk["negRisk"] and mk.get("acceptingOrders", True)]

    def ready(self) -> bool:
        rows = self.status()
        wanted = {"venue", "analytics", "scanner", "executor", "risk", "audit"}
        return wanted <= set(rows) and all(rows[n]["state"] == "running" for n in wanted) \
            and risk_takes_signals(rows["risk"]["detail"])

    def status(self) -> dict[str, dict]:
        try:
            return self.mesh.status()
        except (ValueError, KeyError):
            return {}

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return self.mesh.cli(*args)

    def json(self, *args: str) -> list[dict]:
        result = self.cli(*args, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def propose(self, name: str, code: str, class_name: str, params: dict, markets: list[str]) -> str:
        """What propose_strategy does: a pending version in the store, nothing more."""
        budget = Budget(max_order_notional=D("10"), max_gross_exposure=D("30"), max_open_orders=4)
        record = self.store.propose(name, code, class_name, params, markets, budget, by="mcp:test-agent",
                                    rationale="written by the test", backtest={"signals": 2, "fills": 1,
                                                                               "refusals": {"STALE_BOOK": 1}})
        return record.sha256

    def running(self, service: str) -> dict | None:
        row = self.status().get(service)
        return row if row and row["state"] == "running" and row["pid"] else None

    def audited(self, kind: str) -> list[dict]:
        path = self.mesh.state / "audit" / "audit.jsonl"
        lines = path.read_bytes().splitlines() if path.exists() else []
        return [e["msg"] for e in map(msgspec.json.decode, lines) if e["type"] == kind]

    def source_orders(self, source: str, status: str = "") -> list[dict]:
        return [o for o in self.json("orders", "--status", status, "--limit", "500") if o["source"] == source]


@pytest.fixture(scope="module")
def operated(request: pytest.FixtureRequest) -> Iterator[Operated]:
    root = Path(tempfile.mkdtemp(prefix="pbop-", dir="/tmp"))  # ipc socket paths must stay under 107 bytes
    up = None
    try:
        up = Operated(root)
        request.node.meshes = [up.mesh]
        yield up
    finally:
        if up is not None:
            up.mesh.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_an_approved_strategy_trades_under_its_budget_is_replaced_hot_and_stops_with_its_orders(operated) -> None:
    up, market = operated, operated.markets[0]
    first = up.propose("taker", TAKER, "Taker", {"market": market}, [market])
    listed = {r["name"]: r for r in up.json("strategy", "list")}
    assert listed["taker"]["state"] == "pending" and listed["arbitrage"]["state"] == "shipped"
    shown = up.cli("strategy", "show", "taker")
    assert shown.returncode == 0 and first in shown.stdout and "class Taker(ps.Strategy)" in shown.stdout
    assert "mcp:test-agent" in shown.stdout and "refusals: STALE_BOOK=1" in shown.stdout

    # Not above the operator's own limit (risk's max_order_notional is 250 by default), and nothing is approved.
    over = up.cli("strategy", "approve", "taker", "--budget", "max_order_notional=300")
    assert over.returncode == 1 and "max_order_notional 300 is above the operator's limit 250" in over.stderr
    assert up.store.get("taker").state == "pending" and "strategy_taker" not in up.status()
    stale = up.cli("strategy", "approve", "taker", "--sha", "0" * 12)
    assert stale.returncode == 1 and "look at it again" in stale.stderr

    before = {name: row["pid"] for name, row in up.status().items()}
    approved = up.cli("strategy", "approve", "taker", "--sha", first[:12], "--budget", "max_order_notional=8")
    assert approved.returncode == 0, approved.stderr
    assert "starting strategy_taker" in approved.stdout
    taker = wait_for(lambda: up.running("strategy_taker"), what="strategy_taker to run in a process of its own")
    assert taker["pid"] not in before.values() and taker["detail"]["strategies"] == "taker"

    # It trades through risk on the venue: the buy fills, the bid rests, both under strategy:taker.
    fills = wait_for(lambda: [f for f in up.json("fills", "--market", market) if f["source"] == "strategy:taker"],
                     what="the taker's fill", timeout=20)
    assert sum(D(f["size"]) for f in fills) == 5
    resting, = wait_for(lambda: up.source_orders("strategy:taker", "open"), what="the taker's resting bid")
    assert resting["side"] == "BUY" and D(resting["size"]) == 5
    by_source = {r["source"]: r for r in up.json("pnl", "--by", "source")}
    assert "strategy:taker" in by_source and D(by_source["strategy:taker"]["fees"]) >= 0
    risk = up.json("risk")
    assert any(u["name"] == "strategy.max_open_orders" and u["scope"] == "strategy:taker" for u in risk["usage"])

    # The approval is in the audit log with the code's hash; the chain verifies.
    approval, = wait_for(lambda: up.audited("StrategyApproved"), what="the approval in the audit log")
    assert (approval["name"], approval["sha256"], approval["budget"]["max_order_notional"]) == ("taker", first, "8")
    verified = up.cli("audit", "verify")
    assert verified.returncode == 0, verified.stderr

    # A new version that sends absurd sizes: hot-replaced (only its process restarts), then refused by its budget.
    second = up.propose("taker", TAKER.replace('size: Decimal = Decimal("5")', 'size: Decimal = Decimal("900000")'),
                        "Taker", {"market": market}, [market])
    diff = up.cli("strategy", "show", "taker")
    assert '-    size: Decimal = Decimal("5")' in diff.stdout
    assert '+    size: Decimal = Decimal("900000")' in diff.stdout
    others = {n: r["pid"] for n, r in up.status().items() if n not in ("strategy_taker", "supervisor")}
    replaced = up.cli("strategy", "approve", "taker", "--sha", second[:12])
    assert replaced.returncode == 0 and "restarting strategy_taker" in replaced.stdout, replaced.stderr
    wait_for(lambda: (row := up.running("strategy_taker")) and row["pid"] != taker["pid"],
             what="the new version in a new process")
    assert {n: r["pid"] for n, r in up.status().items() if n in others} == others  # the rest of the mesh ran on

    def refused() -> list:
        return up.json("query", "SELECT r.code FROM verdict_reasons r JOIN verdicts v ON v.id = r.verdict_id "
                                "WHERE v.source = 'strategy:taker' AND r.code = 'STRATEGY_ORDER_NOTIONAL'")
    assert wait_for(refused, what="the absurd signal refused under the taker's budget")
    assert sum(D(f["size"]) for f in up.json("fills", "--market", market) if f["source"] == "strategy:taker") == 5
    assert [a["sha256"] for a in up.audited("StrategyApproved")] == [first, second]
    recorded = wait_for(lambda: len(rows := up.json("query", "SELECT name, sha256, budget FROM strategy_approvals "
                                                              "ORDER BY seq")) == 2 and rows,
                        what="analytics to record both approvals")
    assert [(r["name"], r["sha256"]) for r in recorded] == [("taker", first), ("taker", second)]
    assert "max_order_notional=8" in recorded[0]["budget"]

    # Stop: its signals refused, its resting bid canceled, its process gone.
    stopped = up.cli("strategy", "stop", "taker")
    assert stopped.returncode == 0 and "stopping strategy_taker" in stopped.stdout, stopped.stderr
    wait_for(lambda: not up.source_orders("strategy:taker", "open"), what="the taker's resting bid canceled")
    assert up.source_orders("strategy:taker", "canceled")
    wait_for(lambda: "strategy_taker" not in up.status(), what="strategy_taker's process stopped")
    assert {r["name"]: r["state"] for r in up.json("strategy", "list")}["taker"] == "stopped"
    assert up.cli("audit", "verify").returncode == 0


def test_a_strategy_speaks_only_for_itself_and_a_file_changed_after_approval_does_not_run(operated) -> None:
    up = operated
    up.propose("impostor", IMPOSTOR, "Impostor", {}, [])
    assert up.cli("strategy", "approve", "impostor").returncode == 0
    wait_for(lambda: up.running("strategy_impostor"), what="strategy_impostor to run")
    sources = wait_for(lambda: up.json("query", "SELECT s.source FROM signals s WHERE s.rationale = 'not me'"),
                       what="the impostor's signal decided")
    assert sources == [{"source": "strategy:impostor"}]  # stamped with its own source by its host

    approved = up.mesh.state / "strategies" / "impostor" / "approved.py"
    approved.write_text(IMPOSTOR + "\nimport os  # added after the approval\n")
    assert up.cli("restart", "strategy_impostor").returncode == 0
    row = wait_for(lambda: (r := up.status().get("strategy_impostor")) and r["state"] == "down" and r["last_error"]
                   and r, what="strategy_impostor refused with a reason")
    assert "not the version approved" in row["last_error"] and row["pid"] == 0
    note = {r["name"]: r for r in up.json("strategy", "list")}["impostor"]["note"]
    assert "does not run" in note and "approve it again" in note
    status = up.cli("status")
    assert status.returncode == 3 and "not the version approved" in status.stdout
    assert "stopping strategy_impostor" in up.cli("strategy", "stop", "impostor").stdout


def test_strategy_new_writes_a_strategy_and_a_test_that_pass_as_written(tmp_path: Path) -> None:
    made = subprocess.run([sys.executable, "-m", "services", "--config", "/dev/null", "strategy", "new", "spread_bid",
                           "--dir", str(tmp_path)], env=child_env(), capture_output=True, text=True, timeout=30)
    assert made.returncode == 0, made.stderr
    assert {p.name for p in tmp_path.iterdir()} == {"spread_bid.py", "test_spread_bid.py"}
    tested = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_spread_bid.py"],
                            cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=60)
    assert tested.returncode == 0 and "2 passed" in tested.stdout, tested.stdout + tested.stderr
    again = subprocess.run([sys.executable, "-m", "services", "--config", "/dev/null", "strategy", "new", "spread_bid",
                            "--dir", str(tmp_path)], env=child_env(), capture_output=True, text=True, timeout=30)
    assert again.returncode == 1 and "already there" in again.stderr


# An agent's idea, none of ours: in its market, take the first outcome at the ask once, when the spread is at most
# `max_spread_ticks`; and once, a signal far beyond any budget (risk must refuse it, in the backtest and live).
TIGHT = '''from decimal import Decimal

import polybot_strategy as ps


class TightParams(ps.Params):
    market: str = ""  # "": the first market it sees
    size: Decimal = Decimal("5")
    max_spread_ticks: int = 3


class Tight(ps.Strategy):
    name = "tight"
    Params = TightParams

    def __init__(self, params):
        super().__init__(params)
        self.taken = False

    def on_message(self, msg):
        out = []
        for token in self.track(msg):
            market = self.markets.get(self.token_market.get(token, ""))
            if market is None or token != market.outcomes[0].token_id or not self.tradeable(market.market):
                continue
            if self.params.market and market.market != self.params.market:
                continue
            bid, ask = self.books.best_bid(token), self.books.best_ask(token)
            if bid is None or ask is None or ask[0] - bid[0] > market.tick_size * self.params.max_spread_ticks:
                continue
            if not self.taken:
                self.taken = True
                out.append(ps.signal(self, msg, [ps.buy(token, 1000000, ask[0], market=market.market)], "too big"))
                out.append(ps.signal(self, msg, [ps.buy(token, self.params.size, ask[0], market=market.market)],
                                     "tight spread"))
        return out
'''


def test_an_agent_writes_checks_backtests_and_proposes_a_strategy_the_operator_approves_and_it_trades(
        operated) -> None:
    """The whole loop through a real MCP client: the agent's code is checked and backtested contained (risk's
    refusals by code in the report), proposed (pending only); the operator approves it with the CLI; it trades on
    the local venue through risk, its fills and PnL under strategy:tight, its absurd signal refused by its budget."""
    import anyio
    from mcp.client.client import Client

    from polybot_mcp.server import build
    from services.backtest import simulated
    from services.config import load

    from .test_mcp_tools import ok

    up, market = operated, operated.markets[1]
    config = load(up.mesh.config, {"HOME": str(up.mesh.state.parent)})
    simulated.generate(config.state_path / "recordings" / "agent-sim", seed=5, seconds=60, markets=4, events=1,
                       outcomes=3)

    async def agent_session() -> list:
        async with Client(build(config)) as client:
            return [await client.call_tool(tool, args) for tool, args in (
                ("check_strategy", {"code": TIGHT}),
                ("backtest_strategy", {"code": TIGHT, "recording": "agent-sim"}),
                ("propose_strategy", {"name": "tight", "code": TIGHT, "params": {"market": market},
                                      "markets": [market], "rationale": "tight spreads revert less",
                                      "budget": {"max_order_notional": "10", "max_open_orders": "2"},
                                      "recording": "agent-sim"}),
                ("list_strategies", {}))]
    checked, tested, proposed, listed = (ok(answer) for answer in anyio.run(agent_session))
    assert checked["ok"] is True and checked["problems"] == [], checked
    assert tested["refusals_by_code"].get("ORDER_NOTIONAL", 0) >= 1, tested  # risk's own check, in the backtest
    assert tested["risk_refusals"].get("ORDER_NOTIONAL", 0) >= 1 and tested["trades"] >= 1, tested
    sha = proposed["sha256"]
    assert up.store.get("tight").state == "pending" and up.store.get("tight").pending.sha256 == sha
    assert not (up.mesh.state / "strategies" / "tight" / "approved.py").exists()  # the agent cannot approve
    assert {r["name"]: r["state"] for r in listed["strategies"]}["tight"] == "pending"
    assert "strategy_tight" not in up.status()

    approved = up.cli("strategy", "approve", "tight", "--sha", sha[:12])
    assert approved.returncode == 0, approved.stderr
    wait_for(lambda: up.running("strategy_tight"), what="strategy_tight to run in a process of its own")
    fills = wait_for(lambda: [f for f in up.json("fills", "--market", market) if f["source"] == "strategy:tight"],
                     what="the agent's strategy to fill", timeout=30)
    assert sum(D(f["size"]) for f in fills) == 5
    assert "strategy:tight" in {r["source"] for r in up.json("pnl", "--by", "source")}
    refused = wait_for(lambda: up.json("query", "SELECT r.code FROM verdict_reasons r JOIN verdicts v ON "
                                                "v.id = r.verdict_id WHERE v.source = 'strategy:tight'"),
                       what="its absurd signal refused")
    assert {"code": "STRATEGY_ORDER_NOTIONAL"} in refused
    assert "stopping strategy_tight" in up.cli("strategy", "stop", "tight").stdout
