"""The audit service: every message on ``decisions`` and ``executions`` into an append-only, hash-chained log.

The log is JSON lines, one entry a line, keys in this order::

    {"seq": 1, "ts_ns": <receive time>, "socket": "decisions", "type": "SignalAccepted",
     "msg": <the message as msgspec.to_builtins gives it>, "prev": <the previous entry's hash>, "hash": <hex>}

``seq`` counts from 1; ``prev`` is the previous entry's ``hash`` (64 zeros for the first); ``hash`` is the hex
SHA-256 of the entry's canonical bytes without ``hash``: ``msgspec.json.encode`` of the dict with the keys in the
order above (compact, no spaces). The whole line must be exactly the canonical encoding with ``hash`` last, so
``verify`` catches any changed byte (a hash mismatch or a line not in canonical form), a deleted or reordered
line (a ``seq`` gap or a ``prev`` mismatch) and a torn line.

What the chain alone cannot catch: the last entries cut off the end (what is left is a valid, shorter chain), or a
whole log rewritten from some point on. Keep an anchor outside the file: the service reports ``entries`` and
``head`` (the last hash) in its status and logs them on stop; ``verify --head HASH`` checks the chain still
reaches that hash.

Each line is written and flushed as its message arrives; it is fsynced at most every 200 ms and on stop, so a
machine crash (not a process crash) can lose up to the last 200 ms of entries. A crash mid-write leaves a torn
last line: the service then refuses to start until an operator has looked (``polybot audit verify``).
Only bus messages are logged; they carry no secrets.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import msgspec

from . import messages as m
from .runtime import Service, StartupError

KIND = "services.audit:Audit"
GENESIS = "0" * 64
FSYNC_EVERY_S = 0.2
KEYS = ("seq", "ts_ns", "socket", "type", "msg", "prev", "hash")

_encode = msgspec.json.Encoder().encode


class AuditOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    path: str = ""  # the log file; default <state_dir>/audit/audit.jsonl


def entry_hash(body: dict[str, Any]) -> str:
    """The hex SHA-256 of an entry's canonical bytes; ``body`` holds every key but ``hash``, in order."""
    return hashlib.sha256(_encode(body)).hexdigest()


def make_line(seq: int, ts_ns: int, socket: str, msg: m.Message, prev: str) -> tuple[bytes, str]:
    """One log line (newline included) and its hash."""
    body = {"seq": seq, "ts_ns": ts_ns, "socket": socket, "type": m.tag_of(type(msg)),
            "msg": msgspec.to_builtins(msg), "prev": prev}
    digest = entry_hash(body)
    body["hash"] = digest
    return _encode(body) + b"\n", digest


def check_line(raw: bytes, seq: int, prev: str) -> tuple[str, str]:
    """The entry's hash and "" if ``raw`` (no newline) is entry ``seq`` following ``prev``; else "" and why not."""
    try:
        entry = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        return "", f"not valid JSON ({exc})"
    if not isinstance(entry, dict) or tuple(entry) != KEYS:
        return "", f"not an audit entry (keys must be {', '.join(KEYS)} in that order)"
    body = {k: entry[k] for k in KEYS[:-1]}
    if entry_hash(body) != entry["hash"]:
        return "", "hash mismatch: the entry was changed"
    if _encode(entry) != raw:
        return "", "not in canonical form: the line was changed"
    if entry["seq"] != seq:
        return "", f"seq is {entry['seq']!r}, expected {seq}: entries before it were deleted or reordered"
    if entry["prev"] != prev:
        return "", "prev does not match the previous entry's hash: an entry before it was deleted or replaced"
    return entry["hash"], ""


def walk(path: Path, head: str | None = None) -> tuple[bool, int, str, str]:
    """Check the whole chain: (ok, entries, problem, head hash); the problem names the line."""
    if not path.is_file():
        return False, 0, f"no audit log at {path}", GENESIS
    prev, count = GENESIS, 0
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.endswith(b"\n"):
                return False, count, f"line {number}: torn (no newline at the end: a write was cut short)", prev
            digest, why = check_line(raw[:-1], number, prev)
            if why:
                return False, count, f"line {number}: {why}", prev
            prev, count = digest, number
    if head is not None and head != prev:
        return False, count, (f"the chain ends at {prev} after {count} entries, not at the expected head {head}: "
                              "entries at the end were deleted or rewritten"), prev
    return True, count, "", prev


def verify(path: str | Path, head: str | None = None) -> tuple[bool, int, str]:
    """Is the log at ``path`` an intact chain (ending at ``head`` if given)? (ok, entries, problem)."""
    ok, count, problem, _ = walk(Path(path), head)
    return ok, count, problem


def tail(path: Path) -> tuple[int, str]:
    """The seq and hash to continue the chain from; StartupError if the last line is torn or not an entry."""
    if not path.exists() or path.stat().st_size == 0:
        return 0, GENESIS
    with path.open("rb") as f:
        end = f.seek(0, os.SEEK_END)
        block, data = 1 << 16, b""
        while end > 0 and data.count(b"\n") < 2:  # the last line whole, and the newline before it
            start = max(0, end - block)
            f.seek(start)
            data = f.read(end - start) + data
            end = start
    lines = data.split(b"\n")
    number = "the last line"
    if not data.endswith(b"\n"):
        why = "torn (no newline at the end: a write was cut short)"
    else:
        try:
            entry = msgspec.json.decode(lines[-2])
            seq, prev = int(entry["seq"]), str(entry["prev"])
            number = f"line {seq}"
            digest, why = check_line(lines[-2], seq, prev)
        except (msgspec.DecodeError, KeyError, TypeError, ValueError) as exc:
            why = f"not an audit entry ({exc})"
        if not why:
            return seq, digest
    raise StartupError(f"audit log {path}: {number} is {why}; refusing to append to it. Run "
                       f"`polybot audit verify --file {path}`, then move the file aside once it is understood")


class Audit(Service):
    consumes = {"decisions": None, "executions": None}
    publishes = ()
    Options = AuditOptions

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.path = log_path(ctx.config.state_path, ctx.options)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.seq, self.head = tail(self.path)
        self.file = self.path.open("ab")
        self.written = 0
        self.dirty = False

    def handle(self, socket: str, msg: m.Message) -> None:
        if isinstance(msg, m.Heartbeat):
            return
        line, digest = make_line(self.seq + 1, self.ctx.clock(), socket, msg, self.head)
        self.file.write(line)
        self.file.flush()
        self.seq, self.head, self.dirty = self.seq + 1, digest, True
        self.written += 1

    async def run(self) -> None:
        while True:  # a timer, not a wait for anything: fsync what was written in the last interval
            await asyncio.sleep(FSYNC_EVERY_S)
            self._sync()

    def _sync(self) -> None:
        if self.dirty:
            os.fsync(self.file.fileno())
            self.dirty = False

    def on_stop(self) -> None:
        self.file.flush()
        self._sync()
        self.file.close()
        self.ctx.log.info("audit log closed", extra={"path": str(self.path), "entries": self.seq, "head": self.head,
                                                     "written": self.written})

    def detail(self) -> dict[str, str]:
        return {"path": str(self.path), "entries": str(self.seq), "head": self.head, "written": str(self.written)}


def log_path(state_dir: Path, options: AuditOptions) -> Path:
    path = Path(options.path).expanduser() if options.path else state_dir / "audit" / "audit.jsonl"
    if not path.is_absolute():
        raise StartupError(f"path: {options.path!r} must be an absolute path")
    return path


def default_path(config: Any) -> Path:
    """The log the config's audit service writes (its ``path`` option, else the default under the state dir)."""
    from .config import service_of_kind
    from .runtime import resolve

    name = service_of_kind(config, KIND, "audit")
    options = resolve(config, name)[1] if name in config.services else AuditOptions()
    return log_path(config.state_path, options)


def report(path: Path, head: str | None = None) -> int:
    """Verify and print the verdict: exit status 0 when the chain is intact, 1 when not."""
    ok, count, problem, last = walk(path, head)
    if ok:
        print(f"audit log {path}: {count} entries, chain intact, head {last}")
        return 0
    print(f"audit log {path}: verification FAILED after {count} good entries: {problem}", file=sys.stderr)
    return 1
