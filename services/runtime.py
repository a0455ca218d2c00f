"""The service runtime: one service class, one OS process, its sockets, its control socket, its lifecycle.

A service declares the sockets it sends on (``publishes``) and receives from
(``consumes``), and implements ``handle``. The runtime binds or dials each
socket as the taxonomy says, runs one reader thread per inbound socket that
hands batches to the event loop (so service code is single-threaded), answers
``status``/``halt``/``resume`` on the control socket, sends heartbeats on its
fan-out sockets, and on SIGTERM/SIGINT drains what its inbound sockets hold
before it stops.
"""
from __future__ import annotations

import asyncio
import faulthandler
import importlib
import logging
import os
import signal
import threading
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec

from . import logs, tls
from . import messages as m
from .bus import READER_POLL_MS, TAXONOMY, Bus, BusError, Inbound, Outbound
from .config import SUPERVISOR_ENV, Config, ConfigError, Secrets, ensure_state_dir, metrics_port, service_options
from .metrics import Flow, Metrics, MetricsError, RuntimeCollector

CONTROL_TIMEOUT_S = 5.0  # the longest a control request may wait for the event loop
SAMPLE_S = 1.0  # how often a service's state gauges are set (Service.sample)


class StartupError(Exception):
    """The service cannot start; the message says why and what to do."""


class NoOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class Context:
    """What a service gets from the runtime: its name, config, options, secrets, logger, clock and send."""

    def __init__(self, name: str, config: Config, options: Any, secrets: Secrets, log: logging.Logger,
                 outbound: Mapping[str, Outbound]) -> None:
        self.name = name
        self.config = config
        self.options = options
        self.secrets = secrets
        self.log = log
        self.clock = time.time_ns
        self.request_stop: Any = lambda: None  # set by the runner: stop this process gracefully
        self.inbound: Mapping[str, Inbound] = {}  # set by the runner
        self.flows: Mapping[str, Flow] = {}  # set by the runner: per inbound socket, queue depth and handling lag
        self.halted = False
        self.halt_reason = ""
        self.metrics: Any = None  # set by the runner: this process's services.metrics.Metrics
        self.tracing: Any = None  # set by the runner when [tracing] enabled: services.tracing's tracer, else None
        self._outbound = outbound

    def send(self, socket: str, msg: m.Message) -> bool:
        """Send on one of the service's ``publishes`` sockets; False when the frame was dropped (and counted)."""
        try:
            out = self._outbound[socket]
        except KeyError:
            raise BusError(f"{self.name} does not publish on {socket!r}; add it to the service's publishes") from None
        return out.send(msg)

    def peers(self, socket: str) -> int:
        """How many peers one of the service's ``publishes`` sockets is connected to now."""
        return len(self._outbound[socket].socket.pipes)

    def subscribed(self, *sockets: str) -> bool:
        """These inbound sockets are connected to their publisher, so nothing it sends from now on is missed."""
        return all(self.inbound[name].socket.pipes for name in sockets)


class Service:
    """Base class: messages in through ``handle``, messages out through ``ctx.send``."""

    publishes: ClassVar[tuple[str, ...]] = ()
    consumes: ClassVar[Mapping[str, tuple[type[m.Message], ...] | None]] = {}  # socket -> type filter (None: all)
    Options: ClassVar[type[msgspec.Struct]] = NoOptions

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def handle(self, socket: str, msg: m.Message) -> None:
        """One inbound message (heartbeats included)."""

    async def run(self) -> None:
        """Long-running work of the service's own (a feed, a timer); returning early is fine."""

    def on_halt(self, reason: str) -> None:
        """Halted: stop producing new work until resumed."""

    def on_resume(self) -> None:
        pass

    def on_stop(self) -> None:
        """Flush what must not be lost; inbound sockets are already drained."""

    def control(self, request: m.Message) -> m.Message | None:
        """Service-specific control requests; None means not handled here."""
        return None

    def detail(self) -> dict[str, str]:
        """Extra figures for ``status``."""
        return {}

    def sample(self) -> None:
        """Set the gauges that describe the service's state (exposure, PnL...); called on the event loop every
        ``SAMPLE_S`` and before it stops, so a scrape never reads state while the loop changes it."""

    def children(self) -> list[m.ServiceState]:
        """The services this one supervises, for ``status`` (only the supervisor has any)."""
        return []


def load_service_class(kind: str) -> type[Service]:
    module_name, _, attr = kind.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"service kind {kind!r} must look like 'package.module:Class'")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"service kind {kind!r} cannot be loaded: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Service)):
        raise ConfigError(f"service kind {kind!r} is not a Service subclass")
    for socket in (*cls.publishes, *cls.consumes):
        if socket not in TAXONOMY:
            raise ConfigError(f"service kind {kind!r} names unknown socket {socket!r}")
    return cls


def bound_sockets(cls: type[Service]) -> list[str]:
    """The sockets a service of this class binds, the stable side: PUB of a fan-out socket, PULL of the others."""
    return [s for s in cls.publishes if TAXONOMY[s].fanout] + [s for s in cls.consumes if not TAXONOMY[s].fanout]


def check_services(config: Config) -> None:
    """Every enabled service loads, with valid options, and binds no socket another binds; else ConfigError."""
    binder: dict[str, str] = {}
    for name in config.enabled_services:
        for socket in bound_sockets(resolve(config, name)[0]):
            if socket in binder:  # e.g. a second risk added beside the default one: it could never bind
                raise ConfigError(f"services.{name}: binds {socket} as services.{binder[socket]} does, and only one "
                                  f"can; set [services.{binder[socket]}] enabled = false to run {name} in its place")
            binder[socket] = name


def resolve(config: Config, name: str) -> tuple[type[Service], Any]:
    """The service class and its validated options, or ConfigError naming the bad key."""
    if name not in config.services:
        known = ", ".join(config.services) or "none"
        raise ConfigError(f"no service {name!r} in the config (configured: {known})")
    cls = load_service_class(config.services[name].kind)
    return cls, service_options(config, name, cls.Options)


class Runner:
    """Runs one service in this process until SIGTERM/SIGINT, its supervisor's death, or a fatal error."""

    def __init__(self, config: Config, name: str, secrets: Secrets,
                 cls: type[Service] | None = None, options: Any = None) -> None:
        self.config = config
        self.name = name
        self.secrets = secrets
        self.cls, self.options = (cls, options) if cls is not None else resolve(config, name)
        ensure_state_dir(config)
        self.log = logs.setup(config, name, secrets)
        tls.identify(name, config)  # with bus.transport = "tls", its sockets present this service's certificate
        self.bus = Bus(config, on_bad_frame=self._bad_frame)
        self.metrics = Metrics()
        self.flows: dict[str, Flow] = {}
        self.state = "starting"
        self.started = time.monotonic()
        self.last_error = ""
        self.errors = 0
        self.failed = False
        self.handled = 0
        self.drained = 0
        self._bad_logged = 0.0
        self._stop_threads = threading.Event()
        self._halt_file = config.state_path / f"halted-{name}"

    # ---------------------------------------------------------------- lifecycle

    def run(self) -> int:
        # SIGUSR1 prints every thread's stack to stderr (the service's log file under the supervisor): how to see
        # where a service that does not stop is waiting, before it is killed.
        faulthandler.register(signal.SIGUSR1, all_threads=True)
        try:
            return asyncio.run(self._main())
        except (BusError, StartupError) as exc:
            self.log.error("cannot start: %s", exc)
            return 2

    async def _main(self) -> int:
        loop = asyncio.get_running_loop()
        self.loop = loop
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        outbound = {name: self.bus.outbound(name) for name in self.cls.publishes}
        self.ctx = Context(self.name, self.config, self.options, self.secrets, self.log, outbound)
        self.ctx.request_stop = stop.set
        self.ctx.metrics = self.metrics
        if self._halt_file.exists():  # a halt outlives a crash or a restart until someone resumes
            self.ctx.halted, self.ctx.halt_reason = True, self._halt_file.read_text().strip() or "halted"
        try:
            if self.config.tracing.enabled:  # only then is OpenTelemetry imported
                from . import tracing
                self.ctx.tracing = tracing.setup(self.config, self.name)
            self.service = self.cls(self.ctx)
            inbound = {name: self.bus.inbound(name, only) for name, only in self.cls.consumes.items()}
            self.ctx.inbound = inbound
            self.flows.update({name: Flow() for name in inbound})
            self.ctx.flows = self.flows
            replier = self.bus.replier(self.name)
        except BaseException:
            self.bus.close()
            raise
        try:
            self._serve_metrics()
        except BaseException:
            replier.close()
            self.bus.close()
            raise
        try:
            readers = [self._start_reader(sock) for sock in inbound.values()]
            replier.serve(self._control, name=f"{self.name}-control")
            tasks = [
                asyncio.create_task(self._guard(self.service.run(), stop), name="service"),
                asyncio.create_task(self._heartbeats(outbound), name="heartbeats"),
                asyncio.create_task(self._watch_supervisor(stop), name="supervisor-watch"),
                asyncio.create_task(self._sample(), name="sample"),
            ]
            if self.ctx.halted:
                self._call(self.service.on_halt, self.ctx.halt_reason)
            self.state = "halted" if self.ctx.halted else "running"
            sockets = {"publishes": ",".join(self.cls.publishes), "consumes": ",".join(self.cls.consumes)}
            self.log.info("started", extra={"pid": os.getpid(), **{k: v for k, v in sockets.items() if v}})
            await stop.wait()
            self.state = "stopping"
            self.log.info("stopping: draining inbound sockets")
            self._stop_threads.set()
            for reader in readers:
                await asyncio.to_thread(reader.join)
            await self._flush_deliveries()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._call(self.service.on_stop)
            self._call(self.service.sample)
            await asyncio.sleep(self.config.bus.linger_ms / 1000)  # NNG discards queued frames on close
            self.log.info("stopped", extra={"handled": self.handled, "drained": self.drained, "errors": self.errors})
            return 1 if self.failed else 0
        finally:
            replier.close()
            self.metrics.close()
            self.bus.close()
            if self.ctx.tracing is not None:  # after on_stop: the last spans go out
                self.ctx.tracing.shutdown()

    def _serve_metrics(self) -> None:
        self.metrics.add(RuntimeCollector(self.bus.counters, self.flows, self._figures))
        settings = self.config.metrics
        if not settings.enabled:
            return
        port = metrics_port(self.config, self.name)
        try:
            self.metrics.serve(settings.host, port)
        except MetricsError as exc:
            raise StartupError(f"{exc}; set [services.{self.name}] metrics_port, metrics.base_port "
                               "(0 picks a free port) or metrics.enabled = false") from None

    def _figures(self) -> dict[str, float]:
        return {"handled": self.handled, "handler_errors": self.errors, "halted": float(self.ctx.halted),
                "uptime_seconds": round(time.monotonic() - self.started, 3)}

    async def _sample(self) -> None:
        while True:
            self._call(self.service.sample)
            await asyncio.sleep(SAMPLE_S)

    async def _flush_deliveries(self) -> None:
        """Let every batch the readers already handed over run: callbacks run in FIFO order."""
        done = self.loop.create_future()
        self.loop.call_soon(done.set_result, None)
        await done

    async def _guard(self, coro: Any, stop: asyncio.Event) -> None:
        """A service whose own work fails stops (exit 1), so its supervisor restarts it."""
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except StartupError as exc:  # found only once running (e.g. by asking the venue): said as at construction
            self.failed = True
            self.last_error = f"cannot start: {exc}"
            self.log.error("cannot start: %s", exc)
            stop.set()
        except Exception as exc:
            self.failed = True
            self.last_error = f"service run() failed: {type(exc).__name__}: {exc}"
            self.log.error("%s; stopping", self.last_error, exc_info=exc)
            stop.set()

    async def _heartbeats(self, outbound: Mapping[str, Outbound]) -> None:
        fanout = [out for name, out in outbound.items() if TAXONOMY[name].fanout]
        seq = 0
        while fanout:
            seq += 1
            beat = m.Heartbeat(service=self.name, pid=os.getpid(), seq=seq)
            for out in fanout:
                out.send(beat)
            await asyncio.sleep(self.config.bus.heartbeat_s)

    async def _watch_supervisor(self, stop: asyncio.Event) -> None:
        """A supervised service stops when its supervisor is gone, instead of living on as an orphan."""
        parent = os.environ.get(SUPERVISOR_ENV)
        if not parent:
            return
        while os.getppid() == int(parent):
            await asyncio.sleep(1.0)
        self.log.warning("supervisor %s is gone; stopping", parent)
        stop.set()

    # ---------------------------------------------------------------- inbound

    def _start_reader(self, sock: Inbound) -> threading.Thread:
        flow = self.flows[sock.name]

        def read() -> None:
            while not self._stop_threads.is_set():
                batch = sock.recv_batch(READER_POLL_MS)
                if batch:
                    flow.enqueued += len(batch)
                    self.loop.call_soon_threadsafe(self._deliver, sock.name, batch)
            rest = sock.drain()
            if rest:
                self.drained += len(rest)
                flow.enqueued += len(rest)
                self.loop.call_soon_threadsafe(self._deliver, sock.name, rest)

        thread = threading.Thread(target=read, name=f"{self.name}-{sock.name}", daemon=True)
        thread.start()
        return thread

    def _deliver(self, socket: str, batch: list[m.Message]) -> None:
        handle = self.service.handle
        flow = self.flows[socket]
        flow.lag.observe(time.time_ns(), batch)
        for msg in batch:
            try:
                handle(socket, msg)
            except Exception as exc:
                self._record_error(exc, f"handling {type(msg).__name__} from {socket}")
        flow.handled += len(batch)
        self.handled += len(batch)

    def _record_error(self, exc: BaseException, doing: str) -> None:
        self.errors += 1
        self.last_error = f"{doing}: {type(exc).__name__}: {exc}"
        if self.errors & (self.errors - 1) == 0:  # log the 1st, 2nd, 4th, 8th... so a hot loop cannot flood
            self.log.error("%s (error #%d)", self.last_error, self.errors, exc_info=exc)

    def _bad_frame(self, socket: str, why: str) -> None:
        now = time.monotonic()
        if now - self._bad_logged > 5.0:
            self._bad_logged = now
            self.log.warning("undecodable frame on %s skipped: %s", socket, why)

    def _call(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            self._record_error(exc, fn.__name__)

    # ---------------------------------------------------------------- control

    def _control(self, request: m.Message) -> m.Message:
        """Runs on the control thread; the answer is computed on the event loop so it sees consistent state."""
        future = asyncio.run_coroutine_threadsafe(self._answer(request), self.loop)
        return future.result(timeout=CONTROL_TIMEOUT_S)

    async def _answer(self, request: m.Message) -> m.Message:
        match request:
            case m.StatusRequest():
                return m.StatusReply(service=self.status(), children=self.service.children(),
                                     trace_id=request.trace_id)
            case m.HaltRequest(reason=reason):
                self.ctx.halted, self.ctx.halt_reason = True, reason or "halted by operator"
                self._halt_file.write_text(self.ctx.halt_reason)
                if self.state == "running":
                    self.state = "halted"
                self._call(self.service.on_halt, self.ctx.halt_reason)
                self.log.warning("halted: %s", self.ctx.halt_reason)
                return m.Ok(request_id=request.id, detail="halted")
            case m.ResumeRequest():
                self.ctx.halted, self.ctx.halt_reason = False, ""
                self._halt_file.unlink(missing_ok=True)
                if self.state == "halted":
                    self.state = "running"
                self._call(self.service.on_resume)
                self.log.info("resumed")
                return m.Ok(request_id=request.id, detail="resumed")
        reply = self.service.control(request)
        if reply is not None:
            return reply
        return m.Error(request_id=request.id,
                       message=f"{self.name} does not handle {type(request).__name__}; send it to the supervisor")

    def status(self) -> m.ServiceState:
        try:
            detail = {k: str(v) for k, v in self.service.detail().items()}
        except Exception as exc:
            detail = {"detail_error": str(exc)}
        detail.update(handled=str(self.handled), errors=str(self.errors), drained=str(self.drained))
        if self.bus.refused:  # tls: peers whose certificate a socket's role does not allow
            detail["tls_refused"] = f"{len(self.bus.refused)} ({', '.join(sorted(set(self.bus.refused))[:5])})"
        if self.metrics.port:
            detail["metrics"] = f"http://{self.config.metrics.host}:{self.metrics.port}/metrics"
        return m.ServiceState(
            name=self.name,
            state=self.state,  # type: ignore[arg-type]
            pid=os.getpid(),
            uptime_s=round(time.monotonic() - self.started, 3),
            sockets={k: msgspec.structs.replace(v) for k, v in self.bus.counters.items()},
            last_error=self.last_error,
            halt_reason=self.ctx.halt_reason,
            detail=detail,
        )
