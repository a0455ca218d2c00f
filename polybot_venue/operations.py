"""How the real venue is operated, as clients see it: matching-engine restarts and per-signer rate limits.

Both run on the engine's clock (milliseconds), so tests drive them without sleeping.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated

import msgspec

# The clients read the status (425) and, for the post-only window, the 503 body's ``code`` (polymarket-client
# ``clients/_transport.py`` ``_detect_trading_restriction``); the texts are the real venue's where one is on record:
# - 425: a bare "service not ready", not a JSON object: py-clob-client #273 logs PolyApiException[status_code=425,
#   error_message=service not ready], and that exception shows a JSON object as a dict. Served as text/plain, which
#   polymarket-client reads as the message (``_extract_response_error_message``).
# - 503 post-only: the CLOB OpenAPI (docs.polymarket.com api-spec/clob-openapi.yaml, POST /order, example
#   post_only_mode) gives this text with ``code`` and ``retry_after_seconds`` beside a Retry-After header.
# - 429: the docs give only the status and Retry-After (api-reference/trading-rate-limits); this text is our own.
RESTARTING = "service not ready"
POST_ONLY = "post-only mode: only post-only orders and cancels are allowed"
POST_ONLY_CODE = "post_only_mode"
RATE_LIMITED = "too many requests: rate limit exceeded"


class Bucket(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # Bounded, so NaN and infinities (which Python's JSON reader accepts) are refused with the field's name.
    rate: Annotated[float, msgspec.Meta(ge=0, le=1e9)]  # tokens refilled per second
    burst: Annotated[float, msgspec.Meta(gt=0, le=1e9)]  # the most a bucket holds (and what a new one starts with)


class RateLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Token buckets, per signer for orders and cancels (a batch costs one per item), per client IP for the rest.

    Defaults are the real venue's for a new account (the Standard tier, see TIERS). ``negative_balance``: whether
    cancel-all and cancel-market-orders, which pay one token per order canceled after the fact, may take the
    cancel bucket below zero (the docs' "Negative balance" column; polymarket-client ``rate_limit.py`` notes that
    ``remaining`` can be negative on such tiers).
    """
    orders: Bucket = Bucket(rate=40, burst=60)
    cancels: Bucket = Bucket(rate=80, burst=120)
    general: Bucket = Bucket(rate=900, burst=9_000)
    tier: str = "standard"  # sent as Poly-RateLimit-Tier and by GET /v1/user/rate-limit-tier
    negative_balance: bool = True


# The documented per-signer tiers (docs.polymarket.com api-reference/trading-rate-limits, as transcribed on 2026-08-05
# in dilettante-trading/polyoxide docs/specs/clob/trading-rate-limits.md): tier by 30-day volume -> (orders per s,
# order burst, cancels per s, cancel burst, negative balance allowed). Standard is any account below $30,000.
# The per-IP "general" bucket stands for Cloudflare's CLOB-wide limit, 9,000 requests / 10 s (api-reference/
# rate-limits), which Cloudflare meets by delaying requests, where this venue answers 429; the docs' narrower
# per-endpoint Cloudflare limits (/book 1,500 / 10 s, balance-allowance 200 / 10 s, ...) are not modelled. The
# tier names' spelling in the Poly-RateLimit-Tier header is not on record: lower case here.
TIERS: dict[str, tuple[float, float, float, float, bool]] = {
    "standard": (40, 60, 80, 120, True),       # < $30,000
    "copper": (60, 90, 120, 180, True),        # $30,000+
    "bronze": (80, 120, 160, 240, True),       # $50,000+
    "silver": (200, 300, 400, 600, True),      # $100,000+
    "gold": (400, 600, 800, 1_200, True),      # $500,000+
    "platinum": (450, 675, 900, 1_350, False),  # $2.5M+
    "diamond": (525, 787, 1_050, 1_575, False),  # $5M+
    "elite": (600, 900, 1_200, 1_800, False),  # $10M+
}


def tier_limits(name: str) -> RateLimits:
    """The documented limits of tier ``name`` (a TIERS key); KeyError for an unknown tier."""
    order_rate, order_burst, cancel_rate, cancel_burst, negative = TIERS[name]
    return RateLimits(orders=Bucket(order_rate, order_burst), cancels=Bucket(cancel_rate, cancel_burst),
                      tier=name, negative_balance=negative)


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
        """Take tokens after the fact (cancel-all pays one per order it canceled): below zero only where the tier
        allows a negative balance, so the next request waits until the bucket refills past it."""
        level = self._levels.get((bucket, who))
        if level is not None:
            level.tokens = level.tokens - cost if self.limits.negative_balance else max(0.0, level.tokens - cost)


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
