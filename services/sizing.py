"""Sizes a market BUY fills exactly.

Polymarket signs a FOK/FAK BUY as an amount of collateral in whole cents (and the shares it buys to 4
decimals), so 5 shares at 0.527 go out as 2.63 USDC and buy 4.9905 shares. Only a size whose cost is a
whole number of cents buys exactly the shares asked: with size = k/100 and price = a/b in lowest terms,
k x a / b must be whole, so k must be a multiple of b. One size for several prices (the legs of a pair)
is a multiple of every such b.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from decimal import Decimal
from fractions import Fraction

from .venues.base import SIZE_QUANTUM

ZERO = Decimal(0)
CENTS = Decimal("0.01")  # the collateral step of a market BUY


def is_exact(size: Decimal, price: Decimal) -> bool:
    """``size`` is on the share step and ``size`` x ``price`` is a whole number of cents."""
    return not size % SIZE_QUANTUM and not (size * price) % CENTS


def exact_step(prices: Iterable[Decimal]) -> Decimal:
    """The smallest size exact at every price; the exact sizes are its multiples."""
    steps = 1
    for price in prices:
        steps = math.lcm(steps, Fraction(price).denominator)
    return SIZE_QUANTUM * steps


def exact_buy_size(size: Decimal, prices: Iterable[Decimal]) -> Decimal:
    """The largest size <= ``size``, on the share step, whose cost is whole cents at every price; 0 when none is."""
    step = exact_step(prices)
    if size < step:
        return ZERO
    return ((size // step) * step).quantize(SIZE_QUANTUM)
