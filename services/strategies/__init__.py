"""Strategies: pure classes (messages in, signals out), hosted by one process, run the same in backtests."""
from __future__ import annotations

from .arbitrage import Arbitrage
from .quoter import Quoter

REGISTRY = {"arbitrage": Arbitrage, "quoter": Quoter}
