"""The forwarder's sending queue: in memory (the default) or on disk (``forward.queue_dir``).

Both queues hold serialized OTLP export requests in arrival order, bounded by request count
and by bytes; one consumer (the forwarder's sender thread) reads the oldest with
:meth:`head`, and :meth:`remove` deletes it only once it has been delivered or given up.
An entry being sent therefore still counts as queued, which is what keeps the forwarder's
``received = forwarded + dropped + queued`` identity exact.

:class:`DiskQueue` keeps the requests in one SQLite database (``queue.db``, standard library
``sqlite3``) in WAL mode. Why SQLite: it is in every Python, its write-ahead log detects and
discards a torn trailing write on its own (every WAL frame carries a checksum; a frame that
does not verify ends recovery there), and a single-writer append/delete workload is what it
does well. Every entry also stores a CRC-32 of its body; an entry whose body does not verify
on replay (disk corruption, a hand-edited file) is deleted and reported, never sent.

fsync policy (``forward.queue_sync``):

- ``normal`` (default): ``PRAGMA synchronous=NORMAL``. Each accepted request is a committed
  transaction in the WAL before :meth:`put` returns, so it survives the process being killed
  (``kill -9``, OOM); the WAL is fsynced at checkpoints, so a power loss or kernel crash may
  lose the most recent requests, but never corrupts the queue.
- ``full``: ``PRAGMA synchronous=FULL``: every commit is fsynced; survives power loss, at one
  fsync per request.

One process per queue: :class:`DiskQueue` holds an exclusive ``flock`` on ``queue.lock`` in
the directory while open (released by the kernel however the process ends), so a second
sidecar pointed at the same directory is refused instead of replaying the same entries.

Replay: :class:`DiskQueue` loads the entries left by the previous process when it opens.
Only the oldest entry can have been in flight (the sender sends one request at a time, oldest
first, and deletes it once the upstream answered), so only it may reach the upstream twice
(at-least-once); :attr:`Replay.in_flight` names it.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import sqlite3
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

DB_NAME = "queue.db"
LOCK_NAME = "queue.lock"
WAL_CHECKPOINT_PAGES = 4096
SYNC_MODES = ("normal", "full")
# Bodies a DiskQueue also keeps in memory (newest requests, until sent) so the sender does
# not read back what was just written; older ones are read from disk when their turn comes.
CACHE_BYTES = 16 << 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    signal TEXT NOT NULL,
    items INTEGER NOT NULL,
    crc INTEGER NOT NULL,
    body BLOB NOT NULL
)
"""


@dataclass
class Entry:
    """One queued export request (``body`` is loaded lazily by :class:`DiskQueue`)."""

    id: int
    signal: str
    items: int
    size: int
    body: bytes | None = None
    cached: bool = False  # DiskQueue: body kept in memory since put


@dataclass
class Replay:
    """What a :class:`DiskQueue` found on open: entries kept, and entries that were corrupt.

    ``in_flight`` is the oldest kept entry: the one the previous process may have been
    sending when it ended, hence a possible duplicate (None when nothing was kept).
    """

    entries: list[Entry]
    corrupt: list[Entry]

    @property
    def in_flight(self) -> Entry | None:
        return self.entries[0] if self.entries else None


class QueueError(RuntimeError):
    """The on-disk queue cannot be opened or used (message names the path)."""


class MemoryQueue:
    """A bounded FIFO of requests in memory; thread-safe. Lost when the process ends."""

    persistent = False

    def __init__(self, max_requests: int, max_bytes: int) -> None:
        self.max_requests = max(1, max_requests)
        self.max_bytes = max(1, max_bytes)
        self._lock = threading.Lock()
        self._entries: collections.deque[Entry] = collections.deque()
        self._bytes = 0
        self._next_id = 1

    def _fits(self, size: int) -> bool:
        return len(self._entries) < self.max_requests and self._bytes + size <= self.max_bytes

    def put(self, signal: str, body: bytes, items: int) -> Entry | None:
        """Append a request; None (nothing stored) when it would exceed a bound."""
        with self._lock:
            if not self._fits(len(body)):
                return None
            entry = Entry(self._next_id, signal, items, len(body), body)
            self._next_id += 1
            self._entries.append(entry)
            self._bytes += entry.size
            return entry

    def head(self) -> Entry | None:
        """The oldest entry with its body, or None when empty."""
        with self._lock:
            return self._entries[0] if self._entries else None

    def remove(self, entry: Entry) -> bool:
        """Delete ``entry`` (delivered or given up); False when it was no longer queued."""
        with self._lock:
            if self._entries and self._entries[0] is entry:
                self._entries.popleft()
            elif entry in self._entries:
                self._entries.remove(entry)
            else:
                return False
            self._bytes -= entry.size
            return True

    def stats(self) -> tuple[int, int]:
        """(requests, bytes) queued."""
        with self._lock:
            return len(self._entries), self._bytes

    def take_all(self) -> list[Entry]:
        """Remove and return every entry (shutdown without persistence)."""
        with self._lock:
            out = list(self._entries)
            self._entries.clear()
            self._bytes = 0
            return out

    def fraction(self) -> float:
        """How full the queue is: the larger of its request and byte fractions (0..1)."""
        with self._lock:
            return max(len(self._entries) / self.max_requests, self._bytes / self.max_bytes)

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        """Nothing to release."""


class DiskQueue(MemoryQueue):
    """The same queue kept in ``<directory>/queue.db``; see the module docstring.

    Entry metadata stays in memory (for bounds and the head); bodies live on disk, and the
    ones written by this process also in memory up to :data:`CACHE_BYTES` until sent.
    Opening creates the directory and the database if needed and loads what is there; raises
    :class:`QueueError` when that fails.
    """

    persistent = True

    def __init__(
        self, directory: str | Path, max_requests: int, max_bytes: int, sync: str = "normal"
    ) -> None:
        super().__init__(max_requests, max_bytes)
        self.cache_bytes = min(self.max_bytes, CACHE_BYTES)
        self._cached = 0
        if sync not in SYNC_MODES:
            raise ValueError(f"queue sync {sync!r} is not one of {', '.join(SYNC_MODES)}")
        self.path = Path(directory) / DB_NAME
        self._db_lock = threading.Lock()
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # One process per queue: two replaying the same entries would send them twice.
            self._lock_fd = os.open(self.path.parent / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self._lock_fd)
                raise QueueError(
                    f"{self.path.parent}: in use by another codebook process (each sidecar "
                    "needs its own forward.queue_dir)"
                ) from None
            # Telemetry is private: the database (and the -wal/-shm files SQLite creates
            # with its mode) is readable by the sidecar's user only.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30
            )
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise QueueError(f"{self.path}: cannot use WAL mode (got {mode!r})")
            self._db.execute(f"PRAGMA synchronous={sync.upper()}")
            # Checkpoint (the fsync of ``normal``) every ~16 MiB of WAL rather than 4 MiB, and
            # truncate the WAL back to that size afterwards.
            self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            self._db.execute(f"PRAGMA journal_size_limit={WAL_CHECKPOINT_PAGES * 4096}")
            self._db.execute(_SCHEMA)
            self.replayed = self._load()
        except (sqlite3.Error, OSError) as exc:
            raise QueueError(f"{self.path}: cannot open the forward queue: {exc}") from exc

    def _load(self) -> Replay:
        kept: list[Entry] = []
        corrupt: list[Entry] = []
        rows = self._db.execute(
            "SELECT id, signal, items, crc, body FROM queue ORDER BY id"
        )
        for rid, signal, items, crc, body in rows:
            ok = isinstance(body, bytes) and zlib.crc32(body) == crc
            entry = Entry(int(rid), str(signal), max(0, int(items)), len(body or b""))
            if ok and signal in ("traces", "metrics", "logs"):
                kept.append(entry)
            else:
                corrupt.append(entry)
        for entry in corrupt:
            self._db.execute("DELETE FROM queue WHERE id = ?", (entry.id,))
        for entry in kept:
            self._entries.append(entry)
            self._bytes += entry.size
        return Replay(kept, corrupt)

    def put(self, signal: str, body: bytes, items: int) -> Entry | None:
        """Commit a request to disk and append it; None when it would exceed a bound.

        Raises :class:`QueueError` when the write fails (disk full, I/O error).
        """
        try:
            with self._db_lock:  # puts serialize here, so the bound check cannot race
                with self._lock:
                    if not self._fits(len(body)):
                        return None
                cur = self._db.execute(
                    "INSERT INTO queue (signal, items, crc, body) VALUES (?, ?, ?, ?)",
                    (signal, items, zlib.crc32(body), body),
                )
                entry = Entry(int(cur.lastrowid or 0), signal, items, len(body))
                with self._lock:
                    self._entries.append(entry)
                    self._bytes += entry.size
                    if self._cached + entry.size <= self.cache_bytes:
                        entry.body, entry.cached = body, True  # the sender need not read it back
                        self._cached += entry.size
        except sqlite3.Error as exc:
            raise QueueError(f"{self.path}: cannot write the forward queue: {exc}") from exc
        return entry

    def head(self) -> Entry | None:
        """The oldest entry with its body read from disk, or None when empty."""
        entry = super().head()
        if entry is None or entry.body is not None:
            return entry
        with self._db_lock:
            row = self._db.execute("SELECT body FROM queue WHERE id = ?", (entry.id,)).fetchone()
        entry.body = bytes(row[0]) if row is not None else b""
        return entry

    def remove(self, entry: Entry) -> bool:
        """Delete ``entry`` from disk and memory; False when it was no longer queued."""
        removed = super().remove(entry)  # from memory first: a failed DELETE cannot loop
        if removed and entry.cached:
            with self._lock:
                self._cached -= entry.size
        entry.body = None
        with self._db_lock:
            self._db.execute("DELETE FROM queue WHERE id = ?", (entry.id,))
        return removed

    def take_all(self) -> list[Entry]:
        """Nothing is taken: a persistent queue keeps its entries for the next start."""
        return []

    def close(self) -> None:
        """Checkpoint the WAL and close the database."""
        with self._db_lock:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
        os.close(self._lock_fd)  # releases the lock
