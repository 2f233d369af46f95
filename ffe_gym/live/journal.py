"""The live loop's journal: one SQLite file (WAL) that is the loop's whole memory.

Tables:

* ``meta``: what the run is (policy, resolved config, seed, symbols, first live bar, bars per
  year, bar length), written once; a restart with other settings is refused.
* ``bars``: every bar taken, per (time, symbol), with the wall-clock time it was taken. The
  market the loop steps is rebuilt from these rows alone, never from the feed's history again.
* ``decisions``: per decision k, its bar, the observation's SHA-256, the action (bytes, dtype,
  shape), the book after the previous step (equity, cash, status, fills, refusals), and for an
  LLM policy its calls (member, outcome, the reply's cache key, latency).
* ``orders``: with a broker, every order derived from the book's fills, ``pending`` before it
  is sent and ``sent`` (or ``duplicate``: the broker had it already) after.
* ``events``: what the feed did that the book did not follow: duplicates, revisions (both
  versions), late bars, bars a clock behind the feed would have taken early, feed errors.

Every write is one transaction committed before the loop goes on, so a process killed at any
point leaves the journal at a bar or decision boundary: a restart neither repeats nor skips one.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bars (
    time INTEGER NOT NULL, symbol TEXT NOT NULL, open REAL, high REAL, low REAL, close REAL,
    volume REAL, taken_at REAL NOT NULL, PRIMARY KEY (time, symbol));
CREATE TABLE IF NOT EXISTS decisions (
    k INTEGER PRIMARY KEY, bar_time INTEGER NOT NULL, bar INTEGER NOT NULL,
    obs_hash TEXT NOT NULL, action BLOB NOT NULL, dtype TEXT NOT NULL, shape TEXT NOT NULL,
    equity REAL NOT NULL, cash REAL NOT NULL, status TEXT NOT NULL, fills INTEGER NOT NULL,
    refused TEXT NOT NULL, decided_at REAL NOT NULL, calls TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    client_id TEXT PRIMARY KEY, bar_time INTEGER NOT NULL, symbol TEXT NOT NULL,
    qty REAL NOT NULL, state TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, kind TEXT NOT NULL,
    time INTEGER, symbol TEXT, detail TEXT NOT NULL);
"""
PRICE_COLUMNS = ("open", "high", "low", "close", "volume")


class LiveJournal:
    """The journal of one live run (``<out>/journal.sqlite``).

    :param path: the SQLite file, created with its folder when absent.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # a commit survives a power cut too
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # ----------------------------------------------------------------------------- meta
    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM meta")}

    def write_meta(self, values: dict[str, Any]) -> None:
        with self._tx():
            self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                [(k, json.dumps(v, sort_keys=True)) for k, v in values.items()])

    # ----------------------------------------------------------------------------- bars
    def bars(self, since: int | None = None) -> pd.DataFrame:
        """The bars taken (from ``since`` on): time (int64 ns, UTC), symbol and prices, in
        time order."""
        rows = self.db.execute("SELECT time, symbol, open, high, low, close, volume FROM bars "
                               "WHERE time >= ? ORDER BY time, symbol",
                               (-(2**63) if since is None else since,)).fetchall()
        return pd.DataFrame(rows, columns=["time", "symbol", *PRICE_COLUMNS])

    def count(self) -> int:
        """How many (time, symbol) bars were taken."""
        (n,) = self.db.execute("SELECT COUNT(*) FROM bars").fetchone()
        return n

    def last_time(self) -> int | None:
        (t,) = self.db.execute("SELECT MAX(time) FROM bars").fetchone()
        return t

    def take(self, bars: pd.DataFrame, events: list[tuple[str, int | None, str | None, str]]
             ) -> None:
        """Record bars (time, symbol, prices) and the feed events seen with them, at once."""
        now = time.time()
        with self._tx():
            self.db.executemany(
                "INSERT INTO bars VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(int(r.time), str(r.symbol), *(float(getattr(r, c)) for c in PRICE_COLUMNS),
                  now) for r in bars.itertuples(index=False)])
            self.db.executemany("INSERT INTO events (at, kind, time, symbol, detail) "
                                "VALUES (?, ?, ?, ?, ?)",
                                [(now, kind, t, s, d) for kind, t, s, d in events])

    def event(self, kind: str, detail: str, time_ns: int | None = None,
              symbol: str | None = None) -> None:
        self.take(pd.DataFrame(columns=["time", "symbol", *PRICE_COLUMNS]),
                  [(kind, time_ns, symbol, detail)])

    def events(self) -> pd.DataFrame:
        rows = self.db.execute("SELECT at, kind, time, symbol, detail FROM events ORDER BY id")
        return pd.DataFrame(rows.fetchall(), columns=["at", "kind", "time", "symbol", "detail"])

    # ------------------------------------------------------------------------ decisions
    def decisions(self) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT * FROM decisions ORDER BY k")
        names = [d[0] for d in cur.description]
        out = []
        for row in cur.fetchall():
            d = dict(zip(names, row, strict=True))
            d["action"] = np.frombuffer(d["action"], dtype=d["dtype"]).reshape(
                json.loads(d["shape"])).copy()
            d["refused"] = json.loads(d["refused"])
            d["calls"] = json.loads(d["calls"])
            out.append(d)
        return out

    def decide(self, k: int, bar_time: int, bar: int, obs_hash: str, action: np.ndarray,
               book: dict[str, Any], calls: list[dict[str, Any]] | None = None) -> None:
        a = np.ascontiguousarray(action)
        with self._tx():
            self.db.execute(
                "INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (k, bar_time, bar, obs_hash, a.tobytes(), a.dtype.str, json.dumps(a.shape),
                 float(book["equity"]), float(book["cash"]), str(book["status"]),
                 int(book["fills"]), json.dumps(book["refused"]), time.time(),
                 json.dumps(calls or [], default=str)))

    # ---------------------------------------------------------------------------- orders
    def add_orders(self, rows: list[tuple[str, int, str, float]]) -> None:
        """Record orders (client id, bar time, symbol, signed quantity) as pending, once."""
        with self._tx():
            self.db.executemany("INSERT OR IGNORE INTO orders VALUES (?, ?, ?, ?, 'pending', ?)",
                                [(*r, time.time()) for r in rows])

    def orders(self, state: str | None = None) -> list[tuple[str, int, str, float, str]]:
        q = "SELECT client_id, bar_time, symbol, qty, state FROM orders"
        rows = self.db.execute(q + (" WHERE state = ?" if state else "") + " ORDER BY rowid",
                               (state,) if state else ()).fetchall()
        return [tuple(r) for r in rows]

    def mark_order(self, client_id: str, state: str) -> None:
        with self._tx():
            self.db.execute("UPDATE orders SET state = ?, at = ? WHERE client_id = ?",
                            (state, time.time(), client_id))

    def _tx(self):
        return _Transaction(self.db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on an exception)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, exc, tb) -> None:
        self.db.execute("ROLLBACK" if kind is not None else "COMMIT")
