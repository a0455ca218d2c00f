"""Trading health: whether the mesh can trade now, judged from the services' own status rows.

Every service running is not enough: a mesh whose markets are all stale sends nothing and says nothing. Trading
is healthy when every rule below holds; each one that fails is a reason, in plain words:

- a scanner, risk and an executor are configured (strategies are optional: agents trade through MCP without
  them), and every one of these services answers and is not halted;
- the scanner has markets and none of them is stale; risk and each strategies host see none stale either
  (a stale market takes no orders: risk refuses it as STALE_BOOK, strategies send nothing for it);
- risk has synced from the scanner and reconciled with the executor, and an executor is connected to it;
- the executor is ready and the venue shows no condition (restarting, post-only, rate-limited ...);
- signals are not all refused: when risk decided on a signal in the last ``SIGNAL_WINDOW_S`` seconds, it accepted
  at least one in that time. No signals at all is not a fault (a quiet market gives none); it is shown.

Pure: the rows come from ``cli.collect_status``, the roles from the config's service kinds.
"""
from __future__ import annotations

import msgspec

from . import messages as m

SIGNAL_WINDOW_S = 60.0
REQUIRED = ("scanner", "risk", "executor")
ROLES = {"scanner": "services.scanner:Scanner", "risk": "services.risk:Risk",
         "executor": "services.executor:Executor", "strategies": "services.strategies.host:Strategies"}
UP = ("running", "halted")


class Signals(msgspec.Struct, frozen=True, kw_only=True):
    """What risk decided lately: seconds since its last acceptance and refusal (None: not since it started)."""

    last_accepted_s: float | None = None
    last_rejected_s: float | None = None
    last_refusal: str = ""


class Health(msgspec.Struct, frozen=True, kw_only=True):
    healthy: bool
    reasons: list[str] = []  # why not, one line each; empty when healthy
    markets: int = 0  # as the scanner knows them
    stale: int = 0  # of those, stale at the scanner
    stale_at_risk: int = 0
    executor_ready: bool = False
    executor_connected: bool = False  # to risk, which sends it the orders
    venue_conditions: list[str] = []
    signals: Signals = Signals()


def roles(kinds: dict[str, str]) -> dict[str, list[str]]:
    """Service names by role, from each enabled service's kind (name -> kind)."""
    return {role: [name for name, k in kinds.items() if k == kind] for role, kind in ROLES.items()}


def trading_configured(kinds: dict[str, str]) -> bool:
    """Whether this mesh trades at all (a test mesh of other services does not, and is not judged)."""
    return any(k in ROLES.values() for k in kinds.values())


def _int(detail: dict[str, str], key: str) -> int:
    try:
        return int(detail.get(key, "0"))
    except ValueError:
        return 0


def _age(detail: dict[str, str], key: str) -> float | None:
    try:
        return float(detail[key]) if detail.get(key) else None
    except ValueError:
        return None


def judge(rows: list[m.ServiceState], kinds: dict[str, str]) -> Health:
    """The mesh's trading health from its status rows (name -> kind for the enabled services)."""
    by_name = {r.name: r for r in rows}
    reasons: list[str] = []
    named = roles(kinds)
    up: dict[str, list[m.ServiceState]] = {}
    for role, names in named.items():
        if not names and role in REQUIRED:
            reasons.append(f"no {role} in the config: nothing trades without one")
        up[role] = []
        for name in names:
            row = by_name.get(name)
            if row is None or row.state not in UP:
                reasons.append(f"{name} is {row.state if row else 'down'}")
            elif row.state == "halted":
                reasons.append(f"{name} is halted" + (f": {row.halt_reason}" if row.halt_reason else ""))
                up[role].append(row)
            else:
                up[role].append(row)

    markets = stale = stale_at_risk = 0
    for row in up["scanner"]:
        markets, stale = _int(row.detail, "markets"), _int(row.detail, "stale")
        if markets == 0:
            reasons.append(f"{row.name} has no markets yet (Gamma not reached, or still loading)")
        elif stale:
            reasons.append(f"{row.name}: {stale} of {markets} markets stale (their feed is down or reconnecting)")

    connected = False
    signals = Signals()
    for row in up["risk"]:
        d = row.detail
        if d.get("synced") != "True" or d.get("reconciled") != "True":
            reasons.append(f"{row.name} not ready: synced from the scanner {d.get('synced', '?')}, "
                           f"reconciled with the executor {d.get('reconciled', '?')}")
        stale_at_risk = _int(d, "stale")
        if stale_at_risk:
            reasons.append(f"{row.name}: {stale_at_risk} of {_int(d, 'markets')} markets stale "
                           f"(signals on them are refused as STALE_BOOK)")
        connected = d.get("executor_connected") == "True"
        if not connected:
            reasons.append(f"{row.name}: no executor connected (signals are refused as EXECUTOR_DOWN)")
        signals = Signals(last_accepted_s=_age(d, "last_accepted_s"), last_rejected_s=_age(d, "last_rejected_s"),
                          last_refusal=d.get("last_refusal", ""))
        if _recent(signals.last_rejected_s) and not _recent(signals.last_accepted_s):
            reasons.append(f"{row.name}: every signal of the last {SIGNAL_WINDOW_S:.0f} s was refused "
                           f"(the last as {signals.last_refusal or 'refused'})")

    for row in up["strategies"]:
        d = row.detail
        if d.get("synced") != "True":
            reasons.append(f"{row.name} has not synced from the scanner yet")
        if n := _int(d, "stale"):
            reasons.append(f"{row.name}: {n} of {_int(d, 'markets')} markets stale (no signals for them)")

    ready = False
    conditions: list[str] = []
    for row in up["executor"]:
        d = row.detail
        ready = d.get("ready") == "True"
        if not ready:
            reasons.append(f"{row.name} is not ready (no account from the venue yet)")
        conditions = [c for c in d.get("venue_conditions", "none").split(",") if c and c != "none"]
        if conditions:
            reasons.append(f"the venue: {', '.join(conditions)} (the executor holds or refuses orders meanwhile)")

    return Health(healthy=not reasons, reasons=reasons, markets=markets, stale=stale, stale_at_risk=stale_at_risk,
                  executor_ready=ready, executor_connected=connected, venue_conditions=conditions, signals=signals)


def _recent(age_s: float | None) -> bool:
    return age_s is not None and age_s <= SIGNAL_WINDOW_S


def format_health(health: Health) -> str:
    """Lines for the status table: the verdict, then one line per reason."""
    if health.healthy:
        return (f"TRADING  healthy: {health.markets} markets, none stale; executor ready and connected; "
                f"{_signals(health.signals)}")
    return "\n".join([f"TRADING  UNHEALTHY ({_signals(health.signals)})",
                      *(f"  - {reason}" for reason in health.reasons)])


def _signals(signals: Signals) -> str:
    def ago(age: float | None) -> str:
        return "never" if age is None else f"{age:.0f}s ago"
    return f"last signal accepted {ago(signals.last_accepted_s)}, refused {ago(signals.last_rejected_s)}"
