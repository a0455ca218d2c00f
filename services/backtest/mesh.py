"""Replay through the mesh: this process takes the scanner's place on ``prices``, ``events`` and its control
socket, and the place of risk and the executor on ``signals``, where it records what arrives. The strategies
service runs as its own process, unchanged, and does not know.

It runs in a mesh of its own (a fresh 0700 state folder), so it never touches a running one. Nothing is lost
on the way: the recording goes out in batches, each only once the strategies have received the one before
(their own counters, over control), so a PUB socket never has to drop.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from .. import messages as m
from ..bus import TAXONOMY, Bus, BusError, BusTimeout, Requester
from ..config import ensure_state_dir, load
from ..recording import read
from .engine import BacktestError, make_strategy

BATCH = 500
START_TIMEOUT_S = 30.0


def _toml(value: Any) -> str:
    """A TOML value for the builtins a strategy's parameters are made of."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a TOML basic string


def _table(strategy: str, name: str, params: Any) -> str:
    """The strategies host's entry for ``strategy``: a shipped one by its name and parameters; any other spec (a
    file, a module, an entry point) as a table with its class, run under the strategy's own name, so its signals
    carry the source they carry in-process."""
    values = msgspec.to_builtins(params)
    table = "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in values.items()) + " }"
    if strategy == name:
        return f"{name} = {table}"
    spec = str(Path(strategy.rpartition(":")[0]).expanduser().resolve()) + ":" + strategy.rpartition(":")[2] \
        if ".py:" in strategy else strategy
    return f"{name} = {{ class = {_toml(spec)}, params = {table} }}"


def _config(root: Path, entry: str) -> Path:
    path = root / "polybot.toml"
    path.write_text(
        f'state_dir = "{root / "state"}"\n[local_venue]\nstart = false\n[metrics]\nenabled = false\n'
        '[services.scanner]\nkind = "services.scanner:Scanner"\nenabled = false\n'
        '[services.strategies]\nkind = "services.strategies.host:Strategies"\n'
        # Recorded books are as old as the recording: the host's shedding of stale work is off.
        f"options = {{ max_book_age_ms = 0, strategies = {{ {entry} }} }}\n")
    return path


def _split(messages: list[m.Message]) -> tuple[m.SnapshotReply, list[m.Message]]:
    """The recording's opening snapshot (its markets, stale set and books) as the scanner would answer, and the
    rest; the books keep the recorded message's id and time, so a signal's cause is the same as in-process."""
    markets, stale, at = [], set(), 0
    while at < len(messages) and isinstance(messages[at], m.MarketNew | m.MarketStale):
        msg = messages[at]
        if isinstance(msg, m.MarketNew):
            markets.append(msg)
        elif msg.stale:
            stale.update(msg.markets)
        at += 1
    if at < len(messages) and isinstance(messages[at], m.BookSnapshot):
        books = messages[at]
        at += 1
    else:
        books = m.BookSnapshot(ts_ns=messages[at - 1].ts_ns if at else 0, books=[])
    return m.SnapshotReply(ts_ns=books.ts_ns, markets=markets, books=books, stale=sorted(stale)), messages[at:]


def replay_mesh(data: str | Path, strategy: str, params: dict[str, Any] | None = None,
                progress: Callable[[int], None] | None = None,
                log: Path | None = None) -> list[m.Signal | m.Cancel]:
    """Every signal (and cancel) the strategies service sent for the recording, in the order they came.
    ``strategy``: a spec, as for an in-process backtest (a shipped name, ``file.py:Class``, ``module:Class``)."""
    chosen = make_strategy(strategy, params or {})  # a bad name or parameter fails here, not in the child
    messages = list(read(data))
    snapshot, rest = _split(messages)
    with tempfile.TemporaryDirectory(prefix="polybot-mesh-") as tmp:
        root = Path(tmp)
        config_file = _config(root, _table(strategy, chosen.name, chosen.params))
        config = load(config_file, {"HOME": str(root)})
        ensure_state_dir(config)
        bus = Bus(config)
        try:
            return _run(bus, config_file, snapshot, rest, progress, log or root / "strategies.log")
        finally:
            bus.close()


def _run(bus: Bus, config_file: Path, snapshot: m.SnapshotReply, rest: list[m.Message],
         progress: Callable[[int], None] | None, log_path: Path) -> list[m.Signal | m.Cancel]:
    out = {name: bus.outbound(name) for name in ("prices", "events")}
    signals = bus.inbound("signals")
    scanner = bus.replier("scanner")
    scanner.serve(lambda request: snapshot if isinstance(request, m.SnapshotRequest) else
                  m.Error(request_id=request.id, message="a replayed scanner answers snapshots only"))
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost"}
    with open(log_path, "ab") as log:
        child = subprocess.Popen([sys.executable, "-m", "services", "--config", str(config_file), "run",
                                  "strategies"], env=env, stdout=log, stderr=log)
    control = bus.requester("strategies", 2000)
    got: list[m.Signal | m.Cancel] = []

    def until(done: Callable[[m.ServiceState], bool], what: str) -> None:
        _until(control, child, log_path, done, what)

    def handled(n: int) -> Callable[[m.ServiceState], bool]:
        return lambda state: int(state.detail.get("handled", 0)) >= n

    def collect() -> None:
        got.extend(x for x in signals.drain() if isinstance(x, m.Signal | m.Cancel))

    def all_signals(state: m.ServiceState) -> bool:
        collect()
        return int(state.detail.get("signals", 0)) <= len(got)

    try:
        until(lambda state: state.detail.get("synced") == "True", "the strategies to sync")
        sent, last = 0, ""
        for msg in rest:
            name = "prices" if type(msg) in TAXONOMY["prices"].types else "events"
            if name != last or sent % BATCH == 0:
                # Two sockets, two reader threads: the order across them holds only if each message on one
                # is handled before the next on the other goes out. A batch boundary bounds what is in flight.
                until(handled(sent), "the strategies to handle the recording")
                collect()
                if progress is not None:
                    progress(sent)
            while not out[name].send(msg):  # the queue is full: give the subscriber a moment
                time.sleep(0.001)
            sent, last = sent + 1, name
        until(handled(sent), "the strategies to handle the recording")
        until(all_signals, "every signal to arrive")
        if progress is not None:
            progress(sent)
    finally:
        child.terminate()
        try:
            child.wait(20)
        except subprocess.TimeoutExpired:
            child.kill()
    return got


def _until(control: Requester, child: subprocess.Popen, log_path: Path, done: Callable[[m.ServiceState], bool],
           what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if child.poll() is not None:
            said = log_path.read_text(errors="replace")[-2000:]
            raise BacktestError(f"the strategies process exited (code {child.returncode}) while waiting for {what}"
                                f"{': ' + said.strip() if said else ''}")
        try:
            reply = control.request(m.StatusRequest())
        except (BusTimeout, BusError):  # not answering yet (starting)
            reply = None
        if isinstance(reply, m.StatusReply) and done(reply.service):
            return
        if time.monotonic() > deadline:
            raise BacktestError(f"timed out waiting for {what}")
        time.sleep(0.005)  # polling the child's counters; bounded by the deadline above
