"""Prometheus metrics: one registry per process, served on the service's own port at ``/metrics``.

The runtime's figures (messages in and out per socket, drops, undecodable frames, lag, queue depth) are read
from the counters the bus already keeps, when Prometheus scrapes, so the hot path does no more than it did.
A service adds its own series with ``ctx.metrics.counter`` / ``gauge`` / ``histogram``; gauges that describe
state (exposure, PnL) are set in the service's ``sample()``, which the runtime calls on its event loop.
"""
from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from . import messages as m

PREFIX = "polybot_"
# Lag buckets, in seconds: a hop takes about a millisecond, a backlog seconds.
LAG_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class MetricsError(Exception):
    """The metrics endpoint cannot be served; the message says why and which key to change."""


class LagHistogram:
    """Lag (now minus the message's origin time) of one socket's messages, counted by the thread that handles them."""

    __slots__ = ("_bounds", "counts", "sum_ns", "last_ns")

    def __init__(self, buckets_s: Sequence[float] = LAG_BUCKETS_S) -> None:
        self._bounds = [int(b * 1e9) for b in buckets_s]
        self.counts = [0] * (len(self._bounds) + 1)  # the last one is +Inf
        self.sum_ns = 0
        self.last_ns = 0  # the lag of the latest message

    def observe(self, now_ns: int, messages: Iterable[m.Message]) -> None:
        """Count each message's lag at ``now_ns`` (a batch is timed once, as it starts to be handled; what it
        waits behind the messages before it in the batch shows as queue depth)."""
        counts, bounds, bisect_left = self.counts, self._bounds, bisect.bisect_left
        total = lag = 0
        for msg in messages:
            lag = now_ns - msg.ts_ns  # a little below 0 at times: two machines' clocks may disagree
            counts[bisect_left(bounds, lag)] += 1
            total += lag
        self.sum_ns += total
        self.last_ns = lag

    def buckets(self) -> list[tuple[str, int]]:
        """Cumulative (upper bound, count) pairs, as Prometheus wants them."""
        out, total = [], 0
        for bound, n in zip([*(str(b / 1e9) for b in self._bounds), "+Inf"], list(self.counts)):
            total += n
            out.append((bound, total))
        return out


class Flow:
    """One inbound socket as the runtime sees it: what its reader handed over, what was handled, and the lag."""

    __slots__ = ("enqueued", "handled", "lag")

    def __init__(self) -> None:
        self.enqueued = 0  # written by the reader thread only
        self.handled = 0  # written by the event loop only
        self.lag = LagHistogram()

    @property
    def depth(self) -> int:
        """Messages received and decoded, not yet handled by the service."""
        return max(self.enqueued - self.handled, 0)


class RuntimeCollector:
    """The runtime's own series, built from its counters at scrape time."""

    def __init__(self, counters: Mapping[str, m.SocketCounters], flows: Mapping[str, Flow],
                 figures: Callable[[], Mapping[str, float]]) -> None:
        self._counters = counters
        self._flows = flows
        self._figures = figures

    def describe(self) -> Iterable[Metric]:
        return []  # no duplicate checks against the service's own series: the names differ by construction

    def collect(self) -> Iterable[Metric]:
        kinds = {"sent": "messages sent", "received": "messages received and decoded",
                 "dropped": "messages dropped: a full send queue, or missed by a subscriber (sequence gaps)",
                 "undecodable": "frames that could not be decoded, counted and skipped",
                 "oversized": "frames over the bus's size cap, refused at send or skipped on arrival",
                 "disconnects": "connections to peers that ended"}
        counters = dict(self._counters)
        for field, doc in kinds.items():
            name = {"undecodable": "frames_undecodable", "oversized": "frames_oversized",
                    "disconnects": "peer_disconnects"}.get(field, f"messages_{field}")
            family = CounterMetricFamily(PREFIX + name, doc + ", per socket", labels=["socket"])
            for socket, c in sorted(counters.items()):
                family.add_metric([socket], getattr(c, field))
            yield family
        lag = HistogramMetricFamily(PREFIX + "message_lag_seconds",
                                    "when a message is handled, now minus its origin time", labels=["socket"])
        depth = GaugeMetricFamily(PREFIX + "inbound_queue_depth", "messages received, not yet handled",
                                  labels=["socket"])
        for socket, flow in sorted(dict(self._flows).items()):
            lag.add_metric([socket], flow.lag.buckets(), sum_value=flow.lag.sum_ns / 1e9)
            depth.add_metric([socket], flow.depth)
        yield lag
        yield depth
        for name, value in self._figures().items():
            doc, kind = RUNTIME_FIGURES[name]
            cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield cls(PREFIX + name, doc, value=value)


RUNTIME_FIGURES = {
    "handled": ("messages handled by the service", "counter"),
    "handler_errors": ("messages whose handling raised", "counter"),
    "halted": ("1 while the service is halted", "gauge"),
    "uptime_seconds": ("seconds since the process started", "gauge"),
}


class Metrics:
    """A process's registry, its series and its HTTP endpoint."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._server: Any = None
        self.port = 0

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(PREFIX + name, doc, labelnames=labels, registry=self.registry)

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(PREFIX + name, doc, labelnames=labels, registry=self.registry)

    def histogram(self, name: str, doc: str, labels: Sequence[str] = (),
                  buckets: Sequence[float] = LATENCY_BUCKETS_S) -> Histogram:
        return Histogram(PREFIX + name, doc, labelnames=labels, buckets=buckets, registry=self.registry)

    def add(self, collector: Any) -> None:
        self.registry.register(collector)

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` on a thread; returns the port (the chosen one when ``port`` is 0)."""
        try:
            self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise MetricsError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
        self.port = self._server.server_port
        return self.port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
