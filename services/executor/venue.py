"""The executor's venue: paper or live, made from the config and secrets, with each call timed."""
from __future__ import annotations

import time
from typing import Any

from ..config import Config, Secrets, local_venue_key, venue_urls
from ..runtime import StartupError
from ..venues.base import VenueError
from .options import ExecutorOptions

TIMED = ("prepare", "place", "cancel", "order", "open_orders", "trades", "rules", "resolution")  # prepare: rounding and signing


class TimedVenue:
    """The venue, with each call in ``TIMED`` timed and its failures counted by operation."""

    def __init__(self, venue: Any, latency: Any, errors: Any) -> None:
        self._venue = venue
        self._latency = latency
        self._errors = errors

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._venue, name)
        if name not in TIMED:
            return call
        latency, errors = self._latency.labels(name), self._errors.labels(name)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await call(*args, **kwargs)
            except VenueError:
                errors.inc()
                raise
            finally:
                latency.observe(time.perf_counter() - started)
        return timed



def make_venue(ctx: Any, mode: str) -> Any:
    """Paper fills against the scanner's books; live trades through Polymarket's client for the configured key."""
    opts: ExecutorOptions = ctx.options
    urls = venue_urls(ctx.config)
    if mode == "paper":  # resolutions are the papered venue's, read without an account
        from ..venues.paper import PaperVenue
        from ..venues.polymarket.client import MarketReader
        return PaperVenue(ctx.clock, MarketReader(urls.clob_url, urls.chain_id).resolution, opts.call_timeout_s)
    from ..venues.polymarket.client import PolymarketVenue
    return PolymarketVenue(urls, signing_key(ctx.secrets, ctx.config), api_creds(ctx.secrets),
                           ctx.log, opts.call_timeout_s, opts.workers, opts.heartbeat_s, opts.ping_s,
                           opts.stale_after_s, opts.reconnect_initial_s, opts.reconnect_max_s,
                           account=ctx.config.account, rate_tier=opts.rate_tier,
                           max_wait_s=opts.max_order_age_ms / 1000)


def signing_key(secrets: Secrets, config: Config) -> str:
    """POLYBOT_PRIVATE_KEY; with none set and ``venue = "local"``, the local venue's ready-made account's."""
    key = secrets.private_key
    if not key and config.venue == "local":
        key = local_venue_key(config)[1]
    if not key:
        raise StartupError("live trading needs a key: set POLYBOT_PRIVATE_KEY (or choose mode = \"paper\")")
    return key


def api_creds(secrets: Secrets) -> dict[str, str] | None:
    """The CLOB API key from the environment, when all three parts are set; else the client derives one."""
    if secrets.api_key and secrets.api_secret and secrets.api_passphrase:
        return {"api_key": secrets.api_key, "api_secret": secrets.api_secret, "api_passphrase": secrets.api_passphrase}
    return None
