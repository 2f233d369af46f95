"""A SQLite cache of replies, for exact offline replays.

Key: SHA-256 of (backend kind, model, options, schema, messages, prompt version); the base URL
and API key stay out of it, so the same model behind another host replays the same. The model
digest (Ollama's, or the GGUF file's hash) is stored beside each entry. WAL journal and a busy
timeout make concurrent writers (a process pool) safe. Modes: ``read_write``, ``read_only``,
``off``. A locked or corrupt file never stops an evaluation: the first failing operation is
counted in ``errors``, the cache turns itself off for the rest of the run (``disabled`` says
why) and calls go to the models; waits on a lock are short (``timeout``) so that a stuck cache
cannot eat a decision's deadline.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any


def prompt_digest(schema: dict[str, Any], messages: Any) -> str:
    """SHA-256 of a prompt's schema and messages (computed once per prompt)."""
    blob = json.dumps({"schema": schema, "messages": list(messages)}, sort_keys=True,
                      separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_key(*, backend: str, model: str, options: dict[str, Any], prompt: str,
              prompt_version: str) -> str:
    """The key of one member's reply to one prompt (``prompt`` = :func:`prompt_digest`)."""
    blob = json.dumps({"backend": backend, "model": model, "options": options,
                       "prompt": prompt, "prompt_version": prompt_version}, sort_keys=True,
                      separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class ReplyCache:
    """:param path: the SQLite file (created); :param mode: read_write, read_only or off."""

    def __init__(self, path: str | Path | None, mode: str = "read_write",
                 timeout: float = 1.0) -> None:
        self.path = Path(path) if path else None
        self.mode = mode if path else "off"
        self.timeout = timeout
        self.errors = 0
        self.last_error: str | None = None
        self.disabled: str | None = None
        self.added: list[tuple] = []  # rows this process wrote (a Ray job sends them home)
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection | None:
        if self.mode == "off":
            return None
        if self._db is None:
            try:
                if self.mode == "read_write":
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
                    db.execute("PRAGMA journal_mode=WAL")
                    db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, "
                               "backend TEXT, model TEXT, digest TEXT, reply TEXT, "
                               "created REAL)")
                else:
                    if not self.path.exists():
                        return None
                    db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                         timeout=self.timeout)
                db.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
                self._db = db
            except sqlite3.Error as exc:
                self._fail(exc)
                return None
        return self._db

    def _fail(self, exc: Exception) -> None:
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.disabled = self.last_error
        self.mode = "off"
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None

    def get(self, key: str) -> dict[str, Any] | None:
        db = self._conn()
        if db is None:
            return None
        try:
            row = db.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
            return json.loads(row[0]) if row else None
        except (sqlite3.Error, ValueError) as exc:
            self._fail(exc)
            return None

    def put(self, key: str, *, backend: str, model: str, digest: str | None,
            reply: dict[str, Any]) -> None:
        if self.mode != "read_write":
            return
        db = self._conn()
        if db is None:
            return
        row = (key, backend, model, digest, json.dumps(reply), time.time())
        try:
            db.execute("INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?, ?)", row)
            self.added.append(row)
        except sqlite3.Error as exc:
            self._fail(exc)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_db"] = None
        return state


def snapshot(path: str | Path) -> bytes:
    """A consistent copy of a cache file (WAL included) as bytes; empty when there is none."""
    path = Path(path)
    if not path.exists():
        return b""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "cache.sqlite"
        src = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
        dst = sqlite3.connect(copy)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
        return copy.read_bytes()


def merge_rows(path: str | Path, rows: list[tuple]) -> int:
    """Add replies another process wrote (``ReplyCache.added``) to the cache at ``path``;
    an existing key keeps its reply. Returns the number of rows added."""
    if not rows:
        return 0
    cache = ReplyCache(path, "read_write", timeout=30.0)
    db = cache._conn()
    if db is None:
        raise sqlite3.OperationalError(f"cannot open the reply cache {path}: {cache.disabled}")
    before = db.total_changes
    db.executemany("INSERT OR IGNORE INTO replies VALUES (?, ?, ?, ?, ?, ?)",
                   [tuple(r) for r in rows])
    added = db.total_changes - before
    cache.close()
    return added
