"""The bus between real processes: every message type crosses its socket and decodes equal; filters; bad frames."""
from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import msgspec
import pynng
import pytest

from services import messages as m
from services.bus import TAXONOMY, TRAILER, Bus, BusTimeout, encode_frame, topic
from services.config import ensure_state_dir, load

from .conftest import Mesh, child_env, only, wait_for
from .samples import samples

SAMPLES = samples()


def _config(state_dir: Path):
    config = load(None, {"POLYBOT_STATE_DIR": str(state_dir), "HOME": str(state_dir)})
    ensure_state_dir(config)
    return config


def _peer(state_dir: Path, socket: str, count: int, *types: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "tests.peer", str(state_dir), socket, str(count), *types],
                            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stderr.readline().strip() == b"READY", proc.stderr.read().decode()
    return proc


def _results(proc: subprocess.Popen, union) -> list[m.Message]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    decoder = msgspec.msgpack.Decoder(union)
    msgs, at = [], 0
    while at < len(out):
        (size,) = struct.unpack_from(">I", out, at)
        msgs.append(decoder.decode(out[at + 4: at + 4 + size]))
        at += 4 + size
    return msgs


@pytest.mark.parametrize("socket", [name for name, spec in TAXONOMY.items() if spec.fanout])
def test_every_type_crosses_pub_sub_to_another_process_and_decodes_equal(state_dir: Path, socket: str) -> None:
    spec = TAXONOMY[socket]
    sent = [SAMPLES[t] for t in spec.types]
    bus = Bus(_config(state_dir))
    pub = bus.outbound(socket)
    peer = _peer(state_dir, socket, len(sent))
    wait_for(lambda: pub.socket.pipes, what="the subscriber to connect")
    for msg in sent:
        assert pub.send(msg)
    assert _results(peer, spec.union) == sent
    bus.close()


@pytest.mark.parametrize("socket", [name for name, spec in TAXONOMY.items() if not spec.fanout])
def test_every_type_crosses_push_pull_to_another_process_and_decodes_equal(state_dir: Path, socket: str) -> None:
    spec = TAXONOMY[socket]
    sent = [SAMPLES[t] for t in spec.types]
    peer = _peer(state_dir, socket, len(sent))
    bus = Bus(_config(state_dir))
    push = bus.outbound(socket)
    for msg in sent:
        assert push.send(msg)
    assert _results(peer, spec.union) == sent
    bus.close()


def test_every_control_request_crosses_req_rep_and_its_reply_comes_back(state_dir: Path) -> None:
    sent = [SAMPLES[t] for t in m.members(m.ControlRequest)]
    peer = _peer(state_dir, "control", len(sent))
    bus = Bus(_config(state_dir))
    with bus.requester("peer", timeout_ms=10_000) as req:
        replies = [req.request(msg) for msg in sent]
    assert _results(peer, m.ControlRequest) == sent
    assert [(r.request_id, r.detail) for r in replies] == [(s.id, type(s).__name__) for s in sent]


def test_a_sub_filtered_to_one_type_receives_only_that_type(state_dir: Path) -> None:
    bus = Bus(_config(state_dir))
    pub = bus.outbound("prices")
    peer = _peer(state_dir, "prices", 3, "LastTrade")
    wait_for(lambda: pub.socket.pipes, what="the subscriber to connect")
    trades = [msgspec.structs.replace(SAMPLES[m.LastTrade], id=f"trade-{i}") for i in range(3)]
    for trade in trades:  # every other type between the trades; the peer must see only the trades
        for other in (m.BookSnapshot, m.BookDelta, m.Heartbeat):
            pub.send(SAMPLES[other])
        pub.send(trade)
    assert _results(peer, m.PricesMsg) == trades
    bus.close()


def _garbage(kind: type[m.Message]) -> tuple[list[bytes], list[bytes]]:
    """(frames no SUB filter lets through, frames that start like a ``kind`` and reach the decoder)."""
    fields = {f: getattr(SAMPLES[kind], f) for f in kind.__struct_fields__}
    liar = next(t for t in SAMPLES if t is not kind and t not in m.members(m.ControlRequest))
    typed = [topic(kind) + b"\xc1" + TRAILER.pack(1, 1),  # 0xc1 is never valid msgpack
             topic(kind) + msgspec.msgpack.encode({"type": m.tag_of(kind), **fields, "id": 5}) + TRAILER.pack(1, 2),
             topic(kind) + msgspec.msgpack.encode(SAMPLES[liar]) + TRAILER.pack(1, 3),  # topic and payload disagree
             topic(kind)]  # cut short
    untyped = [b"", b"\x00", b"not msgpack at all" + bytes(TRAILER.size),
               msgspec.msgpack.encode({"type": "NoSuchType"}) + TRAILER.pack(1, 1)]
    return untyped, typed


def test_malformed_frames_on_every_socket_are_counted_and_skipped_while_the_service_keeps_working(
        mesh_factory) -> None:
    mesh: Mesh = mesh_factory(only('[services.tally]\nkind = "tests.mesh_services:Tally"\n'))
    config = load(mesh.config, {"HOME": str(mesh.state)})
    ensure_state_dir(config)
    bus = Bus(config)
    fanout = {name: bus.outbound(name) for name, spec in TAXONOMY.items() if spec.fanout}  # the test binds these
    mesh.start()
    wait_for(lambda: mesh.status().get("tally", {}).get("state") == "running", what="tally to run")
    for name, pub in fanout.items():
        wait_for(lambda: pub.socket.pipes, what=f"tally to subscribe to {name}")
    outs = {**fanout, **{name: bus.outbound(name) for name, spec in TAXONOMY.items() if not spec.fanout}}
    expected_bad = {}
    for name, out in outs.items():
        kind = TAXONOMY[name].types[0]
        untyped, typed = _garbage(kind)
        for frame in untyped + typed:
            out.send_raw(frame)
        # Frames that match no subscribed prefix never reach a SUB: NNG drops them before we see them.
        expected_bad[name] = len(typed) if TAXONOMY[name].fanout else len(untyped + typed)
        assert out.send(SAMPLES[kind])
    raw_req = pynng.Req0(dial=f"ipc://{mesh.state}/sock/control-tally.ipc", send_timeout=5000, recv_timeout=5000)
    untyped, typed = _garbage(m.StatusRequest)
    for frame in untyped + typed:
        raw_req.send(frame)
        reply = msgspec.msgpack.decode(raw_req.recv(), type=m.ControlReply)
        assert isinstance(reply, m.Error) and "undecodable" in reply.message
    raw_req.close()

    def all_counted() -> dict | None:
        tally = mesh.status()["tally"]
        seen = [tally["detail"].get(f"{name}.{m.tag_of(TAXONOMY[name].types[0])}") for name in outs]
        return tally if seen == ["1"] * len(outs) else None

    tally = wait_for(all_counted, what="the valid message after the garbage on every socket")
    assert {name: tally["sockets"][name]["undecodable"] for name in outs} == expected_bad
    assert tally["sockets"]["control"]["undecodable"] == len(untyped + typed)
    assert tally["state"] == "running" and tally["last_error"] == ""
    bus.close()


def test_a_publisher_never_blocks_on_a_subscriber_that_does_not_read_and_the_subscriber_counts_what_it_missed(
        state_dir: Path) -> None:
    config = _config(state_dir)
    config = msgspec.structs.replace(config, bus=msgspec.structs.replace(config.bus, buffer=16))
    bus = Bus(config)
    pub, sub = bus.outbound("prices"), bus.inbound("prices", [m.LastTrade])
    wait_for(lambda: pub.socket.pipes, what="the subscriber to connect")
    pub.send(msgspec.structs.replace(SAMPLES[m.LastTrade], id="first"))  # a gap is counted from a first frame on
    assert sub.recv(5000).id == "first"
    sent = 5000
    for i in range(sent):  # the subscriber reads nothing meanwhile; this must not block
        pub.send(msgspec.structs.replace(SAMPLES[m.LastTrade], id=str(i)))
    pub.send(msgspec.structs.replace(SAMPLES[m.LastTrade], id="last"))
    while sub.recv(5000).id != "last":
        pass
    counters = bus.counters["prices"]
    assert counters.received + counters.dropped == sent + 2
    assert counters.dropped > 0
    bus.close()


def test_a_push_with_nobody_pulling_counts_drops_instead_of_blocking(state_dir: Path) -> None:
    config = _config(state_dir)
    config = msgspec.structs.replace(config, bus=msgspec.structs.replace(config.bus, buffer=8))
    bus = Bus(config)
    push = bus.outbound("signals")
    results = [push.send(SAMPLES[m.Signal]) for _ in range(100)]
    assert results.count(False) == bus.counters["signals"].dropped > 0
    bus.close()


def test_a_message_on_the_wrong_socket_is_refused_before_it_is_sent(state_dir: Path) -> None:
    bus = Bus(_config(state_dir))
    push = bus.outbound("signals")
    with pytest.raises(Exception, match="does not travel on this socket"):
        push.send(SAMPLES[m.Order])
    assert bus.counters["signals"].sent == 0
    bus.close()


class NewerHeartbeat(m.Message, frozen=True, kw_only=True, tag="Heartbeat"):
    """A Heartbeat from a newer peer: one more field, with a default."""

    service: str
    pid: int
    seq: int
    load: float = 0.25


def test_a_newer_peers_message_with_an_added_field_passes_an_older_subscribers_filter_and_decodes(
        state_dir: Path) -> None:
    bus = Bus(_config(state_dir))
    pub, sub = bus.outbound("prices"), bus.inbound("prices", [m.Heartbeat])
    wait_for(lambda: pub.socket.pipes, what="the subscriber to connect")
    newer = NewerHeartbeat(service="scanner", pid=9, seq=3, load=0.9)
    pub.send_raw(encode_frame(msgspec.msgpack.Encoder(), newer, instance=7, seq=1))
    got = sub.recv(5000)
    assert got == m.Heartbeat(id=newer.id, ts_ns=newer.ts_ns, trace_id=newer.trace_id, service="scanner", pid=9, seq=3)
    bus.close()


def _capped(state_dir: Path, max_frame: int = 4096):
    config = _config(state_dir)
    return msgspec.structs.replace(config, bus=msgspec.structs.replace(config.bus, max_frame_bytes=max_frame))


def test_a_frame_over_the_size_cap_is_refused_where_it_is_sent_and_counted_where_it_arrives(state_dir: Path) -> None:
    config = _capped(state_dir)
    bus = Bus(config)
    bad: list[tuple[str, str]] = []
    sender = Bus(config, on_bad_frame=lambda socket, why: bad.append((socket, why)))
    pull, push = bus.inbound("signals"), sender.outbound("signals")
    big = msgspec.structs.replace(SAMPLES[m.Signal], rationale="x" * 5000)
    assert push.send(big) is False  # ours: refused at send, never put on the wire
    assert sender.counters["signals"].oversized == 1 and sender.counters["signals"].sent == 0
    assert bad == [("signals", bad[0][1])] and "over the bus's cap of 4096 bytes" in bad[0][1]
    # Someone else's: a frame over the cap (within NNG's own limit, twice it) arrives, is counted and skipped,
    # and the connection carries on.
    frame = encode_frame(msgspec.msgpack.Encoder(), big, 1, 1)
    push.send_raw(frame)
    assert push.send(SAMPLES[m.Signal])
    assert pull.recv(5000).id == SAMPLES[m.Signal].id
    assert bus.counters["signals"].oversized == 1 and bus.counters["signals"].undecodable == 0
    # Past twice the cap NNG cuts the connection without reading it: the receiver counts a disconnect, the
    # sender redials, and the next message arrives.
    disconnects = bus.counters["signals"].disconnects
    push.send_raw(b"y" * 3 * 4096)
    wait_for(lambda: bus.counters["signals"].disconnects > disconnects, what="NNG to cut the connection")
    later = msgspec.structs.replace(SAMPLES[m.Signal], id="later")

    def redialled() -> bool:  # a frame sent as the old connection is torn down is lost with it: send again
        push.send(later)
        try:
            return pull.recv(500).id == "later"
        except BusTimeout:
            return False
    wait_for(redialled, what="the redialled connection")
    sender.close()
    bus.close()


def test_a_control_request_or_reply_over_the_size_cap_is_answered_with_an_error_that_says_so(state_dir: Path) -> None:
    bus = Bus(_capped(state_dir))
    rep = bus.replier("peer")
    rep.serve(lambda request: m.Ok(request_id=request.id, detail="z" * 5000 if isinstance(request, m.QueryRequest)
                                   and request.name == "big" else "small"))
    with bus.requester("peer", timeout_ms=5000) as req:
        small = req.request(m.StatusRequest())
        assert isinstance(small, m.Ok) and small.detail == "small"
        asked = m.QueryRequest(name="big")
        reply = req.request(asked)  # the answer would be over the cap: an error in its place, for the same request
        assert isinstance(reply, m.Error) and reply.request_id == asked.id
        assert "reply (Ok) is" in reply.message and "over the bus's cap of 4096 bytes: ask for less" in reply.message
        reply = req.request(m.QueryRequest(sql="select 1 -- " + "q" * 5000))
        assert isinstance(reply, m.Error) and reply.message.startswith("request refused: frame of ")
    assert bus.counters["control"].oversized == 2
    rep.close()
    bus.close()
