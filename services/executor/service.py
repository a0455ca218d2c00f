"""The executor: risk's orders in (``orders``), the venue's answers out (``executions``), live or on paper.

Every order is written to a journal under the state directory when it arrives and again, with the venue id
it will have, before it is sent; so an order id is never sent twice, across restarts too (the venue id is
derived from the client id, so the venue would also refuse a second copy). Orders of one signal arriving
within ``leg_wait_ms`` of each other go out together, in one batch. When a leg of a multi-leg signal fails
(refused, or an FOK/FAK leg not filled whole), the signal's resting legs are canceled and what was filled
is reported as ``ResidualExposure``. Fills come from the venue's user stream and from REST reconciliation
(after every reconnection, on a timer, and at start), each counted once. Positions are kept from the fills, and
by the source whose order each fill was (so risk can keep an agent to selling its own shares).

Live mode trades through ``venues.polymarket.client`` (the local venue's ready-made account when no key
is set and ``venue = "local"``); paper mode fills against the scanner's books (``venues.paper``).
"""
from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import msgspec

from .. import messages as m
from ..bus import REDIAL, topic
from ..config import trading_mode, venue_urls
from ..journal import catch_up
from ..runtime import Service, StartupError
from ..sync import start_from_scanner
from ..venues import base
from ..venues.base import Balance, MarketRules, OrderRequest, VenueError, VenueFill
from ..venues.polymarket.rebates import RebatePoller
from .backpressure import Backpressure
from .desk import (HALTED, IOC, RISK_SOURCE, SIGNAL_FAILED, STALE_ORDER, STOPPING, Desk, Refusal, Tracked, matches,
                   request, sendable)
from .gate import Gate, Go, Refuse, Wait
from .journal import Journal, JournalError
from .options import ExecutorOptions
from .reconcile import Reconciler
from .venue import TimedVenue, make_venue

SETTLE_S = 0.3  # subscribers back after a restart: their number has not grown for this long
SKIPPED_LOGGED = 10  # journal lines skipped at start, each logged with why; the rest only counted
WATCH_S = 0.25  # how often the venue's conditions are looked at (windows ending, heartbeats failing)
REPEAT_STATUS_S = 5.0  # a VenueStatus with conditions is published again this often, for subscribers that missed it


class Executor(Service):
    publishes = ("executions",)
    consumes = {"orders": None, "prices": None, "events": None}
    Options = ExecutorOptions

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        opts: ExecutorOptions = ctx.options
        self.mode = trading_mode(ctx.config)
        if self.mode == "paper" and not opts.scanner:
            raise StartupError("paper trading fills against the scanner's books: set the executor's scanner option")
        self.journal = Journal(ctx.config.state_path / ctx.name / f"journal-{self.mode}.jsonl", opts.fsync)
        self.desk = Desk(self._publish, self.journal.write, ctx.clock)
        # Taken before a crash but never sent: refused at start, never sent late.
        records = self.journal.replay()
        unsent = self.desk.restore(records)
        self._compact(records)
        for skipped in self.journal.skipped[:SKIPPED_LOGGED]:
            ctx.log.warning("journal line %d skipped: %s", skipped.line, skipped.reason)
        if self.journal.bad:
            ctx.log.warning("%d journal lines could not be trusted and were skipped (%s)", self.journal.bad,
                            self.journal.path)
        metrics = ctx.metrics
        self.m_orders = metrics.counter("orders", "orders received from risk", ["side", "order_type"])
        self.m_submitted = metrics.counter("orders_submitted", "orders handed to the venue")
        self.m_rejects = metrics.counter("order_rejects", "orders refused, by the venue or before it, by code", ["code"])
        self.m_fills = metrics.counter("fills", "fills", ["liquidity"])
        self.m_notional = metrics.counter("fill_notional_usdc", "price times shares of every fill")
        self.m_fees = metrics.counter("fees_usdc", "fees paid on fills")
        self.m_cancels = metrics.counter("cancels", "orders that ended canceled (by us, the venue or expiry)")
        self.m_residual = metrics.counter("residual_exposures", "multi-leg signals left partly filled")
        self.m_reconnects = metrics.counter("ws_reconnects", "venue WebSocket reconnections", ["channel"])
        self.m_open = metrics.gauge("open_orders", "orders open at the venue or on their way")
        self.m_positions = metrics.gauge("positions", "tokens held")
        self.connections = 0
        self.backpressure = Backpressure(ctx)
        self.venue = TimedVenue(make_venue(ctx, self.mode),
                                metrics.histogram("venue_request_seconds", "venue calls, by operation", ["op"]),
                                metrics.counter("venue_errors", "venue calls that failed, by operation", ["op"]))
        self.journal.open()
        self.ready = False  # reconciled with the venue (live) or restored on the book (paper)
        self.synced = not opts.scanner
        self.connected = asyncio.Event()
        self.waiting: list[Tracked | m.Cancel] = []  # orders and cancels that came before ready
        self.market_backlog: list[m.Message] = []  # market data that came before the scanner's snapshot
        self.gathering: dict[str, list[Tracked]] = {}  # signal id -> its orders waiting for their siblings
        self.tasks: set[asyncio.Task] = set()
        self.balance: Balance | None = None  # the venue's word on collateral and allowance, at balance_ns
        self.balance_ns = 0
        self.balance_due = asyncio.Event()
        self.reconciler = Reconciler(self.venue, self.desk, opts, ctx.clock, ctx.log, self._spawn, unsent,
                                     self.balance_due.set)
        self.gate = Gate(opts)  # what the venue takes now: restarts, the post-only window, heartbeats, funds
        self.told = (0, 0)  # the gate's version last published, and when
        self.cancels_due: list[tuple[list[Tracked], str, list[str]]] = []  # refused by a restart: sent again after
        self.funds_read_ns = 0

    # ------------------------------------------------------------ lifecycle

    def _compact(self, records: list[Any]) -> None:
        """A journal past its size is rewritten as what the desk's state is rebuilt from (see ExecutorOptions)."""
        opts: ExecutorOptions = self.ctx.options
        path = self.journal.path
        if not opts.journal_compact_mb or not path.exists() or path.stat().st_size <= opts.journal_compact_mb * 2**20:
            return
        since = self.ctx.clock() - int(opts.journal_keep_days * 86_400e9)
        keep = {oid for oid, t in self.desk.orders.items() if t.open or t.order.ts_ns >= since}
        try:
            before = self.journal.compact(records, keep, opts.journal_keep_numbered)
        except OSError as exc:
            self.ctx.log.error("could not compact the journal %s (%s); it stays as it was", path, exc)
            return
        self.ctx.log.info("compacted the journal", extra={"bytes_before": before, "bytes": path.stat().st_size,
                                                          "orders_kept": len(keep)})

    async def run(self) -> None:
        if self.mode == "live":  # books are for paper fills: let the SUB socket filter them out
            for kind in (m.BookSnapshot, m.BookDelta, m.LastTrade):
                self.ctx.inbound["prices"].socket.unsubscribe(topic(kind))
        tasks = [asyncio.create_task(self.venue.start(self._on_events, self._on_connected), name="venue"),
                 asyncio.create_task(self._start(), name="start"),
                 asyncio.create_task(self._reconcile_every(), name="reconcile"),
                 asyncio.create_task(self._resolutions_every(), name="resolutions"),
                 asyncio.create_task(self.backpressure.run(), name="backpressure"),
                 asyncio.create_task(self._balances(), name="balances"),
                 asyncio.create_task(self._watch(), name="venue-conditions")]
        if self.mode == "live" and self.ctx.options.rebates_s > 0:
            tasks.append(asyncio.create_task(self._rebates().run(), name="rebates"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in [*tasks, *self.tasks]:
                task.cancel()
            self.venue.close()

    def _rebates(self) -> RebatePoller:
        """The venue's reports of the account's maker rebates, published (and journaled) as they change."""
        def publish(msg: m.Rebate) -> None:
            self.desk.ledger.rebate(msg)
            self._publish(msg)
        opts: ExecutorOptions = self.ctx.options
        return RebatePoller(venue_urls(self.ctx.config).clob_url, self.venue.funder, publish, self.ctx.log,
                            self.desk.ledger.rebates.reports.values(), opts.rebates_s, opts.call_timeout_s)

    async def _start(self) -> None:
        if self.mode == "paper":  # paper needs the books before it can fill anything
            await self._sync()
        elif self.ctx.options.scanner:  # live takes rules from the venue until the scanner's arrive
            self._spawn(self._sync())
        await self.connected.wait()
        if self.mode == "paper":
            self._restore_paper()
        await self._heard_by_subscribers()
        await self.reconciler.run(startup=True)
        self.ready = True
        self.ctx.log.info("ready", extra={"mode": self.mode, "open_orders": len(self.desk.open_orders())})
        waiting, self.waiting = self.waiting, []
        for item in waiting:
            self._cancel(item) if isinstance(item, m.Cancel) else self._route(item)

    async def _heard_by_subscribers(self) -> None:
        """The startup reconciliation publishes what happened while this executor was down (a fill, the venue
        canceling a silent account's orders). Subscribers find a restarted publisher only at their next redial (up
        to bus.REDIAL's maximum) and lose what was sent before: so wait, bounded by that, until they are back (some
        are, and their number has stopped growing for a moment)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REDIAL["reconnect_time_max"] / 1000 + 0.25
        seen, since = -1, loop.time()
        while loop.time() < deadline:
            peers = self.ctx.peers("executions")
            if peers != seen:
                seen, since = peers, loop.time()
            elif peers and loop.time() - since >= SETTLE_S:
                return
            await asyncio.sleep(0.02)  # polling the socket's peer count, bounded by the deadline above

    async def _sync(self) -> None:
        await start_from_scanner(self.ctx, self.ctx.options.scanner, self._market, self._take_backlog)

    def _take_backlog(self) -> list[m.Message]:
        backlog, self.market_backlog, self.synced = self.market_backlog, [], True
        return backlog

    def _restore_paper(self) -> None:
        for t in self.desk.open_orders():
            rules = self.desk.rules.get(t.order.token_id)
            if t.status == "pending" or rules is None or t.order.order_type in IOC:
                continue
            self.venue.restore(request(t.order, rules, t.price, t.size), t.venue_order_id, t.filled,
                               sum(1 for trade, vid in self.desk.seen if vid == t.venue_order_id))

    def _on_connected(self) -> None:
        self.connections += 1
        if self.connections > 1:
            self.m_reconnects.labels("user").inc()
        self.connected.set()
        if self.ready:
            self.reconciler.resolutions_due = True
            self.reconciler.soon()

    def on_stop(self) -> None:
        for t in [*(i for i in self.waiting if isinstance(i, Tracked)), *(t for g in self.gathering.values() for t in g)]:
            self.desk.reject(t, STOPPING, "the executor stopped before sending it")
        self.journal.close()

    def on_halt(self, reason: str) -> None:
        self.ctx.log.warning("halted: new orders are refused until resumed; cancels still go through")

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.desk.counts["task_errors"] += 1
            self.ctx.log.error("executor task failed: %s: %s", type(exc).__name__, exc, exc_info=exc)

    def _publish(self, msg: m.Message) -> None:
        """Numbered and journaled, then sent; what the journal cannot keep (a full disk) goes out unnumbered."""
        try:
            msg = self.journal.number(msg)
        except JournalError as exc:
            self.ctx.log.error("%s: %s %s published unnumbered (a subscriber that misses it cannot ask for it again)",
                               exc, type(msg).__name__, getattr(msg, "order_id", ""))
        self.ctx.send("executions", msg)
        match msg:
            case m.MarketResolved():  # the venue pays the winning shares out: the collateral changed
                self.balance_due.set()
            case m.Fill():
                self.balance_due.set()
                self.m_fills.labels(msg.liquidity).inc()
                self.m_notional.inc(float(msg.price * msg.size))  # Prometheus values are floats
                self.m_fees.inc(float(msg.fee))
            case m.FillStatus():
                self.balance_due.set()  # a failed trade gave the collateral back
            case m.OrderRejected():
                self.m_rejects.labels(msg.code).inc()
            case m.OrderCanceled():
                self.m_cancels.inc()
            case m.ResidualExposure():
                self.m_residual.inc()

    # ------------------------------------------------------------ inbound

    def handle(self, socket: str, msg: m.Message) -> None:
        if isinstance(msg, m.Heartbeat):
            return
        if socket == "orders":
            if isinstance(msg, m.Cancel):
                self._cancel(msg) if self.ready else self.waiting.append(msg)
            elif isinstance(msg, m.Order):
                self._take(msg)
        elif self.synced:
            self._market(msg)
        else:
            self.market_backlog.append(msg)

    def _market(self, msg: m.Message) -> None:
        if isinstance(msg, m.MarketNew):
            self.desk.rules.update(base.rules_from(msg))
        elif isinstance(msg, m.TickSizeChange) and msg.token_id in self.desk.rules:
            self.desk.rules[msg.token_id] = msgspec.structs.replace(self.desk.rules[msg.token_id],
                                                                    tick=msg.new_tick_size)
        elif isinstance(msg, m.MarketResolved):
            self.desk.resolved(msg)
        self.venue.observe(msg)

    def _take(self, order: m.Order) -> None:
        self.m_orders.labels(order.side, order.order_type).inc()
        t = self.desk.take(order)
        if t is None:
            self.ctx.log.warning("order %s was taken before; not sent again", order.id)
            return
        self.backpressure.took(t)
        if self.ctx.halted:
            self.desk.reject(t, HALTED, f"the executor is halted: {self.ctx.halt_reason}")
        elif order.signal_id in self.desk.failed:
            self.desk.reject(t, SIGNAL_FAILED, "another leg of its signal failed; the signal was unwound")
        elif not self.ready:
            self.waiting.append(t)
        else:
            self._route(t)

    def _route(self, t: Tracked) -> None:
        if not t.open:  # canceled while it waited
            return
        age_ms = (self.ctx.clock() - t.order.ts_ns) / 1e6
        if age_ms > self.ctx.options.max_order_age_ms:
            self.desk.reject(t, STALE_ORDER, f"the order reached the venue edge {age_ms:.0f} ms after risk sent it "
                                             f"(limit {self.ctx.options.max_order_age_ms} ms); not sent")
            return
        sid = t.order.signal_id
        group = self.gathering.get(sid)
        if group is not None:
            group.append(t)
            return
        self.gathering[sid] = [t]
        asyncio.get_running_loop().call_later(self.ctx.options.leg_wait_ms / 1000, self._flush, sid)

    def _flush(self, sid: str) -> None:
        group = self.gathering.pop(sid, [])
        if group:
            self._spawn(self._submit(group))

    # ------------------------------------------------------------ submitting

    async def _rules(self, t: Tracked) -> MarketRules:
        rules = self.desk.rules.get(t.order.token_id)
        if rules is None:
            rules = self.desk.rules[t.order.token_id] = await self.venue.rules(t.order.token_id, t.order.market)
        return rules

    async def _submit(self, group: list[Tracked]) -> None:
        requests: list[tuple[Tracked, OrderRequest]] = []
        for t in group:
            if not t.open:
                continue
            try:
                rules = await self._rules(t)
            except VenueError as exc:
                self.desk.reject(t, exc.code, exc.message)
                continue
            req = sendable(t.order, rules)
            if isinstance(req, Refusal):
                self.desk.reject(t, req.code, req.message)
            elif t.open:
                requests.append((t, req))
        sent = await self._send(self._through_gate(requests))
        if self.ctx.tracing:  # each order's span ends once the venue has answered
            for t in group:
                self.ctx.tracing.order(t.order, t.status, t.venue_order_id, t.price, t.submitted_ts_ns, t.failure)
        for t in sent:
            if t.cancel_reason and t.status == "live":
                await self._cancel_at_venue([t], t.cancel_reason)
        await self._check_signals({t.order.signal_id for t in group})

    def _through_gate(self, requests: list[tuple[Tracked, OrderRequest]]) -> list[tuple[Tracked, OrderRequest]]:
        """The orders the venue takes now; the others wait for a window to end (sent again through the gate then)
        or are refused with the condition's reason."""
        if not requests:
            return []
        now, going, waiting = self.ctx.clock(), [], []
        delay = self.venue.send_delay(len(requests))
        for t, req in requests:
            match self.gate.verdict(t.order, now, self._deadline(t), delay):
                case Go():
                    going.append((t, req))
                case Wait(until_ns=until):
                    waiting.append((t, until))
                case Refuse(code=code, message=message):
                    self.desk.reject(t, code, message)
        if waiting:
            self._spawn(self._send_later([t for t, _ in waiting], max(u for _, u in waiting)))
        return going

    def _deadline(self, t: Tracked) -> int:
        """The last moment the order may go: risk priced it on books that are gone after that."""
        return t.order.ts_ns + int(self.ctx.options.max_order_age_ms * 1e6)

    async def _send_later(self, group: list[Tracked], until_ns: int) -> None:
        await asyncio.sleep(max(0.0, (until_ns - self.ctx.clock()) / 1e9))  # a window's known end
        await self._submit([t for t in group if t.open])

    async def _send(self, requests: list[tuple[Tracked, OrderRequest]]) -> list[Tracked]:
        if not requests:
            return []
        try:
            prepared = await self.venue.prepare([r for _, r in requests])
        except VenueError as exc:
            for t, _ in requests:
                self.desk.reject(t, exc.code, exc.message)
            return []
        batch = []
        for (t, req), p in zip(requests, prepared):
            if not p.ok:
                self.desk.reject(t, p.code, p.message)
            elif t.open and self.desk.submitting(t, p.venue_order_id, req.price, req.size):
                # journaled with its venue id before it goes: never sent twice
                self.m_submitted.inc()
                batch.append((t, req))
        if not batch:
            return []
        answers: list[base.Placed] | list[VenueError]
        try:
            answers = await self.venue.place([r for _, r in batch])
        except VenueError as exc:
            answers = [exc] * len(batch)
            if exc.unknown:
                self.ctx.log.warning("orders sent with no answer (%s); reconciling", exc)
        for (t, _), answer in zip(batch, answers):
            self.desk.answered(t, answer)
            self._learn(t, answer)
        if any(t.status == "unknown" for t, _ in batch):
            self.reconciler.soon()
        return [t for t, _ in batch]

    def _learn(self, t: Tracked, answer: base.Placed | VenueError) -> None:
        """What an answer tells of the venue: a restart, the post-only window, a wallet that cannot pay."""
        now = self.ctx.clock()
        retry_after = answer.retry_after_s if isinstance(answer, VenueError) else 0.0
        if answer.code == base.RESTARTING:
            self.gate.restarting(now, retry_after)
        elif answer.code == base.POST_ONLY_WINDOW:
            self.gate.post_only(now, retry_after)
        elif answer.code == base.BALANCE and t.order.side == "BUY":
            self._spawn(self._funds(t.price * t.size))

    async def _funds(self, needed: Decimal) -> None:
        """A BUY refused for what the wallet can pay: read the wallet, and say what is short."""
        try:
            balance = await self.venue.balance()
        except VenueError as exc:
            self.ctx.log.warning("a BUY was refused for the wallet's funds, which cannot be read now: %s", exc)
            return
        if balance is not None:
            self.balance, self.balance_ns = balance, self.ctx.clock()
            self.gate.funds(self.ctx.clock(), balance, needed, self.venue.funder)

    async def _check_signals(self, signal_ids: set[str]) -> None:
        for sid in signal_ids:
            if reason := self.desk.signal_failure(sid):
                await self._unwind(sid, reason)

    async def _unwind(self, sid: str, reason: str) -> None:
        """A multi-leg signal that failed: cancel what rests, then report what was filled and is now held."""
        resting = self.desk.unwinding(sid)
        self.ctx.log.warning("signal %s failed (%s); canceling its resting legs", sid, reason)
        await self._cancel_orders(resting, "another leg of the signal failed")
        try:
            for f in await self.venue.trades(sorted({t.order.token_id for t in self.desk.signals[sid]})):
                self.desk.fill(f)
        except VenueError as exc:
            self.ctx.log.warning("could not read the signal's trades (%s); reporting the fills seen", exc)
        self.desk.residual(sid, reason)

    # ------------------------------------------------------------ canceling

    def _cancel(self, cancel: m.Cancel) -> None:
        targets = [t for t in self.desk.open_orders() if matches(cancel, t.order)]
        foreign = list(self.desk.foreign) if cancel.source == RISK_SOURCE and not cancel.order_ids else []
        if targets or foreign:
            self._spawn(self._cancel_orders(targets, cancel.reason or f"canceled by {cancel.source}", foreign))

    async def _cancel_orders(self, targets: list[Tracked], reason: str, foreign: list[str] | None = None) -> None:
        await self._cancel_at_venue(self.desk.cancel(targets, reason), reason, foreign or [])

    async def _cancel_at_venue(self, targets: list[Tracked], reason: str, foreign: list[str] | None = None) -> None:
        ids = [t.venue_order_id for t in targets] + (foreign or [])
        if not ids:
            return
        try:
            result = await self.venue.cancel(ids)
        except VenueError as exc:
            if exc.code in (base.RESTARTING, base.RATE_LIMITED):  # nothing canceled: asked again once it can be
                if exc.code == base.RESTARTING:
                    self.gate.restarting(self.ctx.clock(), exc.retry_after_s)
                self.ctx.log.warning("cancel refused (%s); asking again when the venue takes cancels", exc)
                self.cancels_due.append((targets, reason, foreign or []))
                return
            self.ctx.log.warning("cancel failed (%s); reconciling", exc)
            self.reconciler.soon()
            return
        for t in targets:
            why = result.get(t.venue_order_id)
            if why == "":
                self.desk.end(t, t.remaining, reason)
            elif t.open:  # matched or gone meanwhile: ask what became of it
                try:
                    await self.reconciler.check(t)
                except VenueError as exc:
                    self.ctx.log.warning("order %s: cannot read its state (%s); reconciling", t.order.id, exc)
                    self.reconciler.soon()
        for vid in foreign or []:
            if result.get(vid) == "":
                self.desk.foreign.pop(vid, None)

    # ------------------------------------------------------------ reconciling

    def _on_events(self, events: list[base.VenueEvent]) -> None:
        for event in events:
            if isinstance(event, VenueFill):
                self.desk.fill(event)
            else:
                self.desk.update(event)

    async def _reconcile_every(self) -> None:
        while True:
            await asyncio.sleep(self.ctx.options.reconcile_s)
            if self.ready:
                self.reconciler.soon()

    async def _resolutions_every(self) -> None:
        """Resolutions announced while no one listened (the scanner down too): the markets held, asked about."""
        every = self.ctx.options.resolutions_s
        while every > 0:
            await asyncio.sleep(every)
            if self.ready:
                self.reconciler.resolutions_due = True
                self.reconciler.soon()

    async def _balances(self) -> None:
        """The collateral and allowance, read after each reconciliation and soon after fills (at most once a
        second); a failure keeps the last reading, whose time says how old it is."""
        while True:
            await self.balance_due.wait()
            self.balance_due.clear()
            try:
                self.balance = await self.venue.balance()
                self.balance_ns = self.ctx.clock() if self.balance is not None else 0
                if self.balance is not None:
                    self.gate.funds_read(self.balance)
            except VenueError as exc:
                self.ctx.log.warning("could not read the collateral balance (%s); keeping the last reading", exc)
            await asyncio.sleep(1.0)  # pacing the venue's rate limit, not waiting for anything

    async def _watch(self) -> None:
        """The venue's conditions as time passes: windows end, heartbeats fail or recover, a wallet that could not
        pay is read again; every change is published (``VenueStatus``), and cancels a restart refused go again."""
        opts: ExecutorOptions = self.ctx.options
        while True:
            now = self.ctx.clock()
            self.gate.tick(now)
            self.gate.heartbeats(self.venue.heartbeat_failing(), now)
            version, told_ns = self.told
            if self.gate.version != version or (self.gate.conditions and now - told_ns >= REPEAT_STATUS_S * 1e9):
                self._tell_conditions(now, changed=self.gate.version != version)
            if self.cancels_due and base.RESTARTING not in self.gate.conditions:
                due, self.cancels_due = self.cancels_due, []
                for targets, reason, foreign in due:
                    self._spawn(self._cancel_at_venue([t for t in targets if t.open], reason, foreign))
            short = base.NO_BALANCE in self.gate.conditions or base.NO_ALLOWANCE in self.gate.conditions
            if short and now - self.funds_read_ns >= opts.funds_recheck_s * 1e9:
                self.funds_read_ns = now
                self.balance_due.set()
            await asyncio.sleep(WATCH_S)

    def _tell_conditions(self, now: int, changed: bool) -> None:
        conditions = self.gate.status()
        if changed:
            what = "; ".join(f"{c.code}: {c.message}" for c in conditions) or "the venue takes every order again"
            (self.ctx.log.warning if conditions else self.ctx.log.info)("venue conditions: %s", what)
        self.told = (self.gate.version, now)
        self.ctx.send("executions", m.VenueStatus(ts_ns=now, conditions=conditions))

    # ------------------------------------------------------------ control

    def control(self, request: m.Message) -> m.Message | None:
        if isinstance(request, m.CatchUpRequest):  # a subscriber that missed some executions asks for them again
            return catch_up(self.journal, request)
        if isinstance(request, m.AccountRequest):
            if not self.ready:
                return m.Error(request_id=request.id, message="the executor has not reconciled with the venue yet; "
                                                              "ask again shortly")
            reply = msgspec.structs.replace(self.desk.account(self.mode, self.reconciler.reconciled_ns),
                                            venue=self.gate.status())
            if self.balance is None:
                return reply
            return msgspec.structs.replace(reply, collateral=self.balance.collateral,
                                           allowance=self.balance.allowance, balance_ts_ns=self.balance_ns)
        return None

    def sample(self) -> None:
        self.m_open.set(len(self.desk.open_orders()))
        self.m_positions.set(len(self.desk.ledger.positions()))

    def detail(self) -> dict[str, str]:
        desk = self.desk
        return {"mode": self.mode, "ready": str(self.ready), "synced": str(self.synced),
                "open_orders": str(len(desk.open_orders())), "positions": str(len(desk.ledger.positions())),
                "fills": str(desk.counts["fills"]), "rejected": str(desk.counts["rejected"]),
                "duplicates": str(desk.counts["duplicates"]), "settlements": str(desk.counts["settlements"]),
                "journal_bad_lines": str(self.journal.bad),
                "journal_seq": str(self.journal.seq), "journal_write_errors": str(self.journal.write_errors),
                "reconciles": str(self.reconciler.count),
                "venue_conditions": ",".join(self.gate.conditions) or "none",
                **self.backpressure.detail(), **self.venue.detail()}
