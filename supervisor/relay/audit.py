"""Durable, append-only command audit in SQLite, written off the reactor thread.

All database work runs on one dedicated thread (a 1-thread pool), so writes are serialised
and never block the reactor. The database uses WAL with ``synchronous=FULL``: a record is on
disk when :meth:`AuditStore.append` fires, and survives a relay crash. Triggers refuse UPDATE
and DELETE, so the table is append-only even for other writers. The file is created ``0600``.

The file is watched: every write first checks that the path still names the file that was
opened, so a deleted or replaced file refuses writes (commands are then refused with
``audit_unavailable``) instead of writing to an inode nobody can read. :meth:`check` (run on
a timer) logs that at critical level, and opens a file found at the path again (a replaced
or restored one). Audit ids are ``a-<sequence>-<opening>``: the sequence counts the rows of
the file, the opening is random and new each time a file is opened, so no id is ever issued
twice, even when the file is lost or replaced by an older copy.

Writes come before replay reads on that thread: a read (:meth:`AuditStore.recent`, what a
session's bind replays) is handed to the thread only while no write is waiting or running,
and one at a time, so a command's record waits behind at most one read however many
sessions are binding.
"""

from __future__ import annotations

import collections
import json
import os
import secrets
import sqlite3
from typing import Any, Callable

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from supervisor.relay.auth import Identity
from supervisor.wire.timestamps import rfc3339

__all__ = ["AuditRecord", "AuditStore", "AuditFileGone", "RESULTS", "INTERRUPTED"]

#: the ``result`` of an audit record; ``interrupted``: the relay stopped while the command
#: was with the target (its outcome may be reconciled later from the target's events)
INTERRUPTED = "interrupted"
RESULTS = ("accepted", "rejected", "completed", "failed", INTERRUPTED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    audit_id TEXT NOT NULL UNIQUE,
    session_id TEXT,
    client_identity TEXT NOT NULL,
    principal TEXT NOT NULL,
    source TEXT NOT NULL,
    target_id TEXT,
    command_id TEXT,
    command TEXT,
    target_json TEXT NOT NULL,
    reason TEXT,
    confirmed INTEGER NOT NULL,
    result TEXT NOT NULL,
    detail TEXT NOT NULL,
    occurred_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_target ON audit (target_id, seq);
CREATE INDEX IF NOT EXISTS audit_by_command ON audit (target_id, command_id, seq);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
"""


@attrs.frozen
class AuditRecord:
    """One audit row: who asked what of which target, and with what outcome."""

    session_id: str | None
    identity: Identity
    target_id: str | None
    command_id: str | None
    command: str | None
    target: Any
    reason: str | None
    confirmed: bool
    result: str  # one of RESULTS
    detail: str
    occurred_at: float
    audit_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The §3 ``audit`` object."""
        return {
            "audit_id": self.audit_id,
            "identity": self.identity.to_json(),
            "target_id": self.target_id,
            "command_id": self.command_id,
            "command": self.command,
            "target": self.target,
            "reason": self.reason,
            "result": self.result,
            "detail": self.detail,
            "occurred_at": rfc3339(self.occurred_at),
        }


class AuditFileGone(sqlite3.OperationalError):
    """The audit file was deleted or replaced since it was opened; nothing is written."""


# accepted records with no later record of the same command that settles it
_UNSETTLED = """
SELECT audit_id, session_id, client_identity, principal, source, target_id, command_id,
       command, target_json, reason, confirmed, result, detail, occurred_at, seq
FROM audit AS a WHERE a.result = ? AND NOT EXISTS (
    SELECT 1 FROM audit AS b WHERE b.target_id IS a.target_id AND b.command_id IS a.command_id
    AND b.seq > a.seq AND b.result IN ({settled}))
ORDER BY a.seq ASC LIMIT ?
"""


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else (None if value is None else json.dumps(value))


class AuditStore:
    """Owns the SQLite connection and the single thread that uses it."""

    log = Logger()

    def __init__(self, path: str, reactor: Any, *, busy_timeout_ms: int = 2000) -> None:
        self.path = path
        self._reactor = reactor
        self._busy_timeout_ms = busy_timeout_ms
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="relay-audit")
        self._conn: sqlite3.Connection | None = None
        self._opened: Deferred[None] | None = None
        self._file: tuple[int, int] | None = None  # (st_dev, st_ino) of the opened file
        self._opening = ""  # random, new per opened file: the tail of audit ids
        self._checking = False
        self._reopen_error: str | None = None
        #: why records cannot be written now (the file is missing or replaced), or None
        self.problem: str | None = None
        #: told the seconds each append took (queue and write), for the relay's metrics
        self.observe_write: Callable[[float], None] | None = None
        self._writes = 0  # writes handed to the thread and not finished
        self._reading = False  # a read is with the thread
        self._reads: collections.deque[tuple[Deferred[Any], Any, tuple[Any, ...]]] = \
            collections.deque()

    def _run(self, f: Any, *args: Any) -> Deferred[Any]:
        return deferToThreadPool(self._reactor, self._pool, f, *args)

    def _write(self, f: Any, *args: Any) -> Deferred[Any]:
        """Hand a write to the thread now; reads wait until no write is left."""
        self._writes += 1

        def done(result: Any) -> Any:
            self._writes -= 1
            self._next_read()
            return result

        return self._run(f, *args).addBoth(done)

    def _read(self, f: Any, *args: Any) -> Deferred[Any]:
        """Queue a read for when no write waits (see module docstring)."""
        d: Deferred[Any] = Deferred()
        self._reads.append((d, f, args))
        self._next_read()
        return d

    def _next_read(self) -> None:
        if self._reading or self._writes or not self._reads:
            return
        d, f, args = self._reads.popleft()
        self._reading = True

        def done(result: Any) -> Any:
            self._reading = False
            self._next_read()
            return result

        self._run(f, *args).addBoth(done).chainDeferred(d)

    @property
    def reads_waiting(self) -> int:
        """Replay reads queued behind writes."""
        return len(self._reads)

    def open(self) -> Deferred[None]:
        """Start the thread and create/open the database (idempotent)."""
        if self._opened is None:
            self._pool.start()
            self._opened = self._run(self._open_sync)
        return self._opened

    def _open_sync(self) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        # created 0600 here (SQLite would use 0644); its -wal and -shm files take its mode
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout_ms / 1000.0,
                               isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot enable WAL (journal_mode={mode})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.executescript(_SCHEMA)
            st = os.stat(self.path)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._file = (st.st_dev, st.st_ino)
        self._opening = secrets.token_hex(4)

    def _file_problem(self) -> str | None:
        """Why the path no longer names the opened file, or None (any thread)."""
        if self._file is None:
            return None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return f"audit file {self.path} is missing"
        except OSError as e:
            return f"audit file {self.path} cannot be checked: {e.strerror or e}"
        if (st.st_dev, st.st_ino) != self._file:
            return f"audit file {self.path} was replaced"
        return None

    @property
    def writable(self) -> bool:
        """Whether the path names the opened file now (records can be written)."""
        return self._file is not None and self._file_problem() is None

    def check(self) -> Deferred[None] | None:
        """Watch the file (on a timer): log when it went missing or was replaced, and open
        a file found at the path again. Writes are refused while the problem lasts."""
        if self._opened is None or self._checking:
            return None
        problem = self._file_problem()
        if problem is None:
            if self.problem is not None:
                self.log.warn("{path}: audit writes resume", path=self.path)
            self.problem = None
            return None
        if problem != self.problem:
            self.log.critical("{problem}; commands are refused until it is back",
                              problem=problem)
        self.problem = problem
        if not os.path.exists(self.path):
            return None  # never recreated silently: the history would be gone
        self._checking = True
        d = self._run(self._reopen_sync)

        def reopened(_: Any) -> None:
            self._checking = False
            self._reopen_error = None
            self.problem = None
            self.log.warn("audit file {path} opened again (a replaced file); "
                          "records are written to it from now on", path=self.path)

        def failed(f: Any) -> None:
            self._checking = False
            error = f.getErrorMessage()
            if error != self._reopen_error:  # once per distinct failure, not every check
                self.log.critical("audit file {path} cannot be opened again: {error}",
                                  path=self.path, error=error)
            self._reopen_error = error

        d.addCallbacks(reopened, failed)
        return d

    def _reopen_sync(self) -> None:
        old, self._conn = self._conn, None
        if old is not None:
            old.close()
        self._open_sync()

    def append(self, record: AuditRecord) -> Deferred[AuditRecord]:
        """Durably append ``record``; fires with the stored record (``audit_id`` set)."""
        d = self._write(self._append_sync, record)
        observe = self.observe_write
        if observe is not None:
            started = self._reactor.seconds()

            def written(result: Any) -> Any:
                observe(self._reactor.seconds() - started)
                return result

            d.addBoth(written)
        return d

    def _append_sync(self, record: AuditRecord) -> AuditRecord:
        conn = self._require()
        problem = self._file_problem()
        if problem is not None:
            raise AuditFileGone(problem)
        conn.execute("BEGIN IMMEDIATE")
        try:
            stored = self._insert(conn, record)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return stored

    def _insert(self, conn: sqlite3.Connection, record: AuditRecord) -> AuditRecord:
        """One row, inside the caller's transaction; returns it with its ``audit_id``."""
        seq = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM audit").fetchone()[0]
        stored = attrs.evolve(record, audit_id=f"a-{seq:06d}-{self._opening}")
        conn.execute(
            "INSERT INTO audit (seq, audit_id, session_id, client_identity, principal,"
            " source, target_id, command_id, command, target_json, reason, confirmed,"
            " result, detail, occurred_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (seq, stored.audit_id, stored.session_id, stored.identity.client_identity,
             stored.identity.principal, stored.identity.source, _text(stored.target_id),
             _text(stored.command_id), _text(stored.command),
             json.dumps(stored.target, ensure_ascii=False), _text(stored.reason),
             1 if stored.confirmed else 0, stored.result, stored.detail,
             stored.occurred_at),
        )
        return stored

    def interrupt_unsettled(self, detail: str, now: float, limit: int
                            ) -> Deferred[list[AuditRecord]]:
        """At start-up: an ``interrupted`` record for every command whose ``accepted`` record
        has no outcome (the relay stopped while it was with the target); fires with every
        ``interrupted`` record not yet reconciled (oldest first, at most ``limit``)."""
        return self._write(self._interrupt_sync, detail, now, limit)

    def _interrupt_sync(self, detail: str, now: float, limit: int) -> list[AuditRecord]:
        conn = self._require()
        conn.execute("BEGIN IMMEDIATE")
        try:
            settled = "'completed', 'failed', 'interrupted'"
            for row in conn.execute(_UNSETTLED.format(settled=settled),
                                    ("accepted", limit)).fetchall():
                self._insert(conn, attrs.evolve(self._row(row), audit_id=None,
                                                result=INTERRUPTED, detail=detail,
                                                occurred_at=now))
            pending = conn.execute(_UNSETTLED.format(settled="'completed', 'failed'"),
                                   (INTERRUPTED, limit)).fetchall()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return [self._row(r) for r in pending]

    def recent(self, target_id: str, limit: int) -> Deferred[list[AuditRecord]]:
        """The last ``limit`` records of ``target_id``, oldest first."""
        return self._read(self._recent_sync, target_id, limit)

    def _recent_sync(self, target_id: str, limit: int) -> list[AuditRecord]:
        rows = self._require().execute(
            "SELECT * FROM (SELECT audit_id, session_id, client_identity, principal, source,"
            " target_id, command_id, command, target_json, reason, confirmed, result, detail,"
            " occurred_at, seq FROM audit WHERE target_id = ? ORDER BY seq DESC LIMIT ?)"
            " ORDER BY seq ASC",
            (target_id, limit),
        ).fetchall()
        return [self._row(r) for r in rows]

    def all_records(self) -> Deferred[list[AuditRecord]]:
        """Every record in write order (for tests and tooling)."""
        return self._run(self._all_sync)

    def _all_sync(self) -> list[AuditRecord]:
        rows = self._require().execute(
            "SELECT audit_id, session_id, client_identity, principal, source, target_id,"
            " command_id, command, target_json, reason, confirmed, result, detail,"
            " occurred_at, seq FROM audit ORDER BY seq ASC").fetchall()
        return [self._row(r) for r in rows]

    @staticmethod
    def _row(r: tuple[Any, ...]) -> AuditRecord:
        return AuditRecord(
            audit_id=r[0], session_id=r[1],
            identity=Identity(client_identity=r[2], principal=r[3], source=r[4]),
            target_id=r[5], command_id=r[6], command=r[7], target=json.loads(r[8]),
            reason=r[9], confirmed=bool(r[10]), result=r[11], detail=r[12],
            occurred_at=r[13],
        )

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.OperationalError("audit store is not open")
        return self._conn

    def close(self) -> Deferred[None]:
        """Finish queued work, close the database and stop the thread."""
        def close_sync() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._file = None

        reads, self._reads = self._reads, collections.deque()
        for waiting, _, _ in reads:  # never handed to a thread that is stopping
            waiting.errback(sqlite3.OperationalError("audit store is closing"))
        if self._opened is None:
            d: Deferred[None] = Deferred()
            d.callback(None)
            return d
        d = self._run(close_sync)

        def stop(result: Any) -> Any:
            self._pool.stop()
            self._opened = None
            self._pool = ThreadPool(minthreads=1, maxthreads=1, name="relay-audit")
            return result

        d.addBoth(stop)
        return d
