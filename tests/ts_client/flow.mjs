// Polymarket's official TypeScript client (@polymarket/clob-client-v2, unchanged) against the local venue.
//
// Run by tests/test_venue_ts_client.py with node --experimental-websocket (the client has no WebSocket of its
// own; Node 20's built-in one stands in for the browser's). Reads from the environment: FLOW_GAMMA, FLOW_CLOB,
// FLOW_MARKET_WS, FLOW_USER_WS, FLOW_MAKER_KEY, FLOW_TAKER_KEY (keys in the environment, not argv, so they stay
// out of process listings). Prints one JSON object on stdout; on a failure, {"failed": step, "error": ...} and
// exit status 1. Never prints a key or an API secret.
import { AssetType, Chain, ClobClient, OrderType, Side } from "@polymarket/clob-client-v2";
import { createWalletClient, http } from "viem";
import { privateKeyToAccount } from "viem/accounts";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const GAMMA = env("FLOW_GAMMA");
const CLOB = env("FLOW_CLOB");
const MARKET_WS = env("FLOW_MARKET_WS");
const USER_WS = env("FLOW_USER_WS");
const WAIT_MS = 10_000; // the longest any frame may take to arrive

let step = "start";
const result = {};

// The client's own setup, as its README shows it: a viem wallet, L1 to create or derive the key, then L2. The L1
// client keeps the default (errors returned, not thrown): createOrDeriveApiKey derives only when creating answers
// an error object, so with throwOnError an account that already has a key (the ready-made one) would fail.
async function connect(key) {
  const account = privateKeyToAccount(key);
  const signer = createWalletClient({ account, transport: http(CLOB) }); // never used for RPC here
  const l1 = new ClobClient({ host: CLOB, chain: Chain.POLYGON, signer });
  const creds = await l1.createOrDeriveApiKey();
  const client = new ClobClient({ host: CLOB, chain: Chain.POLYGON, signer, creds, throwOnError: true });
  return { client, creds, address: account.address };
}

// A WebSocket that records every frame (each JSON object of an array frame counts on its own) by event type.
function listen(url, subscription) {
  const socket = new WebSocket(url);
  const seen = { frames: 0, events: [], texts: [] };
  const waiters = [];
  socket.addEventListener("open", () => socket.send(JSON.stringify(subscription)));
  socket.addEventListener("message", (message) => {
    seen.frames += 1;
    let body;
    try {
      body = JSON.parse(message.data);
    } catch {
      seen.texts.push(String(message.data));
      return;
    }
    for (const event of Array.isArray(body) ? body : [body]) seen.events.push(event);
    for (const waiter of waiters.splice(0)) waiter();
  });
  const opened = new Promise((resolve, reject) => {
    socket.addEventListener("open", resolve, { once: true });
    socket.addEventListener("error", () => reject(new Error(`cannot connect to ${url}`)), { once: true });
  });
  async function until(predicate, what) {
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      const found = seen.events.find(predicate);
      if (found) return found;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${what} within ${WAIT_MS} ms on ${url}`);
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        waiters.push(() => { clearTimeout(timer); resolve(); });
      });
    }
  }
  function summary() {
    const counts = {};
    for (const event of seen.events) counts[event.event_type] = (counts[event.event_type] ?? 0) + 1;
    return { frames: seen.frames, counts, texts: seen.texts };
  }
  return { socket, opened, until, seen, summary };
}

async function main() {
  step = "api keys";
  const maker = await connect(env("FLOW_MAKER_KEY"));
  const taker = await connect(env("FLOW_TAKER_KEY"));
  const again = await maker.client.deriveApiKey();
  result.keys = { maker: maker.creds.key, taker: taker.creds.key, derived_same: again.key === maker.creds.key,
                  listed: (await maker.client.getApiKeys()).apiKeys };

  step = "server";
  result.server = { ok: await maker.client.getOk(), version: await maker.client.getVersion(),
                    time: await maker.client.getServerTime() };

  step = "gamma markets";
  const markets = await (await fetch(`${GAMMA}/markets?limit=100&active=true&closed=false`)).json();
  const market = markets.find((m) => !m.negRisk && m.orderPriceMinTickSize === 0.01 && m.feeSchedule?.rate > 0);
  const [yes, no] = JSON.parse(market.clobTokenIds);
  result.market = { condition_id: market.conditionId, yes, no, fee_rate: market.feeSchedule.rate,
                    fee_exponent: market.feeSchedule.exponent, gamma_count: markets.length };

  step = "clob markets";
  const page = await maker.client.getMarkets();
  const clobMarket = await maker.client.getMarket(market.conditionId);
  const info = await maker.client.getClobMarketInfo(market.conditionId);
  const simplified = await maker.client.getSimplifiedMarkets();
  result.clob = { page_count: page.data.length, next_cursor: page.next_cursor,
                  simplified_count: simplified.data.length, simplified_next: simplified.next_cursor,
                  market_tokens: clobMarket.tokens.map((t) => t.token_id), info_tokens: info.t.map((t) => t.t),
                  fee_details: info.fd };

  step = "book";
  const book = await maker.client.getOrderBook(yes);
  const bid = Number(book.bids.at(-1).price);
  const ask = Number(book.asks.at(-1).price);
  result.book = { bid, ask, hash: book.hash, hash_matches: (await maker.client.getOrderBookHash(book)) === book.hash,
                  books: (await maker.client.getOrderBooks([{ token_id: yes }, { token_id: no }])).length,
                  tick_size: await maker.client.getTickSize(yes), neg_risk: await maker.client.getNegRisk(yes),
                  fee_rate_bps: await maker.client.getFeeRateBps(yes),
                  fee_exponent: await maker.client.getFeeExponent(yes),
                  midpoint: await maker.client.getMidpoint(yes), price: await maker.client.getPrice(yes, "BUY"),
                  spread: await maker.client.getSpread(yes), last_trade: await maker.client.getLastTradePrice(yes) };

  step = "websockets";
  const marketWs = listen(MARKET_WS, { type: "market", assets_ids: [yes, no], custom_feature_enabled: true,
                                       initial_dump: true });
  const makerWs = listen(USER_WS, { type: "user", markets: [market.conditionId],
                                    auth: { apiKey: maker.creds.key, secret: maker.creds.secret,
                                            passphrase: maker.creds.passphrase } });
  const takerWs = listen(USER_WS, { type: "user", markets: [],
                                    auth: { apiKey: taker.creds.key, secret: taker.creds.secret,
                                            passphrase: taker.creds.passphrase } });
  await Promise.all([marketWs.opened, makerWs.opened, takerWs.opened]);
  await marketWs.until((e) => e.event_type === "book", "book snapshot");

  step = "resting order";
  const tick = { tickSize: result.book.tick_size, negRisk: result.book.neg_risk };
  const price = Math.round((bid + 0.01) * 100) / 100; // inside the spread: rests
  const resting = await maker.client.createAndPostOrder({ tokenID: yes, price, size: 10, side: Side.BUY }, tick,
                                                        OrderType.GTC);
  const open = await maker.client.getOpenOrders({ asset_id: yes });
  const fetched = await maker.client.getOrder(resting.orderID);
  result.resting = { price, id: resting.orderID, status: resting.status, success: resting.success,
                     open: open.map((o) => o.id), fetched_status: fetched.status,
                     original_size: fetched.original_size };

  step = "crossing order";
  const collateral = { asset_type: AssetType.COLLATERAL };
  const before = await taker.client.getBalanceAllowance(collateral);
  const crossing = await taker.client.createAndPostOrder(
    { tokenID: no, price: Math.round((1 - price) * 100) / 100, size: 10, side: Side.BUY }, tick, OrderType.GTC);
  const after = await taker.client.getBalanceAllowance(collateral);
  result.crossing = { id: crossing.orderID, status: crossing.status, making: crossing.makingAmount,
                      taking: crossing.takingAmount, trade_ids: crossing.tradeIDs,
                      hashes: crossing.transactionsHashes, balance_before: before.balance,
                      balance_after: after.balance,
                      maker_open_after: (await maker.client.getOpenOrders({ asset_id: yes })).length };

  step = "trades";
  const pick = (t) => ({ id: t.id, side: t.side, trader_side: t.trader_side, price: t.price, size: t.size,
                         asset_id: t.asset_id, status: t.status, fee_rate_bps: t.fee_rate_bps,
                         transaction_hash: t.transaction_hash });
  result.trades = { maker: (await maker.client.getTrades()).map(pick),
                    taker: (await taker.client.getTrades({ market: market.conditionId })).map(pick),
                    paginated: (await taker.client.getTradesPaginated()).trades.length };

  step = "cancel";
  const lone = await maker.client.createAndPostOrder({ tokenID: yes, price: 0.05, size: 10, side: Side.BUY }, tick,
                                                     OrderType.GTC);
  const canceled = await maker.client.cancelOrder({ orderID: lone.orderID });
  result.cancel = { id: lone.orderID, response: canceled,
                    fetched_status: (await maker.client.getOrder(lone.orderID)).status };

  step = "batch";
  const signed = await Promise.all([0.03, 0.04].map((p) =>
    maker.client.createOrder({ tokenID: yes, price: p, size: 10, side: Side.BUY }, tick)));
  signed.push(await maker.client.createOrder({ tokenID: no, price: 0.04, size: 10, side: Side.BUY }, tick));
  const batch = await maker.client.postOrders(signed.map((order) => ({ order, orderType: OrderType.GTC })));
  const batchIds = batch.map((r) => r.orderID);
  const openIds = (await maker.client.getOpenOrders()).map((o) => o.id);
  const someCanceled = await maker.client.cancelOrders(batchIds.slice(0, 2));
  const allCanceled = await maker.client.cancelAll();
  result.batch = { statuses: batch.map((r) => r.status), ids: batchIds, open: openIds,
                   cancel_orders: someCanceled, cancel_all: allCanceled,
                   open_after: (await maker.client.getOpenOrders()).length };

  step = "heartbeat";
  const first = await maker.client.postHeartbeat();
  const second = await maker.client.postHeartbeat(first.heartbeat_id);
  result.heartbeat = { first: first.heartbeat_id, second: second.heartbeat_id };

  step = "websocket frames";
  const tradeFor = (socket) => socket.until((e) => e.event_type === "trade" && crossing.tradeIDs.includes(e.id),
                                            "trade frame for the crossing order");
  const [makerTrade, takerTrade] = await Promise.all([tradeFor(makerWs), tradeFor(takerWs)]);
  await marketWs.until((e) => e.event_type === "last_trade_price", "last_trade_price frame");
  const pickWs = (t) => ({ id: t.id, trader_side: t.trader_side, side: t.side, size: t.size, price: t.price,
                           status: t.status, taker_order_id: t.taker_order_id });
  result.ws = { market: marketWs.summary(), maker: makerWs.summary(), taker: takerWs.summary(),
                maker_trade: pickWs(makerTrade), taker_trade: pickWs(takerTrade) };
  for (const ws of [marketWs, makerWs, takerWs]) ws.socket.close();
}

try {
  await main();
  process.stdout.write(JSON.stringify(result) + "\n");
} catch (error) {
  const detail = error?.data ?? error?.response?.data;
  process.stdout.write(JSON.stringify({ failed: step, error: String(error?.message ?? error), status: error?.status,
                                        detail, partial: result }) + "\n");
  process.exitCode = 1;
} finally {
  setTimeout(() => process.exit(), 100).unref();
}
