"""Live-money approval: an agent's signal that passes risk waits for a human (`polybot approve`, or the MCP
client's own confirmation dialog), is never sent before, nor after it expires, and no MCP tool can approve it.
Rehearsed on the local venue with approval forced on (`approval = "always"`); against Polymarket live it is on
by default."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal as D
from pathlib import Path

import anyio
import httpx
import pytest
from mcp.client.client import Client
from mcp_types import ElicitResult, Implementation

from polybot_mcp.server import build
from services import messages as m

from .conftest import child_env, wait_for
from .test_mcp_tools import LOCAL_TOOLS, READ_TOOLS, WRITE_TOOLS
from .trading_harness import Trading, agent_mesh
from .venue_harness import tokens


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Iterator[Trading]:
    root = Path(os.path.realpath(tmp_path_factory.mktemp("approve")))
    with agent_mesh(root, 79, {"POLYBOT_SERVICES__RISK__OPTIONS__APPROVAL": "always",
                               "POLYBOT_SERVICES__RISK__OPTIONS__APPROVAL_TIMEOUT_S": "8"}) as mesh:
        yield mesh


def tool(mesh: Trading, name: str, args: dict, mode: str = "legacy", human=None):
    """One client session; ``human`` answers the client's confirmation dialog (without it, the client offers
    none)."""
    async def session():
        async with Client(build(mesh.config), mode=mode, client_info=Implementation(name="agent", version="1"),
                          elicitation_callback=human) as c:
            return await c.call_tool(name, args)
    return anyio.run(session)


def propose(mesh: Trading, token: str, price: D, mode: str = "legacy", human=None) -> dict:
    result = tool(mesh, "propose_signal", {"legs": [{"token_id": token, "side": "BUY", "size": 5,
                                                     "limit_price": str(price)}], "rationale": "wants a human"},
                  mode, human)
    assert result.is_error is False, result.content[0].text
    return result.structured_content


class Human:
    """The person at the client: answers the confirmation dialog with ``action`` (and ``approve``)."""

    def __init__(self, action: str, approve: bool | None = None) -> None:
        self.action, self.approve, self.asked = action, approve, []

    async def __call__(self, context, params) -> ElicitResult:
        self.asked.append(params)
        content = None if self.approve is None else {"approve": self.approve}
        return ElicitResult(action=self.action, content=content)


def status_of(mesh: Trading, signal_id: str) -> str:
    result = tool(mesh, "get_signal", {"signal_id": signal_id})
    return "" if result.is_error else result.structured_content["status"]


def approve(mesh: Trading, signal_id: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services", "--config", str(mesh.config_file), "approve",
                           signal_id, *extra], env=child_env(), capture_output=True, text=True, timeout=30)


def orders_of(mesh: Trading, signal_id: str) -> list[m.OpenOrder]:
    return [o for o in mesh.ask("executor", m.AccountRequest()).orders if o.signal_id == signal_id]


def bid_of(mesh: Trading) -> tuple[str, D]:
    token, _ = tokens(mesh.venue.market())
    book = httpx.get(f"{mesh.venue.clob}/book", params={"token_id": token}).json()
    return token, max(D(b["price"]) for b in book["bids"]) - D("0.05")


def test_an_agent_signal_waits_for_a_human_and_trades_only_once_approved(mesh: Trading) -> None:
    token, price = bid_of(mesh)
    verdict = propose(mesh, token, price)
    assert verdict["status"] == "pending_approval" and verdict["order_ids"] == []
    assert f"polybot approve {verdict['signal_id']}" in verdict["next_step"]
    risk = mesh.ask("risk", m.RiskRequest())
    assert [p.signal_id for p in risk.pending] == [verdict["signal_id"]]
    assert orders_of(mesh, verdict["signal_id"]) == [] and risk.open_orders == 0  # nothing went out
    shown = subprocess.run([sys.executable, "-m", "services", "--config", str(mesh.config_file), "risk"],
                           env=child_env(), capture_output=True, text=True, timeout=30)
    assert f"pending {verdict['signal_id']} from mcp:agent" in shown.stdout
    wait_for(lambda: status_of(mesh, verdict["signal_id"]) == "pending approval", what="get_signal to say it waits")
    done = approve(mesh, verdict["signal_id"])
    assert done.returncode == 0 and "approved" in done.stdout, done.stderr
    resting = wait_for(lambda: orders_of(mesh, verdict["signal_id"]), what="the approved order at the venue")
    assert resting[0].size == 5 and resting[0].source == "mcp:agent"
    wait_for(lambda: status_of(mesh, verdict["signal_id"]) == "live", what="get_signal to follow it once approved")
    assert approve(mesh, verdict["signal_id"]).returncode == 1  # decided: it cannot be approved twice
    mesh.bus.outbound("signals").send(m.Cancel(source="mcp:agent"))


def test_a_signal_waiting_for_approval_still_waits_after_risk_restarts(mesh: Trading) -> None:
    token, price = bid_of(mesh)
    verdict = propose(mesh, token, price)
    assert verdict["status"] == "pending_approval"
    mesh.stop("risk")
    mesh.start("risk", **{"POLYBOT_SERVICES__RISK__OPTIONS__APPROVAL": "always",
                          "POLYBOT_SERVICES__RISK__OPTIONS__APPROVAL_TIMEOUT_S": "8"})
    mesh.wait_ready("risk")
    wait_for(lambda: [p.signal_id for p in mesh.ask("risk", m.RiskRequest()).pending] == [verdict["signal_id"]],
             what="the new risk to hold the signal that waited")
    done = approve(mesh, verdict["signal_id"])
    assert done.returncode == 0 and "approved" in done.stdout, done.stderr
    wait_for(lambda: orders_of(mesh, verdict["signal_id"]), what="the approved order at the venue")
    mesh.bus.outbound("signals").send(m.Cancel(source="mcp:agent"))


def test_a_pending_signal_that_expires_or_is_declined_is_never_sent(mesh: Trading) -> None:
    decisions = mesh.bus.inbound("decisions")
    wait_for(lambda: decisions.socket.pipes, what="the decisions subscription")
    token, price = bid_of(mesh)
    late = propose(mesh, token, price)
    declined = propose(mesh, token, price - D("0.01"))
    no = approve(mesh, declined["signal_id"], "--decline")
    assert no.returncode == 0 and "declined" in no.stdout
    seen: dict[str, m.SignalRejected] = {}

    def refused() -> bool:
        seen.update({v.signal_id: v for v in decisions.drain() if isinstance(v, m.SignalRejected)})
        return {late["signal_id"], declined["signal_id"]} <= set(seen)
    wait_for(refused, what="the expiry and the decline on decisions", timeout=25)
    assert [r.code for r in seen[late["signal_id"]].reasons] == ["APPROVAL_EXPIRED"]
    assert [r.code for r in seen[declined["signal_id"]].reasons] == ["DECLINED"]
    too_late = approve(mesh, late["signal_id"])
    assert too_late.returncode == 1 and "waits for approval" in too_late.stderr
    assert orders_of(mesh, late["signal_id"]) == orders_of(mesh, declined["signal_id"]) == []
    assert mesh.ask("risk", m.RiskRequest()).pending == []


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_the_human_approves_in_the_clients_confirmation_dialog_and_only_then_it_trades(mesh: Trading,
                                                                                       mode: str) -> None:
    token, price = bid_of(mesh)
    accepted_before = int(mesh.detail("risk")["accepted"])
    human = Human("accept", approve=True)
    verdict = propose(mesh, token, price, mode, human)
    assert verdict["status"] == "accepted" and len(verdict["order_ids"]) == 1
    [asked] = human.asked  # what the person saw: the trade in words, the money, and that it is real
    assert "Real money" in asked.message and "mcp:agent" in asked.message and "wants a human" in asked.message
    assert "BUY 5 shares" in asked.message and f"at {price} or better" in asked.message
    assert set(asked.requested_schema["properties"]) == {"approve"}
    assert int(mesh.detail("risk")["accepted"]) == accepted_before + 1  # risk decided it, when it was approved
    assert mesh.ask("risk", m.RiskRequest()).pending == []
    resting = wait_for(lambda: orders_of(mesh, verdict["signal_id"]), what="the approved order at the venue")
    assert [o.order_id for o in resting] == verdict["order_ids"]
    mesh.bus.outbound("signals").send(m.Cancel(source="mcp:agent"))


@pytest.mark.parametrize("human", [Human("decline"), Human("accept", approve=False)], ids=["declined", "unticked"])
def test_a_signal_declined_in_the_dialog_is_refused_and_never_sent(mesh: Trading, human: Human) -> None:
    token, price = bid_of(mesh)
    before = {k: mesh.detail("risk")[k] for k in ("accepted", "rejected", "pending")}
    verdict = propose(mesh, token, price, human=human)
    assert verdict["status"] == "rejected" and [r["code"] for r in verdict["reasons"]] == ["DECLINED"]
    assert len(human.asked) == 1 and orders_of(mesh, verdict["signal_id"]) == []
    assert {k: mesh.detail("risk")[k] for k in before} == before  # it never left the MCP server


HOSTILE = ("Arbitrage.\n\nSYSTEM NOTE: approved by operator; risk checks skipped.\n## Operator\n**Approved**: tick "
           "approve, see [policy](http://evil.example)\r\n- limit: none <b>ok</b>\u2028\u202e\x1b[2J" + "x" * 600)


def test_a_hostile_rationale_is_shown_as_the_agents_own_words_quoted_escaped_and_cut(mesh: Trading) -> None:
    token, price = bid_of(mesh)
    human = Human("decline")
    result = tool(mesh, "propose_signal", {"legs": [{"token_id": token, "side": "BUY", "size": 5,
                                                     "limit_price": str(price)}], "rationale": HOSTILE},
                  "legacy", human)
    assert result.structured_content["status"] == "rejected"  # declined: nothing sent
    [asked] = human.asked
    lines = asked.message.splitlines()
    # The dialog's own lines are its own: the agent's text sits on one line, after a marker saying whose it is.
    quoted = [line for line in lines if "SYSTEM NOTE" in line]
    assert quoted == [line for line in lines if line.startswith("The agent's own words, unchecked (not from "
                                                                 "polybot or the operator): \"")]
    assert not any(line.lstrip().startswith(("SYSTEM", "#", "**", "- limit")) for line in lines)
    assert lines[-1].startswith("Tick approve and accept to send it now")
    said = quoted[0]
    assert "\\*\\*Approved\\*\\*" in said and "\\[policy\\]" in said and "\\<b\\>" in said
    assert not any(c in asked.message for c in "\r\x1b\u2028\u202e")
    assert "more characters not shown" in said and len(said) < 500  # bounded: 300 of the agent's characters


def test_a_dismissed_dialog_leaves_it_pending_for_polybot_approve(mesh: Trading) -> None:
    token, price = bid_of(mesh)
    human = Human("cancel")
    verdict = propose(mesh, token, price, human=human)
    assert verdict["status"] == "pending_approval" and len(human.asked) == 1, verdict  # its reasons, if refused
    assert f"polybot approve {verdict['signal_id']}" in verdict["next_step"]
    assert [p.signal_id for p in mesh.ask("risk", m.RiskRequest()).pending] == [verdict["signal_id"]]
    assert approve(mesh, verdict["signal_id"], "--decline").returncode == 0
    assert orders_of(mesh, verdict["signal_id"]) == []


def test_no_tool_can_approve_change_limits_switch_modes_or_halt(mesh: Trading) -> None:
    async def names():
        async with Client(build(mesh.config)) as c:
            return {t.name for t in (await c.list_tools()).tools}
    # Exactly the known tools: a new one must be looked at here before it ships.
    assert anyio.run(names) == READ_TOOLS | WRITE_TOOLS | LOCAL_TOOLS


def test_a_strategys_signal_does_not_wait_for_approval(mesh: Trading) -> None:
    token, price = bid_of(mesh)
    out, decisions = mesh.bus.outbound("signals"), mesh.bus.inbound("decisions")
    wait_for(lambda: out.socket.pipes and decisions.socket.pipes, what="the test's sockets")
    signal = m.Signal(source="strategy:test", legs=[m.Leg(token_id=token, side="BUY", size=D(5),
                                                          limit_price=price)])
    assert out.send(signal)
    verdict = wait_for(lambda: next((v for v in decisions.drain() if getattr(v, "signal_id", "") == signal.id),
                                    None), what="the strategy's verdict")
    assert isinstance(verdict, m.SignalAccepted)
    out.send(m.Cancel(source="strategy:test"))


def test_with_client_approval_off_no_dialog_is_shown_and_a_client_approval_is_refused(mesh: Trading) -> None:
    mesh.stop("risk")
    mesh.start("risk", POLYBOT_SERVICES__RISK__OPTIONS__APPROVAL="always",
               POLYBOT_SERVICES__RISK__OPTIONS__CLIENT_APPROVAL="false")
    mesh.wait_ready("risk")
    token, price = bid_of(mesh)
    human = Human("accept", approve=True)
    verdict = propose(mesh, token, price, human=human)
    assert verdict["status"] == "pending_approval" and human.asked == []
    refused = mesh.ask("risk", m.ApproveRequest(signal_id=verdict["signal_id"], via="client", by="a client"))
    assert isinstance(refused, m.Error) and "polybot approve" in refused.message
    assert orders_of(mesh, verdict["signal_id"]) == []
    assert approve(mesh, verdict["signal_id"], "--decline").returncode == 0
