"""Agent-authored strategies kept for the operator: proposed (pending), approved (runs), stopped.

One folder per strategy under ``<state_dir>/strategies/NAME/`` (0700, files 0600):

- ``pending.py`` + ``pending.json``: the latest proposal (an agent's ``propose_strategy``): its code, the class,
  params, markets, the budget asked for, who proposed it and when, its sha256 and its backtest report;
- ``approved.py`` + ``approved.json``: the version the operator approved (``polybot strategy approve``): a copy of
  the pending code as it was shown, its sha256, the budget granted, who approved it and when. The strategies
  process that runs it checks the file against that hash before it starts, so code changed after approval never
  runs;
- ``stopped``: present while the operator has stopped it (``polybot strategy stop``).

No tool of the MCP server writes anything here but ``pending.*``; approving, starting, stopping and budgets are the
operator's, through the CLI. Pure file handling, no bus.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from ..config import STRATEGY_SERVICE_PREFIX
from . import REGISTRY
from .loading import NAME, changed

SERVICE_PREFIX = STRATEGY_SERVICE_PREFIX  # an approved strategy runs as the service strategy_NAME
MAX_CODE_BYTES = 200_000

State = Literal["pending", "approved", "stopped"]


class StoreError(Exception):
    """A name, a code or a record that cannot be used; the message says what to do."""


@dataclass(frozen=True)
class Budget:
    """The risk limits a strategy runs under: each at most the operator's own limit (risk takes the lower)."""

    max_order_notional: Decimal = Decimal("50")  # USDC per order
    max_gross_exposure: Decimal = Decimal("200")  # USDC held and resting, all markets
    max_daily_loss: Decimal = Decimal("50")  # USDC realized + marked, per UTC day; past it its signals are refused
    max_open_orders: int = 10
    max_signals_per_minute: int = 60

    @classmethod
    def of(cls, data: dict[str, Any]) -> Budget:
        known = set(cls.__dataclass_fields__)
        if unknown := set(data) - known:
            raise StoreError(f"unknown budget fields {sorted(unknown)}; the fields are {sorted(known)}")
        out: dict[str, Any] = {}
        for key, value in data.items():
            kind = cls.__dataclass_fields__[key].type
            try:
                number = Decimal(str(value))
            except ArithmeticError:
                raise StoreError(f"budget {key}: {value!r} is not a number") from None
            if not number.is_finite() or number < 0 or number > Decimal("1e9"):
                raise StoreError(f"budget {key}: {value!r} must be a number from 0 to 1e9")
            out[key] = int(number) if kind in (int, "int") else number
        return cls(**out)

    def as_json(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Record:
    """One version of a strategy: pending (proposed) or approved."""

    name: str
    class_name: str
    sha256: str
    params: dict[str, Any] = field(default_factory=dict)
    markets: list[str] = field(default_factory=list)
    budget: dict[str, str] = field(default_factory=dict)
    by: str = ""  # pending: the agent that proposed it; approved: the operator
    at_ns: int = 0
    rationale: str = ""
    backtest: dict[str, Any] = field(default_factory=dict)  # the report as backtest_strategy gives it

    @classmethod
    def read(cls, path: Path) -> Record:
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError) as exc:
            raise StoreError(f"{path} is not a strategy record ({exc})") from None


@dataclass(frozen=True)
class Entry:
    """What the store holds of one strategy."""

    name: str
    state: State
    pending: Record | None
    approved: Record | None

    @property
    def changed_since_approval(self) -> bool:
        return bool(self.pending and self.approved and self.pending.sha256 != self.approved.sha256)


def code_hash(code: str | bytes) -> str:
    return hashlib.sha256(code.encode() if isinstance(code, str) else code).hexdigest()


class Store:
    def __init__(self, state_dir: str | Path) -> None:
        self.root = Path(state_dir) / "strategies"

    def folder(self, name: str) -> Path:
        if not NAME.match(name):
            raise StoreError(f"strategy name {name!r}: lower-case letters, digits and _ (at most 24), starting with "
                             "a letter")
        return self.root / name

    def _write(self, path: Path, data: str | bytes) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data.encode() if isinstance(data, str) else data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)

    # ------------------------------------------------------------ agents propose

    def propose(self, name: str, code: str, class_name: str, params: dict[str, Any], markets: list[str],
                budget: Budget, by: str, rationale: str = "", backtest: dict[str, Any] | None = None) -> Record:
        """Keep a proposal as the strategy's pending version (replacing an earlier pending one)."""
        folder = self.folder(name)
        if name in REGISTRY:
            raise StoreError(f"{name} is the name of a shipped strategy (its signals go out as strategy:{name}); "
                             "choose another name")
        if len(code.encode()) > MAX_CODE_BYTES:
            raise StoreError(f"the code is {len(code.encode())} bytes; at most {MAX_CODE_BYTES}")
        record = Record(name=name, class_name=class_name, sha256=code_hash(code), params=params, markets=markets,
                        budget=budget.as_json(), by=by, at_ns=time.time_ns(), rationale=rationale,
                        backtest=backtest or {})
        self._write(folder / "pending.py", code)
        self._write(folder / "pending.json", json.dumps(asdict(record), indent=1, default=str))
        return record

    # ------------------------------------------------------------ the operator decides

    def approve(self, name: str, budget: Budget, by: str, sha_prefix: str = "") -> Record:
        """The pending version becomes the approved one, with ``budget``. ``sha_prefix``: the hash the operator was
        shown; refused when the pending code is not that version any more."""
        folder = self.folder(name)
        pending = self.get(name).pending
        if pending is None:
            raise StoreError(f"strategy {name} has no pending version to approve")
        code = (folder / "pending.py").read_bytes()
        if code_hash(code) != pending.sha256:
            raise StoreError(f"strategy {name}: pending.py does not match its record (sha256 {code_hash(code)[:12]}, "
                             f"recorded {pending.sha256[:12]}); it was changed outside propose_strategy")
        if sha_prefix and not pending.sha256.startswith(sha_prefix.lower()):
            raise StoreError(f"strategy {name}: the pending version is {pending.sha256[:12]}, not {sha_prefix}; "
                             "look at it again (polybot strategy show) before approving")
        record = Record(**{**asdict(pending), "budget": budget.as_json(), "by": by, "at_ns": time.time_ns()})
        self._write(folder / "approved.py", code)
        self._write(folder / "approved.json", json.dumps(asdict(record), indent=1, default=str))
        (folder / "stopped").unlink(missing_ok=True)
        return record

    def stop(self, name: str) -> None:
        folder = self.folder(name)
        if not (folder / "approved.json").exists():
            raise StoreError(f"strategy {name} was never approved: nothing runs to stop")
        self._write(folder / "stopped", "")

    # ------------------------------------------------------------ reading

    def get(self, name: str) -> Entry:
        folder = self.folder(name)
        pending = Record.read(folder / "pending.json") if (folder / "pending.json").exists() else None
        approved = Record.read(folder / "approved.json") if (folder / "approved.json").exists() else None
        if pending is None and approved is None:
            raise StoreError(f"no strategy {name!r}; the kept ones are {', '.join(self.names()) or 'none'}")
        state: State = ("stopped" if (folder / "stopped").exists() else "approved") if approved else "pending"
        return Entry(name=name, state=state, pending=pending, approved=approved)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and NAME.match(p.name))

    def entries(self) -> list[Entry]:
        return [self.get(name) for name in self.names()]

    def code(self, name: str, which: Literal["pending", "approved"]) -> str:
        return (self.folder(name) / f"{which}.py").read_text()

    def running(self) -> list[Entry]:
        """The approved strategies not stopped: each runs as the service strategy_NAME."""
        return [e for e in self.entries() if e.state == "approved"]

    def unapproved(self, entry: Entry) -> str:
        """Why ``entry``'s approved version cannot run ("" when it can): its file is not the code approved."""
        if entry.approved is None:
            return f"strategy {entry.name} was never approved"
        return changed(self.folder(entry.name) / "approved.py", entry.approved.sha256)

    def service_table(self, entry: Entry) -> dict[str, Any]:
        """The strategies host's options that run ``entry``'s approved version, and only that version."""
        assert entry.approved is not None
        path = self.folder(entry.name) / "approved.py"
        return {"strategies": {entry.name: {"class": f"{path}:{entry.approved.class_name}",
                                            "params": entry.approved.params, "sha256": entry.approved.sha256}}}
