"""Property: random signal streams from several processes at once never take the mesh past a limit.

The test rebuilds exposure on its own from what it sees on ``decisions`` and ``executions``, in origin-time
order: an accepted order adds its size at its limit; a fill turns that into shares at the fill's price; a
cancel or rejection takes the rest away. Risk decides knowing at most what came before it, so what the test
computes at each acceptance is never more than what risk saw: any excess here is a real breach.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from decimal import Decimal as D
from pathlib import Path

import httpx

from services import messages as m

from .conftest import ROOT, child_env, wait_for
from .trading_harness import Trading
from .venue_harness import Venue, tokens

LIMITS = {"max_order_notional": D(12), "max_position_per_token": D(15), "max_position_per_market": D(25),
          "max_gross_exposure": D(60), "max_open_orders": 10, "max_signals_per_minute": 25}
AGENT = {"max_order_notional": D(5), "max_daily_notional": D(15), "max_signals_per_minute": 12}
SOURCES = {"strategy:alpha": 1, "strategy:beta": 2, "mcp:gamma": 3}
PER_SOURCE = 40


def test_random_signal_streams_from_several_sources_at_once_never_breach_a_limit(tmp_path_factory) -> None:
    root = Path(os.path.realpath(tmp_path_factory.mktemp("prop")))
    venue = Venue(root / "venue", 44)
    env = {**{f"POLYBOT_SERVICES__RISK__OPTIONS__LIMITS__{k.upper()}": str(v) for k, v in LIMITS.items()},
           **{f"POLYBOT_SERVICES__RISK__OPTIONS__AGENT__{k.upper()}": str(v) for k, v in AGENT.items()}}
    mesh = Trading(root, venue, {"scanner": "", "executor": "", "risk": ""})
    try:
        mesh.start("scanner", "executor")
        mesh.wait_ready("scanner", "executor")
        mesh.start("risk", **env)
        mesh.wait_ready("risk")
        decisions, executions = mesh.bus.inbound("decisions"), mesh.bus.inbound("executions")
        wait_for(lambda: decisions.socket.pipes and executions.socket.pipes, what="the test's subscriptions")
        books, token_market = {}, {}
        for market in venue.markets[:3]:
            for token in tokens(market):
                book = httpx.get(f"{venue.clob}/book", params={"token_id": token}).json()
                books[token] = [market["conditionId"], max(b["price"] for b in book["bids"]),
                                min(a["price"] for a in book["asks"])]
                token_market[token] = market["conditionId"]
        pushers = [subprocess.Popen([sys.executable, "-m", "tests.signal_pusher", str(mesh.config_file), source,
                                     str(seed), str(PER_SOURCE), json.dumps(books)], cwd=ROOT, env=child_env())
                   for source, seed in SOURCES.items()]
        for pusher in pushers:
            assert pusher.wait(90) == 0
        seen: list[m.Message] = []

        def settled() -> bool:
            seen.extend(x for x in decisions.drain() + executions.drain() if not isinstance(x, m.Heartbeat))
            accepted = [o.id for v in seen if isinstance(v, m.SignalAccepted) for o in v.orders
                        if o.order_type == "FOK"]
            done = {e.order_id for e in seen if isinstance(e, (m.Fill, m.OrderCanceled, m.OrderRejected))}
            verdicts = sum(isinstance(v, (m.SignalAccepted, m.SignalRejected)) for v in seen)
            return verdicts == PER_SOURCE * len(SOURCES) and all(o in done for o in accepted)
        wait_for(settled, what="every verdict, and the end of every FOK order", timeout=60)
    finally:
        mesh.close()
        venue.stop()

    seen.sort(key=lambda x: x.ts_ns)
    cost: dict[str, D] = defaultdict(D)  # token -> shares bought, at their price
    open_orders: dict[str, list] = {}  # order id -> [token, remaining, limit]
    accepted_per_source: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for msg in seen:
        if isinstance(msg, m.Fill) and msg.order_id in open_orders:
            cost[msg.token_id] += msg.size * msg.price
            open_orders[msg.order_id][1] -= msg.size
            if open_orders[msg.order_id][1] <= 0:
                del open_orders[msg.order_id]
        elif isinstance(msg, (m.OrderCanceled, m.OrderRejected)):
            open_orders.pop(msg.order_id, None)
        elif isinstance(msg, m.SignalRejected):
            reasons.update(r.code for r in msg.reasons)
        elif isinstance(msg, m.SignalAccepted):
            accepted_per_source[msg.source] += 1
            for order in msg.orders:
                assert order.size * order.limit_price <= LIMITS["max_order_notional"]
                if msg.source.startswith("mcp:"):
                    assert order.size * order.limit_price <= AGENT["max_order_notional"]
                open_orders[order.id] = [order.token_id, order.size, order.limit_price]
            exposure = defaultdict(D, cost)
            for token, remaining, limit in open_orders.values():
                exposure[token] += max(remaining, D(0)) * limit
            per_market: dict[str, D] = defaultdict(D)
            for token, value in exposure.items():
                per_market[token_market[token]] += value
            assert max(exposure.values()) <= LIMITS["max_position_per_token"], msg
            assert max(per_market.values()) <= LIMITS["max_position_per_market"], msg
            assert sum(exposure.values()) <= LIMITS["max_gross_exposure"], msg
            assert len(open_orders) <= LIMITS["max_open_orders"], msg
    agent_spent = sum(o.size * o.limit_price for v in seen if isinstance(v, m.SignalAccepted)
                      and v.source == "mcp:gamma" for o in v.orders)
    assert agent_spent <= AGENT["max_daily_notional"]
    assert all(n <= LIMITS["max_signals_per_minute"] for s, n in accepted_per_source.items() if s.startswith("strat"))
    assert accepted_per_source["mcp:gamma"] <= AGENT["max_signals_per_minute"]
    # The streams were hard enough to meet the limits, and some got through: this run tested something.
    assert sum(accepted_per_source.values()) >= 5
    assert {"SIGNAL_RATE", "POSITION_TOKEN", "GROSS_EXPOSURE"} & set(reasons), reasons
