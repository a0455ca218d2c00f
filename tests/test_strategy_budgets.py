"""Risk holds an agent-authored strategy (``strategy:NAME`` of the strategy store) to the budget the operator
granted it, on top of the operator's own limits; one not approved, or stopped, is refused; shipped strategies are
as before. The grant is read from the store as the operator's `polybot strategy approve` left it."""
from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path

import pytest

from services import messages as m
from services.risk.limits import Grant, Limits, over_limits
from services.risk.service import grant_of
from services.strategies.store import Budget, Store, StoreError

from .test_risk_engine import NOW, codes, engine, signal

GRANT = Grant(approved=True, sha256="ab" * 32, max_order_notional=D("10"), max_gross_exposure=D("15"),
              max_daily_loss=D("2"), max_open_orders=2, max_signals_per_minute=3, markets=frozenset({"mk"}))


def granted(grant: Grant = GRANT, **limits):
    eng = engine(**limits)
    eng.grants["strategy:mine"] = grant
    return eng


def test_a_budget_refuses_what_the_operators_limits_let_through_with_codes_that_name_the_strategys_budget() -> None:
    eng = granted()
    assert eng.check(signal(("y", "BUY", "20", "0.42"), source="strategy:mine"), NOW) == []  # 8.40 of 10
    huge = eng.check(signal(("y", "BUY", "100000", "0.42"), source="strategy:mine"), NOW)
    assert "STRATEGY_ORDER_NOTIONAL" in codes(huge) and "ORDER_NOTIONAL" in codes(huge)  # both: the lower holds
    notional, = [r for r in huge if r.code == "STRATEGY_ORDER_NOTIONAL"]
    assert (notional.limit, notional.value, notional.max_size) == (D("10"), D("42000.00"), D("23.80"))
    assert "strategy:mine's budget" in notional.message
    # Within the operator's order limit (250) but over the strategy's: its budget alone refuses.
    assert codes(eng.check(signal(("y", "BUY", "30", "0.42"), source="strategy:mine"), NOW)) == [
        "STRATEGY_ORDER_NOTIONAL"]
    # A shipped strategy's signal of that size passes, as before.
    assert eng.check(signal(("y", "BUY", "30", "0.42"), source="strategy:arbitrage"), NOW) == []


def test_exposure_open_orders_and_rate_count_the_strategys_own_orders_only() -> None:
    eng = granted()
    eng.accept(signal(("y", "BUY", "20", "0.42"), source="strategy:mine"), NOW)  # 8.40 open
    eng.accept(signal(("y", "BUY", "200", "0.42"), source="strategy:arbitrage"), NOW)  # not its own
    reasons = eng.check(signal(("n", "BUY", "15", "0.58"), source="strategy:mine"), NOW)  # 8.70 more: 17.10 > 15
    exposure, = reasons
    assert (exposure.code, exposure.value, exposure.max_size) == ("STRATEGY_GROSS_EXPOSURE", D("17.10"), D("11.37"))
    eng.accept(signal(("n", "BUY", "5", "0.58"), source="strategy:mine"), NOW)
    assert "STRATEGY_OPEN_ORDERS" in codes(eng.check(signal(("n", "SELL", "5", "0.56"), source="strategy:mine"),
                                                     NOW))
    for _ in range(3):
        eng.record(signal(("y", "SELL", "5", "0.40"), source="strategy:mine"), NOW)
    assert "STRATEGY_SIGNAL_RATE" in codes(eng.check(signal(("y", "SELL", "5", "0.40"), source="strategy:mine"), NOW))


def test_signals_on_markets_outside_its_grant_are_refused() -> None:
    eng = granted()
    eng.observe(m.MarketNew(market="other", question="?", outcomes=[m.Outcome(token_id="o", name="Yes")],
                            end_ts_ms=NOW // 10**6 + 86_400_000))
    eng.observe(m.BookSnapshot(books=[m.Book(token_id="o", market="other", bids=[m.Level(D("0.40"), D("100"))],
                                             asks=[m.Level(D("0.42"), D("100"))])]))
    refused, = eng.check(signal(("o", "BUY", "10", "0.42"), source="strategy:mine"), NOW)
    assert refused.code == "STRATEGY_MARKET" and "other" in refused.message
    assert eng.check(signal(("o", "BUY", "10", "0.42"), source="strategy:arbitrage"), NOW) == []


def test_its_days_loss_from_its_own_fills_stops_its_buys_at_the_budget() -> None:
    eng = granted()
    # Bought 20 at 0.42 with a fee of 0.10; the mid is now 0.31: 20 x (0.31 - 0.42) - 0.10 = -2.30.
    eng.observe(m.Fill(ts_ns=NOW, order_id="o1", venue_order_id="v1", trade_id="t1", token_id="y", market="mk",
                       side="BUY", price=D("0.42"), size=D("20"), fee=D("0.10"), source="strategy:mine"))
    eng.observe(m.BookSnapshot(books=[m.Book(token_id="y", market="mk", bids=[m.Level(D("0.30"), D("100"))],
                                             asks=[m.Level(D("0.32"), D("100"))])]))
    assert eng.source_day_pnl("strategy:mine", NOW) == D("-2.30")
    loss, = eng.check(signal(("y", "BUY", "5", "0.32"), source="strategy:mine"), NOW)
    assert (loss.code, loss.limit, loss.value) == ("STRATEGY_DAILY_LOSS", D("2"), D("2.30"))
    assert eng.check(signal(("y", "SELL", "5", "0.30"), source="strategy:mine"), NOW) == []  # sells still pass


def test_a_strategy_of_the_store_not_approved_or_stopped_is_refused_whatever_it_sends(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.propose("mine", "class X: pass\n", "X", {}, [], Budget(), by="mcp:agent")
    eng = engine()
    eng.grants["strategy:mine"] = grant_of(store.get("mine"))
    refused, = eng.check(signal(("y", "BUY", "5", "0.42"), source="strategy:mine"), NOW)
    assert refused.code == "STRATEGY_NOT_APPROVED" and "waiting for the operator's approval" in refused.message
    store.approve("mine", Budget.of({"max_order_notional": "3"}), by="operator")
    eng.grants["strategy:mine"] = grant = grant_of(store.get("mine"))
    assert (grant.approved, grant.max_order_notional, grant.max_open_orders) == (True, D("3"), 10)
    assert codes(eng.check(signal(("y", "BUY", "10", "0.42"), source="strategy:mine"), NOW)) == [
        "STRATEGY_ORDER_NOTIONAL"]
    store.stop("mine")
    eng.grants["strategy:mine"] = grant_of(store.get("mine"))
    stopped, = eng.check(signal(("y", "SELL", "5", "0.40"), source="strategy:mine"), NOW)
    assert stopped.code == "STRATEGY_NOT_APPROVED" and "stopped by the operator" in stopped.message


def test_a_budget_above_the_operators_limits_is_named_figure_by_figure() -> None:
    over = over_limits({"max_order_notional": D("300"), "max_open_orders": D("5")}, Limits())
    assert over == ["max_order_notional 300 is above the operator's limit 250 ([services.risk.options.limits] "
                    "max_order_notional)"]


def test_a_proposal_may_not_take_a_shipped_strategys_name(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="arbitrage is the name of a shipped strategy"):
        Store(tmp_path).propose("arbitrage", "class X: pass\n", "X", {}, [], Budget(), by="mcp:agent")
    assert Store(tmp_path).names() == []
