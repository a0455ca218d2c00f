"""Messages: every type sampled, round-trips on its socket's decoder, filterable by prefix, evolvable."""
from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

from services import messages as m
from services.bus import TAXONOMY, encode_frame, topic

from .samples import all_message_types, samples

UNIONS = {**{name: spec.union for name, spec in TAXONOMY.items()},
          "control request": m.ControlRequest, "control reply": m.ControlReply}
SAMPLES = samples()


def unions_of(cls: type[m.Message]) -> list[str]:
    return [name for name, union in UNIONS.items() if cls in m.members(union)]


def by_name(classes) -> list:
    return sorted(classes, key=lambda cls: cls.__name__)


def test_every_message_type_has_a_sample():
    missing = {cls.__name__ for cls in all_message_types()} - {cls.__name__ for cls in SAMPLES}
    assert not missing, f"add a sample to tests/samples.py for: {sorted(missing)}"


@pytest.mark.parametrize("cls", by_name(all_message_types()), ids=lambda cls: cls.__name__)
def test_every_message_type_travels_in_at_least_one_union(cls):
    assert unions_of(cls), f"{cls.__name__} is in no socket's union"


@pytest.mark.parametrize("cls", by_name(SAMPLES), ids=lambda cls: cls.__name__)
def test_every_sample_round_trips_through_the_decoder_of_each_union_it_travels_in(cls):
    sample = SAMPLES[cls]
    wire = msgspec.msgpack.encode(sample)
    for name in unions_of(cls):
        decoded = msgspec.msgpack.Decoder(UNIONS[name]).decode(wire)
        assert type(decoded) is cls and decoded == sample, name


def frame(msg: m.Message) -> bytes:
    return encode_frame(msgspec.msgpack.Encoder(), msg, instance=1, seq=1)


@pytest.mark.parametrize("cls", by_name(SAMPLES), ids=lambda cls: cls.__name__)
def test_every_frame_starts_with_its_types_topic(cls):
    assert frame(SAMPLES[cls]).startswith(topic(cls))


@pytest.mark.parametrize("name", UNIONS)
def test_no_types_topic_starts_another_types_frame_in_the_same_union(name):
    members = m.members(UNIONS[name])
    for sub in members:
        for other in members:
            if other is not sub:
                assert not frame(SAMPLES[other]).startswith(topic(sub)), (sub, other)


def test_messages_are_frozen():
    beat = SAMPLES[m.Heartbeat]
    with pytest.raises(AttributeError):
        beat.seq = 8  # type: ignore[misc]
    assert beat.seq == 7


class Heartbeat(m.Message, frozen=True, kw_only=True, tag="Heartbeat"):
    """A newer Heartbeat: one more field, with a default."""

    service: str
    pid: int
    seq: int
    load: float = 0.25


def test_a_newer_version_with_an_extra_field_still_decodes_with_the_current_decoder():
    newer = Heartbeat(service="scanner", pid=9, seq=3, load=0.9, trace_id="t-new")
    decoded = msgspec.msgpack.Decoder(m.PricesMsg).decode(msgspec.msgpack.encode(newer))
    assert decoded == m.Heartbeat(id=newer.id, ts_ns=newer.ts_ns, trace_id="t-new", service="scanner", pid=9, seq=3)


def test_an_old_encoding_decodes_with_the_newer_class_filling_the_default():
    old = SAMPLES[m.Heartbeat]
    decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(old), type=Heartbeat)
    assert (decoded.id, decoded.trace_id, decoded.service, decoded.seq, decoded.load) == (
        old.id, old.trace_id, "scanner", 7, 0.25)


def test_a_newer_versions_frame_still_starts_with_the_current_topic():
    assert frame(Heartbeat(service="scanner", pid=9, seq=3)).startswith(topic(m.Heartbeat))


def test_new_ids_are_unique_and_messages_get_distinct_ids_by_default():
    ids = [m.new_id() for _ in range(50_000)]
    assert len(set(ids)) == len(ids)
    first, second = m.HaltRequest(), m.HaltRequest()
    assert len({first.id, first.trace_id, second.id, second.trace_id}) == 4


def test_a_child_message_that_passes_trace_id_keeps_it():
    signal = SAMPLES[m.Signal]
    child = m.Order(signal_id=signal.id, leg=0, source=signal.source, token_id="t1", market="0x311d", side="BUY",
                    size=Decimal("10"), limit_price=Decimal("0.45"), trace_id=signal.trace_id)
    decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(child), type=m.OrdersMsg)
    assert decoded.trace_id == signal.trace_id and decoded.id not in (signal.id, signal.trace_id)


@pytest.mark.parametrize("price, size", [(Decimal("0.0001"), Decimal("3149725.72")),
                                         (Decimal("0.1") + Decimal("0.2"), Decimal("123456789012345.000001"))])
def test_decimal_prices_and_sizes_survive_exactly(price, size):
    trade = m.LastTrade(token_id="t1", market="0xdd22", price=price, size=size, side="SELL")
    wire = msgspec.msgpack.encode(trade)
    decoded = msgspec.msgpack.Decoder(m.PricesMsg).decode(wire)
    assert (decoded.price, decoded.size) == (price, size)
    assert (str(decoded.price), str(decoded.size)) == (str(price), str(size))
    assert str(size).encode() in wire  # carried as text, never a float
