"""Maker rebates as Polymarket reports them: ``GET /rebates/current`` for the account's wallet, polled.

Each poll asks the venue's time (``GET /time``: the venue decides which UTC day a trade's rebate counts in), then
the rebates of its today and yesterday (yesterday's can still grow from trades just before midnight, and are final
once the venue's day has turned). A (day, market) whose total or finality differs from what was last published
goes out as a ``Rebate``. Totals, not increments: one published again (after a restart) counts nothing twice, and
``known``, what was published before, keeps it from being sent again at all.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

import httpx
import msgspec

from ... import messages as m
from . import schema

DAY_S = 86_400


def day_of(epoch_s: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(epoch_s))


def rebates_of(rows: list[schema.RebatedFee] | None, day: str, today: str, maker: str) -> list[m.Rebate]:
    """One day's answer as messages, one per market (a market listed twice counts once, its last row)."""
    out = {}
    for row in rows or []:
        amount = schema.quantity(row.rebated_fees_usdc, "rebated_fees_usdc")
        out[row.condition_id] = m.Rebate(day=day, market=row.condition_id, maker=maker, amount=amount,
                                         final=day < today)
    return list(out.values())


class RebatePoller:
    """Reads the account's maker rebates every ``every_s`` and hands each change to ``publish``."""

    def __init__(self, clob_url: str, maker: str, publish: Callable[[m.Rebate], None], log: logging.Logger,
                 known: Iterable[m.Rebate] = (), every_s: float = 60.0, timeout_s: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.clob_url = clob_url
        self.maker = maker
        self.publish = publish
        self.log = log
        self.every_s = every_s
        self.timeout_s = timeout_s
        self.transport = transport
        self.last = {(r.day, r.market): (r.amount, r.final) for r in known}
        self.polls = 0
        self.failures = 0

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.clob_url, timeout=self.timeout_s, transport=self.transport) as http:
            while True:
                try:
                    await self.poll(http)
                except (httpx.HTTPError, msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                    self.failures += 1
                    self.log.warning("cannot read the maker rebates (%s); trying again in %gs", exc, self.every_s)
                await asyncio.sleep(self.every_s)  # the polling interval, not a wait for anything

    async def poll(self, http: httpx.AsyncClient) -> list[m.Rebate]:
        """One round: what changed since the last, published."""
        now_s = int(msgspec.json.decode(await self._get(http, "/time"), type=int | float))
        today = day_of(now_s)
        changed = []
        for day in (day_of(now_s - DAY_S), today):
            answer = await self._get(http, "/rebates/current", {"date": day, "maker_address": self.maker})
            for msg in rebates_of(msgspec.json.decode(answer, type=list[schema.RebatedFee] | None), day, today,
                                  self.maker):
                key = (msg.day, msg.market)
                if self.last.get(key) != (msg.amount, msg.final):
                    self.last[key] = (msg.amount, msg.final)
                    self.publish(msg)
                    changed.append(msg)
        self.polls += 1
        return changed

    @staticmethod
    async def _get(http: httpx.AsyncClient, path: str, params: dict[str, str] | None = None) -> bytes:
        response = await http.get(path, params=params)
        if response.status_code != 200:
            raise ValueError(f"GET {path} answered {response.status_code}: {response.text[:200]}")
        return response.content
