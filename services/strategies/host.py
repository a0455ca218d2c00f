"""The strategies service: hosts the configured strategies, feeds them the bus, pushes their signals.

With shards (``shard`` k of ``shards`` n) each process sees only the markets whose condition id hashes
to its shard, so markets can be split across several strategy processes; risk pulls from all of them.

It sheds stale work: a signal computed from a book update older than ``max_book_age_ms`` is not sent. Under
backpressure (a ``ThrottleRequest`` from the executor) it sends at most so many signals a second and sheds the
rest, until released or the throttle runs out; cancels always go, as they only lower risk.
"""
from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from .. import messages as m
from ..runtime import Service, StartupError
from ..sync import ask_until, start_from_scanner
from .loading import StrategyError, changed, load, make, source_of

class StrategiesOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # name -> its parameters (a shipped or installed strategy of that name), or a table with ``class`` (a spec, see
    # loading.py: "path/to/file.py:Class", "package.module:Class" or an entry point's name), ``params`` and, for a
    # file, ``sha256``: the host refuses to start when the file is not that version (an approved one).
    strategies: dict[str, dict[str, Any]] = msgspec.field(default_factory=lambda: {"arbitrage": {}})
    shard: int = 0
    shards: int = 1
    scanner: str = "scanner"  # the service whose snapshot a (re)started host begins from
    executor: str = "executor"  # whose account (what each source's fills hold) a (re)started host gives strategies
    max_book_age_ms: int = 1000  # a signal from a book update older than this is shed, not sent; 0: never


def build(name: str, table: dict[str, Any], base: Any) -> Any:
    """One configured strategy, running as ``name`` (its signals' source strategy:NAME); StartupError if it cannot."""
    spec, params = (str(table["class"]), table.get("params") or {}) if "class" in table else (name, table)
    try:
        if why := unapproved(table):  # before loading: loading a file runs its code
            raise StrategyError(why)
        cls = load(spec, base)
        return make(cls, params, run_as=name if "class" in table else "")
    except (StrategyError, OSError) as exc:
        raise StartupError(f"strategy {name}: {exc}") from None


def unapproved(table: dict[str, Any]) -> str:
    """Why a configured strategy's file is not the version approved ("" when it is, or when no hash is named)."""
    want = table.get("sha256") if isinstance(table.get("class"), str) else None
    path = str(table["class"]).rpartition(":")[0] if want else ""
    return changed(path, str(want)) if path else ""


def shard_of(condition_id: str, shards: int) -> int:
    return int(hashlib.sha256(condition_id.encode()).hexdigest(), 16) % shards


class Throttle:
    """Backpressure: while active, a token bucket lets through at most ``rate`` signals a second."""

    def __init__(self) -> None:
        self.until_ns = 0
        self.rate = 0.0
        self.tokens = 0.0
        self.at_ns = 0
        self.reason = ""
        self.times = 0  # how often it went from free to throttled

    def set(self, request: m.ThrottleRequest, now_ns: int) -> None:
        if not request.throttle:
            self.until_ns = 0
            return
        if not self.active(now_ns):
            self.times += 1
            self.tokens, self.at_ns = 1.0, now_ns
        self.until_ns = now_ns + int(request.for_s * 1e9)
        self.rate = max(request.max_signals_per_s, 0.0)
        self.reason = request.reason

    def active(self, now_ns: int) -> bool:
        return now_ns < self.until_ns

    def allow(self, now_ns: int) -> bool:
        if not self.active(now_ns):
            return True
        self.tokens = min(max(1.0, self.rate), self.tokens + (now_ns - self.at_ns) / 1e9 * self.rate)
        self.at_ns = now_ns
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Strategies(Service):
    consumes = {"prices": None, "events": None, "executions": None}
    publishes = ("signals",)
    Options = StrategiesOptions

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        opts = ctx.options
        if not 0 <= opts.shard < opts.shards:
            raise StartupError(f"shard {opts.shard} is not within shards {opts.shards}")
        self.strategies = [build(name, table, ctx.config.state_path) for name, table in opts.strategies.items()]
        # What each one's signals and cancels go out as, whatever it wrote in them.
        self.sources = [source_of(s) for s in self.strategies]
        self.mine: set[str] = set()  # condition ids of this shard
        self.stale: set[str] = set()  # markets the scanner says are stale (of any shard; counted for ours)
        self.synced = False
        self.backlog: list[m.Message] = []  # what arrived before the scanner's snapshot
        self.sent = 0
        self.dropped = 0
        self.account = "not asked"  # the executor's account, as given to the strategies at start
        self.shed: dict[str, int] = {"stale": 0, "throttled": 0}
        self.throttle = Throttle()
        self.m_shed = ctx.metrics.counter("signals_shed", "signals not sent: from a stale book, or throttled",
                                          ["reason"])
        self.m_throttled = ctx.metrics.gauge("throttled", "1 while backpressure throttles this host's signals")

    async def run(self) -> None:
        """Start from the scanner's snapshot, then the messages that came after it, then live; and give strategies
        the executor's account as soon as it answers (what their fills hold, e.g. the quoter's inventory)."""
        await start_from_scanner(self.ctx, self.ctx.options.scanner, self._feed, self._take_backlog)
        executor = self.ctx.options.executor
        if executor and executor in self.ctx.config.watched_services:
            account = await ask_until(self.ctx, executor, m.AccountRequest(), m.AccountReply)
            self._feed(account)
            self.account = f"{len(account.holdings)} holdings"

    def _take_backlog(self) -> list[m.Message]:
        backlog, self.backlog, self.synced = self.backlog, [], True
        return backlog

    def handle(self, socket: str, msg: m.Message) -> None:
        if isinstance(msg, m.Heartbeat):
            return
        if not self.synced:
            self.backlog.append(msg)
            return
        self._feed(msg)

    def _feed(self, msg: m.Message) -> None:
        if isinstance(msg, m.MarketNew):
            # An event's members stay together: its arbitrage needs every outcome.
            if shard_of(msg.neg_risk_market_id or msg.market, self.ctx.options.shards) != self.ctx.options.shard:
                return
            self.mine.add(msg.market)
        elif isinstance(msg, m.MarketStale):
            (self.stale.update if msg.stale else self.stale.difference_update)(msg.markets)
        for strategy, source in zip(self.strategies, self.sources):
            for signal in strategy.on_message(msg):
                if signal.source != source:  # a strategy speaks for itself alone
                    signal = msgspec.structs.replace(signal, source=source)
                if self.ctx.halted and isinstance(signal, m.Signal):
                    continue  # cancels still go: they only lower risk
                now = self.ctx.clock()
                if isinstance(signal, m.Signal) and (why := self._shed(signal, now)):
                    self.shed[why] += 1
                    self.m_shed.labels(why).inc()
                    continue
                # A strategy is pure and stamps its cause's time; the hop's own time is when it leaves here.
                signal = msgspec.structs.replace(signal, ts_ns=now)
                sent = self.ctx.send("signals", signal)
                if sent:
                    self.sent += 1
                else:
                    self.dropped += 1
                if self.ctx.tracing and isinstance(signal, m.Signal):
                    self.ctx.tracing.signal(signal, sent)

    def _shed(self, signal: m.Signal, now: int) -> str:
        """Why this signal is not sent ("" when it is)."""
        limit = self.ctx.options.max_book_age_ms
        if limit and signal.cause_ts_ns and now - signal.cause_ts_ns > limit * 1_000_000:
            return "stale"
        if not self.throttle.allow(now):
            return "throttled"
        return ""

    def control(self, request: m.Message) -> m.Message | None:
        if isinstance(request, m.ThrottleRequest):
            now = self.ctx.clock()
            was = self.throttle.active(now)
            self.throttle.set(request, now)
            if self.throttle.active(now) and not was:
                self.ctx.log.warning("throttled to %s signals/s by %s: %s", request.max_signals_per_s, request.by,
                                     request.reason)
            elif was and not self.throttle.active(now):
                self.ctx.log.info("released by %s", request.by)
            self.m_throttled.set(int(self.throttle.active(now)))
            return m.Ok(request_id=request.id, detail="throttled" if self.throttle.active(now) else "released")
        return None

    def sample(self) -> None:
        self.m_throttled.set(int(self.throttle.active(self.ctx.clock())))

    def detail(self) -> dict[str, str]:
        throttled = self.throttle.active(self.ctx.clock())
        return {"strategies": ",".join(s.name for s in self.strategies), "markets": str(len(self.mine)),
                "stale": str(len(self.mine & self.stale)), "synced": str(self.synced), "account": self.account,
                "signals": str(self.sent), "signals_dropped": str(self.dropped),
                "shed_stale": str(self.shed["stale"]), "shed_throttled": str(self.shed["throttled"]),
                "throttled": str(throttled), "throttles": str(self.throttle.times),
                "throttle_reason": self.throttle.reason if throttled else ""}
