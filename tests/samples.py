"""One instance of every message type, with no field left at its default where that can be helped."""
from __future__ import annotations

from decimal import Decimal as D

from services import messages as m


def all_message_types() -> set[type[m.Message]]:
    """Every message class of the schema (not the newer-version stand-ins that tests define)."""
    found, todo = set(), [m.Message]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__ == m.__name__:
                found.add(sub)
            todo.append(sub)
    return found


def samples() -> dict[type[m.Message], m.Message]:
    book = m.Book(token_id="71321045679252212594626385532706912750332728571942532289631379312455583992563",
                  market="0xdd22", bids=[m.Level(D("0.51"), D("120.5")), m.Level(D("0.5"), D("3149725.72"))],
                  asks=[m.Level(D("0.53"), D("9.37"))], venue_ts_ms=1786604072222, hash="ed47eb91",
                  tick_size=D("0.01"))
    order = m.Order(signal_id="s1", leg=1, source="strategy:arbitrage", token_id="t2", market="0xdd22", side="SELL",
                    size=D("12.5"), limit_price=D("0.47"), order_type="FOK", post_only=True, expires_s=1800000000,
                    trace_id="trace-1")
    state = m.ServiceState(name="risk", state="halted", pid=42, uptime_s=3.5, restarts=2,
                           sockets={"signals": m.SocketCounters(sent=1, received=2, dropped=3, undecodable=4,
                                                                lag_ms=1.5, lag_ms_max=9.0)},
                           last_error="boom", halt_reason="kill switch", detail={"k": "v"})
    position = m.Position(token_id="t1", market="0x311d", size=D("12.5"), avg_price=D("0.44"), realized=D("1.5"),
                          fees=D("0.02"))
    signal = m.Signal(source="mcp:claude", rationale="YES+NO asks sum to 0.97", cause_id="c1", cause_ts_ns=123,
                      legs=[m.Leg(token_id="t1", side="BUY", size=D("10"), limit_price=D("0.45"), order_type="FAK",
                                  market="0x311d"),
                            m.Leg(token_id="t2", side="BUY", size=D("10"), limit_price=D("0.52"), post_only=True)])
    out = [
        m.BookSnapshot(books=[book, book]),
        m.BookDelta(changes=[m.LevelChange(token_id="t1", market="0xdd22", side="BUY", price=D("0.52"),
                                           size=D("0"), best_bid=D("0.51"), best_ask=D("0.53"),
                                           venue_ts_ms=1790658661234)]),
        m.LastTrade(token_id="t1", market="0xdd22", price=D("0.51"), size=D("25.0"), side="BUY", fee_rate_bps=200,
                    venue_ts_ms=1703875202000),
        m.MarketNew(market="0x311d", question="Will NVIDIA close above $240?", slug="nvda-240",
                    outcomes=[m.Outcome(token_id="t1", name="Yes"), m.Outcome(token_id="t2", name="No")],
                    tick_size=D("0.001"), min_size=D("15"), neg_risk=True, neg_risk_market_id="0xabc",
                    end_ts_ms=1769800000000, fee_rate=D("0.07"), accepting_orders=False, volume=D("125000.5"),
                    liquidity=D("8000"), fee_exponent=D("2"), protocol="v2", rebate_rate=D("0.2")),
        m.TickSizeChange(token_id="t1", market="0x311d", old_tick_size=D("0.1"), new_tick_size=D("0.01")),
        m.MarketHalted(market="0x311d", reason="feed stale"),
        m.MarketResolved(market="0x311d", winning_token_id="t1", winning_outcome="Yes"),
        m.MarketStale(markets=["0x311d", "0xdd22"], stale=False, reason="feed silent for 30 s"),
        signal,
        m.Cancel(source="strategy:quoter", order_ids=["o1", "o2"], token_id="t1", market="0x311d", reason="requote"),
        order,
        m.SignalAccepted(signal_id="s1", source="strategy:arbitrage", orders=[order], signal=signal),
        m.SignalRejected(signal_id="s2", source="mcp:claude",
                         reasons=[m.Reason(code="ORDER_NOTIONAL", message="notional 600 over limit 500", leg=0,
                                           limit=D("500"), value=D("600"), max_size=D("1111.11"))],
                         signal=signal),
        m.OrderAck(order_id="o1", venue_order_id="0xabc", status="matched", signal_id="s1", source="mcp:claude",
                   submitted_ts_ns=17),
        m.OrderRejected(order_id="o1", code="MIN_SIZE", message="Size (2) lower than the minimum: 5", signal_id="s1",
                        source="mcp:claude"),
        m.Fill(order_id="o1", venue_order_id="0xabc", trade_id="tr1", token_id="t1", market="0x311d", side="BUY",
               price=D("0.45"), size=D("10"), fee=D("0.1732"), liquidity="MAKER", status="CONFIRMED",
               signal_id="s1", source="strategy:arbitrage", venue_ts_ms=1790658661234, rebate=D("0.0346")),
        m.FillStatus(fill=m.Fill(order_id="o1", venue_order_id="0xabc", trade_id="tr2", token_id="t1", market="0x311d",
                                 side="SELL", price=D("0.55"), size=D("4"), fee=D("0.0866"), signal_id="s1",
                                 source="strategy:arbitrage", venue_ts_ms=1790658661234),
                     status="FAILED"),
        m.Rebate(day="2026-09-29", market="0x311d", maker="0x7c3db723f8c5f9e4f6f1b1c5d3ce47d3cdc4b8e1",
                 amount=D("0.034640"), final=True),
        m.OrderCanceled(order_id="o1", venue_order_id="0xabc", remaining=D("2.5"), reason="FAK remainder",
                        signal_id="s1", source="strategy:arbitrage"),
        m.ResidualExposure(signal_id="s1", source="strategy:arbitrage", reason="leg 1 rejected: not enough balance",
                           exposure=[m.Exposure(token_id="t1", market="0x311d", side="BUY", size=D("10"),
                                                avg_price=D("0.45"))]),
        m.VenueStatus(conditions=[
            m.VenueCondition(code="POST_ONLY_WINDOW", message="only post-only orders until 12:02:00 UTC",
                             since_ts_ns=1_790_658_000_000_000_000, until_ts_ns=1_790_658_120_000_000_000,
                             post_only_pass=True),
            m.VenueCondition(code="NO_BALANCE", message="the wallet holds 12.50 USDC", side="BUY",
                             available=D("12.5"))]),
        m.Heartbeat(service="scanner", pid=99, seq=7),
        m.StatusRequest(),
        m.HaltRequest(reason="drill"),
        m.ResumeRequest(),
        m.ThrottleRequest(max_signals_per_s=0.5, for_s=3.0, reason="executor lags 900 ms", by="executor"),
        m.RestartRequest(service="scanner"),
        m.ShutdownRequest(),
        m.ReloadRequest(by="operator"),
        m.StrategyChanged(name="spread_bid", by="operator"),
        m.StrategyApproved(name="spread_bid", sha256="ab" * 32, class_name="SpreadBid",
                           budget={"max_order_notional": D("20"), "max_open_orders": D("4")}, markets=["0xmkt"],
                           by="operator", approved_ts_ns=1790000000000000000, seq=3, stream="r1"),
        m.SnapshotRequest(markets=["0x311d"]),
        m.SnapshotReply(markets=[m.MarketNew(market="0x311d", question="q?", outcomes=[m.Outcome(token_id="t1",
                                                                                                   name="Yes")])],
                        books=m.BookSnapshot(books=[book]), stale=["0x311d"]),
        m.PreviewRequest(signal=m.Signal(source="mcp:claude", legs=[m.Leg(token_id="t1", side="BUY", size=D("5"),
                                                                          limit_price=D("0.4"))])),
        m.RiskRequest(),
        m.ApproveRequest(signal_id="s9", approve=False, by="alice"),
        m.SignalPending(signal_id="s9", source="mcp:claude", expires_ts_ns=1790000000000000000, signal=signal),
        m.RiskReply(halted=True, halt_reason="drill", limits={"order_notional": D("500")},
                    usage=[m.Usage(name="position_per_token", limit=D("1000"), used=D("12.5"), scope="t1")],
                    positions=[position], open_orders=3, realized_pnl=D("-1.25"), marked_pnl=D("0.5"),
                    pending=[m.SignalPending(signal_id="s9", source="mcp:claude", expires_ts_ns=5)]),
        m.AccountRequest(),
        m.AccountReply(mode="paper", positions=[position], reconciled_ts_ns=5,
                       orders=[m.OpenOrder(order_id="o1", venue_order_id="0xabc", signal_id="s1", source="mcp:claude",
                                           token_id="t1", market="0x311d", side="BUY", price=D("0.45"),
                                           size=D("10"), filled=D("2.5"), status="live", order_type="GTD",
                                           ts_ns=9)]),
        m.QueryRequest(name="positions", params={"market": "0x311d"}, sql="select 1", max_rows=10),
        m.QueryReply(columns=["token_id", "size", "n", "x", "ok", "none"], rows=[["t1", "12.50", 3, 0.5, True, None]],
                     truncated=True),
        m.CatchUpRequest(stream="b2ab8bf303b7", after_seq=41, max_records=500),
        m.CatchUpReply(stream="b2ab8bf303b7", first_seq=1, last_seq=43,
                       records=[m.OrderAck(order_id="o1", venue_order_id="0xabc", seq=42, stream="b2ab8bf303b7"),
                                m.OrderCanceled(order_id="o1", remaining=D("2.5"), seq=43, stream="b2ab8bf303b7")]),
        m.StatusReply(service=state, children=[state]),
        m.Ok(request_id="r1", detail="halted"),
        m.Error(request_id="r1", message="no such service"),
    ]
    return {type(msg): msg for msg in out}
