"""The DuckDB schema analytics writes: one table per kind of record, append-only, times as int ns.

Tables (every ``ts_ns`` is the message's origin time, ns since the epoch; ``id`` the message id):

- ``markets``: each ``MarketNew`` seen (a market re-announced appears again; ``market_tokens`` has the latest),
  with its fee schedule (``fee_rate``, ``fee_exponent``, ``rebate_rate``).
- ``outcomes``: the tokens of each announced market, in outcome order (``idx``), with their names.
- ``market_events``: ``TickSizeChange``, ``MarketHalted``, ``MarketResolved`` (``winning_token_id``) and
  ``MarketStale`` (one row per market, ``stale`` true or false), told apart by ``kind``.
- ``book_tops``: a token's best bid and ask after one prices message (``msg_id``, ``kind`` BookSnapshot or
  BookDelta), recorded when the top changed (option ``book_tops``); sizes are known from snapshots only.
- ``trades``: the venue's last-trade prints (``LastTrade``).
- ``signals`` and ``signal_legs``: each decided signal as risk saw it (``cause_ts_ns`` is the book update that
  prompted it, ``ts_ns`` when it left its strategy), one row per leg.
- ``verdicts`` and ``verdict_reasons``: risk's decision on each signal (``accepted`` NULL: an agent's signal
  waiting for a human's approval, recorded with its signal; its final verdict follows); a refusal's reasons
  with their code,
  message, leg, limit (``limit_value``), value and the largest size that would pass (``max_size``).
- ``orders``: the orders risk sent for an accepted signal (``order_id`` is the client order id).
- ``executions``: the order lifecycle, told apart by ``kind``: ``OrderAck`` (``status``, ``venue_order_id``,
  ``submitted_ts_ns``: handed to the venue client), ``OrderRejected`` (``code``, ``message``), ``Fill``
  (``trade_id``, ``price``, ``size``, ``fee`` paid in collateral, ``liquidity``, ``status``, ``rebate``: a maker
  fill's estimated rebate), ``FillStatus`` (the same fill again with the status its trade reached on chain:
  ``CONFIRMED``, or ``FAILED``: reversed), ``OrderCanceled`` (``remaining``, ``reason``), ``ResidualExposure``
  (``reason``; its legs in ``exposures``) and ``MarketResolved`` (the executor settled the shares it held in
  ``market``: ``token_id`` the winning token, ``reason`` its outcome).
- ``rebates``: each ``Rebate``: the maker rebates the venue reported for one UTC ``day`` in one market, a total
  (the latest report of a day and market holds), ``final`` once the day is over at the venue.
- ``executions`` and ``rebates`` rows carry the executor's numbering (``stream``, ``seq``; NULL: not numbered), by
  which records missed while analytics was down are asked for again and each is recorded once.
- ``strategy_approvals``: each ``StrategyApproved``: an operator's approval of an agent-authored strategy as risk
  took it: its ``name``, the approved code's ``sha256``, its class, the ``budget`` (``key=value`` by comma), the
  ``markets`` it may trade (by comma; empty: any), who approved it and when.
- ``verdicts`` and ``strategy_approvals`` rows carry risk's numbering the same way (``stream``, ``seq``).
- ``meta``: the schema version, and per executor (risk) stream the seq up to which every record is recorded
  (``executions_floor:<stream>``, ``decisions_floor:<stream>``).

Views: ``fills`` (each fill once: the latest report of a (trade, order) pair, ``Fill`` or ``FillStatus``, failed
ones left out, at the time it was first reported; ``status`` MATCHED, MINED or RETRYING: pending on chain,
CONFIRMED: settled; ``rebate`` 0 where not recorded) and ``market_tokens`` (token -> market, outcome name and
question, latest announcement).

Prices, sizes and money are DECIMAL(38,18): exact, and wider than any venue amount (6 decimals).
Positions and PnL are derived from ``fills``, ``rebates`` and ``market_events`` by the named queries, not stored.

A table only ever gains columns, at its end: a file written by an older version gets them on opening (its old
rows hold NULL there).
"""
from __future__ import annotations

VERSION = 2
MONEY = "DECIMAL(38,18)"

# table -> columns in order; every row a writer builds is a tuple in this order
TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "markets": (
        ("ts_ns", "BIGINT"), ("id", "VARCHAR"), ("market", "VARCHAR"), ("question", "VARCHAR"), ("slug", "VARCHAR"),
        ("tick_size", MONEY), ("min_size", MONEY), ("fee_rate", MONEY), ("neg_risk", "BOOLEAN"),
        ("neg_risk_market_id", "VARCHAR"), ("end_ts_ms", "BIGINT"), ("accepting_orders", "BOOLEAN"),
        ("fee_exponent", MONEY), ("rebate_rate", MONEY),
    ),
    "outcomes": (
        ("ts_ns", "BIGINT"), ("market", "VARCHAR"), ("idx", "INTEGER"), ("token_id", "VARCHAR"), ("name", "VARCHAR"),
    ),
    "market_events": (
        ("ts_ns", "BIGINT"), ("id", "VARCHAR"), ("trace_id", "VARCHAR"), ("kind", "VARCHAR"), ("market", "VARCHAR"),
        ("token_id", "VARCHAR"), ("winning_token_id", "VARCHAR"), ("winning_outcome", "VARCHAR"),
        ("old_tick_size", MONEY), ("new_tick_size", MONEY), ("stale", "BOOLEAN"), ("reason", "VARCHAR"),
    ),
    "book_tops": (
        ("ts_ns", "BIGINT"), ("msg_id", "VARCHAR"), ("kind", "VARCHAR"), ("token_id", "VARCHAR"), ("market", "VARCHAR"),
        ("best_bid", MONEY), ("bid_size", MONEY), ("best_ask", MONEY), ("ask_size", MONEY),
    ),
    "trades": (
        ("ts_ns", "BIGINT"), ("id", "VARCHAR"), ("token_id", "VARCHAR"), ("market", "VARCHAR"), ("side", "VARCHAR"),
        ("price", MONEY), ("size", MONEY), ("fee_rate_bps", "INTEGER"), ("venue_ts_ms", "BIGINT"),
    ),
    "signals": (
        ("signal_id", "VARCHAR"), ("ts_ns", "BIGINT"), ("trace_id", "VARCHAR"), ("source", "VARCHAR"),
        ("cause_id", "VARCHAR"), ("cause_ts_ns", "BIGINT"), ("rationale", "VARCHAR"), ("legs", "INTEGER"),
    ),
    "signal_legs": (
        ("signal_id", "VARCHAR"), ("leg", "INTEGER"), ("token_id", "VARCHAR"), ("market", "VARCHAR"),
        ("side", "VARCHAR"), ("size", MONEY), ("limit_price", MONEY), ("order_type", "VARCHAR"),
    ),
    "verdicts": (
        ("id", "VARCHAR"), ("ts_ns", "BIGINT"), ("trace_id", "VARCHAR"), ("signal_id", "VARCHAR"),
        ("source", "VARCHAR"), ("accepted", "BOOLEAN"), ("orders", "INTEGER"), ("seq", "BIGINT"),
        ("stream", "VARCHAR"),
    ),
    "verdict_reasons": (
        ("verdict_id", "VARCHAR"), ("signal_id", "VARCHAR"), ("idx", "INTEGER"), ("code", "VARCHAR"),
        ("message", "VARCHAR"), ("leg", "INTEGER"), ("limit_value", MONEY), ("value", MONEY), ("max_size", MONEY),
    ),
    "orders": (
        ("order_id", "VARCHAR"), ("ts_ns", "BIGINT"), ("trace_id", "VARCHAR"), ("signal_id", "VARCHAR"),
        ("leg", "INTEGER"), ("source", "VARCHAR"), ("token_id", "VARCHAR"), ("market", "VARCHAR"), ("side", "VARCHAR"),
        ("size", MONEY), ("limit_price", MONEY), ("order_type", "VARCHAR"), ("post_only", "BOOLEAN"),
        ("expires_s", "BIGINT"),
    ),
    "executions": (
        ("id", "VARCHAR"), ("ts_ns", "BIGINT"), ("trace_id", "VARCHAR"), ("kind", "VARCHAR"), ("order_id", "VARCHAR"),
        ("venue_order_id", "VARCHAR"), ("signal_id", "VARCHAR"), ("source", "VARCHAR"), ("status", "VARCHAR"),
        ("submitted_ts_ns", "BIGINT"), ("code", "VARCHAR"), ("message", "VARCHAR"), ("trade_id", "VARCHAR"),
        ("token_id", "VARCHAR"), ("market", "VARCHAR"), ("side", "VARCHAR"), ("price", MONEY), ("size", MONEY),
        ("fee", MONEY), ("liquidity", "VARCHAR"), ("venue_ts_ms", "BIGINT"), ("remaining", MONEY),
        ("reason", "VARCHAR"), ("rebate", MONEY), ("seq", "BIGINT"), ("stream", "VARCHAR"),
    ),
    "exposures": (
        ("execution_id", "VARCHAR"), ("ts_ns", "BIGINT"), ("signal_id", "VARCHAR"), ("source", "VARCHAR"),
        ("token_id", "VARCHAR"), ("market", "VARCHAR"), ("side", "VARCHAR"), ("size", MONEY), ("avg_price", MONEY),
    ),
    "strategy_approvals": (
        ("id", "VARCHAR"), ("ts_ns", "BIGINT"), ("trace_id", "VARCHAR"), ("name", "VARCHAR"), ("sha256", "VARCHAR"),
        ("class_name", "VARCHAR"), ("budget", "VARCHAR"), ("markets", "VARCHAR"), ("approved_by", "VARCHAR"),
        ("approved_ts_ns", "BIGINT"), ("seq", "BIGINT"), ("stream", "VARCHAR"),
    ),
    "rebates": (
        ("ts_ns", "BIGINT"), ("id", "VARCHAR"), ("trace_id", "VARCHAR"), ("day", "VARCHAR"), ("market", "VARCHAR"),
        ("maker", "VARCHAR"), ("amount", MONEY), ("final", "BOOLEAN"), ("seq", "BIGINT"), ("stream", "VARCHAR"),
    ),
}

VIEWS = {
    # A fill may be reported more than once as the trade settles (MATCHED, MINED, CONFIRMED; FillStatus rows): count
    # it once, with its latest status, at the time it was first reported; one whose trade FAILED not at all. A fill
    # without a trade id stands alone.
    "fills": """
        SELECT * EXCLUDE (latest) FROM (
            SELECT id, min(ts_ns) OVER w AS ts_ns, trace_id, coalesce(nullif(trade_id, ''), id) AS trade_id, order_id,
                   venue_order_id, signal_id, source, token_id, market, side, price, size, fee, liquidity, status,
                   venue_ts_ms, coalesce(rebate, 0) AS rebate, row_number() OVER (w ORDER BY ts_ns DESC) = 1 AS latest
            FROM executions WHERE kind IN ('Fill', 'FillStatus')
            WINDOW w AS (PARTITION BY coalesce(nullif(trade_id, ''), id), order_id))
        WHERE latest AND status <> 'FAILED'""",
    "market_tokens": """
        SELECT o.token_id, arg_max(o.market, o.ts_ns) AS market, arg_max(o.name, o.ts_ns) AS outcome,
               arg_max(k.question, k.ts_ns) AS question
        FROM outcomes o LEFT JOIN markets k ON k.market = o.market
        GROUP BY o.token_id""",
}


def ddl() -> list[str]:
    """Statements that create whatever is missing (safe to run on every start)."""
    out = [f"CREATE TABLE IF NOT EXISTS {name} ({', '.join(f'{c} {t}' for c, t in cols)})"
           for name, cols in TABLES.items()]
    # An older file's tables lack the columns added since: each is added, in order, at the end (a no-op when there).
    out += [f"ALTER TABLE {name} ADD COLUMN IF NOT EXISTS {c} {t}" for name, cols in TABLES.items() for c, t in cols]
    out += [f"CREATE OR REPLACE VIEW {name} AS {sql}" for name, sql in VIEWS.items()]
    out += ["CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
            f"INSERT OR REPLACE INTO meta VALUES ('schema_version', '{VERSION}')"]
    return out
