"""The ``since`` of a query, as people and agents write it: a duration back from now, or a time."""
from __future__ import annotations

import re
from datetime import datetime, timezone

DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DAY_NS = 86400 * 10**9


def duration_s(text: str) -> float | None:
    """A duration (90s, 10m, 2h, 1d) in seconds; None when the text is not one."""
    found = DURATION.match(text.strip())
    return float(found[1]) * UNIT_S[found[2]] if found else None


def since_ns(text: str, now_ns: int, naive_is_local: bool = False) -> int:
    """A ``since`` parameter as epoch ns: a duration back from now (90s, 10m, 2h, 1d), today or yesterday (from
    midnight UTC), or an ISO time (one without a zone is UTC, or local time for a person at a terminal). ValueError
    says what was expected."""
    if (seconds := duration_s(text)) is not None:
        return now_ns - int(seconds * 1e9)
    if text.strip().lower() in ("today", "yesterday"):  # from midnight UTC (of the day before)
        midnight = now_ns - now_ns % DAY_NS
        return midnight - (DAY_NS if text.strip().lower() == "yesterday" else 0)
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither a duration (90s, 10m, 2h, 1d), `today`, `yesterday` nor an ISO "
                         "time (2026-11-24T09:00:00Z)") from None
    if at.tzinfo is None and not naive_is_local:
        at = at.replace(tzinfo=timezone.utc)
    return int(at.timestamp() * 1e9)
