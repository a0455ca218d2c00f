"""The audit service as its own process: the test plays risk and the executor, then tampers with the log."""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path

import msgspec
import pytest

from services import audit
from services import messages as m
from services.bus import Bus
from services.config import ensure_state_dir, load

from .conftest import child_env, wait_for


class Harness:
    """`polybot run audit` on a state dir; this process binds ``decisions`` and ``executions``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config_file = root / "polybot.toml"
        self.config_file.write_text(
            f'state_dir = "{root / "state"}"\n[bus]\nheartbeat_s = 0.2\n[local_venue]\nstart = false\n'
            '[services.audit]\nkind = "services.audit:Audit"\n')
        self.config = load(self.config_file, {"HOME": str(root)})
        ensure_state_dir(self.config)
        self.bus = Bus(self.config)
        self.out = {name: self.bus.outbound(name) for name in ("decisions", "executions")}
        self.control = self.bus.requester("audit", 5000)
        self.proc: subprocess.Popen | None = None

    def start(self) -> subprocess.Popen:
        self.stderr = open(self.root / "audit.stderr", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "services", "--config", str(self.config_file), "run",
                                      "audit"], env=child_env(), stderr=self.stderr)
        return self.proc

    def wait_subscribed(self) -> None:
        wait_for(lambda: all(out.socket.pipes for out in self.out.values()), timeout=10, what="audit to subscribe")

    def send(self, socket: str, *msgs: m.Message) -> None:
        for msg in msgs:
            assert self.out[socket].send(msg)

    def detail(self) -> dict[str, str]:
        try:
            return self.control.request(m.StatusRequest()).service.detail
        except Exception:
            return {}

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(20)
        self.stderr.close()
        return code

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        self.control.close()
        self.bus.close()


def decisions(n: int) -> list[m.Message]:
    sig = m.Signal(source="strategy:arb", legs=[m.Leg(token_id="t-yes", side="BUY", size=D("12.5"),
                                                        limit_price=D("0.47"), market="0xa")])
    order = m.Order(signal_id=sig.id, leg=0, source=sig.source, token_id="t-yes", market="0xa", side="BUY",
                    size=D("12.5"), limit_price=D("0.47"), order_type="FOK")
    reason = m.Reason(code="max_notional", message="over the per-market notional", leg=0, limit=D("500"),
                      value=D("600.125"), max_size=D("1111.11"))
    return [m.SignalAccepted(signal_id=sig.id, source=sig.source, orders=[order], signal=sig),
            m.SignalRejected(signal_id=f"rej-{n}", source="mcp:agent", reasons=[reason])]


def executions(n: int) -> list[m.Message]:
    return [m.OrderAck(order_id=f"o-{n}", venue_order_id=f"0xv{n}", status="matched", signal_id="s"),
            m.Fill(order_id=f"o-{n}", venue_order_id=f"0xv{n}", trade_id=f"tr-{n}", token_id="t-yes", market="0xa",
                   side="BUY", price=D("0.47"), size=D("12.50"), fee=D("0.04982"))]


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


@pytest.fixture(scope="module")
def run() -> Iterator[tuple[Harness, str]]:
    """Two runs of the service on one log: 4 entries, a restart, 4 more. Yields the harness and the head it reported."""
    root = Path(tempfile.mkdtemp(prefix="pbau-", dir="/tmp"))  # ipc socket paths must stay under 107 bytes
    harness = Harness(root)
    try:
        harness.start()
        harness.wait_subscribed()
        harness.send("decisions", *decisions(1))
        harness.send("executions", *executions(1))
        wait_for(lambda: harness.detail().get("entries") == "4", timeout=10, what="the first run's 4 entries")
        assert harness.stop() == 0
        harness.first_run = lines_of(audit.default_path(harness.config))
        harness.start()
        harness.wait_subscribed()
        harness.send("executions", *executions(2))
        harness.send("decisions", *decisions(2))
        detail = wait_for(lambda: (d := harness.detail()).get("entries") == "8" and d, timeout=10,
                          what="the second run's 4 entries")
        assert harness.stop() == 0
        yield harness, detail["head"]
    finally:
        harness.close()
        shutil.rmtree(root, ignore_errors=True)


def tampered(harness: Harness, name: str, lines: list[bytes]) -> Path:
    copy = harness.root / name
    copy.write_bytes(b"".join(lines))
    return copy


def cli(*args: str) -> subprocess.CompletedProcess:
    """`polybot audit ...`."""
    return subprocess.run([sys.executable, "-m", "services", "audit", *args], env=child_env(), capture_output=True,
                          text=True, timeout=20)


def test_the_log_verifies_clean_after_a_run_and_the_chain_continues_across_a_restart(run) -> None:
    harness, head = run
    path = audit.default_path(harness.config)
    assert path == harness.config.state_path / "audit" / "audit.jsonl"
    assert audit.verify(path) == (True, 8, "")
    entries = [msgspec.json.decode(line) for line in lines_of(path)]
    assert [e["seq"] for e in entries] == list(range(1, 9))
    assert lines_of(path)[:4] == harness.first_run  # the restart appended, it rewrote nothing
    assert entries[4]["prev"] == entries[3]["hash"] and entries[0]["prev"] == "0" * 64
    # The two sockets are read side by side, so only the order within each socket is fixed.
    assert [(e["socket"], e["type"]) for e in entries[:4] if e["socket"] == "decisions"] == [
        ("decisions", "SignalAccepted"), ("decisions", "SignalRejected")]
    assert [(e["socket"], e["type"]) for e in entries[:4] if e["socket"] == "executions"] == [
        ("executions", "OrderAck"), ("executions", "Fill")]
    assert "Heartbeat" not in {e["type"] for e in entries}
    by_type = {e["type"]: e for e in entries[:4]}
    fill = msgspec.convert(by_type["Fill"]["msg"], m.Fill)  # the message itself, exact
    assert (fill.price, fill.size, fill.fee) == (D("0.47"), D("12.50"), D("0.04982"))
    reason = by_type["SignalRejected"]["msg"]["reasons"][0]
    assert (reason["code"], reason["limit"], reason["value"]) == ("max_notional", "500", "600.125")
    assert entries[-1]["hash"] == head
    result = cli("verify", "--file", str(path))
    assert result.returncode == 0 and f"8 entries, chain intact, head {head}" in result.stdout


def test_one_changed_byte_in_one_entry_fails_verification_naming_the_line(run) -> None:
    harness, _ = run
    lines = lines_of(audit.default_path(harness.config))
    n = next(i for i, line in enumerate(lines) if b'"order_id":"o-2"' in line)  # an entry of the second run
    at = lines[n].index(b'"order_id":"o-2"') + len(b'"order_id":"o-')
    lines[n] = lines[n][:at] + b"3" + lines[n][at + 1:]  # o-2 becomes o-3
    path = tampered(harness, "changed.jsonl", lines)
    ok, entries, problem = audit.verify(path)
    assert not ok and entries == n and problem.startswith(f"line {n + 1}: hash mismatch")
    result = cli("verify", "--file", str(path))
    assert result.returncode == 1 and f"line {n + 1}: hash mismatch" in result.stderr


def test_a_deleted_middle_line_fails_verification(run) -> None:
    harness, _ = run
    lines = lines_of(audit.default_path(harness.config))
    ok, entries, problem = audit.verify(tampered(harness, "deleted.jsonl", lines[:3] + lines[4:]))
    assert not ok and entries == 3 and problem.startswith("line 4: seq is 5, expected 4")
    ok, _, problem = audit.verify(tampered(harness, "first.jsonl", lines[1:]))
    assert not ok and problem.startswith("line 1: seq is 2, expected 1")


def test_the_head_anchor_catches_a_deleted_last_line_that_the_chain_alone_cannot(run) -> None:
    harness, head = run
    path = audit.default_path(harness.config)
    assert audit.verify(path, head) == (True, 8, "")
    cut = tampered(harness, "cut.jsonl", lines_of(path)[:-1])
    assert audit.verify(cut) == (True, 7, "")  # a shorter chain is still a valid chain
    ok, entries, problem = audit.verify(cut, head)
    assert not ok and entries == 7 and f"not at the expected head {head}" in problem
    assert cli("verify", "--file", str(path), "--head", "f" * 64).returncode == 1
    assert cli("verify", "--file", str(path), "--head", head).returncode == 0


def test_every_single_byte_change_to_a_line_is_caught() -> None:
    line, digest = audit.make_line(1, 1_700_000_000_000_000_000, "executions", executions(1)[1], audit.GENESIS)
    raw = line[:-1]
    assert audit.check_line(raw, 1, audit.GENESIS) == (digest, "")
    for i in range(len(raw)):
        for new in {ord("0"), ord("a"), ord(" "), raw[i] ^ 1} - {raw[i]}:
            changed = raw[:i] + bytes([new]) + raw[i + 1:]
            assert audit.check_line(changed, 1, audit.GENESIS)[1], f"byte {i} changed to {chr(new)!r} went unseen"


def test_a_torn_last_line_stops_the_service_from_starting_until_someone_looks() -> None:
    root = Path(tempfile.mkdtemp(prefix="pbau-", dir="/tmp"))
    harness = Harness(root)
    try:
        path = audit.default_path(harness.config)
        path.parent.mkdir(parents=True)
        first, _ = audit.make_line(1, 1, "decisions", decisions(1)[1], audit.GENESIS)
        path.write_bytes(first + first[:40])  # a crash in the middle of the second write
        assert harness.start().wait(20) == 2
        harness.stderr.close()
        said = (root / "audit.stderr").read_text() + (harness.config.state_path / "logs" / "audit.log").read_text()
        assert f"audit log {path}: the last line is torn" in said and "polybot audit verify" in said
        assert path.read_bytes() == first + first[:40]  # not truncated, not appended to
        ok, entries, problem = audit.verify(path)
        assert not ok and entries == 1 and problem.startswith("line 2: torn")
    finally:
        harness.close()
        shutil.rmtree(root, ignore_errors=True)
