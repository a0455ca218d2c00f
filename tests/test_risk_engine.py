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


# ---------------------------------------------------------------- whose shares an agent sells


def bought(eng: RiskEngine, source: str, size: str, token: str = "y", side: str = "BUY") -> None:
    eng.observe(m.Fill(order_id=m.new_id(), venue_order_id="v", trade_id=m.new_id(), token_id=token, market="mk",
                       side=side, price=D("0.42"), size=D(size), source=source))  # type: ignore[arg-type]


def test_an_agent_may_sell_its_own_shares_but_not_a_strategys() -> None:
    eng = engine()
    bought(eng, "strategy:arb", "30")
    bought(eng, "mcp:claude", "8")
    assert eng.check(signal(("y", "SELL", "8", "0.40"), source="mcp:claude"), NOW) == []
    reason, = eng.check(signal(("y", "SELL", "20", "0.40"), source="mcp:claude"), NOW)
    assert (reason.code, reason.limit, reason.value, reason.max_size) == ("SOURCE_POSITION", D(8), D(20), D(8))
    assert "30 bought by strategy:arb" in reason.message and "sell_any_source = true" in reason.message
    other, = eng.check(signal(("y", "SELL", "5", "0.40"), source="mcp:other"), NOW)
    assert (other.code, other.limit, other.max_size) == ("SOURCE_POSITION", D(0), D(0))
    assert eng.check(signal(("y", "SELL", "20", "0.40"), source="strategy:exit"), NOW) == []  # strategies: not kept


def test_an_agents_open_sells_and_other_legs_count_against_what_it_may_still_sell() -> None:
    eng = engine()
    bought(eng, "mcp:claude", "10")
    order, = eng.accept(signal(("y", "SELL", "6", "0.45"), source="mcp:claude"), NOW)
    reason, = eng.check(signal(("y", "SELL", "5", "0.45"), source="mcp:claude"), NOW)
    assert (reason.code, reason.limit, reason.max_size) == ("SOURCE_POSITION", D(10), D(4))
    assert "6 of them offered by its open SELL orders already" in reason.message
    assert [(h.source, h.size, h.selling) for h in eng.holdings()] == [("mcp:claude", D(10), D(6))]
    eng.observe(m.OrderCanceled(order_id=order.id, remaining=D(6)))
    two = eng.check(signal(("y", "SELL", "6", "0.45"), ("y", "SELL", "6", "0.46"), source="mcp:claude"), NOW)
    assert [(r.code, r.max_size) for r in two] == [("SOURCE_POSITION", D(4))] * 2
    assert eng.check(signal(("y", "SELL", "10", "0.45"), source="mcp:claude"), NOW) == []


def test_an_agent_cannot_sell_shares_another_source_sold_out_of_its_holding() -> None:
    eng = engine()
    bought(eng, "mcp:claude", "10")
    bought(eng, "strategy:exit", "7", side="SELL")  # the account holds 3 now
    reason, = eng.check(signal(("y", "SELL", "5", "0.40"), source="mcp:claude"), NOW)
    assert (reason.code, reason.limit, reason.max_size) == ("SOURCE_POSITION", D(3), D(3))


def test_the_operator_option_lets_an_agent_sell_what_strategies_bought() -> None:
    eng = engine(agent_sell_any_source=True)
    bought(eng, "strategy:arb", "30")
    assert eng.check(signal(("y", "SELL", "20", "0.40"), source="mcp:claude"), NOW) == []


def test_whose_shares_they_are_survives_a_reconcile_from_the_executors_account() -> None:
    eng = engine()
    account = m.AccountReply(mode="live", ts_ns=NOW, positions=[
        m.Position(token_id="y", market="mk", size=D(38), avg_price=D("0.42"))], holdings=[
        m.SourceHolding(source="strategy:arb", token_id="y", market="mk", size=D(30)),
        m.SourceHolding(source="mcp:claude", token_id="y", market="mk", size=D(8))])
    eng.reconcile(account, NOW, [])
    reason, = eng.check(signal(("y", "SELL", "9", "0.40"), source="mcp:claude"), NOW)
    assert (reason.code, reason.limit, reason.max_size) == ("SOURCE_POSITION", D(8), D(8))
    assert eng.check(signal(("y", "SELL", "8", "0.40"), source="mcp:claude"), NOW) == []
    eng.observe(m.MarketResolved(market="mk", winning_token_id="y"))  # redeemed: nobody holds any
    assert eng.holdings() == []


# ---------------------------------------------------------------- order types: expiry, post-only, exact market buys


def leg(token: str, side: str, size: str, price: str, order_type: str = "GTC", **kw) -> m.Leg:
    return m.Leg(token_id=token, side=side, size=D(size), limit_price=D(price), order_type=order_type,  # type: ignore
                 **kw)


def test_a_gtd_leg_needs_an_expiry_a_minute_ahead_and_no_other_leg_may_carry_one() -> None:
    eng = engine()
    now_s = NOW // 10**9
    missing, = eng.check(m.Signal(source="strategy:t", legs=[leg("y", "BUY", "10", "0.40", "GTD")]), NOW)
    assert (missing.code, missing.limit, missing.value, missing.max_size) == ("BAD_EXPIRY", D(now_s + 60), D(0), D(0))
    assert "expires_s" in missing.message and str(now_s + 60) in missing.message
    early = eng.check(m.Signal(source="strategy:t", legs=[leg("y", "BUY", "10", "0.40", "GTD",
                                                              expires_s=now_s + 59)]), NOW)
    assert [r.code for r in early] == ["BAD_EXPIRY"]
    ok = m.Signal(source="strategy:t", legs=[leg("y", "BUY", "10", "0.40", "GTD", expires_s=now_s + 60)])
    assert eng.check(ok, NOW) == []
    order, = eng.accept(ok, NOW)
    assert (order.order_type, order.expires_s) == ("GTD", now_s + 60)
    gtc, = eng.check(m.Signal(source="strategy:t", legs=[leg("y", "BUY", "10", "0.40", expires_s=now_s + 600)]),
                     NOW)
    assert (gtc.code, gtc.limit, gtc.value) == ("BAD_EXPIRY", D(0), D(now_s + 600)) and "GTD" in gtc.message


def test_post_only_is_refused_on_a_fok_or_fak_leg_and_passes_on_a_resting_one() -> None:
    eng = engine()
    for order_type in ("FOK", "FAK"):
        reason, = eng.check(m.Signal(source="strategy:t", legs=[
            leg("y", "BUY", "10", "0.42", order_type, post_only=True)]), NOW)
        assert (reason.code, reason.max_size) == ("POST_ONLY", D(0)) and "GTC" in reason.message
    assert eng.check(m.Signal(source="strategy:t", legs=[leg("y", "BUY", "10", "0.40", post_only=True)]), NOW) == []


def test_a_market_buy_whose_cost_is_not_whole_cents_is_refused_with_the_largest_exact_size() -> None:
    eng = engine()
    eng.observe(m.MarketNew(market="fine", question="?", tick_size=D("0.001"), outcomes=[
        m.Outcome(token_id="fy", name="Yes"), m.Outcome(token_id="fn", name="No")]))
    eng.observe(m.BookSnapshot(books=[
        m.Book(token_id="fy", market="fine", bids=[m.Level(D("0.525"), D(100))], asks=[m.Level(D("0.527"), D(100))]),
        m.Book(token_id="fn", market="fine", bids=[m.Level(D("0.473"), D(100))], asks=[m.Level(D("0.475"), D(100))])]))
    one, = eng.check(m.Signal(source="strategy:t", legs=[leg("fy", "BUY", "15", "0.527", "FOK")]), NOW)
    assert (one.code, one.limit, one.value, one.max_size) == ("INEXACT_BUY", D("0.01"), D("7.905"), D(10))
    assert "multiples of 10, the nearest 10" in one.message
    above, = eng.check(m.Signal(source="strategy:t", legs=[leg("fy", "BUY", "17", "0.527", "FOK")]), NOW)
    assert "the nearest 20" in above.message and above.max_size == D(10)
    pair = eng.check(m.Signal(source="strategy:t", legs=[leg("fy", "BUY", "15", "0.527", "FAK"),
                                                         leg("fn", "BUY", "15", "0.475", "FAK")]), NOW)
    assert [(r.code, r.leg, r.max_size) for r in pair] == [("INEXACT_BUY", 0, D(10)), ("INEXACT_BUY", 1, D(10))]
    assert eng.check(m.Signal(source="strategy:t", legs=[leg("fy", "BUY", "10", "0.527", "FOK"),
                                                         leg("fn", "BUY", "10", "0.475", "FOK")]), NOW) == []
    assert eng.check(m.Signal(source="strategy:t", legs=[leg("fy", "BUY", "15", "0.527")]), NOW) == []  # GTC: shares


def test_a_source_quiet_for_a_minute_is_forgotten_so_names_that_come_and_go_cost_nothing() -> None:
    eng = engine()
    start = 1_790_000_000 * 10**9
    for k in range(2_000):  # any peer on signals may name itself anything
        eng.record(m.Signal(source=f"strategy:name-{k}", legs=[]), start)
    assert len([u for u in eng.usage(start) if u.name == "max_signals_per_minute"]) == 2_000
    later = start + 61 * 10**9
    eng.record(m.Signal(source="strategy:steady", legs=[]), later)
    rows = [u for u in eng.usage(later) if u.name == "max_signals_per_minute"]
    assert [(u.scope, u.used) for u in rows] == [("strategy:steady", 1)] and list(eng.rates) == ["strategy:steady"]
