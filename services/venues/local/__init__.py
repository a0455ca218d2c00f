"""The local venue: Polymarket's wire protocol on 127.0.0.1."""
