"""The store's one writer thread: every write of the daemon goes through it, off the event
loop, in order.

Callers :meth:`StoreWriter.submit` a job — a function of the connection — and get a
:class:`concurrent.futures.Future` (or await :meth:`StoreWriter.run`). The thread takes
every job waiting, runs each inside its own savepoint of one ``BEGIN IMMEDIATE``
transaction (a failing job rolls back alone and fails its future), commits once, and only
then resolves the futures and, when a job was submitted with ``notify=True`` (it queued
webhook deliveries), calls ``on_commit`` (from this thread). Reads that
must see every earlier write go through the same thread; others use :meth:`read`, on a
second connection (WAL lets it read while the writer writes).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sfu import log
from sfu.store import schema

__all__ = ["StoreWriter", "Job"]

logger = log.get("sfu.store")

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]
#: Jobs committed together at most (a burst of joins is one fsync-free WAL append).
MAX_BATCH = 256
_STOP = object()


class StoreWriter:
    def __init__(self, path: str | Path, on_commit: Callable[[], None] | None = None) -> None:
        self.path = str(path)
        self.on_commit = on_commit
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None
        self._read_pool = concurrent.futures.ThreadPoolExecutor(1, "sfu-store-read")
        self.commits = 0
        self.failed_jobs = 0

    # -- lifecycle -----------------------------------------------------------------------
    def open(self) -> int:
        """Create or migrate the database (in the caller's thread, before anything else
        uses it) and start the writer thread; returns the schema version."""
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = schema.connect(self.path)
        try:
            version = schema.migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._thread = threading.Thread(target=self._run, args=(conn,), name="sfu-store-writer",
                                        daemon=True)
        self._thread.start()
        return version

    def close(self, timeout_s: float = 10.0) -> None:
        """Run every job already submitted, commit, and stop the thread."""
        if self._thread is not None:
            self._jobs.put(_STOP)
            self._thread.join(timeout_s)
            self._thread = None
        self._read_pool.shutdown(wait=True)
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    # -- writes --------------------------------------------------------------------------
    def submit(self, job: Callable[[sqlite3.Connection], T], *,
               notify: bool = False) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        if self._thread is None:
            future.set_exception(RuntimeError("the store is closed"))
            return future
        self._jobs.put((job, future, notify))
        return future

    async def run(self, job: Callable[[sqlite3.Connection], T], *, notify: bool = False) -> T:
        """Submit ``job`` and wait for its commit."""
        return await asyncio.wrap_future(self.submit(job, notify=notify))

    # -- reads ---------------------------------------------------------------------------
    async def read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read-only ``query`` on the reader connection, in the reader thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._read_pool, self._read, query)

    def _read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        if self._reader is None:
            self._reader = schema.connect(self.path)
        self._reader.execute("BEGIN")
        try:
            return query(self._reader)
        finally:
            self._reader.execute("ROLLBACK")

    # -- the thread ----------------------------------------------------------------------
    def _run(self, conn: sqlite3.Connection) -> None:
        try:
            while True:
                item = self._jobs.get()
                batch = [item]
                while len(batch) < MAX_BATCH:
                    try:
                        batch.append(self._jobs.get_nowait())
                    except queue.Empty:
                        break
                stop = any(b is _STOP for b in batch)
                jobs = [b for b in batch if b is not _STOP]
                if jobs:
                    self._commit(conn, jobs)
                if stop:
                    return
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, jobs: list[Any]) -> None:
        results: list[tuple[concurrent.futures.Future[Any], Any, BaseException | None]] = []
        notify = False
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job, future, wants_notify in jobs:
                conn.execute("SAVEPOINT job")
                try:
                    value = job(conn)
                except Exception as exc:  # a bad job fails alone; the batch goes on
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    self.failed_jobs += 1
                    logger.exception("store_job_failed")
                    results.append((future, None, exc))
                    continue
                conn.execute("RELEASE job")
                notify = notify or wants_notify
                results.append((future, value, None))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:  # the commit itself failed (disk full, I/O error)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            logger.error("store_commit_failed", error=str(exc))
            for _, future, _ in jobs:
                if not future.done():
                    future.set_exception(exc)
            return
        self.commits += 1
        for future, value, error in results:  # only now: the futures see committed state
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)
        if notify and self.on_commit is not None:
            self.on_commit()
