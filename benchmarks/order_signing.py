"""Signing speed of the two Polymarket clients on our path, for the client decision (README "Dependencies").

For py-clob-client-v2 (PCC2, what the adapter uses) and polymarket-client (PMC, the unified SDK) this measures:

- signing one order for an EOA (signature type 0) and for a deposit wallet (type 3, the ERC-7739 ``TypedDataSign``
  wrapper), on the V2 exchange domain;
- for PCC2 also signing plus the order's hash (its venue id), which our adapter computes for every order;
- building a ``POST /orders`` batch of 15 signed orders: the JSON payload, its body and the L2 (HMAC) headers.

PCC2 signs the way ``services/venues/polymarket/client.py`` does (``ExchangeOrderBuilderV2`` with our salt and
timestamp). PMC signs through ``SecureClient._sign_order``, the step ``create_limit_order`` runs after looking up
the market (a server round trip, cached per token, left out here); it has no public way to sign without that.

Each client runs in a process of its own: PCC2 in this Python, PMC in the unified SDK's virtual environment that
``tests/test_venue_unified_sdk.py`` builds (it pins older websockets and eth-account than ours), or the one given
with ``--sdk-python``; without it only PCC2 is measured, and the output says so. Both are measured with eth-keys on
coincurve (our dependency; PMC's environment gets ours on its path, as it would have if we adopted it) and on its
pure-Python fallback. Both sign the same order with the same salt and timestamp once, and the output says whether
their signatures are byte for byte the same. Figures are CPU time of the measuring process, reported, never
asserted.

Run: ``python benchmarks/order_signing.py [--budget S] [--repeat R] [--sdk-python PATH]``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SDK_REQUIREMENTS = ROOT / "tests" / "unified_sdk" / "requirements.txt"
CHAIN_ID = 137
# A throwaway key made here, never funded anywhere.
KEY = "0x" + hashlib.sha256(b"polybot order_signing benchmark key").hexdigest()
TOKEN = "71321045679252212594626385532706912750332728571942532289631379312455583992563"  # a v1 token id
MAKER_AMOUNT, TAKER_AMOUNT = 45_000_000, 100_000_000  # BUY 100 shares at 0.45
SALT, TIMESTAMP_MS = 187_000_000_000_001, 1_800_000_000_000  # the order both clients sign to compare signatures
BATCH = 15
CREDS = {"key": "00000000-0000-4000-8000-000000000001",
         "secret": "c2VjcmV0LW9mLXRoZS1vcmRlci1zaWduaW5nLWJlbmNobWFyaw==",
         "passphrase": "benchmark-passphrase"}
BACKENDS = {"coincurve": "eth_keys.backends.CoinCurveECCBackend",
            "pure Python": "eth_keys.backends.NativeECCBackend"}
OPS = (("sign_eoa", "sign one order, EOA"),
       ("sign_deposit", "sign one order, deposit wallet"),
       ("sign_eoa_id", "sign + venue id, EOA"),
       ("sign_deposit_id", "sign + venue id, deposit wallet"),
       ("batch_headers", f"POST /orders payload + L2 headers, {BATCH} orders"))


def per_call(fn, budget_s: float, repeat: int) -> float:
    """CPU seconds per call of ``fn``: the best of ``repeat`` rounds of ``budget_s`` each. CPU time of this process,
    not the wall clock, so other work on a busy machine does not count (the work is single-threaded)."""
    fn()  # warm caches (eth-abi encoders, the backend) outside the rounds
    best = float("inf")
    for _ in range(repeat):
        calls, started = 0, time.process_time()
        while (elapsed := time.process_time() - started) < budget_s:
            fn()
            calls += 1
        best = min(best, elapsed / calls)
    return best


# ----------------------------------------------------------------------- workers (one client, one process each)

def pcc2_worker(wallet: str, budget_s: float, repeat: int) -> dict:
    from importlib.metadata import version

    from py_clob_client_v2.clob_types import ApiCreds, RequestArgs
    from py_clob_client_v2.config import get_contract_config
    from py_clob_client_v2.constants import BYTES32_ZERO
    from py_clob_client_v2.headers.headers import create_level_2_headers
    from py_clob_client_v2.order_utils import ExchangeOrderBuilderV2, OrderDataV2, Side, SignatureTypeV2
    from py_clob_client_v2.order_utils.model.order_data_v2 import order_to_json_v2
    from py_clob_client_v2.signer import Signer

    signer = Signer(KEY, CHAIN_ID)
    exchange = get_contract_config(CHAIN_ID).exchange_v2
    creds = ApiCreds(CREDS["key"], CREDS["secret"], CREDS["passphrase"])
    salts = iter(range(SALT + 1, 2**62))

    def sign(deposit: bool, salt: int | None = None, with_id: bool = False):
        """As the adapter's ``Clob._sign``: a builder per order, drawing our salt, stamped with our time."""
        salt = str(next(salts) if salt is None else salt)
        maker = wallet if deposit else signer.address()
        builder = ExchangeOrderBuilderV2(exchange, CHAIN_ID, signer, generate_salt=lambda: salt)
        signed = builder.build_signed_order(OrderDataV2(
            maker=maker, signer=maker, tokenId=TOKEN, makerAmount=str(MAKER_AMOUNT), takerAmount=str(TAKER_AMOUNT),
            side=Side.BUY, signatureType=SignatureTypeV2.POLY_1271 if deposit else SignatureTypeV2.EOA,
            timestamp=str(TIMESTAMP_MS), metadata=BYTES32_ZERO, builder=BYTES32_ZERO, expiration="0"))
        if with_id:
            builder.build_order_hash(builder.build_order_typed_data(signed))
        return signed

    batch = [sign(deposit=False) for _ in range(BATCH)]

    def batch_headers() -> None:
        """As the adapter's ``Clob.place``: the payload, its body, and the L2 headers over that body."""
        payload = [order_to_json_v2(o, creds.api_key, "GTC", False, False) for o in batch]
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        create_level_2_headers(signer, creds, RequestArgs(method="POST", request_path="/orders", body=payload,
                                                          serialized_body=body))

    timings = {"sign_eoa": lambda: sign(False), "sign_deposit": lambda: sign(True),
               "sign_eoa_id": lambda: sign(False, with_id=True), "sign_deposit_id": lambda: sign(True, with_id=True),
               "batch_headers": batch_headers}
    return {"version": version("py-clob-client-v2"), "eth_account": version("eth-account"),
            "signatures": {"eoa": sign(False, SALT).signature, "deposit": sign(True, SALT).signature},
            "seconds": {op: per_call(fn, budget_s, repeat) for op, fn in timings.items()}}


def pmc_worker(wallet: str, budget_s: float, repeat: int) -> dict:
    import dataclasses
    from importlib.metadata import version

    from polymarket import PRODUCTION, ApiKeyCreds, SecureClient
    from polymarket._internal.actions.orders import orders as sdk_orders
    from polymarket._internal.actions.orders.post import build_post_orders_request
    from polymarket._internal.actions.orders.types import OrderDraft
    from polymarket._internal.environment import create_environment, get_environment_config
    from polymarket.clients.secure import _make_l2_header_resolver_sync

    # Every host on loopback's discard port: nothing here sends a request, and nothing could reach a real service.
    nowhere = "http://127.0.0.1:9"
    config = dataclasses.replace(
        get_environment_config(PRODUCTION), clob_url=nowhere, gamma_url=nowhere, data_url=nowhere,
        relayer_url=nowhere, rpc_url=nowhere, rfq_url=nowhere, collateral_return_url=nowhere,
        builder_gateway_url=nowhere, clob_market_ws_url="ws://127.0.0.1:9", clob_user_ws_url="ws://127.0.0.1:9")
    environment = create_environment(name="benchmark", config=config)
    creds = ApiKeyCreds.model_validate({"apiKey": CREDS["key"], "secret": CREDS["secret"],
                                        "passphrase": CREDS["passphrase"]})

    def client(wallet_address: str | None) -> SecureClient:
        # create() would ask the relayer whether the wallet is deployed and the CLOB whether the key is live;
        # _create with given credentials left unchecked builds the same client without a request.
        from eth_account import Account
        return SecureClient._create(private_key=KEY, wallet=wallet_address or Account.from_key(KEY).address,
                                    environment=environment, credentials=creds, validate_credentials=False)

    eoa, deposit = client(None), client(wallet)
    if deposit.wallet_type != "DEPOSIT_WALLET":  # the SDK classifies the wallet from its address
        raise SystemExit(f"polymarket-client takes {wallet} for a {deposit.wallet_type}, not the key's deposit wallet")

    def draft(c: SecureClient) -> OrderDraft:
        return OrderDraft(chain_id=CHAIN_ID, exchange_address=config.standard_exchange, expiration=0,
                          funder_address=c.wallet, offered_amount=MAKER_AMOUNT, order_type="GTC", side="BUY",
                          signer=c.signer, requested_amount=TAKER_AMOUNT, asset_id=TOKEN)

    eoa_draft, deposit_draft = draft(eoa), draft(deposit)

    def fixed_signature(c: SecureClient, d: OrderDraft) -> str:
        """The SDK draws its salt and time inside (orders.py); a fixed one takes replacing its private functions."""
        drawn = sdk_orders._generate_salt, sdk_orders._current_timestamp_ms
        sdk_orders._generate_salt, sdk_orders._current_timestamp_ms = (lambda: SALT), (lambda: TIMESTAMP_MS)
        try:
            return c._sign_order(d, post_only=False).signature
        finally:
            sdk_orders._generate_salt, sdk_orders._current_timestamp_ms = drawn

    batch = [eoa._sign_order(eoa_draft, post_only=False) for _ in range(BATCH)]
    resolver = _make_l2_header_resolver_sync(eoa._ctx.signer, creds)

    def batch_headers() -> None:
        """As ``SecureClient.post_orders`` and its transport: the payload, its body, the L2 headers."""
        path, payload = build_post_orders_request(batch, owner_api_key=creds.key)
        resolver("POST", path, json.dumps(payload, separators=(",", ":")))

    timings = {"sign_eoa": lambda: eoa._sign_order(eoa_draft, post_only=False),
               "sign_deposit": lambda: deposit._sign_order(deposit_draft, post_only=False),
               "batch_headers": batch_headers}
    out = {"version": version("polymarket-client"), "eth_account": version("eth-account"),
           "signatures": {"eoa": fixed_signature(eoa, eoa_draft), "deposit": fixed_signature(deposit, deposit_draft)},
           "seconds": {op: per_call(fn, budget_s, repeat) for op, fn in timings.items()}}
    eoa.close()
    deposit.close()
    return out


# ----------------------------------------------------------------------------------------- the comparison

def sdk_python(given: str | None) -> Path | None:
    """The unified SDK's interpreter: given, else the test suite's cached environment for requirements.txt (the
    digest as ``tests/cached_install.py`` keys it)."""
    if given:
        if not Path(given).is_file():
            raise SystemExit(f"--sdk-python {given}: no such interpreter; give the python of an environment with "
                             f"polymarket-client installed (pip install -r {SDK_REQUIREMENTS.relative_to(ROOT)})")
        return Path(given)
    digest = hashlib.sha256(SDK_REQUIREMENTS.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "polybot-tests" / "unified-sdk"
    folder = cache / digest
    return folder / "bin" / "python" if (folder / ".installed").exists() else None


def run_worker(python: Path, client: str, backend: str, wallet: str, args, extra_path: str = "") -> dict:
    env = {**os.environ, "ECC_BACKEND_CLASS": BACKENDS[backend]}
    if extra_path:
        env["PYTHONPATH"] = extra_path
    else:
        env.pop("PYTHONPATH", None)
    done = subprocess.run([str(python), __file__, "--worker", client, "--wallet", wallet, "--budget",
                           str(args.budget), "--repeat", str(args.repeat)], env=env, capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"the {client} worker ({backend}) failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def link_coincurve(folder: str) -> str:
    """``folder`` holding only our coincurve, for PMC's environment (which has none): eth-keys then signs with it."""
    import coincurve
    (Path(folder) / "coincurve").symlink_to(Path(coincurve.__file__).parent)
    return folder


def report(results: dict[tuple[str, str], dict], backends: list[str]) -> None:
    clients = sorted({c for c, _ in results}, key=["PCC2", "PMC"].index)
    for backend in backends:
        print(f"\neth-keys on {backend}:")
        print(f"  {'operation':<44}" + "".join(f"{c + ' µs/order':>16}{c + ' orders/s':>16}" for c in clients)
              + ("  PMC/PCC2 time" if len(clients) == 2 else ""))
        for op, label in OPS:
            cells, times = "", {}
            for c in clients:
                seconds = results[(c, backend)]["seconds"].get(op)
                per_order = seconds / BATCH if seconds is not None and op == "batch_headers" else seconds
                times[c] = per_order
                cells += (f"{per_order * 1e6:>16,.1f}{1 / per_order:>16,.0f}" if per_order is not None
                          else f"{'(none)':>16}{'':>16}")
            ratio = (f"{times['PMC'] / times['PCC2']:>13.2f}x" if len(clients) == 2 and None not in times.values()
                     else "")
            print(f"  {label:<44}{cells}  {ratio}")
        for c in clients:
            batch = results[(c, backend)]["seconds"]["batch_headers"]
            print(f"  {c}: a batch of {BATCH} is {batch * 1e6:,.0f} µs to build ({1 / batch:,.0f} batches/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=0.4, help="seconds per round of each operation")
    parser.add_argument("--repeat", type=int, default=5, help="rounds per operation; the best is reported")
    parser.add_argument("--sdk-python", help="the Python of an environment with polymarket-client installed")
    parser.add_argument("--pure-python", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure with eth-keys' pure-Python backend")
    parser.add_argument("--worker", choices=("pcc2", "pmc"), help=argparse.SUPPRESS)
    parser.add_argument("--wallet", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker = pcc2_worker if args.worker == "pcc2" else pmc_worker
        print(json.dumps(worker(args.wallet, args.budget, args.repeat)))
        return

    sys.path.insert(0, str(ROOT))
    from eth_account import Account

    from polybot_venue.wallets import deposit_wallet_beacon
    owner = Account.from_key(KEY).address
    wallet = deposit_wallet_beacon(owner, CHAIN_ID)  # the deposit wallet PMC derives for this key: it signs for it
    backends = list(BACKENDS) if args.pure_python else ["coincurve"]
    pmc = sdk_python(args.sdk_python)
    results: dict[tuple[str, str], dict] = {}
    with tempfile.TemporaryDirectory(prefix="polybot-coincurve-") as folder:
        extra = link_coincurve(folder) if pmc else ""
        for backend in backends:
            results[("PCC2", backend)] = run_worker(Path(sys.executable), "pcc2", backend, wallet, args)
            if pmc:
                results[("PMC", backend)] = run_worker(pmc, "pmc", backend, wallet, args,
                                                       extra if backend == "coincurve" else "")
    first = results[("PCC2", backends[0])]
    print(f"py-clob-client-v2 {first['version']} (PCC2) in {sys.executable}, eth-account {first['eth_account']}")
    if pmc:
        sdk = results[("PMC", backends[0])]
        print(f"polymarket-client {sdk['version']} (PMC) in {pmc}, eth-account {sdk['eth_account']}, with our "
              "coincurve on its path for the coincurve figures")
        for kind in ("eoa", "deposit"):
            same = first["signatures"][kind] == sdk["signatures"][kind]
            print(f"  same order, salt and timestamp, {kind}: the signatures are "
                  f"{'byte for byte the same' if same else 'DIFFERENT'}")
    else:
        print("polymarket-client (PMC): no environment found; build it with `make test` (tests/"
              "test_venue_unified_sdk.py) or pass --sdk-python. Only PCC2 is measured.")
    print(f"CPU time, best of {args.repeat} rounds of {args.budget:g} s each; 'sign + venue id' is what our adapter does per "
          "order (PMC has no function for the id); the batch row is per order")
    report(results, backends)


if __name__ == "__main__":
    main()
