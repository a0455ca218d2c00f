"""OpenTelemetry tracing (the ``otel`` extra): each hop of a trade is a span under its message's trace.

The ids are derived from our messages, so every process names the same trace and the same parents with no
new field on the wire: the OTel trace id is a 128-bit hash of the message's ``trace_id``, and a hop's span id
a 64-bit hash of ``"<hop>:<message id>"``. The hops and their parents:

    scanner   book message X     (a root)
    strategy  Signal S           parent: scanner span of S.cause_id
    risk      deciding S         parent: strategy span of S.id (an agent's signal is a root)
    executor  Order O            parent: risk span of O.signal_id

Sampling is by trace id, so every process keeps or drops the same trade. A span starts at the origin time of
the message that caused the hop (so it shows the time in transit too) and ends when the hop is done.
OpenTelemetry is imported only by ``setup``: the runtime imports this module only when tracing is enabled.
"""
from __future__ import annotations

import hashlib
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from types import SimpleNamespace
from typing import Any

from . import messages as m
from .config import Config
from .runtime import StartupError

EXPORT_TIMEOUT_S = 3.0  # the longest one export may take, retries included (the collector may be down)
SHUTDOWN_TIMEOUT_S = 3.0  # the longest a stopping service waits for its last spans to go out
SCHEDULE_DELAY_MS = 200  # spans leave at least this often: a trade is visible in a collector within a second
MAX_MARKETS = 16  # market ids listed on one span; a snapshot of every book names hundreds

SCANNER, STRATEGY, RISK, EXECUTOR = "scanner", "strategy", "risk", "executor"


def trace_id_of(trace_id: str) -> int:
    """The OTel trace id of one of our trace ids: the same in every process."""
    return int.from_bytes(hashlib.blake2b(trace_id.encode(), digest_size=16).digest(), "big") or 1


def span_id_of(hop: str, message_id: str) -> int:
    """The OTel span id of one hop's handling of one message: the next hop can name it as its parent."""
    return int.from_bytes(hashlib.blake2b(f"{hop}:{message_id}".encode(), digest_size=8).digest(), "big") or 1


class _Ids:
    """An OTel IdGenerator whose next ids are the ones we set; random ones for any span we did not start."""

    def __init__(self) -> None:
        self.trace_id = 0
        self.span_id = 0

    def generate_trace_id(self) -> int:
        trace_id, self.trace_id = self.trace_id, 0
        return trace_id or random.getrandbits(128) or 1

    def generate_span_id(self) -> int:
        span_id, self.span_id = self.span_id, 0
        return span_id or random.getrandbits(64) or 1

    def is_trace_id_random(self) -> bool:
        return False  # derived from our ids, not drawn at random (the W3C random-trace-id flag stays off)


def _markets(names: Iterable[str]) -> list[str]:
    return sorted({n for n in names if n})[:MAX_MARKETS]


class Tracer:
    """One process's spans: one method per hop, each called once the hop is done."""

    def __init__(self, provider: Any, ids: _Ids, otel: Any, clock: Callable[[], int]) -> None:
        self._provider = provider
        self._otel = otel  # the OpenTelemetry API names this module uses, imported by setup
        self._tracer = provider.get_tracer("polybot")
        self._ids = ids
        self._lock = threading.Lock()  # the ids set for a span are taken by that span only
        self._clock = clock

    # ------------------------------------------------------------ the hops

    def book(self, msg: m.BookSnapshot | m.BookDelta, sent: bool) -> None:
        """The scanner published one venue frame's books or level changes on ``prices``."""
        items: Sequence[m.Book | m.LevelChange] = msg.books if isinstance(msg, m.BookSnapshot) else msg.changes
        self._span(f"{SCANNER} publish", "PRODUCER", SCANNER, msg.id, msg.trace_id, None, msg.ts_ns, {
            "polybot.message": type(msg).__name__, "polybot.message_id": msg.id, "polybot.updates": len(items),
            "polybot.markets": _markets(i.market for i in items), "polybot.sent": sent})

    def signal(self, signal: m.Signal, sent: bool) -> None:
        """A strategy's signal went out on ``signals`` (``sent`` False: the queue to risk was full)."""
        parent = (SCANNER, signal.cause_id) if signal.cause_id else None
        self._span(f"{STRATEGY} signal", "PRODUCER", STRATEGY, signal.id, signal.trace_id, parent,
                   signal.cause_ts_ns or signal.ts_ns, {
                       **self._signal_attributes(signal), "polybot.cause_id": signal.cause_id,
                       "polybot.rationale": signal.rationale, "polybot.sent": sent})

    def decision(self, signal: m.Signal, verdict: m.SignalAccepted | m.SignalRejected | m.SignalPending) -> None:
        """Risk decided a signal: accepted (its orders went out), rejected, or pending a human's approval."""
        parent = (STRATEGY, signal.id) if signal.source.startswith("strategy:") else None
        attributes = {**self._signal_attributes(signal), "polybot.verdict": {
            m.SignalAccepted: "accepted", m.SignalRejected: "rejected", m.SignalPending: "pending"}[type(verdict)]}
        if isinstance(verdict, m.SignalAccepted):
            attributes["polybot.order_ids"] = [o.id for o in verdict.orders]
        elif isinstance(verdict, m.SignalRejected):
            attributes["polybot.reasons"] = [r.code for r in verdict.reasons]
        self._span(f"{RISK} decide", "CONSUMER", RISK, signal.id, signal.trace_id, parent, signal.ts_ns, attributes)

    def order(self, order: m.Order, status: str, venue_order_id: str = "", price: Any = None,
              submitted_ts_ns: int = 0, failure: str = "") -> None:
        """The executor is done sending one order (the venue answered, or it was refused before): its status now,
        and why the leg failed if it did (the span's error)."""
        attributes: dict[str, Any] = {
            "polybot.order_id": order.id, "polybot.signal_id": order.signal_id, "polybot.source": order.source,
            "polybot.leg": order.leg, "polybot.market": order.market, "polybot.token_id": order.token_id,
            "polybot.side": order.side, "polybot.size": str(order.size), "polybot.limit_price": str(order.limit_price),
            "polybot.order_type": order.order_type, "polybot.status": status}
        if venue_order_id:
            attributes["polybot.venue_order_id"] = venue_order_id
        if price is not None:
            attributes["polybot.price"] = str(price)
        if failure:
            attributes["polybot.failure"] = failure
        events = [("submitted", submitted_ts_ns)] if submitted_ts_ns else []
        self._span(f"{EXECUTOR} submit", "CLIENT", EXECUTOR, order.id, order.trace_id, (RISK, order.signal_id),
                   order.ts_ns, attributes, error=failure, events=events)

    @staticmethod
    def _signal_attributes(signal: m.Signal) -> dict[str, Any]:
        return {"polybot.signal_id": signal.id, "polybot.source": signal.source, "polybot.legs": len(signal.legs),
                "polybot.markets": _markets(leg.market for leg in signal.legs)}

    # ------------------------------------------------------------ spans

    def _span(self, name: str, kind: str, hop: str, message_id: str, trace_id: str, parent: tuple[str, str] | None,
              start_ns: int, attributes: dict[str, Any], error: str = "",
              events: Sequence[tuple[str, int]] = ()) -> None:
        otel = self._otel
        tid = trace_id_of(trace_id)
        if parent is None:
            context = otel.Context()  # a root: not whatever span happens to be current
        else:
            remote = otel.SpanContext(tid, span_id_of(*parent), is_remote=True,
                                      trace_flags=otel.TraceFlags(otel.TraceFlags.SAMPLED))
            context = otel.set_span_in_context(otel.NonRecordingSpan(remote))
        attributes["polybot.trace_id"] = trace_id
        with self._lock:
            self._ids.trace_id, self._ids.span_id = tid, span_id_of(hop, message_id)
            span = self._tracer.start_span(name, context, getattr(otel.SpanKind, kind), attributes,
                                           start_time=start_ns)
        for event, ts_ns in events:
            span.add_event(event, timestamp=ts_ns)
        if error:
            span.set_status(otel.Status(otel.StatusCode.ERROR, error))
        span.end(end_time=max(self._clock(), start_ns))

    def shutdown(self) -> None:
        """Send the spans still queued; gives up after SHUTDOWN_TIMEOUT_S (the collector may be gone)."""
        flusher = threading.Thread(target=self._provider.shutdown, name="tracing-shutdown", daemon=True)
        flusher.start()
        flusher.join(SHUTDOWN_TIMEOUT_S)


def setup(config: Config, service: str, clock: Callable[[], int] = time.time_ns) -> Tracer:
    """This process's tracer (service.name ``polybot-<service>``), or StartupError when the extra is missing."""
    try:
        from opentelemetry import trace as api
        from opentelemetry.context import Context
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
        from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
        if config.tracing.exporter == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise StartupError(f"[tracing] enabled = true, but OpenTelemetry is not installed ({exc}): "
                           "install polybot-mcp[otel] or set tracing.enabled = false") from None
    ratio = config.tracing.sample_ratio
    if not 0.0 <= ratio <= 1.0:
        raise StartupError(f"tracing.sample_ratio: {ratio} is not within 0 and 1")
    if config.tracing.exporter == "otlp":
        exporter = OTLPSpanExporter(endpoint=config.tracing.endpoint, timeout=EXPORT_TIMEOUT_S)
    else:  # one JSON line per span on stderr, where `polybot up` lets its services' output through
        exporter = ConsoleSpanExporter(out=sys.stderr, formatter=lambda span: span.to_json(indent=None) + "\n")
    ids = _Ids()
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"polybot-{service}", "service.namespace": "polybot",
                                  "process.pid": os.getpid()}),
        sampler=TraceIdRatioBased(ratio), id_generator=ids, shutdown_on_exit=False)  # type: ignore[arg-type]
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=SCHEDULE_DELAY_MS,
                                                   export_timeout_millis=EXPORT_TIMEOUT_S * 1000))
    otel = SimpleNamespace(Context=Context, SpanContext=api.SpanContext, TraceFlags=api.TraceFlags,
                           NonRecordingSpan=api.NonRecordingSpan, SpanKind=api.SpanKind, Status=api.Status,
                           StatusCode=api.StatusCode, set_span_in_context=api.set_span_in_context)
    return Tracer(provider, ids, otel, clock)
