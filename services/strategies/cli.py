"""`polybot strategy`: write a new strategy, and the operator's say over the ones agents propose.

``new`` writes a starting strategy and its test. ``list``, ``show``, ``approve`` and ``stop`` are the operator's:
an agent proposes (the MCP server writes only a pending version into the store); only these commands approve a
version, set its budget (never above the operator's own risk limits), start it (the supervisor runs it as the
service strategy_NAME, risk holds it to its budget and logs the approval with its code hash on ``decisions``) or
stop it (its signals refused, its orders canceled, its process stopped).
"""
from __future__ import annotations

import argparse
import datetime as dt
import difflib
import getpass
import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from .. import messages as m
from ..config import RISK_KIND, Config, control_address, service_of_kind
from . import REGISTRY
from .loading import NAME
from .store import SERVICE_PREFIX, Budget, Entry, Store, StoreError

APPROVE_TIMEOUT_MS = 5000


def add_commands(commands: argparse._SubParsersAction) -> None:
    strategy = commands.add_parser(
        "strategy", help="write a strategy; list, show, approve and stop the ones agents propose",
        description="Agents propose strategies (pending); the operator looks at one (show), approves it with a "
                    "budget (it then runs as the service strategy_NAME under that budget) or stops it.")
    actions = strategy.add_subparsers(dest="strategy_action", required=True, metavar="ACTION")
    new = actions.add_parser("new", help="write a starting strategy NAME.py and its test test_NAME.py")
    new.add_argument("name", help="lower-case letters, digits and _ (at most 24), starting with a letter")
    new.add_argument("--dir", default=".", help="the folder to write them in (default: the current one)")
    listed = actions.add_parser("list", help="shipped, pending, running and stopped strategies")
    listed.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show = actions.add_parser("show", help="a strategy's pending code, its hash, the diff against the running "
                                           "version, the budget asked, who proposed it and its backtest")
    show.add_argument("name")
    approve = actions.add_parser(
        "approve", help="approve the pending version with a budget: it starts, or replaces the running version",
        description="Approve the pending version (the one `polybot strategy show` shows). The budget starts from "
                    "what was asked; each --budget key=value sets one figure. No figure may exceed the operator's "
                    "own risk limit of that name. Risk logs the approval with the code's sha256 (audit log) and "
                    "holds the strategy to its budget; the supervisor starts it, or restarts it on the new version.")
    approve.add_argument("name")
    approve.add_argument("--budget", action="append", default=[], metavar="KEY=VALUE",
                         help=f"one of {', '.join(Budget.__dataclass_fields__)}; repeat for several")
    approve.add_argument("--sha", default="", metavar="PREFIX",
                         help="the sha256 (or its start) you were shown: refused if the pending code is another")
    stop = actions.add_parser("stop", help="stop a running strategy: signals refused, orders canceled, process "
                                           "stopped")
    stop.add_argument("name")


def run(config: Config, args: argparse.Namespace) -> int:
    store = Store(config.state_path)
    action = {"new": _new, "list": _list, "show": _show, "approve": _approve, "stop": _stop}[args.strategy_action]
    try:
        return action(config, store, args)
    except StoreError as exc:
        print(f"polybot: {exc}", file=sys.stderr)
        return 1


def _ask(config: Config, service: str, request: m.Message, timeout_ms: int = APPROVE_TIMEOUT_MS) -> m.Message | None:
    from ..cli import _ask as ask  # the CLI's one way of asking a service

    return ask(config, service, request, timeout_ms)


# ---------------------------------------------------------------- new


STRATEGY = '''"""{name}, a starting strategy: where the spread is wide it bids one tick above the best bid, once a token

Written by `polybot strategy new {name}`; its test is test_{name}.py (`pytest test_{name}.py`). The API it uses is
polybot_strategy (version {api}). To run it, an agent checks, backtests and proposes it through the MCP server
(check_strategy, backtest_strategy, propose_strategy) and the operator approves it (`polybot strategy approve`).
"""
from __future__ import annotations

from decimal import Decimal

import polybot_strategy as ps


class {cls}Params(ps.Params):
    size: Decimal = Decimal("5")  # shares a bid (at least the market's minimum)
    min_spread: Decimal = Decimal("0.05")  # bid only where the best ask is at least this far above the best bid


class {cls}(ps.Strategy):
    name = "{name}"
    Params = {cls}Params

    def __init__(self, params: {cls}Params) -> None:
        super().__init__(params)
        self.bidding: set[str] = set()  # tokens it has bid on

    def on_message(self, msg: ps.Message) -> list[ps.Message]:
        out: list[ps.Message] = []
        for token in sorted(self.track(msg)):
            market = self.markets.get(self.token_market.get(token, ""))
            if market is None or token in self.bidding or not self.tradeable(market.market):
                continue
            bid, ask = self.books.best_bid(token), self.books.best_ask(token)
            if bid is None or ask is None or ask[0] - bid[0] < self.params.min_spread:
                continue
            price = ps.round_price(bid[0] + market.tick_size, market.tick_size, "BUY")
            size = max(ps.round_size(self.params.size), market.min_size)
            if ps.why_not(market, price, size):
                continue
            self.bidding.add(token)
            out.append(ps.signal(self, msg, [ps.buy(token, size, price, market=market.market, post_only=True)],
                                 rationale=f"bid {{price}}: the spread is {{ask[0] - bid[0]}}"))
        return out
'''

TEST = '''"""The strategy {name} on a market and a book it is given: what it signals."""
from __future__ import annotations

from decimal import Decimal as D

import polybot_strategy as ps

from {name} import {cls}


def market() -> ps.MarketNew:
    return ps.MarketNew(market="0xmarket", question="Will it?", tick_size=D("0.01"), min_size=D("5"),
                        outcomes=[ps.Outcome(token_id="yes", name="Yes"), ps.Outcome(token_id="no", name="No")])


def book(bid: str, ask: str) -> ps.BookSnapshot:
    return ps.BookSnapshot(books=[ps.Book(token_id="yes", market="0xmarket", bids=[ps.Level(D(bid), D("100"))],
                                          asks=[ps.Level(D(ask), D("100"))])])


def test_it_bids_one_tick_above_the_best_bid_where_the_spread_is_wide() -> None:
    strategy = {cls}({cls}.Params())
    assert strategy.on_message(market()) == []
    signal, = strategy.on_message(book("0.40", "0.50"))
    assert signal.source == "strategy:{name}"
    leg, = signal.legs
    assert (leg.token_id, leg.side, leg.size, leg.limit_price, leg.post_only) == ("yes", "BUY", D("5"), D("0.41"),
                                                                                  True)
    assert strategy.on_message(book("0.40", "0.50")) == []  # once per token


def test_it_does_not_bid_where_the_spread_is_narrow() -> None:
    strategy = {cls}({cls}.Params())
    strategy.on_message(market())
    assert strategy.on_message(book("0.48", "0.50")) == []
'''


def _new(config: Config, store: Store, args: argparse.Namespace) -> int:
    import polybot_strategy

    name = args.name
    if not NAME.match(name):
        print(f"polybot: strategy name {name!r}: lower-case letters, digits and _ (at most 24), starting with a "
              "letter", file=sys.stderr)
        return 2
    if name in REGISTRY:
        print(f"polybot: {name} is a shipped strategy; choose another name", file=sys.stderr)
        return 2
    folder = Path(args.dir).expanduser().absolute()
    files = {folder / f"{name}.py": STRATEGY, folder / f"test_{name}.py": TEST}
    if there := [str(p) for p in files if p.exists()]:
        print(f"polybot: {', '.join(there)} already there; nothing written (choose another name or --dir)",
              file=sys.stderr)
        return 1
    folder.mkdir(parents=True, exist_ok=True)
    cls = "".join(part.capitalize() for part in name.split("_"))
    for path, template in files.items():
        path.write_text(template.format(name=name, cls=cls, api=polybot_strategy.API_VERSION))
    print(f"polybot: wrote {folder / f'{name}.py'} (class {cls}) and its test {folder / f'test_{name}.py'}; "
          f"run `pytest {folder / f'test_{name}.py'}`")
    return 0


# ---------------------------------------------------------------- list, show


def _children(config: Config) -> dict[str, m.ServiceState]:
    """The supervisor's view of its services ({} when none runs)."""
    reply = _ask(config, "supervisor", m.StatusRequest(), 1000)
    return {c.name: c for c in reply.children} if isinstance(reply, m.StatusReply) else {}


def rows(config: Config, store: Store) -> list[dict[str, str]]:
    """One row per strategy: shipped ones, then each one of the store with its state, hashes and process."""
    out = [{"name": name, "state": "shipped", "approved_sha256": "", "pending_sha256": "", "service": "",
            "process": "", "note": "runs in the strategies service when configured there"} for name in sorted(REGISTRY)]
    children = _children(config)
    for name in store.names():
        try:
            entry = store.get(name)
        except StoreError as exc:
            out.append({"name": name, "state": "unreadable", "approved_sha256": "", "pending_sha256": "",
                        "service": "", "process": "", "note": str(exc)})
            continue
        out.append(_row(store, entry, children))
    return out


def _row(store: Store, entry: Entry, children: dict[str, m.ServiceState]) -> dict[str, str]:
    service = SERVICE_PREFIX + entry.name if entry.state == "approved" else ""
    child = children.get(service)
    notes = []
    if entry.approved is not None and (why := store.unapproved(entry)):
        notes.append(f"does not run: {why}")
    elif child is not None and child.last_error:
        notes.append(child.last_error)
    if entry.changed_since_approval:
        notes.append(f"a new version waits for approval: polybot strategy show {entry.name}")
    elif entry.approved is None:
        notes.append(f"waits for approval: polybot strategy show {entry.name}")
    state = {"approved": "running", "stopped": "stopped", "pending": "pending"}[entry.state]
    return {"name": entry.name, "state": state,
            "approved_sha256": entry.approved.sha256 if entry.approved else "",
            "pending_sha256": entry.pending.sha256 if entry.pending else "", "service": service,
            "process": (f"{child.state} pid {child.pid}" if child.pid else child.state) if child else
            ("" if not service else "no supervisor"), "note": "; ".join(notes)}


def _list(config: Config, store: Store, args: argparse.Namespace) -> int:
    table = rows(config, store)
    if args.json:
        print(json.dumps(table))
        return 0
    lines = [["NAME", "STATE", "APPROVED", "PENDING", "PROCESS", "NOTE"]]
    lines += [[r["name"], r["state"], r["approved_sha256"][:12], r["pending_sha256"][:12], r["process"], r["note"]]
              for r in table]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    print("\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines))
    return 0


def _when(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if ns else "-"


def _show(config: Config, store: Store, args: argparse.Namespace) -> int:
    entry = store.get(args.name)
    record = entry.pending or entry.approved
    assert record is not None
    which = "pending" if entry.pending else "approved"
    code = store.code(entry.name, which)
    print(f"strategy {entry.name} ({'running' if entry.state == 'approved' else entry.state}); {which} version "
          f"{record.sha256}")
    print(f"class {record.class_name}; proposed by {entry.pending.by if entry.pending else '-'} at "
          f"{_when(entry.pending.at_ns) if entry.pending else '-'}")
    if entry.approved:
        print(f"approved version {entry.approved.sha256} by {entry.approved.by} at {_when(entry.approved.at_ns)}, "
              f"budget {_budget(entry.approved.budget)}")
    print(f"params {json.dumps(record.params)}; markets {', '.join(record.markets) or 'any'}")
    print(f"budget asked {_budget(record.budget)}")
    if record.rationale:
        print(f"rationale: {record.rationale}")
    print("backtest: " + (_backtest(record.backtest) if record.backtest else "none given"))
    if entry.approved is None:
        print(f"\n--- {which}.py (new: nothing approved yet)")
        print(code, end="" if code.endswith("\n") else "\n")
    elif entry.changed_since_approval:
        diff = difflib.unified_diff(store.code(entry.name, "approved").splitlines(keepends=True),
                                    code.splitlines(keepends=True),
                                    f"approved.py ({entry.approved.sha256[:12]}, running)",
                                    f"pending.py ({record.sha256[:12]})")
        print()
        sys.stdout.writelines(diff)
    else:
        print("\nthe pending version is the approved one: nothing new to approve")
    if entry.pending and (entry.approved is None or entry.changed_since_approval):
        print(f"\napprove it: polybot strategy approve {entry.name} --sha {record.sha256[:12]} "
              "[--budget key=value ...]")
    return 0


def _budget(budget: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in budget.items()) or "-"


def _backtest(report: dict[str, Any]) -> str:
    """Its figures on one line each: numbers and words as they are, a table as its size, refusals by code."""
    lines = []
    for key, value in report.items():
        if isinstance(value, dict) and all(not isinstance(v, dict | list) for v in value.values()):
            lines.append(f"  {key}: " + (", ".join(f"{k}={v}" for k, v in value.items()) or "none"))
        elif isinstance(value, dict | list):
            lines.append(f"  {key}: {len(value)} entries")
        else:
            lines.append(f"  {key}: {value}")
    return "\n" + "\n".join(lines)


# ---------------------------------------------------------------- approve, stop


def _limits(config: Config) -> Any:
    """The operator's own risk limits, as the risk service of this config holds them."""
    from ..risk.limits import RiskOptions
    from ..runtime import resolve

    name = service_of_kind(config, RISK_KIND, "risk")
    return (resolve(config, name)[1] if name in config.services else RiskOptions()).limits


def _budget_asked(entry: Entry, given: list[str]) -> Budget:
    base = dict(entry.pending.budget) if entry.pending else {}
    for item in given:
        key, eq, value = item.partition("=")
        if not eq:
            raise StoreError(f"--budget {item!r}: write key=value, e.g. --budget max_order_notional=20")
        base[key.strip()] = value.strip()
    return Budget.of(base)


def _approve(config: Config, store: Store, args: argparse.Namespace) -> int:
    from ..risk.limits import over_limits

    entry = store.get(args.name)
    if entry.pending is None:
        raise StoreError(f"strategy {args.name} has no pending version to approve")
    budget = _budget_asked(entry, args.budget)
    figures = {k: Decimal(v) for k, v in budget.as_json().items()}
    if over := over_limits(figures, _limits(config)):
        print(f"polybot: not approved: {'; '.join(over)}. A strategy's budget is at most the operator's limits: "
              "lower it with --budget", file=sys.stderr)
        return 1
    risk = service_of_kind(config, RISK_KIND, "risk")
    if not isinstance(_ask(config, risk, m.RiskRequest()), m.RiskReply):
        print(f"polybot: not approved: {risk} is not running (no answer on {control_address(config, risk)}); it "
              "records the approval in the audit log and holds the strategy to its budget: start the mesh with "
              "`polybot up` first", file=sys.stderr)
        return 1
    by = getpass.getuser()
    record = store.approve(args.name, budget, by=by, sha_prefix=args.sha)
    print(f"polybot: approved {args.name} version {record.sha256} for {by}; budget {_budget(record.budget)}; "
          f"markets {', '.join(record.markets) or 'any'}")
    return _tell(config, args.name, by, risk)


def _stop(config: Config, store: Store, args: argparse.Namespace) -> int:
    store.stop(args.name)
    print(f"polybot: stopped {args.name}")
    return _tell(config, args.name, getpass.getuser(), service_of_kind(config, RISK_KIND, "risk"))


def _tell(config: Config, name: str, by: str, risk: str) -> int:
    """Tell risk (the budget, or the stop) and the supervisor (start, replace or stop the process)."""
    failed = 0
    for service, request in ((risk, m.StrategyChanged(name=name, by=by)), ("supervisor", m.ReloadRequest(by=by))):
        match _ask(config, service, request):
            case m.Ok(detail=detail):
                print(f"{service}: {detail}")
            case m.Error(message=message):
                failed += 1
                print(f"polybot: {service}: {message}", file=sys.stderr)
            case None:
                failed += 1
                print(f"polybot: {service} did not answer (is the mesh up? `polybot status`); the store holds the "
                      "change and it applies when the mesh starts", file=sys.stderr)
            case other:
                failed += 1
                print(f"polybot: {service} answered with {msgspec.json.encode(other).decode()}", file=sys.stderr)
    return 1 if failed else 0
