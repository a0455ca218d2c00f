"""``python -m polybot_venue``: the local venue on its own, with no mesh (Ctrl-C stops it)."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from .cli import add_arguments, banner, options_from
from .server import LocalVenue, serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m polybot_venue", description=(
        "A local venue that speaks Polymarket's CLOB V2 wire protocol on 127.0.0.1, so Polymarket's own clients "
        "(and polybot) run with no account and no network. It prints its addresses and a funded test account."))
    add_arguments(parser)
    options = options_from(parser.parse_args(argv))
    if options.replay:
        parser.error("--replay plays back a recording of the mesh, which only the mesh reads: serve it with "
                     "`polybot venue --replay FOLDER`")
    print(banner(options), flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(LocalVenue(options)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
