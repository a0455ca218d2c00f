"""`polybot record` and `polybot backtest`."""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import msgspec

from .. import messages as m
from ..config import Config
from ..periods import duration_s


def add_commands(commands: argparse._SubParsersAction) -> None:
    record = commands.add_parser(
        "record", help="record what the scanner publishes (prices, events) for backtests",
        description="Record the running mesh's market data into a folder of segments. With --seed, record the "
                    "local venue's simulated markets instead, with no mesh running: any length, the same "
                    "recording for the same seed.")
    record.add_argument("--out", help="the recording folder (default: <state_dir>/recordings/<UTC time>)")
    record.add_argument("--for", dest="duration", type=_duration, default=0.0,
                        help="stop after this long: 90s, 10m, 2h (default: until Ctrl-C)")
    record.add_argument("--rotate-mb", type=float, default=64.0, help="a new segment after this many MB")
    record.add_argument("--rotate-s", type=float, default=3600.0,
                        help="a new segment after this many seconds of market time")
    record.add_argument("--seed", type=int, help="simulate the local venue with this seed instead")
    record.add_argument("--seconds", type=float, default=600.0, help="with --seed: simulated seconds (default 600)")
    record.add_argument("--markets", type=int, default=20, help="with --seed: binary markets (default 20)")
    record.add_argument("--gaps-per-s", type=float, default=0.05, help="with --seed: mispricings per second")
    record.add_argument("--requotes-per-s", type=float, default=4.0, help="with --seed: house requotes per second")

    test = commands.add_parser(
        "backtest", help="replay a recording into a strategy and report trades, PnL and drawdown",
        description="Replay a recording, in order and on its own clock, into a strategy. By default in this "
                    "process, through risk (the config's limits, and a --budget as risk holds an approved strategy to "
                    "its grant) and the executor's order "
                    "path, with paper fills (book walk, queue position, taker fees): the report shows what risk "
                    "and the executor refused, by code. With --mesh through a strategies process of its own, "
                    "recording the signals it sends.")
    test.add_argument("--data", required=True, help="a recording folder (or one .pbrec segment)")
    test.add_argument("--strategy", required=True,
                      help="a shipped strategy (arbitrage, quoter), a file (path/to/file.py:Class), a module "
                           "(package.module:Class) or an entry point")
    test.add_argument("--param", action="append", default=[], metavar="K=V", help="a strategy parameter")
    test.add_argument("--budget", action="append", default=[], metavar="K=V",
                      help="a risk limit of the strategy's budget (max_order_notional, max_gross_exposure, "
                           "max_daily_loss, max_open_orders, max_signals_per_minute), held as risk holds an approved "
                           "strategy to its grant; the config's limits still apply")
    test.add_argument("--sweep", action="append", default=[], metavar="K=V1,V2",
                      help="run every combination of these values and compare them")
    test.add_argument("--out", help="where the report goes (default: <state_dir>/backtests/<UTC time>-<strategy>)")
    test.add_argument("--mesh", action="store_true",
                      help="replay through the mesh: this process plays the scanner and records the signals")
    test.add_argument("--sample-ms", type=int, default=1000, help="equity curve resolution, market time")
    test.add_argument("--json", action="store_true", help="print the summary as JSON")


def _duration(text: str) -> float:
    if (seconds := duration_s(text)) is not None:
        return seconds
    raise argparse.ArgumentTypeError(f"{text!r} is not a duration (90s, 10m, 2h)")


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise _Usage(f"{what} {item!r} is not K=V")
        out[key.strip()] = value.strip()
    return out


class _Usage(Exception):
    pass


def record(config: Config, args: argparse.Namespace) -> int:
    if args.seed is not None:
        from polybot_venue.life import LifeOptions
        from .simulated import generate

        out = Path(args.out or config.state_path / "recordings" / f"seed{args.seed}-{args.seconds:g}s")
        life = LifeOptions(gaps_per_s=args.gaps_per_s, requotes_per_s=args.requotes_per_s)
        try:
            info = generate(out, seed=args.seed, seconds=args.seconds, markets=args.markets, life=life,
                            rotate_bytes=int(args.rotate_mb * (1 << 20)), rotate_s=args.rotate_s)
        except (ValueError, FileExistsError) as exc:
            print(f"polybot: {exc}", file=sys.stderr)
            return 2
        print(f"recorded {info.messages} messages in {info.segments} segment(s), {info.bytes} bytes: {out}")
        return 0
    from ..recorder import Recorder, RecorderOptions
    from ..runtime import Runner
    from ..config import ensure_state_dir, load_secrets

    ensure_state_dir(config)
    options = RecorderOptions(out=str(Path(args.out).expanduser().resolve()) if args.out else "",
                              rotate_mb=args.rotate_mb, rotate_s=args.rotate_s, duration_s=args.duration)
    return Runner(config, "recorder", load_secrets(), cls=Recorder, options=options).run()


def backtest(config: Config, args: argparse.Namespace) -> int:
    from ..config import ConfigError
    from ..recording import RecordingError, count
    from ..strategies.store import Budget, StoreError
    from .engine import BacktestError, risk_options
    from .report import run_folder

    try:
        params = _pairs(args.param, "--param")
        args.risk = risk_options(config)
        try:
            args.budget = Budget.of(_pairs(args.budget, "--budget")) if args.budget else None
        except StoreError as exc:
            raise _Usage(f"--budget: {exc}") from None
        grid = {k: [v for v in vs.split(",") if v] for k, vs in _pairs(args.sweep, "--sweep").items()}
        if empty := [k for k, vs in grid.items() if not vs]:
            raise _Usage(f"--sweep {empty[0]}= has no values; give them comma-separated, e.g. {empty[0]}=1,2")
        total = count(args.data)
        out = Path(args.out) if args.out else run_folder(config.state_path, _label(args.strategy))
        if args.mesh:
            return _mesh(args, params, out, total)
        if grid:
            return _sweep(args, params, grid, out, total)
        return _one(args, params, out, total)
    except (_Usage, BacktestError, RecordingError, ConfigError) as exc:
        print(f"polybot: {exc}", file=sys.stderr)
        return 2


def _one(args: argparse.Namespace, params: dict[str, str], out: Path, total: int) -> int:
    from .engine import backtest as run
    from .report import Progress, save

    progress = Progress(total, label="replay")
    result = run(args.data, args.strategy, params, args.sample_ms, progress.update, args.risk, args.budget)
    progress.close()
    summary, files = save(result, out)
    if args.json:
        print(msgspec.json.encode(summary).decode())
    else:
        print(_summary_text(summary))
        print(f"report: {files.html}")
    return 0


def _sweep(args: argparse.Namespace, params: dict[str, str], grid: dict[str, list[str]], out: Path,
           total: int) -> int:
    from .engine import backtest as run
    from .report import Progress, summarize, sweep_table, write_sweep

    keys = sorted(grid)
    combos = list(itertools.product(*(grid[k] for k in keys)))
    progress = Progress(total * len(combos), label="sweep")
    rows = []
    for i, values in enumerate(combos):
        chosen = {**params, **dict(zip(keys, values))}
        result = run(args.data, args.strategy, chosen, args.sample_ms,
                     lambda done, base=i * total: progress.update(base + done), args.risk, args.budget)
        rows.append((dict(zip(keys, values)), summarize(result)))
    progress.close()
    out.mkdir(parents=True, exist_ok=True)
    write_sweep(rows, out)
    print(sweep_table(rows))
    print(f"sweep: {out / 'sweep.html'}")
    return 0


def _mesh(args: argparse.Namespace, params: dict[str, str], out: Path, total: int) -> int:
    from .engine import backtest as run
    from .engine import signal_key
    from .mesh import replay_mesh
    from .report import Progress

    progress = Progress(total, label="mesh replay")
    sent = replay_mesh(args.data, args.strategy, params, progress.update)
    progress.close()
    out.mkdir(parents=True, exist_ok=True)
    encoder = msgspec.json.Encoder()
    (out / "signals.jsonl").write_bytes(b"".join(encoder.encode(s) + b"\n" for s in sent))
    in_process = run(args.data, args.strategy, params, args.sample_ms, risk=args.risk, budget=args.budget)
    same = [signal_key(s) for s in sent if isinstance(s, m.Signal)] == [signal_key(s) for s in in_process.signals]
    print(f"{sum(isinstance(s, m.Signal) for s in sent)} signals, {sum(isinstance(s, m.Cancel) for s in sent)} "
          f"cancels through the mesh: {out / 'signals.jsonl'}")
    print("the same signals as the in-process replay" if same else
          "NOT the same signals as the in-process replay (a strategy that hears its fills, like the quoter, "
          "differs: the mesh replay fills nothing)")
    return 0


def _label(strategy: str) -> str:
    """A strategy spec as a folder name's part: a file's or module's class name."""
    return strategy.rpartition(":")[2] if ":" in strategy else Path(strategy).stem


def _codes(counts: dict[str, int]) -> str:
    return ": " + ", ".join(f"{code} {n}" for code, n in counts.items()) if counts else ""


def _summary_text(s) -> str:
    rows = [("strategy", f"{s.strategy} {' '.join(f'{k}={v}' for k, v in sorted(s.params.items()))}"),
            ("data", f"{s.data}: {s.messages} messages, {s.started} to {s.ended}"),
            ("signals", str(s.signals)),
            ("refused by risk", f"{s.signals_refused} signals{_codes(s.risk_refusals)}"),
            ("refused by executor", f"{s.refused} orders{_codes(s.executor_refusals)}"),
            ("trades", str(s.trades)), ("volume", str(s.volume)),
            ("fees", str(s.fees)), ("rebates", f"{s.rebates} (estimated: maker fills x the markets' rebate rates)"),
            ("pnl", f"{s.pnl} (realized {s.realized}, unrealized {s.unrealized}, rebates {s.rebates})"),
            ("max drawdown", str(s.max_drawdown)), ("max exposure", str(s.max_exposure)),
            ("hit rate", "-" if s.hit_rate is None else str(s.hit_rate))]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
