"""exact_buy_size: the largest size a market BUY fills exactly, one size for every leg of a pair."""
from __future__ import annotations

import random
from decimal import Decimal as D

from services.sizing import exact_buy_size, exact_step, is_exact

TICKS = [D("0.1"), D("0.01"), D("0.005"), D("0.0025"), D("0.001"), D("0.0001")]  # the venue's tick sizes


def exact_everywhere(size: D, prices: list[D]) -> bool:
    """Checked the slow way, in whole units: size in hundredths, price in ten-thousandths, cost in cents."""
    k = int(size * 100)
    return k == size * 100 and all(k * int(p * 10_000) % 10_000 == 0 for p in prices)


def test_five_shares_at_0_527_have_no_exact_size_and_a_pair_shares_one() -> None:
    assert not is_exact(D(5), D("0.527"))  # 2.635 USDC: signed as 2.63, it would buy 4.9905 shares
    assert exact_buy_size(D(5), [D("0.527")]) == 0
    assert exact_buy_size(D(25), [D("0.527"), D("0.46")]) == D(20)
    assert exact_buy_size(D("7.77"), [D("0.525")]) == D("7.60")  # 0.525 = 21/40: steps of 0.40
    assert exact_buy_size(D(30), [D("0.46"), D("0.54")]) == D(30)
    assert exact_step([D("0.5"), D("0.25")]) == D("0.04")


def test_property_the_size_is_never_more_than_asked_exact_at_every_price_and_the_largest_such() -> None:
    rng = random.Random(13)
    for _ in range(400):
        size = D(rng.randrange(0, 6000)) / 100
        prices = []
        for _ in range(rng.choice((1, 2, 2, 3))):
            tick = rng.choice(TICKS)
            prices.append(tick * rng.randrange(1, int(1 / tick)))
        got = exact_buy_size(size, prices)
        assert 0 <= got <= size, (size, prices, got)
        if got:
            assert got >= D("0.01") and exact_everywhere(got, prices) and all(is_exact(got, p) for p in prices)
        # Maximal: no size on the 0.01 step above it and up to the size asked is exact for every price.
        k_got, k_size = int(got * 100), int(size * 100)
        units = [int(p * 10_000) for p in prices]
        assert not any(all(k * u % 10_000 == 0 for u in units) for k in range(k_got + 1, k_size + 1)), \
            (size, prices, got)
