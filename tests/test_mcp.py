"""polybot-mcp: its tool through a real MCP client, in memory (both protocol eras) and over stdio."""
from __future__ import annotations

import json
import subprocess
import sys

import anyio
import pytest
from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters

from polybot_mcp.server import build
from services.config import load

from .conftest import Mesh, child_env, wait_for
from .test_supervisor import PAIR, _running


@pytest.mark.parametrize("mode", ["legacy", "auto"])  # the initialize handshake, and the 2026 discover era
def test_mesh_status_is_a_read_only_tool_with_an_output_schema_and_reports_a_stopped_mesh_as_down(
        mesh_factory, mode: str) -> None:
    mesh: Mesh = mesh_factory(PAIR)
    config = load(mesh.config, {"HOME": str(mesh.state)})

    async def session():
        async with Client(build(config), mode=mode) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            result = await client.call_tool("mesh_status", {})
            return tools, result

    tools, result = anyio.run(session)
    tool = tools["mesh_status"]
    assert tool.annotations.read_only_hint is True and tool.output_schema is not None
    assert result.is_error is False
    assert result.structured_content["all_up"] is False
    assert {s["name"]: s["state"] for s in result.structured_content["services"]} == {
        "supervisor": "down", "tally": "down", "ticker": "down"}


def test_an_mcp_client_over_stdio_sees_the_running_mesh(mesh_factory) -> None:
    mesh: Mesh = mesh_factory(PAIR)
    mesh.start()
    wait_for(lambda: _running(mesh, "tally", "ticker"), what="the mesh to come up")
    params = StdioServerParameters(command=sys.executable, args=["-m", "polybot_mcp", "--config", str(mesh.config)],
                                   env=child_env())

    async def session():
        async with Client(params) as client:
            return await client.call_tool("mesh_status", {})

    result = anyio.run(session)
    status = result.structured_content
    assert status["all_up"] is True
    services = {s["name"]: s for s in status["services"]}
    assert services["tally"]["sockets"]["prices"]["received"] > 0
    assert services["ticker"]["sockets"]["prices"]["sent"] > 0


def test_the_stdio_server_writes_nothing_but_json_rpc_to_stdout(mesh_factory) -> None:
    mesh: Mesh = mesh_factory(PAIR)
    requests = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize",
         "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "mesh_status", "arguments": {}}},
    ]
    proc = subprocess.Popen([sys.executable, "-m", "polybot_mcp", "--config", str(mesh.config)], env=child_env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdin.write("".join(json.dumps(r) + "\n" for r in requests))
    proc.stdin.flush()
    lines = []
    while len([x for x in lines if "id" in x]) < 2:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        lines.append(json.loads(line))  # every line must be JSON-RPC
    proc.stdin.close()
    proc.wait(30)
    assert all(x["jsonrpc"] == "2.0" for x in lines)
    call = next(x for x in lines if x.get("id") == 2)
    assert call["result"]["structuredContent"]["all_up"] is False
