"""The SQLite file: one writer connection behind a lock, one reader connection per reading thread, transactions,
the schema version, and keys kept in the file.

WAL mode, so the gRPC readers never block the pipeline's writer.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from types import TracebackType

from appliance.fileio import PRIVATE_FILE_MODE
from appliance.store import ledger
from appliance.store.schema import AFTER_UPGRADES, SCHEMA, SCHEMA_VERSION, UPGRADABLE, UPGRADE_STEPS, UPGRADES


class StoreError(RuntimeError):
    pass


class Database:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._writer = self._connect()
        for suffix in ("", "-wal", "-shm"):  # patient data; the WAL and its index take the database's mode
            sidecar = self.path.with_name(self.path.name + suffix)
            if sidecar.exists():
                os.chmod(sidecar, PRIVATE_FILE_MODE)
        self._create_schema()

    def _create_schema(self) -> None:
        with self._write_lock:
            self._writer.executescript(SCHEMA)  # CREATE ... IF NOT EXISTS: a no-op on a current file
        with self.transaction() as db:
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) in UPGRADABLE:
                for table, column, definition in UPGRADES:
                    have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
                    if column not in have:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
                for version, step in UPGRADE_STEPS:
                    if int(row[0]) < version:
                        getattr(ledger, step)(db, time.time())
                db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise StoreError(f"{self.path} has schema version {row[0]}, this build expects {SCHEMA_VERSION}")
            for statement in filter(str.strip, AFTER_UPGRADES.split(";")):
                db.execute(statement)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a process crash (kill -9); only a power cut can lose the last
        # transactions, and then the spool still holds the images to score them again.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def transaction(self, durable: bool = False) -> Transaction:
        """`with db.transaction() as conn:` one IMMEDIATE transaction on the writer, committed on leaving.
        `durable`: synced to disk before the commit returns (synchronous=FULL for this one), for a promise made to
        a peer right after it (the receiver answers C-STORE Success only once the instance is on record)."""
        return Transaction(self._writer, self._write_lock, durable)

    def reader(self) -> sqlite3.Connection:
        """This thread's reading connection (WAL: it sees the last commit, never blocks the writer)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._write_lock:
                self._readers.append(conn)
        return conn

    def secret(self, name: str, size: int = 32) -> bytes:
        """A random key kept in the database (made on first use): stable across restarts, private to this data
        folder."""
        key = f"secret:{name}"
        with self.transaction() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
            if row is not None:
                return bytes.fromhex(row[0])
            value = os.urandom(size)
            conn.execute("INSERT INTO meta VALUES (?, ?)", (key, value.hex()))
            return value

    def close(self) -> None:
        with self._write_lock:
            for conn in [self._writer, *self._readers]:
                conn.close()
            self._readers.clear()


class Transaction:
    def __init__(self, conn: sqlite3.Connection, lock: threading.Lock, durable: bool = False) -> None:
        self.conn, self.lock, self.durable = conn, lock, durable

    def __enter__(self) -> sqlite3.Connection:
        self.lock.acquire()
        try:
            if self.durable:  # outside a transaction: SQLite ignores the pragma inside one
                self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("BEGIN IMMEDIATE")  # may time out while another process holds the database
        except BaseException:
            self._restore()
            self.lock.release()
            raise
        return self.conn

    def _restore(self) -> None:
        if self.durable:
            self.conn.execute("PRAGMA synchronous=NORMAL")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc_type is None:
                try:
                    self.conn.execute("COMMIT")
                except BaseException:
                    # A failed COMMIT (disk full, I/O error) leaves the transaction open; close it, or every
                    # later BEGIN fails.
                    self.conn.execute("ROLLBACK")
                    raise
            else:
                self.conn.execute("ROLLBACK")
        finally:
            try:
                self._restore()
            finally:
                self.lock.release()
