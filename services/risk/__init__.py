"""Risk: every signal's checks, the verdicts, and the orders of the signals that pass."""
from .service import Risk

__all__ = ["Risk"]
