"""Backpressure: while the executor lags, the signal producers are throttled over control; released once it has
caught up.

The lag is the age of the oldest order the venue has not answered yet (from when risk sent it), or the wait of
the latest order to be handled, whichever is larger. Past ``throttle_lag_ms`` the producers are throttled to
``throttle_signals_per_s``, told again every ``THROTTLE_REFRESH_S`` (a throttle runs out after ``THROTTLE_FOR_S``,
so a producer that restarts is throttled again and one never released frees itself); they are released once the
lag has stayed under ``release_lag_ms`` for ``release_after_s``.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, NamedTuple

from .. import messages as m
from ..bus import BusError, Requester
from ..config import STRATEGIES_KIND, control_address
from .desk import UNANSWERED, Tracked
from .options import ExecutorOptions

BACKPRESSURE_S = 0.1  # how often the lag is looked at
THROTTLE_REFRESH_S = 1.0  # a throttle is repeated this often while it holds (it runs out after THROTTLE_FOR_S)
THROTTLE_FOR_S = 5.0


class Step(NamedTuple):
    began: bool = False  # throttling began at this look
    tell: bool = False  # tell the producers to slow down (again)
    release: bool = False  # tell them they may go at their own pace


class Throttle:
    """Whether to throttle, pure: each look at the lag in, what to tell the producers out."""

    def __init__(self, options: ExecutorOptions) -> None:
        self.options = options
        self.throttling = False
        self.throttles = 0  # times throttling began
        self.calm_since: int | None = None  # since when the lag has stayed under release_lag_ms
        self.told_ns = 0

    def look(self, now_ns: int, lag_ms: float) -> Step:
        opts = self.options
        began = lag_ms > opts.throttle_lag_ms and not self.throttling
        if began:
            self.throttling, self.calm_since = True, None
            self.throttles += 1
        if not self.throttling:
            return Step()
        if lag_ms > opts.release_lag_ms:
            self.calm_since = None
        elif self.calm_since is None:
            self.calm_since = now_ns
        elif now_ns - self.calm_since >= opts.release_after_s * 1e9:
            self.throttling = False
            return Step(began, release=True)
        if now_ns - self.told_ns >= THROTTLE_REFRESH_S * 1e9:
            self.told_ns = now_ns
            return Step(began, tell=True)
        return Step(began)


class Backpressure:
    """Measures the lag and tells the producers (every enabled strategies host, unless ``throttle_services``
    names them) what ``Throttle`` decides."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.taken: deque[Tracked] = deque()  # in arrival order, for the age of the oldest unanswered order
        self.throttle = Throttle(ctx.options)
        self.lag_ms = 0.0
        metrics = ctx.metrics
        self.m_lag = metrics.gauge("executor_lag_seconds", "the executor's lag, as backpressure measures it")
        self.m_throttling = metrics.gauge("backpressure_throttling", "1 while the executor throttles signal producers")
        self.m_throttles = metrics.counter("backpressure_throttles", "times the executor began throttling")

    def took(self, t: Tracked) -> None:
        self.taken.append(t)

    def _lag_ns(self, now: int, handled_before: int) -> int:
        taken = self.taken
        while taken and taken[0].status not in UNANSWERED:
            taken.popleft()
        oldest = now - taken[0].order.ts_ns if taken else 0
        flow = self.ctx.flows["orders"]
        inbound = flow.lag.last_ns if flow.handled != handled_before or flow.depth else 0
        return max(oldest, inbound)

    def _targets(self) -> list[str]:
        config = self.ctx.config
        return list(self.ctx.options.throttle_services) or [
            n for n in config.watched_services if config.services[n].kind == STRATEGIES_KIND]

    async def run(self) -> None:
        opts: ExecutorOptions = self.ctx.options
        targets = self._targets()
        if not opts.throttle_lag_ms or not targets:
            return
        requesters = {name: Requester(control_address(self.ctx.config, name), 1000) for name in targets}
        handled = self.ctx.flows["orders"].handled
        try:
            while True:
                await asyncio.sleep(BACKPRESSURE_S)
                now = self.ctx.clock()
                lag_ns = self._lag_ns(now, handled)
                handled = self.ctx.flows["orders"].handled
                self.lag_ms = lag_ns / 1e6
                self.m_lag.set(lag_ns / 1e9)
                step = self.throttle.look(now, self.lag_ms)
                if step.began:
                    self.m_throttles.inc()
                    self.m_throttling.set(1)
                    self.ctx.log.warning("lagging %.0f ms (limit %.0f ms): throttling %s to %s signals/s",
                                         self.lag_ms, opts.throttle_lag_ms, ", ".join(targets),
                                         opts.throttle_signals_per_s)
                if step.release:
                    self.m_throttling.set(0)
                    self.ctx.log.info("caught up (lag %.0f ms): releasing %s", self.lag_ms, ", ".join(targets))
                    await self._tell(requesters, m.ThrottleRequest(throttle=False, by=self.ctx.name,
                                                                   reason="the executor caught up"))
                elif step.tell:
                    await self._tell(requesters, m.ThrottleRequest(
                        max_signals_per_s=opts.throttle_signals_per_s, for_s=THROTTLE_FOR_S, by=self.ctx.name,
                        reason=f"the executor lags {self.lag_ms:.0f} ms (limit {opts.throttle_lag_ms:.0f} ms)"))
        finally:
            for requester in requesters.values():
                requester.close()

    async def _tell(self, requesters: dict[str, Requester], request: m.ThrottleRequest) -> None:
        for name, requester in requesters.items():
            try:
                reply = await asyncio.to_thread(requester.request, request)
            except BusError as exc:  # down or busy: a restarted producer is told again on the next refresh
                self.ctx.log.warning("could not tell %s to %s: %s", name,
                                     "slow down" if request.throttle else "resume", exc)
                continue
            if isinstance(reply, m.Error):
                self.ctx.log.warning("%s refused the throttle: %s", name, reply.message)

    def detail(self) -> dict[str, str]:
        return {"lag_ms": f"{self.lag_ms:.1f}", "throttling": str(self.throttle.throttling),
                "throttles": str(self.throttle.throttles)}
