"""Agents author strategies through a real MCP client: check_strategy, backtest_strategy and propose_strategy run the
agent's code in a contained child process; hostile code is stopped with its reason and the server keeps answering;
a proposal is kept as pending for the operator, and no tool can approve it."""
from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import anyio
import msgspec
import pytest
from mcp.client.client import Client

from polybot_mcp.server import build
from services.backtest import simulated
from services.config import ensure_state_dir, load
from services.config import ContainmentConfig as limits
from services.strategies.sandbox import Stopped, run as run_contained, sample
from services.strategies.store import Budget, Store

from .test_backtest import scripted
from .test_mcp_tools import error, ok
from .test_strategy_api import SPREAD

# A maker that bids one tick inside a wide spread (none of ours), waiting for two ticks of spread.
WIDE = SPREAD.replace("min_spread_ticks: int = 3", "min_spread_ticks: int = 2")
SECRET = "0x5ec12e7" + "ab" * 28


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    root = Path(os.path.realpath(tmp_path_factory.mktemp("author")))
    (root / "polybot.toml").write_text(f'state_dir = "{root / "state"}"\n[local_venue]\nstart = false\n'
                                       "[mcp.containment]\nmemory_mb = 512\n")
    config = load(root / "polybot.toml", {"HOME": str(root)})
    ensure_state_dir(config)
    scripted(config.state_path / "recordings" / "scripted")
    simulated.generate(config.state_path / "recordings" / "sim", seed=7, seconds=30, markets=4, events=1,
                       outcomes=3)
    (config.state_path / "secret.txt").write_text(SECRET)
    return config


def session(config, *calls: tuple[str, dict]) -> list:
    """The calls in one client session, in order, each answer as the client got it."""
    async def run():
        async with Client(build(config)) as c:
            return [await c.call_tool(tool, args) for tool, args in calls]
    return anyio.run(run)


def line_of(code: str, text: str) -> int:
    """The number of the first line of ``code`` holding ``text``."""
    return next(i for i, line in enumerate(code.splitlines(), 1) if text in line)


def test_a_good_strategy_checks_clean_and_trades_the_sample_contained(config) -> None:
    report = ok(session(config, ("check_strategy", {"code": WIDE, "params": {"size": "6"}}))[0])
    assert report["ok"] is True and report["problems"] == [] and report["stopped"] == ""
    assert (report["class_name"], report["name"], report["params"]) == ("Spread", "spread",
                                                                        {"size": "6", "min_spread_ticks": "2"})
    assert report["sample"]["signals"] > 0 and report["sample"]["fills"] > 0
    assert report["contained"], "this machine allows a network namespace, Landlock and seccomp"
    assert "backtest_strategy" in report["next"]


@pytest.mark.parametrize("change, says", [
    (("def on_message(self, msg):", "def on_message(self, msg)"), "expected ':'"),
    (("out = []", "out = [] + None"), "on_message raised TypeError: can only concatenate list"),
    (("import polybot_strategy as ps", "import no_such_module"), "No module named 'no_such_module'"),
])
def test_check_strategy_names_the_line_of_what_is_wrong(config, change: tuple[str, str], says: str) -> None:
    code = WIDE.replace(*change)
    line = line_of(code, change[1])
    report = ok(session(config, ("check_strategy", {"code": code}))[0])
    assert report["ok"] is False
    [problem] = report["problems"]
    assert problem["line"] == line and says in problem["message"], problem
    assert problem["source"] == code.splitlines()[line - 1].strip()


@pytest.mark.parametrize("change, says", [
    (("return out", "return out + ['buy it']"), "on_message returned a str ('buy it'); it may return only Signal "
                                                "and Cancel"),
    (("return out", "return None"), "on_message returned NoneType, not a list"),
    (("bid[0] + market.tick_size, market.tick_size", "bid[0] + market.tick_size / 3, market.tick_size / 3"),
     "is not a multiple of the tick"),
    (('Decimal("5")', 'Decimal("0.5")'), "is below the market's minimum"),
    (('name = "spread"', 'name = "Wide Spread"'), "`name` must be a class attribute"),
])
def test_check_strategy_refuses_outputs_and_classes_that_break_the_contract(config, change, says: str) -> None:
    report = ok(session(config, ("check_strategy", {"code": WIDE.replace(*change)}))[0])
    assert report["ok"] is False and any(says in p["message"] for p in report["problems"]), report["problems"]


HOSTILE = {
    "network": ("import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)",
                "it tried to look up a host name (socket.getaddrinfo"),
    "network_raw": ("import socket\ns = socket.socket()\ns.connect(('127.0.0.1', {port}))",
                    "it tried to open a network socket (socket.__new__"),
    "secrets_of_the_server": ("import os\nopen(f'/proc/{{os.getppid()}}/environ').read()",
                              "it tried to read /proc/"),
    "files_outside": ("open({secret!r}).read()", "it tried to read {secret} (outside its work folder"),
    "ssh_keys": ("import os\nos.listdir({ssh!r})", "it tried to list {ssh}"),
    "write_outside": ("open({state!r} + '/planted.py', 'w').write('x')", "it tried to write {state}/planted.py"),
    "a_process": ("import subprocess\nsubprocess.run(['cat', {secret!r}])", "it tried to start a process"),
    "os_system": ("import os\nos.system('id')", "it tried to start a process (os.system"),
    "ctypes": ("import ctypes\nctypes.CDLL(None).getpid()", "call native code through ctypes"),
    "memory_bomb": ("hoard = [bytearray(1 << 20) for _ in range(10**6)]", "it ran out of memory (the limit is "
                                                                          "512 MB)"),
}


def hostile(snippet: str) -> str:
    """WIDE, doing ``snippet`` on its first book (inside on_message, after it was loaded)."""
    body = "\n".join("        " + line for line in snippet.splitlines())
    return WIDE.replace("        out = []\n", "        if type(msg).__name__ == 'BookSnapshot':\n"
                        + "\n".join("    " + line for line in body.splitlines()) + "\n        out = []\n")


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_strategies_are_stopped_with_the_reason_and_the_server_keeps_answering(config, case: str,
                                                                                      monkeypatch) -> None:
    monkeypatch.setenv("POLYBOT_PRIVATE_KEY", SECRET)  # in the server's own environment
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    fill = {"port": listener.getsockname()[1], "secret": str(config.state_path / "secret.txt"),
            "state": str(config.state_path), "ssh": os.path.realpath(Path.home() / ".ssh")}
    snippet, says = HOSTILE[case]
    checked, recordings = session(config, ("check_strategy", {"code": hostile(snippet.format(**fill))}),
                                  ("list_recordings", {}))
    report = ok(checked)
    assert report["ok"] is False and says.format(**fill) in report["stopped"], report
    assert SECRET not in checked.content[0].text
    assert {r["name"] for r in ok(recordings)["recordings"]} == {"scripted", "sim"}  # the server still answers
    with pytest.raises(BlockingIOError):
        listener.accept()  # nothing ever connected
    listener.close()
    assert not (config.state_path / "planted.py").exists()


def limited(config, **limits):
    """``config`` with other containment limits."""
    return msgspec.structs.replace(config, mcp=msgspec.structs.replace(
        config.mcp, containment=msgspec.structs.replace(config.mcp.containment, **limits)))


@pytest.mark.parametrize("snippet, limits, says", [
    # A CPU limit far below the wall-clock one: the loop reaches it first however busy this machine is.
    ("while True:\n    pass", {"cpu_s": 1, "wall_s": 120}, "it used up its 1 s of CPU time (an endless loop?)"),
    ("import time\ntime.sleep(10**6)", {"wall_s": 3}, "it ran past the wall-clock limit of 3 s"),
])
def test_code_that_never_ends_is_killed_at_a_limit_and_the_server_keeps_answering(config, snippet: str,
                                                                                 limits: dict, says: str) -> None:
    checked, recordings = session(limited(config, **limits), ("check_strategy", {"code": hostile(snippet)}),
                                  ("list_recordings", {}))
    assert says in ok(checked)["stopped"]
    assert ok(recordings)["recordings"]


def test_the_child_sees_none_of_the_servers_environment(config, monkeypatch) -> None:
    monkeypatch.setenv("POLYBOT_PRIVATE_KEY", SECRET)
    code = hostile("import os\nraise RuntimeError(sorted(os.environ))")
    report = ok(session(config, ("check_strategy", {"code": code}))[0])
    [problem] = report["problems"]
    assert problem["message"].startswith("on_message raised RuntimeError: ['HOME', 'LANG', 'PATH', "), problem
    assert "POLYBOT" not in problem["message"]


def test_the_kernel_contains_the_code_without_the_audit_hook(tmp_path: Path) -> None:
    """The audit hook is not the boundary: with it left out, the namespace, Landlock and seccomp still refuse."""
    replayed = sample(tmp_path)
    job = {"action": "check", "recording": str(replayed)}
    isolation = run_contained(job, WIDE, read=[replayed]).isolation
    if not {"Landlock ABI", "seccomp"} <= {part.rsplit(" ", 1)[0] if "ABI" in part else part for part in isolation}:
        pytest.skip(f"this kernel gives only {isolation}")
    for snippet, says in [("import socket\nsocket.socket()", "PermissionError: [Errno 1] Operation not permitted"),
                          ("open('/etc/shadow').read()", "PermissionError: [Errno 13] Permission denied"),
                          ("import os\nos.execv('/bin/true', ['true'])", "PermissionError: [Errno 1]"),
                          ("import os\nos.fork()", "PermissionError: [Errno 1]")]:
        answer = run_contained(job, hostile(snippet), read=[replayed], audit=False)
        assert any(says in p.message for p in answer.problems), (snippet, answer)


def test_backtest_strategy_gives_run_backtests_report_with_refusals_by_code(config) -> None:
    fok = WIDE.replace("post_only=True", "order_type='FOK'").replace("bid[0] + market.tick_size", "bid[0]")
    by_code, shipped = session(config, ("backtest_strategy", {"recording": "sim", "code": fok}),
                               ("backtest_strategy", {"recording": "scripted", "strategy": "arbitrage"}))
    report = ok(by_code)
    assert report["strategy"] == "spread" and report["recording"] == "sim" and report["signals"] > 0
    assert sum(report["refusals_by_code"].values()) > 0 and all(report["refusals_by_code"].values())
    assert Path(report["report"]).read_text().startswith("<!DOCTYPE html>")
    report = ok(shipped)
    assert (report["signals"], report["trades"], report["pnl"]) == (2, 4, "1.30172")  # as run_backtest gives it


@pytest.mark.parametrize("args, says", [
    ({"recording": "sim"}, "give exactly one of `code`"),
    ({"recording": "sim", "code": WIDE, "strategy": "arbitrage"}, "give exactly one of `code`"),
    ({"recording": "nope", "code": WIDE}, "list_recordings names the ones there are"),
    ({"recording": "sim", "strategy": "nope"}, "no strategy 'nope'"),
    ({"recording": "sim", "code": hostile("import socket\nsocket.socket()")}, "it tried to open a network socket"),
    ({"recording": "sim", "code": WIDE.replace("return out", "return out +")},
     f"line {line_of(WIDE, 'return out')}: invalid syntax"),
])
def test_bad_backtest_strategy_arguments_say_what_to_do(config, args: dict, says: str) -> None:
    assert says in error(session(config, ("backtest_strategy", args))[0])


def test_propose_strategy_keeps_a_pending_version_with_its_hash_and_approving_is_the_operators(config) -> None:
    store = Store(config.state_path)
    proposed, listed = session(config, ("propose_strategy", {
        "name": "wide_maker", "code": WIDE, "params": {"size": "6"}, "markets": ["0xabc"],
        "budget": {"max_order_notional": "20"}, "rationale": "wide spreads revert"}), ("list_strategies", {}))
    out = ok(proposed)
    assert out["state"] == "pending" and out["sha256"] == hashlib.sha256(WIDE.encode()).hexdigest()
    assert out["by"] == "mcp:agent" and out["budget"]["max_order_notional"] == "20"
    assert "`polybot strategy approve wide_maker`" in out["next"] and "Nothing runs until" in out["next"]
    assert out["backtest"]["recording"].startswith("sample") and out["backtest"]["signals"] > 0
    entry = store.get("wide_maker")
    assert entry.state == "pending" and entry.approved is None and entry.pending.sha256 == out["sha256"]
    assert store.code("wide_maker", "pending") == WIDE and entry.pending.backtest["pnl"] == out["backtest"]["pnl"]
    assert sorted(p.name for p in store.folder("wide_maker").iterdir()) == ["pending.json", "pending.py"]
    row = next(r for r in ok(listed)["strategies"] if r["name"] == "wide_maker")
    assert (row["origin"], row["state"], row["sha256"]) == ("agent", "pending", out["sha256"])

    # The operator approves (as `polybot strategy approve` does); the agent proposes a change: the approved code
    # stays as it was, and get_strategy shows the difference.
    store.approve("wide_maker", Budget(), by="operator")
    approved = (store.folder("wide_maker") / "approved.py").read_bytes()
    changed = WIDE.replace("inside a wide spread", "inside a very wide spread")
    again, detail = session(config, ("propose_strategy", {"name": "wide_maker", "code": changed,
                                                          "recording": "sim"}),
                            ("get_strategy", {"name": "wide_maker"}))
    assert ok(again)["approved_sha256"] == out["sha256"] and "keeps running unchanged" in ok(again)["next"]
    assert (store.folder("wide_maker") / "approved.py").read_bytes() == approved
    detail = ok(detail)
    assert detail["state"] == "approved" and detail["pending_differs"] is True
    assert detail["code"] == changed and detail["approved_code"] == WIDE


@pytest.mark.parametrize("args, says", [
    ({"name": "Wide Maker", "code": WIDE}, "lower-case letters"),
    ({"name": "arbitrage", "code": WIDE}, "pick another name"),
    ({"name": "bad_budget", "code": WIDE, "budget": {"max_daily_loss": "lots"}}, "max_daily_loss: 'lots' is not"),
    ({"name": "broken", "code": WIDE.replace("return out", "return out +")},
     f"not proposed: the check found line {line_of(WIDE, 'return out')}: invalid syntax"),
    ({"name": "spy", "code": hostile("import os\nos.system('id')")}, "not proposed: the check found contained: it "
                                                                     "tried to start a process"),
])
def test_a_proposal_that_fails_its_check_is_refused_and_nothing_is_kept(config, args: dict, says: str) -> None:
    assert says in error(session(config, ("propose_strategy", args))[0])
    assert args["name"] not in Store(config.state_path).names()


def test_no_tool_approves_starts_stops_or_sets_a_budget(config) -> None:
    async def names():
        async with Client(build(config)) as c:
            return {t.name: t.description for t in (await c.list_tools()).tools}
    tools = anyio.run(names)
    assert {"check_strategy", "backtest_strategy", "propose_strategy", "list_strategies", "get_strategy"} <= set(tools)
    assert not [n for n in tools if any(w in n for w in ("approve", "start", "stop", "budget", "enable"))]
    assert "no tool can" in tools["propose_strategy"]


def test_list_strategies_shows_shipped_and_configured_ones_and_get_strategy_their_code(config) -> None:
    listed, shipped, unknown = session(config, ("list_strategies", {}), ("get_strategy", {"name": "quoter"}),
                                       ("get_strategy", {"name": "nope"}))
    rows = {r["name"]: r for r in ok(listed)["strategies"]}
    assert (rows["arbitrage"]["state"], rows["arbitrage"]["service"]) == ("configured", "strategies")
    assert (rows["quoter"]["origin"], rows["quoter"]["state"]) == ("shipped", "available")
    assert "class Quoter" in ok(shipped)["code"]
    assert "list_strategies names them" in error(unknown)


def test_the_draft_strategy_prompts_example_passes_check_strategy(config) -> None:
    """What the prompt shows an agent is true: its minimal class keeps the contract and trades the sample."""
    from polybot_mcp.prompts import PROMPTS, load as load_prompts

    [template] = [t for t in load_prompts(PROMPTS) if t.front.name == "draft_strategy"]
    code = template.body.split("```python\n", 1)[1].split("```", 1)[0]
    report = ok(session(config, ("check_strategy", {"code": code}))[0])
    assert report["ok"] is True and report["name"] == "my_idea" and report["sample"]["signals"] > 0, report


def test_an_answer_over_its_bound_is_refused_and_the_child_killed(tmp_path: Path) -> None:
    """Agent code can write on the answer pipe (os.write is not audited): the server reads at most the bound."""
    replayed = sample(tmp_path)
    flood = ("import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'x' * (3 << 20))\n"
             "    except OSError:\n        pass")
    with pytest.raises(Stopped, match=r"^contained: its answer was over 1 MB; backtest a shorter recording$"):
        run_contained({"action": "check", "recording": str(replayed)}, hostile(flood),
                      limits(answer_mb=1), read=[replayed])
