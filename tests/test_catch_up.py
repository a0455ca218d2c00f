"""Records are not lost while analytics is down, and an order the journal cannot record is refused: real processes
(the local venue, scanner, executor, risk, analytics), the test playing risk on ``orders`` for the executions and a
strategy on ``signals`` for risk's verdicts, DuckDB read back through analytics, and the venue's own record of the
account's trades and risk's own counts as the truth."""
from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from polybot_venue.server import ready_made_account
from services import messages as m
from services.analytics.numbering import Numbering
from services.executor.desk import JOURNAL_FAILED

from .conftest import child_env, wait_for
from .executor_harness import order, positions_from_trades
from .trading_harness import Trading
from .venue_harness import Venue, tokens

D = Decimal
SEED = 61


class Mesh(Trading):
    """The trading mesh: the test sends orders itself (beside risk's) and reads the venue's account, and sends
    signals as a strategy would, hearing risk's verdicts."""

    def __init__(self, root: Path) -> None:
        self.venue_proc = Venue(root / "venue", SEED, 100, "--still")
        # The executor compacts its journal at every start here (past 1 KB), and risk keeps only its last 5 verdicts
        # (compacting at 10): catching up must still work.
        super().__init__(root, self.venue_proc, {"scanner": "", "executor": "journal_compact_mb = 0.001",
                                                 "risk": "journal_keep = 5", "analytics": ""})
        self.orders = self.bus.outbound("orders")
        self.heard: dict[str, m.NumberedVerdict] = {}  # signal id -> risk's verdict on it, as published
        self.account = self.venue.client(ready_made_account(SEED).private_key)

    def buy_at_ask(self, oid: str, size: str = "5") -> m.Order:
        """A FOK BUY at an untouched market's best ask: a trade at the venue."""
        market = self.venue.market()
        yes, _ = tokens(market)
        book = httpx.get(f"{self.venue.clob}/book", params={"token_id": yes}).json()
        o = order(oid, 0, yes, market["conditionId"], "BUY", size, book["asks"][-1]["price"], "FOK")
        assert self.orders.send(o)
        return o

    def sql(self, query: str) -> m.QueryReply:
        reply = self.ask("analytics", m.QueryRequest(sql=query))
        assert isinstance(reply, m.QueryReply), reply
        return reply

    def executor_fills(self) -> int:
        return int(self.detail("executor").get("fills", "-1"))

    def decide(self, *signals: m.Signal) -> list[m.NumberedVerdict]:
        """Send signals as a strategy does; risk's verdicts on them, as it published them. The sockets are new each
        time: one of before a risk restart may still hold a pipe to the process gone."""
        out, decisions = self.bus.outbound("signals"), self.bus.inbound("decisions")
        try:
            wait_for(lambda: out.socket.pipes and decisions.socket.pipes, what="risk's sockets to connect")
            for signal in signals:
                assert out.send(signal)

            def decided() -> bool:
                for msg in decisions.recv_batch(100):
                    if isinstance(msg, m.SignalAccepted | m.SignalRejected | m.SignalPending):
                        self.heard[msg.signal_id] = msg
                return all(s.id in self.heard for s in signals)
            wait_for(decided, what="risk's verdicts")
        finally:
            out.close()
            decisions.close()
        return [self.heard[s.id] for s in signals]

    def restart_on_a_full_disk(self, name: str, journal: Path) -> int:
        """Stop the service and start it again with no room for more than ``journal`` holds now: its files may not
        grow past that size (RLIMIT_FSIZE); returns the size."""
        self.stop(name)
        limit = journal.stat().st_size

        def full_disk() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "services", "--config", str(self.config_file), "run", name],
            env=child_env(), stdout=subprocess.DEVNULL, stderr=open(self.root / f"{name}-full.out", "a"),
            preexec_fn=full_disk)
        return limit

    def recorded_verdicts(self) -> dict[str, int]:
        """Verdict id -> how many times analytics recorded it."""
        return dict(self.sql("SELECT id, count(*) FROM verdicts GROUP BY id").rows)


def bid(market: dict, size: str, price_past_bid: str = "0") -> m.Signal:
    """A GTC BUY at an untouched market's best bid (plus ``price_past_bid``): it rests, nothing trades."""
    yes, _ = tokens(market)
    book = httpx.get(f"{market['clob']}/book", params={"token_id": yes}).json()
    price = D(book["bids"][-1]["price"]) + D(price_past_bid)
    return m.Signal(source="strategy:catch-up", rationale="rest a bid", legs=[m.Leg(
        token_id=yes, market=market["conditionId"], side="BUY", size=D(size), limit_price=price)])


def test_a_seq_past_the_next_opens_a_gap_until_the_missing_ones_come_or_are_known_gone() -> None:
    held = Numbering()
    assert all(held.offer("s", n) for n in (1, 2)) and held.missing == 0
    assert held.offer("s", 5) and held.missing == 2  # 3 and 4 were missed
    assert not held.offer("s", 2) and not held.offer("s", 5)  # heard twice: recorded once
    assert held.offer("s", 3) and held.missing == 1 and held.floor("s") == 3
    held.known("s", 7)  # the executor has numbered up to 7
    assert held.missing == 3 and held.settle("s", 7) == 3  # 4, 6, 7 are not in its journal any more
    assert (held.floor("s"), held.missing, held.lost) == (7, 0, 3)
    assert held.offer("other", 1) and held.floors() == {"s": 7, "other": 1}  # a new journal: numbered apart


def test_what_the_database_holds_is_where_the_numbering_starts_again() -> None:
    held = Numbering()
    held.load("s", 4, [6, 7, 9])
    assert (held.floor("s"), held.missing) == (4, 2)  # 5 and 8
    assert held.offer("s", 5) and held.floor("s") == 7 and not held.offer("s", 6)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Iterator[Mesh]:
    mesh = Mesh(Path(os.path.realpath(tmp_path_factory.mktemp("catchup"))))
    try:
        mesh.start("scanner", "executor")
        mesh.wait_ready("scanner", "executor")
        mesh.start("risk")
        mesh.wait_ready("risk")
        mesh.start("analytics")
        mesh.wait_ready("analytics")
        wait_for(lambda: mesh.orders.socket.pipes, what="the orders socket to connect")
        yield mesh
    finally:
        mesh.close()
        mesh.venue.stop()


def test_what_is_published_while_analytics_is_down_reaches_duckdb_once_when_it_is_back(mesh: Mesh) -> None:
    sent = [mesh.buy_at_ask("cu-live-1")]
    wait_for(lambda: mesh.sql("SELECT count(*) FROM fills").rows == [[1]], what="the first fill recorded live")
    mesh.stop("analytics", kill=True)
    sent += [mesh.buy_at_ask(f"cu-down-{i}") for i in range(3)]  # traded while analytics is down
    wait_for(lambda: mesh.executor_fills() == 4, what="the executor to publish the fills")
    mesh.stop("executor")  # and the executor goes too: analytics starts alone, and must say it is behind
    mesh.start("analytics")
    wait_for(lambda: mesh.detail("analytics").get("catching_up") == "True", what="analytics to say it is behind")
    behind = mesh.sql("SELECT count(*) FROM fills")
    assert behind.catching_up and "analytics is catching up" in behind.incomplete()
    cli = subprocess.run([sys.executable, "-m", "services", "--config", str(mesh.config_file), "fills"],
                         env=child_env(), capture_output=True, text=True, timeout=60)
    assert "analytics is catching up" in cli.stderr, cli.stderr

    mesh.start("executor")
    mesh.wait_ready("executor")
    wait_for(lambda: mesh.detail("analytics").get("catching_up") == "False", what="analytics to catch up")
    trades = mesh.account.get_trades()
    assert len(trades) == 4
    recorded = mesh.sql("SELECT trade_id, count(*) FROM executions WHERE kind = 'Fill' GROUP BY trade_id")
    assert sorted(recorded.rows) == sorted([t["id"], 1] for t in trades) and not recorded.catching_up
    acks = mesh.sql("SELECT order_id, count(*) FROM executions WHERE kind = 'OrderAck' GROUP BY order_id").rows
    assert sorted(acks) == sorted([o.id, 1] for o in sent)
    held = {r[0]: (D(r[1]), D(r[2])) for r in mesh.sql("SELECT token_id, sum(size), sum(size * price) FROM fills "
                                                       "GROUP BY token_id").rows}
    assert held == positions_from_trades(trades)
    positions = {r["token_id"]: D(r["size"]) for r in (dict(zip(p.columns, row)) for p in
                 [mesh.ask("analytics", m.QueryRequest(name="positions"))] for row in p.rows)}
    assert positions == {token: size for token, (size, _) in positions_from_trades(trades).items()}
    assert mesh.detail("analytics")["behind"] == "0"


def test_an_order_the_journal_cannot_record_is_refused_with_a_reason_and_never_sent(mesh: Mesh) -> None:
    """A full disk, for real: the executor's files may not grow past the journal's size now (RLIMIT_FSIZE)."""
    journal = mesh.config.state_path / "executor" / "journal-live.jsonl"
    limit = mesh.restart_on_a_full_disk("executor", journal)
    executions = mesh.bus.inbound("executions")
    try:
        mesh.wait_ready("executor")
        wait_for(lambda: executions.socket.pipes and mesh.orders.socket.pipes, what="the sockets to connect")
        sent = mesh.buy_at_ask("cu-full-1")

        def refused() -> list[m.OrderRejected]:
            return [msg for msg in executions.recv_batch(100) if isinstance(msg, m.OrderRejected)
                    and msg.order_id == sent.id]
        rejected, = wait_for(refused, what="the order to be refused")
        assert rejected.code == JOURNAL_FAILED and "could not record the order" in rejected.message
        assert "free disk space" in rejected.message and rejected.seq == 0  # unnumbered: the journal has no room
        assert mesh.detail("executor")["journal_write_errors"] != "0"
        assert journal.stat().st_size == limit  # nothing half-written
        assert len(mesh.account.get_trades()) == 4  # a FOK at the ask would have traded: it never went out
        assert mesh.detail("executor")["open_orders"] == "0"
    finally:
        executions.close()
        mesh.stop("executor")
    mesh.start("executor")  # room again: the journal takes records as before
    mesh.wait_ready("executor")
    mesh.buy_at_ask("cu-after-full")
    wait_for(lambda: len(mesh.account.get_trades()) == 5, what="an order to trade again")


def market_at(mesh: Mesh) -> dict:
    return {**mesh.venue.market(), "clob": mesh.venue.clob}


def refusals(detail: dict[str, str]) -> dict[str, int]:
    return {code: int(n) for code, n in (part.split("=") for part in detail["refusals"].split(",") if part)}


def test_verdicts_risk_publishes_while_analytics_is_down_reach_duckdb_once_when_it_is_back(mesh: Mesh) -> None:
    mesh.wait_ready("risk")  # the executor restarted in the tests before: risk takes its account again
    market = market_at(mesh)
    accepted, = mesh.decide(bid(market, "5"))
    assert isinstance(accepted, m.SignalAccepted), accepted
    wait_for(lambda: accepted.id in mesh.recorded_verdicts(), what="the first verdict recorded live")
    mesh.stop("analytics", kill=True)
    down = mesh.decide(
        *(bid(market, size) for size in ("5", "6", "7")),  # accepted: they rest
        bid(market, "2000"),  # too big an order (ORDER_NOTIONAL)
        bid(market, "5", "0.0001"),  # off the tick (TICK_SIZE)
        bid(market, "1"), bid(market, "2"))  # under the market's minimum size (MIN_SIZE)
    assert [type(v).__name__ for v in down].count("SignalAccepted") == 3
    assert len({r.code for v in down if isinstance(v, m.SignalRejected) for r in v.reasons}) >= 3

    counted = refusals(mesh.detail("risk"))
    mesh.stop("risk")  # and risk goes too: analytics starts alone, and must say it is behind on the verdicts
    mesh.start("analytics")
    wait_for(lambda: mesh.detail("analytics").get("decisions_catching_up") == "True", what="analytics to say it is "
             "behind on the verdicts")
    behind = mesh.sql("SELECT count(*) FROM verdicts")
    assert behind.catching_up and "verdicts" in behind.incomplete()

    mesh.start("risk")
    mesh.wait_ready("risk", "analytics")
    wait_for(lambda: mesh.detail("analytics").get("decisions_catching_up") == "False",
             what="analytics to catch up with risk's verdicts")
    published = {v.id for v in mesh.heard.values()}
    recorded = mesh.recorded_verdicts()
    assert published <= set(recorded) and all(recorded[v] == 1 for v in published)  # each once
    by_code = dict(mesh.sql("SELECT code, count(DISTINCT verdict_id) FROM verdict_reasons GROUP BY code").rows)
    assert by_code == counted and by_code
    signals = mesh.sql("SELECT s.signal_id, count(*) FROM signals s GROUP BY s.signal_id").rows
    assert {v.signal_id for v in down} <= {sid for sid, n in signals if n == 1}  # the signals, from the verdicts
    analytics = mesh.detail("analytics")
    assert (analytics["decisions_behind"], analytics["decisions_lost"], analytics["behind"]) == ("0", "0", "0")


def test_a_risk_restart_numbers_on_where_it_was_and_nothing_is_counted_twice_or_missing(mesh: Mesh) -> None:
    before = int(mesh.detail("risk")["journal_seq"])
    mesh.stop("analytics", kill=True)
    mesh.stop("risk", kill=True)  # a crash: the journal is all it has of its numbering
    mesh.start("risk")
    mesh.wait_ready("risk")
    market = market_at(mesh)
    after = mesh.decide(bid(market, "5"), bid(market, "2000"))
    assert [v.seq for v in after] == [before + 1, before + 2]
    assert int(mesh.detail("risk")["journal_first_seq"]) > 1  # compacted meanwhile, keeping what analytics lacks
    mesh.start("analytics")
    mesh.wait_ready("analytics")
    wait_for(lambda: mesh.detail("analytics").get("catching_up") == "False", what="analytics to catch up")
    numbered = mesh.sql("SELECT stream, seq, count(*) FROM verdicts WHERE seq IS NOT NULL GROUP BY ALL "
                        "ORDER BY seq").rows
    assert [(stream, seq, n) for stream, seq, n in numbered] == [(after[0].stream, seq, 1)
                                                                  for seq in range(1, before + 3)]
    analytics = mesh.detail("analytics")
    assert (analytics["decisions_behind"], analytics["decisions_lost"], analytics["catching_up"]) == ("0", "0", "False")

    # The journal lost for good: the next risk starts a stream of its own, which analytics numbers apart.
    mesh.stop("risk")
    (mesh.config.state_path / "risk" / "decisions.jsonl").unlink()
    mesh.start("risk")
    mesh.wait_ready("risk")
    fresh, = mesh.decide(bid(market, "5"))
    assert fresh.seq == 1 and fresh.stream != after[0].stream
    wait_for(lambda: fresh.id in mesh.recorded_verdicts(), what="the new stream's first verdict recorded")
    assert mesh.detail("analytics")["decisions_behind"] == "0"


def test_a_verdict_the_journal_cannot_record_is_published_unnumbered_and_risk_decides_on(mesh: Mesh) -> None:
    """A full disk, for real: risk's files may not grow past its journal's size now (RLIMIT_FSIZE)."""
    journal = mesh.config.state_path / "risk" / "decisions.jsonl"
    limit = mesh.restart_on_a_full_disk("risk", journal)
    try:
        mesh.wait_ready("risk")
        market = market_at(mesh)
        verdicts = mesh.decide(bid(market, "5"), bid(market, "2000"))  # one accepted, one refused
        assert [type(v) for v in verdicts] == [m.SignalAccepted, m.SignalRejected]
        assert [v.seq for v in verdicts] == [0, 0]  # published all the same, unnumbered: the journal has no room
        detail = mesh.detail("risk")
        assert detail["journal_write_errors"] == "2" and detail["accepted"] == "1" and detail["rejected"] == "1"
        assert journal.stat().st_size == limit  # nothing half-written
    finally:
        mesh.stop("risk")
    mesh.start("risk")  # room again: numbered on from where the journal stood
    mesh.wait_ready("risk")
    numbered, = mesh.decide(bid(market_at(mesh), "5"))
    assert numbered.seq == 2  # the new stream of the test before had 1; the two unrecorded took no number
