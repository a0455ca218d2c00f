"""Named queries over the recorded tables: positions, pnl, orders, fills, signals, decisions, trace.

Each takes a reader (one read-only transaction) and string parameters, and returns a ``Table``. Positions
and PnL come from ``services.ledger`` (the venue's way: average cost, taker fees in collateral, settlement at
1 or 0), replayed over every fill and resolution in time order, so they agree with risk's book-keeping.
Maker rebates (``services.ledger.Rebates``) are the venue's reported totals per UTC day and market where it
reported them, else the maker fills' estimates (``rebates_estimated`` says how much of ``rebates`` that is),
shared out to tokens and sources by what their maker fills earned; they are part of the PnL.
A fill counts with its trade's latest status (the ``fills`` view): one whose trade FAILED is out of positions and
PnL; a position's ``pending`` shares are those of fills not yet CONFIRMED on chain (MATCHED, MINED, RETRYING; net,
a pending sell negative), ``settled`` the rest (``size - pending``, what the wallet holds on chain now).
Shares held in complete sets (every outcome of a market) are worth the 1 a set pays (``services.ledger.marked``);
the rest of an open position is marked at its latest mid (book tops with both sides), else its last trade; with
neither its unrealized PnL is 0 (held at cost). Quotients (average prices) are rounded to 10 decimal places.
"""
from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from .. import messages as m
from ..ledger import Ledger, Rebates, marked
from .store import QueryError, Reader, Table

ZERO = Decimal(0)
END = 2 ** 63 - 1  # "until" for the present: every row
PLACES = Decimal("1e-10")
REST_CANCELED = "partial (rest canceled)"  # an order's status: some of it filled, the rest was canceled (a FAK's)


class Params:
    """A query's parameters, checked: unknown names are refused, numbers parsed, with clear messages."""

    def __init__(self, query: str, given: dict[str, str], known: tuple[str, ...]) -> None:
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise QueryError(f"{query}: unknown parameter {', '.join(unknown)}; it takes {', '.join(known) or 'none'}")
        self.query = query
        self.given = given

    def text(self, name: str) -> str:
        return self.given.get(name, "").strip()

    def integer(self, name: str, default: int, low: int = 0, high: int = 2 ** 63 - 1) -> int:
        raw = self.text(name)
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise QueryError(f"{self.query}: {name} must be a whole number, not {raw!r}") from None
        if not low <= value <= high:
            raise QueryError(f"{self.query}: {name} must be between {low} and {high}")
        return value

    def flag(self, name: str) -> bool:
        return self.text(name).lower() in ("1", "true", "yes")

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        value = self.text(name) or choices[0]
        if value not in choices:
            raise QueryError(f"{self.query}: {name} is one of {', '.join(choices)}, not {value!r}")
        return value


def exact(value: Decimal | None) -> Decimal | None:
    """Rounded to 10 places only where it has more (a quotient), without trailing zeros."""
    if value is None:
        return None
    if value.as_tuple().exponent < -10:  # type: ignore[operator]
        value = value.quantize(PLACES)
    return value.normalize() if value else ZERO


def num(value: Decimal | None) -> str:
    """A number for reading: exact, plain notation (10, not 1E+1)."""
    return "-" if value is None else format(exact(value), "f")


def short(ident: str) -> str:
    """Long venue ids (tokens, markets, venue order ids) cut for reading; the mesh's own ids (<= 20) kept whole."""
    return ident if len(ident) <= 20 else ident[:10] + "…"


def _filters(pairs: list[tuple[str, Any]]) -> tuple[str, list[Any]]:
    """WHERE clauses for the given (clause with one ?, value) pairs whose value is set."""
    used = [(clause, value) for clause, value in pairs if value not in ("", None)]
    if not used:
        return "", []
    return " WHERE " + " AND ".join(c for c, _ in used), [v for _, v in used]


# ---------------------------------------------------------------- positions and PnL


def ledgers(db: Reader, by_source: bool = False, until: int = END) -> dict[str, Ledger]:
    """Every fill and resolution up to ``until`` (epoch ns) replayed in time order; one ledger per source when
    ``by_source``, else one."""
    events = db.select("""
        SELECT * FROM (
            SELECT ts_ns, 0 AS resolution, trade_id, order_id, token_id, market, side, price, size, fee, source,
                   status, NULL AS winner FROM fills
            UNION ALL
            SELECT ts_ns, 1, NULL, NULL, NULL, market, NULL, NULL, NULL, NULL, NULL, NULL, winning_token_id
            FROM market_events WHERE kind = 'MarketResolved'
            UNION ALL  -- the executor's settlements: a resolution the scanner's word never brought here
            SELECT ts_ns, 1, NULL, NULL, NULL, market, NULL, NULL, NULL, NULL, NULL, NULL, token_id
            FROM executions WHERE kind = 'MarketResolved')
        WHERE ts_ns <= ? ORDER BY ts_ns, resolution""", [until]).rows
    out: dict[str, Ledger] = {}
    for _, resolution, trade, order, token, market, side, price, size, fee, source, status, winner in events:
        if resolution:
            for ledger in out.values():
                ledger.settle(market, winner)
            continue
        ledger = out.setdefault(source if by_source else "", Ledger())
        ledger.apply(m.Fill(order_id=order, venue_order_id="", trade_id=trade, token_id=token, market=market,
                            side=side, price=price, size=size, fee=fee, status=status or "MATCHED"))
    return out


def rebates(db: Reader, until: int = END) -> Rebates:
    """The maker rebates as they stood at ``until``: every maker fill's estimate, and the venue's latest report of
    each day and market."""
    out = Rebates()
    for ts, trade, order, token, market, side, price, size, source, venue_ms, rebate in db.select("""
            SELECT ts_ns, trade_id, order_id, token_id, market, side, price, size, source, venue_ts_ms, rebate
            FROM fills WHERE liquidity = 'MAKER' AND ts_ns <= ? ORDER BY ts_ns, trade_id, order_id""", [until]).rows:
        out.fill(m.Fill(ts_ns=ts, order_id=order, venue_order_id="", trade_id=trade, token_id=token, market=market,
                        side=side, price=price, size=size, liquidity="MAKER", source=source or "",
                        venue_ts_ms=venue_ms or 0, rebate=rebate))
    for day, market, maker, amount, final in db.select("""
            SELECT day, market, arg_max(maker, ts_ns), arg_max(amount, ts_ns), arg_max(final, ts_ns)
            FROM rebates WHERE ts_ns <= ? GROUP BY day, market""", [until]).rows:
        out.report(m.Rebate(day=day, market=market, maker=maker, amount=amount, final=final))
    return out


def marks(db: Reader, tokens: list[str], until: int = END) -> dict[str, Decimal]:
    """Each token's latest mid (both sides quoted) at ``until``, else its last trade price then."""
    if not tokens:
        return {}
    out: dict[str, Decimal] = {}
    for token, price in db.select("SELECT token_id, arg_max(price, ts_ns) FROM trades WHERE token_id = ANY(?) "
                                  "AND ts_ns <= ? GROUP BY token_id", [tokens, until]).rows:
        out[token] = price
    for token, top in db.select("""
            SELECT token_id, arg_max({'bid': best_bid, 'ask': best_ask}, ts_ns)
                   FILTER (WHERE best_bid IS NOT NULL AND best_ask IS NOT NULL)
            FROM book_tops WHERE token_id = ANY(?) AND ts_ns <= ? GROUP BY token_id""", [tokens, until]).rows:
        if top is not None:
            out[token] = (top["bid"] + top["ask"]) / 2
    return out


def market_sets(db: Reader, ledger: Ledger) -> list[list[str]]:
    """Every outcome of each market the ledger holds shares of: the complete sets it may hold. A neg-risk event's
    YES tokens are not counted as one, as nothing recorded says when every market of an event is known."""
    held = sorted({h.market for h in ledger.holdings.values() if h.size > 0})
    if not held:
        return []
    tokens = dict(db.select("SELECT market, list(token_id ORDER BY token_id) FROM market_tokens "
                            "WHERE market = ANY(?) GROUP BY market", [held]).rows)
    return ledger.market_sets(tokens)


def outcomes(db: Reader, tokens: list[str]) -> dict[str, tuple[str, str]]:
    """Each token's outcome name (Yes, No, a candidate...) and its market's question, from the markets recorded."""
    if not tokens:
        return {}
    return {token: (outcome or "", question or "") for token, outcome, question in db.select(
        "SELECT token_id, outcome, question FROM market_tokens WHERE token_id = ANY(?)", [tokens]).rows}


def positions(db: Reader, p: Params) -> Table:
    """Holdings now (one source's with ``source``), marked; with ``all`` also those closed."""
    source = p.text("source")
    ledger = ledgers(db, by_source=bool(source)).get(source, Ledger())
    market, include_closed = p.text("market"), p.flag("all")
    held = [h for h in ledger.holdings.values()
            if (h.size or include_closed) and (not market or h.market == market)]
    tokens = [h.token_id for h in held]
    mark, names = marks(db, tokens), outcomes(db, tokens)
    figures = marked(ledger.holdings.values(), mark, market_sets(db, ledger))
    rebated: dict[str, list[Decimal]] = {}  # token -> [rebates, of which estimated]
    for c in rebates(db).credits():
        if not source or c.source == source:
            acc = rebated.setdefault(c.token_id, [ZERO, ZERO])
            acc[0], acc[1] = acc[0] + c.amount, acc[1] + c.estimated
    rows = []
    for h in sorted(held, key=lambda h: (h.market, h.token_id)):
        price = mark.get(h.token_id) if h.size else None
        x = figures.get(h.token_id)
        unrealized = x.unrealized if x is not None and (price is not None or x.in_sets) else None
        outcome, question = names.get(h.token_id, ("", ""))
        rebate, estimated = rebated.get(h.token_id, (ZERO, ZERO))
        rows.append([h.token_id, h.market, outcome, exact(h.size), exact(h.settled), exact(h.pending),
                     exact(h.avg_price), exact(h.cost), exact(price), exact(unrealized), exact(h.realized),
                     exact(h.fees), exact(rebate), exact(estimated), exact(h.realized + (unrealized or ZERO) + rebate),
                     exact(x.in_sets if x is not None else ZERO), question])
    return Table(["token_id", "market", "outcome", "size", "settled", "pending", "avg_price", "cost", "mark",
                  "unrealized", "realized", "fees", "rebates", "rebates_estimated", "pnl", "in_sets", "question"], rows)


def totals(db: Reader, by: str, until: int = END) -> dict[str, list[Decimal]]:
    """[realized, unrealized, fees, open cost, rebates, rebates estimated] per group, as they stood at ``until``."""
    books = ledgers(db, by_source=by == "source", until=until)
    holdings = [(key, h) for key, ledger in books.items() for h in ledger.holdings.values()]
    mark = marks(db, sorted({h.token_id for _, h in holdings if h.size}), until)
    figures = {key: marked(ledger.holdings.values(), mark, market_sets(db, ledger)) for key, ledger in books.items()}
    sums: dict[str, list[Decimal]] = {}
    for key, h in holdings:
        group = {"market": h.market, "source": key, "token": h.token_id, "total": "total"}[by]
        x = figures[key].get(h.token_id)
        unrealized = x.unrealized if x is not None else ZERO
        acc = sums.setdefault(group, [ZERO] * 6)
        for i, value in enumerate((h.realized, unrealized, h.fees, h.cost if h.size else ZERO)):
            acc[i] += value
    for c in rebates(db, until).credits():
        acc = sums.setdefault({"market": c.market, "source": c.source, "token": c.token_id, "total": "total"}[by],
                              [ZERO] * 6)
        acc[4] += c.amount
        acc[5] += c.estimated
    return sums


def pnl(db: Reader, p: Params) -> Table:
    """PnL now per group (realized + unrealized + rebates); with ``since`` (epoch ns) also what it was then, marked
    to that time's prices, and the change over the period (realized, fees, rebates and total)."""
    by = p.choice("by", ("market", "source", "token", "total"))
    now = totals(db, by)
    columns = [by, "realized", "unrealized", "fees", "rebates", "rebates_estimated", "open_cost", "total"]
    if not p.text("since"):
        return Table(columns, [[group, exact(r), exact(u), exact(f), exact(b), exact(e), exact(c), exact(r + u + b)]
                               for group, (r, u, f, c, b, e) in sorted(now.items())])
    then = totals(db, by, p.integer("since", 0))
    nothing = [ZERO] * 6
    rows = []
    for group in sorted(now.keys() | then.keys()):
        r, u, f, c, b, e = now.get(group, nothing)
        r0, u0, f0, _, b0, _ = then.get(group, nothing)
        rows.append([group, exact(r), exact(u), exact(f), exact(b), exact(e), exact(c), exact(r + u + b),
                     exact(r0 + u0 + b0), exact(r - r0), exact(f - f0), exact(b - b0), exact(r + u + b - r0 - u0 - b0)])
    return Table(columns + ["total_at_since", "period_realized", "period_fees", "period_rebates", "period_pnl"], rows)


# ---------------------------------------------------------------- orders, fills, signals, decisions


def orders(db: Reader, p: Params) -> Table:
    signal = find_signal(db, p.text("signal"), "orders") if p.text("signal") else ""
    where, args = _filters([("signal_id = ?", signal), ("source = ?", p.text("source")),
                            ("market = ?", p.text("market")), ("token_id = ?", p.text("token"))])
    status = p.text("status")
    having = ""
    if status == "open":
        having = f" WHERE status NOT IN ('filled', '{REST_CANCELED}', 'canceled', 'rejected')"
    elif status:
        having, args = " WHERE status = ?", [*args, status]
    table = db.select(f"""
        WITH ex AS (
            SELECT order_id, bool_or(kind = 'OrderRejected') AS rejected, bool_or(kind = 'OrderCanceled') AS canceled,
                   arg_max(status, ts_ns) FILTER (WHERE kind = 'OrderAck') AS ack,
                   max(venue_order_id) FILTER (WHERE kind = 'OrderAck') AS venue_order_id,
                   arg_max(code || ' ' || message, ts_ns) FILTER (WHERE kind = 'OrderRejected') AS why
            FROM executions WHERE kind NOT IN ('Fill', 'FillStatus') GROUP BY order_id),
        f AS (SELECT order_id, sum(size) AS filled, sum(size * price) AS notional, sum(fee) AS fees
              FROM fills GROUP BY order_id),
        o AS (
            SELECT o.ts_ns, o.order_id, o.signal_id, o.source, o.market, o.token_id, o.side, o.size, o.limit_price,
                   o.order_type, CASE WHEN ex.rejected THEN 'rejected'
                                      WHEN coalesce(f.filled, 0) >= o.size THEN 'filled'
                                      WHEN ex.canceled AND f.filled > 0 THEN '{REST_CANCELED}'
                                      WHEN ex.canceled THEN 'canceled'
                                      WHEN f.filled > 0 THEN 'partial'
                                      ELSE coalesce(ex.ack, 'sent') END AS status,
                   coalesce(f.filled, 0) AS filled, f.notional, coalesce(f.fees, 0) AS fees, ex.venue_order_id, ex.why
            FROM (SELECT * FROM orders{where}) o LEFT JOIN ex USING (order_id) LEFT JOIN f USING (order_id))
        SELECT * FROM o{having} ORDER BY ts_ns DESC LIMIT ?""", [*args, p.integer("limit", 100, 1)])
    rows = []
    for *head, filled, notional, fees, venue_id, why in reversed(table.rows):
        rows.append([*head[:7], exact(head[7]), exact(head[8]), *head[9:], exact(filled),
                     exact(notional / filled) if filled else None, exact(fees), venue_id, why])
    return Table([*table.columns[:12], "avg_price", "fees", "venue_order_id", "reject_reason"], rows)


def fills(db: Reader, p: Params) -> Table:
    """Fills, oldest first (for reading down a terminal), or ``newest_first``; ``before`` (a row's ``key``, as
    ``ts_ns:trade_id:order_id``) continues a newest-first listing after that row, so pages neither repeat nor skip
    rows while new fills arrive."""
    signal = find_signal(db, p.text("signal"), "fills") if p.text("signal") else ""
    where, args = _filters([("market = ?", p.text("market")), ("token_id = ?", p.text("token")),
                            ("source = ?", p.text("source")), ("signal_id = ?", signal),
                            ("order_id = ?", p.text("order")), ("ts_ns >= ?", p.integer("since", 0) or None)])
    before = p.text("before")
    if before:
        ts, trade, order = _fill_key(p, before)
        where += (" AND " if where else " WHERE ") + \
            "(ts_ns < ? OR (ts_ns = ? AND (trade_id < ? OR (trade_id = ? AND order_id < ?))))"
        args += [ts, ts, trade, trade, order]
    table = db.select(f"""
        SELECT f.*, t.outcome FROM (
            SELECT ts_ns, trade_id, order_id, signal_id, source, market, token_id, side, price, size, fee, liquidity,
                   status FROM fills{where} ORDER BY ts_ns DESC, trade_id DESC, order_id DESC LIMIT ?) f
        LEFT JOIN market_tokens t USING (token_id) ORDER BY ts_ns DESC, trade_id DESC, order_id DESC""",
                      [*args, p.integer("limit", 100, 1)])
    rows = [[*r[:8], exact(r[8]), exact(r[9]), exact(r[10]), *r[11:13], r[13] or ""] for r in table.rows]
    if not p.flag("newest_first"):
        return Table(table.columns, rows[::-1])
    # Each row's key: the `before` that continues the listing after it.
    return Table([*table.columns, "key"], [[*r, f"{r[0]}:{r[1]}:{r[2]}"] for r in rows])


def _fill_key(p: Params, given: str) -> tuple[int, str, str]:
    ts, _, rest = given.partition(":")
    trade, _, order = rest.rpartition(":")  # a venue trade id may hold a colon; an order id never does
    if not ts.isdigit() or not trade or not order:
        raise QueryError(f"{p.query}: before is a fill's key (ts_ns:trade_id:order_id), not {given!r}")
    return int(ts), trade, order


def _legs(db: Reader, signal_ids: list[str]) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {}
    if signal_ids:
        for sid, side, size, price, token, kind in db.select(
                "SELECT signal_id, side, size, limit_price, token_id, order_type FROM signal_legs "
                "WHERE signal_id = ANY(?) ORDER BY signal_id, leg", [signal_ids]).rows:
            out.setdefault(sid, []).append((side, size, price, token, kind))
    return out


def legs_text(legs: list[tuple]) -> str:
    return ", ".join(f"{side} {num(size)} {short(token)} @ {num(price)} {kind}"
                     for side, size, price, token, kind in legs)


def signals(db: Reader, p: Params) -> Table:
    """Signals with their verdict, legs and reasons, oldest first; or ``newest_first``, continued ``before`` a row's
    ``key`` (``ts_ns:signal_id``) as fills are."""
    verdict = p.choice("verdict", ("any", "accepted", "rejected", "pending approval"))
    where, args = _filters([("s.source = ?", p.text("source")), ("s.ts_ns >= ?", p.integer("since", 0) or None),
                            ("v.verdict = ?", None if verdict == "any" else verdict)])
    before = p.text("before")
    if before:
        ts, _, sid = before.partition(":")
        if not ts.isdigit() or not sid:
            raise QueryError(f"{p.query}: before is a signal's key (ts_ns:signal_id), not {before!r}")
        where += (" AND " if where else " WHERE ") + "(s.ts_ns < ? OR (s.ts_ns = ? AND s.signal_id < ?))"
        args += [int(ts), int(ts), sid]
    table = db.select(f"""
        SELECT s.ts_ns, s.signal_id, s.source, v.verdict, v.orders, s.cause_ts_ns, s.rationale, v.reasons
        FROM signals s LEFT JOIN (
            SELECT v.signal_id, CASE WHEN bool_or(v.accepted) THEN 'accepted' WHEN bool_and(v.accepted IS NULL)
                                     THEN 'pending approval' ELSE 'rejected' END AS verdict,
                   max(v.orders) AS orders,
                   string_agg(r.code || ': ' || r.message, '; ' ORDER BY r.idx) AS reasons
            FROM verdicts v LEFT JOIN verdict_reasons r ON r.verdict_id = v.id GROUP BY v.signal_id
            ) v USING (signal_id){where}
        ORDER BY s.ts_ns DESC, s.signal_id DESC LIMIT ?""", [*args, p.integer("limit", 50, 1)])
    legs = _legs(db, [r[1] for r in table.rows])
    rows = [[*r[:5], legs_text(legs.get(r[1], [])), *r[5:7]] for r in table.rows]
    columns = [*table.columns[:5], "legs", *table.columns[5:7]]
    if not p.flag("newest_first"):
        return Table(columns, rows[::-1])
    named = _named_legs(db, [r[1] for r in table.rows])
    return Table([*columns, "reasons", "legs_named", "key"],
                 [[*row, r[7] or "", named.get(r[1], ""), f"{r[0]}:{r[1]}"] for row, r in zip(rows, table.rows)])


def _named_legs(db: Reader, signal_ids: list[str]) -> dict[str, str]:
    """Each signal's legs for reading, by outcome and question rather than token id."""
    out: dict[str, list[str]] = {}
    if signal_ids:
        for sid, side, size, price, kind, outcome, question in db.select("""
                SELECT l.signal_id, l.side, l.size, l.limit_price, l.order_type, t.outcome, t.question
                FROM signal_legs l LEFT JOIN market_tokens t USING (token_id)
                WHERE l.signal_id = ANY(?) ORDER BY l.signal_id, l.leg""", [signal_ids]).rows:
            what = f"{outcome} of \"{question}\"" if outcome else "an unknown token"
            out.setdefault(sid, []).append(f"{side} {num(size)} {what} @ {num(price)} {kind}")
    return {sid: "; ".join(legs) for sid, legs in out.items()}


def decisions(db: Reader, p: Params) -> Table:
    verdict = p.choice("verdict", ("any", "accepted", "rejected"))
    where, args = _filters([("v.source = ?", p.text("source")), ("v.ts_ns >= ?", p.integer("since", 0) or None),
                            ("v.accepted = ?", None if verdict == "any" else verdict == "accepted")])
    table = db.select(f"""
        SELECT v.ts_ns, v.signal_id, v.source, CASE WHEN v.accepted THEN 'accepted' WHEN v.accepted IS NULL
                                                    THEN 'pending approval' ELSE 'rejected' END AS verdict,
               v.orders, string_agg(r.code || ': ' || r.message, '; ' ORDER BY r.idx) AS reasons,
               min(r.max_size) AS max_size
        FROM verdicts v LEFT JOIN verdict_reasons r ON r.verdict_id = v.id{where}
        GROUP BY ALL ORDER BY v.ts_ns DESC LIMIT ?""", [*args, p.integer("limit", 50, 1)])
    rows = [[*r[:6], exact(r[6])] for r in reversed(table.rows)]
    return Table(table.columns, rows)


# ---------------------------------------------------------------- trace


def find_signal(db: Reader, given: str, query: str = "trace") -> str:
    """The signal id ``given`` names: itself, or the one recorded id it is the start of. An order id (or its
    start) is refused with its signal's id, so the caller can ask again with the right one."""
    if not given:
        raise QueryError(f"{query}: give the signal's id (param signal_id)")
    found = db.select("SELECT DISTINCT signal_id FROM verdicts WHERE starts_with(signal_id, ?) LIMIT 3", [given]).rows
    ids = [r[0] for r in found]
    if given in ids:
        return given
    if len(ids) == 1:
        return ids[0]
    if ids:
        raise QueryError(f"{query}: {given!r} is the start of several signal ids ({', '.join(ids)}...); give more "
                         "of it")
    orders = db.select("SELECT order_id, signal_id FROM orders WHERE starts_with(order_id, ?) LIMIT 2", [given]).rows
    if len(orders) == 1:
        order, signal = orders[0]
        raise QueryError(f"{query}: {given!r} is not a signal id but the order {order} of signal {signal}; ask for "
                         f"signal {signal}")
    raise QueryError(f"{query}: no signal {given!r} recorded (risk records its verdict on every signal it decides)")


HOP_ORDER = {"book update": 0, "signal": 1, "verdict": 2, "order": 3, "submitted": 4, "ack": 5, "rejected": 5,
             "fill": 6, "settled": 7, "failed": 7, "canceled": 7, "residual": 8}


def trace(db: Reader, p: Params) -> Table:
    """One signal's hops in time order: book update, signal, verdict, each order, submitted, ack, each fill."""
    sid = find_signal(db, p.text("signal_id"))
    hops: list[tuple[int, str, str, str, str]] = []  # (ts_ns, hop, who, detail, ref)
    sig = db.select("SELECT ts_ns, source, cause_id, cause_ts_ns, legs FROM signals WHERE signal_id = ?", [sid]).rows
    if sig:
        ts, source, cause_id, cause_ts, _ = sig[0]
        legs = _legs(db, [sid]).get(sid, [])
        if cause_ts:
            cause = db.select("SELECT kind, token_id FROM book_tops WHERE msg_id = ? LIMIT 1", [cause_id]).rows
            what = f"{cause[0][0]} {short(cause_id)} token {short(cause[0][1])}" if cause else f"message {short(cause_id)}"
            hops.append((cause_ts, "book update", "scanner", what, cause_id))
        hops.append((ts, "signal", source, f"{len(legs)} legs {legs_text(legs)}", sid))
    for vid, ts, accepted, n, reasons in db.select("""
            SELECT v.id, v.ts_ns, v.accepted, v.orders, string_agg(r.code || ' ' || r.message, '; ' ORDER BY r.idx)
            FROM verdicts v LEFT JOIN verdict_reasons r ON r.verdict_id = v.id WHERE v.signal_id = ?
            GROUP BY ALL""", [sid]).rows:
        said = f"accepted → {n} orders" if accepted else "waits for a human's approval" if accepted is None \
            else f"rejected: {reasons}"
        hops.append((ts, "verdict", "risk", said, vid))
    for oid, ts, side, size, price, kind in db.select(
            "SELECT order_id, ts_ns, side, size, limit_price, order_type FROM orders WHERE signal_id = ?", [sid]).rows:
        hops.append((ts, "order", "risk", f"order {short(oid)} {side} {num(size)} @ {num(price)} {kind}", oid))
    for row in db.select("""
            SELECT kind, ts_ns, order_id, venue_order_id, status, submitted_ts_ns, code, message, price, size, fee,
                   liquidity, remaining, reason, id, trade_id FROM executions
            WHERE signal_id = ? OR order_id IN (SELECT order_id FROM orders WHERE signal_id = ?)""", [sid, sid]).rows:
        hops.extend(_execution_hops(*row))
    if not hops:
        raise QueryError(f"trace: nothing recorded for signal {sid}")
    hops.sort(key=lambda h: (h[0], HOP_ORDER.get(h[1], 9)))
    start = hops[0][0]
    rows = [[round((ts - start) / 1e6, 3), ts, hop, who, detail, ref] for ts, hop, who, detail, ref in hops]
    return Table(["t_ms", "ts_ns", "hop", "who", "detail", "ref"], rows)


def _execution_hops(kind: str, ts: int, order: str, venue_order: str, status: str, submitted: int | None, code: str,
                    message: str, price: Decimal, size: Decimal, fee: Decimal, liquidity: str, remaining: Decimal,
                    reason: str, msg_id: str, trade: str) -> list[tuple[int, str, str, str, str]]:
    o = short(order)
    match kind:
        case "OrderAck":
            out = [(ts, "ack", "venue", f"order {o} {status} venue id {short(venue_order)}", order)]
            if submitted:
                out.append((submitted, "submitted", "executor", f"order {o} handed to the venue client", order))
            return out
        case "OrderRejected":
            return [(ts, "rejected", "venue", f"order {o} {code}: {message}", order)]
        case "Fill":
            return [(ts, "fill", "venue", f"{num(size)} @ {num(price)} fee {num(fee)} {liquidity} "
                                          f"{status} order {o}", trade)]
        case "FillStatus":
            what = "settled on chain" if status == "CONFIRMED" else "failed on chain: the fill is reversed"
            return [(ts, "settled" if status == "CONFIRMED" else "failed", "venue",
                     f"trade {short(trade)} {what} ({num(size)} @ {num(price)} order {o})", trade)]
        case "OrderCanceled":
            return [(ts, "canceled", "venue", f"order {o} remaining {num(remaining)} {reason}".rstrip(), order)]
        case "ResidualExposure":
            return [(ts, "residual", "executor", reason, msg_id)]
    return []


NAMED: dict[str, tuple[Callable[[Reader, Params], Table], tuple[str, ...]]] = {
    "positions": (positions, ("market", "all", "source")),
    "pnl": (pnl, ("by", "since")),
    "orders": (orders, ("signal", "source", "market", "token", "status", "limit")),
    "fills": (fills, ("market", "token", "source", "signal", "order", "since", "limit", "before", "newest_first")),
    "signals": (signals, ("source", "verdict", "since", "limit", "before", "newest_first")),
    "decisions": (decisions, ("source", "verdict", "since", "limit")),
    "trace": (trace, ("signal_id",)),
}


def run(db: Reader, name: str, params: dict[str, str]) -> Table:
    if name not in NAMED:
        raise QueryError(f"no query named {name!r}; the named queries are {', '.join(NAMED)}")
    fn, known = NAMED[name]
    return fn(db, Params(name, params, known))
