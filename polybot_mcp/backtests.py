"""Backtest tools: the recordings there are, and a backtest of a shipped strategy on one of them, through risk
under the config's limits and the executor's order path (``services.backtest.engine``).

A backtest runs in a worker thread of this server (it needs no running mesh) and reports its progress to the
client while it runs. Recordings are named, not pathed: an agent reads only what is under the recordings
folder (``<state_dir>/recordings``), and the reports go under ``<state_dir>/backtests``.
"""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field

from services.backtest.engine import BacktestError, backtest, risk_options
from services.backtest.report import run_folder, save
from services.backtest.result import BacktestResult
from services.config import Config, ConfigError
from services.recording import RecordingError, count, describe, find
from services.strategies import REGISTRY

READ = ToolAnnotations(readOnlyHint=True, openWorldHint=False)
RUN = ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=True, openWorldHint=False)
PROGRESS_S = 0.25
StrategyName = Literal[tuple(sorted(REGISTRY))]  # type: ignore[valid-type]


class RecordingView(BaseModel):
    name: str = Field(description="Pass it to run_backtest as `recording`")
    segments: int
    bytes: int
    messages: int
    markets: int
    start: str | None = Field(description="Market time of its first message (UTC)")
    end: str | None


class Recordings(BaseModel):
    folder: str
    recordings: list[RecordingView]


class BacktestView(BaseModel):
    strategy: str
    params: dict[str, str] = Field(description="Every parameter as run, defaults included")
    recording: str
    messages: int
    signals: int
    signals_refused: int = Field(description="Signals risk refused, under the limits this server's config sets")
    risk_refusals: dict[str, int] = Field(description="Risk's reason code -> signals refused for it (a signal may "
                                                      "have several)")
    orders_refused: int = Field(description="Orders the executor or the paper venue refused")
    executor_refusals: dict[str, int] = Field(description="Their code (e.g. FOK_UNFILLED) -> orders refused")
    trades: int
    volume: str
    fees: str
    rebates: str = Field(description="Maker rebates, estimated as the venue pays them: the market's rebate rate x "
                                     "the taker fee of each maker fill")
    realized: str
    unrealized: str
    pnl: str = Field(description="realized + unrealized + rebates")
    max_drawdown: str
    max_exposure: str
    hit_rate: str | None = Field(description="Share of signals that filled and made money by the end")
    per_market: list[dict[str, str | int | None]] = Field(description="PnL, fees and trades per market")
    report: str = Field(description="The HTML report (equity curve, drawdown, trades), for a human to open")
    result: str = Field(description="Every signal, fill and equity point as JSON")


def _iso(ns: int) -> str | None:
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).isoformat() if ns else None


def _text(value: object) -> str | int | None:
    return value if value is None or isinstance(value, int) else str(value)


def recording_path(root: Path, name: str) -> Path:
    """The recording ``name`` under ``root`` (the recordings folder); a ToolError for any other path."""
    path = (root / name).resolve()
    if not name or root.resolve() not in (path, *path.parents) or path == root.resolve():
        raise ToolError(f"recording {name!r} is not under the recordings folder; list_recordings names them")
    if not path.exists():
        raise ToolError(f"no recording {name!r}; list_recordings names the ones there are, and "
                        "`polybot record` makes one")
    return path


def backtest_view(result: BacktestResult, recording: str, out: Path) -> dict:
    """The report of ``result`` written under ``out``, and the fields of a BacktestView."""
    summary, files = save(result, out)
    return dict(
        strategy=result.strategy, params=summary.params, recording=recording, messages=summary.messages,
        signals=summary.signals, signals_refused=summary.signals_refused, risk_refusals=summary.risk_refusals,
        orders_refused=summary.refused, executor_refusals=summary.executor_refusals, trades=summary.trades,
        volume=str(summary.volume), fees=str(summary.fees), rebates=str(summary.rebates),
        realized=str(summary.realized), unrealized=str(summary.unrealized), pnl=str(summary.pnl),
        max_drawdown=str(summary.max_drawdown), max_exposure=str(summary.max_exposure),
        hit_rate=None if summary.hit_rate is None else str(summary.hit_rate),
        per_market=[{k: _text(v) for k, v in msgspec.structs.asdict(row).items()} for row in summary.per_market],
        report=str(files.html), result=str(out / "result.json"))


def register_backtest_tools(server: MCPServer, config: Config) -> None:
    root = config.state_path / "recordings"

    @server.tool(annotations=READ)
    async def list_recordings() -> Recordings:
        """Recordings of market data (prices and events) a backtest can replay, with their span and size."""
        def scan() -> list[RecordingView]:
            out = []
            for path in find(root):
                info = describe(path)
                out.append(RecordingView(name=str(path.relative_to(root)), segments=info.segments,
                                         bytes=info.bytes, messages=info.messages, markets=info.markets,
                                         start=_iso(info.started_ns), end=_iso(info.ended_ns)))
            return out
        return Recordings(folder=str(root), recordings=await asyncio.to_thread(scan))

    @server.tool(annotations=RUN)
    async def run_backtest(
        recording: Annotated[str, Field(description="A recording's name from list_recordings")],
        strategy: Annotated[StrategyName, Field(description="A shipped strategy")],
        params: Annotated[dict[str, str], Field(
            description="Strategy parameters by name, as text (e.g. {\"min_edge\": \"0.01\"}); unset: defaults")
        ] = {},  # noqa: B006 - pydantic copies defaults
        ctx: Context = None,  # type: ignore[assignment]
    ) -> BacktestView:
        """Replay a recording into a shipped strategy, through risk (the limits the mesh trades under) and the
        executor's order path, with paper fills (book walk, queue position, taker fees), and return the summary:
        signals and what risk and the executor refused (by code), trades, PnL, fees, drawdown, exposure, hit rate,
        per market, and the path of the full report. Sends progress while it runs. Nothing trades."""
        path = recording_path(root, recording)
        try:
            limits = risk_options(config)
        except ConfigError as exc:
            raise ToolError(f"the config's risk limits cannot be read ({exc}); fix the config, then try again") \
                from None
        try:
            total = await asyncio.to_thread(count, path)
        except RecordingError as exc:
            raise ToolError(str(exc)) from None
        done = [0]  # messages replayed so far, set by the worker thread
        job = asyncio.ensure_future(asyncio.to_thread(
            backtest, path, strategy, params, progress=lambda n: done.__setitem__(0, n), risk=limits))
        while not job.done():
            await asyncio.wait({job}, timeout=PROGRESS_S)
            if ctx is not None and not job.done():
                await ctx.report_progress(done[0], total, f"{done[0]} of {total} messages replayed")
        try:
            result = await job
        except BacktestError as exc:
            raise ToolError(str(exc)) from None
        if ctx is not None:
            await ctx.report_progress(total, total, "replayed; writing the report")
        view = await asyncio.to_thread(backtest_view, result, recording, run_folder(config.state_path, strategy))
        return BacktestView(**view)
