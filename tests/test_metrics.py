"""Prometheus metrics: every service of `polybot up` serves /metrics on its own port with the runtime's series
and its own, and the figures move with traffic (a trade, a dropped venue connection, a malformed frame)."""
from __future__ import annotations

import socket
import subprocess
import sys
from decimal import Decimal as D

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from py_clob_client_v2.clob_types import TradeParams

from services import config as c
from services.bus import Bus
from services.config import load

from .conftest import child_env, wait_for
from .test_trade_e2e import Up

RUNTIME = ("polybot_messages_sent_total", "polybot_messages_received_total", "polybot_messages_dropped_total",
           "polybot_frames_undecodable_total", "polybot_frames_oversized_total", "polybot_peer_disconnects_total",
           "polybot_handled_total", "polybot_handler_errors_total",
           "polybot_uptime_seconds", "polybot_halted")
INBOUND = ("polybot_message_lag_seconds_bucket", "polybot_message_lag_seconds_count", "polybot_inbound_queue_depth")
OWN = {  # declared (# TYPE) by each service: a labelled series has samples once its first label set is used
    "scanner": ("polybot_venue_frames", "polybot_venue_frames_bad", "polybot_ws_reconnects",
                "polybot_venue_request_seconds", "polybot_venue_errors", "polybot_markets"),
    "strategies": ("polybot_signals_shed", "polybot_throttled"),
    "risk": ("polybot_signals", "polybot_verdicts", "polybot_refusal_reasons", "polybot_exposure_usdc",
             "polybot_pnl_usdc", "polybot_open_orders", "polybot_executor_connected"),
    "executor": ("polybot_orders", "polybot_orders_submitted", "polybot_fills", "polybot_fill_notional_usdc",
                 "polybot_fees_usdc", "polybot_cancels", "polybot_order_rejects", "polybot_venue_request_seconds",
                 "polybot_venue_errors", "polybot_ws_reconnects", "polybot_backpressure_throttling",
                 "polybot_executor_lag_seconds", "polybot_open_orders"),
}


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of one endpoint: (name, sorted labels) -> value."""
    text = httpx.get(url, timeout=5, trust_env=False).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def declared(url: str) -> set[str]:
    """The metric families an endpoint declares."""
    text = httpx.get(url, timeout=5, trust_env=False).text
    return {family.name for family in text_string_to_metric_families(text)}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def names(samples: dict) -> set[str]:
    return {name for name, _ in samples}


def test_every_service_serves_its_series_and_they_move_with_a_trade_a_reconnect_and_a_bad_frame(mesh_factory) -> None:
    up = Up(mesh_factory)
    rows = up.mesh.status()
    urls = {name: rows[name]["detail"]["metrics"] for name in ("supervisor", "venue", "analytics", "scanner",
                                                               "executor", "risk", "strategies")}
    assert len({u.rsplit(":", 1)[1] for u in urls.values()}) == len(urls)  # a port each
    assert all(u.startswith("http://127.0.0.1:") for u in urls.values())  # loopback unless configured
    before = {name: scrape(url) for name, url in urls.items()}
    for name, samples in before.items():
        assert set(RUNTIME) <= names(samples), (name, set(RUNTIME) - names(samples))
    for name in ("analytics", "executor", "risk", "strategies"):  # those that receive
        assert set(INBOUND) <= names(before[name]), name
    for name, wanted in OWN.items():
        assert set(wanted) <= declared(urls[name]), (name, set(wanted) - declared(urls[name]))

    # A trade: the gap's two legs fill.
    market = up.market["conditionId"]
    up.open_gap()
    wait_for(lambda: len(up.client.get_trades(TradeParams(market=market))) >= 2, what="both legs filled", timeout=15)
    after = wait_for(lambda: (s := {n: scrape(u) for n, u in urls.items()})
                     and value(s["executor"], "polybot_fills_total", liquidity="TAKER") >= 2
                     and value(s["risk"], "polybot_exposure_usdc") > 0
                     and value(s["risk"], "polybot_executor_connected") == 1 and s, what="the fills in the metrics")
    scanner, strategies, risk, executor = (after[n] for n in ("scanner", "strategies", "risk", "executor"))
    was = before
    assert value(scanner, "polybot_messages_sent_total", socket="prices") > \
        value(was["scanner"], "polybot_messages_sent_total", socket="prices")
    assert value(scanner, "polybot_venue_frames_total") > value(was["scanner"], "polybot_venue_frames_total")
    assert value(strategies, "polybot_message_lag_seconds_count", socket="prices") > \
        value(was["strategies"], "polybot_message_lag_seconds_count", socket="prices")
    assert value(strategies, "polybot_messages_sent_total", socket="signals") == 1
    assert value(risk, "polybot_signals_total", source="strategy:arbitrage") == 1
    assert value(risk, "polybot_verdicts_total", verdict="accepted", reason="") == 1
    assert value(risk, "polybot_messages_sent_total", socket="orders") == 2
    assert value(executor, "polybot_orders_total", side="BUY", order_type="FOK") == 2
    assert value(executor, "polybot_orders_submitted_total") == 2
    assert value(executor, "polybot_venue_request_seconds_count", op="place") >= 1
    assert value(executor, "polybot_message_lag_seconds_count", socket="orders") == 2
    trades = up.client.get_trades(TradeParams(market=market))
    notional = sum(D(t["size"]) * D(t["price"]) for t in trades)
    assert value(executor, "polybot_fill_notional_usdc_total") == pytest.approx(float(notional), abs=1e-9)
    assert D(str(value(risk, "polybot_exposure_usdc"))) > 0
    # Every lag histogram counts what was handled, and its buckets are cumulative up to +Inf.
    lag_buckets = [v for (n, labels), v in executor.items()
                   if n == "polybot_message_lag_seconds_bucket" and ("socket", "orders") in labels]
    assert lag_buckets == sorted(lag_buckets) and lag_buckets[-1] == 2

    # The venue drops every WebSocket: the scanner's market feed and the executor's user feed reconnect.
    assert httpx.post(f"{up.clob}/_admin/drop-connections", json={}).status_code == 200
    wait_for(lambda: value(scrape(urls["scanner"]), "polybot_ws_reconnects_total", channel="market") >= 1
             and value(scrape(urls["executor"]), "polybot_ws_reconnects_total", channel="user") >= 1,
             what="both reconnections counted", timeout=30)

    # A malformed frame on risk's signals socket is counted and skipped; risk keeps answering.
    config = load(up.mesh.config, {"HOME": str(up.mesh.state)})
    bus = Bus(config)
    try:
        push = bus.outbound("signals")
        wait_for(lambda: push.socket.pipes, what="a pipe to risk")
        push.send_raw(b"\x06Signal not msgpack at all")
        wait_for(lambda: value(scrape(urls["risk"]), "polybot_frames_undecodable_total", socket="signals") == 1,
                 what="the bad frame counted")
    finally:
        bus.close()
    assert up.mesh.status()["risk"]["state"] == "running"


def test_the_default_ports_follow_the_config_order_and_an_override_wins(tmp_path) -> None:
    path = tmp_path / "polybot.toml"
    path.write_text('[services.risk]\nmetrics_port = 9999\n[services.ticker]\nkind = "tests.mesh_services:Ticker"\n')
    config = load(path, {"HOME": str(tmp_path), "POLYBOT_STATE_DIR": str(tmp_path / "s")})
    assert list(config.services) == ["venue", "analytics", "scanner", "executor", "risk", "strategies", "ticker"]
    assert [c.metrics_port(config, n) for n in ("supervisor", "venue", "scanner", "risk", "ticker")] == \
        [9400, 9401, 9403, 9999, 9407]
    assert c.metrics_port(config, "recorder") == 0  # not in the config: any free port
    zero = load(path, {"HOME": str(tmp_path), "POLYBOT_STATE_DIR": str(tmp_path / "s"),
                       "POLYBOT_METRICS__BASE_PORT": "0"})
    assert c.metrics_port(zero, "scanner") == 0 and c.metrics_port(zero, "risk") == 9999


def test_a_metrics_port_in_use_stops_the_service_with_the_keys_to_change(tmp_path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    path = tmp_path / "polybot.toml"
    path.write_text(f'state_dir = "{tmp_path / "s"}"\n[local_venue]\nstart = false\n'
                    f'[services.ticker]\nkind = "tests.mesh_services:Ticker"\nmetrics_port = {port}\n')
    try:
        result = subprocess.run([sys.executable, "-m", "services", "--config", str(path), "run", "ticker"],
                                env=child_env(), capture_output=True, text=True, timeout=30)
    finally:
        taken.close()
    assert result.returncode == 2
    said = result.stderr + result.stdout
    assert f"cannot serve metrics on 127.0.0.1:{port}" in said and "[services.ticker] metrics_port" in said
