"""The chaos run: the mesh trades on the local venue while a seeded schedule of faults hits it, then every invariant
is checked against the venue's own records.

`polybot up` (every default service, an audit log, the embedded local venue with moving books and arbitrage gaps)
trades live against the venue's ready-made account. Every ``--every`` seconds the schedule (from ``--seed``) does one
of: SIGKILL a random service (the supervisor restarts it); drop the venue's WebSockets; stall the whole venue; open a
matching-engine restart (425, then a post-only window); open a 429 window (a rate limit far below the tier); stop
analytics for a while (SIGSTOP, then SIGCONT: a slow consumer); fill the disk under the executor or analytics for a
while (its files may not grow: RLIMIT_FSIZE through prlimit). At the end every fault is healed and the mesh must be
healthy again within ``--heal-s`` (as `polybot status` judges trading health); then risk's kill switch stops trading
(every resting order canceled), analytics takes in the last fills, and:

- **sent once**: no order reached the venue twice (the venue's ``/_admin/received``);
- **fills recorded**: every venue trade of the account is in DuckDB once, and DuckDB has none the venue lacks;
- **positions**: each token's shares at the venue equal the executor's positions and DuckDB's;
- **cash**: the venue's collateral equals the starting collateral plus the cash flow of DuckDB's fills (prices,
  sizes, fees), to the micro-dollar;
- **limits**: no token's position at the venue, at cost, ever passed risk's ``max_position_per_token`` (USDC), replaying
  the venue's trades in order;
- **audit**: ``polybot audit verify`` passes;
- **healthy**: every service running, the executor ready, risk reconciled, no market stale, within ``--heal-s``.

It prints the counts (faults by kind, orders, fills) and each invariant's mismatches. ``run()`` is also the test
suite's bounded version (tests/test_chaos.py).

Run: ``python benchmarks/chaos.py [--duration-s 600] [--seed 1] [--every 6] [--out FILE]``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from py_clob_client_v2 import ClobClient  # noqa: E402
from py_clob_client_v2.clob_types import ApiCreds, AssetType, BalanceAllowanceParams  # noqa: E402

from polybot_venue.engine import taker_fee  # noqa: E402
from polybot_venue.server import VenueOptions, ready_made_account  # noqa: E402
from services import health  # noqa: E402
from services import messages as m  # noqa: E402
from trade_path import Mesh, child_env  # noqa: E402

FAULTS = ("kill", "drop_ws", "stall", "restart", "rate_limit", "slow_analytics", "full_disk")
KILLABLE = ("analytics", "scanner", "executor", "risk", "strategies", "audit")
UNITS = Decimal(10**6)
POSITION_LIMIT = Decimal(60)  # risk's max_position_per_token here (USDC at cost): small, so a limit is in play
CONFIG = f"""
[services.audit]
kind = "services.audit:Audit"
[services.risk.options.limits]
max_position_per_token = {POSITION_LIMIT}
[services.executor.options]
post_only_after_restart_s = 4.0
restart_retry_s = 1.0
heartbeat_s = 1.0
[services.strategies.options.strategies]
arbitrage = {{}}
quoter = {{ max_markets = 2, size = 5, max_inventory = 20 }}
"""


@dataclass
class Report:
    seed: int
    duration_s: float
    faults: Counter = field(default_factory=Counter)
    orders: int = 0
    fills: int = 0
    healed_s: float = 0.0
    mismatches: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(self.mismatches.values())

    def lines(self) -> list[str]:
        out = [f"chaos run: seed {self.seed}, {self.duration_s:.0f} s, {sum(self.faults.values())} faults "
               f"({', '.join(f'{k} {v}' for k, v in sorted(self.faults.items()))})",
               f"orders that reached the venue: {self.orders}; venue fills of the account: {self.fills}; "
               f"healthy again {self.healed_s:.1f} s after the last fault"]
        for name, found in self.mismatches.items():
            out.append(f"{name}: {len(found)} mismatches" + "".join(f"\n  {x}" for x in found[:10]))
        return out


def highest_costs(fills: Any) -> dict[str, Decimal]:
    """Each token's highest position at cost (average cost: a SELL takes its share of the cost away), over the
    fills in the order they happened."""
    shares: Counter = Counter()
    cost: dict[str, Decimal] = {}
    highest: dict[str, Decimal] = {}
    for token, side, price, size, _ in fills:
        held = cost.get(token, Decimal(0))
        if side == "BUY":
            cost[token] = held + price * size
            shares[token] += size
        elif shares[token]:
            cost[token] = held - held * min(size, shares[token]) / shares[token]
            shares[token] -= min(size, shares[token])
        highest[token] = max(highest.get(token, Decimal(0)), cost.get(token, Decimal(0)))
    return highest


class Chaos:
    def __init__(self, root: Path, seed: int, every_s: float) -> None:
        self.rng = random.Random(seed)
        self.every_s = every_s
        self.mesh = Mesh(root, {"seed": seed, "markets": 12, "events": 1, "v2_markets": 1, "v2_events": 0,
                                "life": {"requotes_per_s": 4.0, "gaps_per_s": 2.0, "resolutions_per_s": 0.0}},
                         extra=CONFIG)
        self.account = ready_made_account(seed)
        self.starting = VenueOptions().starting_collateral
        self.stopped: list[int] = []  # analytics pids under SIGSTOP
        self.full: list[int] = []  # pids whose files may not grow (a full disk)
        self.heals: list[tuple[float, Any]] = []  # (when, what) to undo a window

    # ------------------------------------------------------------ faults

    def admin(self, action: str, **body: Any) -> None:
        try:
            httpx.post(f"{self.mesh.clob}/_admin/{action}", json=body, timeout=5)
        except httpx.HTTPError:
            pass  # a stalled venue answers late; the fault still happened

    def pid(self, name: str) -> int:
        sup = self.mesh.ask("supervisor", m.StatusRequest(), 2000)
        if isinstance(sup, m.StatusReply):
            return next((c.pid for c in sup.children if c.name == name and c.pid), 0)
        return 0

    def fault(self, kind: str) -> str:
        now = time.monotonic()
        if kind == "kill":
            name = self.rng.choice(KILLABLE)
            if pid := self.pid(name):
                os.kill(pid, signal.SIGKILL)
            return f"kill {name}"
        if kind == "drop_ws":
            self.admin("drop-connections")
        elif kind == "stall":
            self.admin("stall", seconds=round(self.rng.uniform(0.5, 2.5), 1))
        elif kind == "restart":
            self.admin("restart", seconds=self.rng.choice([2, 3, 5]), post_only_seconds=3)
        elif kind == "rate_limit":
            self.admin("rate-limits", orders={"rate": 1, "burst": 2}, cancels={"rate": 2, "burst": 3})
            self.heals.append((now + self.rng.uniform(2, 5), lambda: self.admin("rate-limits")))
        elif kind == "full_disk":
            name = self.rng.choice(("executor", "analytics"))
            if pid := self.pid(name):
                self._full(pid, name)
                self.heals.append((now + self.rng.uniform(2, 5), lambda p=pid: self._room(p)))
            return f"full_disk {name}"
        elif kind == "slow_analytics" and (pid := self.pid("analytics")):
            os.kill(pid, signal.SIGSTOP)
            self.stopped.append(pid)
            self.heals.append((now + self.rng.uniform(2, 6), lambda p=pid: self._cont(p)))
        return kind

    def _full(self, pid: int, name: str) -> None:
        """A full disk for one process: none of its files may grow past what its main file holds now."""
        state = self.mesh.config.state_path
        main = next(state.glob("executor/journal-*.jsonl"), None) if name == "executor" else state / "polybot.duckdb"
        size = main.stat().st_size if main is not None and main.exists() else 0
        try:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (max(size, 1), resource.RLIM_INFINITY))
            self.full.append(pid)
        except (ProcessLookupError, PermissionError):
            pass

    def _room(self, pid: int) -> None:
        try:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        except ProcessLookupError:
            pass
        if pid in self.full:
            self.full.remove(pid)

    def _cont(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        if pid in self.stopped:
            self.stopped.remove(pid)

    def heal_due(self, all_: bool = False) -> None:
        now = time.monotonic()
        due = [h for h in self.heals if all_ or h[0] <= now]
        self.heals = [h for h in self.heals if h not in due]
        for _, undo in due:
            undo()

    def heal_all(self) -> None:
        self.heal_due(all_=True)
        for pid in list(self.stopped):
            self._cont(pid)
        for pid in list(self.full):
            self._room(pid)
        self.admin("restart", seconds=0, post_only_seconds=0)
        self.admin("rate-limits")

    # ------------------------------------------------------------ health and invariants

    def unhealthy(self) -> list[str]:
        """Why trading is not healthy now, as `polybot status` judges it (services.health); risk refusing every
        recent signal is left out: this run's small position limit refuses many, as it should."""
        rows = [r for name in self.mesh.services if (r := self.mesh.status(name, 1000)) is not None]
        kinds = {n: self.mesh.config.services[n].kind for n in self.mesh.services}
        missing = [f"{n} does not answer" for n in self.mesh.services if n not in {r.name for r in rows}]
        return missing + [r for r in health.judge(rows, kinds).reasons if "every signal of the last" not in r]

    def quiesce(self, timeout_s: float = 30.0) -> None:
        """Stop trading before the books are compared: risk's kill switch refuses new orders and cancels every
        resting one; then wait until the executor has no open order."""
        self.mesh.ask("risk", m.HaltRequest(reason="the chaos run compares the books"), 5000)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            account = self.mesh.ask("executor", m.AccountRequest(), 5000)
            if isinstance(account, m.AccountReply) and not account.orders:
                return
            time.sleep(0.2)
        raise RuntimeError(f"the executor still has open orders {timeout_s:.0f} s after risk halted")

    def venue_client(self) -> ClobClient:
        client = ClobClient(self.mesh.clob, chain_id=137, key=self.account.private_key)
        creds = self.account.credentials
        client.set_api_creds(ApiCreds(creds.api_key, creds.secret, creds.passphrase))
        return client

    def our_fills(self, client: ClobClient) -> dict[tuple[str, str], tuple[str, str, Decimal, Decimal, Decimal]]:
        """The account's parts in the venue's trades, in the order they happened: (trade id, order id) -> (token,
        side, price, size, fee). A trade where two of its orders met gives two."""
        address = self.account.address.lower()
        ours = {}
        for t in sorted(client.get_trades(), key=lambda t: int(t["match_time"])):
            if t["trader_side"] == "TAKER":
                fee = taker_fee(Decimal(t["size"]), Decimal(t["price"]), Decimal(t["fee_rate_bps"]) / 10_000)
                ours[(t["id"], t["taker_order_id"])] = (t["asset_id"], t["side"], Decimal(t["price"]),
                                                         Decimal(t["size"]), fee)
            for mo in t["maker_orders"]:
                if mo["maker_address"].lower() == address:
                    side = mo.get("side") or ("SELL" if t["side"] == "BUY" else "BUY")
                    ours[(t["id"], mo["order_id"])] = (mo["asset_id"], side, Decimal(mo["price"]),
                                                        Decimal(mo["matched_amount"]), Decimal(0))
        return ours

    def query(self, sql: str) -> list[dict]:
        done = subprocess.run([sys.executable, "-m", "services", "--config", str(self.mesh.file), "query", "--json",
                               "--max-rows", "10000", sql], env=child_env(), capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"polybot query failed: {done.stderr[-500:]}")
        return json.loads(done.stdout)

    def check(self, report: Report) -> None:
        received = httpx.post(f"{self.mesh.clob}/_admin/received", json={}, timeout=10).json()["orders"]
        report.orders = len(received)
        ids = Counter(r["id"] for r in received)
        report.mismatches["sent once"] = [f"{i} reached the venue {n} times" for i, n in ids.items() if n > 1]

        client = self.venue_client()
        ours = self.our_fills(client)
        report.fills = len(ours)
        recorded = self.query("select trade_id, venue_order_id, token_id, side, price, size, fee from executions "
                              "where kind = 'Fill'")
        seen = Counter((r["trade_id"], r["venue_order_id"]) for r in recorded)
        report.mismatches["fills recorded"] = (
            [f"venue trade {k} is not in DuckDB" for k in ours if k not in seen]
            + [f"{k} is in DuckDB {n} times" for k, n in seen.items() if n > 1]
            + [f"{k} is in DuckDB, not at the venue" for k in seen if k not in ours])

        tokens = sorted({v[0] for v in ours.values()})
        account = self.mesh.ask("executor", m.AccountRequest(), 5000)
        executor = {p.token_id: p.size for p in account.positions} if isinstance(account, m.AccountReply) else {}
        duck = {r["token_id"]: Decimal(str(r["size"])) for r in self.query(
            "select token_id, sum(case side when 'BUY' then size else -size end) as size from executions "
            "where kind = 'Fill' group by token_id")}
        wrong, passed = [], []
        for token, cost in highest_costs(ours.values()).items():
            if cost > POSITION_LIMIT:
                passed.append(f"{token[:16]}…: held {cost:.2f} USDC at cost at the venue, limit {POSITION_LIMIT}")
        for token in tokens:
            answer = client.get_balance_allowance(BalanceAllowanceParams(asset_type=AssetType.CONDITIONAL,
                                                                         token_id=token))
            venue = Decimal(answer["balance"]) / UNITS
            mine, theirs = executor.get(token, Decimal(0)), duck.get(token, Decimal(0))
            if not venue == mine == theirs:
                wrong.append(f"{token[:16]}…: venue {venue}, executor {mine}, DuckDB {theirs}")
        report.mismatches["positions"] = wrong
        report.mismatches["limits"] = passed

        collateral = Decimal(client.get_balance_allowance(
            BalanceAllowanceParams(asset_type=AssetType.COLLATERAL))["balance"]) / UNITS
        flow = sum((Decimal(str(r["price"])) * Decimal(str(r["size"])) * (-1 if r["side"] == "BUY" else 1)
                    - Decimal(str(r["fee"] or 0)) for r in recorded), Decimal(0))
        expected = (self.starting + flow).quantize(Decimal("0.000001"))
        report.mismatches["cash"] = [] if collateral == expected else [
            f"the venue holds {collateral} USDC; the start {self.starting} plus DuckDB's fills give {expected}"]

        audit = subprocess.run([sys.executable, "-m", "services", "--config", str(self.mesh.file), "audit", "verify"],
                               env=child_env(), capture_output=True, text=True, timeout=60)
        report.mismatches["audit"] = [] if audit.returncode == 0 else [audit.stdout[-300:] + audit.stderr[-300:]]

    # ------------------------------------------------------------ the run

    def run(self, duration_s: float, heal_s: float) -> Report:
        report = Report(seed=self.rng.getstate()[1][0], duration_s=duration_s)
        self.mesh.wait_ready()
        end = time.monotonic() + duration_s
        next_fault = time.monotonic() + self.every_s
        while time.monotonic() < end:
            self.heal_due()
            if time.monotonic() >= next_fault:
                report.faults[self.fault(self.rng.choice(FAULTS)).split()[0]] += 1
                next_fault += self.every_s
            time.sleep(0.1)  # the schedule's clock, not a wait for an event
        self.heal_all()
        healed_at = time.monotonic()
        while why := self.unhealthy():
            if time.monotonic() - healed_at > heal_s:
                report.mismatches["healthy"] = [f"not healthy {heal_s:.0f} s after the last fault: {'; '.join(why)}"]
                break
            time.sleep(0.2)
        report.healed_s = time.monotonic() - healed_at
        report.mismatches.setdefault("healthy", [])
        self.quiesce()
        settle_until = time.monotonic() + 20  # analytics takes in the last fills
        while time.monotonic() < settle_until:
            rows = self.query("select count(*) as n from executions where kind = 'Fill'")
            if rows and rows[0]["n"] >= len(self.our_fills(self.venue_client())):
                break
            time.sleep(0.5)
        self.check(report)
        return report

    def close(self) -> None:
        self.heal_all()
        self.mesh.close()


def run(duration_s: float, seed: int = 1, every_s: float = 6.0, heal_s: float = 60.0,
        root: Path | None = None) -> Report:
    folder = Path(tempfile.mkdtemp(prefix="pb-chaos-", dir="/tmp")) if root is None else root
    chaos = Chaos(folder / "mesh", seed, every_s)
    try:
        report = chaos.run(duration_s, heal_s)
        report.seed = seed
        return report
    finally:
        chaos.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--every", type=float, default=6.0, help="seconds between faults")
    parser.add_argument("--heal-s", type=float, default=60.0, help="how soon the mesh must be healthy again")
    parser.add_argument("--out", help="write the report as JSON here too")
    args = parser.parse_args()
    report = run(args.duration_s, args.seed, args.every, args.heal_s)
    print("\n".join(report.lines()))
    if args.out:
        Path(args.out).write_text(json.dumps({"seed": report.seed, "duration_s": report.duration_s,
                                              "faults": dict(report.faults), "orders": report.orders,
                                              "fills": report.fills, "healed_s": report.healed_s,
                                              "mismatches": report.mismatches}, indent=2))
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
