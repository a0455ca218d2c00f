"""Order sizes the venue fills exactly."""
from __future__ import annotations

import math
from decimal import ROUND_FLOOR, Decimal
from fractions import Fraction

CENT_SHARES = Decimal("0.01")


def exact_buy_size(size: Decimal, prices: list[Decimal]) -> Decimal:
    """The largest size ≤ size with 2-dp shares such that size x p is whole cents for every p; 0 if none."""
    # With size = n / 100, size x p is whole cents exactly when n x p is whole, that is when n is a multiple
    # of p's denominator as a reduced fraction: n must be a multiple of the lcm of those denominators.
    step = 1
    for price in prices:
        step = math.lcm(step, Fraction(price).denominator)
    hundredths = int((size / CENT_SHARES).to_integral_value(rounding=ROUND_FLOOR))
    if hundredths <= 0:
        return Decimal(0)
    return (hundredths // step * step * CENT_SHARES).quantize(CENT_SHARES)
