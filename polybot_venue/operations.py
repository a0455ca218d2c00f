"""How the real venue is operated, as clients see it: matching-engine restarts and per-signer rate limits.

Both run on the engine's clock (milliseconds), so tests drive them without sleeping.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import msgspec

# Texts of our own: the real venue's bodies are not published. The clients read the status (425) and, for
# the post-only window, the 503 body's ``code`` (py-sdk ``clients/_transport.py`` ``_detect_trading_restriction``).
RESTARTING = "the matching engine is restarting; retry shortly"
POST_ONLY = "the matching engine is in post-only mode after a restart: only post-only orders and cancels are accepted"
POST_ONLY_CODE = "post_only_mode"
RATE_LIMITED = "too many requests: rate limit exceeded"


class Bucket(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    rate: float  # tokens refilled per second
    burst: float  # the most a bucket holds (and what a new one starts with)


class RateLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Token buckets, per signer for orders and cancels (a batch costs one per item), per client IP for the rest.

    The docs' shape (api-reference/trading-rate-limits); defaults far above any test so only a test that asks
    for a small limit ever meets one.
    """
    orders: Bucket = Bucket(rate=1_000, burst=10_000)
    cancels: Bucket = Bucket(rate=1_000, burst=10_000)
    general: Bucket = Bucket(rate=10_000, burst=100_000)
    tier: str = "standard"  # sent as Poly-RateLimit-Tier


@dataclass
class _Level:
    tokens: float
    at_ms: int


@dataclass(frozen=True)
class Charge:
    """One request's account with a bucket: whether it passed, and what the Poly-RateLimit-* headers say."""

    allowed: bool
    remaining: float
    reset_s: float  # unix seconds when enough tokens for this request are there (now, if it passed)
    retry_after_s: int  # whole seconds to wait (0 if it passed)


@dataclass
class Limiter:
    limits: RateLimits = field(default_factory=RateLimits)
    _levels: dict[tuple[str, str], _Level] = field(default_factory=dict)

    def set(self, limits: RateLimits) -> None:
        self.limits = limits
        self._levels.clear()  # new limits start from full buckets

    def charge(self, bucket: str, who: str, cost: float, now_ms: int) -> Charge:
        """Take ``cost`` tokens from ``who``'s ``bucket`` ("orders", "cancels", "general") if it has them."""
        spec: Bucket = getattr(self.limits, bucket)
        level = self._levels.setdefault((bucket, who), _Level(spec.burst, now_ms))
        level.tokens = min(spec.burst, level.tokens + spec.rate * max(0, now_ms - level.at_ms) / 1000)
        level.at_ms = now_ms
        if level.tokens >= cost:
            level.tokens -= cost
            return Charge(True, level.tokens, now_ms / 1000, 0)
        wait_s = (cost - level.tokens) / spec.rate if spec.rate > 0 else math.inf
        if cost > spec.burst or not math.isfinite(wait_s):
            wait_s = 3600.0  # can never pass as one request: split it (the docs' advice)
        return Charge(False, level.tokens, now_ms / 1000 + wait_s, max(1, math.ceil(wait_s)))

    def debit(self, bucket: str, who: str, cost: float) -> None:
        """Take tokens after the fact (cancel-all pays one per order it canceled); never below zero."""
        level = self._levels.get((bucket, who))
        if level is not None:
            level.tokens = max(0.0, level.tokens - cost)


@dataclass
class Restart:
    """A matching-engine restart: ``down`` (orders and cancels answer 425), then ``post_only``, then over."""

    down_until_ms: int = 0
    post_only_until_ms: int = 0

    def start(self, now_ms: int, seconds: float, post_only_seconds: float) -> None:
        self.down_until_ms = now_ms + int(seconds * 1000)
        self.post_only_until_ms = self.down_until_ms + int(post_only_seconds * 1000)

    def phase(self, now_ms: int) -> str:
        if now_ms < self.down_until_ms:
            return "down"
        if now_ms < self.post_only_until_ms:
            return "post_only"
        return "normal"

    def seconds_left(self, now_ms: int) -> int:
        """Whole seconds until the current phase ends."""
        end = self.down_until_ms if now_ms < self.down_until_ms else self.post_only_until_ms
        return max(1, math.ceil((end - now_ms) / 1000))
