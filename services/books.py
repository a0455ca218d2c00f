"""Order books kept from the bus's BookSnapshot and BookDelta messages (scanner, strategies, paper fills)."""
from __future__ import annotations

from decimal import Decimal

from . import messages as m


class Books:
    def __init__(self) -> None:
        self.levels: dict[str, dict[str, dict[Decimal, Decimal]]] = {}  # token -> BUY/SELL -> price -> size
        self.updated_ns: dict[str, int] = {}  # token -> origin time of the last message that touched it

    def apply(self, msg: m.Message) -> set[str]:
        """Apply one prices message; returns the tokens whose books it touched."""
        touched: set[str] = set()
        if isinstance(msg, m.BookSnapshot):
            for book in msg.books:
                self.levels[book.token_id] = {"BUY": {lv.price: lv.size for lv in book.bids},
                                              "SELL": {lv.price: lv.size for lv in book.asks}}
                touched.add(book.token_id)
        elif isinstance(msg, m.BookDelta):
            for change in msg.changes:
                side = self.levels.setdefault(change.token_id, {"BUY": {}, "SELL": {}})[change.side]
                if change.size == 0:
                    side.pop(change.price, None)
                else:
                    side[change.price] = change.size
                touched.add(change.token_id)
        for token in touched:
            self.updated_ns[token] = msg.ts_ns
        return touched

    def best_ask(self, token: str) -> tuple[Decimal, Decimal] | None:
        asks = self.levels.get(token, {}).get("SELL")
        if not asks:
            return None
        price = min(asks)
        return price, asks[price]

    def mid(self, token: str) -> Decimal | None:
        """Halfway between the best bid and the best ask; None unless both sides show."""
        bid, ask = self.best_bid(token), self.best_ask(token)
        return (bid[0] + ask[0]) / 2 if bid is not None and ask is not None else None

    def best_bid(self, token: str) -> tuple[Decimal, Decimal] | None:
        bids = self.levels.get(token, {}).get("BUY")
        if not bids:
            return None
        price = max(bids)
        return price, bids[price]
