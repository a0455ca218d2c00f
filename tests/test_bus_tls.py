"""The bus across machines, locked: with bus.transport = "tls" every socket is tls+tcp with mutual certificates from
`polybot certs`. A mesh (the local venue, scanner, executor, risk as processes) trades over it; a peer without a
certificate of the mesh's CA reaches nothing; a strategy's certificate cannot push onto `orders`; plain tcp off this
machine is refused by the config unless allowed."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path

import httpx
import msgspec
import pytest

from services import messages as m
from services import certs, tls
from services.bus import Bus, BusTimeout, Requester
from services.config import ConfigError, control_address, load

from .conftest import child_env, free_port, wait_for
from .trading_harness import Trading
from .venue_harness import Venue, tokens

PORTS = 16  # the bus's block: sockets at +0..+5, the supervisor at +9, services from +10


def port_block() -> int:
    """A base port whose whole block is free now."""
    for _ in range(50):
        base = free_port()
        try:
            for port in range(base, base + PORTS):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError("no free block of ports")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Iterator[Trading]:
    root = tmp_path_factory.mktemp("tls")
    venue = Venue(root / "venue", 83, 100, "--still")
    mesh = Trading(root, venue, {"scanner": "", "executor": "", "risk": ""},
                   bus=f'transport = "tls"\nbase_port = {port_block()}\n')
    try:
        made = subprocess.run([sys.executable, "-m", "services", "--config", str(mesh.config_file), "certs"],
                              env=child_env(), capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        assert {"scanner", "executor", "risk", "supervisor", "operator", "mcp"} <= set(
            made.stdout.split("made ")[1].strip().split(", ")), made.stdout
        tls.identify("operator", mesh.config)
        mesh.start("scanner", "executor")
        mesh.wait_ready("scanner", "executor")
        mesh.start("risk")
        mesh.wait_ready("risk")
        yield mesh
    finally:
        tls.identify("operator", mesh.config)
        mesh.close()
        venue.stop()


def as_peer(mesh: Trading, name: str) -> Bus:
    """A bus of this test process that presents ``name``'s certificate."""
    tls.identify(name, mesh.config)
    return Bus(mesh.config)


def test_every_address_is_tls_and_a_mesh_trades_over_it(mesh: Trading) -> None:
    assert all(a.startswith("tls+tcp://127.0.0.1:") for a in (control_address(mesh.config, "risk"),))
    bus = as_peer(mesh, "mcp")  # the MCP server may push signals
    try:
        signals, decisions, executions = bus.outbound("signals"), bus.inbound("decisions"), bus.inbound("executions")
        wait_for(lambda: signals.socket.pipes and decisions.socket.pipes and executions.socket.pipes,
                 what="the test's tls sockets to connect")
        yes, _ = tokens(mesh.venue.market())
        book = httpx.get(f"{mesh.venue.clob}/book", params={"token_id": yes}).json()
        bid = max(D(b["price"]) for b in book["bids"])
        signal = m.Signal(source="mcp:tls", legs=[m.Leg(token_id=yes, side="BUY", size=D(5),
                                                        limit_price=bid - D("0.02"))])
        assert signals.send(signal)
        seen: list[m.Message] = []

        def acked() -> m.OrderAck | None:
            seen.extend(decisions.drain() + executions.drain())
            return next((x for x in seen if isinstance(x, m.OrderAck) and x.signal_id == signal.id), None)
        assert wait_for(acked, what="the signal's order acked at the venue, over tls").venue_order_id
        assert signals.send(m.Cancel(source="mcp:tls"))
    finally:
        bus.close()


def test_a_strategy_certificate_cannot_push_onto_orders_and_risks_can(mesh: Trading) -> None:
    market = mesh.venue.market()
    yes, _ = tokens(market)
    before = mesh.detail("executor").get("tls_refused", "0 ()")
    forged = m.Order(signal_id="forged", leg=0, source="strategy:arbitrage", token_id=yes,
                     market=market["conditionId"], side="BUY", size=D(5), limit_price=D("0.05"), order_type="GTC")
    undecodable = mesh.status("executor").sockets["orders"].undecodable
    strategy = as_peer(mesh, "strategies")
    try:
        orders = strategy.outbound("orders")
        wait_for(lambda: (refused := mesh.detail("executor").get("tls_refused", "")) != before
                 and "strategies" in refused,
                 what="the executor to name the strategies certificate refused on orders")
        # Everything it sends is refused and counted, for as long as it keeps sending; the refused sender runs on
        # (NNG 1.11 crashed a PUSH whose pipe the executor closed as it connected: a refused strategies host died
        # in a loop).
        sent = 0
        for i in range(60):
            sent += orders.send(msgspec.structs.replace(forged, id=f"forged-{i}"))
        wait_for(lambda: mesh.status("executor").sockets["orders"].undecodable >= undecodable + sent,
                 what="the executor to refuse every order from the strategies certificate")
    finally:
        strategy.close()
    watcher = as_peer(mesh, "operator")
    try:
        executions = watcher.inbound("executions")
        wait_for(lambda: executions.socket.pipes, what="the test's executions subscription")
        as_risk = as_peer(mesh, "risk")
        try:
            sent = m.Order(signal_id="from-risk", leg=0, source="strategy:t", token_id=yes, market=market["conditionId"],
                           side="BUY", size=D(5),
                           limit_price=D("0.05"), order_type="GTC")
            out = as_risk.outbound("orders")
            wait_for(lambda: out.socket.pipes, what="risk's certificate to connect to orders")
            assert out.send(sent)
            heard: list[m.Message] = []
            wait_for(lambda: heard.extend(executions.drain()) or any(
                getattr(x, "order_id", "") == sent.id for x in heard), what="the executor to take risk's order")
            assert not any(getattr(x, "order_id", "").startswith("forged") for x in heard)
            as_risk.outbound("signals").send(m.Cancel(source="risk", reason="test over"))
        finally:
            as_risk.close()
    finally:
        watcher.close()


def test_a_peer_speaks_only_for_its_own_kind_of_source_on_signals(mesh: Trading) -> None:
    yes, _ = tokens(mesh.venue.market())
    bus = as_peer(mesh, "mcp")
    try:
        signals, decisions = bus.outbound("signals"), bus.inbound("decisions")
        wait_for(lambda: signals.socket.pipes and decisions.socket.pipes, what="the test's tls sockets to connect")
        refused_before = mesh.status("risk").sockets["signals"].undecodable
        claimed = m.Signal(source="strategy:arbitrage", legs=[m.Leg(token_id=yes, side="BUY", size=D(5),
                                                                     limit_price=D("0.05"))])
        assert signals.send(claimed)  # the MCP server's certificate claiming a strategy's budget
        wait_for(lambda: mesh.status("risk").sockets["signals"].undecodable > refused_before,
                 what="risk to refuse the claimed source")
        own = m.Signal(source="mcp:tls-agent", legs=[m.Leg(token_id=yes, side="BUY", size=D(5),
                                                           limit_price=D("0.05"))])
        assert signals.send(own)
        heard: list[m.Message] = []
        wait_for(lambda: heard.extend(decisions.drain()) or any(getattr(x, "signal_id", "") == own.id for x in heard),
                 what="risk to decide the signal of the MCP server's own source")
        assert not any(getattr(x, "signal_id", "") == claimed.id for x in heard)
        signals.send(m.Cancel(source="mcp:tls-agent"))
    finally:
        bus.close()


def test_a_service_configured_but_not_started_here_is_still_one_of_the_mesh_on_its_socket(tmp_path: Path) -> None:
    """A strategies host on another machine is named in this machine's config with enabled = false: risk lets its
    certificate onto signals all the same."""
    config = tmp_path / "polybot.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n[bus]\ntransport = "tls"\n'
                      '[services.strategies]\nenabled = false\n[services.quoter]\nkind = "services.strategies.host:Strategies"\n')
    loaded = load(config, {"HOME": str(tmp_path)})
    assert tls.allowed_peers(loaded, "signals") == {"strategies", "quoter", "mcp"}
    assert tls.allowed_peers(loaded, "orders") == {"risk"}


def test_a_second_machine_sees_the_mesh_it_names_as_running_elsewhere(mesh: Trading, tmp_path: Path) -> None:
    """`polybot status` on a machine whose config names the mesh's services with enabled = false and their control
    addresses asks each of them over tls (as the operator) and judges trading from them, not from its own processes."""
    base = mesh.config.bus.base_port
    elsewhere = "".join(f'[services.{name}]\nenabled = false\ncontrol = "{control_address(mesh.config, name)}"\n'
                        for name in ("analytics", "scanner", "executor", "risk"))
    config = tmp_path / "machine-b.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n[bus]\ntransport = "tls"\nbase_port = {base + 100}\n'
                      f'tls_dir = "{tls.folder(mesh.config)}"\n[bus.addresses]\n'
                      + "".join(f'{s} = "tls+tcp://127.0.0.1:{base + i}"\n' for i, s in enumerate(
                          ("prices", "events", "signals", "orders", "executions", "decisions")))
                      + '[services.strategies]\nenabled = false\n' + elsewhere)
    result = subprocess.run([sys.executable, "-m", "services", "--config", str(config), "status", "--json"],
                            env=child_env(HOME=str(tmp_path)), capture_output=True, text=True, timeout=60)
    report = json.loads(result.stdout)
    states = {row["name"]: row["state"] for row in report["services"]}
    assert {k: states.get(k) for k in ("scanner", "executor", "risk")} == dict.fromkeys(
        ("scanner", "executor", "risk"), "running"), result.stdout
    assert "strategies" not in states  # off, and not said to run anywhere
    assert report["trading"] is not None and report["trading"]["executor_connected"], result.stdout
    assert not any("in the config" in reason for reason in report["trading"]["reasons"]), result.stdout


def test_a_certificate_from_another_ca_reaches_nothing(mesh: Trading, tmp_path: Path) -> None:
    certs.issue(tmp_path, ["risk", "operator"])  # right names, wrong CA
    foreign = load(mesh.config_file, {"HOME": str(tmp_path), "POLYBOT_BUS__TLS_DIR": str(tmp_path)})
    tls.identify("operator", foreign)
    try:
        with Requester(control_address(foreign, "executor"), 1500) as req:
            with pytest.raises(BusTimeout):
                req.request(m.StatusRequest())
        bus = Bus(foreign)
        try:
            executions = bus.inbound("executions")
            with pytest.raises(BusTimeout):  # the executor publishes heartbeats every 0.2 s to everyone it lets in
                executions.recv(2000)
        finally:
            bus.close()
    finally:
        tls.identify("operator", mesh.config)
    with Requester(control_address(mesh.config, "executor"), 5000) as req:  # the mesh's own certificate gets in
        assert isinstance(req.request(m.StatusRequest()), m.StatusReply)


@pytest.mark.parametrize("setting", ['[bus]\ntransport = "tcp"\nhost = "10.1.2.3"\n',
                                     '[bus]\naddresses = { orders = "tcp://192.168.1.9:7703" }\n'])
def test_plain_tcp_off_this_machine_is_refused_unless_allowed(tmp_path: Path, setting: str) -> None:
    config = tmp_path / "polybot.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n{setting}')
    with pytest.raises(ConfigError, match='plain tcp to .* set bus.transport = "tls"'):
        load(config, {"HOME": str(tmp_path)})
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n{setting}allow_plaintext = true\n')
    assert load(config, {"HOME": str(tmp_path)}).bus.allow_plaintext
