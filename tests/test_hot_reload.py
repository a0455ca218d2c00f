"""Hot reload: `polybot restart strategies` while the rest of the mesh keeps running. The scanner is neither
restarted nor slowed (every book update it publishes meanwhile reaches its other subscribers), every signal
risk accepted before the restart still goes out, and the new strategies process trades the next gap."""
from __future__ import annotations

from decimal import Decimal as D

from py_clob_client_v2.clob_types import TradeParams

from .conftest import wait_for
from .test_trade_e2e import Up, cli_json


def counters(up: Up) -> dict:
    rows = up.mesh.status()
    return {"scanner_pid": rows["scanner"]["pid"], "strategies_pid": rows["strategies"]["pid"],
            "scanner_sent": rows["scanner"]["sockets"]["prices"]["sent"],
            "analytics_heard": rows["analytics"]["sockets"]["prices"]["received"],
            "analytics_lost": rows["analytics"]["sockets"]["prices"]["dropped"],
            "accepted": int(rows["risk"]["detail"]["accepted"]), "synced": rows["strategies"]["detail"].get("synced"),
            "state": rows["strategies"]["state"]}


def test_restarting_the_strategies_loses_nothing_the_scanner_sent_or_risk_accepted(mesh_factory) -> None:
    up = Up(mesh_factory)
    market = up.market["conditionId"]

    def filled(size: int):
        trades = up.client.get_trades(TradeParams(market=market))
        return trades if all(sum(D(t["size"]) for t in trades if t["asset_id"] == tok) == size
                             for tok in (up.yes, up.no)) else None
    up.open_gap()
    wait_for(lambda: filled(30), what="the first gap traded", timeout=15)
    before = counters(up)
    assert before["accepted"] >= 1
    restarted = up.mesh.cli("restart", "strategies")
    assert restarted.returncode == 0, restarted.stderr
    during = wait_for(lambda: (c := counters(up))["strategies_pid"] != before["strategies_pid"]
                      and c["state"] == "running" and c["synced"] == "True" and c, what="a new strategies process")
    assert during["scanner_pid"] == before["scanner_pid"]  # the scanner kept running
    up.open_gap()  # the new process trades the next gap: 30 more of each
    wait_for(lambda: filled(60), what="the second gap traded by the restarted strategies", timeout=15)
    after = wait_for(lambda: (c := counters(up))["analytics_heard"] - before["analytics_heard"]
                     == c["scanner_sent"] - before["scanner_sent"] and c, what="analytics to hear every update",
                     timeout=15)
    assert after["scanner_sent"] > before["scanner_sent"] and after["analytics_lost"] == before["analytics_lost"]
    # Every accepted signal went out: each of its orders is at the venue (filled), none was lost in the restart.
    orders = cli_json(up.mesh, "orders", "--market", market)
    assert len(orders) == 2 * after["accepted"] and all(o["status"] == "filled" for o in orders)
