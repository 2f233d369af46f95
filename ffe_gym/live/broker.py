"""Optional: the paper book's fills sent as orders to Alpaca's paper-trading API.

The engine's book stays the record the run is evaluated on; the broker receives the same trades
as market orders, so a researcher sees them filled at a real venue's prices. Each fill becomes
an order whose ``client_order_id`` is derived from the fill itself (run, bar, asset, its place
among that bar's fills of the asset): the journal records it as pending before it is sent and
as sent after, and a resend after a crash or a lost reply carries the same id, which Alpaca
refuses as a duplicate, so no trade is placed twice. At every start the broker's positions
and cash are compared with the book's; differences are reported in the journal (``reconcile``),
never written over either side.
"""

from __future__ import annotations

import os
from typing import Any

from ffe_gym.data import DataError
from ffe_gym.live.feeds import FeedError


class AlpacaPaperBroker:
    """Market orders to Alpaca's paper-trading API (alpaca-py's ``TradingClient``).

    :param symbols: the panel's symbol -> Alpaca's symbol, where they differ.
    :param url: another base URL (a test's loopback server).
    """

    def __init__(self, symbols: dict[str, str] | None = None, url: str | None = None) -> None:
        from alpaca.trading.client import TradingClient

        key, secret = os.environ.get("ALPACA_API_KEY"), os.environ.get("ALPACA_SECRET_KEY")
        if not (key and secret):
            raise DataError("paper orders need ALPACA_API_KEY and ALPACA_SECRET_KEY in the "
                            "environment (read, never written)", file="alpaca")
        self.client = TradingClient(key, secret, paper=True, url_override=url)
        self.symbols = dict(symbols or {})

    def submit(self, client_id: str, symbol: str, qty: float) -> str:
        """Send one market order; ``"sent"``, or ``"duplicate"`` when Alpaca already has an
        order with this id (a resend). A transient failure raises :class:`FeedError`."""
        from alpaca.common.exceptions import APIError
        from alpaca.trading.enums import OrderSide, TimeInForce
        from alpaca.trading.requests import MarketOrderRequest

        order = MarketOrderRequest(symbol=self.symbols.get(symbol, symbol), qty=abs(qty),
                                   side=OrderSide.BUY if qty > 0 else OrderSide.SELL,
                                   time_in_force=TimeInForce.DAY, client_order_id=client_id)
        try:
            self.client.submit_order(order)
            return "sent"
        except APIError as exc:
            code = getattr(exc, "status_code", None)
            if code == 422 and "client_order_id" in str(exc):
                self.client.get_order_by_client_id(client_id)  # it is there: sent before
                return "duplicate"
            if code is not None and code < 500 and code != 429:
                raise DataError(f"Alpaca refused order {client_id} (HTTP {code}): "
                                f"{str(exc)[:200]}", file="alpaca", symbol=symbol) from None
            raise FeedError(f"alpaca orders: HTTP {code}: {str(exc)[:200]}") from None
        except OSError as exc:
            raise FeedError(f"alpaca orders: {type(exc).__name__}: {str(exc)[:200]}") from None

    def holdings(self) -> tuple[dict[str, float], float]:
        """(units per panel symbol, cash) at the broker."""
        back = {v: k for k, v in self.symbols.items()}
        try:
            positions = self.client.get_all_positions()
            cash = float(self.client.get_account().cash)
        except OSError as exc:
            raise FeedError(f"alpaca account: {type(exc).__name__}: {exc}") from None
        units: dict[str, Any] = {}
        for p in positions:
            qty = float(p.qty)
            units[back.get(p.symbol, p.symbol)] = qty if str(p.side).lower().endswith(
                "long") else -abs(qty)
        return units, cash
