"""The venue's command line, for ``python -m polybot_venue`` and ``polybot venue`` alike.

Light to import: ``polybot`` builds its parser on every run, and the server (uvicorn, eth_account) loads only
when the venue is served."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .server import VenueOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--gamma-port", type=int, default=8790, help="Gamma REST port (default: 8790)")
    parser.add_argument("--clob-port", type=int, default=8791, help="CLOB REST port (default: 8791)")
    parser.add_argument("--ws-port", type=int, default=8792,
                        help="WebSocket port: /ws/market and /ws/user (default: 8792)")
    parser.add_argument("--seed", type=int, default=7, help="same seed, same markets and prices (default: 7)")
    parser.add_argument("--markets", type=int, default=20, help="binary markets (default: 20)")
    parser.add_argument("--events", type=int, default=3, help="multi-outcome neg-risk events (default: 3)")
    parser.add_argument("--outcomes", type=int, default=4, help="outcomes per event (default: 4)")
    parser.add_argument("--v2-markets", type=int, default=3,
                        help="protocol-v2 binary markets: Gamma version v2, position ids, orders signed for exchange "
                             "V3 (default: 3)")
    parser.add_argument("--v2-events", type=int, default=1,
                        help="protocol-v2 neg-risk events (--outcomes markets each): position ids of the neg-risk "
                             "module, orders signed for exchange V3 (default: 1)")
    parser.add_argument("--page-size", type=int, default=100, help="items per page of paginated lists (default: 100)")
    parser.add_argument("--chain-id", type=int, default=137, choices=(137, 80002),
                        help="chain whose exchange domain orders are signed under (default: 137)")
    parser.add_argument("--starting-collateral", type=int, default=10_000,
                        help="pUSD credited to a funded account (default: 10000)")
    parser.add_argument("--no-fund-test-account", dest="fund_test_account", action="store_false",
                        help="the ready-made test account starts like any other: 0 pUSD, no approvals")
    parser.add_argument("--fund-new-accounts", action="store_true",
                        help="fund every new account and approve every exchange for it (the real venue does not: a "
                             "new account has 0 balance and 0 allowance until funded through /_admin/fund and "
                             "/_admin/approve)")
    parser.add_argument("--deposit-wallet-flow", action="store_true",
                        help="as the real venue does for new accounts: refuse orders whose maker is the EOA itself "
                             "(signature type 0) with 'maker address not allowed, please use the deposit wallet "
                             "flow'; the ready-made test account is exempt")
    parser.add_argument("--heartbeat-timeout-ms", type=int, default=10_000,
                        help="once an account heartbeats, this much silence cancels its orders (default: 10000)")
    parser.add_argument("--mined-after-ms", type=int, default=300,
                        help="a trade turns MINED this long after it matched (default: 300)")
    parser.add_argument("--confirmed-after-ms", type=int, default=800,
                        help="and CONFIRMED this long after (default: 800); /_admin/confirm-trade and "
                             "/_admin/fail-trade settle one sooner")
    parser.add_argument("--still", action="store_true",
                        help="no living markets: books move only on trades and admin requests")
    parser.add_argument("--requotes-per-s", type=float, default=4.0,
                        help="house requotes per second, each moving several levels; raise for load (default: 4)")
    parser.add_argument("--trades-per-s", type=float, default=0.5, help="background trades per second (default: 0.5)")
    parser.add_argument("--gaps-per-s", type=float, default=0.05,
                        help="mispricings per second: YES+NO asks (or an event's YES asks) below 1 (default: 0.05)")
    parser.add_argument("--gap", type=float, default=0.06, help="how far below 1 a mispricing sums (default: 0.06)")
    parser.add_argument("--gap-ms", type=int, default=1500, help="how long a mispricing stays (default: 1500)")
    parser.add_argument("--replay", default="", metavar="FOLDER",
                        help="`polybot venue` only: play back a recording (polybot record) on the market channel "
                             "instead of living markets: its markets on Gamma and the CLOB, its books in order, once "
                             "started with /_admin/replay {\"per_s\": N}")
    parser.add_argument("--replay-per-s", type=float, default=0.0,
                        help="with --replay: play at once, this many recorded messages a second")
    parser.add_argument("--resolutions-per-s", type=float, default=0.002,
                        help="markets resolving (each replaced by a new listing) per second (default: 0.002)")


def options_from(args: argparse.Namespace) -> VenueOptions:
    from .life import LifeOptions
    from .server import VenueOptions

    return VenueOptions(host=args.host, gamma_port=args.gamma_port, clob_port=args.clob_port, ws_port=args.ws_port,
                        seed=args.seed, markets=args.markets, events=args.events, outcomes=args.outcomes,
                        v2_markets=args.v2_markets, v2_events=args.v2_events, chain_id=args.chain_id,
                        page_size=args.page_size,
                        starting_collateral=args.starting_collateral, still=args.still,
                        fund_test_account=args.fund_test_account, fund_new_accounts=args.fund_new_accounts,
                        deposit_wallet_flow=args.deposit_wallet_flow,
                        heartbeat_timeout_ms=args.heartbeat_timeout_ms, mined_after_ms=args.mined_after_ms,
                        confirmed_after_ms=args.confirmed_after_ms,
                        replay=str(Path(args.replay).expanduser().resolve()) if args.replay else "",
                        replay_per_s=args.replay_per_s,
                        life=LifeOptions(requotes_per_s=args.requotes_per_s, trades_per_s=args.trades_per_s,
                                         gaps_per_s=args.gaps_per_s, gap=args.gap, gap_ms=args.gap_ms,
                                         resolutions_per_s=args.resolutions_per_s))


def banner(options: VenueOptions) -> str:
    """Where it listens, and the ready-made test account (local venue only) with its keys."""
    from .server import addresses, ready_made_account

    account = ready_made_account(options.seed)
    urls = addresses(options)
    funding = (f"funded with {options.starting_collateral} pUSD, every exchange approved" if options.fund_test_account
               else "not funded: see /_admin/fund and /_admin/approve")
    return (f"local venue (seed {options.seed}, chain {options.chain_id})\n"
            f"  gamma  {urls['gamma']}\n  clob   {urls['clob']}\n"
            f"  market {urls['market_ws']}\n  user   {urls['user_ws']}\n"
            f"test account (local venue only; {funding})\n"
            f"  address     {account.address}\n  private key {account.private_key}\n"
            f"  api key     {account.credentials.api_key}\n  api secret  {account.credentials.secret}\n"
            f"  passphrase  {account.credentials.passphrase}")
