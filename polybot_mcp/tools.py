"""The tools: markets and books (scanner), signals (the signals socket and risk), risk, orders and portfolio.

Reads go through the services' control sockets; the one write path is a signal or a cancel PUSHed onto
``signals`` as source ``mcp:<agent>`` (the agent the operator configured, see ``agents``), decided by risk like
any strategy's. Every failure is a ``ToolError`` whose text says what to do next.
"""
from __future__ import annotations

import base64
import json
import math
import re
import time
import unicodedata
import weakref
from datetime import datetime, timezone
from decimal import ROUND_DOWN, Decimal
from typing import Annotated, Literal

from mcp.server.elicitation import AcceptedElicitation, ElicitationResult
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Elicit, Resolve
from mcp_types import ToolAnnotations
from pydantic import Field

from services import messages as m
from services import opportunities
from services.sizing import exact_buy_size
from services.config import service_of_kind
from services.periods import duration_s, since_ns

from .agents import AGENT, client_label, source_of
from .mesh import MeshDown, MeshLink
from .models import (Approval, CancelResult, CancelResults, FillPage, FillView, HoldingView, Hop, LegIn, LegOut,
                     LegResult, Level, MarketDetail, MarketList, MarketSummary, OpenOrderView, OpenOrders,
                     Opportunities, OpportunityView, OrderBook, Outcome, OutcomeView, Pnl, PnlRow, PositionView,
                     Positions, ReasonView, RiskView, Shares, SignalPage, SignalSummary, SignalTrace, Usdc,
                     UsageView, VenueConditionView, Verdict)

READ = ToolAnnotations(readOnlyHint=True, openWorldHint=False)
TRADE = ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=False, openWorldHint=True)
CANCEL = ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=True, openWorldHint=True)
SHARES = Decimal("0.01")
UNLIMITED = Decimal(2) ** 128  # USDC: no approval a person sets by hand comes near; the usual "max" is 2^256 - 1
SCANNER, RISK, EXECUTOR, ANALYTICS = ("services.scanner:Scanner", "services.risk:Risk",
                                      "services.executor:Executor", "services.analytics:Analytics")
CURSOR_HELP = ("cursor is not one this server gave out for this list; pass the next_cursor of the previous page, "
               "or none for the first page")


SHOWN_RATIONALE = 300  # characters of the agent's rationale shown in the approval dialog
MARKUP = re.compile(r"([\\`*_\[\]<>!|~\"])")  # inline markdown and HTML; on one line nothing else forms


def agents_words(rationale: str) -> str:
    """The agent's rationale as the approval dialog quotes it: one line (control, format and separator characters
    become spaces), markdown characters escaped, at most ``SHOWN_RATIONALE`` characters, so that it cannot pass
    for the dialog's own text (a heading, a list, a note from the system)."""
    flat = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Zs") else c for c in rationale)
    flat = " ".join(flat.split())
    cut = flat[:SHOWN_RATIONALE]
    more = f" [{len(flat) - len(cut)} more characters not shown]" if len(flat) > len(cut) else ""
    return MARKUP.sub(r"\\\1", cut) + more


def text(value: Decimal | None) -> str | None:
    return None if value is None else f"{value.normalize():f}"


def since_param(since: str) -> str:
    """A tool's ``since`` (a duration back from now or an ISO time, UTC unless it says) as epoch ns for analytics;
    empty stays empty."""
    if not since:
        return ""
    try:
        return str(since_ns(since, time.time_ns()))
    except ValueError as exc:
        raise ToolError(f"since {exc}") from None
    except OverflowError:  # a duration too long to count in seconds
        raise ToolError(f"since {short(since)!r} reaches back further than any record; give a shorter duration "
                        "(30d) or an ISO time (2026-11-24T09:00:00Z)") from None


def iso_ns(ts_ns: int) -> str:
    """An epoch-ns time as UTC ISO 8601 to the millisecond."""
    return datetime.fromtimestamp(ts_ns / 1e9, timezone.utc).isoformat(timespec="milliseconds")


def encode_key(key: str) -> str:
    """A cursor that continues after a row (its key), opaque to the client."""
    return base64.urlsafe_b64encode(json.dumps({"k": key}).encode()).decode()


def decode_key(cursor: str | None) -> str:
    if not cursor:
        return ""
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor.encode()))["k"]
        if isinstance(key, str) and key:
            return key
    except (ValueError, KeyError, TypeError):
        pass
    raise ToolError(CURSOR_HELP)


def keyset_page(reply: m.QueryReply, limit: int) -> tuple[list[dict], str | None]:
    """A page of a newest-first listing asked for with ``limit + 1`` rows, and the cursor after it (None on the
    last page): the next page continues ``before`` its last row's key."""
    found = [dict(zip(reply.columns, r)) for r in reply.rows]
    page = found[:limit]
    return page, encode_key(page[-1]["key"]) if len(found) > limit else None


def source_filter(source: str, mine: str) -> str:
    """A tool's ``source`` as analytics filters on it: `mine` is this agent's (``mine``), `all` (or empty) every
    one."""
    return mine if source == "mine" else "" if source in ("all", "") else source


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode()


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(cursor.encode()))["o"]
        if isinstance(offset, int) and offset >= 0:
            return offset
    except (ValueError, KeyError, TypeError):
        pass
    raise ToolError(CURSOR_HELP)


def find_market(reply: m.SnapshotReply, ident: str) -> m.MarketNew:
    """The market a condition id or slug names, or a ToolError saying how to find one."""
    found = next((mk for mk in reply.markets if ident in (mk.market, mk.slug)), None)
    if found is not None:
        return found
    if any(o.token_id == ident for mk in reply.markets for o in mk.outcomes):
        raise ToolError(f"{short(ident)} is an outcome's token id, not a market: pass it as `token_id`, or give the "
                        "market's condition id (0x...) or slug")
    raise ToolError(f"no market {ident!r} is followed by the scanner; find one with search_markets and pass its "
                    "`market` (condition id) or slug")


def resolve_token(reply: m.SnapshotReply, token_id: str | None, market: str | None,
                  outcome: str | None) -> tuple[str, str]:
    """(token id, market) from a token id, or from a market (condition id or slug) and an outcome name; a
    ToolError that says what to pass instead when they name nothing tradeable."""
    if token_id:
        mk = next((x for x in reply.markets if any(o.token_id == token_id for o in x.outcomes)), None)
        if mk is not None:
            return token_id, mk.market
        named = next((x for x in reply.markets if token_id in (x.market, x.slug)), None)
        if named is not None:
            names = ", ".join(o.name for o in named.outcomes)
            raise ToolError(f"{token_id} is a market, not a token: give `market` with `outcome` (one of {names}) "
                            "instead of `token_id`")
        raise ToolError(f"no market the scanner follows has a token {short(token_id)!r}; get_market lists each "
                        "outcome's token_id, or give `market` (condition id or slug) and `outcome`")
    if not (market and outcome):
        raise ToolError("name the outcome: give `token_id`, or both `market` (condition id or slug) and `outcome` "
                        "(e.g. Yes); get_market lists a market's outcomes and tokens")
    mk = find_market(reply, market)
    for o in mk.outcomes:
        if o.name.lower() == outcome.strip().lower():
            return o.token_id, mk.market
    names = ", ".join(o.name for o in mk.outcomes)
    raise ToolError(f"market {market} has no outcome {outcome!r}; its outcomes are {names}")


def expiry_s(expires: str, leg: int) -> int:
    """A leg's ``expires`` (a duration from now or an ISO time, UTC unless it says) as epoch seconds."""
    now = time.time_ns()
    if (seconds := duration_s(expires)) is not None:
        if not math.isfinite(seconds):
            raise ToolError(f"leg {leg}: expires {short(expires)!r} is further ahead than any market lasts; give a "
                            "duration such as 2h or 30d, or the ISO time it should end")
        return (now // 10**9) + math.ceil(seconds)
    try:
        at = since_ns(expires, now)
    except ValueError:
        raise ToolError(f"leg {leg}: expires is a duration from now (30m, 2h, 1d) or an ISO time "
                        f"(2026-12-31T18:00:00Z), not {expires!r}") from None
    return math.ceil(at / 10**9)


def allowance_text(allowance: Decimal | None) -> str | None:
    """An allowance for reading: a maximal approval (2^256 - 1 units) is `unlimited`."""
    if allowance is None:
        return None
    return "unlimited" if allowance >= UNLIMITED else text(allowance)


def condition_view(c: m.VenueCondition) -> VenueConditionView:
    side = f"{c.side} orders" if c.side else "orders"
    applies = f"{side} that are not post-only" if c.post_only_pass else (side if c.side else "every order")
    return VenueConditionView(code=c.code, message=c.message, until=iso_ns(c.until_ts_ns) if c.until_ts_ns else None,
                              applies_to=applies)


def notional_size(leg: LegIn) -> Decimal:
    """The shares a leg's notional buys at its limit: 2 decimals, and for a market BUY (FOK/FAK, signed as a
    whole-cent amount) the most whose cost is whole cents, so that it fills exactly that many."""
    size = (leg.notional / leg.limit_price).quantize(SHARES, rounding=ROUND_DOWN)
    return exact_buy_size(size, [leg.limit_price]) if leg.side == "BUY" and leg.order_type in ("FOK", "FAK") \
        else size


def short(ident: str) -> str:
    return ident if len(ident) <= 24 else f"{ident[:12]}…{ident[-6:]}"


class Tools:
    def __init__(self, link: MeshLink, agent: str = AGENT) -> None:
        self.link = link
        self.agent = agent
        config = link.config
        self.scanner = service_of_kind(config, SCANNER, "scanner")
        self.risk = service_of_kind(config, RISK, "risk")
        self.executor = service_of_kind(config, EXECUTOR, "executor")
        self.analytics = service_of_kind(config, ANALYTICS, "analytics")

    def source(self, ctx: Context | None) -> str:
        """This call's source, ``mcp:<agent>``, from what the operator configured (see ``source_of``)."""
        return source_of(ctx, self.agent)

    async def ask(self, service: str, request: m.Message) -> m.Message:
        try:
            return await self.link.ask(service, request)
        except MeshDown as exc:
            raise ToolError(str(exc)) from None

    async def snapshot(self, markets: list[str] | None = None) -> m.SnapshotReply:
        return await self.ask(self.scanner, m.SnapshotRequest(markets=markets or []))

    async def query(self, name: str = "", sql: str = "", max_rows: int = 1000, **params: str) -> m.QueryReply:
        return await self.ask(self.analytics, m.QueryRequest(name=name, sql=sql, max_rows=max_rows,
                                                             params={k: v for k, v in params.items() if v}))

    # ---------------------------------------------------------------- markets

    def summary(self, mk: m.MarketNew, books: dict[str, m.Book], stale: set[str], last: dict[str, str],
                tokens: bool = True) -> dict:
        """A market's fields for MarketSummary (and MarketDetail); without ``tokens`` the outcomes leave out
        their long token ids, which a leg can do without (market and outcome name it)."""
        outcomes = []
        for o in mk.outcomes:
            book = books.get(o.token_id)
            bid = book.bids[0] if book and book.bids else None
            ask = book.asks[0] if book and book.asks else None
            outcomes.append(OutcomeView(name=o.name, token_id=o.token_id if tokens else None,
                                        best_bid=text(bid.price) if bid else None,
                                        bid_size=text(bid.size) if bid else None,
                                        best_ask=text(ask.price) if ask else None,
                                        ask_size=text(ask.size) if ask else None, last_trade=last.get(o.token_id)))
        first = outcomes[0] if outcomes else None
        spread = (Decimal(first.best_ask) - Decimal(first.best_bid)) if first and first.best_bid and first.best_ask \
            else None
        end = datetime.fromtimestamp(mk.end_ts_ms / 1000, timezone.utc).isoformat() if mk.end_ts_ms else None
        return dict(market=mk.market, question=mk.question, slug=mk.slug, outcomes=outcomes, volume=text(mk.volume),
                    liquidity=text(mk.liquidity), spread=text(spread), end=end, accepting_orders=mk.accepting_orders,
                    stale=mk.market in stale, tick_size=text(mk.tick_size), min_size=text(mk.min_size),
                    fee_rate=text(mk.fee_rate), event=mk.neg_risk_market_id)

    async def questions(self, ids: list[str]) -> dict[str, str]:
        """The question of each market (condition id) or token id given, from the scanner (empty if it is down)."""
        try:
            reply = await self.snapshot()
        except ToolError:
            return {}
        out = {}
        for mk in reply.markets:
            out[mk.market] = mk.question
            out.update({o.token_id: mk.question for o in mk.outcomes})
        return {i: out[i] for i in ids if i in out}

    async def last_trades(self, tokens: list[str]) -> dict[str, str]:
        """The latest trade price per token, from analytics (empty when analytics is not running)."""
        safe = [t for t in tokens if t.isalnum()]
        if not safe:
            return {}
        listed = ", ".join(f"'{t}'" for t in safe)
        try:
            reply = await self.link.ask(self.analytics, m.QueryRequest(
                sql=f"SELECT token_id, arg_max(price, ts_ns) FROM trades WHERE token_id IN ({listed}) "
                    "GROUP BY token_id", max_rows=len(safe)))
        except MeshDown:
            return {}
        return {row[0]: text(Decimal(str(row[1]))) for row in reply.rows if row[1] is not None}

    async def market_of(self, ident: str) -> tuple[m.MarketNew, m.SnapshotReply]:
        reply = await self.snapshot([ident]) if ident.startswith("0x") else await self.snapshot()
        return find_market(reply, ident), reply

    async def token_of(self, token_id: str | None, market: str | None, outcome: str | None) -> tuple[str, str]:
        """(token id, market) for a leg or a book, from a token id or a market and an outcome name."""
        return resolve_token(await self.snapshot(), token_id, market, outcome)

    async def market_detail(self, ident: str) -> MarketDetail:
        mk, reply = await self.market_of(ident)
        books = {b.token_id: b for b in reply.books.books}
        last = await self.last_trades([o.token_id for o in mk.outcomes])
        return MarketDetail(**self.summary(mk, books, set(reply.stale), last), neg_risk=mk.neg_risk)

    async def risk_view(self, source: str, balance: bool = True) -> RiskView:
        """Risk's figures for ``source``; with ``balance`` also the account's collateral from the executor."""
        reply = await self.ask(self.risk, m.RiskRequest())
        spent = next((u.used for u in reply.usage if u.name == "agent.max_daily_notional" and u.scope == source),
                     Decimal(0))
        rate = next((u.used for u in reply.usage if u.name == "max_signals_per_minute" and u.scope == source),
                    Decimal(0))
        limits = reply.limits
        try:
            account = await self.link.ask(self.executor, m.AccountRequest()) if balance else None
        except MeshDown:
            account = None  # the risk figures stand on their own; the balance is then unknown
        balance = account if isinstance(account, m.AccountReply) and account.collateral is not None else None
        return RiskView(source=source, halted=reply.halted, halt_reason=reply.halt_reason,
                        venue_conditions=[condition_view(c) for c in reply.venue],
                        collateral=text(balance.collateral) if balance else None,
                        allowance=allowance_text(balance.allowance) if balance else None,
                        balance_at=iso_ns(balance.balance_ts_ns) if balance else None,
                        limits={k: text(v) for k, v in limits.items()},
                        usage=[UsageView(name=u.name, limit=text(u.limit), used=text(u.used), scope=u.scope)
                               for u in reply.usage],
                        agent_budget_left=text(max(limits.get("agent.max_daily_notional", Decimal(0)) - spent,
                                                   Decimal(0))),
                        agent_signals_left_this_minute=max(int(limits.get("agent.max_signals_per_minute", 0) - rate),
                                                           0),
                        open_orders=reply.open_orders, realized_pnl=text(reply.realized_pnl),
                        marked_pnl=text(reply.marked_pnl),
                        holdings=[HoldingView(token_id=h.token_id, market=h.market, size=text(h.size),
                                              selling=text(h.selling),
                                              sellable=text(max(h.size - h.selling, Decimal(0))))
                                  for h in reply.holdings if h.source == source])

    @staticmethod
    def check_order_ids(order_ids: list[str], open_orders: list[m.OpenOrder], source: str) -> None:
        """Each id an open order of ``source``, or a ToolError saying what the id is and what to pass."""
        by_id = {o.order_id: o for o in open_orders}
        for order_id in order_ids:
            order = by_id.get(order_id)
            if order is not None and order.source != source:
                raise ToolError(f"order {order_id} belongs to {order.source}, not to this client ({source}); only "
                                "its owner (or an operator halting risk) can cancel it")
            if order is None:
                of_signal = [o.order_id for o in open_orders if o.signal_id == order_id and o.source == source]
                if of_signal:
                    raise ToolError(f"{order_id} is a signal id, not an order id: pass signal_id={order_id!r} to "
                                    f"cancel its open orders ({', '.join(of_signal)})")
                raise ToolError(f"order {order_id} is not open (it filled, was canceled, or never rested); "
                                "list_open_orders shows what is")

    # ---------------------------------------------------------------- signals

    async def legs(self, legs: list[LegIn]) -> list[m.Leg]:
        if not legs:
            raise ToolError("a signal needs at least one leg: token (or market and outcome), side, size or "
                            "notional, and limit_price")
        out = []
        reply = await self.snapshot()
        for i, leg in enumerate(legs):
            token, market = resolve_token(reply, leg.token_id, leg.market, leg.outcome)
            if (leg.size is None) == (leg.notional is None):
                raise ToolError(f"leg {i}: give exactly one of `size` (shares) or `notional` (USDC)")
            size = leg.size if leg.size is not None else notional_size(leg)
            if size <= 0:
                raise ToolError(f"leg {i}: notional {leg.notional} buys no shares at {leg.limit_price}; give more")
            out.append(m.Leg(token_id=token, market=market, side=leg.side, size=size, limit_price=leg.limit_price,
                             order_type=leg.order_type, post_only=leg.post_only,
                             expires_s=expiry_s(leg.expires, i) if leg.expires else 0))
        return out

    async def question(self, legs: list[LegIn], rationale: str, ctx: Context | None) -> Elicit[Approval] | None:
        """The confirmation dialog to show before an agent's signal is sent, or None when none is due.

        Only where risk holds agent signals for a human and allows the client's dialog, the client offers one,
        and the signal passes risk's checks now (else its refusal is the answer). It is asked before the signal
        is sent: in the 2026 protocol the call is retried with the answer and this runs again, so the question is
        built from the arguments alone and comes out the same."""
        caps = ctx.client_capabilities if ctx is not None else None
        if caps is None or caps.elicitation is None or (caps.elicitation.form is None and caps.elicitation.url):
            return None
        try:
            risk = await self.link.ask(self.risk, m.RiskRequest())
            if not risk.client_approval:
                return None
            signal = m.Signal(source=self.source(ctx), legs=await self.legs(legs), rationale=rationale)
            if not isinstance(await self.link.ask(self.risk, m.PreviewRequest(signal=signal)), m.SignalAccepted):
                return None
            markets = sorted({lg.market for lg in signal.legs if lg.market})
            reply = await self.link.ask(self.scanner, m.SnapshotRequest(markets=markets))
        except MeshDown:
            return None  # the tool itself says what is down
        names = {o.token_id: f"{o.name} in \"{mk.question}\"" for mk in reply.markets for o in mk.outcomes}
        lines = "\n".join(f"- {lg.side} {text(lg.size)} shares of {names.get(lg.token_id, 'token ' + lg.token_id)} "
                          f"at {text(lg.limit_price)} or better ({lg.order_type}): up to "
                          f"{text(lg.size * lg.limit_price)} USDC" for lg in signal.legs)
        label = client_label(ctx)
        who = signal.source + (f" (its client calls itself {label})" if label and f"mcp:{label}" != signal.source
                               else "")
        why = (f"\nThe agent's own words, unchecked (not from polybot or the operator): \"{agents_words(rationale)}\""
               if rationale.strip() else "\nThe agent gave no reason.")
        return Elicit(f"Real money. {who} proposes a trade that passes every risk check:\n{lines}{why}\n"
                      "Tick approve and accept to send it now (risk checks it again); decline to refuse it.",
                      Approval)

    async def send(self, signal: m.Signal, approval: ElicitationResult[Approval], wait: str,
                   deadline: float) -> Verdict:
        """Send an agent's signal unless the human declined it in the dialog; the verdict (and with wait='fills'
        the outcome) by ``deadline``. An approval given in the dialog is forwarded to risk, which checks again."""
        link = self.link
        asked = not (isinstance(approval, AcceptedElicitation) and approval.data is None)
        approved = isinstance(approval, AcceptedElicitation) and approval.data is not None and approval.data.approve
        if asked and not approved and approval.action != "cancel":
            return self.declined(signal)
        try:
            await link.send(signal)
        except MeshDown as exc:
            raise ToolError(str(exc)) from None
        decided = await link.wait_for(lambda x: isinstance(x, m.SignalAccepted | m.SignalRejected | m.SignalPending)
                                      and x.signal_id == signal.id, max(deadline - time.monotonic(), 0))
        if approved and isinstance(decided, m.SignalPending):  # the human's answer, given in the dialog
            try:
                await link.ask(self.risk, m.ApproveRequest(signal_id=signal.id, via="client",
                                                           by=f"the user of {signal.source}, in the client"))
            except MeshDown:
                pass  # refused on the check at approval, or expired: risk publishes that verdict as well
            decided = await link.wait_for(lambda x: isinstance(x, m.SignalAccepted | m.SignalRejected)
                                          and x.signal_id == signal.id, max(deadline - time.monotonic(), 0)) \
                or decided
        verdict = self.verdict(signal, decided)
        if wait == "fills" and isinstance(decided, m.SignalAccepted):
            verdict.outcome = await self.outcome(decided, deadline)
        return verdict

    async def closing(self, token_id: str | None, market: str | None, outcome: str | None, size: Decimal | None,
                      limit_price: Decimal | None, order_type: str, source: str) -> list[LegIn]:
        """The SELL leg that closes ``source``'s holding of an outcome (all of it by default, at the best bid)."""
        reply = await self.snapshot()
        token, market_id = resolve_token(reply, token_id, market, outcome)
        held = await self.query("positions", market=market_id, source=source)
        rows = [dict(zip(held.columns, r)) for r in held.rows]
        have = next((Decimal(str(r["size"])) for r in rows if r["token_id"] == token), Decimal(0))
        if have <= 0:
            raise ToolError(f"this client ({source}) holds no shares of that outcome; get_positions with "
                            "source=mine lists what it holds")
        if size is not None and size > have:
            raise ToolError(f"this client ({source}) holds {text(have)} shares of it; give a size up to that, or "
                            "none to sell them all")
        if limit_price is None:
            book = next((b for b in reply.books.books if b.token_id == token), None)
            if book is None or not book.bids:
                raise ToolError("nobody bids for it now; give a limit_price (and order_type GTC to rest it)")
            limit_price = book.bids[0].price
        return [LegIn(token_id=token, side="SELL", size=size or have, limit_price=limit_price,
                      order_type=order_type)]

    @staticmethod
    def declined(signal: m.Signal) -> Verdict:
        legs = Tools.verdict(signal, None).legs
        return Verdict(signal_id=signal.id, status="rejected", legs=legs, reasons=[ReasonView(
            code="DECLINED", message="the human declined it in the client's confirmation dialog; nothing was sent")],
            next_step="do not propose it again unless the human asks for it")

    async def outcome(self, accepted: m.SignalAccepted, deadline: float) -> Outcome:
        """What the accepted signal's orders did, once each has its final answer or rests (or at ``deadline``)."""
        ids = {o.id for o in accepted.orders}
        multi = len(accepted.orders) > 1
        try:
            names = {o.token_id: o.name for mk in (await self.snapshot(sorted({x.market for x in accepted.orders})))
                     .markets for o in mk.outcomes}
        except ToolError:
            names = {}  # the scanner is down: the legs go unnamed, the figures stand

        def ours(x: m.Message) -> bool:
            return getattr(x, "order_id", None) in ids or (isinstance(x, m.ResidualExposure)
                                                            and x.signal_id == accepted.signal_id)
        while True:
            seen = self.link.seen(ours)
            result = settle(accepted.orders, seen, names)
            # A multi-leg signal that did not complete is done once the executor has said what it left held.
            partial = multi and any(Decimal(leg.filled) > 0 for leg in result.legs) and \
                any(leg.state != "filled" for leg in result.legs)
            left = deadline - time.monotonic()
            if (result.done and (not partial or result.residual is not None)) or left <= 0:
                return result
            known = {x.id for x in seen}
            await self.link.wait_for(lambda x: ours(x) and x.id not in known, left)

    @staticmethod
    def verdict(signal: m.Signal, decided: m.Message | None) -> Verdict:
        legs = [{"token_id": lg.token_id, "side": lg.side, "size": text(lg.size), "limit_price": text(lg.limit_price),
                 "order_type": lg.order_type, **({"post_only": "true"} if lg.post_only else {}),
                 **({"expires_s": str(lg.expires_s)} if lg.expires_s else {})} for lg in signal.legs]
        if decided is None:
            return Verdict(signal_id=signal.id, status="pending", legs=legs)
        if isinstance(decided, m.SignalPending):
            expires = datetime.fromtimestamp(decided.expires_ts_ns / 1e9, timezone.utc).isoformat()
            return Verdict(signal_id=signal.id, status="pending_approval", legs=legs, expires=expires,
                           next_step=f"a human must approve it (`polybot approve {signal.id}`) before {expires}; "
                                     "no tool can. Follow it with get_signal or list_open_orders.")
        if isinstance(decided, m.SignalAccepted):
            return Verdict(signal_id=signal.id, status="accepted", order_ids=[o.id for o in decided.orders],
                           legs=legs)
        reasons = [ReasonView(code=r.code, message=r.message, leg=r.leg, limit=text(r.limit), value=text(r.value),
                              max_size=text(r.max_size)) for r in decided.reasons]
        sizes = [r.max_size for r in decided.reasons if r.max_size is not None]
        return Verdict(signal_id=signal.id, status="rejected", reasons=reasons, legs=legs,
                       max_size=text(min(sizes)) if sizes else None)


def settle(orders: list[m.Order], seen: list[m.Message], names: dict[str, str]) -> Outcome:
    """The orders' outcome from the executions seen: fills (each trade once), kills, rejections, acks."""
    fills: dict[str, dict[str, m.Fill]] = {}
    ended: dict[str, str] = {}
    resting: set[str] = set()
    residual = None
    for x in seen:
        match x:
            case m.Fill():
                fills.setdefault(x.order_id, {}).setdefault(x.trade_id or x.id, x)
            case m.OrderRejected():
                ended[x.order_id] = f"rejected: {x.code} {x.message}".strip()
            case m.OrderCanceled():
                ended.setdefault(x.order_id, "canceled")
            case m.OrderAck() if x.status == "live":
                resting.add(x.order_id)
            case m.ResidualExposure():
                residual = x.reason + ": " + ", ".join(f"{e.side} {text(e.size)} of {short(e.token_id)} at "
                                                       f"{text(e.avg_price)}" for e in x.exposure)
    legs, paid, fees, done = [], Decimal(0), Decimal(0), True
    for o in orders:
        got = list(fills.get(o.id, {}).values())
        filled = sum((f.size for f in got), Decimal(0))
        cost = sum((f.size * f.price for f in got), Decimal(0))
        fee = sum((f.fee for f in got), Decimal(0))
        paid += cost if o.side == "BUY" else -cost
        fees += fee
        if filled >= o.size:
            state = "filled"
        elif o.id in ended:
            state = ended[o.id] if filled == 0 or ended[o.id] != "canceled" else "partial, rest canceled"
        elif o.id in resting:
            state = "resting" if filled == 0 else "partial, rest resting"
        else:
            state, done = "open", False
        legs.append(LegResult(order_id=o.id, outcome=names.get(o.token_id, ""), side=o.side, asked=text(o.size), filled=text(filled),
                              avg_price=text(cost / filled) if filled else None, fees=text(fee), state=state))
    return Outcome(done=done, legs=legs, paid=text(paid), fees=text(fees), residual=residual)


SERVED: weakref.WeakKeyDictionary[MCPServer, Tools] = weakref.WeakKeyDictionary()  # each server's tools


async def human_approval(legs: list[LegIn], rationale: str, ctx: Context) -> Elicit[Approval] | None:
    """propose_signal's resolver: the confirmation dialog due before it sends, if any."""
    return await SERVED[ctx.mcp_server].question(legs, rationale, ctx)


async def closing_legs(token_id: str | None, market: str | None, outcome: str | None, size: Decimal | None,
                       limit_price: Decimal | None, order_type: str, ctx: Context) -> list[LegIn]:
    """close_position's leg, computed once per round so that the dialog shows exactly what is sent."""
    tools = SERVED[ctx.mcp_server]
    return await tools.closing(token_id, market, outcome, size, limit_price, order_type, tools.source(ctx))


async def closing_approval(legs: Annotated[list[LegIn], Resolve(closing_legs)],
                           ctx: Context) -> Elicit[Approval] | None:
    """close_position's confirmation dialog, if one is due."""
    return await SERVED[ctx.mcp_server].question(legs, "close the position", ctx)


def register_tools(server: MCPServer, link: MeshLink, agent: str = AGENT) -> Tools:
    tools = SERVED[server] = Tools(link, agent)

    @server.tool(annotations=READ)
    async def search_markets(
        query: Annotated[str, Field(description="Words that must all appear in the question or slug; empty: all")] = "",
        status: Annotated[Literal["open", "closed", "all"], Field(
            description="open: accepting orders; closed: not (halted, resolved, ended)")] = "open",
        sort: Annotated[Literal["volume", "liquidity", "end_date", "spread"], Field(
            description="volume and liquidity: largest first; end_date: soonest first; spread: tightest first")
        ] = "volume",
        limit: Annotated[int, Field(ge=1, le=100, description="Markets per page")] = 10,
        cursor: Annotated[str | None, Field(description="next_cursor of the previous page")] = None,
    ) -> MarketList:
        """Find markets the scanner follows, with the top of each outcome's book (prices and sizes), tick, minimum
        size, fee rate and neg-risk event. Page with next_cursor. Name a market by its condition id or slug and
        an outcome by its name in a leg; get_market gives the token ids."""
        offset = decode_cursor(cursor)
        reply = await tools.snapshot()
        books = {b.token_id: b for b in reply.books.books}
        stale = set(reply.stale)
        words = query.lower().split()
        found = [mk for mk in reply.markets
                 if all(w in f"{mk.question} {mk.slug}".lower() for w in words)
                 and (status == "all" or (status == "open") == mk.accepting_orders)]
        rows = [MarketSummary(**tools.summary(mk, books, stale, {}, tokens=False)) for mk in found]
        key = {"volume": lambda r: -Decimal(r.volume), "liquidity": lambda r: -Decimal(r.liquidity),
               "end_date": lambda r: r.end or "9999",
               "spread": lambda r: Decimal(r.spread) if r.spread is not None else Decimal(2)}[sort]
        rows.sort(key=key)
        page = rows[offset:offset + limit]
        more = offset + limit < len(rows)
        return MarketList(markets=page, next_cursor=encode_cursor(offset + limit) if more else None, total=len(rows))

    @server.tool(annotations=READ)
    async def get_market(
        market: Annotated[str, Field(description="Condition id (0x...) or slug, from search_markets")],
    ) -> MarketDetail:
        """One market in full: outcomes and tokens, tick and minimum size, fee rate, end date, top of book, last
        trade."""
        return await tools.market_detail(market)

    @server.tool(annotations=READ)
    async def get_order_book(
        token_id: Annotated[str | None, Field(description="The outcome's token id; or market and outcome")] = None,
        market: Annotated[str | None, Field(description="Condition id, with outcome")] = None,
        outcome: Annotated[str | None, Field(description="Outcome name, e.g. Yes")] = None,
        depth: Annotated[int, Field(ge=1, le=100, description="Levels per side")] = 10,
    ) -> OrderBook:
        """An outcome's order book to a given depth, best prices first."""
        token, market_id = await tools.token_of(token_id, market, outcome)
        reply = await tools.snapshot([market_id] if market_id else None)
        book = next((b for b in reply.books.books if b.token_id == token), None)
        mk = next((x for x in reply.markets if any(o.token_id == token for o in x.outcomes)), None)
        if book is None or mk is None:
            raise ToolError(f"no book for token {token}; get_market lists each outcome's token_id")
        name = next(o.name for o in mk.outcomes if o.token_id == token)
        return OrderBook(token_id=token, market=mk.market, outcome=name, stale=mk.market in reply.stale,
                         bids=[Level(price=text(lv.price), size=text(lv.size)) for lv in book.bids[:depth]],
                         asks=[Level(price=text(lv.price), size=text(lv.size)) for lv in book.asks[:depth]])

    @server.tool(annotations=READ)
    async def scan_opportunities(
        side: Annotated[Literal["buy", "sell", "both"], Field(
            description="buy: sets whose asks cost less than their payout; sell: sets whose bids pay more (you "
                        "must hold the set)")] = "buy",
        min_edge: Annotated[Decimal, Field(ge=0, lt=1, description="Least USDC per set after fees")] = Decimal(0),
        max_cost: Annotated[Usdc | None, Field(description="The most to spend on one set of legs, in USDC; "
                                                           "default: your agent budget left")] = None,
        limit: Annotated[int, Field(ge=1, le=50, description="Opportunities to return")] = 5,
        ctx: Context = None,  # type: ignore[assignment]
    ) -> Opportunities:
        """Find mispriced complete sets in one call: binary markets whose YES + NO asks, and neg-risk events whose
        YES asks, cost less than the 1 a set pays after each market's taker fees (or bids that pay more). Each
        comes with its edge, depth and ready-to-send FOK legs sized to the depth and your limits, so that
        propose_signal(legs, wait="fills") trades it in one more call."""
        reply = await tools.snapshot()
        risk = await tools.risk_view(tools.source(ctx), balance=False)
        budget = Decimal(risk.agent_budget_left)
        cap = min(max_cost, budget) if max_cost is not None else budget
        per_order = Decimal(risk.limits["agent.max_order_notional"]) if "agent.max_order_notional" in risk.limits \
            else None
        found = [o for o in opportunities.scan(reply.markets, reply.books.books, max_cost=cap, min_edge=min_edge,
                                               stale=set(reply.stale), max_leg_cost=per_order)
                 if side == "both" or o.side == side.upper()]
        names = {mk.market: mk for mk in reply.markets}
        views = [OpportunityView(
            key=o.key, kind=o.kind, question=" | ".join(o.questions)[:300], side=o.side, edge=text(o.edge),
            depth=text(o.depth), sets=text(o.sets), cost=text(o.notional), fees=text(o.fees), profit=text(o.profit),
            legs=[LegOut(token_id=lg.token_id, outcome=lg.outcome, side=lg.side, size=text(lg.size),
                         limit_price=text(lg.limit_price), order_type=lg.order_type) for lg in o.legs],
            why=o.why, note=o.note) for o in found[:limit] if all(mk in names for mk in o.markets)]
        step = ("propose_signal with an opportunity's legs and wait='fills' trades it and returns the fills"
                if any(v.legs for v in views) else "nothing to trade now; scan again later or lower min_edge")
        return Opportunities(opportunities=views, scanned=len(reply.markets), max_cost=text(cap), next_step=step)

    @server.tool(annotations=READ)
    async def preview_signal(
        legs: Annotated[list[LegIn], Field(description="One or more legs; all pass risk or none does")],
        rationale: Annotated[str, Field(description="Why: recorded with the signal")] = "",
        ctx: Context = None,  # type: ignore[assignment]
    ) -> Verdict:
        """Check a signal against risk exactly as propose_signal would, sending nothing. Use it to size a trade:
        a refusal gives each reason's limit, the value seen and the largest size that would pass."""
        signal = m.Signal(source=tools.source(ctx), legs=await tools.legs(legs), rationale=rationale)
        decided = await tools.ask(tools.risk, m.PreviewRequest(signal=signal))
        return tools.verdict(signal, decided)

    @server.tool(annotations=TRADE)
    async def propose_signal(
        legs: Annotated[list[LegIn], Field(description="One or more legs; all pass risk or none does")],
        rationale: Annotated[str, Field(description="Why this trade: recorded with the signal and its verdict")],
        approval: Annotated[ElicitationResult[Approval], Resolve(human_approval)],
        wait: Annotated[Literal["verdict", "fills"], Field(
            description="verdict: answer once risk decides; fills: also wait until every order has filled, been "
                        "killed or rests, and answer with the fills, fees and any residual")] = "verdict",
        wait_s: Annotated[float, Field(ge=0, le=30, description="The longest to wait, in seconds")] = 10.0,
        ctx: Context = None,  # type: ignore[assignment]
    ) -> Verdict:
        """Send a signal to risk, the same way a strategy does; accepted signals become orders at the venue.
        Returns the verdict: accepted with order ids, or rejected with every reason and the largest size that
        would pass. With wait='fills' an accepted signal's outcome comes in the same answer (FOK/FAK: filled or
        killed at once). With live money a human approves it first: in the client's confirmation dialog where it
        has one, else it stays pending_approval until they run `polybot approve`. Follow it with get_signal."""
        deadline = time.monotonic() + wait_s
        signal = m.Signal(source=tools.source(ctx), legs=await tools.legs(legs), rationale=rationale)
        return await tools.send(signal, approval, wait, deadline)

    @server.tool(annotations=TRADE)
    async def close_position(
        legs: Annotated[list[LegIn], Resolve(closing_legs)],
        approval: Annotated[ElicitationResult[Approval], Resolve(closing_approval)],
        token_id: Annotated[str | None, Field(description="The outcome's token id; or market and outcome")] = None,
        market: Annotated[str | None, Field(description="Condition id or slug, with outcome")] = None,
        outcome: Annotated[str | None, Field(description="Outcome name, e.g. Yes")] = None,
        size: Annotated[Shares | None, Field(description="Shares to sell; default: all this client holds")] = None,
        limit_price: Annotated[Decimal | None, Field(gt=0, lt=1, description="Lowest price accepted; default: "
                                                                              "the best bid now")] = None,
        order_type: Annotated[Literal["FAK", "FOK", "GTC"], Field(
            description="FAK sells what the bids take now and keeps the rest; FOK all or nothing; GTC rests the "
                        "rest at limit_price")] = "FAK",
        wait_s: Annotated[float, Field(ge=0, le=30, description="The longest to wait for the fills")] = 10.0,
        ctx: Context = None,  # type: ignore[assignment]
    ) -> Verdict:
        """Sell what this client holds of an outcome, through risk like any signal, and answer with the fills.
        It sells only this client's own shares (get_positions with source=mine), at the best bid by default."""
        deadline = time.monotonic() + wait_s
        signal = m.Signal(source=tools.source(ctx), legs=await tools.legs(legs), rationale="close the position")
        return await tools.send(signal, approval, "fills", deadline)

    @server.tool(annotations=READ)
    async def get_signal(
        signal_id: Annotated[str, Field(description="The signal id from propose_signal (or its start)")],
    ) -> SignalTrace:
        """A signal's whole story: its hops with times (book update, signal, verdict, orders, submitted, ack,
        fills), its orders and fills, and where it stands."""
        # Three reads while analytics keeps writing: the hops come last, so they tell at least what the orders
        # and fills show (the record only grows), never less.
        orders = await tools.query("orders", signal=signal_id)
        fills = await tools.query("fills", signal=signal_id)
        trace = await tools.query("trace", signal_id=signal_id)
        if not trace.rows:
            raise ToolError(f"no signal {signal_id!r} is recorded yet; " + (
                f"{trace.incomplete()}" if trace.catching_up else
                "check the id from propose_signal, or wait a moment: analytics records within 100 ms"))
        steps = [dict(zip(trace.columns, row)) for row in trace.rows]
        hops = [Hop(at_ms=str(r["t_ms"]), hop=str(r["hop"]), actor=str(r["who"]), detail=str(r["detail"]))
                for r in steps]
        # The id in full: what was given may be its start.
        signal_id = next((str(r["ref"]) for r in steps if r["hop"] == "signal"), signal_id)
        order_rows = [{k: None if v is None else str(v) for k, v in zip(orders.columns, r)} for r in orders.rows]
        fill_rows = [{k: None if v is None else str(v) for k, v in zip(fills.columns, r)} for r in fills.rows]
        states = sorted({str(o["status"]) for o in order_rows if o.get("status")})
        verdicts = [h for h in hops if h.hop == "verdict"]
        if states:
            status = ", ".join(states)
        elif verdicts and verdicts[-1].detail.startswith("waits"):
            status = "pending approval"
        else:
            status = "rejected" if verdicts else "sent"
        return SignalTrace(signal_id=signal_id, status=status, hops=hops, orders=order_rows, fills=fill_rows,
                           incomplete=trace.incomplete() or None)

    @server.tool(annotations=READ)
    async def list_signals(
        source: Annotated[str, Field(description="`mine` (this client), `all`, strategy:NAME or mcp:CLIENT")
                          ] = "mine",
        verdict: Annotated[Literal["any", "accepted", "rejected", "pending approval"], Field(
            description="Only signals with this verdict")] = "any",
        since: Annotated[str, Field(description="Only signals after this: a duration (30m, 2h, 1d), an ISO time "
                                                "or `today`")] = "",
        limit: Annotated[int, Field(ge=1, le=100, description="Signals per page")] = 10,
        cursor: Annotated[str | None, Field(description="next_cursor of the previous page")] = None,
        ctx: Context = None,  # type: ignore[assignment]
    ) -> SignalPage:
        """Signals sent and risk's verdict on each, newest first: legs by outcome and market, the number of orders,
        and for a refusal every reason. get_signal tells one signal's whole story."""
        who = source_filter(source, tools.source(ctx))
        reply = await tools.query("signals", source=who, verdict=verdict, since=since_param(since),
                                  before=decode_key(cursor), newest_first="true", limit=str(limit + 1))
        page, next_cursor = keyset_page(reply, limit)
        return SignalPage(signals=[SignalSummary(
            signal_id=r["signal_id"], at=iso_ns(int(r["ts_ns"])), source=r["source"], verdict=r["verdict"] or "none yet",
            orders=int(r["orders"] or 0), legs=r["legs_named"], reasons=r["reasons"],
            rationale=str(r["rationale"] or "")[:160]) for r in page],
            next_cursor=next_cursor, incomplete=reply.incomplete() or None)

    @server.tool(annotations=READ)
    async def list_open_orders(
        mine_only: Annotated[bool, Field(description="Only this client's orders (the ones cancel_orders can "
                                                     "cancel)")] = True,
        ctx: Context = None,  # type: ignore[assignment]
    ) -> OpenOrders:
        """Orders resting at the venue (or in paper), as the executor knows them."""
        account = await tools.ask(tools.executor, m.AccountRequest())
        source = tools.source(ctx)
        return OpenOrders(mode=account.mode, orders=[
            OpenOrderView(order_id=o.order_id, signal_id=o.signal_id, source=o.source, token_id=o.token_id,
                          market=o.market, side=o.side, price=text(o.price), size=text(o.size),
                          filled=text(o.filled), status=o.status, order_type=o.order_type)
            for o in account.orders if not mine_only or o.source == source])

    @server.tool(annotations=CANCEL)
    async def cancel_orders(
        order_ids: Annotated[list[str], Field(description="Client order ids (from propose_signal or "
                                                          "list_open_orders)")] = [],  # noqa: B006
        signal_id: Annotated[str, Field(description="Every open order of this signal (its id or its start)")] = "",
        market: Annotated[str, Field(description="Every open order in this market (condition id or slug)")] = "",
        everything: Annotated[bool, Field(description="Every open order of this client")] = False,
        wait_s: Annotated[float, Field(ge=0, le=30, description="How long to wait for the venue's answers")] = 5.0,
        ctx: Context = None,  # type: ignore[assignment]
    ) -> CancelResults:
        """Cancel this client's resting orders in one call: by ids, by signal, by market, or all of them. It goes
        through risk to the executor, like a strategy's cancel. Other sources' orders are never touched."""
        source = tools.source(ctx)
        chosen = [bool(order_ids), bool(signal_id), bool(market), everything]
        if sum(chosen) != 1:
            raise ToolError("say which orders with exactly one of: `order_ids` (a list), `signal_id`, `market`, or "
                            "`everything: true`")
        account = await tools.ask(tools.executor, m.AccountRequest())
        mine = [o for o in account.orders if o.source == source]
        if order_ids:
            tools.check_order_ids(order_ids, account.orders, source)
            targets = [o for o in mine if o.order_id in order_ids]
        elif signal_id:
            named = {o.signal_id for o in mine if o.signal_id.startswith(signal_id)}
            if signal_id not in named and len(named) > 1:
                raise ToolError(f"{signal_id!r} is the start of several signals' ids ({', '.join(sorted(named))}); "
                                "give the whole id")
            targets = [o for o in mine if o.signal_id in named]
            if not targets:
                raise ToolError(f"this client ({source}) has no open order of a signal {signal_id!r}: its orders "
                                "filled, were canceled, never rested, or the id is another's; list_open_orders "
                                "shows what is open")
        elif market:
            market_id = (await tools.market_of(market))[0].market
            targets = [o for o in mine if o.market == market_id]
        else:
            targets = mine
        if not targets:
            return CancelResults(canceled=0, results=[], detail=f"no open orders of {source} to cancel")
        ids = [o.order_id for o in targets]
        try:
            await link.send(m.Cancel(source=source, order_ids=ids, reason="canceled by the agent"))
        except MeshDown as exc:
            raise ToolError(str(exc)) from None
        deadline = time.monotonic() + wait_s
        done: dict[str, m.OrderCanceled] = {}
        for i in ids:
            got = await link.wait_for(lambda x, i=i: isinstance(x, m.OrderCanceled) and x.order_id == i,
                                      max(deadline - time.monotonic(), 0))
            if got is not None:
                done[i] = got
        results = [CancelResult(order_id=i, canceled=i in done, remaining=text(done[i].remaining) if i in done
                                else None, detail=done[i].reason if i in done else
                                "sent; no confirmation yet: check list_open_orders") for i in ids]
        return CancelResults(canceled=len(done), results=results,
                             detail=f"{len(done)} of {len(ids)} canceled" + ("" if len(done) == len(ids) else
                                                                           "; the rest may have filled first"))

    @server.tool(annotations=READ)
    async def get_risk(ctx: Context = None) -> RiskView:  # type: ignore[assignment]
        """Risk's limits and how much of each is used, this client's agent budget left, the shares it bought
        itself (what it may sell), and whether trading is halted."""
        return await tools.risk_view(tools.source(ctx))

    @server.tool(annotations=READ)
    async def get_positions(
        market: Annotated[str, Field(description="Only this market (condition id or slug); empty: all")] = "",
        source: Annotated[str, Field(description="`all` (the account), `mine` (what this client's own fills "
                                                 "hold, the most it may sell), strategy:NAME or mcp:CLIENT")] = "all",
        include_closed: Annotated[bool, Field(description="Also positions already closed (realized PnL)")] = False,
        limit: Annotated[int, Field(ge=1, le=200, description="Positions per page")] = 20,
        cursor: Annotated[str | None, Field(description="next_cursor of the previous page")] = None,
        ctx: Context = None,  # type: ignore[assignment]
    ) -> Positions:
        """Positions from the recorded fills, by market and outcome: size (of it settled on chain and pending),
        average price, mark, unrealized and realized PnL, fees, maker rebates, and in_sets: the shares held with every
        other outcome of the market, worth the 1 per set they merge into. Fills whose trade failed are left out."""
        offset = decode_cursor(cursor)
        market_id = (await tools.market_of(market))[0].market if market else ""
        who = source_filter(source, tools.source(ctx))
        reply = await tools.query("positions", market=market_id, source=who, all=str(include_closed).lower())
        found = [dict(zip(reply.columns, r)) for r in reply.rows]
        page = found[offset:offset + limit]
        return Positions(source=who or "all", positions=[PositionView(**{
            k: (None if r[k] is None else str(r[k])) for k in PositionView.model_fields}) for r in page],
            next_cursor=encode_cursor(offset + limit) if offset + limit < len(found) else None,
            incomplete=reply.incomplete() or None)

    @server.tool(annotations=READ)
    async def get_fills(
        market: Annotated[str, Field(description="Only this market (condition id or slug); empty: all")] = "",
        source: Annotated[str, Field(description="Only this source's fills: `mine` (this client), strategy:NAME or "
                                                 "mcp:CLIENT; empty: all")] = "",
        signal_id: Annotated[str, Field(description="Only this signal's fills (its id or the start of it)")] = "",
        since: Annotated[str, Field(description="Only fills after this: a duration (30m, 2h, 1d), an ISO time or "
                                                "`today`")] = "",
        limit: Annotated[int, Field(ge=1, le=200, description="Fills per page")] = 15,
        cursor: Annotated[str | None, Field(description="next_cursor of the previous page")] = None,
        ctx: Context = None,  # type: ignore[assignment]
    ) -> FillPage:
        """Fills, newest first: price, size, fee, maker or taker, and the signal and order they belong to. Page
        back in time with next_cursor."""
        market_id = (await tools.market_of(market))[0].market if market else ""
        who = source_filter(source, tools.source(ctx))
        reply = await tools.query("fills", market=market_id, source=who, signal=signal_id, since=since_param(since),
                                  before=decode_key(cursor), newest_first="true", limit=str(limit + 1))
        page, next_cursor = keyset_page(reply, limit)
        return FillPage(fills=[FillView(at=iso_ns(int(f["ts_ns"])), outcome=f["outcome"] or "",
                                        **{k: str(f[k]) for k in FillView.model_fields if k not in ("at", "outcome")})
                               for f in page],
                        next_cursor=next_cursor, incomplete=reply.incomplete() or None)

    @server.tool(annotations=READ)
    async def get_pnl(
        by: Annotated[Literal["total", "market", "source", "token"], Field(description="How to group")] = "total",
        since: Annotated[str, Field(description="Also the PnL over a period starting then: a duration (1d, 2h), "
                                                "`today` or an ISO time; empty: only the PnL to date")] = "",
        limit: Annotated[int, Field(ge=1, le=200, description="Groups per page, largest total first")] = 25,
        cursor: Annotated[str | None, Field(description="next_cursor of the previous page")] = None,
    ) -> Pnl:
        """Realized and unrealized PnL, fees, maker rebates (reported by the venue, or estimated until it reports
        them: rebates_estimated) and open cost to date, grouped (a complete set valued at its payout). With `since`,
        also the total as it stood then (marked to that time's prices) and the change over the period: period_pnl,
        period_realized, period_fees, period_rebates."""
        offset = decode_cursor(cursor)
        reply = await tools.query("pnl", by=by, since=since_param(since))
        found = [dict(zip(reply.columns, r)) for r in reply.rows]
        found.sort(key=lambda r: -abs(Decimal(str(r["total"]))))
        page = found[offset:offset + limit]
        questions = await tools.questions([str(r[by]) for r in page]) if by in ("market", "token") else {}
        return Pnl(by=by, next_cursor=encode_cursor(offset + limit) if offset + limit < len(found) else None,
                   incomplete=reply.incomplete() or None,
                   rows=[PnlRow(group=str(r[by]), question=questions.get(str(r[by]), ""), **{
                       k: (None if r.get(k) is None else str(r[k])) for k in PnlRow.model_fields
                       if k not in ("group", "question")}) for r in page])

    return tools
