"""End to end: `polybot up` with the default services and the embedded local venue trades an arbitrage gap by
itself; every leg fills, DuckDB's positions and PnL match the venue's own trade records exactly, and
`polybot trace` draws every hop of the signal."""
from __future__ import annotations

import json
import re
from decimal import Decimal as D

import httpx
from py_clob_client_v2 import ClobClient
from py_clob_client_v2.clob_types import TradeParams

from polybot_venue.engine import taker_fee
from polybot_venue.server import ready_made_account

from .conftest import Mesh, risk_takes_signals, wait_for
from .conftest import free_port

SEED = 53


class Up:
    """`polybot up` with the default services and an embedded, still local venue on free ports."""

    def __init__(self, mesh_factory, mode: str = "", venue: str = "still = true") -> None:
        ports = {"gamma_port": free_port(), "clob_port": free_port(), "ws_port": free_port()}
        options = ", ".join(f"{k} = {v}" for k, v in ports.items())
        self.mesh: Mesh = mesh_factory(venue=f"true\noptions = {{ {options}, seed = {SEED}, {venue} }}")
        if mode:
            self.mesh.config.write_text(f'mode = "{mode}"\n' + self.mesh.config.read_text())
        self.mesh.start()
        wait_for(lambda: ready(self.mesh), what="every default service to run and sync", timeout=60)
        self.clob = f"http://127.0.0.1:{ports['clob_port']}"
        gamma = f"http://127.0.0.1:{ports['gamma_port']}"
        self.binary = [mk for mk in httpx.get(f"{gamma}/markets", params={"limit": 100}).json() if not mk["negRisk"]]
        self.market = self.binary[0]
        self.yes, self.no = json.loads(self.market["clobTokenIds"])
        client = ClobClient(self.clob, chain_id=137, key=ready_made_account(SEED).private_key)
        client.set_api_creds(client.create_or_derive_api_key())
        self.client = client  # the venue's own view of the account the executor trades for

    def open_gap(self, market: str = "") -> dict:
        """Offer YES and NO at asks summing to 0.92, 30 shares each; the venue's answer says what it offered."""
        answer = httpx.post(f"{self.clob}/_admin/gap", json={"market": market or self.market["conditionId"],
                                                              "gap": "0.08", "size": "30"})
        assert answer.status_code == 200 and "sum" in answer.json(), answer.text
        return answer.json()


def ready(mesh: Mesh) -> bool:
    try:
        rows = mesh.status()
    except (ValueError, KeyError):
        return False
    wanted = {"venue", "analytics", "scanner", "executor", "risk", "strategies"}
    heard = rows.get("analytics", {}).get("sockets", {})  # analytics hears risk and the executor: nothing missed
    return wanted <= set(rows) and all(rows[n]["state"] == "running" for n in wanted) \
        and risk_takes_signals(rows["risk"]["detail"]) and rows["strategies"]["detail"].get("synced") == "True" \
        and all(heard.get(sock, {}).get("received", 0) > 0 for sock in ("decisions", "executions"))


def fee(trade: dict) -> D:
    """The venue's fee for one of its trade records: the taker pays, by Polymarket's formula."""
    if trade["trader_side"] != "TAKER":
        return D(0)
    return taker_fee(D(trade["size"]), D(trade["price"]), D(trade["fee_rate_bps"]) / 10_000)


def cli_json(mesh: Mesh, *args: str) -> list[dict]:
    result = mesh.cli(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_polybot_up_trades_a_venue_gap_to_fills_that_duckdb_and_the_trace_account_for(mesh_factory) -> None:
    up = Up(mesh_factory)
    mesh, market, yes, no, client = up.mesh, up.market, up.yes, up.no, up.client
    assert D(up.open_gap()["sum"]) == D("0.92")

    def venue_trades() -> list[dict]:
        trades = client.get_trades(TradeParams(market=market["conditionId"]))
        return trades if {t["asset_id"] for t in trades} == {yes, no} and \
            all(sum(D(t["size"]) for t in trades if t["asset_id"] == tok) == 30 for tok in (yes, no)) else []
    trades = wait_for(venue_trades, what="both legs to fill at the venue", timeout=15)

    def analytics_positions() -> list[dict]:
        rows = [r for r in cli_json(mesh, "positions") if r["market"] == market["conditionId"]]
        return rows if len(rows) == 2 and all(D(r["size"]) == 30 for r in rows) else []
    positions = {r["token_id"]: r for r in wait_for(analytics_positions, what="DuckDB to hold both legs")}
    for token in (yes, no):
        legs = [t for t in trades if t["asset_id"] == token]
        cost = sum(D(t["size"]) * D(t["price"]) for t in legs)
        fees = sum(fee(t) for t in legs)
        row = positions[token]
        assert (D(row["size"]), D(row["cost"]), D(row["fees"])) == (D(30), cost, fees)
        assert D(row["realized"]) == -fees
    pnl, = [r for r in cli_json(mesh, "pnl", "--by", "market") if r["market"] == market["conditionId"]]
    assert D(pnl["fees"]) == sum(fee(t) for t in trades) > 0
    assert D(pnl["open_cost"]) == sum(D(t["size"]) * D(t["price"]) for t in trades)

    signal_id = cli_json(mesh, "orders", "--market", market["conditionId"])[0]["signal_id"]
    drawn = mesh.cli("trace", signal_id)
    assert drawn.returncode == 0, drawn.stderr
    hops = [re.split(r"\s{2,}", line) for line in drawn.stdout.splitlines() if line.startswith("T+")]
    kinds = [hop[1] for hop in hops]
    assert kinds[:2] == ["book update", "signal"] and hops[0][2] == "scanner", drawn.stdout
    assert [kinds.count(k) for k in ("verdict", "order", "submitted", "ack", "fill")] == [1, 2, 2, 2, 2], drawn.stdout
    times = [float(hop[0].removeprefix("T+").removesuffix(" ms")) for hop in hops]
    assert times == sorted(times) and times[0] == 0 and times[-1] > 0
    # What the mesh wrote (logs, the executor's journal, DuckDB, risk's day.json, sockets) is the user's alone.
    written = [p for p in mesh.state.rglob("*") if not p.is_dir()]
    assert {p.name for p in written} >= {"day.json", "journal-live.jsonl"}
    assert any(p.suffix == ".duckdb" for p in written) and any(p.parent.name == "logs" for p in written)
    opened = {str(p.relative_to(mesh.state)): oct(p.lstat().st_mode & 0o777) for p in written if p.lstat().st_mode & 0o077}
    assert not opened, f"files others may read: {opened}"


def test_in_paper_mode_the_same_gap_fills_at_the_prices_the_book_showed_never_better(mesh_factory) -> None:
    up = Up(mesh_factory, mode="paper")
    mesh, market, yes, no = up.mesh, up.market, up.yes, up.no
    up.open_gap()
    shown = {tok: {D(a["price"]): D(a["size"]) for a in httpx.get(f"{up.clob}/book", params={"token_id": tok})
                   .json()["asks"]} for tok in (yes, no)}

    def paper_fills() -> list[dict]:
        rows = cli_json(mesh, "fills", "--market", market["conditionId"])
        return rows if {r["token_id"] for r in rows} == {yes, no} else []
    fills = wait_for(paper_fills, what="paper fills of both legs", timeout=15)
    for token in (yes, no):
        taken: dict[D, D] = {}
        for row in (r for r in fills if r["token_id"] == token):
            price, size = D(row["price"]), D(row["size"])
            assert price >= min(shown[token]) and price in shown[token]  # a price the book showed, never better
            taken[price] = taken.get(price, D(0)) + size
            assert D(row["fee"]) == taker_fee(size, price, D(str(market["feeSchedule"]["rate"])))
        assert all(size <= shown[token][price] for price, size in taken.items())  # never more than displayed
        assert sum(taken.values()) == 30
    assert up.client.get_trades() == []  # paper trading never touched the venue
