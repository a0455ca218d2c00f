"""A deposit wallet's session signer, driven through the unified SDK (polymarket-client) against a local venue.

Run by tests/test_venue_session_keys.py with the SDK's own Python, like flow.py, whose environment and helpers it
borrows. The owner's client lists the wallet's session signers; a client holding only the session key (``wallet=``
the owner's deposit wallet, which its key does not derive) signs orders in the SDK's session envelope. The venue's
admin endpoint stands in for the wallet's on-chain ``authorizeSessionSigner``/``revokeSessionSigner``. It prints one
JSON line ``{"result": ...}``; the test asserts. Keys are never printed."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from polymarket import SecureClient

_spec = importlib.util.spec_from_file_location("flow", Path(__file__).with_name("flow.py"))
flow = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(flow)  # the script runs isolated (-I): flow.py is loaded by path, not imported
ENV = os.environ


def keys(owner: SecureClient) -> list[dict]:
    return [{"address": k.address, "scopes": [str(s) for s in k.scopes], "valid_until": int(k.valid_until.timestamp())}
            for k in owner.fetch_session_keys()]


def order(client: SecureClient, token: str, price, **extra) -> dict:
    """Place a post-only BUY of 5 at ``price``, or what the SDK raised instead."""
    return flow.raised(client.place_limit_order, token_id=token, price=price, size=5, side="BUY", **extra)


def main() -> None:
    environment = flow.venue_environment()
    wallet, other_wallet, signer = ENV["SDK_SESSION_WALLET"], ENV["SDK_SESSION_OTHER_WALLET"], ENV["SDK_SESSION_SIGNER"]
    yes = ENV["SDK_SESSION_TOKEN"]
    owner = SecureClient.create(private_key=ENV["SDK_SESSION_OWNER_KEY"], wallet=wallet, environment=environment)
    session = SecureClient.create(private_key=ENV["SDK_SESSION_KEY"], wallet=wallet, environment=environment)
    try:
        price = flow.top(session, yes)["bid"]  # rests at the best bid: post-only, it takes nothing
        result: dict = {"wallet_types": [owner.wallet_type, session.wallet_type],
                        "wallets": [owner.wallet, session.wallet], "keys_before": keys(owner),
                        "unauthorised": order(session, yes, price, post_only=True)}

        flow.admin("session-key", wallet=wallet, signer=signer, scopes=["CLOB"])
        result["keys"] = keys(owner)
        signed = session.create_limit_order(token_id=yes, price=price, size=5, side="BUY", post_only=True)
        result["signed"] = {"maker": signed.maker, "signer": signed.signer, "signature_type": signed.signature_type,
                            "signature": signed.signature}
        placed = session.post_order(signed)
        result["placed"] = {"ok": placed.ok, "status": placed.status, "order_id": placed.order_id}
        result["open"] = [[o.id, o.maker_address] for o in session.list_open_orders(token_id=yes).iter_items()]
        result["balance"] = session.get_balance_allowance(asset_type="COLLATERAL").balance
        result["canceled"] = list(session.cancel_order(order_id=placed.order_id).canceled)
        ask = flow.top(session, yes)["ask"]
        crossing = session.place_limit_order(token_id=yes, price=ask, size=5, side="BUY")
        result["crossing"] = {"status": crossing.status, "trade_ids": list(crossing.trade_ids)}
        result["trades"] = [[t.id, t.maker_address, t.trader_side]
                            for t in session.list_account_trades(asset_id=yes).iter_items()]

        # A key the wallet did not authorise for this wallet, or not for the CLOB, signs for nobody.
        elsewhere = SecureClient.create(private_key=ENV["SDK_SESSION_KEY"], wallet=other_wallet,
                                        environment=environment)
        try:
            result["other_wallet"] = order(elsewhere, yes, price, post_only=True)
        finally:
            elsewhere.close()
        flow.admin("session-key", wallet=wallet, signer=signer, scopes=["COMBOSRFQ"])
        result["other_scope"] = order(session, yes, price, post_only=True)

        flow.admin("session-key", wallet=wallet, signer=signer, revoke=True)
        result["revoked"] = order(session, yes, price, post_only=True)
        result["keys_after"] = keys(owner)
    finally:
        owner.close()
        session.close()
    print(json.dumps({"result": result}, default=str), flush=True)


if __name__ == "__main__":
    main()
