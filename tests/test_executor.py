"""The executor, live against the local venue: real processes, the real client, the venue's own REST view."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from py_clob_client_v2.clob_types import AssetType, BalanceAllowanceParams, OrderArgsV2, OrderType

import msgspec

from services import messages as m
from services.executor.journal import Submitting, Taken
from services.venues.base import VenueError
from services.venues.polymarket.client import Clob, salt_of

from .conftest import wait_for
from .executor_harness import ExecutorMesh, fee, order, positions_from_trades
from .venue_harness import tokens

D = Decimal


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Iterator[ExecutorMesh]:
    mesh = ExecutorMesh(Path(os.path.realpath(tmp_path_factory.mktemp("exec"))), seed=23)
    yield mesh
    mesh.close()


def collateral(mesh: ExecutorMesh) -> Decimal:
    answer = mesh.client.get_balance_allowance(BalanceAllowanceParams(asset_type=AssetType.COLLATERAL))
    return D(answer["balance"]) / 10**6


def rate_of(mesh: ExecutorMesh, market: dict) -> Decimal:
    return D(str(market["feeSchedule"]["rate"])) if market.get("feesEnabled") else D(0)


def fee_market(mesh: ExecutorMesh) -> dict:
    """An untouched binary market that charges fees."""
    while True:
        market = mesh.venue.market()
        if market.get("feesEnabled"):
            return market


def test_a_two_leg_fok_signal_fills_both_legs_at_the_venues_prices_and_fees(mesh: ExecutorMesh) -> None:
    market = fee_market(mesh)
    yes, no = tokens(market)
    gap = httpx.post(f"{mesh.venue.clob}/_admin/gap",
                     json={"market": market["conditionId"], "gap": "0.08", "size": "30"}).json()
    before = collateral(mesh)
    legs = [order("arb-1", i, token, market["conditionId"], "BUY", "30", gap["asks"][token], "FOK")
            for i, token in enumerate((yes, no))]
    mesh.push(*legs)

    fills = mesh.wait(m.Fill, 2, signal_id="arb-1")
    acks = mesh.wait(m.OrderAck, 2, signal_id="arb-1")
    assert {a.order_id for a in acks} == {o.id for o in legs}
    for leg in legs:  # hop times: risk's order, handed to the venue client, acknowledged
        ack = next(a for a in acks if a.order_id == leg.id)
        assert leg.ts_ns <= ack.submitted_ts_ns <= ack.ts_ns and ack.trace_id == leg.trace_id
    venue_trades = {t["id"]: t for t in mesh.client.get_trades()}
    rate = rate_of(mesh, market)
    spent = D(0)
    for f in fills:
        trade = venue_trades[f.trade_id]
        leg = next(o for o in legs if o.id == f.order_id)
        assert f.venue_order_id == trade["taker_order_id"] == next(a for a in acks if a.order_id == leg.id).venue_order_id
        assert (f.token_id, f.side, f.price, f.size, f.liquidity) == (leg.token_id, "BUY", D(trade["price"]),
                                                                       D(trade["size"]), "TAKER")
        assert f.price == D(gap["asks"][leg.token_id]) and f.size == 30
        assert f.fee == fee(f.size, f.price, rate) > 0
        spent += f.size * f.price + f.fee
    # The venue charged exactly what the fills say, to the cent and below.
    wait_for(lambda: collateral(mesh) == before - spent, what="the venue balance to show the trades")
    assert not mesh.of(m.OrderRejected, signal_id="arb-1") and not mesh.of(m.ResidualExposure, signal_id="arb-1")


def test_orders_the_venue_refuses_come_back_as_order_rejected_with_a_code(mesh: ExecutorMesh) -> None:
    market = mesh.venue.market()
    yes, _ = tokens(market)
    bid, ask = mesh.best(yes)
    too_small = order("rej-1", 0, yes, market["conditionId"], "BUY", "2", str(bid))
    too_big = order("rej-2", 0, yes, market["conditionId"], "BUY", "100000", str(bid))
    unfillable = order("rej-3", 0, yes, market["conditionId"], "BUY", "10", str(bid), "FOK")
    mesh.push(too_small, too_big, unfillable)
    codes = {o.id: (r.code, r.message) for o in (too_small, too_big, unfillable)
             for r in mesh.wait(m.OrderRejected, order_id=o.id)}
    assert codes[too_small.id][0] == "MIN_SIZE" and "lower than the minimum" in codes[too_small.id][1]
    assert codes[too_big.id][0] == "BALANCE"
    assert codes[unfillable.id][0] == "FOK_UNFILLED"
    assert not mesh.client.get_open_orders() or all(o["asset_id"] != yes for o in mesh.client.get_open_orders())


def test_an_order_that_took_too_long_to_arrive_is_refused_and_never_reaches_the_venue(mesh: ExecutorMesh) -> None:
    market = mesh.venue.market()
    yes, _ = tokens(market)
    bid, _ = mesh.best(yes)
    late = order("late-1", 0, yes, market["conditionId"], "BUY", "5", str(bid), ts_ns=time.time_ns() - 10**10)
    mesh.push(late)
    refused, = mesh.wait(m.OrderRejected, order_id=late.id)
    assert refused.code == "STALE_ORDER" and "not sent" in refused.message
    assert all(o["asset_id"] != yes for o in mesh.client.get_open_orders())
    assert not mesh.of(m.OrderAck, order_id=late.id)


def test_a_failing_leg_cancels_the_resting_leg_and_reports_the_residual_exposure(mesh: ExecutorMesh) -> None:
    market = mesh.venue.market()
    yes, no = tokens(market)
    yes_bid, yes_ask = mesh.best(yes)
    no_bid, _ = mesh.best(no)
    filled = order("unwind", 0, yes, market["conditionId"], "BUY", "10", str(yes_ask), "FOK")
    resting = order("unwind", 1, no, market["conditionId"], "BUY", "10", str(no_bid - D("0.01")))
    refused = order("unwind", 2, yes, market["conditionId"], "BUY", "1", str(yes_bid))
    mesh.push(filled, resting, refused)

    residual, = mesh.wait(m.ResidualExposure, signal_id="unwind")
    assert "leg 2 rejected (MIN_SIZE)" in residual.reason
    assert residual.exposure == [m.Exposure(token_id=yes, market=market["conditionId"], side="BUY", size=D(10),
                                            avg_price=yes_ask)]
    canceled, = mesh.wait(m.OrderCanceled, order_id=resting.id)
    assert canceled.remaining == 10
    assert mesh.wait(m.OrderRejected, order_id=refused.id)[0].code == "MIN_SIZE"
    venue_ids = {a.order_id: a.venue_order_id for a in mesh.of(m.OrderAck, signal_id="unwind")}
    assert mesh.client.get_order(venue_ids[resting.id])["status"] == "CANCELED"
    # A leg that comes after its signal was unwound is refused, not sent.
    late = order("unwind", 3, no, market["conditionId"], "BUY", "10", str(no_bid - D("0.01")))
    mesh.push(late)
    assert mesh.wait(m.OrderRejected, order_id=late.id)[0].code == "SIGNAL_FAILED"


def test_cancels_reach_only_the_orders_they_name(mesh: ExecutorMesh) -> None:
    market = mesh.venue.market()
    yes, no = tokens(market)
    yes_bid, _ = mesh.best(yes)
    no_bid, _ = mesh.best(no)
    a = order("c-a", 0, yes, market["conditionId"], "BUY", "5", str(yes_bid - D("0.01")), source="strategy:a")
    b = order("c-b", 0, no, market["conditionId"], "BUY", "5", str(no_bid - D("0.01")), source="strategy:a")
    c = order("c-c", 0, yes, market["conditionId"], "BUY", "5", str(yes_bid - D("0.02")), source="strategy:c")
    mesh.push(a, b, c)
    acks = {o.id: mesh.wait(m.OrderAck, order_id=o.id)[0] for o in (a, b, c)}
    mesh.push(m.Cancel(source="strategy:a", token_id=yes, reason="requote"))
    gone, = mesh.wait(m.OrderCanceled, order_id=a.id)
    assert gone.reason == "requote" and gone.venue_order_id == acks[a.id].venue_order_id
    open_ids = {o["id"] for o in mesh.client.get_open_orders()}
    assert acks[a.id].venue_order_id not in open_ids and {acks[b.id].venue_order_id, acks[c.id].venue_order_id} <= open_ids
    mesh.push(m.Cancel(source="risk", reason="halted: drill"))  # risk's kill switch: every source's orders
    mesh.wait(m.OrderCanceled, order_id=b.id)
    mesh.wait(m.OrderCanceled, order_id=c.id)
    assert not mesh.client.get_open_orders()


def test_after_a_kill_and_restart_nothing_is_sent_twice_and_the_account_matches_the_venue(mesh: ExecutorMesh) -> None:
    market = mesh.venue.market()
    yes, no = tokens(market)
    yes_bid, yes_ask = mesh.best(yes)
    taken = order("k-1", 0, yes, market["conditionId"], "BUY", "10", str(yes_ask), "FOK")
    top_bid = order("k-2", 0, yes, market["conditionId"], "BUY", "20", str(yes_bid + D("0.01")))  # best bid now
    deep_bid = order("k-3", 0, yes, market["conditionId"], "BUY", "15", str(yes_bid - D("0.03")))
    sent = [taken, top_bid, deep_bid]
    mesh.push(*sent)
    acks = {o.id: mesh.wait(m.OrderAck, order_id=o.id)[0] for o in sent}
    mesh.kill_executor()
    # While it is down, someone takes 12 of our best bid (BUY NO at 1 - p mints against our YES bid).
    other = mesh.venue.client()
    other.create_and_post_order(OrderArgsV2(token_id=no, price=float(1 - top_bid.limit_price), size=12, side="BUY"),
                                order_type=OrderType.FOK)
    trades_before = mesh.client.get_trades()
    orders_before = mesh.client.get_open_orders()
    mesh.start("executor")
    mesh.wait_ready()

    missed, = mesh.wait(m.Fill, order_id=top_bid.id)  # found by reconciliation, published once
    assert (missed.size, missed.price, missed.liquidity, missed.fee) == (12, top_bid.limit_price, "MAKER", 0)
    mesh.push(*sent)  # risk sends the same orders again: none may reach the venue twice
    wait_for(lambda: mesh.status("executor").get("duplicates") == "3", what="the three duplicates to be refused")
    assert [t["id"] for t in mesh.client.get_trades()] == [t["id"] for t in trades_before]
    assert sorted(o["id"] for o in mesh.client.get_open_orders()) == sorted(o["id"] for o in orders_before)
    assert len(mesh.of(m.Fill, order_id=top_bid.id)) == 1 and len(mesh.of(m.OrderAck, order_id=top_bid.id)) == 1

    account = mesh.account_reply()
    venue_open = {o["id"]: o for o in mesh.client.get_open_orders()}
    assert {o.venue_order_id: (o.size, o.filled, o.price) for o in account.orders} == {
        i: (D(o["original_size"]), D(o["size_matched"]), D(o["price"])) for i, o in venue_open.items()}
    assert {o.order_id for o in account.orders if o.venue_order_id in (acks[top_bid.id].venue_order_id,
                                                                       acks[deep_bid.id].venue_order_id)} == {
        top_bid.id, deep_bid.id}
    held = positions_from_trades(mesh.client.get_trades())
    mine = {p.token_id: p for p in account.positions}
    assert {t: (p.size, p.avg_price) for t, p in mine.items()} == {t: (q, c / q) for t, (q, c) in held.items()}
    assert mine[yes].size == 22 and mine[yes].fees == fee(D(10), yes_ask, rate_of(mesh, market))


def test_after_a_crash_the_journal_and_the_venue_id_each_stop_a_second_send(mesh: ExecutorMesh) -> None:
    # The salt comes from the client id and the signed time from the order: the same order, the same hash.
    assert salt_of("abc") == salt_of("abc") != salt_of("abd") and salt_of("abc") < 2**53
    market = mesh.venue.market()
    yes, _ = tokens(market)
    bid, _ = mesh.best(yes)
    first = order("twice", 0, yes, market["conditionId"], "BUY", "5", str(bid - D("0.02")))
    never_sent = order("crash-1", 0, yes, market["conditionId"], "BUY", "5", str(bid - D("0.03")))
    never_arrived = order("crash-2", 0, yes, market["conditionId"], "BUY", "5", str(bid - D("0.04")))
    mesh.push(first)
    ack, = mesh.wait(m.OrderAck, order_id=first.id)
    mesh.kill_executor()
    # Rewrite the journal as a crash could have left it: ``first`` lost (as after a disk loss), an order taken
    # but killed before it was sent, one killed while being sent that never reached the venue, a torn line.
    journal = mesh.config.state_path / "executor" / "journal-live.jsonl"
    lines = [line for line in journal.read_text().splitlines() if first.id not in line]
    lines += [msgspec.json.encode(r).decode() for r in (
        Taken(order=never_sent), Taken(order=never_arrived),
        Submitting(order_id=never_arrived.id, venue_order_id="0x" + "ab" * 32, price=never_arrived.limit_price,
                   size=never_arrived.size, submitted_ts_ns=never_arrived.ts_ns))]
    journal.write_text("".join(line + "\n" for line in lines) + '{"type": "Taken", "cut sh')
    mesh.start("executor")
    mesh.wait_ready()
    assert mesh.status("executor")["journal_bad_lines"] == "1"
    for lost in (never_sent, never_arrived):
        assert mesh.wait(m.OrderRejected, order_id=lost.id)[0].code == "NOT_SUBMITTED"
    duplicates = int(mesh.status("executor")["duplicates"])
    mesh.push(never_sent, first)  # the journal refuses the first; the venue the second
    wait_for(lambda: int(mesh.status("executor")["duplicates"]) == duplicates + 1, what="the journal's refusal")
    again, = mesh.wait(m.OrderAck, 2, order_id=first.id)[1:]
    assert again.venue_order_id == ack.venue_order_id
    assert [o["id"] for o in mesh.client.get_open_orders()].count(ack.venue_order_id) == 1
    assert not mesh.of(m.OrderRejected, order_id=first.id)
    assert all(o["price"] not in (str(never_sent.limit_price), str(never_arrived.limit_price))
               for o in mesh.client.get_open_orders() if o["asset_id"] == yes)


def test_an_order_whose_fate_the_venue_cannot_tell_yet_is_asked_after_again_soon(tmp_path) -> None:
    # A resend of an order the venue has (its journal line lost) comes back a duplicate: only the venue can say
    # what became of it. The venue's reads then time out; once they answer, the executor asks again within
    # seconds, not at its next periodic round (300 s here).
    mesh = ExecutorMesh(Path(os.path.realpath(tmp_path)), seed=29, call_timeout_s=1.0, reconcile_s=300.0)
    try:
        market = mesh.venue.market()
        yes, _ = tokens(market)
        first = order("lost-line", 0, yes, market["conditionId"], "BUY", "5", str(mesh.best(yes)[0] - D("0.02")))
        mesh.push(first)
        ack, = mesh.wait(m.OrderAck, order_id=first.id)
        mesh.kill_executor()
        journal = mesh.config.state_path / "executor" / "journal-live.jsonl"
        journal.write_text("".join(line + "\n" for line in journal.read_text().splitlines() if first.id not in line))
        mesh.start("executor")
        mesh.wait_ready()
        log = mesh.config_file.parent / "executor.log"
        failed_before = log.read_text().count("reconciliation failed")
        assert httpx.post(f"{mesh.venue.clob}/_admin/latency", json={"reads_ms": 3000}).json() == {"reads_ms": 3000}
        mesh.push(first)
        wait_for(lambda: log.read_text().count("reconciliation failed") > failed_before,
                 what="a reconciliation to time out on the slow reads")
        assert len(mesh.of(m.OrderAck, order_id=first.id)) == 1  # not known yet
        assert httpx.post(f"{mesh.venue.clob}/_admin/latency", json={"reads_ms": 0}).status_code == 200
        again, = wait_for(lambda: mesh.of(m.OrderAck, order_id=first.id)[1:], timeout=15,
                          what="the order acknowledged once the venue answers")
        assert again.venue_order_id == ack.venue_order_id and again.status == "live"
        assert [o["id"] for o in mesh.client.get_open_orders()] == [ack.venue_order_id]
        assert not mesh.of(m.OrderRejected, order_id=first.id)
    finally:
        mesh.close()


def test_a_fill_while_the_user_channel_reconnects_is_published_exactly_once(mesh: ExecutorMesh) -> None:
    market = mesh.venue.market()
    yes, no = tokens(market)
    bid, _ = mesh.best(yes)
    top = order("drop", 0, yes, market["conditionId"], "BUY", "20", str(bid + D("0.01")))
    mesh.push(top)
    mesh.wait(m.OrderAck, order_id=top.id)
    before = mesh.status("executor")
    httpx.post(f"{mesh.venue.clob}/_admin/drop-connections", json={})
    mesh.venue.client().create_and_post_order(
        OrderArgsV2(token_id=no, price=float(1 - top.limit_price), size=7, side="BUY"), order_type=OrderType.FOK)
    wait_for(lambda: int(mesh.status("executor")["user_connects"]) > int(before["user_connects"])
             and int(mesh.status("executor")["reconciles"]) > int(before["reconciles"]),
             what="the user channel to reconnect and the executor to reconcile")
    fill, = mesh.wait(m.Fill, order_id=top.id)
    assert (fill.size, fill.price, fill.liquidity) == (7, top.limit_price, "MAKER")
    account = mesh.account_reply()  # answered after the reconciliation: still one fill, 13 left
    assert next(o.filled for o in account.orders if o.order_id == top.id) == 7
    assert len(mesh.of(m.Fill, order_id=top.id)) == 1


def test_credentials_the_venue_stops_taking_are_derived_again_and_trading_goes_on(mesh: ExecutorMesh) -> None:
    market = mesh.venue.market()
    yes, _ = tokens(market)
    bid, _ = mesh.best(yes)
    mesh.client.delete_api_key()  # the account's key is revoked at the venue (the executor derived the same one)
    wait_for(lambda: int(mesh.status("executor")["credentials_rederived"]) >= 1,
             what="the executor to derive its credentials again after the venue's 401")
    after = order("after-401", 0, yes, market["conditionId"], "BUY", "5", str(bid - D("0.05")))
    mesh.push(after)
    ack, = mesh.wait(m.OrderAck, order_id=after.id)
    assert ack.venue_order_id in {o["id"] for o in mesh.client.get_open_orders()}
    mesh.push(m.Cancel(source=after.source, order_ids=[after.id]))
    mesh.wait(m.OrderCanceled, order_id=after.id)


def test_heartbeats_keep_orders_alive_and_when_they_stop_the_venue_cancels_and_the_restart_reports_it(
        tmp_path_factory) -> None:
    mesh = ExecutorMesh(Path(os.path.realpath(tmp_path_factory.mktemp("beat"))), seed=29,
                        venue_args=("--heartbeat-timeout-ms", "1000"), heartbeat_s=0.2)
    try:
        market = mesh.venue.market()
        yes, _ = tokens(market)
        bid, _ = mesh.best(yes)
        resting = order("hb", 0, yes, market["conditionId"], "BUY", "5", str(bid - D("0.01")))
        mesh.push(resting)
        ack, = mesh.wait(m.OrderAck, order_id=resting.id)
        beats = int(mesh.status("executor")["heartbeats"])
        wait_for(lambda: int(mesh.status("executor")["heartbeats"]) >= beats + 8, what="1.6 s of heartbeats")
        assert mesh.client.get_order(ack.venue_order_id)["status"] == "LIVE"  # alive past the 1 s silence limit
        mesh.kill_executor()
        wait_for(lambda: mesh.client.get_order(ack.venue_order_id)["status"] == "CANCELED",
                 what="the venue to cancel the silent account's order")
        mesh.start("executor")
        mesh.wait_ready()
        canceled, = mesh.wait(m.OrderCanceled, order_id=resting.id)
        assert canceled.remaining == 5
        assert mesh.account_reply().orders == []
    finally:
        mesh.close()


def test_prices_and_sizes_are_rounded_to_the_market_rules_at_the_venue_edge(mesh: ExecutorMesh) -> None:
    market = mesh.venue.market()
    yes, _ = tokens(market)
    bid, _ = mesh.best(yes)
    odd = order("round", 0, yes, market["conditionId"], "BUY", "5.009", str(bid - D("0.0101")))
    mesh.push(odd)
    ack, = mesh.wait(m.OrderAck, order_id=odd.id)
    at_venue = mesh.client.get_order(ack.venue_order_id)
    # The size down to 2 decimals; a BUY's price down to the tick (never more than risk allowed).
    assert (D(at_venue["original_size"]), D(at_venue["price"])) == (D("5"), bid - D("0.02"))
    assert at_venue["status"] == "LIVE"


def test_the_adapter_reads_a_markets_rules_from_the_venue_as_gamma_describes_them(mesh: ExecutorMesh) -> None:
    market = mesh.venue.market()
    yes, no = tokens(market)
    rules = Clob(mesh.venue.clob, 137, mesh.account.private_key).rules(no, market["conditionId"])
    assert (rules.tick, rules.min_size, rules.neg_risk, rules.fee_rate, rules.complement) == (
        D(str(market["orderPriceMinTickSize"])), D(str(market["orderMinSize"])), market["negRisk"],
        rate_of(mesh, market), yes)
    with pytest.raises(VenueError) as refused:
        Clob(mesh.venue.clob, 137, mesh.account.private_key).rules(no, "0x" + "0" * 64)
    assert refused.value.code == "UNKNOWN_MARKET"


def test_a_resolved_market_settles_the_position_as_the_venue_pays_it(mesh: ExecutorMesh) -> None:
    market = fee_market(mesh)
    yes, _ = tokens(market)
    _, ask = mesh.best(yes)
    bought = order("settle", 0, yes, market["conditionId"], "BUY", "10", str(ask), "FOK")
    mesh.push(bought)
    fill, = mesh.wait(m.Fill, order_id=bought.id)
    httpx.post(f"{mesh.venue.clob}/_admin/resolve", json={"market": market["conditionId"], "winner": "Yes"})
    settled = wait_for(lambda: next((p for p in mesh.account_reply().positions if p.token_id == yes and p.size == 0),
                                    None), what="the position to settle")
    assert settled.realized == 10 - fill.size * fill.price - fill.fee and settled.fees == fill.fee
