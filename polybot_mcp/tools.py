"""The tools: markets and books (scanner), signals (the signals socket and risk), risk, orders and portfolio.

Reads go through the services' control sockets; the one write path is a signal or a cancel PUSHed onto
``signals`` as source ``mcp:<client>``, decided by risk like any strategy's. Every failure is a ``ToolError``
whose text says what to do next.
"""
from __future__ import annotations

import base64
import json
import re
import time
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
from services.config import service_of_kind
from services.periods import since_ns

from .mesh import MeshDown, MeshLink
from .models import (Approval, CancelResult, HoldingView, Hop, LegIn, Level, MarketDetail, MarketList,
                     MarketSummary, OpenOrders, OpenOrderView, OrderBook, OutcomeView, ReasonView, RiskView, Rows,
                     SignalTrace, UsageView, Verdict)

READ = ToolAnnotations(readOnlyHint=True, openWorldHint=False)
TRADE = ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=False, openWorldHint=True)
CANCEL = ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=True, openWorldHint=True)
SHARES = Decimal("0.01")
SCANNER, RISK, EXECUTOR, ANALYTICS = ("services.scanner:Scanner", "services.risk:Risk",
                                      "services.executor:Executor", "services.analytics:Analytics")
CLIENT_NAME = re.compile(r"[^a-z0-9_.-]+")


def source_of(ctx: Context | None) -> str:
    """``mcp:<client name>`` from the client's initialize info (``mcp:agent`` when it gave none)."""
    name = ""
    try:
        params = ctx.session.client_params if ctx is not None else None
        name = params.client_info.name if params is not None and params.client_info is not None else ""
    except (AttributeError, LookupError, ValueError):
        name = ""
    return "mcp:" + (CLIENT_NAME.sub("-", name.lower()).strip("-")[:40] or "agent")


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
    raise ToolError("cursor is not one this server gave out; pass the next_cursor of the previous page, or none "
                    "for the first page")


class Tools:
    def __init__(self, link: MeshLink) -> None:
        self.link = link
        config = link.config
        self.scanner = service_of_kind(config, SCANNER, "scanner")
        self.risk = service_of_kind(config, RISK, "risk")
        self.executor = service_of_kind(config, EXECUTOR, "executor")
        self.analytics = service_of_kind(config, ANALYTICS, "analytics")

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

    def summary(self, mk: m.MarketNew, books: dict[str, m.Book], stale: set[str], last: dict[str, str]) -> dict:
        outcomes = []
        for o in mk.outcomes:
            book = books.get(o.token_id)
            bid = book.bids[0].price if book and book.bids else None
            ask = book.asks[0].price if book and book.asks else None
            outcomes.append(OutcomeView(name=o.name, token_id=o.token_id, best_bid=text(bid), best_ask=text(ask),
                                        last_trade=last.get(o.token_id)))
        first = outcomes[0] if outcomes else None
        spread = (Decimal(first.best_ask) - Decimal(first.best_bid)) if first and first.best_bid and first.best_ask \
            else None
        end = datetime.fromtimestamp(mk.end_ts_ms / 1000, timezone.utc).isoformat() if mk.end_ts_ms else None
        return dict(market=mk.market, question=mk.question, slug=mk.slug, outcomes=outcomes, volume=text(mk.volume),
                    liquidity=text(mk.liquidity), spread=text(spread), end=end, accepting_orders=mk.accepting_orders,
                    stale=mk.market in stale)

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
        found = [mk for mk in reply.markets if ident in (mk.market, mk.slug)]
        if not found:
            raise ToolError(f"no market {ident!r} is followed by the scanner; find one with search_markets and pass "
                            "its `market` (condition id) or slug")
        return found[0], reply

    async def token_of(self, token_id: str | None, market: str | None, outcome: str | None) -> tuple[str, str]:
        """(token id, market) for a leg or a book, from a token id or a market and an outcome name."""
        if token_id:
            return token_id, market or ""
        if not (market and outcome):
            raise ToolError("name the outcome: give `token_id`, or both `market` (condition id) and `outcome` "
                            "(e.g. Yes); get_market lists a market's outcomes and tokens")
        mk, _ = await self.market_of(market)
        for o in mk.outcomes:
            if o.name.lower() == outcome.lower():
                return o.token_id, mk.market
        names = ", ".join(o.name for o in mk.outcomes)
        raise ToolError(f"market {market} has no outcome {outcome!r}; its outcomes are {names}")

    async def market_detail(self, ident: str) -> MarketDetail:
        mk, reply = await self.market_of(ident)
        books = {b.token_id: b for b in reply.books.books}
        last = await self.last_trades([o.token_id for o in mk.outcomes])
        return MarketDetail(**self.summary(mk, books, set(reply.stale), last), tick_size=text(mk.tick_size),
                            min_size=text(mk.min_size), fee_rate=text(mk.fee_rate), neg_risk=mk.neg_risk,
                            event=mk.neg_risk_market_id)

    async def risk_view(self, source: str) -> RiskView:
        reply = await self.ask(self.risk, m.RiskRequest())
        spent = next((u.used for u in reply.usage if u.name == "agent.max_daily_notional" and u.scope == source),
                     Decimal(0))
        rate = next((u.used for u in reply.usage if u.name == "max_signals_per_minute" and u.scope == source),
                    Decimal(0))
        limits = reply.limits
        return RiskView(halted=reply.halted, halt_reason=reply.halt_reason,
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

    # ---------------------------------------------------------------- signals

    async def legs(self, legs: list[LegIn]) -> list[m.Leg]:
        if not legs:
            raise ToolError("a signal needs at least one leg: token (or market and outcome), side, size or "
                            "notional, and limit_price")
        out = []
        for i, leg in enumerate(legs):
            token, market = await self.token_of(leg.token_id, leg.market, leg.outcome)
            if (leg.size is None) == (leg.notional is None):
                raise ToolError(f"leg {i}: give exactly one of `size` (shares) or `notional` (USDC)")
            size = leg.size if leg.size is not None else (leg.notional / leg.limit_price).quantize(
                SHARES, rounding=ROUND_DOWN)
            if size <= 0:
                raise ToolError(f"leg {i}: notional {leg.notional} buys no shares at {leg.limit_price}; give more")
            out.append(m.Leg(token_id=token, market=market, side=leg.side, size=size, limit_price=leg.limit_price,
                             order_type=leg.order_type, post_only=leg.post_only, expires_s=leg.expires_s or 0))
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
            signal = m.Signal(source=source_of(ctx), legs=await self.legs(legs), rationale=rationale)
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
        why = f"\nThe agent's reason: {rationale}" if rationale else ""
        return Elicit(f"Real money. {signal.source} proposes a trade that passes every risk check:\n{lines}{why}\n"
                      "Tick approve and accept to send it now (risk checks it again); decline to refuse it.",
                      Approval)

    @staticmethod
    def declined(signal: m.Signal) -> Verdict:
        legs = Tools.verdict(signal, None).legs
        return Verdict(signal_id=signal.id, status="rejected", legs=legs, reasons=[ReasonView(
            code="DECLINED", message="the human declined it in the client's confirmation dialog; nothing was sent")],
            next_step="do not propose it again unless the human asks for it")

    @staticmethod
    def verdict(signal: m.Signal, decided: m.Message | None) -> Verdict:
        legs = [{"token_id": lg.token_id, "side": lg.side, "size": text(lg.size), "limit_price": text(lg.limit_price),
                 "order_type": lg.order_type} for lg in signal.legs]
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


SERVED: weakref.WeakKeyDictionary[MCPServer, Tools] = weakref.WeakKeyDictionary()  # each server's tools


async def human_approval(legs: list[LegIn], rationale: str, ctx: Context) -> Elicit[Approval] | None:
    """propose_signal's resolver: the confirmation dialog due before it sends, if any."""
    return await SERVED[ctx.mcp_server].question(legs, rationale, ctx)


def register_tools(server: MCPServer, link: MeshLink) -> Tools:
    tools = SERVED[server] = Tools(link)

    @server.tool(annotations=READ)
    async def search_markets(
        query: Annotated[str, Field(description="Words that must all appear in the question or slug; empty: all")] = "",
        status: Annotated[Literal["open", "closed", "all"], Field(
            description="open: accepting orders; closed: not (halted, resolved, ended)")] = "open",
        sort: Annotated[Literal["volume", "liquidity", "end_date", "spread"], Field(
            description="volume and liquidity: largest first; end_date: soonest first; spread: tightest first")
        ] = "volume",
        limit: Annotated[int, Field(ge=1, le=100, description="Markets per page")] = 20,
        cursor: Annotated[str | None, Field(description="next_cursor of the previous page")] = None,
    ) -> MarketList:
        """Find markets the scanner follows, with the top of each outcome's book. Page with next_cursor."""
        offset = decode_cursor(cursor)
        reply = await tools.snapshot()
        books = {b.token_id: b for b in reply.books.books}
        stale = set(reply.stale)
        words = query.lower().split()
        found = [mk for mk in reply.markets
                 if all(w in f"{mk.question} {mk.slug}".lower() for w in words)
                 and (status == "all" or (status == "open") == mk.accepting_orders)]
        rows = [MarketSummary(**tools.summary(mk, books, stale, {})) for mk in found]
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
    async def preview_signal(
        legs: Annotated[list[LegIn], Field(description="One or more legs; all pass risk or none does")],
        rationale: Annotated[str, Field(description="Why: recorded with the signal")] = "",
        ctx: Context = None,  # type: ignore[assignment]
    ) -> Verdict:
        """Check a signal against risk exactly as propose_signal would, sending nothing. Use it to size a trade:
        a refusal gives each reason's limit, the value seen and the largest size that would pass."""
        signal = m.Signal(source=source_of(ctx), legs=await tools.legs(legs), rationale=rationale)
        decided = await tools.ask(tools.risk, m.PreviewRequest(signal=signal))
        return tools.verdict(signal, decided)

    @server.tool(annotations=TRADE)
    async def propose_signal(
        legs: Annotated[list[LegIn], Field(description="One or more legs; all pass risk or none does")],
        rationale: Annotated[str, Field(description="Why this trade: recorded with the signal and its verdict")],
        approval: Annotated[ElicitationResult[Approval], Resolve(human_approval)],
        wait_s: Annotated[float, Field(ge=0, le=30, description="How long to wait for risk's verdict")] = 5.0,
        ctx: Context = None,  # type: ignore[assignment]
    ) -> Verdict:
        """Send a signal to risk, the same way a strategy does; accepted signals become orders at the venue.
        Returns the verdict: accepted with order ids, or rejected with every reason and the largest size that
        would pass. With live money a human approves it first: in the client's confirmation dialog where it has
        one, else it stays pending_approval until they run `polybot approve`. Follow it with get_signal."""
        signal = m.Signal(source=source_of(ctx), legs=await tools.legs(legs), rationale=rationale)
        asked = not (isinstance(approval, AcceptedElicitation) and approval.data is None)
        approved = isinstance(approval, AcceptedElicitation) and approval.data is not None and approval.data.approve
        if asked and not approved and approval.action != "cancel":
            return tools.declined(signal)
        try:
            await link.send(signal)
        except MeshDown as exc:
            raise ToolError(str(exc)) from None
        decided = await link.wait_for(lambda x: isinstance(x, m.SignalAccepted | m.SignalRejected | m.SignalPending)
                                      and x.signal_id == signal.id, wait_s)
        if approved and isinstance(decided, m.SignalPending):  # the human's answer, given in the dialog
            try:
                await link.ask(tools.risk, m.ApproveRequest(signal_id=signal.id, via="client",
                                                            by=f"the user of {signal.source}, in the client"))
            except MeshDown:
                pass  # refused on the check at approval, or expired: risk publishes that verdict as well
            decided = await link.wait_for(lambda x: isinstance(x, m.SignalAccepted | m.SignalRejected)
                                          and x.signal_id == signal.id, wait_s) or decided
        return tools.verdict(signal, decided)

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
            raise ToolError(f"no signal {signal_id!r} is recorded yet; check the id from propose_signal, or wait a "
                            "moment: analytics records within 100 ms")
        hops = [Hop(at_ms=str(r["t_ms"]), hop=str(r["hop"]), actor=str(r["who"]), detail=str(r["detail"]))
                for r in (dict(zip(trace.columns, row)) for row in trace.rows)]
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
        return SignalTrace(signal_id=signal_id, status=status, hops=hops, orders=order_rows, fills=fill_rows)

    @server.tool(annotations=READ)
    async def list_open_orders(
        mine_only: Annotated[bool, Field(description="Only this client's orders (the ones cancel_order can "
                                                     "cancel)")] = True,
        ctx: Context = None,  # type: ignore[assignment]
    ) -> OpenOrders:
        """Orders resting at the venue (or in paper), as the executor knows them."""
        account = await tools.ask(tools.executor, m.AccountRequest())
        source = source_of(ctx)
        return OpenOrders(mode=account.mode, orders=[
            OpenOrderView(order_id=o.order_id, signal_id=o.signal_id, source=o.source, token_id=o.token_id,
                          market=o.market, side=o.side, price=text(o.price), size=text(o.size),
                          filled=text(o.filled), status=o.status, order_type=o.order_type)
            for o in account.orders if not mine_only or o.source == source])

    @server.tool(annotations=CANCEL)
    async def cancel_order(
        order_id: Annotated[str, Field(description="A client order id from propose_signal or list_open_orders")],
        wait_s: Annotated[float, Field(ge=0, le=30, description="How long to wait for the venue's answer")] = 5.0,
        ctx: Context = None,  # type: ignore[assignment]
    ) -> CancelResult:
        """Cancel one of this client's resting orders (it goes through risk to the executor)."""
        source = source_of(ctx)
        account = await tools.ask(tools.executor, m.AccountRequest())
        order = next((o for o in account.orders if o.order_id == order_id), None)
        if order is None:
            raise ToolError(f"order {order_id} is not open (it filled, was canceled, or never rested); "
                            "list_open_orders shows what is")
        if order.source != source:
            raise ToolError(f"order {order_id} belongs to {order.source}, not to this client ({source}); only its "
                            "owner (or an operator halting risk) can cancel it")
        try:
            await link.send(m.Cancel(source=source, order_ids=[order_id], reason="canceled by the agent"))
        except MeshDown as exc:
            raise ToolError(str(exc)) from None
        done = await link.wait_for(lambda x: isinstance(x, m.OrderCanceled) and x.order_id == order_id, wait_s)
        if done is None:
            return CancelResult(order_id=order_id, canceled=False,
                                detail="sent; no confirmation yet — check list_open_orders")
        return CancelResult(order_id=order_id, canceled=True, remaining=text(done.remaining), detail=done.reason)

    @server.tool(annotations=READ)
    async def get_risk(ctx: Context = None) -> RiskView:  # type: ignore[assignment]
        """Risk's limits and how much of each is used, this client's agent budget left, the shares it bought
        itself (what it may sell), and whether trading is halted."""
        return await tools.risk_view(source_of(ctx))

    def rows(reply: m.QueryReply, offset: int = 0, limit: int | None = None) -> Rows:
        data = [dict(zip(reply.columns, r)) for r in reply.rows]
        if limit is None:
            return Rows(columns=reply.columns, rows=data)
        more = offset + limit < len(data)
        return Rows(columns=reply.columns, rows=data[offset:offset + limit],
                    next_cursor=encode_cursor(offset + limit) if more else None)

    @server.tool(annotations=READ)
    async def get_positions(
        market: Annotated[str, Field(description="Only this market (condition id); empty: all")] = "",
        include_closed: Annotated[bool, Field(description="Also positions already closed (realized PnL)")] = False,
    ) -> Rows:
        """Positions from the recorded fills: size, average price, mark, unrealized and realized PnL, fees."""
        return rows(await tools.query("positions", market=market, all=str(include_closed).lower()))

    @server.tool(annotations=READ)
    async def get_fills(
        market: Annotated[str, Field(description="Only this market (condition id); empty: all")] = "",
        since: Annotated[str, Field(description="Only fills after this: a duration (30m, 2h, 1d) or an ISO time")
                         ] = "",
        limit: Annotated[int, Field(ge=1, le=500, description="Fills per page")] = 50,
        cursor: Annotated[str | None, Field(description="next_cursor of the previous page")] = None,
    ) -> Rows:
        """Fills, newest first: price, size, fee, maker or taker, and the signal and order they belong to."""
        offset = decode_cursor(cursor)
        return rows(await tools.query("fills", market=market, since=since_param(since),
                                      limit=str(offset + limit + 1)), offset, limit)

    @server.tool(annotations=READ)
    async def get_pnl(
        by: Annotated[Literal["total", "market", "source", "token"], Field(description="How to group")] = "total",
        since: Annotated[str, Field(description="Also the PnL over a period starting then: a duration (1d, 2h) or "
                                                "an ISO time; empty: only the PnL to date")] = "",
    ) -> Rows:
        """Realized and unrealized PnL, fees and open cost to date, grouped. With `since`, also the total as it
        stood then (marked to that time's prices) and the change over the period: period_pnl, period_realized,
        period_fees."""
        return rows(await tools.query("pnl", by=by, since=since_param(since)))

    return tools
