"""Polymarket's rate limits, kept on our side: a request waits for its tokens rather than meet a 429.

The venue limits each signer's orders and cancels with token buckets whose sizes depend on the account's tier
(docs.polymarket.com api-reference/trading-rate-limits); a batch costs one token per item. Here each endpoint
class has a bucket of the same size: ``delay`` says how long a request must wait for its tokens, ``take`` takes
them (a bucket may owe tokens, so requests that wait queue in order). A 429 holds its class for the
``Retry-After`` the venue sent, whatever the bucket says, since the venue knows its own count best.
"""
from __future__ import annotations

from dataclasses import dataclass

# Tier -> (orders per second, order burst, cancels per second, cancel burst), by 30-day volume. Standard is any
# account below $30,000, and what a new account has. The local venue serves the same table (polybot_venue
# operations.TIERS); a test checks that they agree.
TIERS: dict[str, tuple[float, float, float, float]] = {
    "standard": (40, 60, 80, 120),
    "copper": (60, 90, 120, 180),
    "bronze": (80, 120, 160, 240),
    "silver": (200, 300, 400, 600),
    "gold": (400, 600, 800, 1_200),
    "platinum": (450, 675, 900, 1_350),
    "diamond": (525, 787, 1_050, 1_575),
    "elite": (600, 900, 1_200, 1_800),
}
# We keep under the venue's numbers: its buckets count from when a request arrives, on a clock of its own, ours from
# when it leaves, so pacing at exactly its rate would meet an occasional 429.
HEADROOM = 0.9


@dataclass
class Bucket:
    rate: float  # tokens per second, above 0
    burst: float  # the most it holds; a new bucket is full
    tokens: float | None = None  # None: not used yet (full)
    stamp: float = 0.0  # when ``tokens`` was counted
    held_until: float = 0.0  # a 429's Retry-After: nothing goes before this

    def _refill(self, now: float) -> float:
        if self.tokens is None:
            self.tokens = self.burst
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now
        return self.tokens

    def delay(self, cost: float, now: float) -> float:
        """Seconds from ``now`` until ``cost`` tokens are there (and any hold has passed)."""
        short = max(0.0, min(cost, self.burst) - self._refill(now))
        return max(short / self.rate, self.held_until - now)

    def take(self, cost: float, now: float) -> float:
        """Take ``cost`` tokens, owing what is not there yet; returns how long to wait before sending."""
        wait = self.delay(cost, now)
        self.tokens = self._refill(now) - min(cost, self.burst)
        return wait


class RateLimiter:
    """One bucket per endpoint class, sized by the account's tier; times are seconds on a monotonic clock."""

    def __init__(self, tier: str) -> None:
        if tier not in TIERS:
            raise ValueError(f"rate tier {tier!r} is not one of Polymarket's: {', '.join(TIERS)} "
                             "(GET /v1/user/rate-limit-tier tells an account's)")
        orders, order_burst, cancels, cancel_burst = TIERS[tier]
        self.tier = tier
        self.buckets = {"orders": Bucket(orders * HEADROOM, order_burst * HEADROOM),
                        "cancels": Bucket(cancels * HEADROOM, cancel_burst * HEADROOM)}
        self.holds = 0  # 429s answered with a Retry-After

    def delay(self, kind: str, cost: int, now: float) -> float:
        return self.buckets[kind].delay(cost, now)

    def take(self, kind: str, cost: int, now: float) -> float:
        return self.buckets[kind].take(cost, now)

    def hold(self, kind: str, seconds: float, now: float) -> None:
        """The venue answered 429 with this Retry-After: the class waits it out."""
        bucket = self.buckets[kind]
        bucket.held_until = max(bucket.held_until, now + seconds)
        self.holds += 1
