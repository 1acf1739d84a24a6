"""The persistent response cache: a repeated or interrupted run never pays for the same answer twice.

Why sqlite3 and not an append-only JSONL: shards run in parallel threads (or processes) that all
read and write one cache; sqlite gives each write its own atomic transaction (WAL journal), so
a process killed mid-write leaves the last committed answer intact and nothing half-written,
concurrent writers wait on a lock instead of interleaving lines, and a lookup is an indexed
read instead of loading every earlier answer into memory (millions of regions at paper scale).
It is in the standard library, so the cache costs no dependency.

Keys are sha256 hex digests of everything that determines an answer (`request_key`); values are
the parsed JSON response bodies of successful calls only (failures are retried on the next run).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any


def request_key(**parts: Any) -> str:
    """sha256 of the parts as canonical JSON (sorted keys): the same request gives the same key."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


class ResponseCache:
    """A sqlite table `responses(key, body, created)`; one connection per instance, safe across threads."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # autocommit (isolation_level=None): every put is its own transaction, committed when it returns
        self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        self._wal()
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process kills
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, body TEXT NOT NULL, "
                         "created REAL NOT NULL)")

    def _wal(self, tries: int = 50) -> None:
        """Switch the file to WAL once. Shards open the cache at the same moment, and sqlite answers
        a concurrent journal-mode switch with 'database is locked' at once (no busy wait): retry."""
        for attempt in range(tries):
            try:
                if self._db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError:
                if attempt == tries - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, body: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)", (key, json.dumps(body), time.time()))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
