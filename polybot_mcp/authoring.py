"""Authoring tools: an agent writes a strategy, checks it, backtests it and proposes it to the operator.

Agent code never runs in this process: ``check_strategy``, ``backtest_strategy`` and ``propose_strategy`` run it in
a contained child (``services.strategies.sandbox``). A proposal is kept as pending in the strategies store
(``<state_dir>/strategies/NAME/pending.*``); only the operator approves it (``polybot strategy approve NAME``). No
tool here approves, starts, stops or changes a budget, and none writes the approved files.
"""
from __future__ import annotations

import asyncio
import inspect
import sys
from collections import Counter
from typing import Annotated, Any

import msgspec
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field

from services.backtest.engine import risk_options
from services.backtest.report import run_folder
from services.backtest.result import BacktestResult
from services.config import STRATEGIES_KIND, Config, ConfigError
from services.strategies import REGISTRY
from services.strategies.contained import Answer
from services.strategies.loading import NAME
from services.strategies.sandbox import SAMPLE, Stopped, run as run_contained, sample
from services.strategies.store import MAX_CODE_BYTES, SERVICE_PREFIX, Budget, Entry, Record, Store, StoreError

from .agents import source_of
from .backtests import BacktestView, backtest_view, recording_path
from .tools import Tools

CHECK = ToolAnnotations(readOnlyHint=True, openWorldHint=False)
RUN = ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=True, openWorldHint=False)
PROPOSE = ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=True, openWorldHint=False)
READ = ToolAnnotations(readOnlyHint=True, openWorldHint=False)
SAMPLE_NAME = "sample (built in: seed {seed}, {seconds} s, {markets} markets and an event of {outcomes})".format(
    **SAMPLE)
APPROVE_HINT = ("Nothing runs until an operator approves it with `polybot strategy approve {name}` (after reading it "
                "with `polybot strategy show {name}`); no tool can approve it, start it or set its budget.")

Code = Annotated[str, Field(description="The strategy's Python source: a class with `name`, `Params` and "
                                        "`on_message` (subclass polybot_strategy.Strategy)")]
ClassName = Annotated[str, Field(description="The class to use when the code defines several; empty: the one "
                                             "strategy class it defines")]
Params = Annotated[dict[str, str], Field(description="Parameters by name, as text (e.g. {\"size\": \"5\"}); "
                                                     "unset: the class's defaults")]


class ProblemView(BaseModel):
    message: str
    line: int | None = Field(None, description="The line of the code it is at, when known")
    source: str = Field("", description="That line's text")
    at: str = Field("", description="The sample message on_message was answering (e.g. `BookSnapshot #3`), the "
                                    "first time")
    times: int = Field(1, description="How many times it happened on the sample")


class SampleRun(BaseModel):
    messages: int = Field(description="Messages of the sample replayed into on_message")
    signals: int
    cancels: int
    fills: int = Field(description="Paper fills of its signals' orders on the sample")


class CheckReport(BaseModel):
    ok: bool = Field(description="True when the code loads, keeps the contract and ran the sample without a "
                                 "problem")
    class_name: str = ""
    name: str = Field("", description="Its `name`; a proposal under another name runs as that name")
    params: dict[str, str] = Field({}, description="Every parameter as it ran, defaults included")
    problems: list[ProblemView] = Field(description="What is wrong: syntax, the contract, exceptions in "
                                                    "on_message, outputs that are not Signal/Cancel or break the "
                                                    "market's rules")
    stopped: str = Field("", description="Why the contained run was stopped: a limit, or something agent code may "
                                         "not do (network, files outside its folder, processes)")
    sample: SampleRun | None = None
    contained: list[str] = Field([], description="The kernel isolation it ran under on this machine")
    next: str


class StrategyBacktest(BacktestView):
    refusals_by_code: dict[str, int] = Field(description="Refusals counted by reason code: risk's reasons and the "
                                                         "executor's (risk_refusals and executor_refusals tell "
                                                         "them apart)")
    contained: list[str] = Field(description="The kernel isolation it ran under on this machine")


class Proposal(BaseModel):
    name: str
    state: str = Field(description="Always `pending`: kept for the operator, not running")
    sha256: str = Field(description="The hash of the code kept; the operator approves this version only")
    by: str = Field(description="Who proposed it (this agent)")
    class_name: str
    params: dict[str, str]
    markets: list[str]
    budget: dict[str, str] = Field(description="The budget asked for; the operator sets the one it runs under")
    approved_sha256: str | None = Field(None, description="The approved version, which keeps running unchanged "
                                                          "until the operator approves this one")
    backtest: StrategyBacktest
    next: str


class Figures(BaseModel):
    realized: str | None = None
    unrealized: str | None = None
    fees: str | None = None
    total: str | None = Field(None, description="PnL: realized + unrealized + rebates")
    signals: int = 0
    accepted: int = Field(0, description="Signals risk accepted")
    refusals_by_code: dict[str, int] = Field({}, description="Signals risk refused, by reason code")


class StrategyRow(BaseModel):
    name: str
    source: str = Field(description="Its signals' source: strategy:NAME")
    origin: str = Field(description="`shipped` (ours), `config` (a class the operator's config names) or `agent` "
                                    "(proposed through propose_strategy)")
    state: str = Field(description="`configured` (a strategies service runs it), `available` (shipped, not "
                                   "configured), `pending` (waits for the operator), `approved` (runs), `stopped`")
    service: str = Field("", description="The strategies service that runs it")
    sha256: str | None = Field(None, description="The pending version's hash")
    approved_sha256: str | None = None
    pending_differs: bool = Field(False, description="The pending code is not the approved code: it runs only once "
                                                     "the operator approves it")
    proposed_by: str = ""
    figures: Figures | None = Field(None, description="From analytics: PnL, signals and refusals of its source")


class StrategyList(BaseModel):
    strategies: list[StrategyRow]
    figures: str = Field(description="Where the figures come from, or why there are none")


class StrategyDetail(StrategyRow):
    code: str = Field(description="The code: the pending version for an agent's strategy")
    approved_code: str | None = Field(None, description="The approved version's code, when it differs")
    spec: str = Field("", description="A configured strategy's class spec")
    params: dict[str, Any] = {}
    markets: list[str] = []
    budget_asked: dict[str, str] = {}
    budget_granted: dict[str, str] = {}
    rationale: str = ""
    backtest: dict[str, Any] = Field({}, description="The backtest kept with the proposal")


def problem_views(answer: Answer) -> list[ProblemView]:
    return [ProblemView(message=p.message, line=p.line, source=p.source, at=p.at, times=p.times)
            for p in answer.problems]


def problems_text(answer: Answer) -> str:
    return "; ".join((f"line {p.line}: " if p.line else "") + p.message + (f" [{p.source}]" if p.source else "")
                     for p in answer.problems)


def configured(config: Config) -> dict[str, tuple[str, dict[str, Any]]]:
    """Each strategy the config's strategies services run: name -> (service, its table)."""
    out = {}
    for service in config.watched_services:
        svc = config.services[service]
        if svc.kind == STRATEGIES_KIND:
            for name, table in svc.options.get("strategies", {"arbitrage": {}}).items():
                out[name] = (service, table if isinstance(table, dict) else {})
    return out


def register_authoring_tools(server: MCPServer, config: Config, tools: Tools) -> None:
    store = Store(config.state_path)
    recordings = config.state_path / "recordings"
    limits = config.mcp.containment

    async def contained(job: dict[str, Any], code: str = "", read: list = ()) -> Answer:
        if code and len(code.encode()) > MAX_CODE_BYTES:
            raise ToolError(f"the code is {len(code.encode())} bytes; a strategy may have at most {MAX_CODE_BYTES}")
        if job.get("code", True) and not code.strip():
            raise ToolError("`code` is empty: pass the strategy's Python source")
        return await asyncio.to_thread(run_contained, job, code, limits, list(read))

    async def check(code: str, class_name: str, params: dict[str, str]) -> tuple[CheckReport, Answer | None]:
        """The report, and the contained run's answer (with the sample's backtest) when it answered."""
        try:
            replayed = await asyncio.to_thread(sample, config.state_path)
            answer = await contained({"action": "check", "class_name": class_name, "params": params,
                                      "recording": str(replayed)}, code, [replayed])
        except Stopped as exc:
            return CheckReport(ok=False, problems=[], stopped=str(exc), next="fix what was stopped and call "
                               "check_strategy again; agent code runs contained"), None
        figures = answer.check
        ok = not answer.stopped and not answer.problems and figures is not None
        report = CheckReport(
            ok=ok, problems=problem_views(answer), stopped=answer.stopped, contained=answer.isolation,
            class_name=figures.class_name if figures else "", name=figures.name if figures else "",
            params=figures.params if figures else {},
            sample=SampleRun(messages=figures.messages, signals=figures.signals, cancels=figures.cancels,
                             fills=figures.fills) if figures else None,
            next="backtest_strategy on a recording (list_recordings names them), then propose_strategy" if ok else
            "fix what is listed and call check_strategy again" + ("; agent code runs contained and may not use "
                                                                 "the network, files outside its folder or "
                                                                 "processes" if answer.stopped else ""))
        return report, answer

    async def backtest(recording: str, code: str, spec: str, class_name: str,
                       params: dict[str, str]) -> tuple[BacktestResult, list[str]]:
        path = recording_path(recordings, recording)
        try:  # under the limits this server's mesh trades under, as run_backtest
            limits = msgspec.to_builtins(risk_options(config))
        except ConfigError as exc:
            raise ToolError(f"the config's risk limits cannot be read ({exc}); fix the config, then try again") \
                from None
        job = {"action": "backtest", "class_name": class_name, "params": params, "recording": str(path),
               "spec": spec, "code": bool(code), "risk": limits}
        try:
            answer = await contained(job, code, [path])
        except Stopped as exc:
            raise ToolError(f"{exc}; fix the code (check_strategy tells what is wrong) and try again") from None
        if answer.stopped:
            raise ToolError(f"{answer.stopped}; remove it (check_strategy tells what is wrong) and try again")
        if answer.problems or answer.result is None:
            raise ToolError(f"the backtest did not run: {problems_text(answer)}; check_strategy gives the details")
        return answer.result, answer.isolation

    async def report(result: BacktestResult, recording: str, isolation: list[str]) -> StrategyBacktest:
        view = await asyncio.to_thread(backtest_view, result, recording, run_folder(config.state_path,
                                                                                    result.strategy))
        refusals = Counter(r.code for r in result.refusals)
        return StrategyBacktest(**view, refusals_by_code=dict(sorted(refusals.items())), contained=isolation)

    @server.tool(annotations=CHECK)
    async def check_strategy(code: Code, class_name: ClassName = "",
                             params: Params = {}) -> CheckReport:  # noqa: B006 - pydantic copies defaults
        """Check a strategy's code without running it here: in a contained process (no network, no files outside
        its own folder, no processes, limits on CPU, memory and time) it is compiled and loaded, its contract
        checked (a class with `name`, `Params`, `on_message`), and it is run on a short built-in sample of
        markets. Returns what is wrong with line numbers: syntax errors, exceptions in on_message, outputs that
        are not Signal or Cancel, prices off the tick or sizes below the minimum. Nothing trades."""
        return (await check(code, class_name, params))[0]

    @server.tool(annotations=RUN)
    async def backtest_strategy(
        recording: Annotated[str, Field(description="A recording's name from list_recordings")],
        code: Annotated[str, Field(description="The strategy's Python source (or give `strategy`)")] = "",
        strategy: Annotated[str, Field(description="Instead of code: a shipped strategy's name, or one proposed "
                                                   "with propose_strategy (its pending version)")] = "",
        class_name: ClassName = "",
        params: Params = {},  # noqa: B006 - pydantic copies defaults
    ) -> StrategyBacktest:
        """Backtest a strategy's code (or a shipped or proposed strategy by name) on a recording, in a contained
        process as check_strategy runs it, with paper fills, and return the report as run_backtest gives it plus
        the refused orders counted by reason code. The report files go under the state folder. Nothing trades."""
        if bool(code) == bool(strategy):
            raise ToolError("give exactly one of `code` (the source) or `strategy` (a shipped strategy's name, or "
                            "one proposed with propose_strategy)")
        spec = ""
        if strategy:
            if strategy in REGISTRY:
                spec = strategy
            else:
                try:
                    entry = store.get(strategy)
                except StoreError as exc:
                    raise ToolError(f"{exc}; shipped: {', '.join(sorted(REGISTRY))}") from None
                code = store.code(strategy, "pending" if entry.pending else "approved")
                record = entry.pending or entry.approved
                class_name = class_name or (record.class_name if record else "")
        result, isolation = await backtest(recording, code, spec, class_name, params)
        return await report(result, recording, isolation)

    @server.tool(annotations=PROPOSE)
    async def propose_strategy(
        name: Annotated[str, Field(description="The name it would run under (its signals' source strategy:NAME): "
                                               "lower-case letters, digits and _, at most 24")],
        code: Code,
        rationale: Annotated[str, Field(description="Why it should make money, for the operator")] = "",
        params: Params = {},  # noqa: B006
        markets: Annotated[list[str], Field(description="The markets it is meant for (condition ids or slugs), "
                                                        "for the operator")] = [],  # noqa: B006
        budget: Annotated[dict[str, str], Field(description="The budget asked for: max_order_notional, "
                                                            "max_gross_exposure, max_daily_loss (USDC), "
                                                            "max_open_orders, max_signals_per_minute; unset: the "
                                                            "defaults")] = {},  # noqa: B006
        recording: Annotated[str, Field(description="The recording to backtest it on (list_recordings); empty: "
                                                    "the built-in sample check_strategy runs")] = "",
        class_name: ClassName = "",
        ctx: Context = None,  # type: ignore[assignment]
    ) -> Proposal:
        """Propose a strategy to the operator: it is checked and backtested in a contained process, then kept as
        pending with its code's sha256, its backtest and who proposed it. It does not run: an operator must
        approve it with `polybot strategy approve NAME`, and no tool can."""
        if not NAME.match(name):
            raise ToolError(f"name {name!r}: lower-case letters, digits and _ (at most 24), starting with a letter")
        if name in REGISTRY or name in configured(config):
            raise ToolError(f"{name!r} is a strategy the config or polybot already runs; pick another name")
        if len(markets) > 100 or any(not (0 < len(x) <= 100) for x in markets):
            raise ToolError("markets: at most 100 condition ids or slugs, each 1 to 100 characters")
        try:
            asked = Budget.of(budget)
        except StoreError as exc:
            raise ToolError(str(exc)) from None
        checked, answer = await check(code, class_name, params)
        if not checked.ok or answer is None or answer.result is None:
            why = checked.stopped or (problems_text(answer) if answer else "")
            raise ToolError(f"not proposed: the check found {why}; fix it and check_strategy again")
        if recording:
            result, isolation = await backtest(recording, code, "", checked.class_name, params)
        else:
            result, isolation, recording = answer.result, answer.isolation, SAMPLE_NAME
        tested = await report(result, recording, isolation)
        try:
            record = store.propose(name, code, checked.class_name, params, markets, asked,
                                   by=source_of(ctx, tools.agent), rationale=rationale, backtest=tested.model_dump())
        except StoreError as exc:
            raise ToolError(str(exc)) from None
        approved = store.get(name).approved
        keeps = (f" The approved version {approved.sha256[:12]} keeps running unchanged until then."
                 if approved else "")
        return Proposal(name=name, state="pending", sha256=record.sha256, by=record.by, class_name=record.class_name,
                        params=params, markets=markets, budget=record.budget, backtest=tested,
                        approved_sha256=approved.sha256 if approved else None,
                        next=f"Kept as pending (sha256 {record.sha256[:12]}). " + APPROVE_HINT.format(name=name)
                        + keeps)

    def rows() -> list[StrategyRow]:
        out = []
        running = configured(config)
        for name, (service, table) in running.items():
            out.append(StrategyRow(name=name, source=f"strategy:{name}", service=service, state="configured",
                                   origin="config" if "class" in table else "shipped"))
        out += [StrategyRow(name=name, source=f"strategy:{name}", origin="shipped", state="available")
                for name in sorted(REGISTRY) if name not in running]
        for entry in store.entries():
            out.append(agent_row(entry))
        return out

    def agent_row(entry: Entry) -> StrategyRow:
        return StrategyRow(
            name=entry.name, source=f"strategy:{entry.name}", origin="agent", state=entry.state,
            service=SERVICE_PREFIX + entry.name if entry.approved else "",
            sha256=entry.pending.sha256 if entry.pending else None,
            approved_sha256=entry.approved.sha256 if entry.approved else None,
            pending_differs=entry.changed_since_approval, proposed_by=entry.pending.by if entry.pending else "")

    async def figures(found: list[StrategyRow]) -> str:
        """Each running (or once running) strategy's figures from analytics, set on its row; what they are from."""
        live = {r.source: r for r in found if r.state in ("configured", "approved", "stopped")}
        if not live:
            return "no strategy runs, so there are no figures"
        listed = ", ".join(f"'{source}'" for source in sorted(live))  # names match NAME: nothing to escape
        try:
            pnl = await tools.query("pnl", by="source")
            signals = await tools.query(sql=f"SELECT source, count(*) FROM signals WHERE source IN ({listed}) "
                                            "GROUP BY source")
            verdicts = await tools.query(sql=f"SELECT source, count(DISTINCT signal_id) FROM verdicts WHERE "
                                             f"accepted AND source IN ({listed}) GROUP BY source")
            refusals = await tools.query(sql=f"""
                SELECT v.source, r.code, count(DISTINCT v.signal_id) FROM verdicts v
                JOIN verdict_reasons r ON r.verdict_id = v.id
                WHERE NOT v.accepted AND v.source IN ({listed}) GROUP BY 1, 2 ORDER BY 1, 2""")
        except ToolError as exc:
            return f"no figures: analytics did not answer ({exc})"
        for source, row in live.items():
            row.figures = Figures()
        for values in pnl.rows:
            got = dict(zip(pnl.columns, values))
            if (row := live.get(str(got["source"]))) is not None:
                row.figures = Figures(**{k: None if got.get(k) is None else str(got[k])
                                         for k in ("realized", "unrealized", "fees", "total")})
        for source, count in signals.rows:
            live[source].figures.signals = int(count)
        for source, count in verdicts.rows:
            live[source].figures.accepted = int(count)
        for source, code, count in refusals.rows:
            live[source].figures.refusals_by_code[str(code)] = int(count)
        return "analytics: PnL to date by source, every signal and risk's verdicts" + (
            f" ({pnl.incomplete()})" if pnl.incomplete() else "")

    @server.tool(annotations=READ)
    async def list_strategies() -> StrategyList:
        """Every strategy: shipped, configured, proposed by agents and waiting for the operator (pending),
        approved (running) or stopped; for each one that runs, its PnL, signals and refusals by reason code
        (from analytics, under its source strategy:NAME)."""
        found = rows()
        note = await figures(found)
        return StrategyList(strategies=found, figures=note)

    @server.tool(annotations=READ)
    async def get_strategy(
        name: Annotated[str, Field(description="A strategy's name from list_strategies")],
    ) -> StrategyDetail:
        """One strategy: its code (for an agent's, the pending version, and the approved one when it differs),
        parameters, markets, the budget asked for and granted, the backtest kept with the proposal, and its
        figures when it runs."""
        found = [r for r in rows() if r.name == name]
        if not found:
            raise ToolError(f"no strategy {name!r}; list_strategies names them")
        row = found[-1]  # an agent's entry comes after a shipped one of that name
        await figures([row])
        detail = StrategyDetail(**row.model_dump(), code="")
        if row.origin == "agent":
            entry = store.get(name)
            shown: Record = entry.pending or entry.approved  # type: ignore[assignment]
            detail.code = store.code(name, "pending" if entry.pending else "approved")
            if entry.changed_since_approval:
                detail.approved_code = store.code(name, "approved")
            detail.params, detail.markets, detail.rationale = shown.params, shown.markets, shown.rationale
            detail.budget_asked = entry.pending.budget if entry.pending else {}
            detail.budget_granted = entry.approved.budget if entry.approved else {}
            detail.backtest = shown.backtest
        elif row.origin == "shipped":
            detail.code = inspect.getsource(sys.modules[REGISTRY[name].__module__])
            detail.params = configured(config).get(name, ("", {}))[1]
        else:
            service, table = configured(config)[name]
            detail.spec, detail.params = str(table.get("class", "")), dict(table.get("params") or {})
        return detail

