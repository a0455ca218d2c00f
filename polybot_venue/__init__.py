"""The local venue: an application of its own that speaks Polymarket's wire protocol on 127.0.0.1 (Gamma and CLOB
REST, the market and user WebSocket channels) over a matching engine and seeded, living markets.

It imports nothing of the trading mesh: Polymarket's official clients, our adapter and anything else talk to it
over the wire only. ``python -m polybot_venue`` serves it on its own; the mesh runs it as a service through
``services.venues.local``.
"""
