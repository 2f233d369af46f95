"""A SQLite cache of replies, for exact offline replays.

Key: SHA-256 of (backend kind, model, options, schema, messages, prompt version); the base URL
and API key stay out of it, so the same model behind another host replays the same. The model
digest (Ollama's, or the GGUF file's hash) is stored beside each entry. Modes: ``read_write``,
``read_only``, ``off``.

No reply is lost to concurrent writers: a write that finds the file locked (another process
writing, WAL journal) waits at most ``timeout`` (short, so a stuck cache cannot eat a
decision's deadline), then stays in memory (``pending``; ``get`` sees it) and is retried at
the next write and at ``close``, which waits as long as it takes (``flush_timeout``). Only a
corrupt or unopenable file turns the cache off for the run (``disabled`` says why; calls go to
the models); a folder that does not exist or cannot be written is counted, never raised.
The structured-output mode that worked for a server is kept here too (``get_mode``).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any


def schema_text(schema: dict[str, Any]) -> str:
    """A schema's canonical JSON (sorted keys, compact): what the prompt digest hashes."""
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def prompt_digest(schema: dict[str, Any], messages: Any, schema_json: str | None = None) -> str:
    """SHA-256 of a prompt's schema (canonical JSON, ``schema_text``; pass it when known) and
    its messages' roles and contents (their bytes, length-prefixed; a long content is not
    re-encoded as JSON)."""
    h = hashlib.sha256((schema_json or schema_text(schema)).encode())
    for m in messages:
        for part in (m.get("role", ""), m.get("content", "")):
            data = str(part).encode()
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
    return h.hexdigest()


def member_prefix(*, backend: str, model: str, options: dict[str, Any],
                  prompt_version: str) -> str:
    """The part of a cache key that is the member's (canonical JSON); computed once."""
    return json.dumps({"backend": backend, "model": model, "options": options,
                       "prompt_version": prompt_version}, sort_keys=True,
                      separators=(",", ":"))


def key_of(prefix: str, prompt: str) -> str:
    """The cache key from a member's prefix (``member_prefix``) and a prompt digest."""
    return hashlib.sha256(f"{prefix}|{prompt}".encode()).hexdigest()


def cache_key(*, backend: str, model: str, options: dict[str, Any], prompt: str,
              prompt_version: str) -> str:
    """The key of one member's reply to one prompt (``prompt`` = :func:`prompt_digest`)."""
    return key_of(member_prefix(backend=backend, model=model, options=options,
                                prompt_version=prompt_version), prompt)


class ReplyCache:
    """:param path: the SQLite file (created); :param mode: read_write, read_only or off."""

    def __init__(self, path: str | Path | None, mode: str = "read_write",
                 timeout: float = 0.25, flush_timeout: float = 120.0) -> None:
        self.path = Path(path) if path else None
        self.mode = mode if path else "off"
        self.timeout = timeout
        self.flush_timeout = flush_timeout
        self.errors = 0
        self.locked = 0  # writes that found the file locked and were kept for later
        self.last_error: str | None = None
        self.disabled: str | None = None
        self.added: list[tuple] = []  # rows this process wrote (a Ray job sends them home)
        self.pending: dict[str, tuple] = {}  # written rows not yet in the file (it was locked)
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection | None:
        if self.mode == "off":
            return None
        if self._db is None:
            try:
                if self.mode == "read_write":
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
                    try:
                        _retry(lambda: db.execute("PRAGMA journal_mode=WAL"), self.timeout)
                        _retry(lambda: _create(db), self.timeout)
                    except sqlite3.OperationalError as exc:
                        db.close()
                        if not _is_lock(exc):
                            raise
                        self.locked += 1  # another process holds it: try again later
                        return None
                else:
                    if not self.path.exists():
                        return None
                    db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                         timeout=self.timeout)
                db.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
                self._db = db
            except (sqlite3.Error, OSError) as exc:  # e.g. a folder that cannot be written
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
        row = self.get_row(key)
        return row["reply"] if row else None

    def get_row(self, key: str) -> dict[str, Any] | None:
        """``{"reply", "digest", "model"}`` of a stored reply, or None."""
        return self.get_rows([key]).get(key)

    def get_rows(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """The stored rows of ``keys`` (``get_row``'s form) in one query; a key not stored
        is absent. A locked or broken file reads as misses (counted), never raises."""
        out = {k: {"reply": json.loads(r[4]), "digest": r[3], "model": r[2]}
               for k in keys if (r := self.pending.get(k)) is not None}
        rest = [k for k in keys if k not in out]
        db = self._conn() if rest else None
        if db is None:
            return out
        try:
            for i in range(0, len(rest), 500):  # under SQLite's limit on bound parameters
                part = rest[i:i + 500]
                marks = ",".join("?" * len(part))
                for key, reply, digest, model in db.execute(
                        f"SELECT key, reply, digest, model FROM replies WHERE key IN ({marks})",
                        part):
                    out[key] = {"reply": json.loads(reply), "digest": digest, "model": model}
        except sqlite3.OperationalError as exc:
            if _is_lock(exc):  # a read waits at most `timeout`; a miss, not an outage
                self.locked += 1
                return out
            self._fail(exc)
        except (sqlite3.Error, ValueError) as exc:
            self._fail(exc)
        return out

    def put(self, key: str, *, backend: str, model: str, digest: str | None,
            reply: dict[str, Any]) -> None:
        if self.mode != "read_write":
            return
        row = (key, backend, model, digest, json.dumps(reply), time.time())
        self.added.append(row)
        self.pending[key] = row
        self._flush(self.timeout)

    def _flush(self, timeout: float) -> None:
        """Write pending rows; a lock keeps them for later, other errors turn the cache off."""
        if not self.pending:
            return
        db = self._conn()
        if db is None:
            return
        rows = list(self.pending.values())
        try:
            _retry(lambda: _insert(db, rows), timeout)
        except sqlite3.OperationalError as exc:
            if _is_lock(exc):
                self.locked += 1
                return
            self._fail(exc)
            return
        except sqlite3.Error as exc:
            self._fail(exc)
            return
        for r in rows:
            self.pending.pop(r[0], None)

    def get_mode(self, server: str) -> str | None:
        """The structured-output mode that worked for an OpenAI-compatible server."""
        db = self._conn()
        if db is None:
            return None
        try:
            row = db.execute("SELECT mode FROM modes WHERE server = ?", (server,)).fetchone()
            return row[0] if row else None
        except sqlite3.Error:  # an older file without the table, or locked: negotiate again
            return None

    def put_mode(self, server: str, mode: str) -> None:
        if self.mode != "read_write":
            return
        db = self._conn()
        if db is None:
            return
        try:
            db.execute("INSERT OR REPLACE INTO modes VALUES (?, ?)", (server, mode))
        except sqlite3.Error:  # only a hint: the next run negotiates again
            pass

    def close(self) -> None:
        """Write every pending row (waiting for a lock as long as ``flush_timeout``), close."""
        if self.pending and self.mode == "read_write":
            self._flush(self.flush_timeout)
            if self.pending:
                self.errors += 1
                self.last_error = (f"{len(self.pending)} replies not written: the cache stayed "
                                   f"locked for {self.flush_timeout:.0f}s")
        if self._db is not None:
            self._db.close()
            self._db = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_db"] = None
        return state


def _is_lock(exc: Exception) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _retry(op, timeout: float) -> None:
    """Run ``op`` until it passes the lock, for at most ``timeout`` seconds."""
    t_end = time.monotonic() + timeout
    pause = 0.005
    while True:
        try:
            op()
            return
        except sqlite3.OperationalError as exc:
            if not _is_lock(exc) or time.monotonic() + pause > t_end:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.2)


def _create(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, backend TEXT, "
               "model TEXT, digest TEXT, reply TEXT, created REAL)")
    db.execute("CREATE TABLE IF NOT EXISTS modes (server TEXT PRIMARY KEY, mode TEXT)")


def _insert(db: sqlite3.Connection, rows: list[tuple]) -> None:
    db.execute("BEGIN IMMEDIATE")  # takes the write lock or raises "locked": nothing to undo
    try:
        db.executemany("INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?, ?)", rows)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


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
