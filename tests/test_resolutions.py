"""A market that resolves while no one listens is settled all the same: whoever holds its shares hears of it from
the venue. The desk's decision on its own (settled and published once, however often and from wherever the
resolution is heard), the adapter's reading of the CLOB's market, and a real mesh on the local venue where the
executor, or the scanner, was down when the market resolved."""
from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal as D
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from polybot_venue.server import ready_made_account
from services import messages as m
from services.executor.desk import Desk
from services.risk.engine import RiskEngine
from services.risk.limits import AgentLimits, Limits
from services.venues.base import Resolution, VenueError, VenueFill
from services.venues.polymarket import schema
from services.venues.paper import PaperVenue
from services.venues.polymarket.client import Clob, MarketReader, resolution_of

from .conftest import wait_for
from .executor_harness import order, positions_from_trades
from .trading_harness import Trading
from .venue_harness import Venue, tokens

T0 = 1_790_000_000 * 10**9
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "polymarket"  # beside the repo
SEED = 67


class Books:
    """A desk whose published messages and journal records land in lists."""

    def __init__(self, records: list[Any] = ()) -> None:
        self.out: list[m.Message] = []
        self.journal: list[Any] = list(records)
        ticks = count(1)
        self.desk = Desk(self._publish, self.journal.append, lambda: T0 + next(ticks) * 10**6)
        self.desk.restore(records)

    def _publish(self, msg: m.Message) -> None:
        self.out.append(msg)
        self.journal.append(msg)

    def settlements(self) -> list[m.MarketResolved]:
        return [msg for msg in self.out if isinstance(msg, m.MarketResolved)]

    def held(self) -> dict[str, tuple[D, D]]:
        """token -> (size, realized)."""
        return {p.token_id: (p.size, p.realized) for p in self.desk.ledger.positions()}


def bought(trade_id: str, token: str, size: str, price: str, market: str = "mk") -> VenueFill:
    return VenueFill(trade_id=trade_id, venue_order_id=f"0x{trade_id}", token_id=token, market=market, side="BUY",
                     price=D(price), size=D(size), liquidity="MAKER")


def holding_both_outcomes() -> Books:
    books = Books()
    books.desk.fill(bought("t1", "yes", "10", "0.40"))
    books.desk.fill(bought("t2", "no", "4", "0.55"))
    books.desk.fill(bought("t3", "other-yes", "3", "0.20", market="other"))
    books.out.clear()
    return books


# ---------------------------------------------------------------- the desk's decision


def test_a_resolution_the_venue_reports_settles_the_market_held_and_is_published_once() -> None:
    books = holding_both_outcomes()
    assert books.desk.unsettled() == ["mk", "other"]  # what to ask the venue about
    books.desk.venue_resolution(Resolution(market="mk"))  # not resolved yet: nothing happens
    assert books.settlements() == [] and books.desk.unsettled() == ["mk", "other"]

    books.desk.venue_resolution(Resolution(market="mk", winner="yes", outcome="Yes"))
    settled, = books.settlements()
    assert (settled.market, settled.winning_token_id, settled.winning_outcome) == ("mk", "yes", "Yes")
    # The winner pays 1 a share, the loser 0: what is left of each is realized (makers pay no fee).
    assert books.held() == {"yes": (D(0), D("10") - D("4.00")), "no": (D(0), -D("2.20")),
                            "other-yes": (D(3), D(0))}
    assert books.desk.unsettled() == ["other"]

    # The scanner's word arrives after all, and the venue says it again: nothing left to settle, nothing published.
    books.desk.resolved(m.MarketResolved(market="mk", winning_token_id="yes"))
    books.desk.venue_resolution(Resolution(market="mk", winner="yes", outcome="Yes"))
    assert books.settlements() == [settled]
    assert books.held()["yes"] == (D(0), D(6)) and books.held()["no"] == (D(0), D("-2.20"))


def test_the_scanners_resolution_is_published_as_a_settlement_and_the_venues_later_word_changes_nothing() -> None:
    books = holding_both_outcomes()
    heard = m.MarketResolved(market="mk", winning_token_id="no", winning_outcome="No", trace_id="from-scanner")
    books.desk.resolved(heard)
    settled, = books.settlements()
    assert (settled.winning_token_id, settled.trace_id, settled.seq) == ("no", "from-scanner", 0)  # numbered on sending
    assert settled.id != heard.id  # the executor's own record, not the scanner's message passed on
    assert books.held()["yes"] == (D(0), D(-4)) and books.held()["no"] == (D(0), D("4") - D("2.20"))
    books.desk.resolved(heard)  # heard twice
    books.desk.venue_resolution(Resolution(market="mk", winner="no"))
    assert books.settlements() == [settled] and books.desk.unsettled() == ["other"]


def test_a_resolution_of_a_market_not_held_is_journaled_once_and_not_published() -> None:
    books = holding_both_outcomes()
    before = len(books.journal)
    heard = m.MarketResolved(market="elsewhere", winning_token_id="x")
    books.desk.resolved(heard)
    books.desk.resolved(heard)
    assert books.out == [] and books.journal[before:] == [heard]


def test_a_restarted_desk_knows_what_it_settled_and_settles_shares_found_later_once_more() -> None:
    books = holding_both_outcomes()
    books.desk.venue_resolution(Resolution(market="mk", winner="yes", outcome="Yes"))
    again = Books(books.journal)  # the journal replayed, as at a restart
    assert again.held() == books.held() and again.desk.unsettled() == ["other"]
    again.desk.resolved(m.MarketResolved(market="mk", winning_token_id="yes"))
    assert again.settlements() == []
    # A fill from before the resolution that no one had heard of (found by reconciliation): held again, so the
    # venue is asked again, and those shares are settled (and published) in their turn.
    again.desk.fill(bought("t-late", "yes", "2", "0.50"))
    assert again.desk.unsettled() == ["mk", "other"]
    again.desk.venue_resolution(Resolution(market="mk", winner="yes"))
    late, = again.settlements()
    assert late.market == "mk" and again.held()["yes"] == (D(0), D(6) + D(1))


def test_a_settlement_published_while_risk_takes_the_executors_account_is_not_lost_under_it() -> None:
    """Risk applies the executions it saw while its AccountRequest was on its way that are newer than the answer:
    a settlement among them too, or the account's older positions would put the settled shares back."""
    engine = RiskEngine(Limits(), AgentLimits())
    account = m.AccountReply(mode="live", ts_ns=T0, positions=[
        m.Position(token_id="yes", market="mk", size=D(10), avg_price=D("0.40"))])
    settled = m.MarketResolved(ts_ns=T0 + 1, market="mk", winning_token_id="yes", seq=7, stream="s")
    engine.observe(settled)  # heard before the answer came
    engine.reconcile(account, T0 - 1, [settled])
    assert [(p.size, p.realized) for p in engine.ledger.positions()] == [(D(0), D(6))]


# ---------------------------------------------------------------- the CLOB's word on a market


def test_the_clobs_market_says_resolved_only_when_closed_with_one_winner() -> None:
    raw = json.loads((FIXTURES / "clob_market_response.json").read_text())
    first, second = (t["token_id"] for t in raw["tokens"])

    def read(closed: bool, *winners: bool) -> Resolution:
        tokens = [{**t, "winner": w} for t, w in zip(raw["tokens"], winners)]
        return resolution_of(msgspec.convert({**raw, "closed": closed, "tokens": tokens}, schema.ClobMarket))
    market = raw["condition_id"]
    assert read(False, False, False) == Resolution(market=market)  # as captured: trading
    assert read(True, False, False) == Resolution(market=market)  # trading over, outcome not known yet
    assert read(True, False, True) == Resolution(market=market, winner=second, outcome="Hanwha Life Esports")
    assert read(True, True, False).winner == first
    assert read(True, True, True) == Resolution(market=market)  # no single winner: not a settlement we can make
    assert read(False, True, False) == Resolution(market=market)  # not closed: not final


# ---------------------------------------------------------------- a real mesh on the local venue


class Mesh(Trading):
    """The local venue, scanner, executor, risk and analytics; the test sends risk's orders itself. The executor
    asks the venue about the markets it holds only at start and after reconnecting, unless a test says otherwise."""

    def __init__(self, root: Path) -> None:
        self.venue_proc = Venue(root / "venue", SEED, 100, "--still")
        super().__init__(root, self.venue_proc, {"scanner": "", "executor": "resolutions_s = 0", "risk": "",
                                                 "analytics": ""})
        self.orders = self.bus.outbound("orders")
        self.account = self.venue.client(ready_made_account(SEED).private_key)

    def buy_both(self, market: dict, tag: str) -> list[dict]:
        """A FOK BUY of each outcome at its best ask; the venue's two trades of them, once both have traded."""
        for token, size in zip(tokens(market), ("10", "6")):
            book = httpx.get(f"{self.venue.clob}/book", params={"token_id": token}).json()
            assert self.orders.send(order(f"{tag}-{token[-6:]}", 0, token, market["conditionId"], "BUY", size,
                                          book["asks"][-1]["price"], "FOK"))

        def traded() -> list[dict] | None:
            found = [t for t in self.account.get_trades() if t["asset_id"] in tokens(market)]
            return found if len(found) == 2 else None
        return wait_for(traded, what="both buys to trade")

    def account_reply(self) -> m.AccountReply | None:
        reply = self.ask("executor", m.AccountRequest())
        return reply if isinstance(reply, m.AccountReply) else None

    def risk_positions(self) -> list[m.Position]:
        reply = self.ask("risk", m.RiskRequest())
        assert isinstance(reply, m.RiskReply), reply
        return reply.positions

    def analytics(self, name: str, **params: str) -> list[dict]:
        reply = self.ask("analytics", m.QueryRequest(name=name, params=params))
        assert isinstance(reply, m.QueryReply), reply
        return [dict(zip(reply.columns, row)) for row in reply.rows]


def settled_figures(trades: list[dict], winner: str, fees: dict[str, D]) -> dict[str, tuple[D, D]]:
    """token -> (0 shares, realized) as the venue pays it: 1 a winning share, 0 a losing one, less what the shares
    cost (the venue's trades) and the fees paid on them."""
    return {token: (D(0), (size if token == winner else D(0)) - cost - fees[token])
            for token, (size, cost) in positions_from_trades(trades).items()}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Iterator[Mesh]:
    mesh = Mesh(Path(os.path.realpath(tmp_path_factory.mktemp("resolutions"))))
    try:
        mesh.start_desk(mesh.orders)
        yield mesh
    finally:
        mesh.close()
        mesh.venue.stop()


def executor_fees(mesh: Mesh, market: str) -> dict[str, D]:
    """The fees the executor counted on its fills in ``market`` (taker fees, by the market's schedule), once it has
    counted both."""
    def counted() -> dict[str, D] | None:
        reply = mesh.account_reply()
        fees = {p.token_id: p.fees for p in reply.positions if p.market == market} if reply else {}
        return fees if len(fees) == 2 else None
    return wait_for(counted, what="the executor to count both fills")


def check_everyone_settled(mesh: Mesh, market: str, expected: dict[str, tuple[D, D]]) -> None:
    def executor() -> dict[str, tuple[D, D]] | None:
        reply = mesh.account_reply()
        return reply and {p.token_id: (p.size, p.realized) for p in reply.positions if p.market == market}
    wait_for(lambda: executor() == expected, what="the executor to settle the market")

    def risk() -> dict[str, tuple[D, D]]:
        return {p.token_id: (p.size, p.realized) for p in mesh.risk_positions() if p.market == market}
    wait_for(lambda: risk() == expected, what="risk to settle the market")

    def analytics() -> dict[str, tuple[D, D]]:
        return {r["token_id"]: (D(r["size"]), D(r["realized"]))
                for r in mesh.analytics("positions", all="true", market=market)}
    wait_for(lambda: analytics() == expected, what="analytics to settle the market")
    pnl, = [r for r in mesh.analytics("pnl", by="market") if r["market"] == market]
    assert (D(pnl["realized"]), D(pnl["unrealized"]), D(pnl["open_cost"])) == (
        sum(r for _, r in expected.values()), D(0), D(0))
    assert [r["market"] for r in mesh.analytics("positions", market=market)] == []  # nothing held any more
    # The settlement is the executor's record, numbered like the others and recorded once.
    recorded = mesh.ask("analytics", m.QueryRequest(
        sql=f"SELECT count(*), min(seq) > 0 FROM executions WHERE kind = 'MarketResolved' AND market = '{market}'"))
    assert isinstance(recorded, m.QueryReply) and recorded.rows == [[1, True]]


def holding_a_market(mesh: Mesh, tag: str) -> tuple[str, tuple[str, str], list[dict], dict[str, D]]:
    """Shares of both outcomes of an untouched market, bought and counted by the executor: the market, its (yes, no)
    tokens, the venue's trades of them, and the fees the executor counted on them."""
    market = mesh.venue.market()
    trades = mesh.buy_both(market, tag)
    return market["conditionId"], tokens(market), trades, executor_fees(mesh, market["conditionId"])


@contextmanager
def scanner_down(mesh: Mesh) -> Iterator[None]:
    """No one hears the market channel announce anything meanwhile."""
    mesh.stop("scanner", kill=True)
    try:
        yield
    finally:
        mesh.start("scanner")
        mesh.wait_ready("scanner")


def test_a_market_resolved_while_the_executor_was_down_is_settled_when_it_starts(mesh: Mesh) -> None:
    market, (yes, no), trades, fees = holding_a_market(mesh, "down")
    mesh.stop("executor", kill=True)
    mesh.venue.admin("resolve", market=market, winner=yes)
    mesh.start("executor")
    # Its first answer, once it has reconciled at start, has the market settled already.
    first = wait_for(mesh.account_reply, what="the executor to answer")
    expected = settled_figures(trades, yes, fees)
    assert {p.token_id: (p.size, p.realized) for p in first.positions if p.token_id in (yes, no)} == expected
    check_everyone_settled(mesh, market, expected)


def test_a_market_resolved_while_the_scanner_was_down_is_settled_when_the_executor_reconnects(mesh: Mesh) -> None:
    market, (_, no), trades, fees = holding_a_market(mesh, "blind")
    with scanner_down(mesh):
        mesh.venue.admin("resolve", market=market, winner=no)
        connects = mesh.detail("executor")["user_connects"]
        mesh.venue.admin("drop-connections")
        wait_for(lambda: mesh.detail("executor").get("user_connects", connects) != connects,
                 what="the executor to reconnect")
        check_everyone_settled(mesh, market, settled_figures(trades, no, fees))


def test_a_market_resolved_unannounced_is_settled_at_the_executors_next_look(mesh: Mesh) -> None:
    """No restart, no reconnection: the executor asks about the markets it holds every ``resolutions_s``."""
    mesh.stop("executor")
    mesh.start("executor", POLYBOT_SERVICES__EXECUTOR__OPTIONS__RESOLUTIONS_S="0.5")
    mesh.wait_ready("executor")
    wait_for(lambda: mesh.orders.socket.pipes, what="the orders socket to connect")
    market, (yes, _), trades, fees = holding_a_market(mesh, "unannounced")
    with scanner_down(mesh):
        mesh.venue.admin("resolve", market=market, winner=yes)
        check_everyone_settled(mesh, market, settled_figures(trades, yes, fees))


def test_the_local_venue_describes_a_resolved_market_as_the_clob_does(mesh: Mesh) -> None:
    market = mesh.venue.market()
    yes, no = tokens(market)
    clob = Clob(mesh.venue.clob, 137, ready_made_account(SEED).private_key)
    assert clob.resolution(market["conditionId"]) == Resolution(market=market["conditionId"])
    mesh.venue.admin("resolve", market=market["conditionId"], winner="No")
    raw = mesh.account.get_market(market["conditionId"])  # py-clob-client-v2's own call: GET /markets/{id}
    assert (raw["closed"], raw["accepting_orders"]) == (True, False)
    assert [(t["token_id"], t["winner"], t["price"]) for t in raw["tokens"]] == [(yes, False, 0), (no, True, 1)]
    assert clob.resolution(market["conditionId"]) == Resolution(market=market["conditionId"], winner=no,
                                                                  outcome="No")
    # Paper trading asks the venue it papers the same, with no account.
    paper = PaperVenue(lambda: T0, MarketReader(mesh.venue.clob, 137).resolution, 5.0)
    assert asyncio.run(paper.resolution(market["conditionId"])).winner == no
    with pytest.raises(VenueError) as unknown:
        asyncio.run(paper.resolution("0x" + "0" * 64))
    assert unknown.value.code == "UNKNOWN_MARKET"
