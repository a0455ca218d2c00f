"""Backpressure: a slow executor throttles the strategies over control and releases them once it catches up,
while the scanner keeps its pace and nothing blocks; the strategies host sheds signals from stale books, and
under a throttle sends at most so many signals a second."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from decimal import Decimal as D
from pathlib import Path

import httpx

from services import messages as m
from services.bus import Bus
from services.config import ensure_state_dir, load

from .conftest import child_env, wait_for
from .test_trade_e2e import Up

WINDOW = 80  # book messages: the scanner's pace is measured over this many
LIVING = "life = { requotes_per_s = 40.0, gaps_per_s = 0.0, resolutions_per_s = 0.0, trades_per_s = 0.0 }"


class Heard:
    """A subscriber of the scanner's prices, keeping when each message was published."""

    def __init__(self, config) -> None:
        self.bus = Bus(config)
        self.inbound = self.bus.inbound("prices", [m.BookSnapshot, m.BookDelta])
        self.times: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            self.times.extend(msg.ts_ns for msg in self.inbound.recv_batch(100))

    def count(self, since_ns: int) -> int:
        return sum(1 for t in list(self.times) if t >= since_ns)

    def rate(self, start_ns: int, end_ns: int) -> float:
        """Messages per second the scanner published between two instants."""
        return sum(1 for t in list(self.times) if start_ns <= t < end_ns) / ((end_ns - start_ns) / 1e9)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.bus.close()


def test_a_slow_executor_throttles_the_strategies_then_releases_them_and_the_scanner_keeps_its_pace(
        mesh_factory) -> None:
    up = Up(mesh_factory, venue=LIVING)
    config = load(up.mesh.config, {"HOME": str(up.mesh.state)})
    heard = Heard(config)
    markets = [mk["conditionId"] for mk in up.binary[:6]]

    def rows() -> dict:
        return up.mesh.status()
    try:
        wait_for(lambda: heard.inbound.socket.pipes and heard.times, what="the test to hear the scanner")
        start = time.time_ns()
        before = rows()
        wait_for(lambda: heard.count(start) >= WINDOW, what="a baseline of the scanner's pace")
        baseline_end = time.time_ns()

        # The venue takes 2 s to answer an order: the executor's oldest unanswered order ages past its limit.
        assert httpx.post(f"{up.clob}/_admin/latency", json={"orders_ms": 2000}).json() == {"orders_ms": 2000.0}
        up.open_gap(markets[0])
        # Both in one status: the services answer one after the other, so the executor's row can predate its
        # throttle by the moment it takes to tell the strategies (seen once in CI).
        wait_for(lambda: (r := rows())["strategies"]["detail"]["throttled"] == "True"
                 and r["executor"]["detail"]["throttling"] == "True", what="the strategies throttled", timeout=20)
        throttled_at = time.time_ns()
        # Throttled, the host lets about one signal a second through and sheds the rest; gaps keep coming.
        for market in markets[1:5]:
            up.open_gap(market)
        shed = wait_for(lambda: int((r := rows())["strategies"]["detail"]["shed_throttled"]) >= 1 and r,
                        what="a signal shed under the throttle", timeout=20)
        assert shed["strategies"]["detail"]["throttled"] == "True"
        wait_for(lambda: heard.count(throttled_at) >= WINDOW, what="the scanner's pace under the throttle")
        during_end = time.time_ns()
        assert rows()["strategies"]["detail"]["throttled"] == "True"  # the window was all under the throttle

        # The venue is quick again: the executor catches up and releases the strategies.
        assert httpx.post(f"{up.clob}/_admin/latency", json={"orders_ms": 0}).status_code == 200
        released = wait_for(lambda: (r := rows())["strategies"]["detail"]["throttled"] == "False"
                            and r["executor"]["detail"]["throttling"] == "False" and r,
                            what="the strategies released", timeout=30)
        assert int(released["executor"]["detail"]["throttles"]) >= 1
        assert int(released["strategies"]["detail"]["throttles"]) >= 1

        # Signals flow again: the next gap is traded.
        accepted = int(released["risk"]["detail"]["accepted"])
        up.open_gap(markets[5])
        wait_for(lambda: int(rows()["risk"]["detail"]["accepted"]) > accepted, what="the next gap accepted",
                 timeout=20)

        # The scanner never slowed: its pace under the throttle is its pace before, and nothing was dropped on
        # the way to any subscriber.
        pace_before = heard.rate(start, baseline_end)
        pace_during = heard.rate(throttled_at, during_end)
        assert pace_before > 5 and pace_during >= 0.6 * pace_before, (pace_before, pace_during)
        after = rows()
        assert after["scanner"]["pid"] == before["scanner"]["pid"]
        assert after["scanner"]["sockets"]["prices"]["dropped"] == 0
        for name in ("strategies", "analytics"):
            assert after[name]["sockets"]["prices"]["dropped"] == before[name]["sockets"]["prices"]["dropped"], name
    finally:
        heard.close()


# ---------------------------------------------------------------- the strategies host on its own


def gap_books(cid: str, ts_ns: int) -> m.BookSnapshot:
    """A binary market whose YES + NO asks sum to 0.90: an arbitrage after fees."""
    return m.BookSnapshot(ts_ns=ts_ns, books=[
        m.Book(token_id=f"{cid}-y", market=cid, bids=[], asks=[m.Level(D("0.45"), D("30"))]),
        m.Book(token_id=f"{cid}-n", market=cid, bids=[], asks=[m.Level(D("0.45"), D("30"))])])


def binary(cid: str) -> m.MarketNew:
    return m.MarketNew(market=cid, question="?", outcomes=[m.Outcome(token_id=f"{cid}-y", name="Yes"),
                                                           m.Outcome(token_id=f"{cid}-n", name="No")],
                       fee_rate=D("0.02"))


class Host:
    """A real strategies process; the test plays the scanner (prices, events, its snapshot) and risk (signals)."""

    def __init__(self, root: Path, markets: list[str]) -> None:
        path = root / "polybot.toml"
        path.write_text(f'state_dir = "{root / "state"}"\n[local_venue]\nstart = false\n'
                        '[services.strategies]\nkind = "services.strategies.host:Strategies"\n'
                        'options = { max_book_age_ms = 500 }\n')
        self.config = load(path, {"HOME": str(root)})
        ensure_state_dir(self.config)
        self.bus = Bus(self.config)
        self.prices = self.bus.outbound("prices")
        self.events = self.bus.outbound("events")
        self.signals = self.bus.inbound("signals")
        snapshot = m.SnapshotReply(markets=[binary(c) for c in markets], books=m.BookSnapshot(books=[]))
        self.scanner = self.bus.replier("scanner")
        self.scanner.serve(lambda request: snapshot)
        self.proc = subprocess.Popen([sys.executable, "-m", "services", "--config", str(path), "run", "strategies"],
                                     env=child_env(), stderr=open(root / "strategies.err", "w"))
        self.control = self.bus.requester("strategies", 2000)
        wait_for(lambda: self.detail().get("synced") == "True" and self.prices.socket.pipes, what="the host to sync")

    def detail(self) -> dict[str, str]:
        try:
            return self.control.request(m.StatusRequest()).service.detail
        except Exception:
            return {}

    def book(self, cid: str, age_s: float = 0.0) -> None:
        assert self.prices.send(gap_books(cid, time.time_ns() - int(age_s * 1e9)))

    def next_signal(self) -> m.Signal:
        return self.signals.recv(10_000)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)
        self.control.close()
        self.scanner.close()
        self.bus.close()


def test_the_host_sheds_a_signal_from_a_stale_book_and_meters_signals_while_throttled(state_dir) -> None:
    root = Path(os.path.realpath(state_dir.parent))
    root.mkdir(parents=True, exist_ok=True)
    host = Host(root, ["a", "b", "c", "d", "e", "f"])
    try:
        host.book("a", age_s=5)  # computed from a book 5 s old: the edge is long gone
        wait_for(lambda: host.detail().get("shed_stale") == "1", what="the stale signal shed")
        host.book("b")
        assert [leg.token_id for leg in host.next_signal().legs] == ["b-y", "b-n"]

        reply = host.control.request(m.ThrottleRequest(max_signals_per_s=0.01, for_s=60, by="test", reason="test"))
        assert isinstance(reply, m.Ok) and reply.detail == "throttled"
        host.book("c")  # the first passes, as a burst of one
        assert [leg.token_id for leg in host.next_signal().legs] == ["c-y", "c-n"]
        host.book("d")  # the next, within 100 s of it, is shed
        wait_for(lambda: host.detail().get("shed_throttled") == "1", what="the throttled signal shed")
        assert host.signals.drain() == []

        reply = host.control.request(m.ThrottleRequest(throttle=False, by="test"))
        assert isinstance(reply, m.Ok) and reply.detail == "released"
        host.book("e")
        assert [leg.token_id for leg in host.next_signal().legs] == ["e-y", "e-n"]

        # A throttle that is never released runs out by itself (its sender may have died).
        host.control.request(m.ThrottleRequest(max_signals_per_s=0.01, for_s=0.5, by="test"))
        assert host.detail()["throttled"] == "True"
        wait_for(lambda: host.detail().get("throttled") == "False", what="the throttle to run out")
        host.book("f")
        assert [leg.token_id for leg in host.next_signal().legs] == ["f-y", "f-n"]
        detail = host.detail()
        assert (detail["signals"], detail["shed_stale"], detail["shed_throttled"], detail["throttles"]) == \
            ("4", "1", "1", "2")
    finally:
        host.close()
