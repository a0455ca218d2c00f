"""Property-based fuzzing (hypothesis) of everything that takes bytes or values from outside: the bus decoders of
every socket, the venue's payload decoders and conversions, the executor's journal reader, risk's check of a
signal, and the MCP tools' input models. No exception escapes as a crash: a bad input is counted or refused with
a reason, and what is let in has every number finite and in range. Bounded examples, no processes: seconds."""
from __future__ import annotations

import json
import math
import queue
import threading
from decimal import Decimal as D
from typing import Any

import msgspec
import pydantic
import pynng
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from polybot_mcp.models import LegIn
from polybot_mcp.server import argument_errors, build
from services import messages as m
from services.bus import TAXONOMY, TRAILER, Bus, BusError, Inbound, Requester, checked_numbers, encode_frame, topic
from services.config import ensure_state_dir, load
from services.executor.desk import Desk
from services.executor.journal import Submitting, Taken, out_of_range, read
from services.risk.engine import RiskEngine
from services.risk.limits import AgentLimits, Limits
from services.venues.polymarket import client, feed, schema, user

from .test_wire_schema import FIXTURES

# No shrinking: a failure is reported as found (shrinking a nested message can take minutes), the suite stays fast.
FAST = settings(max_examples=40, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
T0 = 1_700_000_000_000_000_000
# What the feeds count as a bad frame, and what the REST client turns into a VenueError (client.Clob._call).
BAD_FRAME = (msgspec.DecodeError, msgspec.ValidationError, ValueError)
BAD_ANSWER = (msgspec.ValidationError, KeyError, TypeError, ValueError)

NASTY_TEXT = ["NaN", "sNaN", "-NaN", "Infinity", "-Infinity", "inf", "1e26", "1E+999999", "-1", "0", "", " ",
              "abc", "0x10", "1e-999999", "9" * 400, "1_000", "１"]
numbers_as_text = st.one_of(st.sampled_from(NASTY_TEXT), st.decimals().map(str), st.integers().map(str),
                            st.floats().map(repr))
json_values = st.one_of(numbers_as_text, st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                        st.floats(allow_nan=False), st.text(max_size=6), st.lists(st.integers(), max_size=2),
                        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def leaves(value: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in leaves(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in leaves(v, (*path, i))]
    return [path]


def replaced(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: replaced(value[head], rest, new)}
    return [replaced(v, rest, new) if i == head else v for i, v in enumerate(value)]


def mutated(data: st.DataObject, value: Any, values: st.SearchStrategy = json_values) -> Any:
    """``value`` with up to three of its leaves replaced (mostly by numbers that are not numbers) or dropped."""
    paths = leaves(value)
    for _ in range(data.draw(st.integers(0, 3))):
        path = data.draw(st.sampled_from(paths))
        value = replaced(value, path, data.draw(values))
    return value


# ---------------------------------------------------------------- the bus


def bytes_mutated(data: st.DataObject, frame: bytes) -> bytes:
    """A frame as sent, or with bytes flipped, cut or inserted (what a corrupt or hostile peer sends)."""
    match data.draw(st.sampled_from(["as sent", "flip", "cut", "insert", "random"])):
        case "flip" if frame:
            at = data.draw(st.integers(0, len(frame) - 1))
            return frame[:at] + bytes([frame[at] ^ data.draw(st.integers(1, 255))]) + frame[at + 1:]
        case "cut":
            return frame[:data.draw(st.integers(0, len(frame)))]
        case "insert":
            at = data.draw(st.integers(0, len(frame)))
            return frame[:at] + data.draw(st.binary(max_size=8)) + frame[at:]
        case "random":
            return data.draw(st.binary(max_size=64))
    return frame


def every_field(cls: type) -> st.SearchStrategy:
    """``cls`` with every field drawn (hypothesis would pass a default factory itself as the value)."""
    return st.builds(cls, **{f.name: st.deferred(lambda t=f.type: st.from_type(t))
                             for f in msgspec.structs.fields(cls)})


for _cls in [c for c in vars(m).values() if isinstance(c, type) and issubclass(c, msgspec.Struct)] + [Taken,
                                                                                                    Submitting]:
    st.register_type_strategy(_cls, every_field(_cls))


def any_message(types: tuple[type, ...]) -> st.SearchStrategy:
    return st.one_of(*(st.from_type(t) for t in types))


@pytest.fixture(scope="module")
def inbounds(tmp_path_factory) -> dict[str, Inbound]:
    """A receiving end of each socket, on a real NNG socket (nothing dials it: the test hands it frames)."""
    out = {name: Inbound(name, pynng.Pull0(), m.SocketCounters(), spec.union) for name, spec in TAXONOMY.items()}
    yield out
    for inbound in out.values():
        inbound.close()


@pytest.mark.parametrize("socket", list(TAXONOMY))
@FAST
@given(data=st.data())
def test_every_sockets_decoder_counts_a_bad_frame_and_lets_in_only_messages_whose_numbers_are_numbers(
        inbounds: dict[str, Inbound], socket: str, data: st.DataObject) -> None:
    inbound = inbounds[socket]
    msg = data.draw(any_message(TAXONOMY[socket].types))
    try:
        frame = encode_frame(msgspec.msgpack.Encoder(), msg, 1, 1)
    except OverflowError:  # an int beyond 64 bits: it cannot be sent at all
        frame = topic(type(msg)) + data.draw(st.binary(max_size=32)) + TRAILER.pack(1, 1)
    frame = bytes_mutated(data, frame)
    bad = inbound.counters.undecodable
    decoded = inbound._decode(frame)
    if decoded is None:
        assert inbound.counters.undecodable == bad + 1
        return
    assert type(decoded) in TAXONOMY[socket].types
    assert checked_numbers(decoded) == ""
    if not isinstance(decoded, m.ANSWERED_BY_RISK):
        assert m.number_fault(decoded) == ""


def numbers_in(value: Any, name: str = "") -> list[tuple[str, D | float]]:
    """Every Decimal and float in a message with the name of the field that holds it."""
    if isinstance(value, D | float):
        return [(name, value)]
    if isinstance(value, msgspec.Struct):
        return [x for f in value.__struct_fields__ for x in numbers_in(getattr(value, f), f)]
    if isinstance(value, list | dict):
        return [x for item in (value.values() if isinstance(value, dict) else value) for x in numbers_in(item, name)]
    return []


def trusted(name: str, value: D | float) -> bool:
    if isinstance(value, float):  # a duration, a rate, a lag, a figure: finite
        return math.isfinite(value)
    if not value.is_finite():
        return False
    if name in m.PRICES:
        return 0 <= value <= 1
    return name not in m.QUANTITIES or abs(value) <= m.MAX_QUANTITY


ALL_MESSAGES = tuple(c for c in vars(m).values() if isinstance(c, type) and issubclass(c, m.Message)
                     and c is not m.Message)


@FAST
@given(msg=any_message(ALL_MESSAGES))
def test_a_message_is_trusted_exactly_when_every_number_in_it_is_finite_and_in_its_range(msg: m.Message) -> None:
    bad = [(name, value) for name, value in numbers_in(msg) if not trusted(name, value)]
    why = m.number_fault(msg)
    assert bool(why) == bool(bad), (why, bad)
    if bad:
        assert f" = {bad[0][1]} is " in why


@pytest.fixture(scope="module")
def control(tmp_path_factory) -> tuple[Bus, Any]:
    root = tmp_path_factory.mktemp("control")
    config = load(None, {"POLYBOT_STATE_DIR": str(root), "HOME": str(root)})
    ensure_state_dir(config)
    bus = Bus(config)
    replier = bus.replier("fuzz")
    replier.serve(lambda req: m.Ok(request_id=req.id))
    raw = pynng.Req0(dial=replier.address, send_timeout=5000, recv_timeout=5000)
    yield bus, raw, replier
    raw.close()
    replier.close()
    bus.close()


@FAST
@given(data=st.data())
def test_the_control_replier_answers_every_request_however_bad_and_counts_the_bad_ones(control, data) -> None:
    bus, raw, replier = control
    msg = data.draw(any_message(m.members(m.ControlRequest)))
    try:
        frame = msgspec.msgpack.encode(msg)
    except OverflowError:
        frame = data.draw(st.binary(max_size=32))
    bad = replier.counters.undecodable
    raw.send(bytes_mutated(data, frame))
    reply = msgspec.msgpack.decode(raw.recv(), type=m.ControlReply)
    if isinstance(reply, m.Error):
        assert replier.counters.undecodable == bad + 1 and reply.message.startswith("undecodable request: ")
    else:
        assert isinstance(reply, m.Ok) and replier.counters.undecodable == bad


@pytest.fixture(scope="module")
def answering(tmp_path_factory) -> tuple[Requester, queue.Queue]:
    """A Requester, and a raw REP that answers each of its requests with the next frame the test queues."""
    address = f"ipc://{tmp_path_factory.mktemp('requester')}/r.ipc"
    rep = pynng.Rep0(listen=address, recv_timeout=200, send_timeout=5000)
    frames: queue.Queue[bytes] = queue.Queue()

    def serve() -> None:
        while True:
            try:
                rep.recv()
            except pynng.Timeout:
                continue
            except pynng.Closed:
                return
            rep.send(frames.get(timeout=5))
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    req = Requester(address, 5000)
    yield req, frames
    req.close()
    rep.close()
    thread.join(2)


@FAST
@given(data=st.data())
def test_a_requester_given_any_reply_returns_one_whose_numbers_are_numbers_or_says_why_not(answering, data) -> None:
    req, frames = answering
    msg = data.draw(any_message(m.members(m.ControlReply)))
    try:
        frame = msgspec.msgpack.encode(msg)
    except OverflowError:
        frame = data.draw(st.binary(max_size=32))
    frames.put(bytes_mutated(data, frame))
    try:
        reply = req.request(m.StatusRequest())
    except BusError as exc:
        assert "reply from" in str(exc)
    else:
        assert m.number_fault(reply) == ""


# ---------------------------------------------------------------- the venue's payloads


def capture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_bytes())


MARKET_FRAMES = ["ws_book_snapshot_captured.json", "ws_market_price_change_crossing_burst.json",
                 "ws_market_last_trade_msg.json", "ws_market_tick_size_msg.json", "ws_market_best_bid_ask_msg.json",
                 "ws_market_new_market_msg.json", "ws_market_resolved_msg.json"]
USER_FRAMES = ["ws_user_order_placement.json", "ws_user_order_update.json", "ws_user_order_cancellation.json",
               "ws_user_order_fok_killed.json", "ws_user_trade_full.json"]


def json_frame(data: st.DataObject, names: list[str]) -> bytes:
    frame = mutated(data, capture(data.draw(st.sampled_from(names))))
    return bytes_mutated(data, json.dumps(frame).encode())


def venue_numbers_sane(*values: Any) -> None:
    """What a conversion lets in: every number finite, every price in [0, 1], every size within any market."""
    for v in values:
        assert m.number_fault(v) == "" if isinstance(v, msgspec.Struct) else True
        for name in ("price", "size", "matched", "fee_rate"):
            number = getattr(v, name, None)
            if isinstance(number, D):
                assert number.is_finite() and abs(number) <= m.MAX_QUANTITY, (name, v)
                assert name != "price" or 0 <= number <= 1, v


@FAST
@given(data=st.data())
def test_a_market_channel_frame_becomes_messages_with_numbers_or_is_a_bad_frame(data) -> None:
    try:
        prices, events = feed.normalize(schema.decode_market_frame(json_frame(data, MARKET_FRAMES)), T0)
    except BAD_FRAME:
        return
    encoder = msgspec.msgpack.Encoder()
    for msg in prices + events:
        assert m.number_fault(msg) == ""
        encoder.encode(msg)  # it can be sent on the bus


@FAST
@given(data=st.data())
def test_a_user_channel_frame_becomes_events_with_numbers_or_is_a_bad_frame(data) -> None:
    try:
        events = user.events_of(json_frame(data, USER_FRAMES), "key", "0xme")
    except BAD_FRAME:
        return
    venue_numbers_sane(*events)
    assert all(0 <= getattr(e, "ts_ms", getattr(e, "created_ms", 0)) < 2**63 for e in events)


@FAST
@given(data=st.data())
def test_a_gamma_market_becomes_a_market_with_numbers_or_is_skipped(data) -> None:
    raw = mutated(data, capture(data.draw(st.sampled_from(["gamma_market_live.json",
                                                            "gamma_market_crypto_twap.json"]))))
    try:
        market = feed.market_new(msgspec.json.decode(json.dumps(raw), type=schema.GammaMarket), T0)
    except BAD_FRAME:
        return
    assert m.number_fault(market) == ""
    msgspec.msgpack.encode(market)


@FAST
@given(data=st.data())
def test_rest_answers_become_orders_fills_balances_and_rules_with_numbers_or_a_venue_error(data) -> None:
    orders = mutated(data, capture("http_open_orders_page.json"))
    trades = mutated(data, capture("http_trades_page.json"))
    balance = {"balance": data.draw(numbers_as_text),
               "allowances": {"a": data.draw(numbers_as_text), "b": str(2**256 - 1)}}
    info = {"c": "mk", "t": [{"t": "tok", "o": "Yes"}], "mts": data.draw(st.floats()),
            "mos": data.draw(st.floats() | st.none()),
            "fd": {"r": data.draw(st.floats()), "e": data.draw(st.floats())}}
    for convert in (lambda: [user.order_of(o) for o in msgspec.convert(orders["data"], list[schema.OpenOrder])],
                    lambda: [f for t in msgspec.convert(trades["data"], list[schema.ClobTrade])
                             for f in user.fills_of(t, "key", "0xme")],
                    lambda: [client.balance_of(msgspec.convert(balance, schema.BalanceAllowance))],
                    lambda: [client.rules_of(msgspec.convert(info, schema.ClobMarketInfo), "tok", "mk")]):
        try:
            got = convert()
        except BAD_ANSWER:  # the client's _call makes it a VenueError: the answer is not trusted
            continue
        venue_numbers_sane(*got)
        for rules in got:
            for name in ("tick", "min_size", "fee_rate", "fee_exponent"):
                number = getattr(rules, name, D(0))
                assert number.is_finite() and 0 <= number <= m.MAX_QUANTITY


# ---------------------------------------------------------------- the journal


def journal_line(data: st.DataObject) -> bytes:
    record = data.draw(st.one_of(any_message(m.members(m.ExecutionsMsg)), st.from_type(Taken),
                                 st.from_type(Submitting)))
    try:
        line = msgspec.json.encode(record)
    except (OverflowError, TypeError):
        line = data.draw(st.binary(max_size=40))
    return bytes_mutated(data, line)


@FAST
@given(data=st.data())
def test_the_journal_reader_skips_every_untrustworthy_line_with_why_and_the_desk_replays_the_rest(data) -> None:
    lines = [journal_line(data) for _ in range(data.draw(st.integers(1, 4)))]
    torn = data.draw(st.booleans())
    records, skipped = read(b"\n".join(lines) + (b"" if torn else b"\n"))
    assert len(records) + len(skipped) <= len(lines) + sum(line.count(b"\n") for line in lines)
    assert all(s.reason for s in skipped)
    for record in records:
        assert out_of_range(record) == "" and m.number_fault(record) == ""
    Desk([].append, [].append, lambda: T0).restore(records)


# ---------------------------------------------------------------- risk


@pytest.fixture(scope="module")
def engine() -> RiskEngine:
    """Risk with one market followed and its book in."""
    engine = RiskEngine(Limits(), AgentLimits())
    engine.observe(m.MarketNew(market="mk", question="q?", outcomes=[m.Outcome(token_id="yes", name="Yes"),
                                                                      m.Outcome(token_id="no", name="No")]))
    engine.observe(m.BookSnapshot(books=[m.Book(token_id=t, market="mk", bids=[m.Level(D("0.4"), D(100))],
                                                asks=[m.Level(D("0.6"), D(100))]) for t in ("yes", "no")]))
    return engine


@FAST
@given(data=st.data())
def test_risk_answers_any_signal_with_a_verdict_never_an_exception(engine: RiskEngine, data) -> None:
    legs = data.draw(st.lists(st.builds(
        m.Leg, token_id=st.sampled_from(["yes", "no", "other"]), side=st.sampled_from(["BUY", "SELL"]),
        size=st.decimals() | st.sampled_from([D(5), D("10.5"), D("1e14"), D("1e26")]),
        limit_price=st.decimals() | st.sampled_from([D("0.5"), D("0.55"), D("1e-30"), D("0.999999999")]),
        order_type=st.sampled_from(["GTC", "GTD", "FOK", "FAK"]), post_only=st.booleans(),
        expires_s=st.integers(0, 2**63 - 1)), min_size=1, max_size=3))
    source = data.draw(st.sampled_from(["strategy:fuzz", "mcp:fuzz"]))
    reasons = engine.check(m.Signal(source=source, legs=legs), T0)
    bad = [leg for leg in legs if m.number_fault(leg)]
    if bad:
        assert reasons and all(r.code == "BAD_SIGNAL" for r in reasons)
    for reason in reasons:
        assert reason.message and m.number_fault(reason) == ""


# ---------------------------------------------------------------- MCP tool inputs


@pytest.fixture(scope="module")
def tool_models(tmp_path_factory) -> dict[str, type[pydantic.BaseModel]]:
    root = tmp_path_factory.mktemp("mcp")
    server = build(load(None, {"POLYBOT_STATE_DIR": str(root), "HOME": str(root)}))
    return {t.name: t.fn_metadata.arg_model for t in server._tool_manager.list_tools()}


leg_values = st.one_of(numbers_as_text, st.floats(), st.integers(), st.none(), st.text(max_size=5),
                       st.sampled_from(["$5", "45c", "5¢", " 10 USDC", "1,000", "BUY", "sell", "GTD", "2h"]))


def any_leg(data: st.DataObject) -> dict:
    keys = ["token_id", "market", "outcome", "side", "size", "notional", "limit_price", "order_type", "post_only",
            "expires"]
    base = {"token_id": "t", "side": "BUY", "size": "5", "limit_price": "0.5"}
    return {**base, **{k: data.draw(leg_values) for k in data.draw(st.lists(st.sampled_from(keys), max_size=3))}}


@FAST
@given(data=st.data())
def test_every_tools_arguments_are_taken_with_sane_numbers_or_refused_with_a_message(tool_models, data) -> None:
    name = data.draw(st.sampled_from(sorted(tool_models)))
    model = tool_models[name]
    fields = list(model.model_fields)
    args = {f: data.draw(st.one_of(leg_values, st.lists(st.builds(dict), max_size=1),
                                   st.lists(st.just(None), max_size=1).map(lambda _: [any_leg(data)])))
            for f in data.draw(st.lists(st.sampled_from(fields), max_size=4, unique=True))} if fields else {}
    try:
        taken = model.model_validate(args)
    except pydantic.ValidationError as exc:
        assert argument_errors(exc).startswith("invalid arguments: ")
        assert all(e["msg"] for e in exc.errors())
        return
    for value in _values(taken):
        if isinstance(value, D):
            assert value.is_finite() and abs(value) <= m.MAX_QUANTITY, (name, args)


@FAST
@given(data=st.data())
def test_a_leg_is_taken_with_a_sane_size_and_price_or_refused_with_a_message(data) -> None:
    raw = any_leg(data)
    try:
        leg = LegIn.model_validate(raw)
    except pydantic.ValidationError as exc:
        assert all(e["msg"] for e in exc.errors())
        return
    assert leg.limit_price.is_finite() and 0 < leg.limit_price < 1
    for amount in (leg.size, leg.notional):
        assert amount is None or (amount.is_finite() and 0 < amount <= m.MAX_QUANTITY)


def _values(model: Any) -> list[Any]:
    if isinstance(model, pydantic.BaseModel):
        return [x for name in type(model).model_fields for x in _values(getattr(model, name))]
    if isinstance(model, list | tuple):
        return [x for item in model for x in _values(item)]
    return [model]
