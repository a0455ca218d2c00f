"""The risk service: the only way to an order. Signals in; verdicts on ``decisions``, orders on ``orders``.

It starts from the scanner's snapshot (markets, books, stale set) and the executor's account (positions, the
sources whose fills bought them, and open orders, reconciled with the venue), and refuses every signal until it
has both. It follows fills and
order ends on ``executions``, and takes the executor's account again when the executor restarts.

Every verdict is numbered and written to its journal as it is published, so analytics, if it missed some, asks for
them again (``CatchUpRequest``). A verdict the journal cannot record (a full disk) is published all the same,
unnumbered, and counted (``journal_write_errors``): risk never stops deciding for its journal.
"""
from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from decimal import Decimal

import msgspec

from .. import messages as m
from ..config import trading_mode
from ..journal import catch_up
from ..runtime import Service, StartupError
from ..strategies.store import Entry, Store, StoreError
from ..sync import ask_until, start_from_scanner
from .engine import APPROVAL_EXPIRED, DECLINED, EXECUTOR_DOWN, Day, RiskEngine, echoed, utc_day
from .journal import DecisionJournal, JournalError
from .limits import STRATEGY_PREFIX, Grant, RiskOptions, flat, is_agent

HALT_CANCEL_SOURCE = "risk"
SOURCE_LABELS = 100  # sources with a metric series of their own; the rest are counted together as "other"


def grant_of(entry: Entry) -> Grant:
    """What risk holds of a strategy in the store: its approved version's budget and markets, or why it may not
    trade (pending, stopped)."""
    approved = entry.approved
    if entry.state != "approved" or approved is None:
        return Grant(approved=False, why="stopped by the operator" if entry.state == "stopped" else
                     "proposed, waiting for the operator's approval")
    budget = {k: Decimal(v) for k, v in approved.budget.items()}
    return Grant(approved=True, sha256=approved.sha256, markets=frozenset(approved.markets),
                 **{k: int(v) if k in ("max_open_orders", "max_signals_per_minute") else v for k, v in budget.items()
                    if k in Grant.__struct_fields__})


class Risk(Service):
    consumes = {"signals": None, "prices": None, "events": None, "executions": None}
    publishes = ("orders", "decisions")
    Options = RiskOptions

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        opts: RiskOptions = ctx.options
        self.engine = RiskEngine(opts.limits, opts.agent, opts.recent_signals)
        self.synced = False  # from the scanner's snapshot
        self.reconciled = False  # from the executor's account
        self.backlog: list[m.Message] = []  # market data that came before the snapshot
        self.meanwhile: list[m.Message] | None = None  # executions seen while asking the executor
        self.executor_pid = 0
        self.reconciling: asyncio.Task | None = None
        self.verdicts: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()
        self.last_verdict_ns = {"accepted": 0, "rejected": 0}  # when the last of each was decided (0: never)
        self.last_refusal = ""  # the first reason code of the last refusal
        self.pending: dict[str, m.SignalPending] = {}  # agent signals waiting for a human's approval
        config = ctx.config
        self.approval = opts.approval == "always" or (
            opts.approval == "auto" and config.venue == "polymarket" and trading_mode(config) == "live")
        metrics = ctx.metrics
        self.m_signals = metrics.counter("signals", f"signals received, by source (the first {SOURCE_LABELS} "
                                         "sources seen; later ones as other)", ["source"])
        self.labelled: set[str] = set()
        self.m_verdicts = metrics.counter("verdicts", "verdicts, by the first reason code of a refusal",
                                          ["verdict", "reason"])
        self.m_refusals = metrics.counter("refusal_reasons", "reason codes of refusals (one verdict may have several)",
                                          ["reason"])
        self.m_exposure = metrics.gauge("exposure_usdc", "gross exposure: shares held at cost plus open BUYs at limit")
        self.m_pnl = metrics.gauge("pnl_usdc", "PnL after fees: realized, and marked to the books' mids", ["kind"])
        self.m_open = metrics.gauge("open_orders", "orders risk counts as open")
        self.m_executor = metrics.gauge("executor_connected", "1 while an executor takes risk's orders, else 0: "
                                        "signals are refused as EXECUTOR_DOWN")
        folder = ctx.config.state_path / "risk"
        folder.mkdir(mode=0o700, exist_ok=True)
        self.day_file = folder / "day.json"
        self.pending_file = folder / "pending.json"  # the signals waiting for a human, so a restart keeps them
        if opts.journal_keep < 1:
            raise StartupError(f"journal_keep must be at least 1 (got {opts.journal_keep}): the verdicts analytics may "
                               "still ask for")
        self.journal = DecisionJournal(folder / "decisions.jsonl", opts.journal_keep)
        self.journal.replay()
        if self.journal.bad:
            ctx.log.warning("%d lines of the journal %s could not be trusted and were skipped, e.g. line %d: %s",
                            self.journal.bad, self.journal.path, *self.journal.skipped[0])
        if self.journal.due:
            self._compact()
        self.journal.open()
        self.store = Store(config.state_path)
        for name in self.store.names():
            self._take_strategy(name)
        self.m_unnumbered = metrics.counter("verdicts_unnumbered", "verdicts published without a number: the journal "
                                            "could not record them (a full disk), so a subscriber that missed them "
                                            "cannot ask for them again")

    async def run(self) -> None:
        await start_from_scanner(self.ctx, self.ctx.options.scanner, self.engine.observe, self._take_backlog)
        await self._reconcile()
        self._load_pending()
        while self.approval:  # pending signals expire: refused, never sent
            await asyncio.sleep(0.2)
            now = self.ctx.clock()
            for sid in [sid for sid, p in self.pending.items() if p.expires_ts_ns <= now]:
                self._refuse_pending(sid, APPROVAL_EXPIRED, "no one approved it in time; propose it again if it "
                                                            "still makes sense")

    def _take_backlog(self) -> list[m.Message]:
        backlog, self.backlog, self.synced = self.backlog, [], True
        return backlog

    async def _reconcile(self) -> None:
        asked = self.ctx.clock()
        self.meanwhile = []
        try:
            account = await ask_until(self.ctx, self.ctx.options.executor, m.AccountRequest(), m.AccountReply)
            self.engine.reconcile(account, asked, self.meanwhile)
        finally:
            self.meanwhile = None
        if not self.reconciled:
            self._load_day()
        self.reconciled = True
        self.ctx.log.info("reconciled with the executor's account",
                          extra={"positions": len(account.positions), "open_orders": len(account.orders)})

    # ---------------------------------------------------------------- the day that outlives a restart

    def _load_day(self) -> None:
        today = utc_day(self.ctx.clock())
        try:
            saved = json.loads(self.day_file.read_text())
        except (OSError, ValueError):
            saved = {}
        if saved.get("day") == today:
            self.engine.day = Day(today, Decimal(saved["realized_start"]),
                                  {k: Decimal(v) for k, v in saved.get("agent_notional", {}).items()})
        else:
            self.engine.roll(self.ctx.clock())
            self._save_day()

    def _save_day(self) -> None:
        day = self.engine.day
        tmp = self.day_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"day": day.day, "realized_start": str(day.realized_start),
                                   "agent_notional": {k: str(v) for k, v in day.agent_notional.items()}}))
        os.replace(tmp, self.day_file)

    # ---------------------------------------------------------------- signals waiting for a human, across restarts

    def _load_pending(self) -> None:
        """The signals that waited for approval when the last risk stopped: they wait on (they are checked again when
        approved), and those that expired meanwhile are refused as such."""
        try:
            saved = msgspec.json.decode(self.pending_file.read_bytes(), type=list[m.SignalPending])
        except FileNotFoundError:
            return
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.ctx.log.error("could not read the signals waiting for approval (%s): %s; they are not restored",
                               self.pending_file, exc)
            return
        self.pending.update((p.signal_id, p) for p in saved if p.signal is not None)
        if saved:
            self.ctx.log.warning("%d agent signals still wait for approval", len(self.pending))

    def _save_pending(self) -> None:
        tmp = self.pending_file.with_suffix(".tmp")
        tmp.write_bytes(msgspec.json.encode(list(self.pending.values())))
        os.replace(tmp, self.pending_file)

    # ---------------------------------------------------------------- inbound

    def handle(self, socket: str, msg: m.Message) -> None:
        if socket == "signals":
            if isinstance(msg, m.Cancel):
                self.ctx.send("orders", msg)  # never refused: a cancel only lowers risk
            else:
                self._decide(msg)
            return
        if isinstance(msg, m.Heartbeat):
            if socket == "executions" and msg.service == self.ctx.options.executor:
                self._executor_alive(msg.pid)
            return
        if not self.synced and socket != "executions":  # fills count whenever they come; market data after sync
            self.backlog.append(msg)
            return
        self.engine.observe(msg)
        if self.meanwhile is not None and socket == "executions":
            self.meanwhile.append(msg)

    def _label(self, source: str) -> str:
        """The source as a metric label: any peer on signals may name itself, so the series stay bounded."""
        if source in self.labelled or len(self.labelled) < SOURCE_LABELS:
            self.labelled.add(source)
            return source
        return "other"

    def _executor_alive(self, pid: int) -> None:
        """A new executor process: take its account again, once it has reconciled with the venue."""
        known, self.executor_pid = self.executor_pid, pid
        if known and known != pid and self.reconciled and (self.reconciling is None or self.reconciling.done()):
            self.ctx.log.info("executor restarted (pid %d -> %d); reconciling", known, pid)
            self.reconciling = asyncio.get_running_loop().create_task(self._reconcile())

    def _decide(self, signal: m.Signal) -> None:
        now = self.ctx.clock()
        self.m_signals.labels(self._label(signal.source)).inc()
        reasons = self.engine.decide(signal, now, **self._conditions())
        if not reasons and self.approval and is_agent(signal.source):
            pending = m.SignalPending(trace_id=signal.trace_id, signal_id=signal.id, source=signal.source,
                                      signal=signal,
                                      expires_ts_ns=now + int(self.ctx.options.approval_timeout_s * 1e9))
            self.pending[signal.id] = pending
            self._save_pending()
            self.m_verdicts.labels("pending", "").inc()
            self._publish(pending)
            self.ctx.log.warning("agent signal %s from %s waits for approval: `polybot approve %s`", signal.id,
                                 signal.source, signal.id)
            if self.ctx.tracing:
                self.ctx.tracing.decision(signal, pending)
            return
        verdict = self._send_orders(signal, reasons, now)
        if self.ctx.tracing:
            self.ctx.tracing.decision(signal, verdict)

    def _send_orders(self, signal: m.Signal, reasons: list[m.Reason],
                     now: int) -> m.SignalAccepted | m.SignalRejected:
        """Accept the signal (its orders go out) when nothing refuses it, else reject it with the reasons."""
        verdict = self.engine.verdict(signal, reasons, now)
        if isinstance(verdict, m.SignalRejected):
            return self._verdict(verdict)
        orders = verdict.orders
        sent = [o for o in orders if self.ctx.send("orders", o)]
        if len(sent) == len(orders):
            if is_agent(signal.source):
                self._save_day()
            return self._verdict(verdict)
        self.engine.withdraw(orders)
        if sent:  # the queue to the executor filled up half way: take back what went
            self.ctx.send("orders", m.Cancel(trace_id=signal.trace_id, source=signal.source,
                                             order_ids=[o.id for o in sent], reason="signal not sent whole"))
        return self._verdict(self.engine.verdict(signal, [m.Reason(
            code=EXECUTOR_DOWN, message="the queue of orders to the executor is full", max_size=Decimal(0))], now))

    def _conditions(self) -> dict:
        return {"halted": self.ctx.halt_reason if self.ctx.halted else "", "ready": self.synced and self.reconciled,
                "executor_up": self._executor_connected()}

    def _check(self, signal: m.Signal, now: int, recheck: bool = False) -> list[m.Reason]:
        return self.engine.check(signal, now, recheck=recheck, **self._conditions())

    def _refuse_pending(self, signal_id: str, code: str, message: str) -> None:
        pending = self.pending.pop(signal_id)
        self._save_pending()
        self._verdict(m.SignalRejected(trace_id=pending.trace_id, signal_id=signal_id, source=pending.source,
                                       reasons=[m.Reason(code=code, message=message, max_size=Decimal(0))],
                                       signal=pending.signal))

    def _approve(self, request: m.ApproveRequest) -> m.Message:
        """An operator's answer to a pending signal: declined, or checked again now and accepted or rejected."""
        pending = self.pending.get(request.signal_id)
        if pending is None:
            return m.Error(request_id=request.id, message=f"no signal {request.signal_id} waits for approval (it "
                           "was decided, it expired, or the id is wrong); `polybot risk --json` lists what waits")
        who = request.by or "an operator"
        if request.via == "client" and not self.ctx.options.client_approval:
            return m.Error(request_id=request.id, message="approval in the MCP client is off "
                           "(client_approval = false); approve it with `polybot approve`")
        if not request.approve:
            self._refuse_pending(request.signal_id, DECLINED, f"declined by {who}")
            return m.Ok(request_id=request.id, detail="declined")
        now = self.ctx.clock()
        if pending.expires_ts_ns <= now:
            self._refuse_pending(request.signal_id, APPROVAL_EXPIRED, "approved after it expired")
            return m.Error(request_id=request.id, message="it expired before the approval; it was refused")
        del self.pending[request.signal_id]
        self._save_pending()
        reasons = self._check(pending.signal, now, recheck=True)
        self._send_orders(pending.signal, reasons, now)
        self.ctx.log.warning("signal %s approved by %s: %s", request.signal_id, who,
                             "accepted" if not reasons else "refused on the check at approval")
        if reasons:
            return m.Error(request_id=request.id, message="approved, but risk refuses it now: " +
                           "; ".join(f"{r.code} {r.message}" for r in reasons))
        return m.Ok(request_id=request.id, detail="approved: its orders went out")

    def _verdict(self, verdict: m.SignalAccepted | m.SignalRejected) -> m.SignalAccepted | m.SignalRejected:
        if isinstance(verdict, m.SignalAccepted):
            self.verdicts["accepted"] += 1
            self.last_verdict_ns["accepted"] = self.ctx.clock()
            self.m_verdicts.labels("accepted", "").inc()
        else:
            self.verdicts["rejected"] += 1
            self.last_verdict_ns["rejected"] = self.ctx.clock()
            self.last_refusal = verdict.reasons[0].code if verdict.reasons else ""
            codes = {r.code for r in verdict.reasons}
            self.refusals.update(codes)
            self.m_verdicts.labels("rejected", verdict.reasons[0].code if verdict.reasons else "").inc()
            for code in codes:
                self.m_refusals.labels(code).inc()
        return self._publish(verdict)

    def _publish(self, verdict: m.NumberedVerdict) -> m.NumberedVerdict:
        """Numbered and journaled, then sent; what the journal cannot record goes out unnumbered all the same."""
        try:
            verdict = self.journal.number(verdict)
        except JournalError as exc:
            self.m_unnumbered.inc()
            self.ctx.log.error("%s: %s %s published unnumbered (analytics, if it misses it, cannot ask for it again)",
                               exc, type(verdict).__name__, getattr(verdict, "signal_id", verdict.id))
        self.ctx.send("decisions", verdict)
        if self.journal.due:
            self._compact()
        return verdict

    def _compact(self) -> None:
        try:
            before = self.journal.compact()
        except OSError as exc:
            self.ctx.log.error("could not compact the journal %s (%s); it stays as it was", self.journal.path, exc)
            return
        self.ctx.log.info("compacted the journal", extra={"bytes_before": before, "first_seq": self.journal.first,
                                                          "seq": self.journal.seq})

    # ---------------------------------------------------------------- agent-authored strategies

    def _take_strategy(self, name: str) -> Entry | None:
        """Read one strategy's approval and budget from the store; None when the store cannot say (it stays
        refused)."""
        source = STRATEGY_PREFIX + name
        try:
            entry = self.store.get(name)
        except StoreError as exc:
            self.engine.grants[source] = Grant(approved=False, why=str(exc))
            self.ctx.log.error("strategy %s: %s; its signals are refused", name, exc)
            return None
        self.engine.grants[source] = grant_of(entry)
        return entry

    def _strategy_changed(self, request: m.StrategyChanged) -> m.Message:
        """The operator approved or stopped a strategy: take its budget from the store; the approval goes on
        ``decisions`` (the audit log keeps its code hash); a stop cancels the strategy's orders."""
        entry = self._take_strategy(request.name)
        if entry is None:
            return m.Error(request_id=request.id, message=self.engine.grants[STRATEGY_PREFIX + request.name].why)
        source = STRATEGY_PREFIX + request.name
        if entry.state == "stopped":
            self.ctx.send("orders", m.Cancel(trace_id=request.trace_id, source=source,
                                             reason=f"strategy stopped by {request.by or 'the operator'}"))
            self.ctx.log.warning("strategy %s stopped by %s: its signals are refused, its orders canceled",
                                 request.name, request.by)
            return m.Ok(request_id=request.id, detail=f"{source} refused from now on; its open orders canceled")
        approved = entry.approved
        if entry.state != "approved" or approved is None:
            return m.Ok(request_id=request.id, detail=f"{source} is not approved: its signals are refused")
        budget = {k: Decimal(v) for k, v in approved.budget.items()}
        self._publish(m.StrategyApproved(trace_id=request.trace_id, name=request.name, sha256=approved.sha256,
                                         class_name=approved.class_name, budget=budget, markets=list(approved.markets),
                                         by=approved.by, approved_ts_ns=approved.at_ns))
        self.ctx.log.warning("strategy %s approved by %s: sha256 %s, budget %s", request.name, approved.by,
                             approved.sha256, approved.budget)
        return m.Ok(request_id=request.id, detail=f"{source} trades under its budget (sha256 {approved.sha256[:12]})")

    # ---------------------------------------------------------------- control

    def on_halt(self, reason: str) -> None:
        """The kill switch: no new orders (checked per signal), and every resting order is canceled."""
        self.ctx.send("orders", m.Cancel(source=HALT_CANCEL_SOURCE, reason=f"halted: {reason}"))

    def control(self, request: m.Message) -> m.Message | None:
        match request:
            case m.CatchUpRequest():  # a subscriber that missed some verdicts asks for them again
                return catch_up(self.journal, request)
            case m.PreviewRequest(signal=signal):
                reasons = self._check(signal, self.ctx.clock())
                if reasons:
                    return m.SignalRejected(trace_id=request.trace_id, signal_id=signal.id, source=signal.source,
                                            reasons=reasons, signal=echoed(signal))
                return m.SignalAccepted(trace_id=request.trace_id, signal_id=signal.id, source=signal.source,
                                        orders=[], signal=signal)
            case m.ApproveRequest():
                return self._approve(request)
            case m.StrategyChanged():
                return self._strategy_changed(request)
            case m.RiskRequest():
                now = self.ctx.clock()
                engine = self.engine
                return m.RiskReply(halted=self.ctx.halted, halt_reason=self.ctx.halt_reason,
                                   limits=flat(engine.limits, engine.agent), usage=engine.usage(now),
                                   positions=engine.ledger.positions(), open_orders=len(engine.open),
                                   realized_pnl=engine.ledger.realized(), marked_pnl=engine.marked_pnl(),
                                   pending=list(self.pending.values()),
                                   client_approval=self.approval and self.ctx.options.client_approval,
                                   holdings=engine.holdings(), venue=engine.venue)
        return None

    def sample(self) -> None:
        engine = self.engine
        self.m_exposure.set(engine.gross_exposure())
        self.m_pnl.labels("realized").set(engine.ledger.realized())
        self.m_pnl.labels("marked").set(engine.marked_pnl())
        self.m_open.set(len(engine.open))
        self.m_executor.set(self._executor_connected())

    def _executor_connected(self) -> bool:
        """An executor takes orders now. After either process starts, the connection follows within one redial
        (at most a second), so a signal that comes sooner is refused as EXECUTOR_DOWN."""
        return self.ctx.peers("orders") > 0

    def detail(self) -> dict[str, str]:
        now = self.ctx.clock()
        ago = {verdict: f"{(now - at) / 1e9:.1f}" if at else "" for verdict, at in self.last_verdict_ns.items()}
        return {"synced": str(self.synced), "reconciled": str(self.reconciled),
                "markets": str(len(self.engine.markets)), "stale": str(len(self.engine.stale)),
                "last_accepted_s": ago["accepted"], "last_rejected_s": ago["rejected"],
                "last_refusal": self.last_refusal,
                "executor_connected": str(self._executor_connected()),
                "accepted": str(self.verdicts["accepted"]), "rejected": str(self.verdicts["rejected"]),
                "pending": str(len(self.pending)), "approval": str(self.approval),
                "open_orders": str(len(self.engine.open)),
                "refusals": ",".join(f"{code}={n}" for code, n in sorted(self.refusals.items())),
                "journal_seq": str(self.journal.seq), "journal_first_seq": str(self.journal.first),
                "journal_write_errors": str(self.journal.write_errors),
                "journal_bad_lines": str(self.journal.bad)}

    def on_stop(self) -> None:
        self.journal.close()
