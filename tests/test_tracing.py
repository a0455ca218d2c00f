"""Tracing across processes: with [tracing] enabled, one arbitrage trade is one OpenTelemetry trace whose spans
come from the scanner, the strategies, risk and the executor, each the parent of the next; with it disabled (the
default) no service imports OpenTelemetry; enabled without the ``otel`` extra, a service refuses to start and says
what to do. The collector is the only fake: an OTLP/HTTP receiver in the test that keeps what it is sent."""
from __future__ import annotations

import gzip
import subprocess
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal as D
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                      ExportTraceServiceResponse)
from py_clob_client_v2.clob_types import TradeParams

from polybot_venue.server import ready_made_account

from .conftest import child_env, wait_for
from .trading_harness import Trading
from .venue_harness import Venue, tokens

SERVICES = {"scanner": "", "executor": "", "risk": "", "strategies": ""}


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


class Collector:
    """An OTLP/HTTP trace receiver on 127.0.0.1: every span the services export, decoded, in memory."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                collector.add(ExportTraceServiceRequest.FromString(body))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        self.thread = threading.Thread(target=self.server.serve_forever, name="otlp-receiver", daemon=True)
        self.thread.start()

    def add(self, request: ExportTraceServiceRequest) -> None:
        decoded = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    decoded.append({
                        "service": resource.get("service.name"), "name": span.name,
                        "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(), "start": span.start_time_unix_nano,
                        "end": span.end_time_unix_nano, "status": span.status.code,
                        "events": [e.name for e in span.events],
                        "attributes": {a.key: _value(a.value) for a in span.attributes}})
        with self.lock:
            self.spans += decoded

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.spans)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    receiver = Collector()
    yield receiver
    receiver.close()


@pytest.fixture
def root(state_dir: Path) -> Path:
    state_dir.parent.mkdir(parents=True, exist_ok=True)  # short paths: ipc socket paths must stay under 107 bytes
    return state_dir.parent


def _mesh(root: Path, extra: str = "", **env: str) -> tuple[Venue, Trading]:
    """A still local venue, then scanner, executor, risk and strategies, each its own process, all ready."""
    venue = Venue(root / "venue", 61, 100, "--still")
    mesh = Trading(root, venue, SERVICES, extra)
    try:
        mesh.start("scanner", "executor", **env)
        mesh.wait_ready("scanner", "executor")
        mesh.start("risk", "strategies", **env)
        mesh.wait_ready("risk", "strategies")
    except BaseException:
        mesh.close()
        venue.stop()
        raise
    return venue, mesh


def _open_gap(venue: Venue) -> dict:
    """An arbitrage gap on a fresh market: YES and NO asks that sum to 0.92, 30 shares deep."""
    market = venue.market()
    gap = httpx.post(f"{venue.clob}/_admin/gap", json={"market": market["conditionId"], "gap": "0.08",
                                                        "size": "30"}).json()
    assert D(gap["sum"]) == D("0.92"), gap
    return market


def test_one_arbitrage_trade_is_one_trace_from_scanner_to_strategy_to_risk_to_executor(root: Path,
                                                                                      collector: Collector) -> None:
    venue, mesh = _mesh(root, f'[tracing]\nenabled = true\nendpoint = "{collector.endpoint}"\n')
    try:
        market = _open_gap(venue)["conditionId"]

        def accepted() -> dict | None:
            return next((s for s in collector.snapshot() if s["name"] == "risk decide"
                         and s["attributes"]["polybot.verdict"] == "accepted"
                         and market in s["attributes"]["polybot.markets"]), None)
        decided = wait_for(accepted, what="risk's span for the accepted arbitrage signal", timeout=20)
        trace = decided["trace_id"]

        def submitted() -> list[dict]:
            legs = [s for s in collector.snapshot() if s["name"] == "executor submit" and s["trace_id"] == trace]
            return legs if len(legs) == 2 else []
        legs = wait_for(submitted, what="the executor's spans for both legs", timeout=20)
    finally:
        mesh.close()
        venue.stop()

    spans = [s for s in collector.snapshot() if s["trace_id"] == trace]
    by_service = {s["service"] for s in spans}
    assert by_service == {"polybot-scanner", "polybot-strategies", "polybot-risk", "polybot-executor"}, spans
    signal_id = decided["attributes"]["polybot.signal_id"]
    strategy, = [s for s in spans if s["service"] == "polybot-strategies"]
    assert strategy["name"] == "strategy signal" and strategy["attributes"]["polybot.signal_id"] == signal_id
    assert strategy["attributes"]["polybot.source"] == "strategy:arbitrage"
    scanner, = [s for s in spans if s["span_id"] == strategy["parent_span_id"]]
    assert scanner["service"] == "polybot-scanner" and scanner["parent_span_id"] == ""  # the trade's root
    assert scanner["attributes"]["polybot.message_id"] == strategy["attributes"]["polybot.cause_id"]
    assert market in scanner["attributes"]["polybot.markets"]
    assert decided["parent_span_id"] == strategy["span_id"]
    assert sorted(leg["attributes"]["polybot.order_id"] for leg in legs) == \
        sorted(decided["attributes"]["polybot.order_ids"])
    for leg in legs:
        attributes = leg["attributes"]
        assert leg["service"] == "polybot-executor" and leg["parent_span_id"] == decided["span_id"]
        assert attributes["polybot.signal_id"] == signal_id and attributes["polybot.market"] == market
        assert attributes["polybot.status"] == "matched" and attributes["polybot.venue_order_id"]
        assert leg["events"] == ["submitted"] and leg["status"] == 0  # unset: not an error
    # Each hop starts when the message that caused it was made, so the spans follow one another in time.
    assert scanner["start"] <= strategy["start"] <= decided["start"] <= min(leg["start"] for leg in legs)
    assert all(s["start"] <= s["end"] for s in spans)
    assert len({s["attributes"]["polybot.trace_id"] for s in spans}) == 1  # our own trace id, on every span


def test_with_tracing_disabled_no_service_imports_opentelemetry_even_as_it_trades(root: Path) -> None:
    # PYTHONPROFILEIMPORTTIME makes each service process list on stderr every module it imports, when it does.
    venue, mesh = _mesh(root, PYTHONPROFILEIMPORTTIME="1")
    try:
        market = _open_gap(venue)
        account = venue.client(ready_made_account(venue.seed).private_key)  # the account the executor trades for
        wait_for(lambda: {t["asset_id"] for t in account.get_trades(TradeParams(market=market["conditionId"]))}
                 == set(tokens(market)), what="both legs filled at the venue", timeout=20)
        assert mesh.detail("risk")["accepted"] == "1"
    finally:
        mesh.close()
        venue.stop()
    for name in SERVICES:
        imported = [line for line in mesh.log(name).splitlines() if line.startswith("import time:")]
        assert any(line.endswith(" services.runtime") for line in imported), name  # the listing is there
        assert not [line for line in imported if "opentelemetry" in line or "services.tracing" in line], name


def test_tracing_enabled_without_the_otel_extra_stops_the_service_at_start_saying_what_to_do(root: Path) -> None:
    config = root / "polybot.toml"
    config.write_text(f'state_dir = "{root / "state"}"\n[tracing]\nenabled = true\n'
                      '[services.ticker]\nkind = "tests.mesh_services:Ticker"\n')
    # As if the extra were not installed: Python's own way to make an import fail with ModuleNotFoundError.
    script = ("import sys; sys.modules['opentelemetry'] = None; from services.cli import main; "
              f"sys.exit(main(['--config', {str(config)!r}, 'run', 'ticker']))")
    result = subprocess.run([sys.executable, "-c", script], env=child_env(), capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2, result.stderr
    assert "install polybot-mcp[otel] or set tracing.enabled = false" in result.stderr
