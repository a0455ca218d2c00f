"""A source of random signals in its own process: ``python -m tests.signal_pusher CONFIG SOURCE SEED COUNT BOOKS``.

BOOKS is JSON: {token: [market, best bid, best ask]}. Signals mix resting bids below the book, FOK buys at the
ask, several legs at once, odd sizes and prices, so risk sees every kind of pressure at once from several sources.
"""
from __future__ import annotations

import json
import random
import sys
from decimal import Decimal as D

from services import messages as m
from services.bus import Bus
from services.config import load

from .conftest import wait_for


def random_leg(rng: random.Random, books: dict[str, list[str]]) -> m.Leg:
    token = rng.choice(sorted(books))
    bid, ask = D(books[token][1]), D(books[token][2])
    if rng.random() < 0.3:
        return m.Leg(token_id=token, side="BUY", size=D(rng.randrange(5, 15)), limit_price=ask, order_type="FOK",
                     market=books[token][0])
    price = max(D("0.01"), bid - D(rng.randrange(1, 10)) / 100)
    return m.Leg(token_id=token, side="BUY", size=D(rng.randrange(5, 40)), limit_price=price, order_type="GTC",
                 market=books[token][0])


def main(config_file: str, source: str, seed: str, count: str, books_json: str) -> None:
    rng = random.Random(int(seed))
    books = json.loads(books_json)
    bus = Bus(load(config_file))
    out, verdicts = bus.outbound("signals"), bus.inbound("decisions")
    wait_for(lambda: out.socket.pipes and verdicts.socket.pipes, what="risk's sockets")
    sent = set()
    for _ in range(int(count)):
        legs = [random_leg(rng, books) for _ in range(rng.choice((1, 1, 1, 2, 3)))]
        signal = m.Signal(source=source, legs=legs, rationale="random pressure")
        assert out.send(signal)
        sent.add(signal.id)

    def all_decided() -> bool:  # closing the socket earlier would discard what is still queued
        sent.difference_update(v.signal_id for v in verdicts.drain() if not isinstance(v, m.Heartbeat))
        return not sent
    wait_for(all_decided, what="a verdict on every signal sent", timeout=60)
    bus.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
