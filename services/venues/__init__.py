"""Venues: the real one, paper trading, and the local venue; wire formats stop here."""
