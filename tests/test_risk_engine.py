"""Risk's checks on their own: each reason's limit, value and largest passing size, and the ledger's arithmetic."""
from __future__ import annotations

from decimal import Decimal as D

from services import messages as m
from services.ledger import Ledger, Marked, marked
from services.risk.engine import RiskEngine
from services.risk.limits import AgentLimits, Limits

NOW = 1_790_000_000 * 10**9


def engine(**limits) -> RiskEngine:
    agent = {k[6:]: v for k, v in limits.items() if k.startswith("agent_")}
    eng = RiskEngine(Limits(**{k: v for k, v in limits.items() if not k.startswith("agent_")}), AgentLimits(**agent))
    eng.observe(m.MarketNew(market="mk", question="?", outcomes=[m.Outcome(token_id="y", name="Yes"),
                                                                 m.Outcome(token_id="n", name="No")],
                            end_ts_ms=NOW // 10**6 + 86_400_000))
    eng.observe(m.BookSnapshot(books=[
        m.Book(token_id="y", market="mk", bids=[m.Level(D("0.40"), D("100"))], asks=[m.Level(D("0.42"), D("100"))]),
        m.Book(token_id="n", market="mk", bids=[m.Level(D("0.56"), D("100"))], asks=[m.Level(D("0.58"), D("100"))])]))
    return eng


def signal(*legs: tuple[str, str, str, str], source: str = "strategy:test") -> m.Signal:
    return m.Signal(source=source, legs=[m.Leg(token_id=t, side=s, size=D(q), limit_price=D(p))  # type: ignore[arg-type]
                                         for t, s, q, p in legs])


def codes(reasons: list[m.Reason]) -> list[str]:
    return [r.code for r in reasons]


def test_a_signal_within_every_limit_passes_and_its_orders_count_as_open_at_once() -> None:
    eng = engine(max_position_per_token=D("10"))
    sig = signal(("y", "BUY", "20", "0.42"))
    assert eng.check(sig, NOW) == []
    orders = eng.accept(sig, NOW)
    assert [(o.token_id, o.size, o.limit_price, o.market) for o in orders] == [("y", D(20), D("0.42"), "mk")]
    again = eng.check(signal(("y", "BUY", "5", "0.42")), NOW)
    assert codes(again) == ["POSITION_TOKEN"] and again[0].value == D("10.50") and again[0].max_size == D("3.80")


def test_order_notional_reports_the_limit_the_value_and_the_largest_size_that_passes() -> None:
    reason, = engine(max_order_notional=D("10")).check(signal(("y", "BUY", "30", "0.42")), NOW)
    assert (reason.code, reason.limit, reason.value, reason.max_size, reason.leg) == (
        "ORDER_NOTIONAL", D("10"), D("12.60"), D("23.80"), 0)


def test_a_multi_leg_signal_counts_its_other_legs_and_fails_whole() -> None:
    eng = engine(max_position_per_market=D("20"))
    reasons = eng.check(signal(("y", "BUY", "25", "0.42"), ("n", "BUY", "25", "0.58")), NOW)
    assert codes(reasons) == ["POSITION_MARKET", "POSITION_MARKET"]
    assert [(r.leg, r.value, r.max_size) for r in reasons] == [(0, D("25.00"), D("13.09")), (1, D("25.00"), D("16.37"))]
    assert eng.check(signal(("y", "BUY", "20", "0.42"), ("n", "BUY", "20", "0.58")), NOW) == []


def test_tick_min_size_and_price_distance_are_checked_against_the_market() -> None:
    eng = engine(max_price_deviation=D("0.05"))
    assert codes(eng.check(signal(("y", "BUY", "10", "0.425")), NOW)) == ["TICK_SIZE"]
    assert codes(eng.check(signal(("y", "BUY", "2", "0.42")), NOW)) == ["MIN_SIZE"]
    far, = eng.check(signal(("y", "BUY", "10", "0.50")), NOW)
    assert (far.code, far.value, far.limit) == ("PRICE_TOO_FAR", D("0.08"), D("0.05"))
    assert eng.check(signal(("y", "SELL", "10", "0.36")), NOW) == []  # 0.04 under the bid


def test_closed_stale_unknown_and_ending_markets_are_refused() -> None:
    eng = engine(min_time_to_end_s=3600)
    assert codes(eng.check(signal(("zz", "BUY", "10", "0.4")), NOW)) == ["MARKET_NOT_TRADEABLE"]
    assert codes(eng.check(signal(("y", "BUY", "10", "0.42")), NOW + 86_000 * 10**9)) == ["MARKET_NOT_TRADEABLE"]
    eng.observe(m.MarketStale(markets=["mk"]))
    assert codes(eng.check(signal(("y", "BUY", "10", "0.42")), NOW)) == ["STALE_BOOK"]
    eng.observe(m.MarketStale(markets=["mk"], stale=False))
    eng.observe(m.MarketResolved(market="mk", winning_token_id="y"))
    assert codes(eng.check(signal(("y", "BUY", "10", "0.42")), NOW)) == ["MARKET_NOT_TRADEABLE"]


def test_rate_open_orders_and_agent_budget() -> None:
    eng = engine(max_signals_per_minute=2, max_open_orders=3, agent_max_daily_notional=D("10"),
                 agent_max_signals_per_minute=1)
    for i in range(2):
        sig = signal(("y", "BUY", "5", "0.30"))
        eng.record(sig, NOW + i)
        eng.accept(sig, NOW + i)
    assert codes(eng.check(signal(("y", "BUY", "5", "0.30")), NOW + 2)) == ["SIGNAL_RATE"]
    assert eng.check(signal(("y", "BUY", "5", "0.30")), NOW + 61 * 10**9) == []
    assert codes(eng.check(signal(("y", "BUY", "5", "0.30"), ("n", "BUY", "5", "0.5")), NOW + 61 * 10**9)) == [
        "OPEN_ORDERS"]
    reasons = eng.check(signal(("y", "BUY", "30", "0.42"), source="mcp:claude"), NOW)
    assert codes(reasons) == ["AGENT_BUDGET"] and reasons[0].max_size == D("23.80")
    ok = signal(("y", "BUY", "10", "0.42"), source="mcp:claude")
    eng.record(ok, NOW)
    eng.accept(ok, NOW)
    reasons = eng.check(signal(("y", "BUY", "15", "0.42"), source="mcp:claude"), NOW + 1)
    assert codes(reasons) == ["SIGNAL_RATE", "OPEN_ORDERS", "AGENT_BUDGET"] and reasons[2].value == D("10.50")
    assert reasons[2].max_size == D("13.80")


def test_daily_loss_counts_marked_losses_and_still_lets_sells_through() -> None:
    eng = engine(max_daily_loss=D("1"))
    eng.roll(NOW)
    eng.observe(m.Fill(order_id="o", venue_order_id="v", trade_id="t", token_id="y", market="mk", side="BUY",
                       price=D("0.42"), size=D("100"), fee=D("0.5")))
    eng.observe(m.BookDelta(changes=[m.LevelChange(token_id="y", market="mk", side="BUY", price=D("0.40"),
                                                   size=D("0"))]))
    eng.observe(m.BookDelta(changes=[m.LevelChange(token_id="y", market="mk", side="BUY", price=D("0.36"),
                                                   size=D("50"))]))
    reason, = eng.check(signal(("n", "BUY", "10", "0.58")), NOW)
    assert (reason.code, reason.value) == ("DAILY_LOSS", D("3.5"))  # 100 x (0.39 mid - 0.42) - 0.5 fee
    assert eng.check(signal(("y", "SELL", "10", "0.36")), NOW) == []


def test_the_ledger_realizes_sells_fees_and_settlement_and_counts_a_fill_once() -> None:
    led = Ledger()
    fills = [("BUY", "0.40", "10", "0.01"), ("BUY", "0.50", "10", "0"), ("SELL", "0.60", "5", "0.02")]
    for i, (side, price, size, fee) in enumerate(fills):
        fill = m.Fill(order_id=f"o{i}", venue_order_id="v", trade_id=f"t{i}", token_id="y", market="mk",
                      side=side, price=D(price), size=D(size), fee=D(fee))  # type: ignore[arg-type]
        assert led.apply(fill) and not led.apply(fill)
    held = led.holdings["y"]
    assert (held.size, held.avg_price, held.realized) == (D(15), D("0.45"), D("0.75") - D("0.03"))
    led.settle("mk", winning_token_id="y")
    assert (held.size, held.realized) == (D(0), D("0.72") + D("15") - D("6.75"))


def buy(led: Ledger, token: str, market: str, size: str, price: str, fee: str = "0") -> None:
    led.apply(m.Fill(order_id=f"o{len(led.seen)}", venue_order_id="v", trade_id=f"t{len(led.seen)}", token_id=token,
                     market=market, side="BUY", price=D(price), size=D(size), fee=D(fee)))


def test_a_complete_set_is_worth_what_it_pays_and_only_the_excess_is_marked() -> None:
    led = Ledger()
    buy(led, "y", "mk", "30", "0.45")  # 13.50
    buy(led, "n", "mk", "20", "0.50")  # 10.00
    mark = {"y": D("0.30"), "n": D("0.40")}  # the pair marked at 0.70
    assert led.unrealized(mark) == 30 * D("0.30") - D("13.5") + 20 * D("0.40") - 10 == D("-6.5")
    # 20 pairs pay 20; the 10 YES beyond them at 0.30. The 20 - 6 - 8 = 6 the books miss is shared equally.
    assert led.unrealized(mark, [["y", "n"]]) == 20 + 10 * D("0.30") - D("23.5") == D("-0.5")
    assert marked(led.holdings.values(), mark, [["y", "n"]]) == {
        "y": Marked(unrealized=D("6") + D("3") + D("3") - D("13.5"), exposed=D("4.5"), in_sets=D(20)),
        "n": Marked(unrealized=D("8") + D("3") - D("10"), exposed=D(0), in_sets=D(20))}
    # No marks: each at its average cost, so the pairs' 20 x (1 - 0.95) is shared; the 10 YES beyond are at cost.
    assert {t: x.unrealized for t, x in marked(led.holdings.values(), {}, [["y", "n"]]).items()} == {
        "y": D("0.5"), "n": D("0.5")}


def test_a_neg_risk_set_across_markets_pays_1_shared_exactly_and_a_lone_outcome_is_no_set() -> None:
    led = Ledger()
    for i, price in enumerate(["0.30", "0.30", "0.30"]):  # one YES of each of three markets of one event
        buy(led, f"y{i}", f"mk{i}", "10", price)
    mark = {"y0": D("0.20"), "y1": D("0.20"), "y2": D("0.20")}
    figures = marked(led.holdings.values(), mark, [["y0", "y1", "y2"]])
    assert sum(x.unrealized for x in figures.values()) == 10 - 9 == D(1)  # exactly, though 4 / 3 is not
    assert figures["y0"].unrealized == figures["y1"].unrealized == 2 + D(4) / 3 - 3
    assert {x.exposed for x in figures.values()} == {0} and {x.in_sets for x in figures.values()} == {10}
    assert marked(led.holdings.values(), mark, [["y0"], ["y1", "y1"]]) == marked(led.holdings.values(), mark)
    assert led.unrealized(mark) == D(-3)


def test_a_complete_set_is_no_loss_for_risk_however_low_the_bids() -> None:
    eng = engine(max_daily_loss=D("1"))
    eng.roll(NOW)
    for token, price in (("y", "0.40"), ("n", "0.55")):
        eng.observe(m.Fill(order_id="o" + token, venue_order_id="v", trade_id="t" + token, token_id=token,
                           market="mk", side="BUY", price=D(price), size=D("100"), fee=D("0.1")))
    eng.observe(m.BookSnapshot(books=[  # mids 0.31 and 0.44: the pair marked at 0.75 would be a loss of 20
        m.Book(token_id="y", market="mk", bids=[m.Level(D("0.20"), D("100"))], asks=[m.Level(D("0.42"), D("100"))]),
        m.Book(token_id="n", market="mk", bids=[m.Level(D("0.30"), D("100"))], asks=[m.Level(D("0.58"), D("100"))])]))
    assert eng.marked_pnl() == 100 - 95 and eng.daily_pnl(NOW) == D("4.8")
    assert eng.check(signal(("y", "BUY", "10", "0.42")), NOW) == []
