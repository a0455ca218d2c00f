"""A trading mesh for tests: the local venue, and scanner, executor, risk (and more) as `polybot run` processes.

Each service runs on its own (no supervisor), so a test can stop, kill or restart one and watch the others.
The test plays the upstream peer where it needs to: it pushes signals where strategies and agents would.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services import messages as m
from services.bus import Bus, BusError, BusTimeout
from services.config import ensure_state_dir, load

from .conftest import child_env, risk_takes_signals, wait_for
from .venue_harness import Venue, mesh_config

KINDS = {"scanner": "services.scanner:Scanner", "executor": "services.executor:Executor",
         "risk": "services.risk:Risk", "strategies": "services.strategies.host:Strategies",
         "analytics": "services.analytics:Analytics"}


def services_toml(options: dict[str, str]) -> str:
    """``[services.NAME]`` tables for the given services, each with its options as a TOML inline table body."""
    out = []
    for name, opts in options.items():
        out.append(f'[services.{name}]\nkind = "{KINDS[name]}"\n')
        if opts:
            out.append(f"options = {{ {opts} }}\n")
    return "".join(out)


class Trading:
    def __init__(self, root: Path, venue: Venue, options: dict[str, str], extra: str = "", bus: str = "") -> None:
        self.root = root
        self.venue = venue
        self.options = dict(options)
        self.config_file = mesh_config(root, venue, services_toml(self.options) + extra, bus)
        self.config = load(self.config_file, {"HOME": str(root)})
        ensure_state_dir(self.config)
        self.bus = Bus(self.config)
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}

    def start(self, *names: str, **env: str) -> None:
        """Start services; ``env`` adds POLYBOT_* overrides (e.g. one risk limit) to their environment."""
        for name in names:
            log = self.root / f"{name}.out"
            self.logs[name] = log
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "services", "--config", str(self.config_file), "run", name],
                env=child_env(**env), stdout=subprocess.DEVNULL, stderr=open(log, "a"))

    def start_risk_desk(self, first: dict[str, dict[str, str]], risk_env: dict[str, str]) -> tuple:
        """Start the services in ``first`` (name -> its environment), then risk with ``risk_env``, each ready; return
        the test's sockets where strategies and subscribers sit: (signals, decisions, executions), connected."""
        for name, env in first.items():
            self.start(name, **env)
        self.wait_ready(*first)
        self.start("risk", **risk_env)
        self.wait_ready("risk")
        signals, decisions, executions = (self.bus.outbound("signals"), self.bus.inbound("decisions"),
                                          self.bus.inbound("executions"))
        wait_for(lambda: decisions.socket.pipes and executions.socket.pipes and signals.socket.pipes,
                 what="the test's sockets to connect")
        return signals, decisions, executions

    def start_desk(self, orders) -> None:
        """Scanner, executor and analytics, then risk, each ready, and the test's ``orders`` socket (it sends
        orders as risk would) connected to the executor."""
        self.start("scanner", "executor", "analytics")
        self.wait_ready("scanner", "executor")
        self.start("risk")
        self.wait_ready("risk", "analytics")
        wait_for(lambda: orders.socket.pipes, what="the orders socket to connect")

    def stop(self, name: str, kill: bool = False) -> None:
        proc = self.procs.pop(name)
        proc.kill() if kill else proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            # A service that ignores SIGTERM is a defect of its own (the supervisor kills it after stop_timeout_s;
            # seen with the scanner, issue 16), not of the test that stops it: say where it waits, and kill it.
            log = self.logs.get(name)
            before = log.stat().st_size if log else 0
            proc.send_signal(signal.SIGUSR1)

            def dumped() -> bool:
                return not log or "thread 0x" in log.read_text(errors="replace")[before:].lower()
            deadline = time.monotonic() + 5
            while not dumped() and time.monotonic() < deadline:
                time.sleep(0.05)  # polling for the fault handler's stacks in the log, with a deadline
            proc.kill()
            proc.wait(20)
            stacks = log.read_text(errors="replace")[before:][-6000:] if log else ""
            warnings.warn(f"{name} did not stop within 20 s of SIGTERM and was killed; its stacks:\n{stacks}",
                          stacklevel=2)

    def status(self, name: str) -> m.ServiceState | None:
        """The service's status, or None while it does not answer."""
        with self.bus.requester(name, 1000) as req:
            try:
                reply = req.request(m.StatusRequest())
            except (BusTimeout, BusError):
                return None
        return reply.service if isinstance(reply, m.StatusReply) else None

    def detail(self, name: str) -> dict[str, str]:
        """The service's status figures, or {} while it does not answer."""
        state = self.status(name)
        return state.detail if state is not None else {}

    def ask(self, name: str, request: m.Message, timeout_ms: int = 5000) -> m.Message:
        with self.bus.requester(name, timeout_ms) as req:
            return req.request(request)

    def wait_ready(self, *names: str) -> None:
        checks = {"risk": risk_takes_signals, "strategies": lambda d: d.get("synced") == "True"}
        for name in names:
            ok = checks.get(name, lambda d: bool(d))
            wait_for(lambda: ok(self.detail(name)), what=f"{name} to be ready", timeout=30)
        if "analytics" in names:  # a subscriber misses what is published before it connects: wait until it has
            publishers = {"decisions": "risk", "executions": "executor", "prices": "scanner"}
            wanted = [sock for sock, svc in publishers.items() if svc in self.procs]
            wait_for(lambda: all(n > 0 for n in self._received("analytics", wanted)),
                     what="analytics to hear from every running publisher", timeout=30)

    def _received(self, name: str, sockets: list[str]) -> list[int]:
        state = self.status(name)
        if state is None:
            return [0]
        return [state.sockets[s].received if s in state.sockets else 0 for s in sockets]

    def log(self, name: str) -> str:
        return self.logs[name].read_text() if name in self.logs else ""

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)
        self.bus.close()


@contextmanager
def agent_mesh(root: Path, seed: int, risk_env: dict[str, str], *venue_args: str) -> Iterator[Trading]:
    """A still local venue, and analytics, scanner, executor and risk (with ``risk_env`` overrides), all ready."""
    venue = Venue(root / "venue", seed, 100, "--still", *venue_args)
    mesh = Trading(root, venue, {"analytics": "", "scanner": "", "executor": "", "risk": ""})
    try:
        mesh.start("analytics", "scanner", "executor")
        mesh.wait_ready("scanner", "executor")
        mesh.start("risk", **risk_env)
        mesh.wait_ready("risk", "analytics")
        yield mesh
    finally:
        mesh.close()
        venue.stop()
