"""The MCP server's seat on the mesh: control requests to the services, and the ``signals`` socket.

Its one write path is a ``Signal`` (or a ``Cancel``) PUSHed onto ``signals``, where risk decides on it exactly
as on a strategy's. Verdicts and executions are read from ``decisions`` and ``executions`` by a reader thread,
so a tool can wait (bounded) for what happened to the signal it sent.
"""
from __future__ import annotations

import asyncio
import atexit
import threading
import time
from collections import deque

from services import messages as m
from services.bus import Bus, BusError, BusTimeout, Requester
from services.config import Config, control_address

KEPT = 10_000  # verdicts and executions remembered for waiting tools
READ_POLL_MS = 200  # a reader thread's longest wait in NNG before it looks at the stop flag again
JOIN_S = 5.0  # the longest close() waits for a reader thread to leave NNG


class MeshDown(Exception):
    """A service did not answer; the message says which and what to do."""


class MeshLink:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._bus: Bus | None = None
        self._lock = threading.Lock()
        self._seen: deque[m.Message] = deque(maxlen=KEPT)
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._readers: list[threading.Thread] = []

    # ---------------------------------------------------------------- control

    async def ask(self, service: str, request: m.Message, timeout_ms: int = 4000) -> m.Message:
        def call() -> m.Message:
            with Requester(control_address(self.config, service), timeout_ms) as req:
                return req.request(request)
        try:
            reply = await asyncio.to_thread(call)
        except (BusTimeout, BusError):
            raise MeshDown(f"the {service} service does not answer; check `polybot status` and start the mesh "
                           "with `polybot up`") from None
        if isinstance(reply, m.Error):
            raise MeshDown(f"{service}: {reply.message}")
        return reply

    # ---------------------------------------------------------------- signals

    def _connect(self) -> Bus:
        with self._lock:
            if self._stop.is_set():
                raise MeshDown("this MCP server is shutting down; start it again (your client does so on "
                               "reconnecting)")
            if self._bus is None:
                bus = Bus(self.config)
                self._out = bus.outbound("signals")
                self._in = [bus.inbound("decisions"), bus.inbound("executions")]
                for inbound in self._in:
                    reader = threading.Thread(target=self._read, args=(inbound,), daemon=True,
                                              name=f"mcp-{inbound.name}")
                    reader.start()
                    self._readers.append(reader)
                self._bus = bus
                # A server that is never closed (one built in memory, say) still stops its readers before NNG's
                # own atexit handler runs: handlers run last registered first, and pynng's is registered on import.
                atexit.register(self.close)
            return self._bus

    def _read(self, inbound) -> None:
        while not self._stop.is_set():
            try:
                batch = [x for x in inbound.recv_batch(READ_POLL_MS) if not isinstance(x, m.Heartbeat)]
            except Exception:  # the socket was closed under us: the server is stopping
                return
            if batch:
                with self._changed:
                    self._seen.extend(batch)
                    self._changed.notify_all()

    async def send(self, msg: m.Signal | m.Cancel, connect_timeout_s: float = 3.0) -> None:
        """PUSH onto ``signals`` once risk and the verdict feeds are connected (a verdict is never missed)."""
        await asyncio.to_thread(self._send, msg, connect_timeout_s)

    def _send(self, msg: m.Message, connect_timeout_s: float) -> None:
        self._connect()
        deadline = time.monotonic() + connect_timeout_s
        while not (self._out.socket.pipes and all(i.socket.pipes for i in self._in)):
            if time.monotonic() > deadline:
                raise MeshDown("risk is not running (nothing takes the signals socket); start the mesh with "
                               "`polybot up` and check `polybot status`")
            time.sleep(0.01)  # waiting for NNG to connect its pipes; bounded by the deadline above
        if not self._out.send(msg):
            raise MeshDown("the signals queue to risk is full; risk is not keeping up, try again shortly")

    async def wait_for(self, match, timeout_s: float) -> m.Message | None:
        """The first verdict or execution (seen since connecting) for which ``match`` is true, or None."""
        return await asyncio.to_thread(self._wait_for, match, timeout_s)

    def _wait_for(self, match, timeout_s: float) -> m.Message | None:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                found = next((x for x in self._seen if match(x)), None)
                left = deadline - time.monotonic()
                if found is not None or left <= 0:
                    return found
                self._changed.wait(left)

    def seen(self, match) -> list[m.Message]:
        with self._lock:
            return [x for x in self._seen if match(x)]

    def close(self) -> None:
        """Stop the reader threads, then close the sockets. In that order: NNG aborts the process
        (``pthread_mutex_lock: Invalid argument``) when its atexit ``nng_fini`` runs while a thread still waits
        in a receive, and a daemon thread still does when the interpreter exits."""
        self._stop.set()
        with self._lock:
            bus, self._bus = self._bus, None
        for reader in self._readers:  # each sees the flag within READ_POLL_MS
            reader.join(JOIN_S)
        if bus is not None:
            bus.close()
            atexit.unregister(self.close)
