"""The trade path's speed: tick-to-order latency beside a raw NNG hop, and the scanner -> strategy update rate.

Every stage runs real processes in temp state dirs under /tmp (ipc paths must stay under 107 bytes):

1. Tick to order. `polybot up` (the default services and the embedded local venue, on free ports); the
   venue's markets move at a steady background rate while this process opens arbitrage gaps through the
   venue's ``/_admin/gap``. The arbitrage strategy signals, risk accepts, the executor submits. Per order, from
   ``decisions`` (SignalAccepted carries the signal and its orders) and ``executions`` (OrderAck):
   tick-to-order = OrderAck.submitted_ts_ns - Signal.cause_ts_ns (the scanner's stamp when it normalised the
   venue frame), split by hop: scanner -> strategy (Signal.ts_ns, when it left the host), -> risk (Order.ts_ns,
   when risk took the signal up), risk's decision (SignalAccepted.ts_ns, after its orders went out), -> the
   venue client (OrderAck.submitted_ts_ns: the executor's gathering of legs, signing, journaling).
2. Raw hop. Two processes, a PUSH/PULL pair over ipc, one message at a time at a steady rate, one-way time by
   time.time_ns: once on a quiet machine, once while stage 1 runs (under the mesh's load).
3. Scanner -> strategy rate. For each venue update rate, a fresh `polybot up`: what the scanner published on
   ``prices`` (messages, and the book-level changes they carry) against what the strategies process received,
   dropped (sequence gaps) and holds decoded but not yet handled (backlog). The venue is halted at the end of
   each window, so the counts settle before they are compared. CPU per process shows what saturates.
4. The strategy host alone. This process binds ``prices`` and ``events`` as the scanner would (and answers the
   strategies' snapshot request) and publishes book deltas at stepped rates, past what the local venue can
   generate, until the strategies process loses messages.

Run: ``python benchmarks/trade_path.py [--out FILE] [--quick]`` (about 2 minutes; ``--quick`` under 1).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pynng

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services import messages as m  # noqa: E402
from services.bus import TRAILER, Bus, BusError, BusTimeout, Replier, Requester, topic  # noqa: E402
from services.config import control_address, ensure_state_dir, load, socket_address  # noqa: E402

CONSUMED = ("prices", "events", "executions")  # what the strategies host receives (control requests are apart)
HOP_BYTES = 256  # about one small BookDelta frame
HOP_RATE = 200  # raw hop messages per second
POLL_S = 0.5  # status samples during a rate window
DRAIN_S = 10.0  # the longest a window's counts may take to settle
KEPT_UP_S = 0.1  # a host done this soon after a step ended was not falling behind during it


# ---------------------------------------------------------------- small helpers


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def summary(ns: list[int]) -> dict[str, Any]:
    if not ns:
        return {"n": 0}
    ms = [v / 1e6 for v in ns]
    return {"n": len(ms), "p50_ms": round(pct(ms, 50), 3), "p90_ms": round(pct(ms, 90), 3),
            "p99_ms": round(pct(ms, 99), 3), "max_ms": round(max(ms), 3)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env() -> dict[str, str]:
    """Our packages importable, no proxies for loopback, no POLYBOT_* override from the caller's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYBOT_")}
    env.update(PYTHONPATH=str(ROOT), NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    return env


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc; 0 where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def toml_inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_inline(v)}" for k, v in value.items()) + " }"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def venue_options(requotes_per_s: float, args: argparse.Namespace) -> dict[str, Any]:
    """The local venue's knobs: living markets at this requote rate, no gaps of its own (stage 1 opens them)."""
    return {"seed": args.seed, "markets": args.markets,
            "life": {"requotes_per_s": requotes_per_s, "levels": args.levels, "trades_per_s": 1.0,
                     "gaps_per_s": 0.0, "resolutions_per_s": 0.0}}


# ---------------------------------------------------------------- the mesh


class Mesh:
    """`polybot up` with the default services and the embedded local venue, in its own state dir."""

    def __init__(self, root: Path, venue: dict[str, Any], extra: str = "") -> None:
        """``extra``: more config (TOML tables) after the venue's."""
        root.mkdir(parents=True)
        ports = {k: free_port() for k in ("gamma_port", "clob_port", "ws_port")}
        self.file = root / "polybot.toml"
        self.file.write_text(f'state_dir = "{root / "state"}"\n[local_venue]\n'
                             f"options = {toml_inline({**ports, **venue})}\n{extra}")
        self.config = load(self.file, {"HOME": str(root)})
        ensure_state_dir(self.config)
        self.clob = f"http://127.0.0.1:{ports['clob_port']}"
        self.log_path = root / "up.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "services", "--config", str(self.file), "up"],
                                     env=child_env(), stdout=self._log, stderr=subprocess.STDOUT)
        self.services = self.config.enabled_services  # the default set, and the venue first
        self.pids: dict[str, int] = {}
        self._req: dict[str, Requester] = {}

    def ask(self, name: str, request: m.Message, timeout_ms: int = 2000) -> m.Message | None:
        if name not in self._req:
            self._req[name] = Requester(control_address(self.config, name))
        try:
            return self._req[name].request(request, timeout_ms)
        except (BusTimeout, BusError):
            return None

    def status(self, name: str, timeout_ms: int = 2000) -> m.ServiceState | None:
        reply = self.ask(name, m.StatusRequest(), timeout_ms)
        return reply.service if isinstance(reply, m.StatusReply) else None

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Every service running, risk reconciled with the executor, strategies synced from the scanner."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            rows = {name: self.status(name, 500) for name in self.services}
            if all(r is not None and r.state == "running" for r in rows.values()) \
                    and rows["risk"].detail.get("reconciled") == "True" \
                    and rows["strategies"].detail.get("synced") == "True":
                self.pids = {name: r.pid for name, r in rows.items()}
                return
            time.sleep(0.1)
        why = f"`polybot up` exited ({self.proc.returncode})" if self.proc.poll() is not None \
            else f"the mesh was not ready in {timeout_s:.0f}s"
        raise SystemExit(f"{why}; its log ends:\n{self.log_path.read_text()[-3000:]}")

    def close(self) -> None:
        """Stop the supervisor (which stops its services); end any service that outlives it, by its pid."""
        sup = self.ask("supervisor", m.StatusRequest(), 1000)
        if isinstance(sup, m.StatusReply):
            self.pids.update({c.name: c.pid for c in sup.children if c.pid})
        for req in self._req.values():
            req.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        deadline = time.monotonic() + 5  # a service whose supervisor died stops by itself within a second or so
        left = list(self.pids.values())
        while left and time.monotonic() < deadline:
            left = [pid for pid in left if alive(pid)]
            time.sleep(0.1)
        for pid in left:
            try:
                if str(self.file).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():  # ours, not a reused pid
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass  # it ended meanwhile
        self._log.close()

    def __enter__(self) -> Mesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def counters(state: m.ServiceState | None, socket: str) -> m.SocketCounters:
    return state.sockets.get(socket, m.SocketCounters()) if state is not None else m.SocketCounters()


def backlog(state: m.ServiceState) -> int:
    """Messages the reader threads decoded that the service's event loop has not handled yet."""
    return sum(counters(state, s).received for s in CONSUMED) - int(state.detail.get("handled", 0))


# ---------------------------------------------------------------- watching the bus


class _Change(msgspec.Struct):
    venue_ts_ms: int = 0


class _Delta(msgspec.Struct):
    """What the rate needs from a BookDelta; no Decimal is built, so watching costs the mesh little CPU."""

    ts_ns: int = 0
    changes: list[_Change] = []


class BookFeed:
    """One more subscriber on ``prices``: counts BookDelta messages, their level changes, venue -> scanner lag."""

    def __init__(self, config) -> None:
        self.sock = pynng.Sub0(recv_buffer_size=8192, recv_timeout=200)
        self.sock.subscribe(topic(m.BookDelta))
        self.sock.dial(socket_address(config, "prices"), block=False)
        self._decoder = msgspec.msgpack.Decoder(_Delta)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._last_seq: dict[int, int] = {}
        self._reset()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _reset(self) -> None:
        self.messages, self.changes, self.dropped, self.lags_ms = 0, 0, 0, []

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self.sock.recv()
            except pynng.Timeout:
                continue
            except pynng.Closed:
                return
            delta = self._decoder.decode(frame[1 + frame[0]: -TRAILER.size])
            instance, seq = TRAILER.unpack(frame[-TRAILER.size:])
            with self._lock:
                last = self._last_seq.get(instance)
                self.dropped += max(0, seq - last - 1) if last is not None else 0
                self._last_seq[instance] = seq
                self.messages += 1
                self.changes += len(delta.changes)
                if delta.changes and delta.changes[0].venue_ts_ms:
                    self.lags_ms.append(delta.ts_ns / 1e6 - delta.changes[0].venue_ts_ms)

    def take(self) -> dict[str, Any]:
        """What was seen since the last take."""
        with self._lock:
            seen = {"messages": self.messages, "changes": self.changes, "dropped": self.dropped,
                    "lags_ms": self.lags_ms}
            self._reset()
        return seen

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        self.sock.close()


class Trail:
    """Subscribes to ``decisions`` and ``executions`` as an audit consumer would; keeps what stage 1 joins."""

    def __init__(self, config) -> None:
        self.bus = Bus(config)
        self.socks = [self.bus.inbound("decisions", (m.SignalAccepted, m.SignalRejected)),
                      self.bus.inbound("executions", (m.OrderAck, m.OrderRejected))]
        self.seen: list[m.Message] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._read, args=(s,), daemon=True) for s in self.socks]
        for t in self._threads:
            t.start()

    def _read(self, sock) -> None:
        while not self._stop.is_set():
            self.seen.extend(sock.recv_batch(200))

    def connected(self) -> bool:
        return all(s.socket.pipes for s in self.socks)

    def of(self, kind: type) -> list:
        return [x for x in list(self.seen) if isinstance(x, kind)]

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(1)
        self.bus.close()


def wait_until(condition, timeout_s: float, every: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return False


class Sampler:
    """Polls a service's status on its own thread (a slow reply never holds up the caller): worst backlog and lag."""

    def __init__(self, address: str) -> None:
        self.backlog_max, self.lag_max_ms = 0, 0.0
        self._req = Requester(address, 2000)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                reply = self._req.request(m.StatusRequest())
            except (BusTimeout, BusError):
                continue
            if isinstance(reply, m.StatusReply):
                self.backlog_max = max(self.backlog_max, backlog(reply.service))
                self.lag_max_ms = max(self.lag_max_ms, counters(reply.service, "prices").lag_ms)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._req.close()


# ---------------------------------------------------------------- 2. the raw hop


def _hop_receiver(address: str, count: int, conn, ready) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it ends us
    with pynng.Pull0(listen=address, recv_timeout=60_000) as pull:
        ready.set()
        lags = []
        for _ in range(count):
            frame = pull.recv()
            lags.append(time.time_ns() - int.from_bytes(frame[:8], "big"))
    conn.send(lags)


def _hop_sender(address: str, count: int, rate: float, done) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with pynng.Push0(send_timeout=10_000) as push:
        push.dial(address, block=True)
        pad = bytes(HOP_BYTES - 8)
        start = time.perf_counter()
        for i in range(count):
            if done.is_set():
                break
            if (delay := start + i / rate - time.perf_counter()) > 0:
                time.sleep(delay)
            push.send(time.time_ns().to_bytes(8, "big") + pad)
        done.wait(60)  # closing an NNG socket discards what it still has queued


class Hop:
    """A PUSH process and a PULL process over ipc; one-way times of ``count`` messages sent at ``rate``/s."""

    def __init__(self, folder: Path, count: int, rate: float) -> None:
        spawn = multiprocessing.get_context("spawn")  # nng must not be forked
        address = f"ipc://{folder}/hop-{os.getpid()}-{time.monotonic_ns()}.ipc"
        self.count = count
        self.conn, child_conn = spawn.Pipe(duplex=False)
        ready, self.done = spawn.Event(), spawn.Event()
        self.procs = [spawn.Process(target=_hop_receiver, args=(address, count, child_conn, ready), daemon=True)]
        self.procs[0].start()
        if not ready.wait(30):
            self.close()
            raise SystemExit("the raw hop's receiver did not start")
        self.procs.append(spawn.Process(target=_hop_sender, args=(address, count, rate, self.done), daemon=True))
        self.procs[1].start()

    def result(self, timeout_s: float) -> dict[str, Any]:
        lags = self.conn.recv() if self.conn.poll(timeout_s) else []
        self.close()
        return {**summary(lags), "sent": self.count}

    def close(self) -> None:
        self.done.set()
        for proc in self.procs:
            proc.join(2)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)

    def __enter__(self) -> Hop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- 1. tick to order

HOPS = ("scanner -> strategy signal", "strategy -> risk", "risk decides", "risk -> executor -> client",
        "tick to order (total)")


def tick_to_order(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    with ExitStack() as stack:
        mesh = stack.enter_context(Mesh(root / "latency", venue_options(args.background, args)))
        mesh.wait_ready()
        trail, feed = Trail(mesh.config), BookFeed(mesh.config)
        stack.callback(trail.close)
        stack.callback(feed.close)
        if not wait_until(lambda: trail.connected() and feed.sock.pipes, 10):
            raise SystemExit("could not subscribe to decisions, executions and prices")
        snapshot = mesh.ask("scanner", m.SnapshotRequest(), 5000)
        if not isinstance(snapshot, m.SnapshotReply):
            raise SystemExit(f"the scanner did not give its snapshot: {snapshot}")
        binary = [mk.market for mk in snapshot.markets if not mk.neg_risk]
        if not binary:
            raise SystemExit("the venue lists no binary market to open gaps in (--markets)")
        hop = stack.enter_context(Hop(root, int(args.gap_s * HOP_RATE), HOP_RATE))
        feed.take()
        start = time.monotonic()
        posted, refused = gaps(mesh.clob, binary, args)
        window = time.monotonic() - start
        background = feed.take()
        loaded_hop = hop.result(30)

        def answered() -> bool:
            orders = {o.id for v in trail.of(m.SignalAccepted) for o in v.orders}
            return orders <= {x.order_id for x in trail.of(m.OrderAck) + trail.of(m.OrderRejected)}
        wait_until(lambda: len(trail.of(m.SignalAccepted)) + len(trail.of(m.SignalRejected)) >= posted, 5)
        wait_until(answered, 5)
        result = join(trail)
    result.update(gaps_posted=posted, gaps_refused=refused, background_requotes_per_s=args.background,
                  background_msgs_per_s=round(background["messages"] / window),
                  background_changes_per_s=round(background["changes"] / window), raw_hop_loaded=loaded_hop)
    return result


def gaps(clob: str, markets: list[str], args: argparse.Namespace) -> tuple[int, int]:
    """Open one gap every 1/gaps_per_s seconds for gap_s seconds, round the binary markets; (posted, refused)."""
    posted = refused = 0
    count = int(args.gap_s * args.gaps_per_s)
    start = time.monotonic()
    with httpx.Client(base_url=clob, timeout=5, trust_env=False) as client:
        for i in range(count):
            if (delay := start + i / args.gaps_per_s - time.monotonic()) > 0:
                time.sleep(delay)
            reply = client.post("/_admin/gap", json={"market": markets[i % len(markets)], "gap": "0.06",
                                                     "size": "10", "lifetime_ms": 1000})
            posted += 1
            refused += not reply.is_success
        if (delay := start + args.gap_s - time.monotonic()) > 0:
            time.sleep(delay)
    return posted, refused


def join(trail: Trail) -> dict[str, Any]:
    """Per order: each hop's time, from the accepted signal's stamps and the order's ack."""
    acks = {a.order_id: a for a in trail.of(m.OrderAck)}
    rejected = {r.order_id: r.code for r in trail.of(m.OrderRejected)}
    samples: dict[str, list[int]] = {h: [] for h in HOPS}
    by_legs: dict[int, list[int]] = {}
    unacked: Counter[str] = Counter()
    accepted = trail.of(m.SignalAccepted)
    for verdict in accepted:
        sig = verdict.signal
        for order in verdict.orders:
            ack = acks.get(order.id)
            if ack is None:
                unacked[rejected.get(order.id, "no answer")] += 1
                continue
            for hop, ns in zip(HOPS, (sig.ts_ns - sig.cause_ts_ns, order.ts_ns - sig.ts_ns, verdict.ts_ns - order.ts_ns,
                                      ack.submitted_ts_ns - verdict.ts_ns, ack.submitted_ts_ns - sig.cause_ts_ns)):
                samples[hop].append(ns)
            by_legs.setdefault(len(verdict.orders), []).append(ack.submitted_ts_ns - sig.cause_ts_ns)
    refused = [r for v in trail.of(m.SignalRejected) for r in v.reasons]
    return {"signals_accepted": len(accepted), "signals_rejected": dict(Counter(r.code for r in refused)),
            "refusal_examples": {r.code: r.message for r in refused},
            "orders_unacked": dict(unacked), "hops": {h: summary(v) for h, v in samples.items()},
            "tick_to_order_by_legs": {str(k): summary(v) for k, v in sorted(by_legs.items())}}


# ---------------------------------------------------------------- 3. scanner -> strategy, driven by the venue


def venue_step(root: Path, requotes_per_s: float, args: argparse.Namespace) -> dict[str, Any]:
    with ExitStack() as stack:
        mesh = stack.enter_context(Mesh(root / f"rate-{requotes_per_s:g}", venue_options(requotes_per_s, args)))
        mesh.wait_ready()
        feed = BookFeed(mesh.config)
        stack.callback(feed.close)
        if not wait_until(lambda: feed.sock.pipes, 10):
            raise SystemExit("could not subscribe to prices")
        time.sleep(args.warmup_s)  # past the start-up burst (snapshots, first requotes)
        # The counts start with nothing in flight (venue halted, strategies caught up), so that published and
        # received compare exactly. On resume the venue makes up the halted moment's requotes in one step.
        mesh.ask("venue", m.HaltRequest(reason="benchmark: counting starts"))
        before = quiet(mesh)
        mesh.ask("venue", m.ResumeRequest())
        cpu_before, bench_before = {n: cpu_s(p) for n, p in mesh.pids.items()}, time.process_time()
        feed.take()
        start = time.monotonic()
        sampler = Sampler(control_address(mesh.config, "strategies"))
        stack.callback(sampler.close)
        time.sleep(args.window_s)  # the venue's markets move; the scanner and the strategies keep up or not
        window = time.monotonic() - start
        seen = feed.take()
        cpu = {n: (cpu_s(p) - cpu_before[n]) / window for n, p in mesh.pids.items()}
        bench_cpu = (time.process_time() - bench_before) / window
        mesh.ask("venue", m.HaltRequest(reason="benchmark window over"))
        after, drain_s = settle(mesh, before)
    published = counters(after["scanner"], "prices").sent - counters(before["scanner"], "prices").sent
    got = {n: counters(after[n], "prices").received - counters(before[n], "prices").received
           for n in ("strategies", "risk", "analytics")}
    lost = {n: counters(after[n], "prices").dropped - counters(before[n], "prices").dropped
            for n in ("strategies", "risk", "analytics")}
    lags = seen["lags_ms"] or [0.0]
    return {"requotes_per_s": requotes_per_s, "window_s": round(window, 2),
            "book_msgs_per_s": round(seen["messages"] / window), "changes_per_s": round(seen["changes"] / window),
            "changes_per_msg": round(seen["changes"] / max(1, seen["messages"]), 1),
            "venue_to_scanner_p50_ms": round(pct(lags, 50), 1), "venue_to_scanner_p99_ms": round(pct(lags, 99), 1),
            "scanner_published": published, "strategies_received": got["strategies"],
            "strategies_dropped": lost["strategies"], "strategies_missing": published - got["strategies"],
            "risk_dropped": lost["risk"], "analytics_dropped": lost["analytics"],
            "strategies_backlog_max": sampler.backlog_max, "strategies_lag_max_ms": round(sampler.lag_max_ms, 1),
            "drain_s": round(drain_s, 2), "watcher_dropped": seen["dropped"],
            "cpu": {**{n: round(v, 2) for n, v in cpu.items()}, "benchmark": round(bench_cpu, 2)}}


def quiet(mesh: Mesh) -> dict[str, m.ServiceState | None]:
    """With the venue halted: every service's status once the scanner -> strategies flow has stopped."""
    last = None
    deadline = time.monotonic() + DRAIN_S
    while True:
        strategies = mesh.status("strategies")  # before the scanner: a frame sent in between counts as in flight
        scanner = mesh.status("scanner")
        now = (counters(scanner, "prices").sent, counters(strategies, "prices").received)
        if strategies is not None and scanner is not None and now == last and backlog(strategies) == 0 \
                or time.monotonic() > deadline:
            break
        last = now
        time.sleep(0.1)
    rows = {name: mesh.status(name) for name in mesh.services if name not in ("strategies", "scanner")}
    return {**rows, "strategies": strategies, "scanner": scanner}


def settle(mesh: Mesh, before: dict[str, m.ServiceState | None]) -> tuple[dict[str, m.ServiceState | None], float]:
    """Wait (venue halted) until the strategies have taken in and handled all the scanner published."""
    start = time.monotonic()
    while True:
        scanner, strategies = mesh.status("scanner"), mesh.status("strategies")
        published = counters(scanner, "prices").sent - counters(before["scanner"], "prices").sent
        c, c0 = counters(strategies, "prices"), counters(before["strategies"], "prices")
        done = strategies is not None and (c.received - c0.received) + (c.dropped - c0.dropped) >= published \
            and backlog(strategies) == 0
        if done or time.monotonic() - start > DRAIN_S:
            break
        time.sleep(0.05)
    drain_s = time.monotonic() - start
    return {name: mesh.status(name) for name in mesh.services}, drain_s


# ---------------------------------------------------------------- 4. the strategy host alone


class Universe:
    """Binary markets with five-level books and deltas that change sizes only (so no arbitrage ever shows)."""

    def __init__(self, markets: int, changes: int) -> None:
        self.markets = [m.MarketNew(market=f"0x{i:064x}", question=f"benchmark market {i}", fee_rate=Decimal("0.02"),
                                    outcomes=[m.Outcome(token_id=f"{i}-yes", name="Yes"),
                                              m.Outcome(token_id=f"{i}-no", name="No")]) for i in range(markets)]
        bids = [Decimal(45 - k) / 100 for k in range(5)]
        asks = [Decimal(55 + k) / 100 for k in range(5)]
        self.books = [m.Book(token_id=o.token_id, market=mk.market, bids=[m.Level(p, Decimal(100)) for p in bids],
                             asks=[m.Level(p, Decimal(100)) for p in asks]) for mk in self.markets for o in mk.outcomes]
        pool = []
        for n in range(1000):  # a deterministic mix: each delta touches one market, k levels of its two books
            mk = self.markets[(n * 7) % markets]
            pool.append([m.LevelChange(token_id=mk.outcomes[k % 2].token_id, market=mk.market,
                                       side="BUY" if k % 4 < 2 else "SELL",
                                       price=(bids if k % 4 < 2 else asks)[(n + k) % 5],
                                       size=Decimal(20 + (n * 31 + k * 17) % 380), best_bid=bids[0], best_ask=asks[0])
                         for k in range(changes)])
        self.pool = pool

    def answer(self, request: m.Message) -> m.Message:
        if isinstance(request, m.SnapshotRequest):
            now = time.time_ns()
            return m.SnapshotReply(ts_ns=now, markets=self.markets, books=m.BookSnapshot(ts_ns=now, books=self.books))
        return m.Error(request_id=request.id, message="this benchmark answers only snapshot requests")


class Host:
    """A strategies process (`polybot run strategies`) fed by this process, which binds what the scanner binds."""

    def __init__(self, folder: Path, universe: Universe) -> None:
        folder.mkdir()
        self.file = folder / "polybot.toml"
        self.file.write_text(f'state_dir = "{folder / "state"}"\n[local_venue]\nstart = false\n'
                             f'[services.strategies]\nkind = "services.strategies.host:Strategies"\n')
        self.config = load(self.file, {"HOME": str(folder)})
        ensure_state_dir(self.config)
        self.bus = Bus(self.config)
        self.prices = self.bus.outbound("prices")
        self.bus.outbound("events")  # the host waits to be subscribed to both before it asks for the snapshot
        self.replier = Replier(control_address(self.config, "scanner"), m.SocketCounters())
        self.replier.serve(universe.answer)
        self.log_path = folder / "strategies.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "services", "--config", str(self.file), "run",
                                      "strategies"], env=child_env(), stdout=self._log, stderr=subprocess.STDOUT)
        self.req = Requester(control_address(self.config, "strategies"), 2000)

    def status(self) -> m.ServiceState | None:
        try:
            reply = self.req.request(m.StatusRequest())
        except (BusTimeout, BusError):
            return None
        return reply.service if isinstance(reply, m.StatusReply) else None

    def close(self) -> None:
        self.req.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        self.replier.close()
        self.bus.close()


def host_steps(root: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    universe = Universe(args.host_markets, args.changes)
    rows: list[dict[str, Any]] = []
    with ExitStack() as stack:
        host = Host(root / "host", universe)
        stack.callback(host.close)
        if not wait_until(lambda: (s := host.status()) is not None and s.detail.get("synced") == "True", 60, 0.1):
            raise SystemExit(f"the strategies host did not sync; see {host.log_path}")
        for rate in args.host_rates:
            rows.append(host_step(host, universe, rate, args))
            last = rows[-1]
            if last["dropped"] or last["received"] < last["published"] or last["msgs_per_s"] < 0.8 * rate:
                break  # it loses (or this process cannot publish faster): higher steps say nothing more
    return rows


def host_step(host: Host, universe: Universe, rate: int, args: argparse.Namespace) -> dict[str, Any]:
    """Publish book deltas at ``rate`` for step_s seconds; then wait until the host has handled all it received."""
    before, cpu_before, sent_before = host.status(), cpu_s(host.proc.pid), host.prices.counters.sent
    sampler = Sampler(control_address(host.config, "strategies"))
    try:
        start, sent = time.perf_counter(), 0
        while (elapsed := time.perf_counter() - start) < args.step_s:
            for _ in range(int(elapsed * rate) - sent):
                host.prices.send(m.BookDelta(changes=universe.pool[sent % len(universe.pool)]))
                sent += 1
            time.sleep(0.001)
        seconds = time.perf_counter() - start
        cpu = (cpu_s(host.proc.pid) - cpu_before) / seconds
    finally:
        sampler.close()
    published = host.prices.counters.sent - sent_before
    c0 = counters(before, "prices")

    def settled() -> bool:
        s = host.status()
        c = counters(s, "prices")
        return s is not None and (c.received - c0.received) + (c.dropped - c0.dropped) >= published \
            and backlog(s) == 0
    drain_start = time.monotonic()
    ok = wait_until(settled, DRAIN_S, 0.05)
    drain_s = time.monotonic() - drain_start
    c = counters(host.status(), "prices")
    return {"target_msgs_per_s": rate, "msgs_per_s": round(published / seconds),
            "changes_per_s": round(published * args.changes / seconds), "published": published,
            "received": c.received - c0.received, "dropped": c.dropped - c0.dropped,
            "backlog_max": sampler.backlog_max, "drain_s": round(drain_s, 2), "settled": ok,
            "cpu_strategies": round(cpu, 2)}


# ---------------------------------------------------------------- report


def report(results: dict[str, Any]) -> None:
    machine = results["machine"]
    print(f"\nmachine: {machine['cores']} cores, {machine['platform']}, Python {machine['python']}")
    lat = results["tick_to_order"]
    print(f"\ntick to order (venue frame normalised by the scanner -> order handed to the venue client), "
          f"{lat['gaps_posted']} gaps over a background of {lat['background_msgs_per_s']} book msgs/s "
          f"({lat['background_changes_per_s']} level changes/s)")
    print(f"{'hop':<28} {'n':>5} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    legs = [(f"  signals of {k} legs", v) for k, v in lat["tick_to_order_by_legs"].items()]
    rows = [*lat["hops"].items(), *legs, ("raw pynng hop, quiet", results["raw_hop_quiet"]),
            ("raw pynng hop, under load", lat["raw_hop_loaded"])]
    for name, s in rows:
        if s.get("n"):
            print(f"{name:<28} {s['n']:>5} {s['p50_ms']:>8.2f} {s['p90_ms']:>8.2f} {s['p99_ms']:>8.2f} "
                  f"{s['max_ms']:>8.2f}")
        else:
            print(f"{name:<28} {0:>5}")
    print(f"signals accepted {lat['signals_accepted']} (gaps opened: {lat['gaps_posted']}), "
          f"refused {lat['signals_rejected'] or 0}; "
          f"orders without an ack {lat['orders_unacked'] or 0}")

    print("\nscanner -> strategy, driven by the venue (a fresh `polybot up` per step; CPU in cores)")
    print(f"{'requotes/s':>10} {'msgs/s':>7} {'changes/s':>9} {'v->s p99':>8} {'published':>9} {'received':>8} "
          f"{'dropped':>7} {'backlog':>7} {'cpu venue':>9} {'scanner':>7} {'strategies':>10} {'others':>6}")
    for r in results["scanner_rate"]:
        cpu = r["cpu"]
        others = sum(v for k, v in cpu.items() if k not in ("venue", "scanner", "strategies", "benchmark"))
        print(f"{r['requotes_per_s']:>10g} {r['book_msgs_per_s']:>7,} {r['changes_per_s']:>9,} "
              f"{r['venue_to_scanner_p99_ms']:>8.1f} {r['scanner_published']:>9,} {r['strategies_received']:>8,} "
              f"{r['strategies_dropped']:>7} {r['strategies_backlog_max']:>7} {cpu.get('venue', 0):>9.2f} "
              f"{cpu.get('scanner', 0):>7.2f} {cpu.get('strategies', 0):>10.2f} {others:>6.2f}")
    print("\nthe strategy host alone (this process publishes as the scanner would)")
    print(f"{'target/s':>8} {'msgs/s':>7} {'changes/s':>9} {'published':>9} {'received':>8} {'dropped':>7} "
          f"{'backlog':>7} {'drain s':>7} {'cpu':>5}")
    for r in results["host_rate"]:
        print(f"{r['target_msgs_per_s']:>8,} {r['msgs_per_s']:>7,} {r['changes_per_s']:>9,} {r['published']:>9,} "
              f"{r['received']:>8,} {r['dropped']:>7} {r['backlog_max']:>7} {r['drain_s']:>7.2f} "
              f"{r['cpu_strategies']:>5.2f}")
    for line in results["conclusions"]:
        print(line)


def conclusions(results: dict[str, Any]) -> list[str]:
    lines = []
    steps = results["scanner_rate"]
    clean = [r for r in steps if r["strategies_dropped"] == 0 and r["strategies_missing"] <= 0]
    if clean:
        best = max(clean, key=lambda r: r["changes_per_s"])
        top = " (every step run was clean)" if len(clean) == len(steps) else ""
        lines.append(f"\nscanner -> strategy, no loss up to {best['requotes_per_s']:g} venue requotes/s = "
                     f"{best['book_msgs_per_s']:,} msgs/s, {best['changes_per_s']:,} level changes/s{top}")
    host = results["host_rate"]
    lossless = [r for r in host if not r["dropped"] and r["received"] >= r["published"]]
    kept_up = []
    for r in lossless:  # the steps from the bottom up to the first that fell behind
        if r["drain_s"] > KEPT_UP_S:
            break
        kept_up.append(r)
    if lossless:
        lines.append(f"strategy host alone, no loss up to {lossless[-1]['msgs_per_s']:,} msgs/s "
                     f"({lossless[-1]['changes_per_s']:,} level changes/s)"
                     + (f", first loss at {host[-1]['msgs_per_s']:,} msgs/s" if len(lossless) < len(host) else ""))
    if kept_up:
        lines.append(f"strategy host alone, kept up (done {KEPT_UP_S} s after the step) up to "
                     f"{kept_up[-1]['msgs_per_s']:,} msgs/s ({kept_up[-1]['changes_per_s']:,} level changes/s)")
    return lines


def interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "trade_path.json"))
    parser.add_argument("--quick", action="store_true", help="shorter windows and fewer steps (a smoke run)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--markets", type=int, default=100, help="the venue's binary markets")
    parser.add_argument("--levels", type=int, default=1, help="levels each side of a venue requote")
    parser.add_argument("--background", type=float, default=200, help="stage 1: venue requotes per second")
    parser.add_argument("--gaps-per-s", type=float, default=5)
    parser.add_argument("--gap-s", type=float, default=20, help="stage 1: how long gaps are opened")
    parser.add_argument("--steps", type=float, nargs="+", default=[100, 200, 400, 800],
                        help="stage 3: venue requotes per second, one window each")
    parser.add_argument("--window-s", type=float, default=5)
    parser.add_argument("--warmup-s", type=float, default=1)
    parser.add_argument("--host-rates", type=int, nargs="+", default=[2000, 4000, 6000, 8000, 10000, 12000, 16000],
                        help="stage 4: book deltas per second (it stops at the first step that loses)")
    parser.add_argument("--step-s", type=float, default=4)
    parser.add_argument("--changes", type=int, default=8, help="stage 4: level changes per book delta "
                        "(the venue's requotes make about 8)")
    parser.add_argument("--host-markets", type=int, default=100)
    args = parser.parse_args()
    if args.quick:
        args.gap_s, args.steps, args.window_s, args.host_rates, args.step_s = 8, [100, 400], 3, [2000, 8000], 2
    for sig in (signal.SIGINT, signal.SIGTERM):  # a kill runs the same clean-up as Ctrl-C (even if SIGINT came
        signal.signal(sig, interrupted)          # in ignored, as it does for a background job of a script)
    root = Path(tempfile.mkdtemp(prefix="pbtp-", dir="/tmp"))
    started = time.monotonic()
    try:
        results: dict[str, Any] = {"machine": {"cores": os.cpu_count(), "platform": platform.platform(),
                                               "python": platform.python_version()},
                                   "options": {k: v for k, v in vars(args).items() if k != "out"}}
        print("raw pynng hop on a quiet machine ...", flush=True)
        with Hop(root, 1000, 400) as hop:
            results["raw_hop_quiet"] = hop.result(30)
        print("tick to order ...", flush=True)
        results["tick_to_order"] = tick_to_order(root, args)
        results["scanner_rate"] = []
        for rate in args.steps:
            print(f"scanner -> strategy at {rate:g} venue requotes/s ...", flush=True)
            results["scanner_rate"].append(venue_step(root, rate, args))
        print("the strategy host alone ...", flush=True)
        results["host_rate"] = host_steps(root, args)
        results["conclusions"] = conclusions(results)
        results["seconds"] = round(time.monotonic() - started, 1)
        report(results)
        Path(args.out).write_text(json.dumps(results, indent=2))
        print(f"\n{results['seconds']:.0f} s; written to {args.out}")
    except KeyboardInterrupt:
        print("\ninterrupted; every process this benchmark started is stopped", file=sys.stderr)
        sys.exit(130)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
