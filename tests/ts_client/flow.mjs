// Polymarket's official TypeScript client (@polymarket/clob-client-v2, unchanged) against the local venue.
//
// Run by tests/test_venue_ts_client.py as `node --experimental-websocket flow.mjs SCENARIO` (the client has no
// WebSocket of its own; Node 20's built-in one stands in for the browser's), SCENARIO one of: trading, wallets,
// v2, funding, operations. Reads from the environment: FLOW_GAMMA, FLOW_CLOB, FLOW_MARKET_WS, FLOW_USER_WS,
// FLOW_MARKETS (the condition ids the scenario uses, comma-separated) and, for trading, FLOW_MAKER_KEY and
// FLOW_TAKER_KEY (keys in the environment, not argv, so they stay out of process listings; the other scenarios
// make new accounts). Prints one JSON object on stdout; on a failure, {"failed": step, "error": ...} and exit
// status 1. Never prints a key or an API secret.
//
// The client's HTTP exchanges are observed, not changed: a response interceptor on axios (the instance the
// client sends every request through) notes the method, path, status and Retry-After of each, so a scenario can
// say which requests one call of the client made (a /version refetch, a retried 5xx).
import { createRequire } from "node:module";
import { AssetType, Chain, ClobClient, OrderType, Side, getContractConfig } from "@polymarket/clob-client-v2";
import axios from "axios";
import { createWalletClient, http } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";

// The relayer client derives an owner's proxy, Safe and deposit wallets. It is CommonJS, and its beacon
// derivation is not re-exported from its index, so its modules are loaded by path.
const require = createRequire(import.meta.url);
const derive = require("@polymarket/builder-relayer-client/dist/builder/derive.js");
const relayerContracts = require("@polymarket/builder-relayer-client/dist/config/index.js").getContractConfig(137);
// The relayer client reads the deposit-wallet beacon from the factory on chain; this is Polygon's, as
// polymarket-client's environments.py has it (polybot_venue/WALLETS.md section 2).
const DEPOSIT_WALLET_BEACON = "0x7A18EDfe055488A3128f01F563e5B479D92ffc3a";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const GAMMA = env("FLOW_GAMMA");
const CLOB = env("FLOW_CLOB");
const MARKET_WS = env("FLOW_MARKET_WS");
const USER_WS = env("FLOW_USER_WS");
const MARKETS = env("FLOW_MARKETS").split(",");
const WAIT_MS = 10_000; // the longest any frame may take to arrive
const COLLATERAL = { asset_type: AssetType.COLLATERAL };
const EXCHANGES = getContractConfig(Chain.POLYGON);

let step = "start";
const result = {};

// The client's own setup, as its README shows it: a viem wallet, L1 to create or derive the key, then L2. The L1
// client keeps the default (errors returned, not thrown): createOrDeriveApiKey derives only when creating answers
// an error object, so with throwOnError an account that already has a key (the ready-made one) would fail.
// as(options) makes another L2 client of the same key (signatureType, funderAddress, throwOnError, ...).
async function connect(key) {
  const account = privateKeyToAccount(key);
  const signer = createWalletClient({ account, transport: http(CLOB) }); // never used for RPC here
  const l1 = new ClobClient({ host: CLOB, chain: Chain.POLYGON, signer });
  const creds = await l1.createOrDeriveApiKey();
  const as = (options) => new ClobClient({ host: CLOB, chain: Chain.POLYGON, signer, creds, ...options });
  return { client: as({ throwOnError: true }), creds, address: account.address, as };
}

// A new account's key, its wallet funded and every exchange approved: the venue's admin endpoints stand in for
// the deposit and the approvals its owner would make on chain.
async function fundedAccount() {
  const key = generatePrivateKey();
  const address = privateKeyToAccount(key).address;
  await admin("fund", { address, collateral: 1_000 });
  await admin("approve", { address, exchange: "all", unlimited: true });
  return key;
}

async function admin(action, body) {
  const answer = await fetch(`${CLOB}/_admin/${action}`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  if (!answer.ok) throw new Error(`/_admin/${action} answered ${answer.status}: ${await answer.text()}`);
  return answer.json();
}

// Every response the client received, in order: {method, path, status, retry_after}.
const traffic = [];
const note = (response) => {
  traffic.push({ method: response.config.method.toUpperCase(), path: new URL(response.config.url).pathname,
                 status: response.status, retry_after: response.headers?.["retry-after"] ?? null });
};
axios.interceptors.response.use((response) => { note(response); return response; },
                                (error) => { if (error.response) note(error.response); return Promise.reject(error); });

// What one call of the client did: what it returned or threw, and the requests it made on the way.
async function observe(call) {
  const from = traffic.length;
  try {
    return { returned: await call(), requests: traffic.slice(from) };
  } catch (error) {
    return { threw: error.name, message: error.message, status: error.status ?? null, data: error.data ?? null,
             requests: traffic.slice(from) };
  }
}

// The markets the test gave this run, from Gamma, in the order given.
async function gammaMarkets() {
  const query = MARKETS.map((id) => `condition_ids=${id}`).join("&");
  const listed = await (await fetch(`${GAMMA}/markets?${query}`)).json();
  return MARKETS.map((id) => {
    const market = listed.find((m) => m.conditionId === id);
    if (!market) throw new Error(`Gamma does not list market ${id}`);
    const [yes, no] = JSON.parse(market.clobTokenIds);
    return { ...market, yes, no };
  });
}

// A price moved by n ticks, as a number with no float residue (the client checks it against the tick).
function ticks(price, n, tickSize) {
  const scale = Math.round(1 / Number(tickSize));
  const moved = Math.round(price * scale) + n;
  if (moved <= 0 || moved >= scale) throw new Error(`${price} moved by ${n} ticks of ${tickSize} is off the book`);
  return moved / scale;
}

async function bestPrices(client, token) {
  const book = await client.getOrderBook(token);
  return { bid: Number(book.bids.at(-1).price), ask: Number(book.asks.at(-1).price) };
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

async function trading() {
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
  const [market] = await gammaMarkets();
  const { yes, no } = market;
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

// Every wallet type the client signs for, each a new owner trading through the wallet the relayer client derives
// for it: each rests a bid that the next one's order crosses (1 -> 2, 2 -> 3, 3 -> 1), on a market of its own.
async function wallets() {
  step = "derivation";
  const factory = relayerContracts.DepositWalletContracts.DepositWalletFactory;
  const walletOf = {
    1: (owner) => derive.deriveProxyWallet(owner, relayerContracts.ProxyContracts.ProxyFactory),
    2: (owner) => derive.deriveSafe(owner, relayerContracts.SafeContracts.SafeFactory),
    3: (owner) => derive.deriveBeaconDepositWallet(owner, factory, DEPOSIT_WALLET_BEACON),
  };
  const vector = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"; // WALLETS.md section 2's test vector owner
  result.vector = { owner: vector, proxy: walletOf[1](vector), safe: walletOf[2](vector),
                    beacon: walletOf[3](vector), uups: derive.deriveUupsDepositWallet(
                      vector, factory, relayerContracts.DepositWalletContracts.DepositWalletImplementation) };

  step = "wallet clients";
  const traders = {};
  result.wallets = {};
  for (const kind of [1, 2, 3]) {
    const key = generatePrivateKey();
    const funder = walletOf[kind](privateKeyToAccount(key).address);
    await admin("fund", { address: funder, collateral: 1_000 });
    await admin("approve", { address: funder, exchange: "all", unlimited: true });
    const owner = await connect(key); // the API key is always the owner EOA's
    const client = owner.as({ signatureType: kind, funderAddress: funder, throwOnError: true });
    traders[kind] = { client, funder };
    // getBalanceAllowance sends the client's signature type: the funder's balance, not the owner's
    result.wallets[kind] = { owner: owner.address, funder, api_key: owner.creds.key,
                             collateral: await client.getBalanceAllowance(COLLATERAL),
                             owner_collateral: (await owner.client.getBalanceAllowance(COLLATERAL)).balance };
  }

  const markets = await gammaMarkets();
  result.rounds = [];
  for (const [i, [makerKind, takerKind]] of [[1, 2], [2, 3], [3, 1]].entries()) {
    step = `round ${makerKind} -> ${takerKind}`;
    const { conditionId, yes, no, feeSchedule } = markets[i];
    const maker = traders[makerKind], taker = traders[takerKind];
    const tickSize = await maker.client.getTickSize(yes);
    const options = { tickSize, negRisk: false };
    const { bid } = await bestPrices(maker.client, yes);
    const price = ticks(bid, 1, tickSize); // inside the spread: rests
    const held = async (client, token) =>
      (await client.getBalanceAllowance({ asset_type: AssetType.CONDITIONAL, token_id: token })).balance;
    const balances = async () => ({
      maker: (await maker.client.getBalanceAllowance(COLLATERAL)).balance,
      taker: (await taker.client.getBalanceAllowance(COLLATERAL)).balance,
      maker_yes: await held(maker.client, yes), taker_no: await held(taker.client, no) });
    const before = await balances();
    const resting = await maker.client.createAndPostOrder({ tokenID: yes, price, size: 10, side: Side.BUY }, options,
                                                          OrderType.GTC);
    const open = await maker.client.getOpenOrders({ asset_id: yes });
    const crossing = await taker.client.createAndPostOrder(
      { tokenID: no, price: ticks(1 - price, 0, tickSize), size: 10, side: Side.BUY }, options, OrderType.GTC);
    const [makerTrade] = await maker.client.getTrades({ id: crossing.tradeIDs[0] });
    result.rounds.push({
      market: conditionId, fee_rate: feeSchedule.rate, fee_exponent: feeSchedule.exponent, maker_kind: makerKind,
      taker_kind: takerKind, price, resting: { id: resting.orderID, status: resting.status },
      open: open.map((o) => ({ id: o.id, maker_address: o.maker_address })),
      crossing: { status: crossing.status, trade_ids: crossing.tradeIDs, making: crossing.makingAmount,
                  taking: crossing.takingAmount },
      maker_trade: { id: makerTrade.id, trader_side: makerTrade.trader_side, maker_address: makerTrade.maker_address },
      before, after: await balances() });
  }

  step = "a wallet that is not the signature type's";
  // A new owner signs a proxy (type 1) order whose maker is its own Safe: well-formed, and the venue must refuse it.
  const key = generatePrivateKey();
  const owner = await connect(key);
  const safe = walletOf[2](owner.address);
  await admin("fund", { address: safe, collateral: 100 });
  await admin("approve", { address: safe, exchange: "all", unlimited: true });
  const wrong = owner.as({ signatureType: 1, funderAddress: safe, throwOnError: true });
  const { yes } = markets[0];
  const bid = { tokenID: yes, price: 0.02, size: 10, side: Side.BUY };
  const options = { tickSize: "0.01", negRisk: false };
  result.wrong_wallet = await observe(() => wrong.createAndPostOrder(bid, options));
  // A deposit-wallet client not told its wallet signs with maker = signer = the owner EOA (createOrder.ts).
  const noFunder = owner.as({ signatureType: 3, throwOnError: true });
  const asOwner = await noFunder.createOrder(bid, options);
  result.no_funder = { owner: owner.address, maker: asOwner.maker, signer: asOwner.signer,
                       signature_type: asOwner.signatureType,
                       posted: await observe(() => noFunder.createAndPostOrder(bid, options)) };
}

// A protocol-v2 market (Gamma version "v2", position ids): the client signs for exchange V3 only when told
// (options.version 3, or createExchangeV3OrderFromAmounts); unasked it signs for V2 and the venue says which.
async function protocolV2() {
  step = "v2 market";
  const [market, v1Market] = await gammaMarkets();
  const { yes, no } = market;
  result.market = { condition_id: market.conditionId, version: market.version, yes, no,
                    fee_rate: market.feeSchedule.rate, fee_exponent: market.feeSchedule.exponent };
  const maker = await connect(await fundedAccount());
  const lenient = maker.as({}); // the client's default: error bodies returned, not thrown
  const tickSize = await maker.client.getTickSize(yes);
  const { bid, ask } = await bestPrices(maker.client, yes);
  const price = ticks(bid, 1, tickSize);
  const order = { tokenID: yes, price, size: 10, side: Side.BUY };
  result.book = { bid, ask, tick_size: tickSize, neg_risk: await maker.client.getNegRisk(yes) };

  step = "signed for the wrong version";
  // The tick size and neg risk given, so the only requests are the order's own and the version's.
  result.mismatch = {
    throwing: await observe(() => maker.client.createAndPostOrder(order, { tickSize, negRisk: false })),
    returning: await observe(() => lenient.createAndPostOrder(order, { tickSize, negRisk: false })),
    v1_market_as_v3: await observe(() => maker.client.createAndPostOrder(
      { tokenID: v1Market.yes, price: 0.02, size: 10, side: Side.BUY }, { tickSize: "0.01", negRisk: false,
                                                                          version: 3 })),
    open_after: (await maker.client.getOpenOrders()).length,
  };

  step = "signed for exchange V3";
  const resting = await observe(() => maker.client.createAndPostOrder(order, { tickSize, negRisk: false,
                                                                              version: 3 }));
  result.resting = { ...resting, fetched: (await maker.client.getOrder(resting.returned.orderID)).status };

  step = "a deposit wallet crosses it with exact amounts";
  const takerKey = generatePrivateKey();
  const takerOwner = privateKeyToAccount(takerKey).address;
  const wallet = derive.deriveBeaconDepositWallet(
    takerOwner, relayerContracts.DepositWalletContracts.DepositWalletFactory, DEPOSIT_WALLET_BEACON);
  await admin("fund", { address: wallet, collateral: 1_000 });
  await admin("approve", { address: wallet, exchange: "all", unlimited: true });
  const taker = (await connect(takerKey)).as({ signatureType: 3, funderAddress: wallet, throwOnError: true });
  const scale = Math.round(1 / Number(tickSize));
  const noTicks = scale - Math.round(price * scale); // 1 - price, in ticks
  const signed = await taker.createExchangeV3OrderFromAmounts({
    tokenID: no, side: Side.BUY, takerAmount: String(10 * 10 ** 6),
    makerAmount: String(noTicks * 10 * 10 ** 6 / scale) });
  const crossing = await taker.postOrder(signed, OrderType.GTC);
  const [makerTrade] = await maker.client.getTrades({ id: crossing.tradeIDs[0] });
  result.crossing = {
    order: { maker: signed.maker, signer: signed.signer, signature_type: signed.signatureType,
             signature_bytes: (signed.signature.length - 2) / 2, maker_amount: signed.makerAmount },
    status: crossing.status, trade_ids: crossing.tradeIDs, making: crossing.makingAmount, taking: crossing.takingAmount,
    maker_trade: { id: makerTrade.id, asset_id: makerTrade.asset_id, trader_side: makerTrade.trader_side },
    maker_open_after: (await maker.client.getOpenOrders({ asset_id: yes })).length,
    maker_yes: await maker.client.getBalanceAllowance({ asset_type: AssetType.CONDITIONAL, token_id: yes }),
    taker_wallet: wallet, taker_owner: takerOwner,
    taker_no: (await taker.getBalanceAllowance({ asset_type: AssetType.CONDITIONAL, token_id: no })).balance,
    taker_collateral: (await taker.getBalanceAllowance(COLLATERAL)).balance };
}

// A new account has nothing: the venue refuses its orders with its own texts until the wallet holds pUSD and the
// exchange may spend it (a BUY), or holds the tokens and the exchange may move them (a SELL).
async function funding() {
  step = "a new account";
  const [market] = await gammaMarkets();
  const { yes } = market;
  const account = await connect(generatePrivateKey());
  const client = account.client;
  const tickSize = await client.getTickSize(yes);
  const options = { tickSize, negRisk: false };
  const { bid, ask } = await bestPrices(client, yes);
  const buy = { tokenID: yes, price: ticks(bid, 1, tickSize), size: 10, side: Side.BUY };
  const sell = { tokenID: yes, price: ask, size: 10, side: Side.SELL }; // at the ask: rests, crosses no bid
  const shares = { asset_type: AssetType.CONDITIONAL, token_id: yes };
  result.exchange = EXCHANGES.exchangeV2;
  result.buy_price = buy.price;
  result.empty = await client.getBalanceAllowance(COLLATERAL);
  result.unfunded = await observe(() => client.createAndPostOrder(buy, options));

  step = "funded, not approved";
  await admin("fund", { address: account.address, collateral: 100 });
  result.funded = await client.getBalanceAllowance(COLLATERAL);
  result.unapproved = await observe(() => client.createAndPostOrder(buy, options));

  step = "approved";
  await admin("approve", { address: account.address, exchange: EXCHANGES.exchangeV2, amount: 50 });
  result.updated = await client.updateBalanceAllowance(COLLATERAL);
  result.approved = await client.getBalanceAllowance(COLLATERAL);
  result.buy = await observe(() => client.createAndPostOrder(buy, options));

  step = "tokens, not approved";
  await admin("fund", { address: account.address, shares: { [yes]: 20 } });
  result.shares = await client.getBalanceAllowance(shares);
  result.unapproved_sell = await observe(() => client.createAndPostOrder(sell, options));

  step = "tokens approved";
  await admin("approve", { address: account.address, exchange: EXCHANGES.exchangeV2, conditional: true });
  result.updated_shares = await client.updateBalanceAllowance(shares);
  result.approved_shares = await client.getBalanceAllowance(shares);
  result.sell = await observe(() => client.createAndPostOrder(sell, options));
  result.open = (await client.getOpenOrders({ asset_id: yes })).map((o) => ({ id: o.id, side: o.side }));
  await client.cancelAll();
}

// A matching-engine restart (425, then a post-only window of 503s) and a per-signer rate limit (429), as the
// client meets them: a throwing client (throwOnError, and retryOnError, which retries a 5xx once) and one with the
// client's defaults (error bodies returned).
async function operations() {
  step = "accounts";
  const [market] = await gammaMarkets();
  const { yes } = market;
  const account = await connect(await fundedAccount());
  const strict = account.as({ throwOnError: true, retryOnError: true });
  const lenient = account.as({});
  const tickSize = await strict.getTickSize(yes);
  const options = { tickSize, negRisk: false };
  const { bid } = await bestPrices(strict, yes);
  const order = () => ({ tokenID: yes, price: ticks(bid, -1, tickSize), size: 10, side: Side.BUY }); // rests
  const resting = await strict.createAndPostOrder(order(), options);
  result.resting = resting.orderID;

  step = "restart: down";
  result.down_admin = await admin("restart", { seconds: 600, post_only_seconds: 600 });
  result.down = {
    order: await observe(() => strict.createAndPostOrder(order(), options, OrderType.GTC, true)),
    order_returned: await observe(() => lenient.createAndPostOrder(order(), options)),
    cancel: await observe(() => strict.cancelOrder({ orderID: resting.orderID })),
    cancel_returned: await observe(() => lenient.cancelOrder({ orderID: resting.orderID })),
    book: (await strict.getOrderBook(yes)).asset_id,
    open: (await strict.getOpenOrders({ asset_id: yes })).map((o) => o.id),
  };

  step = "restart: post only";
  result.post_only_admin = await admin("restart", { seconds: 0, post_only_seconds: 600 });
  const postOnly = await observe(() => strict.createAndPostOrder(order(), options, OrderType.GTC, true));
  result.post_only = {
    order: await observe(() => strict.createAndPostOrder(order(), options)),
    order_returned: await observe(() => lenient.createAndPostOrder(order(), options)),
    post_only: postOnly,
    cancel: await observe(() => strict.cancelOrder({ orderID: resting.orderID })),
  };

  step = "restart: over";
  result.normal_admin = await admin("restart", { seconds: 0, post_only_seconds: 0 });
  result.normal = await observe(() => strict.createAndPostOrder(order(), options));

  step = "rate limit";
  const signed = [];
  for (const n of [4, 5, 6, 7, 8, 9]) signed.push(await strict.createOrder(order(n), options));
  result.limits = await admin("rate-limits", { orders: { rate: 0.001, burst: 3 } });
  const posts = [];
  for (const one of signed.slice(0, 3)) posts.push(await observe(() => strict.postOrder(one)));
  result.limited = {
    allowed: posts,
    order: await observe(() => strict.postOrder(signed[3])),
    order_returned: await observe(() => lenient.postOrder(signed[3])),
    batch: await observe(() => strict.postOrders(signed.slice(4).map((o) => ({ order: o, orderType: OrderType.GTC })))),
    cancel_all: await observe(() => strict.cancelAll()),
  };
  result.reset_limits = await admin("rate-limits", {});
  result.after_reset = await observe(() => strict.postOrder(signed[3]));
  result.open_after_reset = (await strict.getOpenOrders({ asset_id: yes })).map((o) => o.id);
  await strict.cancelAll();
}

const SCENARIOS = { trading, wallets, v2: protocolV2, funding, operations };
const scenario = SCENARIOS[process.argv[2]];
try {
  if (!scenario) throw new Error(`give a scenario: ${Object.keys(SCENARIOS).join(", ")}`);
  await scenario();
  process.stdout.write(JSON.stringify(result) + "\n");
} catch (error) {
  const detail = error?.data ?? error?.response?.data;
  process.stdout.write(JSON.stringify({ failed: step, error: String(error?.message ?? error), status: error?.status,
                                        detail, partial: result }) + "\n");
  process.exitCode = 1;
} finally {
  setTimeout(() => process.exit(), 100).unref();
}
