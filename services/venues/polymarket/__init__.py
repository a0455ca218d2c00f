"""The real Polymarket venue: wire schema and, later, the adapter."""
