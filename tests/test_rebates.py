"""Maker rebates and fee schedules: the ledger's arithmetic, paper and backtest estimates against the venue's rule,
Gamma's rebate rate to the mesh, and the poller of ``/rebates/current`` against the local venue's own app."""
from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from decimal import Decimal as D
from pathlib import Path

import httpx
import msgspec
import pytest
from eth_account import Account
from py_clob_client_v2.clob_types import AssetType, BalanceAllowanceParams, OrderArgsV2

from polybot_venue import wallets as venue_wallets
from polybot_venue.app import VenueState, clob_app
from polybot_venue.engine import UNLIMITED, Engine
from polybot_venue.markets import Market
from polybot_venue.server import ready_made_account
from services import messages as m
from services.backtest.engine import backtest
from services.backtest.report import summarize
from services.ledger import Ledger, Rebates
from services.recording import LENGTH, SUFFIX, RecordingWriter, SegmentHeader, read
from services.venues import base
from services.venues.paper import PaperBook, paper_order_id
from services.venues.polymarket import feed, schema
from services.venues.polymarket.rebates import RebatePoller

from .conftest import child_env, wait_for
from .test_mcp_tools import call
from .trading_harness import Trading
from .venue_harness import Venue as LiveVenue
from .venue_harness import best, tokens

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "polymarket"
DAY_MS = 86_400_000
JAN_15 = 1_800_000_000_000  # 2027-01-15T08:00Z
MAKER = "0x" + "ab" * 20
SEED = 61


def venue_fee(size: D, price: D, rate: D, exponent: D = D(1)) -> D:
    """Polymarket's taker fee, written out again so the tests do not trust the code under test."""
    return (size * rate * (price * (1 - price)) ** exponent).quantize(D("0.00001"), rounding="ROUND_FLOOR")


def maker_fill(market: str, token: str, size: str, price: str, rebate: D, at_ms: int = JAN_15, source: str = "s:a",
               trade: str = "") -> m.Fill:
    return m.Fill(order_id=f"o-{trade or token}", venue_order_id="v", trade_id=trade or f"t-{token}-{size}-{at_ms}",
                  token_id=token, market=market, side="BUY", price=D(price), size=D(size), liquidity="MAKER",
                  source=source, venue_ts_ms=at_ms, rebate=rebate)


# ---------------------------------------------------------------- the ledger's arithmetic


def test_estimates_are_summed_per_day_and_market_and_floored_to_the_micro_unit_as_the_venue_floors_them() -> None:
    ledger = Ledger()
    a = D("0.2") * venue_fee(D(7), D("0.33"), D("0.07"))  # 0.2 x 0.10833 = 0.021666
    b = D("0.25") * venue_fee(D(3), D("0.62"), D("0.04"))  # 0.25 x 0.02827 = 0.0070675
    ledger.apply(maker_fill("0xa", "ya", "7", "0.33", a))
    ledger.apply(maker_fill("0xa", "ya", "3", "0.62", b))
    ledger.apply(maker_fill("0xa", "ya", "3", "0.62", b))  # the same fill reported again: counted once
    ledger.apply(m.Fill(order_id="x", venue_order_id="v", trade_id="taker", token_id="ya", market="0xa", side="BUY",
                        price=D("0.5"), size=D(10), fee=D("0.175"), liquidity="TAKER", venue_ts_ms=JAN_15))
    assert a + b == D("0.0287335")
    assert ledger.rebates.total() == (D("0.028733"), D("0.028733"))  # one day, one market: floored once
    ledger.apply(maker_fill("0xa", "ya", "1", "0.5", D("0.0000004"), at_ms=JAN_15 + DAY_MS))  # the next day alone
    assert ledger.rebates.total() == (D("0.028733"), D("0.028733"))  # floors to nothing


def test_the_venues_report_replaces_the_estimate_of_its_day_and_market_only() -> None:
    ledger = Ledger()
    ledger.apply(maker_fill("0xa", "ya", "10", "0.4", D("0.0336"), trade="t1"))
    ledger.apply(maker_fill("0xa", "ya", "10", "0.4", D("0.0336"), at_ms=JAN_15 + DAY_MS, trade="t2"))
    ledger.apply(maker_fill("0xb", "yb", "10", "0.4", D("0.0336"), trade="t3"))
    assert ledger.rebates.total() == (D("0.1008"), D("0.1008"))
    report = m.Rebate(day="2027-01-15", market="0xa", maker=MAKER, amount=D("0.033599"))
    assert ledger.rebate(report) is True
    assert ledger.rebate(m.Rebate(day="2027-01-15", market="0xa", maker=MAKER, amount=D("0.033599"))) is False
    assert ledger.rebates.total() == (D("0.033599") + D("0.0672"), D("0.0672"))
    # A later report for the same day and market is a new total, not an increment.
    ledger.rebate(m.Rebate(day="2027-01-15", market="0xa", maker=MAKER, amount=D("0.05"), final=True))
    assert ledger.rebates.total() == (D("0.05") + D("0.0672"), D("0.0672"))
    credits = {(c.market, c.token_id): (c.amount, c.estimated) for c in ledger.rebates.credits()}
    assert credits == {("0xa", "ya"): (D("0.0836"), D("0.0336")), ("0xb", "yb"): (D("0.0336"), D("0.0336"))}


def test_a_reported_amount_is_shared_by_what_each_fill_earned_and_the_parts_add_up_exactly() -> None:
    rebates = Rebates()
    for i, (source, token) in enumerate([("s:a", "y"), ("s:b", "y"), ("s:b", "n")]):
        rebates.fill(maker_fill("0xa", token, "10", "0.5", D("0.01"), source=source, trade=f"t{i}"))
    rebates.report(m.Rebate(day="2027-01-15", market="0xa", maker=MAKER, amount=D("0.1")))
    credits = rebates.credits()
    assert sum(c.amount for c in credits) == D("0.1") and all(c.estimated == 0 for c in credits)
    assert [(c.source, c.token_id, c.amount) for c in credits] == [  # in micro-units; the last fill takes the rest
        ("s:a", "y", D("0.033333")), ("s:b", "n", D("0.033334")), ("s:b", "y", D("0.033333"))]
    # Fills we estimated at 0 (a market whose rate we did not know) share by fee-curve weight, size x p(1 - p).
    unknown = Rebates()
    unknown.fill(maker_fill("0xc", "y", "10", "0.5", D(0), trade="u1"))  # weight 2.5
    unknown.fill(maker_fill("0xc", "n", "10", "0.1", D(0), trade="u2"))  # weight 0.9
    unknown.report(m.Rebate(day="2027-01-15", market="0xc", maker=MAKER, amount=D("0.034")))
    assert {c.token_id: c.amount for c in unknown.credits()} == {"y": D("0.025"), "n": D("0.009")}
    # Rebates the venue reports where we know of no maker fill belong to the market alone.
    alone = Rebates()
    alone.report(m.Rebate(day="2027-01-15", market="0xd", maker=MAKER, amount=D("0.2")))
    assert [(c.market, c.source, c.token_id, c.amount) for c in alone.credits()] == [("0xd", "", "", D("0.2"))]


# ---------------------------------------------------------------- estimates: the venue's rule


def scheduled(rate: str, exponent: str, rebate: str) -> m.MarketNew:
    return m.MarketNew(ts_ns=JAN_15 * 10**6, id="new-A", market="A", question="A?",
                       outcomes=[m.Outcome(token_id="A-y", name="Yes"), m.Outcome(token_id="A-n", name="No")],
                       tick_size=D("0.01"), min_size=D(5), fee_rate=D(rate), fee_exponent=D(exponent),
                       rebate_rate=D(rebate))


@pytest.mark.parametrize("rate, exponent, rebate", [("0.07", "1", "0.2"), ("0.04", "2", "0.25"), ("0", "1", "0")])
def test_paper_fills_pay_the_markets_fee_and_estimate_the_makers_rebate_by_the_venues_rule(rate, exponent,
                                                                                           rebate) -> None:
    book = PaperBook(lambda: JAN_15)
    book.observe(scheduled(rate, exponent, rebate))
    book.observe(m.BookSnapshot(books=[
        m.Book(token_id="A-y", market="A", bids=[m.Level(D("0.40"), D(50))], asks=[m.Level(D("0.60"), D(50))]),
        m.Book(token_id="A-n", market="A", bids=[m.Level(D("0.40"), D(50))], asks=[m.Level(D("0.60"), D(50))])]))
    rules = book.rules["A-y"]
    assert (rules.fee_rate, rules.fee_exponent, rules.rebate_rate) == (D(rate), D(exponent), D(rebate))

    def request(client_id: str, side: str, price: str, size: str) -> base.OrderRequest:
        return base.OrderRequest(client_id=client_id, token_id="A-y", market="A", side=side, price=D(price),
                                 size=D(size), order_type="GTC", rules=rules)
    placed, _ = book.place(request("rest", "BUY", "0.47", "30"), paper_order_id("rest"))
    assert placed.status == "live"
    fills = book.observe(m.LastTrade(token_id="A-y", market="A", price=D("0.47"), size=D(12), side="SELL"))
    made, = [f for f in fills if isinstance(f, base.VenueFill)]
    assert (made.liquidity, made.size, made.fee) == ("MAKER", 12, 0)
    assert made.rebate == D(rebate) * venue_fee(D(12), D("0.47"), D(rate), D(exponent))
    _, taken = book.place(request("take", "BUY", "0.60", "20"), paper_order_id("take"))
    took, = taken
    assert (took.liquidity, took.fee, took.rebate) == ("TAKER", venue_fee(D(20), D("0.60"), D(rate), D(exponent)), 0)
    # The executor takes the paper venue's figures as they are.
    assert base.charges(made, rules) == (0, made.rebate) and base.charges(took, rules) == (took.fee, 0)


def test_live_fills_are_charged_by_the_markets_schedule_a_maker_fill_earning_an_estimate() -> None:
    rules = base.rules_from(scheduled("0.05", "2", "0.25"))["A-y"]
    maker = base.VenueFill(trade_id="t", venue_order_id="v", token_id="A-y", market="A", side="BUY",
                           price=D("0.3"), size=D(40), liquidity="MAKER")
    taker = msgspec.structs.replace(maker, liquidity="TAKER", fee_rate=D("0.05"))
    assert base.charges(maker, rules) == (0, D("0.25") * venue_fee(D(40), D("0.3"), D("0.05"), D(2)))
    assert base.charges(taker, rules) == (venue_fee(D(40), D("0.3"), D("0.05"), D(2)), 0)
    assert base.charges(maker, None) == (0, 0)  # a market we know nothing of: no estimate


def test_a_backtest_estimates_the_quoters_maker_rebates_and_counts_them_in_its_pnl(tmp_path: Path) -> None:
    t0 = JAN_15 * 10**6
    with RecordingWriter(tmp_path / "rec") as w:
        w.write_all([scheduled("0.07", "2", "0.2"), m.MarketStale(ts_ns=t0, markets=[], stale=True),
                     m.BookSnapshot(ts_ns=t0 + 1, id="snap", books=[
                         m.Book(token_id="A-y", market="A", bids=[m.Level(D("0.40"), D(50))],
                                asks=[m.Level(D("0.60"), D(50))]),
                         m.Book(token_id="A-n", market="A", bids=[m.Level(D("0.40"), D(50))],
                                asks=[m.Level(D("0.60"), D(50))])]),
                     m.LastTrade(ts_ns=t0 + 10**9, id="hit", token_id="A-y", market="A", price=D("0.48"),
                                 size=D(30), side="SELL")])
    result = backtest(tmp_path / "rec", "quoter")
    made, = result.fills  # the quoter's YES bid at mid - 2 ticks, hit for its 10 shares
    assert (made.token_id, made.price, made.size, made.liquidity, made.fee) == ("A-y", D("0.48"), 10, "MAKER", 0)
    estimate = D("0.2") * venue_fee(D(10), D("0.48"), D("0.07"), D(2))
    assert made.rebate == estimate > 0
    summary = summarize(result)
    assert summary.rebates == estimate.quantize(D("0.000001"), rounding="ROUND_FLOOR") == result.equity[-1].rebates
    assert summary.pnl == summary.realized + summary.unrealized + summary.rebates
    assert [(r.market, r.rebates) for r in summary.per_market] == [("A", summary.rebates)]
    assert sum(r.pnl for r in summary.per_market) == summary.pnl


# ---------------------------------------------------------------- the rate from Gamma to the mesh


def test_gammas_rebate_rate_reaches_market_new_and_a_recording_without_it_decodes_with_0(tmp_path: Path) -> None:
    captured = msgspec.json.decode((FIXTURES / "gamma_market_live.json").read_bytes(), type=schema.GammaMarket)
    new = feed.market_new(captured, 1)
    assert captured.fee_schedule is not None and captured.fees_enabled
    assert new.rebate_rate == D(str(captured.fee_schedule.rebate_rate)) == D("0.25")
    assert base.rules_from(new)[new.outcomes[0].token_id].rebate_rate == D("0.25")
    # A segment an older scanner recorded: its MarketNew frame has no rebate_rate.
    older = msgspec.msgpack.decode(msgspec.msgpack.encode(new))
    del older["rebate_rate"]
    frames = [msgspec.msgpack.encode(SegmentHeader(seq=1, started_ns=new.ts_ns)), msgspec.msgpack.encode(older)]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / f"seg-000001{SUFFIX}").write_bytes(b"".join(LENGTH.pack(len(f)) + f for f in frames))
    got, = read(tmp_path / "old")
    assert got.rebate_rate == 0 and got == msgspec.structs.replace(new, rebate_rate=D(0))


# ---------------------------------------------------------------- the poller, against the venue's own CLOB app


class Venue:
    """The local venue's engine and CLOB app in this process, on a clock the test moves."""

    def __init__(self) -> None:
        self.now = [JAN_15]
        self.market = Market(condition_id="0x" + "c" * 64, question="q", slug="q", tokens=("yes", "no"),
                             fee_rate=D("0.07"), rebate_rate=D("0.2"))
        self.engine = Engine([self.market], lambda: self.now[0])
        for who, shares in ((MAKER, None), ("taker", {"yes": D(10_000)})):
            self.engine.fund(who, D(10_000), shares)
            self.engine.approve(who, collateral=UNLIMITED, conditional=True)
        self.transport = httpx.ASGITransport(app=clob_app(VenueState(engine=self.engine, events={}, chain_id=137,
                                                                     secret=b"test")))
        self.trades = 0

    def trade(self, size: int, price: str) -> D:
        """The maker's bid hit by the taker; the taker's fee."""
        self.trades += 1
        self.engine.place(order_id=f"m{self.trades}", owner="maker", address=MAKER, token_id="yes", side="BUY",
                          price=D(price), size=D(size))
        trade, = self.engine.place(order_id=f"t{self.trades}", owner="taker", address="taker", token_id="yes",
                                   side="SELL", price=D(price), size=D(size)).trades
        return trade.fee

    def reported(self, day: str) -> D:
        return dict(self.engine.rebated(day, MAKER)).get(self.market.condition_id, D(0))


def test_the_poller_publishes_each_day_and_markets_total_once_then_only_changes_and_finality() -> None:
    venue = Venue()
    published: list[m.Rebate] = []

    def poller(known=()) -> RebatePoller:
        return RebatePoller("http://venue", MAKER, published.append, logging.getLogger("test"), known,
                            transport=venue.transport)

    async def poll(p: RebatePoller) -> list[m.Rebate]:
        async with httpx.AsyncClient(base_url=p.clob_url, transport=venue.transport) as http:
            return await p.poll(http)

    first = poller()
    assert asyncio.run(poll(first)) == []  # nothing earned yet: the venue answers null
    fee = venue.trade(40, "0.45")
    got, = asyncio.run(poll(first))
    owed = (fee * D("0.2")).quantize(D("0.000001"), rounding="ROUND_FLOOR")
    assert (got.day, got.market, got.maker, got.amount, got.final) == ("2027-01-15", venue.market.condition_id,
                                                                       MAKER, owed, False)
    assert got.amount == venue.reported("2027-01-15") > 0
    assert asyncio.run(poll(first)) == []  # the same total: nothing new
    venue.trade(25, "0.31")
    grown, = asyncio.run(poll(first))
    assert grown.amount == venue.reported("2027-01-15") > owed  # the day's new total, not what was added
    # Restarted with what it published before, it publishes nothing again.
    assert asyncio.run(poll(poller(published))) == []
    # Past the venue's midnight the day is final: its total goes out once more, marked so; then the new day's.
    venue.now[0] += DAY_MS
    final, = asyncio.run(poll(first))
    assert (final.day, final.amount, final.final) == ("2027-01-15", grown.amount, True)
    venue.trade(10, "0.5")
    today, = asyncio.run(poll(first))
    assert (today.day, today.final) == ("2027-01-16", False) and today.amount == venue.reported("2027-01-16")
    assert len(published) == 4


def test_the_poller_keeps_going_when_the_venue_cannot_answer() -> None:
    failing = httpx.MockTransport(lambda request: httpx.Response(503, json={"error": "down"}))
    poller = RebatePoller("http://venue", MAKER, lambda msg: None, logging.getLogger("test"), every_s=0.01,
                          transport=failing)

    async def run_a_while() -> None:
        task = asyncio.create_task(poller.run())
        while poller.failures < 3:
            await asyncio.sleep(0.01)  # the poller's own interval paces it; this only looks at its counter
        task.cancel()
    asyncio.run(asyncio.wait_for(run_a_while(), 10))
    assert poller.failures >= 3 and poller.polls == 0


def test_the_wire_shape_of_a_rebate_row_decodes() -> None:
    rows = msgspec.json.decode(json.dumps([{"date": "2026-02-27", "condition_id": "0xbd31",
                                            "asset_address": "0x2791Bca1f2de4661ED88A30C99A7a9449Aa84174",
                                            "maker_address": MAKER, "rebated_fees_usdc": "0.237519"}]),
                               type=list[schema.RebatedFee] | None)
    assert rows[0].rebated_fees_usdc == "0.237519"
    assert msgspec.json.decode(b"null", type=list[schema.RebatedFee] | None) is None


# ---------------------------------------------------------------- the mesh against the venue


def test_a_resting_order_another_account_crosses_earns_the_rebate_the_venue_reports_in_polybot_pnl() -> None:
    root = Path(tempfile.mkdtemp(prefix="pbr-", dir="/tmp"))  # ipc socket paths must stay under 107 bytes
    venue = LiveVenue(root / "venue", SEED, 100, "--still")
    mesh = None
    try:
        mesh = Trading(root, venue, {"analytics": "", "scanner": "", "executor": "rebates_s = 0.2, heartbeat_s = 0.5"})
        mesh.start("analytics", "scanner", "executor")
        wait_for(lambda: mesh.detail("executor").get("ready") == "True", what="the executor to reconcile", timeout=30)
        mesh.wait_ready("scanner", "analytics")
        _crossed_maker_orders_agree_with_the_venue(mesh, venue)
    finally:
        if mesh is not None:
            mesh.close()
        venue.stop()
        shutil.rmtree(root, ignore_errors=True)


def _crossed_maker_orders_agree_with_the_venue(mesh: Trading, venue: LiveVenue) -> None:
    market = next(mk for mk in venue.markets if mk["feesEnabled"] and mk["feeSchedule"]["rebateRate"] > 0)
    cid, (yes, no) = market["conditionId"], tokens(market)
    rate, rebate_rate = D(str(market["feeSchedule"]["rate"])), D(str(market["feeSchedule"]["rebateRate"]))
    ours = venue.client(ready_made_account(SEED).private_key)  # the venue's own view of the account we trade as
    taker = venue.client()  # another account, funded, trading through py-clob-client-v2
    orders = mesh.bus.outbound("orders")  # the test plays risk
    wait_for(lambda: orders.socket.pipes, what="the executor to take orders")

    def cross(n: int, size: int) -> D:
        """Our post-only bid inside the spread, then the taker buying NO against it; the taker's fee."""
        bid, ask = best(ours, yes)
        price = bid + D("0.01")
        assert price < ask
        assert orders.send(m.Order(signal_id=f"rest-{n}", leg=0, source="strategy:test", token_id=yes, market=cid,
                                   side="BUY", size=D(size), limit_price=price, post_only=True))
        wait_for(lambda: any(D(o["price"]) == price for o in ours.get_open_orders()), what="our bid to rest")
        answer = taker.create_and_post_order(OrderArgsV2(token_id=no, price=float(1 - price), size=size, side="BUY"))
        assert answer["status"] == "matched"
        return venue_fee(D(size), 1 - price, rate)

    def reported() -> D:
        """What the venue reports for us in this market, today and yesterday (the test may straddle midnight)."""
        now_s = httpx.get(f"{venue.clob}/time").json()
        rows = [row for day in (now_s - 86_400, now_s)
                for row in httpx.get(f"{venue.clob}/rebates/current", params={
                    "date": time.strftime("%Y-%m-%d", time.gmtime(day)), "maker_address": ours.get_address()}
                ).json() or [] if row["condition_id"] == cid]
        return sum((D(row["rebated_fees_usdc"]) for row in rows), D(0))

    def pnl_agrees(owed: D):
        def check():
            row = next((r for r in cli(mesh, "pnl", "--by", "market") if r["market"] == cid), None)
            return row if row and D(row["rebates"]) == owed and D(row["rebates_estimated"]) == 0 else None
        return wait_for(check, what=f"polybot pnl to credit the {owed} the venue reports", timeout=20)

    fee = cross(1, 40)
    owed = reported()
    assert owed == (fee * rebate_rate).quantize(D("0.000001"), rounding="ROUND_FLOOR") > 0
    row = pnl_agrees(owed)
    assert D(row["total"]) == D(row["realized"]) + D(row["unrealized"]) + owed
    held, = [p for p in cli(mesh, "positions", "--market", cid)]
    assert (held["token_id"], D(held["rebates"]), D(held["rebates_estimated"])) == (yes, owed, 0)
    got = {r["group"]: r for r in call(mesh, "get_pnl", {"by": "market"}).structured_content["rows"]}
    assert (D(got[cid]["rebates"]), D(got[cid]["rebates_estimated"])) == (owed, 0)

    # Paid at once: the wallet gains exactly what we credited, and the venue still reports it (so do we, once).
    before = collateral(ours)
    assert D(venue.admin("pay-rebates")["paid"][ours.get_address().lower()]) == owed
    assert collateral(ours) == before + owed and reported() == owed
    assert D(pnl_agrees(owed)["total"]) == D(row["total"])

    # Analytics restarted: the reports are in its file, counted once.
    mesh.stop("analytics")
    mesh.start("analytics")
    assert D(pnl_agrees(owed)["total"]) == D(row["total"])

    # The executor restarted: it knows what it published (its journal) and sends only the day's new total.
    mesh.stop("executor")
    mesh.start("executor")
    wait_for(lambda: mesh.detail("executor").get("ready") == "True", what="the executor to reconcile", timeout=30)
    wait_for(lambda: orders.socket.pipes, what="the executor to take orders again")
    cross(2, 25)
    grown = reported()
    assert grown > owed
    pnl_agrees(grown)
    amounts = [r["amount"] for r in cli(mesh, "query", f"SELECT amount FROM rebates WHERE market = '{cid}' "
                                                      "ORDER BY ts_ns")]
    assert [D(a) for a in amounts] == [owed, grown]


def test_a_proxy_wallets_maker_rebates_are_read_for_the_wallet_that_made_the_orders_not_the_signing_key() -> None:
    root = Path(tempfile.mkdtemp(prefix="pbp-", dir="/tmp"))  # ipc socket paths must stay under 107 bytes
    venue = LiveVenue(root / "venue", SEED, 100, "--still")
    mesh = None
    key = Account.create().key.hex()
    owner = Account.from_key(key).address
    proxy = venue_wallets.proxy_wallet(owner)  # the venue's derivation, not the code under test
    try:
        venue.admin("fund", address=proxy, collateral=10_000)
        venue.admin("approve", address=proxy, exchange="all", unlimited=True)
        ours = venue.client(key, funded=False, wallet=1)  # the venue's own view of the account the mesh trades as
        mesh = Trading(root, venue, {"analytics": "", "scanner": "", "executor": "rebates_s = 0.2, heartbeat_s = 0.5"},
                       '[account]\nwallet = "proxy"\n')
        mesh.start("analytics", "scanner", "executor", POLYBOT_PRIVATE_KEY=key)
        wait_for(lambda: mesh.detail("executor").get("ready") == "True", what="the executor to reconcile", timeout=30)
        assert mesh.detail("executor")["funder"] == proxy
        mesh.wait_ready("scanner", "analytics")

        market = next(mk for mk in venue.markets if mk["feesEnabled"] and mk["feeSchedule"]["rebateRate"] > 0)
        cid, (yes, no) = market["conditionId"], tokens(market)
        orders = mesh.bus.outbound("orders")  # the test plays risk
        wait_for(lambda: orders.socket.pipes, what="the executor to take orders")
        bid, ask = best(ours, yes)
        price = bid + D("0.01")
        assert price < ask
        assert orders.send(m.Order(signal_id="proxy-rest", leg=0, source="strategy:test", token_id=yes, market=cid,
                                   side="BUY", size=D(40), limit_price=price, post_only=True))
        wait_for(lambda: any(D(o["price"]) == price for o in ours.get_open_orders()), what="our bid to rest")
        taker = venue.client()
        answer = taker.create_and_post_order(OrderArgsV2(token_id=no, price=float(1 - price), size=40, side="BUY"))
        assert answer["status"] == "matched"

        def reported(maker: str) -> list[tuple[str, D]]:
            """The venue's rebates for ``maker`` in this market, today and yesterday (in case midnight passed)."""
            now_s = httpx.get(f"{venue.clob}/time").json()
            return [(row["maker_address"].lower(), D(row["rebated_fees_usdc"])) for day in (now_s - 86_400, now_s)
                    for row in httpx.get(f"{venue.clob}/rebates/current", params={
                        "date": time.strftime("%Y-%m-%d", time.gmtime(day)), "maker_address": maker}).json() or []
                    if row["condition_id"] == cid]
        # The venue credits the rebate to the wallet that made the order; the key that signed it earned nothing.
        (maker, owed), = reported(proxy)
        assert maker == proxy.lower() and owed > 0 and reported(owner) == []

        def published() -> list[dict]:
            return cli(mesh, "query", f"SELECT maker, amount FROM rebates WHERE market = '{cid}'")
        rows = wait_for(published, what="the executor to publish the venue's report of the proxy's rebate")
        assert {(r["maker"].lower(), D(r["amount"])) for r in rows} == {(proxy.lower(), owed)}
    finally:
        if mesh is not None:
            mesh.close()
        venue.stop()
        shutil.rmtree(root, ignore_errors=True)


def cli(mesh: Trading, *args: str) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "services", "--config", str(mesh.config_file), *args, "--json"],
                          env=child_env(), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def collateral(client) -> D:
    answer = client.get_balance_allowance(BalanceAllowanceParams(asset_type=AssetType.COLLATERAL))
    return D(answer["balance"]) / 10**6
