"""`polybot`: run the mesh and look at it."""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal, InvalidOperation

import msgspec

from . import messages as m
from . import tls
from .backtest import cli as backtests
from .strategies import cli as strategies
from .bus import BusError, BusTimeout, Requester
from .config import (RISK_KIND, Config, ConfigError, control_address, embeds_local_venue, ensure_state_dir, load,
                     load_secrets, service_of_kind, trading_mode)
from .health import Health, format_health, judge, trading_configured
from .periods import since_ns

STATUS_TIMEOUT_MS = 1000


def main(argv: list[str] | None = None) -> int:
    # Whatever we create (logs, the journal, DuckDB, the audit log, day.json, sockets) is this user's alone.
    os.umask(0o077)
    parser = argparse.ArgumentParser(prog="polybot", description="A trading mesh for prediction markets.")
    parser.add_argument("--config", help="TOML config file (default: $POLYBOT_CONFIG or ~/.config/polybot/polybot.toml)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = commands.add_parser(
        "up", help="start every configured service and keep them running (Ctrl-C stops)",
        description="Start every configured service and keep them running (Ctrl-C stops). Live on Polymarket, "
                    "`polybot doctor` runs first and a failing check stops the start.")
    checked = up.add_mutually_exclusive_group()
    checked.add_argument("--skip-doctor", action="store_true",
                         help="start even though `polybot doctor` fails (live on Polymarket it runs first)")
    checked.add_argument("--doctor", action="store_true",
                         help="run `polybot doctor` first in any mode and against any venue, and start only if "
                              "it passes")
    doctor = commands.add_parser(
        "doctor", help="check the account before trading live: one line per check, with the fix for each ✗",
        description="A check of what live trading needs: key, addresses, wallet kind and funder, API credentials, "
                    "clock, closed-only mode, balance, allowances, a heartbeat, both channels, and the risk limits "
                    "against the balance. It changes nothing but what the executor would at start: an account with "
                    "no API key gets one, and a heartbeat is sent when no order is open. Exit status 1 when any "
                    "check fails.")
    doctor.add_argument("--json", action="store_true", help="print JSON instead of lines")
    commands.add_parser("down", help="stop the running supervisor and its services")
    status = commands.add_parser(
        "status", help="every service's state, pid, uptime, counters and lag, and whether trading is healthy",
        description="Exit status 3 when a service is down, else 4 when trading is unhealthy (the reasons are "
                    "printed: stale markets, no executor, signals all refused ...), else 0.")
    status.add_argument("--json", action="store_true",
                        help='print JSON instead of a table: {"services": [...], "trading": {...} or null}')
    restart = commands.add_parser("restart", help="restart one service without touching the others")
    restart.add_argument("name")
    run = commands.add_parser("run", help="run one service in the foreground (what the supervisor starts)")
    run.add_argument("name")
    venue = commands.add_parser(
        "venue", help="serve the local Polymarket venue (Gamma and CLOB REST) on 127.0.0.1",
        description="A local venue that speaks Polymarket's CLOB V2 wire protocol, so the system and its tests "
                    "run with no account and no network. It prints its addresses and a funded test account.")
    from polybot_venue.cli import add_arguments
    add_arguments(venue)
    for verb, what in (("halt", "stop producing new work"), ("resume", "undo halt")):
        cmd = commands.add_parser(verb, help=f"tell services to {what} (all when none named)")
        cmd.add_argument("names", nargs="*", metavar="NAME")
        if verb == "halt":
            cmd.add_argument("--reason", default="halted by operator")
    approve = commands.add_parser("approve", help="approve (or --decline) an agent's signal that waits for a human")
    approve.add_argument("signal_id")
    approve.add_argument("--decline", action="store_true", help="refuse it instead")
    risk = commands.add_parser("risk", help="risk's limits, how much of each is used, halted or not")
    risk.add_argument("--json", action="store_true", help="print JSON instead of a table")
    certs = commands.add_parser(
        "certs", help="make the bus's CA and a certificate for each of the mesh's identities (bus.transport = \"tls\")",
        description="Make the mesh's CA (once) and a certificate and key for each configured service, the supervisor, "
                    "the CLI (operator) and the MCP server (mcp), in bus.tls_dir (default <state_dir>/tls). Run again "
                    "after adding a service: only the missing ones are made. Copy to each machine the CA's "
                    "certificate (ca.crt) and only its own identities' .crt and .key files.")
    certs.add_argument("--host", action="append", default=[],
                       help="a DNS name or IP address the certificates also name (how the machines reach each other); "
                            "repeat for several")
    certs.add_argument("--renew", action="store_true", help="make every certificate again (the CA stays)")
    audit = commands.add_parser("audit", help="check the audit log of decisions and executions")
    audit_actions = audit.add_subparsers(dest="audit_action", required=True, metavar="ACTION")
    audit_verify = audit_actions.add_parser("verify", help="check every entry's hash and the chain between them")
    audit_verify.add_argument("--file", help="the log (default: the configured audit service's)")
    audit_verify.add_argument("--head", help="the hash the chain must end at (from `polybot status` or the stop log)")
    _add_views(commands)
    backtests.add_commands(commands)
    strategies.add_commands(commands)
    args = parser.parse_args(argv)
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"polybot: config: {exc}", file=sys.stderr)
        return 2
    tls.identify("operator", config)  # the CLI's requests present the operator's certificate (bus.transport = "tls")
    handler = {"up": _up, "doctor": _doctor, "down": _down, "status": _status, "restart": _restart, "run": _run,
               "halt": _halt, "resume": _resume, "venue": _venue, "risk": _risk, "approve": _approve, "audit": _audit, "certs": _certs, "record": backtests.record, "backtest": backtests.backtest, "strategy": strategies.run,
               **{v: _view for v in VIEWS}}[args.command]
    try:
        return handler(config, args)
    except ConfigError as exc:
        print(f"polybot: {exc}", file=sys.stderr)
        return 2


def _run(config: Config, args: argparse.Namespace) -> int:
    from .runtime import Runner

    return Runner(config, args.name, load_secrets()).run()


def _audit(config: Config, args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import audit
    from .runtime import StartupError

    try:
        path = Path(args.file).expanduser() if args.file else audit.default_path(config)
    except StartupError as exc:
        print(f"polybot: {exc}", file=sys.stderr)
        return 2
    return audit.report(path, args.head)


def _up(config: Config, args: argparse.Namespace) -> int:
    from .runtime import Runner, check_services
    from .supervisor import Supervisor, SupervisorOptions

    ensure_state_dir(config)
    check_services(config)  # fail before starting anything if a service is misconfigured
    if (refused := _doctor_refuses(config, args)) is not None:
        return refused
    options = SupervisorOptions(config_path=str(args.config or ""))
    return Runner(config, "supervisor", load_secrets(), cls=Supervisor, options=options).run()


def _doctor(config: Config, args: argparse.Namespace) -> int:
    from . import doctor

    report = doctor.run(config, load_secrets())
    print(msgspec.json.encode(report).decode() if args.json else doctor.format_report(report))
    return 0 if report.ok else 1


def _doctor_refuses(config: Config, args: argparse.Namespace) -> int | None:
    """Run doctor before `polybot up` where it is due (live on Polymarket, or asked); the exit status when it
    fails, None to start. Against the local venue it is not run unasked: the demo and the tests start at once."""
    from . import doctor

    if args.skip_doctor or not (args.doctor or (config.venue == "polymarket" and trading_mode(config) == "live")):
        return None
    if embeds_local_venue(config):
        print("polybot: --doctor checks a venue that is already up, and this config starts the local venue with "
              "the mesh: set [local_venue] start = false and serve it with `polybot venue`, or run `polybot "
              "doctor` once the mesh is up", file=sys.stderr)
        return 2
    report = doctor.run(config, load_secrets())
    if report.ok:
        print(f"polybot: doctor: {doctor.summary(report)}", flush=True)
        return None
    print(doctor.format_report(report), file=sys.stderr)
    failed = len(report.failures)
    print(f"polybot: not starting: doctor found {failed} problem{'s' if failed > 1 else ''} (the ✗ "
          f"line{'s' if failed > 1 else ''} above, each with its fix); fix {'them' if failed > 1 else 'it'}, or "
          "start anyway with `polybot up --skip-doctor`", file=sys.stderr)
    return 1


def _venue(config: Config, args: argparse.Namespace) -> int:
    from polybot_venue.cli import banner, options_from

    from .runtime import Runner
    from .venues.local import Venue

    options = options_from(args)
    print(banner(options), flush=True)
    ensure_state_dir(config)
    return Runner(config, "venue", load_secrets(), cls=Venue, options=options).run()


def _ask(config: Config, service: str, request: m.Message, timeout_ms: int = STATUS_TIMEOUT_MS) -> m.Message | None:
    with Requester(control_address(config, service), timeout_ms) as req:
        try:
            return req.request(request)
        except (BusTimeout, BusError):
            return None




def _risk_name(config: Config) -> str:
    return service_of_kind(config, RISK_KIND, "risk")


def _approve(config: Config, args: argparse.Namespace) -> int:
    """A human's answer to a pending agent signal: the only way one trades when approval is required."""
    import getpass

    name = _risk_name(config)
    reply = _ask(config, name, m.ApproveRequest(signal_id=args.signal_id, approve=not args.decline,
                                                by=getpass.getuser()), timeout_ms=5000)
    match reply:
        case None:
            print(f"polybot: {name} is not running (no answer on {control_address(config, name)})", file=sys.stderr)
            return 1
        case m.Ok(detail=detail):
            print(f"{args.signal_id}: {detail}")
            return 0
        case m.Error(message=message):
            print(f"polybot: {message}", file=sys.stderr)
            return 1
    print(f"polybot: {name} answered with {type(reply).__name__}", file=sys.stderr)
    return 1


def _certs(config: Config, args: argparse.Namespace) -> int:
    where = tls.folder(config)
    from . import certs  # the X.509 builder, loaded only for this command

    issued = certs.issue(where, certs.identities(config), args.host, args.renew)
    print(f"polybot: certificates in {where}: made {', '.join(issued) if issued else 'none (all there; --renew makes them again)'}")
    if config.bus.transport != "tls":
        print('polybot: the bus uses them once bus.transport = "tls"')
    return 0


def _risk(config: Config, args: argparse.Namespace) -> int:
    name = _risk_name(config)
    reply = _ask(config, name, m.RiskRequest())
    if not isinstance(reply, m.RiskReply):
        print(f"polybot: {name} is not running (no answer on {control_address(config, name)}); "
              "start the mesh with `polybot up`", file=sys.stderr)
        return 1
    if args.json:
        print(msgspec.json.encode(reply).decode())
        return 0
    print(f"risk: {'HALTED (' + reply.halt_reason + ')' if reply.halted else 'trading'}; "
          f"{reply.open_orders} open orders; realized {reply.realized_pnl:.2f}, marked {reply.marked_pnl:.2f}")
    for c in reply.venue:
        print(f"venue: {c.code}: {c.message}")
    used = {u.name: u for u in reply.usage if not u.scope or u.name.startswith("max_position")}
    rows = [["limit", "value", "used", "where"]]
    for name_, limit in reply.limits.items():
        u = used.get(name_)
        rows.append([name_, f"{limit.normalize():f}", f"{u.used:.2f}" if u else "", u.scope[:16] if u else ""])
    rows += [[u.name, f"{u.limit.normalize():f}", f"{u.used:.2f}", u.scope] for u in reply.usage
             if u.scope and not u.name.startswith("max_position")]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    for p in reply.pending:
        left = max((p.expires_ts_ns - time.time_ns()) / 1e9, 0)
        legs = ", ".join(f"{lg.side} {lg.size} {lg.token_id[:12]}… @ {lg.limit_price}" for lg in p.signal.legs) \
            if p.signal else ""
        print(f"pending {p.signal_id} from {p.source}, {left:.0f} s left: {legs} — `polybot approve {p.signal_id}`")
    return 0


def _down(config: Config, args: argparse.Namespace) -> int:
    reply = _ask(config, "supervisor", m.ShutdownRequest())
    if reply is None:
        print("polybot: no supervisor is running")
        return 0
    deadline = time.monotonic() + config.supervisor.stop_timeout_s * 2 + 5
    while time.monotonic() < deadline:
        if _ask(config, "supervisor", m.StatusRequest(), 300) is None:
            print("polybot: stopped")
            return 0
    print("polybot: the supervisor did not stop in time", file=sys.stderr)
    return 1


def _restart(config: Config, args: argparse.Namespace) -> int:
    reply = _ask(config, "supervisor", m.RestartRequest(service=args.name))
    match reply:
        case None:
            print("polybot: no supervisor is running; start the mesh with `polybot up`", file=sys.stderr)
            return 1
        case m.Error(message=message):
            print(f"polybot: {message}", file=sys.stderr)
            return 1
    print(f"polybot: restarting {args.name}")
    return 0


def _broadcast(config: Config, names: list[str], request: m.Message) -> int:
    targets = names or config.enabled_services
    unknown = [n for n in targets if n not in config.services]
    if unknown:
        print(f"polybot: no service named {', '.join(unknown)}", file=sys.stderr)
        return 2
    failed = 0
    for name in targets:
        reply = _ask(config, name, request)
        if isinstance(reply, m.Ok):
            print(f"{name}: {reply.detail}")
        else:
            failed += 1
            print(f"{name}: {'no answer (down?)' if reply is None else reply.message}", file=sys.stderr)
    return 1 if failed else 0


def _halt(config: Config, args: argparse.Namespace) -> int:
    return _broadcast(config, args.names, m.HaltRequest(reason=args.reason))


def _resume(config: Config, args: argparse.Namespace) -> int:
    return _broadcast(config, args.names, m.ResumeRequest())


def collect_status(config: Config) -> list[m.ServiceState]:
    """The supervisor's row, then one row per service started here or run elsewhere (``watched_services``): its own
    report, or the supervisor's view of it."""
    names = ["supervisor", *config.watched_services]
    with ThreadPoolExecutor(max_workers=min(16, len(names))) as pool:
        replies = dict(zip(names, pool.map(lambda n: _ask(config, n, m.StatusRequest()), names)))
    sup = replies["supervisor"]
    seen = {c.name: c for c in sup.children} if isinstance(sup, m.StatusReply) else {}
    rows = [sup.service if isinstance(sup, m.StatusReply) else m.ServiceState(name="supervisor", state="down")]
    for name in config.watched_services:
        reply, child = replies[name], seen.get(name)
        if isinstance(reply, m.StatusReply):
            row = reply.service
            if child is not None:
                row = msgspec.structs.replace(row, restarts=child.restarts)
        elif child is not None:
            row = msgspec.structs.replace(child, state="down" if child.state == "running" else child.state)
        else:
            row = m.ServiceState(name=name, state="down")
        rows.append(row)
    return rows


def trading_health(config: Config, rows: list[m.ServiceState]) -> Health | None:
    """Whether the mesh can trade now (None when it has no trading service at all), from ``collect_status``."""
    kinds = {name: config.services[name].kind for name in config.watched_services}
    return judge(rows, kinds) if trading_configured(kinds) else None


SERVICE_DOWN, TRADING_UNHEALTHY = 3, 4  # `polybot status` exit codes


def _status(config: Config, args: argparse.Namespace) -> int:
    rows = collect_status(config)
    health = trading_health(config, rows)
    if args.json:
        print(msgspec.json.encode({"services": rows, "trading": health}).decode())
    else:
        print(format_table(rows) + ("\n\n" + format_health(health) if health else ""))
    if not all(r.state in ("running", "halted") for r in rows):
        return SERVICE_DOWN
    return TRADING_UNHEALTHY if health and not health.healthy else 0


def _uptime(seconds: float) -> str:
    if seconds <= 0:
        return "-"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def format_table(rows: list[m.ServiceState]) -> str:
    header = ("SERVICE", "STATE", "PID", "UPTIME", "RESTARTS", "IN", "OUT", "DROPPED", "BAD", "LAG ms", "LAST ERROR")
    lines = [header]
    for r in rows:
        data = {k: v for k, v in r.sockets.items() if k != "control"}
        lines.append((
            r.name,
            r.state + (f" ({r.halt_reason})" if r.state == "halted" and r.halt_reason else ""),
            str(r.pid or "-"),
            _uptime(r.uptime_s),
            str(r.restarts),
            str(sum(c.received for c in data.values())),
            str(sum(c.sent for c in data.values())),
            str(sum(c.dropped for c in data.values())),
            str(sum(c.undecodable + c.oversized for c in r.sockets.values())),
            f"{max((c.lag_ms for c in data.values() if c.received), default=0.0):.1f}",
            r.last_error[:60],
        ))
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in lines)


# ---------------------------------------------------------------- analytics views: trace, positions, orders, fills, pnl, query

ANALYTICS_KIND = "services.analytics:Analytics"
QUERY_TIMEOUT_MS = 10_000  # analytics stops a query after its query_timeout_s; this only covers the round trip
VIEWS = ("trace", "positions", "orders", "fills", "pnl", "query")
LONG_ID = 20  # ids longer than this (tokens, markets, venue order ids) are shortened in tables; ours are not


def _add_views(commands: argparse._SubParsersAction) -> None:
    def view(name: str, help: str) -> argparse.ArgumentParser:
        cmd = commands.add_parser(name, help=help)
        cmd.add_argument("--json", action="store_true", help="print JSON (one object per row) instead of a table")
        return cmd

    trace = view("trace", "the hops of one signal with their times: book update, signal, verdict, orders, fills")
    trace.add_argument("signal_id", help="the signal's id, or enough of its start to tell it apart")
    positions = view("positions", "positions from the recorded fills: size, average cost, mark, PnL")
    positions.add_argument("--all", action="store_true", help="also the closed ones")
    positions.add_argument("--market", default="", help="only this market (condition id)")
    orders = view("orders", "the orders risk sent, newest last, with their state and fills")
    orders.add_argument("--status", default="", help="open, or one state: sent, live, matched, partial, filled, "
                                                     "'partial (rest canceled)', canceled, rejected")
    orders.add_argument("--market", default="")
    orders.add_argument("--signal", default="", help="only the orders of this signal")
    orders.add_argument("--limit", type=int, default=50)
    fills = view("fills", "fills, newest last")
    fills.add_argument("--market", default="")
    fills.add_argument("--since", type=_since_ns, default=None,
                       help="only fills since then: 90s, 10m, 2h, 1d ago, or a time (2026-05-01T12:00, local)")
    fills.add_argument("--limit", type=int, default=50)
    pnl = view("pnl", "realized and unrealized PnL and fees, with the total")
    pnl.add_argument("--by", choices=("market", "source", "token"), default="market")
    pnl.add_argument("--since", type=_since_ns, default=None,
                     help="also the change since then (marked to that time's prices): 1d, 2h, or a time")
    query = view("query", "read-only SQL over the recorded tables (one SELECT; see services/analytics/schema.py)")
    query.add_argument("sql")
    query.add_argument("--max-rows", type=int, default=100)


def _since_ns(text: str) -> int:
    try:
        return since_ns(text, time.time_ns(), naive_is_local=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _analytics_name(config: Config) -> str:
    return service_of_kind(config, ANALYTICS_KIND, "analytics")


def _view_request(args: argparse.Namespace) -> m.QueryRequest:
    match args.command:
        case "trace":
            return m.QueryRequest(name="trace", params={"signal_id": args.signal_id.rstrip(".…")})
        case "positions":
            return m.QueryRequest(name="positions", params={"all": str(args.all).lower(), "market": args.market})
        case "orders":
            return m.QueryRequest(name="orders", params={"status": args.status, "market": args.market,
                                                         "signal": args.signal, "limit": str(args.limit)})
        case "fills":
            since = "" if args.since is None else str(args.since)
            return m.QueryRequest(name="fills", params={"market": args.market, "since": since,
                                                        "limit": str(args.limit)})
        case "pnl":
            since = "" if args.since is None else str(args.since)
            return m.QueryRequest(name="pnl", params={"by": args.by, "since": since})
    return m.QueryRequest(sql=args.sql, max_rows=args.max_rows)


def _view(config: Config, args: argparse.Namespace) -> int:
    name = _analytics_name(config)
    reply = _ask(config, name, _view_request(args), QUERY_TIMEOUT_MS)
    match reply:
        case None:
            print(f"polybot: {name} is not running (no answer on {control_address(config, name)}); "
                  f"start the mesh with `polybot up`, or `polybot run {name}`", file=sys.stderr)
            return 1
        case m.Error(message=message):
            print(f"polybot: {message}", file=sys.stderr)
            return 1
        case m.QueryReply():
            pass
        case _:
            print(f"polybot: {name} answered with {type(reply).__name__}", file=sys.stderr)
            return 1
    if args.json:
        print(msgspec.json.encode([dict(zip(reply.columns, row)) for row in reply.rows]).decode())
    elif args.command == "trace":
        print(format_trace(reply))
    else:
        print(format_rows(reply.columns, reply.rows, shorten=args.command != "query",
                          total=args.command == "pnl") if reply.rows else "(none)")
    if reply.truncated:
        print(f"polybot: only the first {len(reply.rows)} rows are shown", file=sys.stderr)
    if note := reply.incomplete():
        print(f"polybot: {note}", file=sys.stderr)
    return 0


def _clock(ns: int) -> str:
    at = datetime.fromtimestamp(ns / 1e9)
    if at.date() == datetime.now().date():
        return at.strftime("%H:%M:%S.%f")[:-3]
    return at.strftime("%Y-%m-%d %H:%M:%S")


def _cell(column: str, value: object, shorten: bool) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) and not isinstance(value, bool) and (column == "ts_ns" or column.endswith("_ts_ns")):
        return _clock(value) if value else "-"
    text = str(value)
    if shorten and (column.endswith("id") or column == "market"):
        return text if len(text) <= LONG_ID else text[:12] + "…"
    return text


def _header(column: str) -> str:
    if column == "ts_ns":
        return "TIME"
    return (column[:-6] + "_time" if column.endswith("_ts_ns") else column).upper()


def _total(columns: list[str], rows: list[list]) -> list[str]:
    """A last line summing each column of numbers (a PnL table's total)."""
    out = ["TOTAL"]
    for i in range(1, len(columns)):
        try:
            out.append(format(sum((Decimal(str(r[i])) for r in rows), Decimal(0)).normalize(), "f"))
        except (InvalidOperation, TypeError):
            out.append("")
    return out


def format_rows(columns: list[str], rows: list[list], shorten: bool = True, total: bool = False) -> str:
    lines = [[_header(c) for c in columns]]
    lines += [[_cell(c, v, shorten) for c, v in zip(columns, row)] for row in rows]
    if total:
        lines.append(_total(columns, rows))
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def format_trace(reply: m.QueryReply) -> str:
    """One line per hop, the way an engineer draws it: T+ from the first hop, then what, who and the detail."""
    at = {c: i for i, c in enumerate(reply.columns)}
    signal = next((r for r in reply.rows if r[at["hop"]] == "signal"), None)
    head = f"signal {signal[at['ref']]} from {signal[at['who']]}" if signal else "signal"
    lines = [f"{head}, first hop at {_clock(reply.rows[0][at['ts_ns']])}" if reply.rows else head]
    for row in reply.rows:
        lines.append(f"T+{row[at['t_ms']]:.3f} ms".ljust(16) + f"{row[at['hop']]:<13}{row[at['who']]:<20} "
                     f"{row[at['detail']]}".rstrip())
    return "\n".join(lines)
