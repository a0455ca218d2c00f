"""Backtests: replay a recording into the same strategy classes, in one process (``engine``) or through the
mesh (``mesh``), and report the result (``report``)."""
