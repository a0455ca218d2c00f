"""An agent's session over stdio against the running mesh and local venue: it finds a mispriced market, previews,
proposes a two-leg signal through risk and follows it to its fills; the same in two calls (scan, then propose and
wait for the fills); then through the MCP Inspector CLI."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path

import anyio
import httpx
import pytest
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp_types import Implementation

from services import messages as m

from .conftest import ROOT, child_env, wait_for
from .trading_harness import Trading, agent_mesh
from .venue_harness import tokens

INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"
AGENT = {"MAX_ORDER_NOTIONAL": "25", "MAX_DAILY_NOTIONAL": "200"}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Iterator[Trading]:
    root = Path(os.path.realpath(tmp_path_factory.mktemp("stdio")))
    env = {f"POLYBOT_SERVICES__RISK__OPTIONS__AGENT__{k}": v for k, v in AGENT.items()}
    with agent_mesh(root, 73, env, "--markets", "25") as mesh:
        yield mesh


def stdio(mesh: Trading, *args: str) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "polybot_mcp", "--config",
                                                               str(mesh.config_file), *args], env=child_env())


def data(result) -> dict:
    assert result.is_error is False, result.content[0].text
    return result.structured_content


def test_an_agent_over_stdio_finds_a_gap_previews_proposes_through_risk_and_follows_it_to_fills(
        mesh: Trading) -> None:
    target = mesh.venue.market()
    httpx.post(f"{mesh.venue.clob}/_admin/gap", json={"market": target["conditionId"], "gap": "0.06", "size": "20"})
    accepted_before = int(mesh.detail("risk")["accepted"])

    async def session():
        # The operator names the agent (--agent desk); the client's own name is only a label.
        async with Client(stdio(mesh, "--agent", "desk"), client_info=Implementation(name="desk-agent",
                                                                                       version="1")) as agent:
            async def tool(name: str, **args):
                return data(await agent.call_tool(name, args))

            async def mispriced():
                cursor, found = None, None
                while found is None:
                    page = await tool("search_markets", limit=10, **({"cursor": cursor} if cursor else {}))
                    for mk in page["markets"]:
                        asks = [o["best_ask"] for o in mk["outcomes"]]
                        if None not in asks and sum(D(a) for a in asks) < 1:
                            found = mk
                    cursor = page["next_cursor"]
                    if cursor is None:
                        break
                return found
            market = await mispriced()
            assert market is not None and market["market"] == target["conditionId"]
            detail = await tool("get_market", market=market["market"])
            legs = [{"token_id": o["token_id"], "side": "BUY", "size": 20, "limit_price": o["best_ask"],
                     "order_type": "FOK"} for o in detail["outcomes"]]
            preview = await tool("preview_signal", legs=legs, rationale="asks sum below 1")
            verdict = await tool("propose_signal", legs=legs, rationale="asks sum below 1")
            follow = None
            with anyio.fail_after(20):
                while follow is None or len(follow["fills"]) < 2:
                    got = await agent.call_tool("get_signal", {"signal_id": verdict["signal_id"]})
                    follow = None if got.is_error else got.structured_content  # an error: not recorded yet
                    await anyio.sleep(0.1)
            too_big = await tool("propose_signal", rationale="over the agent's order limit", legs=[
                {**legs[0], "size": 200, "order_type": "GTC"}])
            return preview, verdict, follow, too_big

    preview, verdict, follow, too_big = anyio.run(session)
    assert preview["status"] == "accepted" and preview["order_ids"] == []
    assert verdict["status"] == "accepted" and len(verdict["order_ids"]) == 2
    assert {f["order_id"] for f in follow["fills"]} == set(verdict["order_ids"])
    assert all(f["source"] == "mcp:desk" for f in follow["fills"])
    assert int(mesh.detail("risk")["accepted"]) == accepted_before + 1  # risk decided it: no shortcut
    reason = next(r for r in too_big["reasons"] if r["code"] == "ORDER_NOTIONAL")
    assert too_big["status"] == "rejected" and D(reason["limit"]) == 25
    assert D(too_big["max_size"]) == (25 / D(verdict["legs"][0]["limit_price"])).quantize(D("0.01"),
                                                                                             rounding="ROUND_DOWN")


def test_over_stdio_a_gap_becomes_a_filled_equal_pair_in_two_calls_told_in_short_text(mesh: Trading) -> None:
    target = mesh.venue.market()
    gap = httpx.post(f"{mesh.venue.clob}/_admin/gap", json={"market": target["conditionId"], "gap": "0.08",
                                                             "size": "20"}).json()
    asks = {D(a) for a in gap["asks"].values()}

    async def session():
        async with Client(stdio(mesh), client_info=Implementation(name="pair-agent", version="1")) as agent:
            texts = []

            async def tool(name: str, **args) -> dict:
                result = await agent.call_tool(name, args)
                texts.append(result.content[0].text)
                return data(result)
            with anyio.fail_after(20):
                while True:  # the scanner has the gap once the venue's book update reached it
                    found = (await tool("scan_opportunities"))["opportunities"]
                    if found and found[0]["key"] == target["conditionId"]:
                        break
            done = await tool("propose_signal", legs=found[0]["legs"], rationale="a set below 1", wait="fills")
            return found[0], done, texts[-2:]

    best, done, texts = anyio.run(session)
    assert {D(leg["limit_price"]) for leg in best["legs"]} == asks
    outcome = done["outcome"]
    assert done["status"] == "accepted" and outcome["done"] is True
    assert [(leg["state"], leg["filled"]) for leg in outcome["legs"]] == [("filled", best["sets"])] * 2
    assert D(outcome["fees"]) == D(best["fees"]) and D(outcome["paid"]) == D(best["cost"])
    for text in texts:  # what the model reads: compact JSON, no empty fields, well under the budget
        assert text == json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)
        assert ":null" not in text and len(text) < 4000


def inspector(mesh: Trading, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["npx", "-y", INSPECTOR, "--cli", *args, "--", sys.executable, "-m", "polybot_mcp",
                           "--config", str(mesh.config_file)], cwd=ROOT, env=child_env(), capture_output=True,
                          text=True, timeout=300)


@pytest.mark.skipif(shutil.which("npx") is None, reason="the MCP Inspector runs on Node (npx)")
def test_the_mcp_inspector_cli_lists_strictly_and_calls_a_read_tool_and_propose_signal(mesh: Trading) -> None:
    listed = inspector(mesh, "--method", "tools/list", "--strict")
    assert listed.returncode == 0, listed.stderr
    assert "propose_signal" in {t["name"] for t in json.loads(listed.stdout)["tools"]}
    searched = inspector(mesh, "--method", "tools/call", "--tool-name", "search_markets", "--tool-arg", "limit=3")
    assert searched.returncode == 0, searched.stderr
    markets = json.loads(searched.stdout)["structuredContent"]["markets"]
    assert len(markets) == 3
    outcome = markets[0]["outcomes"][0]
    low = D(outcome["best_bid"]) - D("0.05")
    assert outcome.get("token_id") is None  # a search answer is short: the market's slug and the outcome name a leg
    leg = {"market": markets[0]["slug"], "outcome": outcome["name"], "side": "buy", "size": 5,
           "limit_price": str(low)}
    proposed = inspector(mesh, "--method", "tools/call", "--tool-name", "propose_signal",
                         "--tool-arg", f"legs={json.dumps([leg])}", "rationale=inspector test")
    assert proposed.returncode == 0, proposed.stderr
    verdict = json.loads(proposed.stdout)["structuredContent"]
    assert verdict["status"] == "accepted" and len(verdict["order_ids"]) == 1
    wait_for(lambda: any(o.order_id == verdict["order_ids"][0]
                         for o in mesh.ask("executor", m.AccountRequest()).orders),
             what="the inspector's order resting at the executor")


EXITS, AT_ONCE = 20, 2


def test_a_stdio_server_exits_cleanly_every_time_after_trading(mesh: Trading, tmp_path: Path, monkeypatch) -> None:
    """Each run connects the server's signal socket and reader threads (a proposal), then the client closes stdin:
    the server stops its readers before closing the sockets, so NNG's exit never meets a thread in a receive
    (before, about one exit in eight aborted with `pthread_mutex_lock: Invalid argument`)."""
    # The client kills a server still running 2 s after it closed stdin; on a busy machine a clean exit can take
    # longer, so it waits 10 s here: a kill is then a hang, not a slow exit.
    monkeypatch.setattr("mcp.client.stdio.PROCESS_TERMINATION_TIMEOUT", 10.0)
    token, _ = tokens(mesh.venue.market())
    leg = {"token_id": token, "side": "BUY", "size": 1000, "limit_price": "0.5"}  # over the agent's order limit
    results: dict[int, tuple[str, str]] = {}

    async def run(n: int) -> None:
        code = tmp_path / f"exit-{n}"
        # sh runs the server and keeps its exit status: the SDK's client does not report it.
        server = StdioServerParameters(command="sh", args=[
            "-c", f'"$@" 2>"{code}.err"; echo $? >"{code}"', "sh", sys.executable, "-m", "polybot_mcp",
            "--config", str(mesh.config_file)], env=child_env())
        async with Client(server) as agent:
            verdict = data(await agent.call_tool("propose_signal", {"legs": [leg], "rationale": "exit test"}))
            assert verdict["status"] == "rejected"
        # The client returns once the server's process tree is gone, so sh has written the status.
        results[n] = (code.read_text().strip() if code.exists() else "killed", (tmp_path / f"exit-{n}.err").read_text())

    async def runs(first: int) -> None:
        for n in range(first, EXITS, AT_ONCE):
            await run(n)

    async def all_runs() -> None:
        async with anyio.create_task_group() as group:
            for first in range(AT_ONCE):
                group.start_soon(runs, first)

    anyio.run(all_runs)
    failed = [(n, c, err[-300:]) for n, (c, err) in sorted(results.items()) if c != "0"]
    assert len(results) == EXITS and failed == [], failed
