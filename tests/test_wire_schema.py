"""One wire schema: Polymarket's captured payloads and what our local venue serves decode with the same Structs."""
from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from py_clob_client_v2 import ClobClient
from py_clob_client_v2.clob_types import OpenOrderParams, OrderArgsV2, RequestArgs
from py_clob_client_v2.headers.headers import create_level_2_headers

from services.venues.polymarket import schema as w

from .venue_harness import Venue, tokens

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "polymarket"  # beside the repo; see SOURCES.md
SEED = 5

# Each top-level capture and the type it must decode as.
CAPTURED: dict[str, Any] = {
    "gamma_market_live.json": w.GammaMarket,
    "gamma_market_crypto_twap.json": w.GammaMarket,
    "gamma_event.json": list[w.GammaEvent],
    "clob_book_response_empty_ask.json": w.ClobBook,
    "clob_market_response.json": w.ClobMarket,
    "http_order_response_ok.json": w.OrderResponse,
    "http_order_response_trade_ids_only.json": w.OrderResponse,
    "http_open_orders_page.json": w.OpenOrdersPage,
    "http_trades_page.json": w.TradesPage,
    "ws_book_snapshot_captured.json": w.WsBook,
    "ws_market_price_change_crossing_burst.json": list[w.MarketMessage],
    "ws_market_last_trade_msg.json": w.WsLastTradePrice,
    "ws_market_tick_size_msg.json": w.WsTickSizeChange,
    "ws_market_best_bid_ask_msg.json": w.WsBestBidAsk,
    "ws_market_new_market_msg.json": w.WsNewMarket,
    "ws_market_resolved_msg.json": w.WsMarketResolved,
    "ws_user_order_placement.json": w.WsOrder,
    "ws_user_order_update.json": w.WsOrder,
    "ws_user_order_cancellation.json": w.WsOrder,
    "ws_user_order_fok_killed.json": w.WsOrder,
    "ws_user_trade_full.json": w.WsTrade,
}
# Not a Polymarket API payload: on-chain OrderFilled legs joined with trade prices, test data for the fee formula.
NOT_WIRE = {"chain_order_filled_taker_fees.json"}


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def captured(name: str) -> Any:
    return json.loads(raw(name))


# ---------------------------------------------------------------- the captures


def test_every_top_level_capture_has_a_struct_to_decode_it():
    on_disk = {p.name for p in FIXTURES.glob("*.json")}
    assert on_disk == set(CAPTURED) | NOT_WIRE, "map each new capture to its Struct in CAPTURED"


@pytest.mark.parametrize("name", sorted(CAPTURED))
def test_each_captured_payload_decodes_with_its_struct(name):
    decoded = msgspec.json.decode(raw(name), type=CAPTURED[name])
    assert decoded


def test_gamma_numbers_stay_numbers_and_its_string_encoded_lists_parse():
    live = msgspec.json.decode(raw("gamma_market_live.json"), type=w.GammaMarket)
    assert live.order_price_min_tick_size == 0.001 and isinstance(live.order_price_min_tick_size, float)
    assert live.order_min_size == 5.0 and live.neg_risk is True
    token_ids = live.parsed_clob_token_ids()
    assert len(token_ids) == 2 and all(t.isdigit() for t in token_ids)
    assert live.parsed_outcomes() == ["Yes", "No"] and live.parsed_outcome_prices() == ["0.2325", "0.7675"]
    assert live.fee_schedule == w.FeeSchedule(exponent=1, rate=0.04, taker_only=True, rebate_rate=0.25)
    assert live.question_id == live.neg_risk_market_id and live.events and live.events[0].id == "30829"

    twap = msgspec.json.decode(raw("gamma_market_crypto_twap.json"), type=w.GammaMarket)
    assert twap.order_price_min_tick_size == 0.01 and twap.neg_risk is False
    assert twap.parsed_outcomes() == ["Up", "Down"] and twap.fee_schedule and twap.fee_schedule.rate == 0.07
    assert twap.best_bid is None and twap.neg_risk_market_id is None  # this capture omits them

    event, = msgspec.json.decode(raw("gamma_event.json"), type=list[w.GammaEvent])
    assert len(event.markets) == 2 and event.neg_risk is True
    assert event.markets[0].fee_type is None and event.markets[0].fee_schedule is None  # fee-free: null / absent
    assert [t.slug for t in event.tags][:2] == ["world-elections", "global-elections"]


def test_clob_numbers_stay_strings_and_nulls_come_out_as_none():
    book = msgspec.json.decode(raw("clob_book_response_empty_ask.json"), type=w.ClobBook)
    assert book.bids[0] == w.BookLevel(price="0.001", size="667.12") and book.asks == []
    assert (book.tick_size, book.min_order_size, book.neg_risk, book.last_trade_price) == ("0.001", "5", True, "")

    page = msgspec.json.decode(raw("http_open_orders_page.json"), type=w.OpenOrdersPage)
    assert page.next_cursor == "LTE=" and page.data[0].created_at == 1703875200001
    assert page.data[1].associate_trades is None and page.data[1].expiration is None

    only_ids = msgspec.json.decode(raw("http_order_response_trade_ids_only.json"), type=w.OrderResponse)
    assert only_ids.error_msg is None and only_ids.status is None and only_ids.trade_ids == ["trade-0x101",
                                                                                             "trade-0x102"]
    trade = msgspec.json.decode(raw("ws_user_trade_full.json"), type=w.WsTrade)
    assert trade.maker_orders[0].side is None and trade.bucket_index == 1


DELETE = object()


def mutated(name: str, path: tuple, value: Any) -> bytes:
    doc = copy.deepcopy(captured(name))
    *parents, last = path
    node = doc
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return json.dumps(doc).encode()


@pytest.mark.parametrize(("name", "path", "value"), [
    pytest.param("gamma_market_live.json", ("negRisk",), "yes", id="gamma negRisk as a string"),
    pytest.param("gamma_market_live.json", ("orderPriceMinTickSize",), "0.001", id="gamma tick size as a string"),
    pytest.param("gamma_market_live.json", ("clobTokenIds",), ["1", "2"], id="gamma clobTokenIds as a real list"),
    pytest.param("gamma_market_live.json", ("clobTokenIds",), DELETE, id="gamma clobTokenIds missing"),
    pytest.param("gamma_market_live.json", ("feeSchedule", "takerOnly"), "true", id="gamma takerOnly as a string"),
    pytest.param("clob_book_response_empty_ask.json", ("bids", 0, "price"), 0.001, id="book price as a number"),
    pytest.param("clob_book_response_empty_ask.json", ("neg_risk",), "true", id="book neg_risk as a string"),
    pytest.param("http_open_orders_page.json", ("data", 0, "created_at"), "1703875200001",
                 id="open order created_at as a string"),
    pytest.param("http_trades_page.json", ("data", 0, "trader_side"), "taker", id="trade trader_side lower case"),
    pytest.param("ws_user_trade_full.json", ("side",), "buy", id="user trade side lower case"),
])
def test_a_payload_with_a_wrong_type_or_a_missing_required_field_fails_to_decode(name, path, value):
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(mutated(name, path, value), type=CAPTURED[name])


# ---------------------------------------------------------------- websocket frames


def test_a_market_frame_decodes_to_a_list_whether_it_is_one_object_or_an_array():
    one = w.decode_market_frame(raw("ws_book_snapshot_captured.json"))
    assert [type(m) for m in one] == [w.WsBook] and one[0].tick_size == "0.01" and len(one[0].asks) == 57
    burst = w.decode_market_frame(raw("ws_market_price_change_crossing_burst.json"))
    assert len(burst) == 51 and type(burst[0]) is w.WsBook and type(burst[-1]) is w.WsBook
    changes = burst[1:-1]
    assert all(type(m) is w.WsPriceChange for m in changes)
    # Each change moves a level on both complementary tokens.
    assert all(len({c.asset_id for c in m.price_changes}) == 2 for m in changes)


def strip_event_type(doc: Any) -> bytes:
    items = doc if isinstance(doc, list) else [doc]
    return json.dumps([{k: v for k, v in item.items() if k != "event_type"} for item in items]).encode()


@pytest.mark.parametrize("name", sorted(n for n in CAPTURED if n.startswith("ws_market") or n.startswith("ws_book")))
def test_a_market_message_without_event_type_is_classified_by_its_keys(name):
    assert w.decode_market_frame(strip_event_type(captured(name))) == w.decode_market_frame(raw(name))


@pytest.mark.parametrize("name", sorted(n for n in CAPTURED if n.startswith("ws_user")))
def test_a_user_message_without_event_type_is_classified_by_its_type_field(name):
    # Most user captures lack event_type (trimmed for decoding the inner struct); the real feed sends it.
    doc = captured(name)
    tagged = json.dumps({**doc, "event_type": "trade" if doc["type"] == "TRADE" else "order"}).encode()
    assert w.decode_user_frame(raw(name)) == w.decode_user_frame(tagged) == [msgspec.json.decode(raw(name),
                                                                                                  type=CAPTURED[name])]


def test_a_wrong_type_fails_a_frame_whether_or_not_the_message_carries_event_type():
    wrong = json.loads(mutated("ws_book_snapshot_captured.json", ("bids", 0, "price"), 0.01))
    with pytest.raises(msgspec.ValidationError, match=r"bids\[0\]\.price"):
        w.decode_market_frame(json.dumps(wrong).encode())
    with pytest.raises(msgspec.ValidationError, match=r"bids\[0\]\.price"):
        w.decode_market_frame(strip_event_type(wrong))


def test_a_plain_text_frame_is_not_a_message():
    with pytest.raises(msgspec.DecodeError):
        w.decode_market_frame(b"NO NEW ASSETS")


@pytest.mark.parametrize("name", sorted(p.name for p in (FIXTURES / "v1_era").glob("*.json")))
def test_older_tagged_feed_messages_decode_too_except_the_retired_single_level_price_change(name):
    decode = w.decode_user_frame if name.startswith(("order", "user")) else w.decode_market_frame
    if name == "price_change.json":  # asset_id/price/size at top level: replaced by `price_changes`
        with pytest.raises(msgspec.ValidationError):
            decode(raw(f"v1_era/{name}"))
    else:
        assert len(decode(raw(f"v1_era/{name}"))) == 1


# ---------------------------------------------------------------- our venue, the same Structs
# Shapes are compared key by key: every key of a captured object must be in the venue's object with the same
# JSON kind (null matches anything), except keys in ABSENT_BY_DESIGN. What the venue is known to lack is in
# VENUE_GAPS: those checks xfail naming each gap, so fixing the venue means deleting its lines there.

ABSENT_BY_DESIGN: dict[str, frozenset[str]] = {
    "GammaMarket": frozenset({
        # presentation
        "image", "icon", "seriesColor", "showGmpSeries", "showGmpOutcome",
        # Polymarket's listing, UMA-resolution and deployment bookkeeping; the venue has none of it
        "marketMakerAddress", "submitted_by", "resolvedBy", "umaBond", "umaReward", "customLiveness",
        "umaResolutionStatuses", "ready", "funded", "approved", "cyom", "pagerDutyNotificationEnabled",
        "automaticallyActive", "clearBookOnStart", "manualActivation", "pendingDeployment", "deploying",
        "deployingTimestamp", "hasReviewedDates", "requiresTranslation", "rfqEnabled", "holdingRewardsEnabled",
        "negRiskOther", "new", "featured", "restricted", "createdAt", "updatedAt", "groupItemThreshold",
        # rolling statistics needing history the venue does not keep, and string/CLOB-only copies of the
        # volumeNum/liquidityNum it does serve
        "volume", "volumeClob", "liquidity", "liquidityClob", "volume24hr", "volume1wk", "volume1mo", "volume1yr",
        "volume24hrClob", "volume1wkClob", "volume1moClob", "volume1yrClob", "competitive", "oneDayPriceChange",
        "oneWeekPriceChange", "oneMonthPriceChange",
        # liquidity-rewards programme: not modelled
        "clobRewards", "rewardsMinSize", "rewardsMaxSpread",
        # crypto up/down markets only: the venue lists none
        "cryptoMarketConfig", "eventStartTime",
    }),
    "GammaEvent": frozenset({
        "image", "icon", "showAllOutcomes", "showMarketImages", "gmpChartMode", "sortBy", "eventMetadata",
        "featured", "new", "restricted", "cyom", "automaticallyActive", "pendingDeployment", "deploying",
        "deployingTimestamp", "requiresTranslation", "commentCount", "createdAt", "updatedAt", "creationDate",
        "countryName", "electionType", "estimateValue", "cumulativeMarkets",
        "liquidity", "liquidityClob", "volume", "openInterest", "competitive", "volume24hr", "volume1wk",
        "volume1mo", "volume1yr",
    }),
    "ClobMarket": frozenset({"icon", "image", "fpmm", "notifications_enabled", "rewards"}),
}

def lacks(label: str, *keys: str) -> frozenset[str]:
    return frozenset(f"{label}: no `{k}`" for k in keys)


# Keys the real venue sends, carrying facts our venue does model, that it does not serve yet.
VENUE_GAPS: dict[str, frozenset[str]] = {"gamma markets": frozenset(), "gamma events": frozenset(),
                                         "clob markets": frozenset()}


def kind(value: Any) -> str:
    return {bool: "bool", int: "number", float: "number", str: "string", list: "array", dict: "object",
            type(None): "null"}[type(value)]


def shape_gaps(label: str, capture: dict, ours: dict, struct: str = "") -> set[str]:
    """Where the venue's object lacks a captured key or gives it another JSON kind."""
    gaps = {f"{label}: no `{k}`" for k in set(capture) - set(ours) - ABSENT_BY_DESIGN.get(struct, frozenset())}
    gaps |= {f"{label}.{k}: {kind(ours[k])} where the capture has {kind(v)}" for k, v in capture.items()
             if k in ours and v is not None and ours[k] is not None and kind(v) != kind(ours[k])}
    return gaps


def check_shapes(test: str, *pairs: tuple) -> None:
    gaps = set().union(*(shape_gaps(*pair) for pair in pairs))
    known = VENUE_GAPS.get(test, frozenset())
    if unexpected := gaps - known:
        pytest.fail("the venue's payloads differ from the captured ones:\n  " + "\n  ".join(sorted(unexpected)))
    if fixed := known - gaps:
        pytest.fail(f"fixed in the venue; delete from VENUE_GAPS[{test!r}]: {sorted(fixed)}")
    if gaps:
        pytest.xfail("venue discrepancy: " + "; ".join(sorted(gaps)))


def get(url: str, **params: str) -> bytes:
    response = httpx.get(url, params=params, trust_env=False)
    assert response.status_code == 200, response.text
    return response.content


@pytest.fixture(scope="module")
def venue(tmp_path_factory) -> Iterator[Venue]:
    venue = Venue(Path(os.path.realpath(tmp_path_factory.mktemp("venue"))) / "s", SEED)
    yield venue
    venue.stop()


def test_the_venues_gamma_markets_decode_as_gamma_market_with_the_captured_keys(venue: Venue):
    body = get(f"{venue.gamma}/markets", limit="100")
    markets = msgspec.json.decode(body, type=list[w.GammaMarket])
    assert markets and all(len(m.parsed_clob_token_ids()) == 2 for m in markets)
    assert {m.order_price_min_tick_size for m in markets} <= {0.1, 0.01, 0.001, 0.0001}
    docs = json.loads(body)
    binary = next(d for d in docs if not d["negRisk"])
    member = next(d for d in docs if d["negRisk"])  # a neg-risk event's market, as the live capture is
    live, twap = captured("gamma_market_live.json"), captured("gamma_market_crypto_twap.json")
    check_shapes("gamma markets",
                 ("GET /markets (neg-risk member)", live, member, "GammaMarket"),
                 ("GET /markets (neg-risk member).feeSchedule", live["feeSchedule"], member["feeSchedule"]),
                 ("GET /markets (neg-risk member).events[0]", live["events"][0], member["events"][0], "GammaEvent"),
                 ("GET /markets (binary)", twap, binary, "GammaMarket"))


def test_the_venues_gamma_events_decode_as_gamma_event_with_the_captured_keys(venue: Venue):
    body = get(f"{venue.gamma}/events")
    events = msgspec.json.decode(body, type=list[w.GammaEvent])
    assert events and all(e.markets and all(m.neg_risk for m in e.markets) for e in events)
    event, ours = captured("gamma_event.json")[0], json.loads(body)[0]
    check_shapes("gamma events",
                 ("GET /events[0]", event, ours, "GammaEvent"),
                 ("GET /events[0].markets[0]", event["markets"][0], ours["markets"][0], "GammaMarket"))


def test_the_venues_book_decodes_as_clob_book_with_the_captured_keys(venue: Venue):
    yes, _ = tokens(venue.market())
    body = get(f"{venue.clob}/book", token_id=yes)
    book = msgspec.json.decode(body, type=w.ClobBook)
    assert book.asset_id == yes and book.bids and book.asks and book.tick_size == "0.01"
    capture, ours = captured("clob_book_response_empty_ask.json"), json.loads(body)
    check_shapes("book", ("GET /book", capture, ours), ("GET /book.bids[0]", capture["bids"][0], ours["bids"][0]))


def test_the_venues_clob_markets_decode_as_clob_market_and_clob_market_info(venue: Venue):
    market = venue.market()
    yes, no = tokens(market)
    full_body = get(f"{venue.clob}/markets/{market['conditionId']}")
    full = msgspec.json.decode(full_body, type=w.ClobMarket)
    assert [t.token_id for t in full.tokens] == [yes, no] and full.minimum_tick_size == 0.01
    info_body = get(f"{venue.clob}/clob-markets/{market['conditionId']}")
    info = msgspec.json.decode(info_body, type=w.ClobMarketInfo)
    assert [t.token_id for t in info.tokens] == [yes, no] and info.min_tick_size == 0.01 and info.neg_risk is False
    capture, ours, compact = captured("clob_market_response.json"), json.loads(full_body), json.loads(info_body)
    # No capture of /clob-markets exists: POLYMARKET_WIRE.md's example stands in for one.
    documented = {"c": "0x", "t": [{"t": "1", "o": "Yes"}], "mts": 0.01, "mos": 5, "nr": False,
                  "fd": {"r": 0.02, "e": 1, "to": True}}
    check_shapes("clob markets",
                 ("GET /markets/{condition_id}", capture, ours, "ClobMarket"),
                 ("GET /markets/{condition_id}.tokens[0]", capture["tokens"][0], ours["tokens"][0]),
                 ("GET /clob-markets/{condition_id} (documented)", documented, compact),
                 ("GET /clob-markets/{condition_id}.t[0] (documented)", documented["t"][0], compact["t"][0]),
                 ("GET /clob-markets/{condition_id}.fd (documented)", documented["fd"], compact["fd"]))


@dataclass
class Traded:
    """One order that rested and one that crossed it, and what the venue answered along the way."""

    resting: dict
    crossing: dict
    open_orders_page: bytes
    open_order_items: list
    trades_pages: dict[str, bytes]  # "maker" / "taker" -> first raw page
    trade_items: dict[str, list]


def raw_l2_get(venue: Venue, client: ClobClient, path: str, **params: str) -> bytes:
    """A page exactly as the venue wrote it, signed as the real client signs."""
    headers = create_level_2_headers(client.signer, client.creds, RequestArgs(method="GET", request_path=path))
    response = httpx.get(f"{venue.clob}{path}", headers=headers, params={"next_cursor": "MA==", **params},
                         trust_env=False)
    assert response.status_code == 200, response.text
    return response.content


@pytest.fixture(scope="module")
def traded(venue: Venue) -> Traded:
    maker, taker = venue.client(), venue.client()
    yes, no = tokens(venue.market())
    price = Decimal(maker.get_order_book(yes)["bids"][-1]["price"]) + Decimal("0.01")  # inside the spread
    resting = maker.create_and_post_order(OrderArgsV2(token_id=yes, price=float(price), size=10, side="BUY"))
    open_orders_page = raw_l2_get(venue, maker, "/data/orders", asset_id=yes)
    open_order_items = maker.get_open_orders(OpenOrderParams(asset_id=yes))
    crossing = taker.create_and_post_order(OrderArgsV2(token_id=no, price=float(1 - price), size=10, side="BUY"))
    clients = {"maker": maker, "taker": taker}
    return Traded(resting, crossing, open_orders_page, open_order_items,
                  {k: raw_l2_get(venue, c, "/data/trades") for k, c in clients.items()},
                  {k: c.get_trades() for k, c in clients.items()})


def test_the_venues_order_responses_decode_as_order_response_with_the_captured_keys(traded: Traded):
    # The client hands back the venue's JSON as parsed (it adds nothing when hashes are already there).
    resting = msgspec.convert(traded.resting, w.OrderResponse)
    crossing = msgspec.convert(traded.crossing, w.OrderResponse)
    assert resting.success and resting.status == "live" and resting.trade_ids == []
    assert crossing.success and crossing.status == "matched" and len(crossing.trade_ids or []) == 1
    assert crossing.transactions_hashes
    ok, ids_only = captured("http_order_response_ok.json"), captured("http_order_response_trade_ids_only.json")
    check_shapes("order responses",
                 ("POST /order (resting)", ok, traded.resting), ("POST /order (crossing)", ok, traded.crossing),
                 ("POST /order (crossing)", ids_only, traded.crossing))


def test_the_venues_open_orders_decode_as_open_order_in_an_open_orders_page_with_the_captured_keys(traded: Traded):
    page = msgspec.json.decode(traded.open_orders_page, type=w.OpenOrdersPage)
    items = msgspec.convert(traded.open_order_items, list[w.OpenOrder])
    assert page.next_cursor == "LTE=" and items == page.data
    assert [(o.id, o.side, o.status) for o in items] == [(traded.resting["orderID"], "BUY", "LIVE")]
    capture, ours = captured("http_open_orders_page.json"), json.loads(traded.open_orders_page)
    check_shapes("open orders", ("GET /data/orders", capture, ours),
                 ("GET /data/orders.data[0]", capture["data"][0], ours["data"][0]))


def test_the_venues_trades_decode_as_clob_trade_in_a_trades_page_with_the_captured_keys(traded: Traded):
    pages = {k: msgspec.json.decode(body, type=w.TradesPage) for k, body in traded.trades_pages.items()}
    items = {k: msgspec.convert(v, list[w.ClobTrade]) for k, v in traded.trade_items.items()}
    assert all(pages[k].next_cursor == "LTE=" and pages[k].data == items[k] for k in pages)
    (maker,), (taker,) = items["maker"], items["taker"]
    assert maker.id == taker.id == traded.crossing["tradeIDs"][0] and maker.transaction_hash
    assert (maker.trader_side, taker.trader_side) == ("MAKER", "TAKER")
    assert taker.maker_orders[0].order_id == traded.resting["orderID"]
    capture, ours = captured("http_trades_page.json"), json.loads(traded.trades_pages["taker"])
    # The captured REST page has no maker orders; the user-channel capture's are the same Struct (MakerOrder).
    maker_order = captured("ws_user_trade_full.json")["maker_orders"][0]
    check_shapes("trades", ("GET /data/trades", capture, ours),
                 ("GET /data/trades.data[0]", capture["data"][0], ours["data"][0]),
                 ("GET /data/trades.data[0].maker_orders[0]", maker_order, ours["data"][0]["maker_orders"][0]))
