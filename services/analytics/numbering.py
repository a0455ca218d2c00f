"""Which of a publisher's numbered records analytics holds, per stream: pure, no I/O.

The executor numbers what it publishes on ``executions``, risk what it publishes on ``decisions`` (``seq`` within
``stream``, the publisher's journal); analytics keeps one ``Numbering`` per publisher. Everything up to a stream's
``floor`` is recorded (or known gone from the journal); above it, the seqs recorded so far. A seq above the floor that
is not held is missing: analytics is behind, and asks the publisher for it (``CatchUpRequest``).
"""
from __future__ import annotations


class Stream:
    __slots__ = ("floor", "above", "last", "lost")

    def __init__(self, floor: int = 0) -> None:
        self.floor = floor
        self.above: set[int] = set()
        self.last = floor  # the highest seq known to exist
        self.lost = 0  # seqs given up on: the publisher no longer keeps them

    def advance(self) -> None:
        while self.floor + 1 in self.above:
            self.floor += 1
            self.above.discard(self.floor)

    @property
    def missing(self) -> int:
        return self.last - self.floor - len(self.above)


class Numbering:
    def __init__(self) -> None:
        self.streams: dict[str, Stream] = {}
        self.current = ""  # the stream last heard of (the publisher's journal now)

    def load(self, stream: str, floor: int, seqs: list[int]) -> None:
        """What the database holds of a stream: its floor and the seqs recorded above it."""
        s = self.streams[stream] = Stream(floor)
        s.above.update(n for n in seqs if n > floor)
        s.last = max([floor, *s.above])
        s.advance()

    def offer(self, stream: str, seq: int) -> bool:
        """A numbered record arrived: True when it is new (record it), False when it is held already."""
        s = self.streams.get(stream)
        if s is None:
            s = self.streams[stream] = Stream()
        self.current = stream
        if seq <= s.floor or seq in s.above:
            return False
        s.above.add(seq)
        s.last = max(s.last, seq)
        s.advance()
        return True

    def known(self, stream: str, last: int) -> None:
        """The publisher says it has numbered up to ``last``."""
        s = self.streams.setdefault(stream, Stream())
        self.current = stream
        s.last = max(s.last, last)

    def settle(self, stream: str, upto: int) -> int:
        """The publisher holds nothing more up to ``upto`` than it sent: what is still missing there is gone for good;
        returns how many."""
        s = self.streams.setdefault(stream, Stream())
        if upto <= s.floor:
            return 0
        gone = upto - s.floor - sum(1 for n in s.above if n <= upto)
        s.above = {n for n in s.above if n > upto}
        s.floor = upto
        s.last = max(s.last, upto)
        s.lost += gone
        s.advance()
        return gone

    def last(self, stream: str) -> int:
        """The highest seq of ``stream`` known to exist."""
        s = self.streams.get(stream)
        return s.last if s else 0

    def floor(self, stream: str) -> int:
        s = self.streams.get(stream)
        return s.floor if s else 0

    def floors(self) -> dict[str, int]:
        return {name: s.floor for name, s in self.streams.items()}

    @property
    def missing(self) -> int:
        return sum(s.missing for s in self.streams.values())

    @property
    def lost(self) -> int:
        return sum(s.lost for s in self.streams.values())
