"""The NNG bus: the socket taxonomy, typed send and receive, counters.

Frames are ``topic + msgpack(message) + trailer``. The topic (a length byte
and the type's tag) lets SUB sockets filter by type with NNG prefix
subscriptions; it depends on the tag alone, so a newer peer whose message has
an added field still passes an older peer's filter. The 12-byte trailer
carries the sender's random instance id and a per-type sequence number, so a
receiver counts what it missed (a SUB that falls behind loses frames silently
in NNG: its full queue drops the oldest).

I/O style, measured by ``benchmarks/bus_io.py``: a blocking ``recv`` on a
thread per socket beats pynng's asyncio ``arecv`` ~4x and ``recv_fd`` polling
~2x; a reader thread that drains each burst and hands the batch to the
service's event loop keeps ~85% of the raw thread rate. Every blocking call
has a timeout; publishers never block.
"""
from __future__ import annotations

import os
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
import pynng

from . import messages as m
from . import tls
from .config import Config, control_address, socket_address

TRAILER = struct.Struct(">IQ")  # sender instance id, per-type sequence
MAX_FRAME = 64 * 1024 * 1024  # bus.max_frame_bytes' default: the largest frame the bus carries
READER_POLL_MS = 200  # how often a reader thread looks up from a blocking recv to see if it should stop
REDIAL = {"reconnect_time_min": 20, "reconnect_time_max": 1000}  # ms: a restarted peer is found again quickly


# What decoding a frame raises when the frame is bad: msgspec raises UnicodeDecodeError (not DecodeError) for a
# string that is not UTF-8 (found by tests/test_fuzz.py).
UNDECODABLE = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError)


def topic(cls: type[m.Message]) -> bytes:
    """The first bytes of every frame of ``cls``: a length byte, then the tag."""
    tag = m.tag_of(cls).encode()
    return bytes([len(tag)]) + tag


def encode_frame(encoder: msgspec.msgpack.Encoder, msg: m.Message, instance: int, seq: int) -> bytes:
    return topic(type(msg)) + encoder.encode(msg) + TRAILER.pack(instance, seq)


def checked_numbers(msg: m.Message) -> str:
    """Why a decoded message cannot be let in for its numbers (not finite, or out of range), or "". A signal
    passes: risk refuses it with the reason (BAD_SIGNAL), so its sender hears why."""
    if isinstance(msg, m.ANSWERED_BY_RISK):
        return ""
    why = m.number_fault(msg)
    return f"{type(msg).__name__}: {why}" if why else ""


@dataclass(frozen=True)
class SocketSpec:
    name: str
    union: Any
    fanout: bool  # PUB binds and SUB dials; otherwise PULL binds and PUSH dials
    bound_by: str

    @property
    def types(self) -> tuple[type[m.Message], ...]:
        return m.members(self.union)


TAXONOMY: dict[str, SocketSpec] = {
    s.name: s
    for s in (
        SocketSpec("prices", m.PricesMsg, fanout=True, bound_by="scanner"),
        SocketSpec("events", m.EventsMsg, fanout=True, bound_by="scanner"),
        SocketSpec("signals", m.SignalsMsg, fanout=False, bound_by="risk"),
        SocketSpec("orders", m.OrdersMsg, fanout=False, bound_by="executor"),
        SocketSpec("executions", m.ExecutionsMsg, fanout=True, bound_by="executor"),
        SocketSpec("decisions", m.DecisionsMsg, fanout=True, bound_by="risk"),
    )
}
CONTROL = "control"


class BusError(Exception):
    """A bus operation failed; the message says which socket and why."""


class BusTimeout(BusError):
    pass


def nng_limit(max_frame: int) -> int:
    """NNG's own receive limit: twice the bus's cap, so a frame a little over the cap is read, counted and skipped
    by us; NNG cuts the connection on one past this before reading it (a peer's ``disconnects`` count it)."""
    return 2 * max_frame


def over_cap(size: int, max_frame: int) -> str:
    return f"frame of {size} bytes is over the bus's cap of {max_frame} bytes (bus.max_frame_bytes)"


class Counted:
    """Base for a socket with its counters."""

    def __init__(self, name: str, socket: pynng.Socket, counters: m.SocketCounters, max_frame: int = MAX_FRAME,
                 on_bad_frame: Callable[[str, str], None] | None = None) -> None:
        self.name = name
        self.socket = socket
        self.counters = counters
        self.max_frame = max_frame
        self._on_bad_frame = on_bad_frame

    def _oversized(self, size: int) -> None:
        """A frame over the cap: counted, reported, not carried."""
        self.counters.oversized += 1
        if self._on_bad_frame is not None:
            self._on_bad_frame(self.name, over_cap(size, self.max_frame))

    def close(self) -> None:
        self.socket.close()


class Outbound(Counted):
    """PUB or PUSH: ``send`` never blocks; a frame the socket cannot take now is counted as dropped."""

    def __init__(self, name: str, socket: pynng.Socket, counters: m.SocketCounters, union: Any,
                 max_frame: int = MAX_FRAME, on_bad_frame: Callable[[str, str], None] | None = None) -> None:
        super().__init__(name, socket, counters, max_frame, on_bad_frame)
        self._allowed = m.members(union)
        self._encoder = msgspec.msgpack.Encoder()
        self._instance = int.from_bytes(os.urandom(4), "big")
        self._seq: dict[type, int] = {}
        self._lock = threading.Lock()

    def send(self, msg: m.Message) -> bool:
        kind = type(msg)
        if kind not in self._allowed:
            raise BusError(f"{self.name}: {kind.__name__} does not travel on this socket")
        with self._lock:
            seq = self._seq.get(kind, 0) + 1
            self._seq[kind] = seq
            frame = encode_frame(self._encoder, msg, self._instance, seq)
            if len(frame) > self.max_frame:  # no receiver would take it: refused here, where it is seen
                self._seq[kind] = seq - 1
                self._oversized(len(frame))
                return False
            try:
                self.socket.send(frame, block=False)
            except pynng.TryAgain:
                self.counters.dropped += 1
                return False
        self.counters.sent += 1
        return True

    def send_raw(self, frame: bytes) -> None:
        """Send bytes as they are (tests use it to put malformed frames on the wire)."""
        self.socket.send(frame, block=False)


class Inbound(Counted):
    """SUB or PULL: decode, count, skip what cannot be decoded, notice gaps."""

    def __init__(self, name: str, socket: pynng.Socket, counters: m.SocketCounters, union: Any,
                 on_bad_frame: Callable[[str, str], None] | None = None,
                 admit: Callable[[pynng.Pipe, m.Message], str] | None = None, max_frame: int = MAX_FRAME) -> None:
        super().__init__(name, socket, counters, max_frame, on_bad_frame)
        self._decoder = msgspec.msgpack.Decoder(union)
        self._last_seq: dict[tuple[int, type], int] = {}
        socket.add_post_pipe_remove_cb(self._disconnected)
        self._admit = admit  # why a message may not come from the pipe it came on ("": it may); tls only

    def _disconnected(self, _pipe: pynng.Pipe) -> None:
        self.counters.disconnects += 1

    def _take(self, raw: pynng.Message) -> m.Message | None:
        if len(raw.bytes) > self.max_frame:
            return self._oversized(len(raw.bytes))
        msg = self._decode(raw.bytes)
        if msg is not None and self._admit is not None and (why := self._admit(raw.pipe, msg)):
            return self._bad(why)
        return msg

    def _decode(self, frame: bytes) -> m.Message | None:
        start = 1 + (frame[0] if frame else 0)
        if len(frame) <= start + TRAILER.size:
            return self._bad(f"frame of {len(frame)} bytes is too short")
        view = memoryview(frame)
        try:
            msg = self._decoder.decode(view[start: -TRAILER.size])
        except UNDECODABLE as exc:
            return self._bad(str(exc))
        if view[1:start] != m.tag_of(type(msg)).encode():
            return self._bad(f"topic {bytes(view[1:start])!r} does not match the payload's type {type(msg).__name__}")
        if why := checked_numbers(msg):
            return self._bad(why)
        instance, seq = TRAILER.unpack(view[-TRAILER.size:])
        key = (instance, type(msg))
        last = self._last_seq.get(key)
        if last is not None and seq > last + 1:
            self.counters.dropped += seq - last - 1
        self._last_seq[key] = seq
        self.counters.received += 1
        lag_ms = (time.time_ns() - msg.ts_ns) / 1e6
        self.counters.lag_ms = lag_ms
        if lag_ms > self.counters.lag_ms_max:
            self.counters.lag_ms_max = lag_ms
        return msg

    def _bad(self, why: str) -> None:
        self.counters.undecodable += 1
        if self._on_bad_frame is not None:
            self._on_bad_frame(self.name, why)
        return None

    def recv_batch(self, timeout_ms: int, limit: int = 1024) -> list[m.Message]:
        """Wait up to ``timeout_ms`` for a frame, then take whatever else is already queued (up to ``limit``)."""
        self.socket.recv_timeout = timeout_ms
        try:
            frames = [self.socket.recv_msg()]
        except pynng.Timeout:
            return []
        while len(frames) < limit:
            try:
                frames.append(self.socket.recv_msg(block=False))
            except pynng.TryAgain:
                break
        return [msg for f in frames if (msg := self._take(f)) is not None]

    def drain(self) -> list[m.Message]:
        """Everything queued right now, without waiting."""
        out: list[m.Message] = []
        while True:
            try:
                frame = self.socket.recv_msg(block=False)
            except (pynng.TryAgain, pynng.Closed):
                return out
            if (msg := self._take(frame)) is not None:
                out.append(msg)

    def recv(self, timeout_ms: int) -> m.Message:
        """One message, or ``BusTimeout`` (undecodable frames are skipped and counted)."""
        deadline = time.monotonic() + timeout_ms / 1000
        while (left := deadline - time.monotonic()) > 0:
            self.socket.recv_timeout = max(1, int(left * 1000))
            try:
                frame = self.socket.recv_msg()
            except pynng.Timeout:
                break
            if (msg := self._take(frame)) is not None:
                return msg
        raise BusTimeout(f"{self.name}: nothing received in {timeout_ms} ms")


class Requester:
    """REQ to one control address. ``request`` returns within its timeout or raises ``BusTimeout`` (or ``BusError``
    when the transport fails otherwise)."""

    def __init__(self, address: str, timeout_ms: int = 2000, max_frame: int = MAX_FRAME) -> None:
        self.address = address
        self.timeout_ms = timeout_ms
        self._socket = pynng.Req0(recv_max_size=nng_limit(max_frame), **REDIAL, **_tls(address, "client"))
        self._socket.dial(address, block=False)  # the service may not be up yet: keep dialling in the background
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(m.ControlReply)
        self._lock = threading.Lock()

    def request(self, req: m.Message, timeout_ms: int | None = None) -> m.Message:
        timeout = self.timeout_ms if timeout_ms is None else timeout_ms
        # The socket itself, not a pynng Context: a Context's send/recv wait without any timeout.
        with self._lock:
            deadline = time.monotonic() + timeout / 1000
            try:
                self._socket.send_timeout = timeout
                self._socket.send(self._encoder.encode(req))
                self._socket.recv_timeout = max(1, int((deadline - time.monotonic()) * 1000))
                raw = self._socket.recv_msg().bytes
            except pynng.Timeout:
                raise BusTimeout(f"no reply from {self.address} within {timeout} ms") from None
            except pynng.NNGException as exc:  # any other transport failure: no answer either
                raise BusError(f"no reply from {self.address}: {exc}") from None
        try:
            reply = self._decoder.decode(raw)
        except UNDECODABLE as exc:
            raise BusError(f"undecodable reply from {self.address}: {exc}") from None
        if why := checked_numbers(reply):
            raise BusError(f"untrustworthy reply from {self.address}: {why}")
        return reply

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> Requester:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Replier:
    """REP on a control address, served by a thread; ``handler`` maps a request to its reply.

    Replies are sent blocking (with a timeout): a non-blocking REP send that
    fails loses the reply and leaves the requester hanging.
    """

    def __init__(self, address: str, counters: m.SocketCounters, send_timeout_ms: int = 1000,
                 on_bad_frame: Callable[[str, str], None] | None = None, max_frame: int = MAX_FRAME) -> None:
        self.address = address
        self.counters = counters
        self.max_frame = max_frame
        self._socket = pynng.Rep0(recv_max_size=nng_limit(max_frame), send_timeout=send_timeout_ms, **_tls(address, "server"))
        try:
            self._socket.listen(address)
        except pynng.AddressInUse:
            self._socket.close()
            raise BusError(f"control address {address} is in use: is this service already running?") from None
        except pynng.NNGException as exc:
            self._socket.close()
            raise BusError(f"control: cannot bind {address}: {exc} (does its folder exist?)") from None
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(m.ControlRequest)
        self._on_bad_frame = on_bad_frame
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def serve(self, handler: Callable[[m.Message], m.Message], name: str = "control") -> None:
        self._thread = threading.Thread(target=self._serve, args=(handler,), name=name, daemon=True)
        self._thread.start()

    def _serve(self, handler: Callable[[m.Message], m.Message]) -> None:
        self._socket.recv_timeout = READER_POLL_MS
        while not self._stop.is_set():
            try:
                frame = self._socket.recv_msg().bytes
            except pynng.Timeout:
                continue
            except pynng.Closed:
                return
            reply = self._answer(frame, handler)
            encoded = self._encoder.encode(reply)
            if len(encoded) > self.max_frame:  # the requester would never get it: an error that says so instead
                self._oversized(len(encoded))
                encoded = self._encoder.encode(m.Error(request_id=getattr(reply, "request_id", ""), message=(
                    f"the reply ({type(reply).__name__}) is {len(encoded)} bytes, over the bus's cap of "
                    f"{self.max_frame} bytes: ask for less (a smaller page or max_rows), or raise bus.max_frame_bytes")))
            try:
                self._socket.send(encoded)
                self.counters.sent += 1
            except (pynng.Timeout, pynng.Closed):
                self.counters.dropped += 1

    def _report(self, why: str) -> None:
        if self._on_bad_frame is not None:
            self._on_bad_frame(CONTROL, why)

    def _oversized(self, size: int) -> str:
        """A request or reply over the cap: counted and reported; returns why."""
        self.counters.oversized += 1
        why = over_cap(size, self.max_frame)
        self._report(why)
        return why

    def _answer(self, frame: bytes, handler: Callable[[m.Message], m.Message]) -> m.Message:
        if len(frame) > self.max_frame:
            return m.Error(request_id="", message=f"request refused: {self._oversized(len(frame))}")
        try:
            req = self._decoder.decode(frame)
            why = checked_numbers(req)
        except UNDECODABLE as exc:
            why = str(exc)
        if why:
            self.counters.undecodable += 1
            self._report(why)
            return m.Error(request_id="", message=f"undecodable request: {why}")
        self.counters.received += 1
        try:
            return handler(req)
        except Exception as exc:  # the requester must always get an answer
            return m.Error(request_id=req.id, message=f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=READER_POLL_MS / 1000 * 5)
        self._socket.close()


class Bus:
    """The sockets one process holds, made from the config's addresses and the taxonomy."""

    def __init__(self, config: Config, on_bad_frame: Callable[[str, str], None] | None = None) -> None:
        self.config = config
        self.counters: dict[str, m.SocketCounters] = {}
        self._sockets: list[Counted] = []
        self._on_bad_frame = on_bad_frame
        self.refused: list[str] = []  # tls: peers whose certificate a socket's role does not allow, as they came
        self.max_frame = config.bus.max_frame_bytes

    def _counters(self, name: str) -> m.SocketCounters:
        return self.counters.setdefault(name, m.SocketCounters())

    def outbound(self, name: str) -> Outbound:
        """The sending end of ``name``: a bound PUB, or a PUSH dialling the binder."""
        spec = TAXONOMY[name]
        address = socket_address(self.config, name)
        buf = self.config.bus.buffer
        if spec.fanout:
            sock = pynng.Pub0(send_buffer_size=buf, send_timeout=self.config.bus.send_timeout_ms,
                              **_tls(address, "server"))
            _listen(sock, address, name)
        else:
            sock = pynng.Push0(send_buffer_size=buf, send_timeout=self.config.bus.send_timeout_ms, **REDIAL,
                               **_tls(address, "client"))
            sock.dial(address, block=False)
        out = Outbound(name, sock, self._counters(name), spec.union, self.max_frame, self._on_bad_frame)
        self._sockets.append(out)
        return out

    def inbound(self, name: str, only: Iterable[type[m.Message]] | None = None) -> Inbound:
        """The receiving end of ``name``: a SUB dialling the publisher (filtered to ``only``), or a bound PULL."""
        spec = TAXONOMY[name]
        address = socket_address(self.config, name)
        buf = self.config.bus.buffer
        admit = None
        if spec.fanout:
            sock = pynng.Sub0(recv_buffer_size=buf, recv_max_size=nng_limit(self.max_frame), recv_timeout=self.config.bus.recv_timeout_ms,
                              **REDIAL, **_tls(address, "client"))
            wanted = tuple(only) if only is not None else spec.types
            for kind in wanted:
                if kind not in spec.types:
                    sock.close()
                    raise BusError(f"{name}: {kind.__name__} does not travel on this socket")
                sock.subscribe(topic(kind))
            sock.dial(address, block=False)
        else:
            if only is not None:
                raise BusError(f"{name}: PULL sockets take every message; type filters are for fan-out sockets")
            sock = pynng.Pull0(recv_buffer_size=buf, recv_max_size=nng_limit(self.max_frame), recv_timeout=self.config.bus.recv_timeout_ms,
                               **_tls(address, "server"))
            # tls: only the peers this socket's role allows (orders: risk alone)
            admit = tls.admission(self.config, name, sock, self.refused) if tls.uses_tls(address) else None
            _listen(sock, address, name)
        inbound = Inbound(name, sock, self._counters(name), spec.union, self._on_bad_frame, admit, self.max_frame)
        self._sockets.append(inbound)
        return inbound

    def replier(self, service: str) -> Replier:
        rep = Replier(control_address(self.config, service), self._counters(CONTROL),
                      self.config.bus.send_timeout_ms, self._on_bad_frame, self.max_frame)
        return rep

    def requester(self, service: str, timeout_ms: int = 2000) -> Requester:
        return Requester(control_address(self.config, service), timeout_ms, self.max_frame)

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()


def _tls(address: str, mode: str) -> dict[str, Any]:
    """The socket's TLS configuration when its address is tls+tcp://: this process's certificate, the mesh's CA."""
    if not tls.uses_tls(address):
        return {}
    try:
        return {"tls_config": tls.server() if mode == "server" else tls.client()}
    except tls.TLSError as exc:
        raise BusError(str(exc)) from None


def _listen(sock: pynng.Socket, address: str, name: str) -> None:
    try:
        sock.listen(address)
    except pynng.AddressInUse:
        sock.close()
        raise BusError(f"{name}: {address} is in use; another process already binds this socket") from None
    except pynng.NNGException as exc:
        sock.close()
        raise BusError(f"{name}: cannot bind {address}: {exc} (does its folder exist?)") from None
