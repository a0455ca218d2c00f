"""A local venue, the scanner and the executor as real processes; the test plays risk on ``orders``."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import httpx

from services import messages as m
from services.bus import Bus
from services.config import ensure_state_dir, load
from polybot_venue.server import ready_made_account

from .conftest import child_env, log_tail, wait_for
from .venue_harness import Venue, mesh_config

D = Decimal


class ExecutorMesh:
    def __init__(self, root: Path, seed: int, mode: str = "live", venue_args: tuple = (),
                 prepare: Callable[[Venue], object] | None = None, **options: object) -> None:
        self.venue = Venue(root / "venue", seed, 100, "--still", *venue_args)
        self.procs: dict[str, subprocess.Popen] = {}
        try:
            self._start(root, seed, mode, prepare, options)
        except BaseException:  # nothing started may outlive a failed start
            self.close()
            raise

    def _start(self, root: Path, seed: int, mode: str, prepare: Callable[[Venue], object] | None,
               options: dict[str, object]) -> None:
        self.prepared = prepare(self.venue) if prepare else None  # the venue as the services will first see it
        self.env = {"POLYBOT_MODE": mode}
        options = {"heartbeat_s": 0.5, **options}
        self.config_file = mesh_config(root, self.venue, '[services.scanner]\nkind = "services.scanner:Scanner"\n'
                                       '[services.executor]\nkind = "services.executor:Executor"\n'
                                       f"options = {{ {', '.join(f'{k} = {v}' for k, v in options.items())} }}\n")
        self.config = load(self.config_file, {"HOME": str(root), **self.env})
        ensure_state_dir(self.config)
        self.bus = Bus(self.config)
        self.orders = self.bus.outbound("orders")  # the test plays risk
        self.executions = self.bus.inbound("executions")
        self.seen: list[m.Message] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        for name in ("scanner", "executor"):
            self.start(name)
        self.account = ready_made_account(seed)
        self.client = self.venue.client(self.account.private_key)  # the venue's own view of the account
        self.wait_ready()

    def start(self, name: str) -> None:
        log = open(self.config_file.parent / f"{name}.log", "a")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "services", "--config", str(self.config_file), "run", name],
            env=child_env(**self.env), stdout=log, stderr=subprocess.STDOUT)

    def kill_executor(self) -> None:
        proc = self.procs["executor"]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def wait_ready(self) -> None:
        wait_for(lambda: self.status("executor").get("ready") == "True", what="the executor to reconcile")
        wait_for(lambda: self.executions.socket.pipes and self.orders.socket.pipes, what="sockets to connect")

    def _read(self) -> None:
        while not self.stop.is_set():
            batch = [msg for msg in self.executions.recv_batch(100) if not isinstance(msg, m.Heartbeat)]
            with self.lock:
                self.seen += batch

    def of(self, kind: type, **match: object) -> list:
        with self.lock:
            return [msg for msg in self.seen
                    if isinstance(msg, kind) and all(getattr(msg, k) == v for k, v in match.items())]

    def wait(self, kind: type, count: int = 1, **match: object) -> list:
        return wait_for(lambda: len(found := self.of(kind, **match)) >= count and found,
                        what=f"{count} {kind.__name__} with {match}")

    def push(self, *orders: m.Order | m.Cancel) -> None:
        for order in orders:
            assert self.orders.send(order)

    def status(self, name: str) -> dict[str, str]:
        with self.bus.requester(name, 1000) as req:
            try:
                return req.request(m.StatusRequest()).service.detail
            except Exception:
                return {}

    def failure_report(self) -> list[tuple[str, str]]:
        sections = []
        for name in self.procs:
            path = self.config_file.parent / f"{name}.log"
            sections.append(log_tail(f"{name} log", path.read_text() if path.exists() else ""))
        sections.append(("executor status", str(self.status("executor"))))
        return sections

    def account_reply(self) -> m.AccountReply:
        with self.bus.requester("executor", 3000) as req:
            return wait_for(lambda: isinstance(r := req.request(m.AccountRequest()), m.AccountReply) and r,
                            what="the executor's account")

    def book(self, token: str) -> dict:
        return httpx.get(f"{self.venue.clob}/book", params={"token_id": token}).json()

    def best(self, token: str) -> tuple[Decimal, Decimal]:
        book = self.book(token)
        return D(book["bids"][-1]["price"]), D(book["asks"][-1]["price"])

    def close(self) -> None:
        if hasattr(self, "reader"):
            self.stop.set()
            self.reader.join(2)
        running = [proc for proc in self.procs.values() if proc.poll() is None]
        for proc in running:  # all at once: each takes a moment to drain and stop
            proc.terminate()
        self.venue.proc.terminate()
        for proc in running:
            proc.wait(20)
        if hasattr(self, "bus"):
            self.bus.close()
        self.venue.stop()


def order(signal_id: str, leg: int, token: str, market: str, side: str, size: str, price: str,
          order_type: str = "GTC", source: str = "strategy:test", **extra: object) -> m.Order:
    return m.Order(signal_id=signal_id, leg=leg, source=source, token_id=token, market=market, side=side,
                   size=D(size), limit_price=D(price), order_type=order_type, **extra)


def fee(size: Decimal, price: Decimal, rate: Decimal) -> Decimal:
    """The venue's formula, written out again here so the test does not trust the code under test."""
    return (size * rate * price * (1 - price)).quantize(D("0.00001"), rounding="ROUND_FLOOR")


def positions_from_trades(trades: list[dict]) -> dict[str, tuple[Decimal, Decimal]]:
    """token -> (shares held, cost of them) from the venue's trades of the account (buys only in these tests)."""
    out: dict[str, tuple[Decimal, Decimal]] = {}
    for trade in trades:
        size, price = D(trade["size"]), D(trade["price"])
        if trade["trader_side"] == "MAKER":
            size = sum((D(mo["matched_amount"]) for mo in trade["maker_orders"]), D(0))
        held, cost = out.get(trade["asset_id"], (D(0), D(0)))
        sign = 1 if trade["side"] == "BUY" else -1
        out[trade["asset_id"]] = (held + sign * size, cost + sign * size * price)
    return out

