"""`polybot`: run the mesh and look at it."""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import msgspec

from . import messages as m
from .bus import BusError, BusTimeout, Requester
from .config import Config, ConfigError, control_address, ensure_state_dir, load, load_secrets

STATUS_TIMEOUT_MS = 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="polybot", description="A trading mesh for prediction markets.")
    parser.add_argument("--config", help="TOML config file (default: $POLYBOT_CONFIG or ~/.config/polybot/polybot.toml)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("up", help="start every configured service and keep them running (Ctrl-C stops)")
    commands.add_parser("down", help="stop the running supervisor and its services")
    status = commands.add_parser("status", help="every service's state, pid, uptime, counters and lag")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    restart = commands.add_parser("restart", help="restart one service without touching the others")
    restart.add_argument("name")
    run = commands.add_parser("run", help="run one service in the foreground (what the supervisor starts)")
    run.add_argument("name")
    venue = commands.add_parser(
        "venue", help="serve the local Polymarket venue (Gamma and CLOB REST) on 127.0.0.1",
        description="A local venue that speaks Polymarket's CLOB V2 wire protocol, so the system and its tests "
                    "run with no account and no network. It prints its addresses and a funded test account.")
    venue.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    venue.add_argument("--gamma-port", type=int, default=8790, help="Gamma REST port (default: 8790)")
    venue.add_argument("--clob-port", type=int, default=8791, help="CLOB REST port (default: 8791)")
    venue.add_argument("--ws-port", type=int, default=8792,
                       help="WebSocket port: /ws/market and /ws/user (default: 8792)")
    venue.add_argument("--seed", type=int, default=7, help="same seed, same markets and prices (default: 7)")
    venue.add_argument("--markets", type=int, default=20, help="binary markets (default: 20)")
    venue.add_argument("--events", type=int, default=3, help="multi-outcome neg-risk events (default: 3)")
    venue.add_argument("--outcomes", type=int, default=4, help="outcomes per event (default: 4)")
    venue.add_argument("--page-size", type=int, default=100, help="items per page of paginated lists (default: 100)")
    venue.add_argument("--chain-id", type=int, default=137, choices=(137, 80002),
                       help="chain whose exchange domain orders are signed under (default: 137)")
    venue.add_argument("--starting-collateral", type=int, default=10_000,
                       help="pUSD credited to each new account (default: 10000)")
    venue.add_argument("--heartbeat-timeout-ms", type=int, default=10_000,
                       help="once an account heartbeats, this much silence cancels its orders (default: 10000)")
    venue.add_argument("--still", action="store_true",
                       help="no living markets: books move only on trades and admin requests")
    venue.add_argument("--requotes-per-s", type=float, default=4.0,
                       help="house requotes per second, each moving several levels; raise for load (default: 4)")
    venue.add_argument("--trades-per-s", type=float, default=0.5, help="background trades per second (default: 0.5)")
    venue.add_argument("--gaps-per-s", type=float, default=0.05,
                       help="mispricings per second: YES+NO asks (or an event's YES asks) below 1 (default: 0.05)")
    venue.add_argument("--gap", type=float, default=0.06, help="how far below 1 a mispricing sums (default: 0.06)")
    venue.add_argument("--gap-ms", type=int, default=1500, help="how long a mispricing stays (default: 1500)")
    venue.add_argument("--resolutions-per-s", type=float, default=0.002,
                       help="markets resolving (each replaced by a new listing) per second (default: 0.002)")
    for verb, what in (("halt", "stop producing new work"), ("resume", "undo halt")):
        cmd = commands.add_parser(verb, help=f"tell services to {what} (all when none named)")
        cmd.add_argument("names", nargs="*", metavar="NAME")
        if verb == "halt":
            cmd.add_argument("--reason", default="halted by operator")
    args = parser.parse_args(argv)
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"polybot: config: {exc}", file=sys.stderr)
        return 2
    handler = {"up": _up, "down": _down, "status": _status, "restart": _restart, "run": _run,
               "halt": _halt, "resume": _resume, "venue": _venue}[args.command]
    try:
        return handler(config, args)
    except ConfigError as exc:
        print(f"polybot: {exc}", file=sys.stderr)
        return 2


def _run(config: Config, args: argparse.Namespace) -> int:
    from .runtime import Runner

    return Runner(config, args.name, load_secrets()).run()


def _up(config: Config, args: argparse.Namespace) -> int:
    from .runtime import Runner, resolve
    from .supervisor import Supervisor, SupervisorOptions

    ensure_state_dir(config)
    for name in config.enabled_services:  # fail before starting anything if a service is misconfigured
        resolve(config, name)
    options = SupervisorOptions(config_path=str(args.config or ""))
    return Runner(config, "supervisor", load_secrets(), cls=Supervisor, options=options).run()


def _venue(config: Config, args: argparse.Namespace) -> int:
    from .runtime import Runner
    from .venues.local.life import LifeOptions
    from .venues.local.server import Venue, VenueOptions, addresses, ready_made_account

    options = VenueOptions(host=args.host, gamma_port=args.gamma_port, clob_port=args.clob_port,
                           ws_port=args.ws_port, seed=args.seed,
                           markets=args.markets, events=args.events, outcomes=args.outcomes,
                           chain_id=args.chain_id, page_size=args.page_size,
                           starting_collateral=args.starting_collateral, still=args.still,
                           heartbeat_timeout_ms=args.heartbeat_timeout_ms,
                           life=LifeOptions(requotes_per_s=args.requotes_per_s, trades_per_s=args.trades_per_s,
                                            gaps_per_s=args.gaps_per_s, gap=args.gap, gap_ms=args.gap_ms,
                                            resolutions_per_s=args.resolutions_per_s))
    account = ready_made_account(args.seed)
    urls = addresses(options)
    print(f"local venue (seed {args.seed}, chain {args.chain_id})\n"
          f"  gamma  {urls['gamma']}\n  clob   {urls['clob']}\n"
          f"  market {urls['market_ws']}\n  user   {urls['user_ws']}\n"
          f"test account (local venue only; funded with {args.starting_collateral} pUSD on first use)\n"
          f"  address     {account.address}\n  private key {account.private_key}\n"
          f"  api key     {account.credentials.api_key}\n  api secret  {account.credentials.secret}\n"
          f"  passphrase  {account.credentials.passphrase}", flush=True)
    ensure_state_dir(config)
    return Runner(config, "venue", load_secrets(), cls=Venue, options=options).run()


def _ask(config: Config, service: str, request: m.Message, timeout_ms: int = STATUS_TIMEOUT_MS) -> m.Message | None:
    with Requester(control_address(config, service), timeout_ms) as req:
        try:
            return req.request(request)
        except (BusTimeout, BusError):
            return None


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
    """The supervisor's row, then one row per enabled service: its own report, or the supervisor's view of it."""
    names = ["supervisor", *config.enabled_services]
    with ThreadPoolExecutor(max_workers=min(16, len(names))) as pool:
        replies = dict(zip(names, pool.map(lambda n: _ask(config, n, m.StatusRequest()), names)))
    sup = replies["supervisor"]
    seen = {c.name: c for c in sup.children} if isinstance(sup, m.StatusReply) else {}
    rows = [sup.service if isinstance(sup, m.StatusReply) else m.ServiceState(name="supervisor", state="down")]
    for name in config.enabled_services:
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


def _status(config: Config, args: argparse.Namespace) -> int:
    rows = collect_status(config)
    if args.json:
        print(msgspec.json.encode(rows).decode())
    else:
        print(format_table(rows))
    return 0 if all(r.state in ("running", "halted") for r in rows) else 3


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
            str(sum(c.undecodable for c in r.sockets.values())),
            f"{max((c.lag_ms for c in data.values() if c.received), default=0.0):.1f}",
            r.last_error[:60],
        ))
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in lines)
