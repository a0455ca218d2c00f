"""The trade path under faults, every service a real process: the executor killed while signals flow, and the
venue dropping every WebSocket. The test pushes signals where strategies would."""
from __future__ import annotations

import itertools
import os
import threading
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path

import httpx
import pytest

from services import messages as m
from polybot_venue.server import ready_made_account

from .conftest import wait_for
from .executor_harness import positions_from_trades
from .trading_harness import Trading
from .venue_harness import Venue, tokens

SEED = 61
LOOSE = {"MAX_OPEN_ORDERS": "5000", "MAX_SIGNALS_PER_MINUTE": "100000", "MAX_POSITION_PER_TOKEN": "100000",
         "MAX_POSITION_PER_MARKET": "100000", "MAX_GROSS_EXPOSURE": "100000", "MAX_PRICE_DEVIATION": "0.2"}


class Flow:
    """A thread pushing signals at a steady pace; every verdict and execution is kept, in arrival order."""

    def __init__(self, mesh: Trading, legs) -> None:
        self.mesh, self.legs = mesh, legs
        self.out = mesh.bus.outbound("signals")
        self.decisions = mesh.bus.inbound("decisions")
        self.executions = mesh.bus.inbound("executions")
        wait_for(lambda: self.out.socket.pipes and self.decisions.socket.pipes and self.executions.socket.pipes,
                 what="the test's sockets")
        self.verdicts: list[m.Message] = []
        self.execs: list[m.Message] = []
        self.pushed = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for i in itertools.count():
            if self.stop.wait(0.02):  # the pace of the flow, not a synchronisation
                return
            assert self.out.send(m.Signal(source="strategy:flow", legs=self.legs(i)))
            self.pushed += 1

    def read(self) -> None:
        with self.lock:
            self.verdicts += [v for v in self.decisions.drain() if not isinstance(v, m.Heartbeat)]
            self.execs += [e for e in self.executions.drain() if not isinstance(e, m.Heartbeat)]

    def count(self, kind: type, code: str = "") -> int:
        self.read()
        return sum(isinstance(v, kind) and (not code or any(r.code == code for r in v.reasons))
                   for v in self.verdicts)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Iterator[Trading]:
    root = Path(os.path.realpath(tmp_path_factory.mktemp("faults")))
    venue = Venue(root / "venue", SEED, 100, "--still", "--markets", "30")
    mesh = Trading(root, venue, {"scanner": "ping_s = 0.5, stale_after_s = 5, reconnect_initial_s = 0.3",
                                 "executor": "heartbeat_s = 0.5", "risk": ""})
    env = {f"POLYBOT_SERVICES__RISK__OPTIONS__LIMITS__{k}": v for k, v in LOOSE.items()}
    try:
        mesh.start("scanner", "executor")
        mesh.wait_ready("scanner", "executor")
        mesh.start("risk", **env)
        mesh.wait_ready("risk")
        yield mesh
    finally:
        mesh.close()
        venue.stop()


def sent_counter(mesh: Trading, service: str, socket: str) -> int:
    with mesh.bus.requester(service, 2000) as req:
        return req.request(m.StatusRequest()).service.sockets[socket].sent


def test_killing_the_executor_while_signals_flow_sends_no_order_twice_and_it_comes_back_matching_the_venue(
        mesh: Trading) -> None:
    venue = mesh.venue
    chosen = [venue.market() for _ in range(4)]
    books = {}
    for market in chosen:
        for token in tokens(market):
            book = httpx.get(f"{venue.clob}/book", params={"token_id": token}).json()
            books[token] = (max(D(b["price"]) for b in book["bids"]), min(D(a["price"]) for a in book["asks"]))
    names = sorted(books)

    def legs(i: int) -> list[m.Leg]:
        token = names[i % len(names)]
        bid, ask = books[token]
        if i % 3 == 0:  # takes: fills while the house's size lasts, then FOK_UNFILLED
            return [m.Leg(token_id=token, side="BUY", size=D(5), limit_price=ask, order_type="FOK")]
        return [m.Leg(token_id=token, side="BUY", size=D(5), limit_price=bid - D("0.01") * (i % 5 + 1))]

    flow = Flow(mesh, legs)
    flow.thread.start()
    try:
        wait_for(lambda: flow.count(m.SignalAccepted) >= 15, what="orders flowing")
        scanner_sent = sent_counter(mesh, "scanner", "prices")
        mesh.stop("executor", kill=True)
        down_from = flow.count(m.SignalRejected, "EXECUTOR_DOWN")
        wait_for(lambda: flow.count(m.SignalRejected, "EXECUTOR_DOWN") >= down_from + 10,
                 what="risk deciding on while the executor is gone")
        target = chosen[0]
        httpx.post(f"{venue.clob}/_admin/move", json={"market": target["conditionId"], "price": "0.5"})
        wait_for(lambda: sent_counter(mesh, "scanner", "prices") > scanner_sent + 2,
                 what="the scanner publishing on with the executor gone")
        mesh.start("executor")
        accepted_before = flow.count(m.SignalAccepted)
        wait_for(lambda: flow.count(m.SignalAccepted) >= accepted_before + 15, what="orders flowing again",
                 timeout=30)
    finally:
        flow.stop.set()
        flow.thread.join(5)

    account = ready_made_account(SEED)
    client = venue.client(account.private_key)

    def matches_venue() -> bool:
        with mesh.bus.requester("executor", 3000) as req:
            reply = req.request(m.AccountRequest())
        if not isinstance(reply, m.AccountReply):
            return False
        venue_open = {o["id"] for o in client.get_open_orders()}
        ours_open = {o.venue_order_id for o in reply.orders if o.status == "live"}
        held = {t: size for t, (size, _) in positions_from_trades(client.get_trades()).items() if size}
        ours_held = {p.token_id: p.size for p in reply.positions if p.size}
        return venue_open == ours_open and held == ours_held and bool(held)
    wait_for(matches_venue, what="the restarted executor's orders and positions to equal the venue's", timeout=20)

    flow.read()
    orders = {o.id: o for v in flow.verdicts if isinstance(v, m.SignalAccepted) for o in v.orders}
    acks: dict[str, set[str]] = defaultdict(set)
    filled: dict[str, D] = defaultdict(D)
    for e in flow.execs:
        if isinstance(e, m.OrderAck):
            acks[e.order_id].add(e.venue_order_id)
        elif isinstance(e, m.Fill):
            filled[e.order_id] += e.size
    assert all(len(ids) == 1 for ids in acks.values())  # one venue order per client order, never a second
    assert all(filled[oid] <= orders[oid].size for oid in filled)  # sent twice would fill twice
    trades_by_order: dict[str, D] = defaultdict(D)
    for trade in client.get_trades():
        if trade["trader_side"] == "TAKER":
            trades_by_order[trade["taker_order_id"]] += D(trade["size"])
    assert trades_by_order and all(size <= 5 for size in trades_by_order.values())  # every signal's leg is 5
    assert flow.out.send(m.Cancel(source="risk", reason="test cleanup"))


def test_after_the_venue_drops_every_websocket_books_are_rebuilt_and_no_order_goes_out_on_a_stale_book(
        mesh: Trading) -> None:
    venue = mesh.venue
    market = venue.market()
    yes, _ = tokens(market)
    book = httpx.get(f"{venue.clob}/book", params={"token_id": yes}).json()
    bid = max(D(b["price"]) for b in book["bids"])
    flow = Flow(mesh, lambda i: [m.Leg(token_id=yes, side="BUY", size=D(5), limit_price=bid - D("0.05"))])
    events = mesh.bus.inbound("events")
    wait_for(lambda: events.socket.pipes, what="the events subscription")
    flow.thread.start()
    try:
        wait_for(lambda: flow.count(m.SignalAccepted) >= 5, what="orders flowing")
        assert httpx.post(f"{venue.clob}/_admin/drop-connections").json()["dropped"] >= 1
        staleness: list[m.MarketStale] = []

        def live_again() -> bool:
            staleness.extend(e for e in events.drain() if isinstance(e, m.MarketStale) and market["conditionId"]
                             in e.markets)
            return any(s.stale for s in staleness) and not staleness[-1].stale
        wait_for(live_again, what="the market stale, then live again")
        accepted = flow.count(m.SignalAccepted)
        wait_for(lambda: flow.count(m.SignalAccepted) > accepted + 5, what="orders flowing after the reconnect")
    finally:
        flow.stop.set()
        flow.thread.join(5)
    # Risk hears of the staleness one bus hop after the scanner: allow that hop, then nothing may pass.
    went_stale = next(s.ts_ns for s in staleness if s.stale) + 50_000_000
    fresh = next(s.ts_ns for s in staleness if not s.stale)
    flow.read()
    during = [v for v in flow.verdicts if went_stale <= v.ts_ns <= fresh]
    assert during and all(isinstance(v, m.SignalRejected) and [r.code for r in v.reasons] == ["STALE_BOOK"]
                          for v in during)

    def levels(rows: list) -> list[tuple[D, D]]:
        return sorted((D(r["price"]), D(r["size"])) if isinstance(r, dict) else (r.price, r.size) for r in rows)

    def every_book_equals_the_venues() -> bool:
        snapshot = mesh.ask("scanner", m.SnapshotRequest())
        for book in snapshot.books.books:
            venue_book = httpx.get(f"{venue.clob}/book", params={"token_id": book.token_id}).json()
            if (levels(book.bids), levels(book.asks)) != (levels(venue_book["bids"]), levels(venue_book["asks"])):
                return False
        return len(snapshot.books.books) > 0
    wait_for(every_book_equals_the_venues, what="every book rebuilt equal to GET /book")
    assert flow.out.send(m.Cancel(source="risk", reason="test cleanup"))


def test_the_quoter_rests_bids_at_the_venue_and_replaces_them_when_the_market_moves(mesh: Trading) -> None:
    """Strategies -> risk -> executor with the liquidity-providing strategy: post-only bids on both tokens, and a
    cancel-and-replace at the venue when the mid moves."""
    market = mesh.venue.market()
    yes, no = tokens(market)
    # A strategies host with the quoter alone (the mesh's config leaves strategies off; `run` starts it anyway).
    quoter = f'{{ quoter = {{ markets = ["{market["conditionId"]}"], size = 5, spread_ticks = 2, min_requote_ms = 0 }} }}'
    mesh.start("strategies", POLYBOT_SERVICES__STRATEGIES__OPTIONS__STRATEGIES=quoter)
    client = mesh.venue.client(ready_made_account(SEED).private_key)

    def quotes() -> dict[str, D]:
        return {o["asset_id"]: D(o["price"]) for o in client.get_open_orders() if o["asset_id"] in (yes, no)}
    try:
        wait_for(lambda: mesh.detail("strategies").get("account", "").endswith("holdings"),
                 what="the host to give its strategies the executor's account (the quoter's inventory)")
        first = wait_for(lambda: len(q := quotes()) == 2 and q, what="a bid resting on each token")
        httpx.post(f"{mesh.venue.clob}/_admin/move", json={"market": market["conditionId"], "price": "0.3"})
        moved = wait_for(lambda: (q := quotes()) and len(q) == 2 and q[yes] < first[yes] and q,
                         what="the quotes replaced around the new mid")
        assert moved[no] > first[no]  # the YES offer came down with the mid: the NO bid went up
        resting = [o["asset_id"] for o in client.get_open_orders() if o["asset_id"] in (yes, no)]
        assert sorted(resting) == sorted([yes, no])  # replaced, not added to: one bid per token
    finally:
        mesh.stop("strategies")
        mesh.bus.outbound("signals").send(m.Cancel(source="risk", reason="test cleanup"))
