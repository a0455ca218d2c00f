"""Risk's journal: every verdict it publishes on ``decisions``, numbered (``seq`` in ``stream``, the journal's own
name), so a subscriber that missed some (analytics, down for a while) asks for them again (``CatchUpRequest``).

Nothing of risk's state is rebuilt from it: it only serves catching up, so it keeps the latest verdicts only. Once it
holds twice ``keep`` of them it is rewritten as the last ``keep`` (a ``Numbering`` first carries the counter on), so
it never holds more than ``2 * keep`` verdicts: with the default 20,000 and a verdict about 1 KB, at most ~40 MB.
A subscriber down for longer than ``keep`` verdicts hears that the older ones are gone, and says how many it lost.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Union

from .. import journal as log
from .. import messages as m
from ..journal import JournalError, Numbering

__all__ = ["DecisionJournal", "JournalError"]

Record = Union[Numbering, m.SignalAccepted, m.SignalRejected, m.SignalPending, m.StrategyApproved]
NUMBERED = m.members(m.NumberedVerdict)


def fault(record: Any) -> str:
    """Why a verdict's numbers cannot be trusted (a subscriber's bus would refuse it as well), or ""."""
    why = m.number_fault(record)
    return f"has {why}" if why else ""


class DecisionJournal(log.Journal):
    """Append-only JSON lines: the verdicts risk publishes, numbered; the latest ``keep`` of them at least."""

    def __init__(self, path: Path, keep: int, fsync: bool = False) -> None:
        super().__init__(path, Record, NUMBERED, fault, fsync)
        self.keep = keep
        self.first = 0  # the oldest seq the file holds (0: none)
        self.compactions = 0

    def replay(self) -> list[Any]:
        records = super().replay()
        self.first = min((r.seq for r in records if isinstance(r, NUMBERED) and r.stream == self.stream and r.seq),
                         default=0)
        return records

    def number(self, msg: Any) -> Any:
        numbered = super().number(msg)
        self.first = self.first or numbered.seq
        return numbered

    @property
    def due(self) -> bool:
        """It holds twice the verdicts it must keep: time to compact."""
        return bool(self.first) and self.seq - self.first + 1 >= 2 * self.keep

    def compact(self) -> int:
        """Rewrite it as its last ``keep`` verdicts, atomically; returns the bytes it had before. OSError: it stays
        as it was."""
        kept, _ = self.after(self.stream, self.seq - self.keep, self.keep)
        before = self.rewrite(kept)
        self.first = kept[0].seq if kept else 0
        self.compactions += 1
        return before
