"""The executor: risk's orders in (``orders``), the venue's answers out (``executions``), live or on paper.

``desk`` keeps order states and positions (pure), ``journal`` makes them survive restarts, ``reconcile`` takes
the venue's word for them, ``backpressure`` throttles the signal producers while the executor lags, ``venue``
builds the venue (paper or live), and ``service`` wires these to the bus.
"""
from .service import Executor

__all__ = ["Executor"]
