"""Risk limits as config: the mesh-wide ones, the tighter budget for agent (``mcp:*``) signals, and the budgets the
operator grants agent-authored strategies (``strategy:NAME``, from the strategy store)."""
from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

AGENT_PREFIX = "mcp:"
STRATEGY_PREFIX = "strategy:"


class Limits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Money in collateral (USDC). Exposure is what BUYs cost: shares held at cost plus open BUY orders at limit."""

    max_order_notional: Decimal = Decimal("250")  # size x limit price of one order
    max_position_per_token: Decimal = Decimal("500")
    max_position_per_market: Decimal = Decimal("1000")
    max_gross_exposure: Decimal = Decimal("5000")
    max_daily_loss: Decimal = Decimal("250")  # today's realized PnL plus the marked PnL of what is held
    max_open_orders: int = 100
    max_signals_per_minute: int = 600  # per source
    max_price_deviation: Decimal = Decimal("0.05")  # how far a limit may go past the best opposite price
    min_time_to_end_s: int = 600  # no new orders in a market this close to its end


class AgentLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Applied on top of ``Limits`` to signals from ``mcp:*`` sources."""

    max_order_notional: Decimal = Decimal("50")
    max_daily_notional: Decimal = Decimal("200")  # per agent source, per UTC day, of every order accepted
    max_signals_per_minute: int = 20
    # An agent SELLs only shares its own fills bought (SOURCE_POSITION); true lets it sell what strategies and
    # other agents bought too, up to what the account holds.
    sell_any_source: bool = False


class RiskOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    limits: Limits = Limits()
    agent: AgentLimits = AgentLimits()
    scanner: str = "scanner"  # whose snapshot risk starts from
    executor: str = "executor"  # whose account (reconciled with the venue) risk starts from
    recent_signals: int = 100_000  # signal ids remembered to refuse a duplicate
    # A human approves agent (mcp:*) signals before they trade: "auto" when the money is real (venue polymarket,
    # live mode), "always" (e.g. to rehearse it on the local venue), or "never".
    approval: Literal["auto", "always", "never"] = "auto"
    approval_timeout_s: float = 300.0  # a pending signal not approved by then is refused, never sent
    # The human may also answer in the MCP client's confirmation dialog (elicitation), where the client offers
    # one. Turn it off for a client that answers such requests by itself rather than asking its user.
    client_approval: bool = True
    # Every verdict is numbered and kept in <state_dir>/risk/decisions.jsonl, so analytics, if it was down, asks for
    # those it missed. The latest journal_keep are kept (the file holds at most twice as many, ~1 KB each).
    journal_keep: int = 20_000


class Grant(msgspec.Struct, frozen=True):
    """What the operator granted one agent-authored strategy (``polybot strategy approve``), on top of ``Limits``.

    ``approved`` False: the strategy is in the store but not approved, or stopped: its signals are refused."""

    approved: bool
    sha256: str = ""
    max_order_notional: Decimal = Decimal("0")
    max_gross_exposure: Decimal = Decimal("0")
    max_daily_loss: Decimal = Decimal("0")
    max_open_orders: int = 0
    max_signals_per_minute: int = 0
    markets: frozenset[str] = frozenset()  # the markets it may trade; empty: any
    why: str = ""  # not approved: why (pending, stopped)


def over_limits(budget: dict[str, Decimal], limits: Limits) -> list[str]:
    """Each budget figure above the operator's own limit of that name, said with both numbers."""
    return [f"{key} {value} is above the operator's limit {getattr(limits, key)} ([services.risk.options.limits] "
            f"{key})" for key, value in budget.items() if hasattr(limits, key) and value > getattr(limits, key)]


def is_agent(source: str) -> bool:
    return source.startswith(AGENT_PREFIX)


def flat(limits: Limits, agent: AgentLimits) -> dict[str, Decimal]:
    """Every limit by name, for ``RiskReply`` (a switch as 1 when on, 0 when off)."""
    out = {k: Decimal(v) for k, v in msgspec.structs.asdict(limits).items()}
    out.update({f"agent.{k}": Decimal(v) for k, v in msgspec.structs.asdict(agent).items()})
    return out
