"""The executor's options: ``[services.executor] options = {...}`` in the config."""
from __future__ import annotations

import msgspec


class ExecutorOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    scanner: str = "scanner"  # whose snapshot market rules and (paper) books start from; "" for none (live only)
    leg_wait_ms: float = 1.0  # how long a signal's first order waits for its other legs, so they go out together
    call_timeout_s: float = 10.0  # the longest one venue call may take
    workers: int = 4  # threads for venue calls
    heartbeat_s: float = 5.0  # venue heartbeats; once started, the venue cancels our orders when they stop. 0: none
    reconcile_s: float = 30.0  # REST reconciliation of orders and trades, besides after each reconnection
    # How often the venue is asked whether the markets held have resolved, besides at start and after each
    # reconnection (one request per market held): a resolution no one heard announced is settled then. 0: only then.
    resolutions_s: float = 300.0
    ping_s: float = 10.0  # user channel
    stale_after_s: float = 30.0
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0
    fsync: bool = False  # fsync the journal on every record: survives power loss, not only a crash
    # At start, a journal bigger than journal_compact_mb is rewritten as what still matters: every fill, settlement
    # and rebate report, the orders open or taken in the last journal_keep_days, and the last journal_keep_numbered
    # records published (what a subscriber that was down can still ask for). 0: never compacted.
    journal_compact_mb: float = 64.0
    journal_keep_days: float = 7.0
    journal_keep_numbered: int = 100_000
    # An order older than this when it could go out is refused, not sent: risk priced it on a book that is gone
    # (orders queue up in risk's socket while the executor is down, and arrive in a burst when it is back).
    max_order_age_ms: int = 3000
    # Backpressure. The executor's lag is the age of its oldest order the venue has not answered yet (from when
    # risk sent it), or the wait of the latest order to be handled, whichever is larger. Past throttle_lag_ms the
    # signal producers are throttled over control to throttle_signals_per_s; they are released once the lag has
    # stayed under release_lag_ms for release_after_s.
    throttle_lag_ms: float = 750.0  # 0: never throttle
    release_lag_ms: float = 250.0
    release_after_s: float = 2.0
    throttle_signals_per_s: float = 1.0
    throttle_services: list[str] = []  # whom to throttle; empty: every enabled strategies host of the config
    # The venue's bad days (see gate.py). A 425 without a Retry-After is taken to last restart_retry_s; the post-only
    # window after a restart, when the venue does not say how long it lasts, post_only_after_restart_s (Polymarket's
    # docs: about 2 minutes). rate_tier: the account's rate-limit tier (GET /v1/user/rate-limit-tier), whose rates
    # orders and cancels are paced to. While a wallet cannot pay, its balance is read again every funds_recheck_s.
    restart_retry_s: float = 5.0
    post_only_after_restart_s: float = 120.0
    rate_tier: str = "standard"
    funds_recheck_s: float = 10.0
    rebates_s: float = 60.0  # live: how often the venue's report of the account's maker rebates is read; 0: never
