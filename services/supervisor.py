"""The supervisor: starts each configured service as its own process, restarts the ones that die, stops them all.

It is a service like the others (same runtime, its own control socket), so
``polybot status``, ``restart`` and ``down`` talk to it over the bus.
Services start in config order and stop in reverse, so consumers are up
before their producers and producers stop first.

A ``ReloadRequest`` reads the config again (with the approved strategies of the strategy store): it starts the
services new to it, stops those gone, restarts those whose settings changed and leaves the others running (how an
approved strategy starts, is hot-replaced by a newly approved version, or stops). A strategies host whose file is
not the version approved is not started: its row says why (``last_error``) until a reload finds it fixed.
"""
from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from . import messages as m
from .bus import BusError, BusTimeout, Requester
from .config import (STRATEGIES_KIND, SUPERVISOR_ENV, Config, ConfigError, ServiceConfig, control_address, load,
                     metrics_port, service_environment)
from .runtime import Service, StartupError

POLL_S = 0.1
READY_POLL_MS = 250


class SupervisorOptions(msgspec.Struct, frozen=True):
    config_path: str = ""  # handed to every child so they read the same file


@dataclass
class Child:
    name: str
    proc: subprocess.Popen | None = None
    state: str = "down"  # starting, running, stopping, backoff, down
    started: float = 0.0
    restarts: int = 0
    failures: int = 0  # consecutive quick deaths, for the backoff
    next_start: float | None = None
    last_exit: int | None = None
    refused: str = ""  # why it is not started (a strategy file not the version approved); state "down"
    ready_task: asyncio.Task | None = field(default=None, repr=False)


class Supervisor(Service):
    Options = SupervisorOptions

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.cfg = ctx.config.supervisor
        self.children_ = {name: Child(name) for name in ctx.config.enabled_services}
        self._tasks: set[asyncio.Task] = set()
        lock_path = Path(ctx.config.state_dir) / "supervisor.pid"
        self._lock = open(lock_path, "a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.seek(0)
            other = self._lock.read().strip() or "?"
            self._lock.close()
            raise StartupError(f"a supervisor (pid {other}) already runs for {ctx.config.state_dir}; "
                               "use `polybot status`, or `polybot down` to stop it") from None
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(str(os.getpid()))
        self._lock.flush()

    # ---------------------------------------------------------------- the loop

    async def run(self) -> None:
        if not self.children_:
            self.ctx.log.warning("no service is enabled: every one in the config has enabled = false")
        for child in self.children_.values():
            self._spawn(child)
        while True:
            now = time.monotonic()
            for child in self.children_.values():
                self._check(child, now)
            await asyncio.sleep(POLL_S)

    def _check(self, child: Child, now: float) -> None:
        if child.proc is not None and child.state != "stopping" and (code := child.proc.poll()) is not None:
            lived = now - child.started
            child.proc, child.last_exit = None, code
            child.failures = 1 if lived >= self.cfg.backoff_reset_s else child.failures + 1
            delay = min(self.cfg.backoff_initial_s * 2 ** (child.failures - 1), self.cfg.backoff_max_s)
            child.state, child.next_start = "backoff", now + delay
            self.ctx.log.error("%s exited with %s after %.1fs; restarting in %.1fs", child.name, code, lived, delay)
        if child.state == "backoff" and child.next_start is not None and now >= child.next_start:
            child.restarts += 1
            self._spawn(child)

    def _spawn(self, child: Child) -> None:
        if why := refusal(self.ctx.config.services[child.name]):
            if why != child.refused:
                self.ctx.log.error("not starting %s: %s", child.name, why)
            # Not started: no process of its own is shown (the one before it, if any, has ended).
            child.refused, child.state, child.next_start, child.proc = why, "down", None, None
            return
        child.refused = ""
        command = [sys.executable, "-m", "services"]
        if self.ctx.options.config_path:
            command += ["--config", self.ctx.options.config_path]
        command += ["run", child.name]
        # A service sees only the secrets it uses: the executor the key and API credentials, the others none.
        env = {**service_environment(os.environ, self.ctx.config.services[child.name]),
               SUPERVISOR_ENV: str(os.getpid())}
        child.proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      start_new_session=True)  # Ctrl-C reaches only us; we stop children in order
        child.state, child.started, child.next_start = "starting", time.monotonic(), None
        self.ctx.log.info("started %s", child.name, extra={"pid": child.proc.pid})
        child.ready_task = self._track(self._await_ready(child, child.proc))

    async def _await_ready(self, child: Child, proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + self.cfg.ready_timeout_s
        address = control_address(self.ctx.config, child.name)
        with Requester(address, READY_POLL_MS) as req:
            while child.proc is proc and proc.poll() is None:
                try:
                    await asyncio.to_thread(req.request, m.StatusRequest())
                except (BusTimeout, BusError):
                    if time.monotonic() > deadline:
                        self.ctx.log.error("%s did not answer status within %.0fs", child.name,
                                           self.cfg.ready_timeout_s)
                        deadline = float("inf")  # say it once; keep waiting, it may still come up
                    continue
                if child.state == "starting":
                    child.state = "running"
                    self.ctx.log.info("%s is ready", child.name, extra={"pid": proc.pid})
                return

    def _track(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---------------------------------------------------------------- control

    def control(self, request: m.Message) -> m.Message | None:
        match request:
            case m.RestartRequest(service=name):
                child = self.children_.get(name)
                if child is None:
                    return m.Error(request_id=request.id,
                                   message=f"no service {name!r}; running: {', '.join(self.children_) or 'none'}")
                self._track(self._restart(child))
                return m.Ok(request_id=request.id, detail=f"restarting {name}")
            case m.ReloadRequest():
                return self._reload(request)
            case m.ShutdownRequest():
                self.ctx.request_stop()
                return m.Ok(request_id=request.id, detail="shutting down")
        return None

    async def _restart(self, child: Child) -> None:
        proc = child.proc
        child.state = "stopping"
        if proc is not None:
            await asyncio.to_thread(_stop_process, proc, self.cfg.stop_timeout_s)
        child.restarts += 1
        child.failures = 0
        self.ctx.log.info("restarting %s on request", child.name)
        self._spawn(child)

    def _reload(self, request: m.ReloadRequest) -> m.Message:
        """Read the config again; start what is new, stop what is gone, restart what changed; leave the rest."""
        try:
            config = load(self.ctx.options.config_path or None)
        except ConfigError as exc:
            return m.Error(request_id=request.id, message=f"config: {exc}; nothing was changed")
        old, wanted = self.ctx.config, config.enabled_services
        gone = [name for name in self.children_ if name not in wanted]
        new = [name for name in wanted if name not in self.children_]
        changed = [name for name in wanted if name in self.children_ and
                   (moved(old, config, name) or self.children_[name].refused)]
        self.ctx.config, self.cfg = config, config.supervisor
        for name in gone:
            self._track(self._remove(self.children_[name]))
        for name in new:
            self.children_[name] = Child(name)
            self._spawn(self.children_[name])
        for name in changed:
            self._track(self._restart(self.children_[name]))
        said = [f"{what} {', '.join(names)}" for what, names in (("starting", new), ("stopping", gone),
                                                                   ("restarting", changed)) if names]
        self.ctx.log.info("reloaded the config for %s: %s", request.by or "an operator", "; ".join(said) or
                          "nothing changed")
        return m.Ok(request_id=request.id, detail="; ".join(said) or "nothing changed")

    async def _remove(self, child: Child) -> None:
        proc = child.proc
        child.state = "stopping"
        if proc is not None:
            await asyncio.to_thread(_stop_process, proc, self.cfg.stop_timeout_s)
            self.ctx.log.info("stopped %s: gone from the config", child.name, extra={"exit": proc.returncode})
        if self.children_.get(child.name) is child:
            del self.children_[child.name]

    def children(self) -> list[m.ServiceState]:
        now = time.monotonic()
        out = []
        for child in self.children_.values():
            detail = {}
            if child.last_exit is not None:
                detail["last_exit"] = str(child.last_exit)
            if child.state == "backoff" and child.next_start is not None:
                detail["restart_in_s"] = f"{max(0.0, child.next_start - now):.1f}"
            out.append(m.ServiceState(
                name=child.name,
                state="down" if child.state == "backoff" else child.state,  # type: ignore[arg-type]
                pid=child.proc.pid if child.proc is not None else 0,
                uptime_s=round(now - child.started, 3) if child.proc is not None else 0.0,
                restarts=child.restarts,
                last_error=child.refused,
                detail=detail,
            ))
        return out

    def detail(self) -> dict[str, str]:
        return {"services": str(len(self.children_))}

    # ---------------------------------------------------------------- stop

    def on_stop(self) -> None:
        """Stop every child, producers first (reverse of start order); SIGKILL what outlives stop_timeout_s."""
        for task in self._tasks:
            task.cancel()
        running = [c for c in reversed(self.children_.values()) if c.proc is not None]
        for child in running:
            child.state = "stopping"
            _signal(child.proc, signal.SIGTERM)
        for child in running:
            _stop_process(child.proc, self.cfg.stop_timeout_s, signalled=True)
            self.ctx.log.info("stopped %s", child.name, extra={"exit": child.proc.returncode})
            child.proc, child.state = None, "down"
        self._lock.close()


def refusal(service: ServiceConfig) -> str:
    """Why a service must not be started as configured ("" when it may): a strategy file not the version approved."""
    if service.kind != STRATEGIES_KIND:
        return ""
    from .strategies.host import unapproved  # the strategies' code is loaded only where a host is configured

    tables = service.options.get("strategies", {})
    return next((f"strategy {name}: {why}" for name, table in tables.items()
                 if isinstance(table, dict) and (why := unapproved(table))), "")


def moved(old: Config, new: Config, name: str) -> bool:
    """The service's settings, or where it is reached, differ between the two configs."""
    return (old.services.get(name) != new.services[name] or control_address(old, name) != control_address(new, name)
            or metrics_port(old, name) != metrics_port(new, name))


def _signal(proc: subprocess.Popen, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass


def _stop_process(proc: subprocess.Popen, timeout_s: float, signalled: bool = False) -> None:
    """SIGTERM (once: a second one can land after the child's handler is gone), wait ``timeout_s``, then SIGKILL."""
    if proc.poll() is not None:
        return
    if not signalled:
        _signal(proc, signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        _signal(proc, signal.SIGKILL)
        proc.wait(timeout_s)
