"""Tool sets: the operator serves every tool, none that trades, or only those that change nothing; the tool list
and the server's instructions say which (no mesh needed: tools connect only when called)."""
from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from mcp.client.client import Client

from polybot_mcp.server import build
from services.config import ConfigError, load

TRADING = {"propose_signal", "close_position", "cancel_orders"}


def served(tmp_path: Path, toml: str = "", tool_set: str = "") -> tuple[set[str], dict[str, str], str]:
    (tmp_path / "polybot.toml").write_text(toml)
    config = load(tmp_path / "polybot.toml", {"HOME": str(tmp_path), "POLYBOT_BUS__TRANSPORT": "tcp"})

    async def session():
        async with Client(build(config, tool_set), mode="auto") as client:
            tools = (await client.list_tools()).tools
            return {t.name for t in tools}, {t.name: t.description or "" for t in tools}, client.instructions or ""
    return anyio.run(session)


def test_the_default_set_serves_every_tool_trading_included(tmp_path: Path) -> None:
    names, described, instructions = served(tmp_path)
    assert TRADING | {"run_backtest", "scan_opportunities", "get_fills"} <= names
    assert "serves the tool set 'trading'" in described["mesh_status"]
    assert "Tool set served: trading" in instructions and "propose_signal" in instructions


def test_no_trading_leaves_out_every_tool_that_sends_orders_or_cancels(tmp_path: Path) -> None:
    names, described, _ = served(tmp_path, '[mcp]\ntools = "no_trading"\n')
    everything, _, _ = served(tmp_path)
    assert names == everything - TRADING
    assert "serves the tool set 'no_trading'" in described["mesh_status"]


def test_read_only_serves_only_tools_that_change_nothing(tmp_path: Path) -> None:
    names, described, instructions = served(tmp_path, tool_set="read_only")  # as `polybot-mcp --tools read_only`
    everything, _, _ = served(tmp_path)
    assert names == everything - TRADING - {"run_backtest", "backtest_strategy", "propose_strategy"}
    assert {"check_strategy", "list_strategies", "get_strategy"} <= names
    assert "serves the tool set 'read_only'" in described["mesh_status"]
    assert "Tool set served: read_only" in instructions and "propose_signal" not in instructions


def test_an_unknown_tool_set_is_refused_naming_the_choices(tmp_path: Path) -> None:
    (tmp_path / "polybot.toml").write_text('[mcp]\ntools = "everything"\n')
    with pytest.raises(ConfigError, match="mcp.tools: Invalid enum value 'everything'"):
        load(tmp_path / "polybot.toml", {"HOME": str(tmp_path)})
