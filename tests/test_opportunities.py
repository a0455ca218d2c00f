"""Opportunities: complete sets priced against known books, fees and limits (pure; no mesh)."""
from __future__ import annotations

from decimal import ROUND_FLOOR
from decimal import Decimal as D

from services import messages as m
from services.books import Books
from services.opportunities import ZERO, quote_set, scan, set_edge
from services.sizing import exact_buy_size

BIG = D(10_000)


def market(cid: str, fee: str = "0", neg_risk_id: str = "", min_size: str = "5", accepting: bool = True,
           tick: str = "0.01") -> m.MarketNew:
    return m.MarketNew(market=cid, question=f"{cid}?", outcomes=[m.Outcome(token_id=f"{cid}-y", name="Yes"),
                                                                 m.Outcome(token_id=f"{cid}-n", name="No")],
                       fee_rate=D(fee), neg_risk=bool(neg_risk_id), neg_risk_market_id=neg_risk_id,
                       min_size=D(min_size), accepting_orders=accepting, tick_size=D(tick))


def book(token: str, asks: list[tuple[str, str]] = (), bids: list[tuple[str, str]] = ()) -> m.Book:
    return m.Book(token_id=token, market=token[:-2], asks=[m.Level(D(p), D(s)) for p, s in asks],
                  bids=[m.Level(D(p), D(s)) for p, s in bids])


def fee(shares: str, price: str, rate: str) -> D:
    """The venue's formula, written out again: shares x rate x p x (1 - p), floored to 5 dp."""
    p = D(price)
    return (D(shares) * D(rate) * p * (1 - p)).quantize(D("0.00001"), rounding=ROUND_FLOOR)


def legs_of(opp) -> list[tuple]:
    return [(leg.token_id, leg.outcome, leg.side, leg.size, leg.limit_price, leg.order_type) for leg in opp.legs]


def test_a_binary_gap_gives_its_edge_depth_fees_to_the_micro_unit_and_exact_profit() -> None:
    books = [book("a-y", asks=[("0.45", "33")]), book("a-n", asks=[("0.50", "80")])]
    opp, = scan([market("a", fee="0.07")], books, max_cost=BIG)
    assert (opp.key, opp.kind, opp.side, opp.markets, opp.questions) == ("a", "binary", "BUY", ("a",), ("a?",))
    assert opp.edge == 1 - (D("0.45") + D("0.07") * D("0.45") * D("0.55") + D("0.50") + D("0.07") * D("0.25"))
    assert opp.edge == D("0.015175") and opp.depth == 33 and opp.sets == 33
    assert opp.notional == D("31.35")
    assert opp.fees == fee("33", "0.45", "0.07") + fee("33", "0.50", "0.07") == D("0.57172") + D("0.5775")
    assert opp.profit == 33 - D("31.35") - D("1.14922") == D("0.50078")
    assert legs_of(opp) == [("a-y", "Yes", "BUY", 33, D("0.45"), "FOK"), ("a-n", "No", "BUY", 33, D("0.50"), "FOK")]
    assert opp.why == "" and opp.legs[0].to_leg() == m.Leg(token_id="a-y", market="a", side="BUY", size=D(33),
                                                           limit_price=D("0.45"), order_type="FOK")


def test_walking_the_levels_stops_where_the_marginal_set_loses_its_edge() -> None:
    books = [book("a-y", asks=[("0.40", "20"), ("0.45", "30"), ("0.55", "50")]),
             book("a-n", asks=[("0.50", "40"), ("0.52", "100")])]
    # Marginal sets: 0.40 + 0.50 for 20, 0.45 + 0.50 for 20, 0.45 + 0.52 for 10 (edge 0.020058), then 0.55 + 0.52 > 1.
    opp, = scan([market("a", fee="0.02")], books, max_cost=BIG, min_edge=D("0.01"))
    assert opp.edge == D("0.0902") and opp.depth == 50 and opp.sets == 50
    assert legs_of(opp) == [("a-y", "Yes", "BUY", 50, D("0.45"), "FOK"), ("a-n", "No", "BUY", 50, D("0.52"), "FOK")]
    assert opp.notional == 20 * D("0.40") + 30 * D("0.45") + 40 * D("0.50") + 10 * D("0.52") == D("46.7")
    assert opp.fees == (fee("20", "0.40", "0.02") + fee("30", "0.45", "0.02") + fee("40", "0.50", "0.02")
                        + fee("10", "0.52", "0.02")) == D("0.49442")
    assert opp.profit == D("2.80558")
    stricter, = scan([market("a", fee="0.02")], books, max_cost=BIG, min_edge=D("0.03"))
    assert stricter.depth == 40 and [leg.limit_price for leg in stricter.legs] == [D("0.45"), D("0.50")]


def test_a_neg_risk_event_with_every_member_gives_one_yes_set_and_a_missing_member_book_gives_none() -> None:
    members = [market(c, fee="0.04", neg_risk_id="ev") for c in ("e1", "e2", "e3")]
    books = [book(f"{c}-y", asks=[("0.30", "60")]) for c in ("e1", "e2", "e3")]
    opp, = scan(members, books, max_cost=BIG, max_sets=D(50))
    assert (opp.key, opp.kind, opp.markets) == ("ev", "neg_risk", ("e1", "e2", "e3"))
    assert opp.edge == 1 - 3 * (D("0.30") + D("0.04") * D("0.21")) and opp.depth == 60
    assert [(leg.token_id, leg.size, leg.limit_price) for leg in opp.legs] == [
        ("e1-y", 50, D("0.30")), ("e2-y", 50, D("0.30")), ("e3-y", 50, D("0.30"))]
    assert scan(members, books[:2], max_cost=BIG) == []
    assert scan(members, books, max_cost=BIG, stale={"e2"}) == []
    assert scan(members[:1], books, max_cost=BIG) == []  # one member alone is no set


def test_a_stale_closed_or_not_accepting_market_gives_none() -> None:
    books = [book("a-y", asks=[("0.40", "30")]), book("a-n", asks=[("0.40", "30")])]
    assert len(scan([market("a")], books, max_cost=BIG)) == 1
    assert scan([market("a")], books, max_cost=BIG, stale={"a"}) == []
    assert scan([market("a")], books, max_cost=BIG, closed={"a"}) == []
    assert scan([market("a", accepting=False)], books, max_cost=BIG) == []


def test_the_budget_caps_the_sets_and_the_legs_spend_within_it() -> None:
    books = [book("a-y", asks=[("0.45", "100")]), book("a-n", asks=[("0.50", "100")])]
    opp, = scan([market("a", fee="0.04")], books, max_cost=D(20))
    # 0.95 per set plus about 0.0199 fees: 20.6 sets (a multiple of 0.2, so both legs are whole cents).
    assert opp.depth == 100 and opp.sets == D("20.6")
    spent = sum(leg.size * leg.limit_price for leg in opp.legs) + opp.fees
    assert spent == D("19.57") + fee("20.6", "0.45", "0.04") + fee("20.6", "0.50", "0.04") <= 20
    assert scan([market("a", fee="0.04")], books, max_cost=BIG, max_sets=D(12))[0].sets == 12


def test_sizes_are_equal_across_legs_and_whole_cents_at_a_thousandth_tick() -> None:
    books = [book("a-y", asks=[("0.453", "1000")]), book("a-n", asks=[("0.512", "1000")])]
    opp, = scan([market("a", tick="0.001")], books, max_cost=BIG, max_sets=D(37))
    assert [leg.size for leg in opp.legs] == [D(30), D(30)]
    assert all(leg.size * leg.limit_price == (leg.size * leg.limit_price).quantize(D("0.01")) for leg in opp.legs)


def test_a_size_cut_to_whole_cents_falls_back_to_the_better_levels_when_they_hold_more() -> None:
    # 27 sets would take 0.457 (multiples of 10 only: 20); 25 sets stay at 0.45 (multiples of 0.2): 25 is larger.
    books = [book("a-y", asks=[("0.45", "25"), ("0.457", "100")]), book("a-n", asks=[("0.50", "200")])]
    opp, = scan([market("a", tick="0.001")], books, max_cost=BIG, max_sets=D(27))
    assert opp.sets == 25 and [leg.limit_price for leg in opp.legs] == [D("0.45"), D("0.50")]


def test_a_minimum_size_out_of_reach_gives_the_opportunity_with_no_legs_and_why() -> None:
    shallow = [book("a-y", asks=[("0.45", "3")]), book("a-n", asks=[("0.50", "3")])]
    opp, = scan([market("a", min_size="5")], shallow, max_cost=BIG)
    assert opp.depth == 3 and opp.legs == () and opp.sets == opp.profit == ZERO
    assert opp.why.startswith("below minimum size")
    deep = [book("a-y", asks=[("0.45", "100")]), book("a-n", asks=[("0.50", "100")])]
    poor, = scan([market("a", min_size="5")], deep, max_cost=D(3))
    assert poor.legs == () and poor.why.startswith("budget too small") and "4.75" in poor.why


def test_a_set_costing_one_or_more_after_fees_gives_nothing() -> None:
    at_par = [book("a-y", asks=[("0.50", "100")]), book("a-n", asks=[("0.50", "100")])]
    assert scan([market("a")], at_par, max_cost=BIG) == []
    fees_eat_it = [book("a-y", asks=[("0.49", "100")]), book("a-n", asks=[("0.50", "100")])]
    assert scan([market("a", fee="0.05")], fees_eat_it, max_cost=BIG) == []


def test_bids_summing_above_one_after_fees_give_a_sell_set_that_needs_the_set_held() -> None:
    books = Books()
    books.apply(m.BookSnapshot(books=[book("a-y", bids=[("0.55", "50")], asks=[("0.60", "50")]),
                                      book("a-n", bids=[("0.50", "80")], asks=[("0.52", "50")])]))
    opp, = scan([market("a", fee="0.02")], books, max_cost=BIG)
    assert opp.side == "SELL" and opp.edge == D("0.04005") and opp.depth == 50
    assert legs_of(opp) == [("a-y", "Yes", "SELL", 50, D("0.55"), "FOK"), ("a-n", "No", "SELL", 50, D("0.50"), "FOK")]
    assert opp.notional == D("52.5") and opp.fees == fee("50", "0.55", "0.02") + fee("50", "0.50", "0.02")
    assert opp.profit == D("52.5") - D("0.4975") - 50 and "held" in opp.note


def test_opportunities_come_most_profitable_first() -> None:
    books = [book("a-y", asks=[("0.45", "10")]), book("a-n", asks=[("0.50", "10")]),
             book("b-y", asks=[("0.40", "10")]), book("b-n", asks=[("0.50", "10")])]
    assert [o.key for o in scan([market("a"), market("b")], books, max_cost=BIG)] == ["b", "a"]


def test_the_set_core_prices_legs_the_way_arbitrage_does() -> None:
    quotes = [(D("0.45"), D("0.05")), (D("0.50"), D("0.05"))]
    assert set_edge("BUY", quotes) == 1 - sum(p + r * p * (1 - p) for p, r in quotes)
    assert quote_set([], "BUY", max_cost=BIG) is None


def test_exact_buy_size_is_the_largest_two_decimal_size_whole_in_cents_at_every_price() -> None:
    assert exact_buy_size(D("37"), [D("0.453"), D("0.512")]) == 30  # lcm of 1000 and 125 hundredths: 10 shares
    assert exact_buy_size(D("7.19"), [D("0.45"), D("0.50")]) == D("7.00")  # multiples of 0.2
    assert exact_buy_size(D("7.199"), [D("0.5")]) == D("7.18")
    assert exact_buy_size(D("7.199"), []) == D("7.19")
    assert exact_buy_size(D("9.99"), [D("0.001")]) == 0
    assert exact_buy_size(D("-1"), [D("0.5")]) == 0


def test_risks_per_order_notional_caps_every_legs_size_and_says_so_when_no_size_fits() -> None:
    books = [book("a-y", asks=[("0.45", "100")]), book("a-n", asks=[("0.50", "100")])]
    opp, = scan([market("a")], books, max_cost=BIG, max_leg_cost=D(10))
    assert opp.sets == 20 and all(leg.size * leg.limit_price <= 10 for leg in opp.legs)  # 20 x 0.50 = 10
    tight, = scan([market("a")], books, max_cost=BIG, max_leg_cost=D(2))
    assert tight.legs == () and tight.why == ("over the per-order limit: a leg of the minimum 5 shares at 0.50 costs "
                                              "2.5, above 2")
