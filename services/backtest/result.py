"""What a backtest produces: every signal and fill, the equity curve, the final positions. Pure data, encoded
deterministically (the same run gives the same bytes)."""
from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

from .. import messages as m


class Point(msgspec.Struct, frozen=True, kw_only=True):
    """The account at one moment of the replay's clock."""

    ts_ns: int
    equity: Decimal  # realized + unrealized + rebates: the PnL so far, fees included
    realized: Decimal  # after fees
    unrealized: Decimal  # shares held, less their cost: complete sets (YES and NO) at the 1 they pay, the rest
    # marked to the mid (else the last trade)
    exposure: Decimal  # what BUYs risk: shares held in no complete set at cost, plus resting BUY orders at their limit
    fees: Decimal
    # Maker rebates, estimated by the venue's rule (the market's rebate rate x the taker fee of each maker fill,
    # summed per UTC day and market and floored to the micro-unit): no venue reports a backtest's.
    rebates: Decimal = Decimal(0)


class MarketInfo(msgspec.Struct, frozen=True, kw_only=True):
    market: str
    question: str
    outcomes: dict[str, str]  # token id -> outcome name


class Refusal(msgspec.Struct, frozen=True, kw_only=True):
    """A reason risk refused a signal for (``by`` risk: one per reason, ``token_id`` its leg's, "" for the whole
    signal), or an order the executor or the paper venue behind it refused (``by`` executor: FOK not fillable,
    post-only crossing, a price that rounds out of range...)."""

    ts_ns: int
    signal_id: str
    token_id: str
    code: str
    message: str
    by: Literal["risk", "executor"] = "executor"


class BacktestResult(msgspec.Struct, frozen=True, kw_only=True):
    strategy: str
    params: dict[str, str]
    data: str  # the recording replayed
    started_ns: int  # the replay clock: the first and last message's time
    ended_ns: int
    messages: int
    signals: list[m.Signal]
    cancels: int
    refusals: list[Refusal]  # risk's reasons, then the executor's refusals, as they came
    fills: list[m.Fill]
    equity: list[Point]  # sampled on the replay clock, and at every fill
    positions: list[m.Position]  # at the end, closed ones included (their realized PnL)
    marks: dict[str, Decimal]  # token -> its mark at the end
    signal_pnl: dict[str, Decimal]  # signal id -> what its fills made by the end (realized + marked + rebates)
    markets: dict[str, MarketInfo]  # every market the recording lists


def encode(result: BacktestResult) -> bytes:
    return msgspec.json.encode(result)


def decode(data: bytes) -> BacktestResult:
    return msgspec.json.decode(data, type=BacktestResult)
