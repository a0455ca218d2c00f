"""The local venue (``polybot_venue``) as a service of the mesh: started by `polybot up` and `polybot venue`, with
a control socket, logs and a status line like any other service. The venue itself knows nothing of the mesh."""
from __future__ import annotations

from polybot_venue.server import LocalVenue, VenueOptions, detail, serve

from ..runtime import Service


class Venue(Service):
    """Serves Polymarket's Gamma and CLOB REST APIs and its WebSocket channels over a local matching engine."""

    Options = VenueOptions

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.venue = LocalVenue(ctx.options)

    async def run(self) -> None:
        await serve(self.venue, halted=lambda: self.ctx.halted)

    def detail(self) -> dict[str, str]:
        return detail(self.venue)
