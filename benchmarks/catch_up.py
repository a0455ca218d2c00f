"""Catching up from a journal: how long a subscriber takes to page through every numbered record.

Analytics, back after a while, asks risk (or the executor) for what it missed a page at a time
(``CatchUpRequest``, at most ``CATCH_UP_PAGE`` records a reply). Each page is read from the journal file by
``Journal.after``. This writes a journal of N verdicts (risk's, with an unnumbered line between them) and pages
through all of it twice: reading each page from the nearest place the journal's index knows (what ``after`` does)
and reading each page from the file's start (the index turned off: one mark only, at the start), which is what
``after`` did before the index.

Run: ``python benchmarks/catch_up.py [--records N]``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services import journal as shared  # noqa: E402
from services import messages as m  # noqa: E402
from services.risk.journal import DecisionJournal  # noqa: E402


def write(folder: Path, records: int) -> DecisionJournal:
    journal = DecisionJournal(folder / "decisions.jsonl", keep=records * 2)
    journal.replay()
    journal.open()
    for n in range(records):
        journal.number(m.SignalRejected(signal_id=f"s{n}", source="strategy:arbitrage",
                                        reasons=[m.Reason(code="STALE_BOOK", message="the book is 2 s old")]))
    return journal


def page_through(folder: Path, records: int, every: int) -> tuple[float, int]:
    shared.Index.EVERY = every
    journal = write(folder, records)
    start, after, pages = time.perf_counter(), 0, 0
    while True:
        page, _ = journal.after(journal.stream, after, shared.CATCH_UP_PAGE)
        if not page:
            break
        after, pages = page[-1].seq, pages + 1
    took = time.perf_counter() - start
    journal.close()
    assert after == records
    return took, pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    args = parser.parse_args()
    default = shared.Index.EVERY
    with tempfile.TemporaryDirectory() as tmp:
        indexed, pages = page_through(Path(tmp) / "a", args.records, default)
        whole, _ = page_through(Path(tmp) / "b", args.records, 10**12)
    print(f"catching up on {args.records:,} verdicts in {pages} pages of {shared.CATCH_UP_PAGE}")
    print(f"  each page read from the nearest indexed place: {indexed:8.2f} s  ({indexed / pages * 1e3:7.1f} ms a page)")
    print(f"  each page read from the start (before):        {whole:8.2f} s  ({whole / pages * 1e3:7.1f} ms a page)")
    print(f"  ratio: {whole / indexed:.1f}x")


if __name__ == "__main__":
    main()
