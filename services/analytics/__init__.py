"""Analytics: the only writer of the DuckDB file; records the bus and answers named queries and read-only SQL.

Service kind ``services.analytics:Analytics``. The tables are described in ``schema``.
"""
from .service import Analytics, AnalyticsOptions

__all__ = ["Analytics", "AnalyticsOptions"]
