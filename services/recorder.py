"""The recorder service (`polybot record`): what the scanner publishes on ``prices`` and ``events``, from its
snapshot on, into a recording folder (see ``recording``), rotating segments by size and age."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec

from . import messages as m
from .recording import RecordingWriter, Tap
from .runtime import Service, StartupError
from .sync import scanner_snapshot, snapshot_messages


class RecorderOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    out: str = ""  # the recording folder; default <state_dir>/recordings/<UTC start time>
    rotate_mb: float = 64.0  # a new segment after this many MB...
    rotate_s: float = 3600.0  # ... or this many seconds of market time
    duration_s: float = 0.0  # stop after this long; 0: until stopped
    scanner: str = "scanner"


def default_folder(state_dir: Path) -> Path:
    return state_dir / "recordings" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


class Recorder(Service):
    consumes = {"prices": None, "events": None}
    publishes = ()
    Options = RecorderOptions

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        opts: RecorderOptions = ctx.options
        folder = Path(opts.out).expanduser() if opts.out else default_folder(ctx.config.state_path)
        if not folder.is_absolute():
            raise StartupError(f"out: {opts.out!r} must be an absolute path")
        if opts.rotate_mb <= 0 or opts.rotate_s <= 0:
            raise StartupError("rotate_mb and rotate_s must be above 0")
        self.writer = RecordingWriter(folder, int(opts.rotate_mb * (1 << 20)), opts.rotate_s)
        self.tap = Tap(self.writer)
        self.synced = False

    def handle(self, socket: str, msg: m.Message) -> None:
        if not isinstance(msg, m.Heartbeat):
            self.tap.offer(msg)

    async def run(self) -> None:
        reply = await scanner_snapshot(self.ctx, self.ctx.options.scanner)
        self.tap.start(snapshot_messages(reply), reply.ts_ns)
        self.writer.flush()
        self.synced = True
        self.ctx.log.info("recording", extra={"folder": str(self.writer.folder), "markets": len(reply.markets)})
        if self.ctx.options.duration_s > 0:
            await asyncio.sleep(self.ctx.options.duration_s)  # the recording's length, not a wait for anything
            self.ctx.request_stop()

    def on_stop(self) -> None:
        self.writer.close()
        self.ctx.log.info("recorded", extra={"folder": str(self.writer.folder), "messages": self.writer.written,
                                             "segments": self.writer.seq})

    def detail(self) -> dict[str, str]:
        return {"synced": str(self.synced), "folder": str(self.writer.folder), "messages": str(self.writer.written),
                "segments": str(self.writer.seq)}
