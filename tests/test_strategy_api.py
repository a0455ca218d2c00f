"""The strategy API (polybot_strategy) and loading strategies from outside the package: a file, a module, a shipped
name; the contract checked with reasons; an approved file that changed does not run."""
from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path

import pytest

import polybot_strategy as ps
from services import messages as m
from services.runtime import StartupError
from services.strategies.arbitrage import Arbitrage
from services.strategies.host import build
from services.strategies.loading import StrategyError, contract, load, make, sha256

SPREAD = '''
from decimal import Decimal
import polybot_strategy as ps


class SpreadParams(ps.Params):
    size: Decimal = Decimal("5")
    min_spread_ticks: int = 3


class Spread(ps.Strategy):
    name = "spread"
    Params = SpreadParams

    def on_message(self, msg):
        out = []
        for token in self.track(msg):
            market = self.markets.get(self.token_market.get(token, ""))
            bid, ask = self.books.best_bid(token), self.books.best_ask(token)
            if market is None or bid is None or ask is None or not self.tradeable(market.market):
                continue
            if ask[0] - bid[0] >= market.tick_size * self.params.min_spread_ticks:
                price = ps.round_price(bid[0] + market.tick_size, market.tick_size, "BUY")
                out.append(ps.signal(self, msg, [ps.buy(token, self.params.size, price, market=market.market,
                                                        post_only=True)], "inside a wide spread"))
        return out
'''


def market() -> m.MarketNew:
    return m.MarketNew(market="0xm", question="q?", outcomes=[m.Outcome(token_id="t1", name="Yes"),
                                                              m.Outcome(token_id="t2", name="No")],
                       tick_size=D("0.01"), min_size=D("5"))


def book(bid: str, ask: str) -> m.BookSnapshot:
    return m.BookSnapshot(books=[m.Book(token_id="t1", market="0xm", bids=[m.Level(price=D(bid), size=D(100))],
                                        asks=[m.Level(price=D(ask), size=D(100))])])


def test_a_strategy_in_a_file_of_its_own_loads_runs_and_speaks_as_the_name_it_runs_under(tmp_path: Path) -> None:
    path = tmp_path / "spread.py"
    path.write_text(SPREAD)
    cls = load(f"{path}:Spread")
    assert contract(cls) == []
    strategy = make(cls, {"size": "7"}, run_as="wide")
    assert strategy.params.size == D(7) and strategy.source == "strategy:wide"
    assert strategy.on_message(market()) == []
    [signal] = strategy.on_message(book("0.40", "0.45"))
    assert signal.source == "strategy:wide" and signal.legs[0].limit_price == D("0.41")
    assert signal.legs[0].post_only and signal.legs[0].size == D(7)
    assert strategy.on_message(book("0.40", "0.42")) == []  # two ticks: not wide enough


def test_shipped_strategies_load_by_name_and_keep_their_own_source() -> None:
    assert load("arbitrage") is Arbitrage
    assert make(Arbitrage).name == "arbitrage"
    with pytest.raises(StrategyError, match="unknown strategy 'nope': the known ones are arbitrage, quoter"):
        load("nope")


@pytest.mark.parametrize("code, said", [
    ("class X:\n    pass\n", "`name` must be a class attribute"),
    ("import polybot_strategy as ps\nclass X(ps.Strategy):\n    name = 'x'\n", "`on_message(self, msg)` must be defined"),
    ("import polybot_strategy as ps\nclass X(ps.Strategy):\n    name = 'x'\n    api = 9\n"
     "    def on_message(self, msg):\n        return []\n", "written for strategy API 9"),
    ("class X:\n    name = 'Bad Name'\n    Params = dict\n    def on_message(self, msg):\n        return []\n",
     "`Params` must be a msgspec.Struct"),
])
def test_a_class_that_is_not_a_strategy_is_told_what_it_lacks(tmp_path: Path, code: str, said: str) -> None:
    path = tmp_path / "x.py"
    path.write_text(code)
    problems = contract(load(f"{path}:X"))
    assert any(said in p for p in problems), problems
    with pytest.raises(StrategyError, match="is not a strategy"):
        make(load(f"{path}:X"))


def test_a_file_that_does_not_load_says_where(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text("x = 1\ndef f(:\n")
    with pytest.raises(StrategyError, match=r"broken.py, line 2: "):
        load(f"{path}:X")
    path.write_text("x = 1\n\nraise RuntimeError('at import')\n")
    with pytest.raises(StrategyError, match=r"RuntimeError: at import \(line 3\)"):
        load(f"{path}:X")
    path.write_text(SPREAD)
    with pytest.raises(StrategyError, match="has no 'Y'; its strategy classes are Spread"):
        load(f"{path}:Y")


def test_an_approved_file_that_changed_after_approval_does_not_run(tmp_path: Path) -> None:
    path = tmp_path / "spread.py"
    path.write_text(SPREAD)
    table = {"class": f"{path}:Spread", "params": {}, "sha256": sha256(path)}
    assert build("wide", table, tmp_path).source == "strategy:wide"
    path.write_text(SPREAD.replace('Decimal("5")', 'Decimal("500")'))
    with pytest.raises(StartupError, match="not the version approved: .* changed after approval"):
        build("wide", table, tmp_path)
    ran = tmp_path / "ran"  # the changed file is refused before any of its code runs
    path.write_text(SPREAD + f"\nopen({str(ran)!r}, 'w').close()\n")
    with pytest.raises(StartupError, match="not the version approved: .* changed after approval"):
        build("wide", table, tmp_path)
    assert not ran.exists()


def test_the_rules_helpers_round_as_the_executor_does_and_say_why_an_order_would_be_refused() -> None:
    assert ps.round_price(D("0.417"), D("0.01"), "BUY") == D("0.41")
    assert ps.round_price(D("0.411"), D("0.01"), "SELL") == D("0.42")
    assert ps.round_size(D("5.129")) == D("5.12")
    mk = market()
    assert ps.why_not(mk, D("0.41"), D("5")) == ""
    assert "not a multiple of the tick" in ps.why_not(mk, D("0.415"), D("5"))
    assert "below the market's minimum" in ps.why_not(mk, D("0.41"), D("4"))
    assert "outside" in ps.why_not(mk, D("1"), D("5"))
