"""Online backups of the database and their restore.

The copy is made with SQLite's online backup API from a connection of its own, so the box keeps
serving while it runs (WAL: readers never block the writer). Each copy is written under a
temporary name, fsync'd, its hash chain verified, and only then renamed into place: a copy that
exists is a whole, verified copy.

Restore refuses while a box holds the data directory's lock (`hallbox run` takes it), verifies the
copy first, and keeps the database it replaces beside it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import functools
import logging
import multiprocessing
import os
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from edge.verify import VerifyResult, verify_db

log = logging.getLogger(__name__)
DB_NAME = "hallbox.db"
LOCK_NAME = "hallbox.lock"
PREFIX = "hallbox-"


class BackupError(Exception):
    pass


@dataclass(frozen=True)
class BackupResult:
    path: Path
    events: int
    head_seq: int
    bytes: int


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy(src: Path, dest: Path) -> None:
    """SQLite online backup src -> dest (a new file).

    In one step: the copy reads one consistent snapshot (WAL: the writer carries on meanwhile).
    Copying in steps would restart whenever the box commits between two steps, and a busy
    hall commits every few milliseconds."""
    # Not mode=ro: a WAL database needs its -shm to be readable consistently; this only reads.
    source = sqlite3.connect(src)
    try:
        target = sqlite3.connect(dest)
        try:
            source.backup(target)
            # A self-contained file: no -wal beside it.
            target.execute("PRAGMA journal_mode=DELETE")
        finally:
            target.close()
    finally:
        source.close()
    with open(dest, "rb+") as f:
        os.fsync(f.fileno())


def _verified(path: Path) -> VerifyResult:
    r = verify_db(path)
    if not r.ok:
        raise BackupError(f"{path}: the copy's chain does not verify at seq {r.broken_seq}: "
                          f"{r.reason}")
    return r


def backup(db: Path, dest: Path, *, into_dir: bool = False,
           now: datetime | None = None) -> BackupResult:
    """Copy the database `db` to `dest`: a file, or (an existing directory, or `into_dir`) a
    directory to put a dated copy in."""
    if db.is_dir():
        db = db / DB_NAME
    if not db.is_file():
        raise BackupError(f"no database at {db}")
    if dest.is_dir() or into_dir:
        dest.mkdir(parents=True, exist_ok=True)
        stamp = (now or datetime.now().astimezone()).strftime("%Y%m%d-%H%M%S")
        dest = dest / f"{PREFIX}{stamp}.db"
    if dest.exists():
        raise BackupError(f"{dest} exists; choose another name")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.partial")
    tmp.unlink(missing_ok=True)
    try:
        _copy(db, tmp)
        r = _verified(tmp)
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return BackupResult(dest, r.events, r.head_seq, dest.stat().st_size)


def prune(directory: Path, keep: int) -> list[Path]:
    """Keep the newest `keep` copies made by the daily backup; return the removed ones."""
    copies = sorted(directory.glob(f"{PREFIX}*.db"))
    gone = copies[:-keep] if keep > 0 else copies
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


# ---- the data directory's lock: one box per data directory, no restore under a running box --
class BoxLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._f: IO[str] | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")  # held open (and locked) for the box's lifetime
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return False
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._f = f
        return True

    def release(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    @staticmethod
    def held(data_dir: Path) -> bool:
        """True when a running box holds the lock of `data_dir`."""
        path = data_dir / LOCK_NAME
        if not path.exists():
            return False
        with open(path) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
        return False


def restore(src: Path, data_dir: Path, *,
            now: datetime | None = None) -> tuple[VerifyResult, Path | None]:
    """Put the copy `src` in place as data_dir/hallbox.db; the replaced files go aside.

    Returns the copy's verification and where the replaced database went (None: there was none).
    """
    if BoxLock.held(data_dir):
        raise BackupError(f"a box is running on {data_dir}; stop it first "
                          "(systemctl stop hallbox), then restore")
    r = verify_db(src)
    if not r.ok:
        raise BackupError(f"{src} does not verify (seq {r.broken_seq}: {r.reason}); "
                          "not restoring it")
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = BoxLock(data_dir)
    if not lock.acquire():  # a box started meanwhile
        raise BackupError(f"a box is running on {data_dir}; stop it first")
    try:
        target = data_dir / DB_NAME
        tmp = data_dir / f".{DB_NAME}.restoring"
        tmp.unlink(missing_ok=True)
        _copy(src, tmp)
        _verified(tmp)
        # WAL mode as the store runs it, set before the file takes the database's name.
        with contextlib.closing(sqlite3.connect(tmp)) as c:
            c.execute("PRAGMA journal_mode=WAL")
        aside: Path | None = None
        if target.exists():
            stamp = (now or datetime.now().astimezone()).strftime("%Y%m%d-%H%M%S")
            aside = data_dir / f"replaced-{stamp}"
            aside.mkdir()
            for suffix in ("", "-wal", "-shm"):
                p = data_dir / f"{DB_NAME}{suffix}"
                if p.exists():
                    shutil.move(p, aside / p.name)
        for suffix in ("-wal", "-shm"):
            (data_dir / f".{DB_NAME}.restoring{suffix}").unlink(missing_ok=True)
        os.replace(tmp, target)
        _fsync_dir(data_dir)
    finally:
        lock.release()
    return r, aside


# ---- the daily copy, run inside the box ---------------------------------------------------
async def run_in_child(db: Path, directory: Path, *, now: datetime) -> BackupResult:
    """`backup` in a child process: verifying the copy's chain is CPU work that, in a thread of
    the box, would hold the GIL against the event loop and the store's writer."""
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return await asyncio.get_running_loop().run_in_executor(
            pool, functools.partial(backup, db, directory, into_dir=True, now=now))


def next_run(now: datetime, at: str) -> datetime:
    h, m = (int(x) for x in at.split(":"))
    t = now.replace(hour=h, minute=m, second=0, microsecond=0)
    return t if t > now else t + timedelta(days=1)


class DailyBackup:
    """A component: each day at `at` (hall time) copies the database and prunes old copies.

    A failure is reported as the health of device "backup" (grade C: the hall serves on) and
    logged once; the next success reports it recovered.
    """

    name = "backup"

    def __init__(self, db: Path, directory: Path, *, at: str, keep: int,
                 now: Callable[[], datetime], report: Callable[[bool, str], Any]) -> None:
        self.db, self.directory, self.at, self.keep = db, directory, at, keep
        self._now = now
        self._report = report
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="daily-backup")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def run_once(self) -> BackupResult | None:
        try:
            r = await run_in_child(self.db, self.directory, now=self._now())
            await asyncio.to_thread(prune, self.directory, self.keep)
        except Exception as e:
            log.error("daily backup failed: %s", e)
            self._report(False, str(e))
            return None
        log.info("daily backup %s: %d events, head seq %d", r.path, r.events, r.head_seq)
        self._report(True, "")
        return r

    async def _run(self) -> None:
        while True:
            now = self._now()
            await asyncio.sleep(max(1.0, (next_run(now, self.at) - now).total_seconds()))
            await self.run_once()
