"""The backtest tools through a real MCP client, in both protocol eras: the recordings there are, and a backtest
with progress notifications and a report. No mesh is needed for either."""
from __future__ import annotations

import os
from decimal import Decimal as D
from pathlib import Path

import anyio
import pytest
from mcp.client.client import Client

from polybot_mcp.server import build
from services.config import ensure_state_dir, load
from services.recording import RecordingWriter, read

from .test_backtest import scripted


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    root = Path(os.path.realpath(tmp_path_factory.mktemp("mcpbt")))
    (root / "polybot.toml").write_text(f'state_dir = "{root / "state"}"\n[local_venue]\nstart = false\n')
    config = load(root / "polybot.toml", {"HOME": str(root)})
    ensure_state_dir(config)
    recordings = config.state_path / "recordings"
    scripted(recordings / "scripted")
    with RecordingWriter(recordings / "2026" / "long") as w:  # the same market, many times over: a longer run
        for i in range(40):
            w.write_all([msg.__class__(**{**{f: getattr(msg, f) for f in msg.__struct_fields__},
                                          "ts_ns": msg.ts_ns + i * 10**10}) for msg in read(recordings / "scripted")
                         if not hasattr(msg, "winning_token_id")])
    return config


def call(config, tool: str, args: dict, mode: str, progress: list | None = None):
    async def session():
        async with Client(build(config), mode=mode) as c:
            async def on_progress(done: float, total: float | None, message: str | None) -> None:
                progress.append((done, total, message))
            return await c.call_tool(tool, args, progress_callback=on_progress if progress is not None else None)
    return anyio.run(session)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_list_recordings_names_each_with_its_span(config, mode: str) -> None:
    result = call(config, "list_recordings", {}, mode)
    assert result.is_error is False, result.content[0].text
    found = {r["name"]: r for r in result.structured_content["recordings"]}
    assert set(found) == {"scripted", "2026/long"}
    assert found["scripted"]["messages"] == 7 and found["scripted"]["markets"] == 2
    assert found["scripted"]["start"].startswith("2027-01-15T08:00:00")


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_run_backtest_returns_the_summary_and_the_report_with_progress(config, mode: str) -> None:
    progress: list = []
    result = call(config, "run_backtest", {"recording": "scripted", "strategy": "arbitrage"}, mode, progress)
    assert result.is_error is False, result.content[0].text
    out = result.structured_content
    assert (out["signals"], out["trades"], D(out["pnl"]), D(out["fees"])) == (2, 4, D("1.30172"), D("0.29828"))
    assert out["params"]["min_edge"] == "0.005" and D(out["hit_rate"]) == 1
    assert [(r["market"], r["trades"], r["pnl"]) for r in out["per_market"]] == [("A", 4, "1.30172")]
    assert Path(out["report"]).read_text().startswith("<!DOCTYPE html>") and Path(out["result"]).is_file()
    assert progress and progress[-1][0] == progress[-1][1] == 7
    assert [p[0] for p in progress] == sorted(p[0] for p in progress)


def test_a_long_backtest_reports_progress_as_it_goes(config) -> None:
    progress: list = []
    result = call(config, "run_backtest", {"recording": "2026/long", "strategy": "arbitrage",
                                           "params": {"cooldown_ms": "100"}}, "legacy", progress)
    assert result.is_error is False, result.content[0].text
    assert progress[-1][0] == progress[-1][1] and len(progress) >= 1


@pytest.mark.parametrize("args, says", [
    ({"recording": "nope", "strategy": "arbitrage"}, "list_recordings names the ones there are"),
    ({"recording": "../../etc", "strategy": "arbitrage"}, "not under the recordings folder"),
    ({"recording": "scripted", "strategy": "arbitrage", "params": {"min_edge": "lots"}}, "its parameters: min_edge"),
    ({"recording": "scripted", "strategy": "arbitrage", "params": {"nope": "1"}}, "nope"),
])
def test_bad_backtest_arguments_say_what_to_do(config, args: dict, says: str) -> None:
    result = call(config, "run_backtest", args, "legacy")
    assert result.is_error is True and says in result.content[0].text


def test_run_backtest_shows_what_risk_refuses_under_the_configs_limits(tmp_path: Path) -> None:
    root = Path(os.path.realpath(tmp_path))
    (root / "polybot.toml").write_text(f'state_dir = "{root / "state"}"\n[local_venue]\nstart = false\n'
                                       '[services.risk.options.limits]\nmax_order_notional = 5\n')
    tight = load(root / "polybot.toml", {"HOME": str(root)})
    ensure_state_dir(tight)
    scripted(tight.state_path / "recordings" / "scripted")
    result = call(tight, "run_backtest", {"recording": "scripted", "strategy": "arbitrage"}, "legacy")
    assert result.is_error is False, result.content[0].text
    out = result.structured_content
    # The first pair (20 x 0.45 and 20 x 0.50) is over the order limit of 5; the second (10 x 0.44, 10 x 0.50)
    # passes and fills.
    assert (out["signals"], out["signals_refused"], out["risk_refusals"]) == (2, 1, {"ORDER_NOTIONAL": 1})
    assert (out["trades"], out["orders_refused"], out["executor_refusals"]) == (2, 0, {})
