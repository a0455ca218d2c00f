"""The executor: risk's orders in (``orders``), the venue's answers out (``executions``), live or on paper.

``desk`` keeps order states and positions, ``journal`` makes them survive restarts, ``venue`` builds the venue,
``service`` wires them to the bus.
"""
from .service import Executor

__all__ = ["Executor"]
