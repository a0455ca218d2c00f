"""Strategies: the arbitrage class on its own, and scanner -> strategies across processes on a venue gap."""
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

from services import messages as m
from services.bus import Bus
from services.config import ensure_state_dir, load
from services.strategies.arbitrage import Arbitrage, ArbitrageParams
from services.strategies.quoter import Quoter, QuoterParams

from .conftest import child_env, wait_for
from .venue_harness import Venue, mesh_config, tokens


def market(cid: str, fee: str = "0.05", neg_risk_id: str = "") -> m.MarketNew:
    return m.MarketNew(market=cid, question="?", outcomes=[m.Outcome(token_id=f"{cid}-y", name="Yes"),
                                                           m.Outcome(token_id=f"{cid}-n", name="No")],
                       fee_rate=D(fee), neg_risk=bool(neg_risk_id), neg_risk_market_id=neg_risk_id)


def asks(ts: int, **books: tuple[str, str]) -> m.BookSnapshot:
    return m.BookSnapshot(ts_ns=ts, books=[m.Book(token_id=t, market=t[:-2], bids=[],
                                                  asks=[m.Level(D(p), D(s))]) for t, (p, s) in books.items()])


def test_a_binary_gap_after_fees_gives_one_two_leg_fok_signal_and_a_gap_fees_eat_gives_none() -> None:
    arb = Arbitrage(ArbitrageParams(min_edge=D("0.005"), max_size=D(40)))
    arb.on_message(market("a"))
    assert arb.on_message(asks(1, **{"a-y": ("0.50", "100"), "a-n": ("0.48", "100")})) == []  # fees 0.0499 > 0.02
    signal, = arb.on_message(asks(2, **{"a-y": ("0.45", "30"), "a-n": ("0.50", "100")}))
    assert [(leg.token_id, leg.side, leg.size, leg.limit_price, leg.order_type) for leg in signal.legs] == [
        ("a-y", "BUY", D(30), D("0.45"), "FOK"), ("a-n", "BUY", D(30), D("0.50"), "FOK")]
    assert signal.source == "strategy:arbitrage" and signal.cause_ts_ns == 2
    assert arb.on_message(asks(3, **{"a-y": ("0.45", "30")})) == []  # within the cooldown


def test_fok_legs_at_fine_tick_asks_are_sized_so_every_leg_buys_exactly_that_many_shares() -> None:
    arb = Arbitrage(ArbitrageParams(max_size=D(50)))
    arb.on_message(market("f", fee="0"))
    signal, = arb.on_message(asks(1, **{"f-y": ("0.471", "37"), "f-n": ("0.519", "100")}))
    assert [leg.size for leg in signal.legs] == [D(30), D(30)]  # 37 x 0.471 is not whole cents; 30 x each is
    assert all(leg.size * leg.limit_price % D("0.01") == 0 for leg in signal.legs)
    assert arb.on_message(asks(5_000_000_000, **{"f-y": ("0.471", "9.99")})) == []  # no exact size of 5 or more


def test_an_event_whose_yes_asks_sum_below_one_after_fees_gives_one_leg_per_outcome() -> None:
    arb = Arbitrage()
    for cid in ("e1", "e2", "e3"):
        arb.on_message(market(cid, fee="0.04", neg_risk_id="ev"))
    signal, = arb.on_message(asks(1, **{"e1-y": ("0.30", "60"), "e2-y": ("0.30", "60"), "e3-y": ("0.30", "60")}))
    assert {leg.token_id for leg in signal.legs} == {"e1-y", "e2-y", "e3-y"} and signal.legs[0].size == 50


def test_stale_or_resolved_markets_give_no_signal() -> None:
    arb = Arbitrage()
    arb.on_message(market("a"))
    arb.on_message(m.MarketStale(markets=["a"]))
    assert arb.on_message(asks(1, **{"a-y": ("0.40", "30"), "a-n": ("0.40", "30")})) == []
    assert len(arb.on_message(m.MarketStale(ts_ns=2, markets=["a"], stale=False))) == 1  # fresh: the gap shows
    assert len(arb.on_message(asks(5_000_000_000, **{"a-y": ("0.40", "30")}))) == 1  # after the cooldown
    arb.on_message(m.MarketResolved(market="a", winning_token_id="a-y"))
    assert arb.on_message(asks(9_000_000_000, **{"a-y": ("0.40", "30")})) == []
    assert arb.on_message(m.MarketStale(ts_ns=9_500_000_000, markets=["a"], stale=False)) == []


def test_a_gap_that_came_while_its_market_was_stale_is_signalled_once_the_market_is_fresh() -> None:
    arb = Arbitrage()
    arb.on_message(market("a"))
    arb.on_message(market("b"))
    arb.on_message(m.MarketStale(markets=["a", "b"]))
    # The fresh snapshot after a reconnection can reach the strategy before the scanner's "fresh again".
    assert arb.on_message(asks(1, **{"a-y": ("0.40", "30"), "a-n": ("0.40", "30"),
                                     "b-y": ("0.50", "30"), "b-n": ("0.50", "30")})) == []
    fresh = m.MarketStale(ts_ns=2, markets=["a", "b", "unknown"], stale=False)
    signal, = arb.on_message(fresh)  # b shows no gap; a market it never heard of is skipped
    assert signal.cause_id == fresh.id and signal.cause_ts_ns == 2
    assert {leg.token_id for leg in signal.legs} == {"a-y", "a-n"} and all(leg.size == 30 for leg in signal.legs)


class Mesh:
    def __init__(self, root: Path) -> None:
        self.venue = Venue(root / "venue", 41)
        config_file = mesh_config(root, self.venue, '[services.scanner]\nkind = "services.scanner:Scanner"\n'
                                  '[services.strategies]\nkind = "services.strategies.host:Strategies"\n')
        self.config = load(config_file, {"HOME": str(root)})
        ensure_state_dir(self.config)
        self.bus = Bus(self.config)
        self.signals = self.bus.inbound("signals")  # the test plays risk
        self.procs = [subprocess.Popen([sys.executable, "-m", "services", "--config", str(config_file), "run", name],
                                       env=child_env(), stderr=subprocess.DEVNULL) for name in ("scanner", "strategies")]

    def status(self, name: str) -> dict:
        with self.bus.requester(name, 1000) as req:
            try:
                return req.request(m.StatusRequest()).service.detail
            except Exception:
                return {}

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
            proc.wait(20)
        self.bus.close()
        self.venue.stop()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Iterator[Mesh]:
    mesh = Mesh(Path(os.path.realpath(tmp_path_factory.mktemp("strat"))))
    yield mesh
    mesh.close()


def test_a_venue_gap_reaches_the_signals_socket_as_one_two_leg_signal_from_the_scanners_books(mesh: Mesh) -> None:
    wait_for(lambda: mesh.status("strategies").get("synced") == "True", what="strategies to sync from the scanner")
    target = mesh.venue.market()
    yes, no = tokens(target)
    opened = httpx.post(f"{mesh.venue.clob}/_admin/gap", json={"market": target["conditionId"], "gap": "0.08",
                                                                "size": "30"}).json()
    signal = mesh.signals.recv(15_000)
    assert isinstance(signal, m.Signal) and signal.source == "strategy:arbitrage"
    assert [leg.token_id for leg in signal.legs] == [yes, no]
    assert sum(leg.limit_price for leg in signal.legs) == D(opened["sum"]) == D("0.92")
    assert all(leg.size == 30 for leg in signal.legs)
    assert signal.cause_id and signal.cause_ts_ns <= signal.ts_ns


def test_a_restarted_strategies_process_syncs_from_the_scanners_snapshot_and_still_sees_gaps(mesh: Mesh) -> None:
    config_file = next(p for p in mesh.procs[1].args if p.endswith(".toml"))
    mesh.procs[1].terminate()
    mesh.procs[1].wait(20)
    mesh.procs[1] = subprocess.Popen([sys.executable, "-m", "services", "--config", config_file, "run",
                                      "strategies"], env=child_env(), stderr=subprocess.DEVNULL)
    wait_for(lambda: mesh.status("strategies").get("synced") == "True", what="the new process to sync")
    # The previous test's gap is still open and no book has changed since: only the snapshot shows it.
    from_snapshot = mesh.signals.recv(15_000)
    assert len(from_snapshot.legs) == 2 and sum(leg.limit_price for leg in from_snapshot.legs) == D("0.92")
    event = httpx.get(f"{mesh.venue.gamma}/events").json()[0]
    httpx.post(f"{mesh.venue.clob}/_admin/gap", json={"event": event["id"], "gap": "0.1", "size": "20"})
    signal = mesh.signals.recv(15_000)
    assert {leg.token_id for leg in signal.legs} == {json.loads(x["clobTokenIds"])[0] for x in event["markets"]}
    # It fires as soon as the members' asks (which move one market per frame) leave an edge after fees.
    fees = sum(D("0.04") * leg.limit_price * (1 - leg.limit_price) for leg in signal.legs)
    assert sum(leg.limit_price for leg in signal.legs) + fees < 1


def two_sided(ts: int, bid: str, ask: str, token: str = "q-y") -> m.BookSnapshot:
    return m.BookSnapshot(ts_ns=ts, books=[m.Book(token_id=token, market="q", bids=[m.Level(D(bid), D("100"))],
                                                  asks=[m.Level(D(ask), D("100"))])])


def test_the_quoter_bids_both_tokens_around_the_mid_and_replaces_a_quote_when_the_mid_moves() -> None:
    quoter = Quoter(QuoterParams(spread_ticks=2, size=D(10), requote_ticks=1, min_requote_ms=0))
    quoter.on_message(market("q"))
    first = quoter.on_message(two_sided(1, "0.48", "0.52"))
    assert [(s.legs[0].token_id, s.legs[0].limit_price, s.legs[0].post_only) for s in first] == [
        ("q-y", D("0.48"), True), ("q-n", D("0.48"), True)]  # YES bid 0.50-0.02; NO bid 1 - (0.50+0.02)
    assert quoter.on_message(two_sided(2, "0.48", "0.52")) == []  # the book changed, the quotes would not
    moved = quoter.on_message(two_sided(3, "0.52", "0.56"))
    assert [type(x).__name__ for x in moved] == ["Cancel", "Signal", "Cancel", "Signal"]
    assert moved[0].token_id == "q-y" and moved[1].legs[0].limit_price == D("0.52")
    assert moved[3].legs[0].limit_price == D("0.44")


def test_a_restarted_quoter_takes_its_inventory_from_the_executors_account() -> None:
    quoter = Quoter(QuoterParams(size=D(10), max_inventory=D(15), min_requote_ms=0))
    quoter.on_message(market("q"))
    quoter.on_message(m.AccountReply(mode="live", holdings=[
        m.SourceHolding(source="strategy:quoter", token_id="q-y", market="q", size=D(10)),
        m.SourceHolding(source="strategy:arbitrage", token_id="q-n", market="q", size=D(40))]))
    out = quoter.on_message(two_sided(1, "0.48", "0.52"))
    # Its own 10 YES shares leave no room for another 10; the arbitrage's NO shares are not its own.
    assert [s.legs[0].token_id for s in out if isinstance(s, m.Signal)] == ["q-n"]


def test_the_quoter_stops_bidding_a_token_at_its_inventory_limit_and_pulls_quotes_from_a_stale_market() -> None:
    quoter = Quoter(QuoterParams(size=D(10), max_inventory=D(15), min_requote_ms=0))
    quoter.on_message(market("q"))
    quoter.on_message(two_sided(1, "0.48", "0.52"))
    quoter.on_message(m.Fill(order_id="o", venue_order_id="v", trade_id="t", token_id="q-y", market="q", side="BUY",
                             price=D("0.48"), size=D(10), source="strategy:quoter"))
    out = quoter.on_message(two_sided(2, "0.48", "0.52"))
    assert [(type(x).__name__, getattr(x, "token_id", "")) for x in out] == [("Cancel", "q-y")]
    pulled = quoter.on_message(m.MarketStale(markets=["q"]))
    assert [(type(x).__name__, x.token_id) for x in pulled] == [("Cancel", "q-n")]
    assert quoter.on_message(two_sided(3, "0.40", "0.44")) == []
