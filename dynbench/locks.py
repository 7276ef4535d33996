"""The lock that lets many processes share a records file or a cache entry: filelock's FileLock, i.e. flock(2).

flock belongs to an open file, so the OS drops it when its process ends, however it ends (SIGKILL, the OOM
killer): a killed job never blocks the others. A lock made of a file's existence (filelock's SoftFileLock)
would outlive a killed holder and stop every later job, so filelock's fallback to it, on a file system
without flock, is turned off: there, taking a lock fails with a clear error instead (README: "Many jobs,
one results folder and one cache").
"""
from __future__ import annotations

import errno
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from dynbench.errors import DynbenchError

log = logging.getLogger(__name__)


@contextmanager
def exclusive(path: Path, holder: str) -> Iterator[None]:
    """Hold ``path``'s lock, the file ``<path>.lock`` beside it (so that every process that sees ``path`` sees
    the lock), for the block. If another process holds it, log that this one waits for ``path`` and why
    (``holder``: what the other process is doing), then wait for as long as it takes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path.with_name(f"{path.name}.lock"), fallback_to_soft=False)
    try:
        try:
            lock.acquire(blocking=False)
        except Timeout:
            log.info("waiting for %s: %s", path, holder)
            lock.acquire()
    except OSError as err:
        if err.errno != errno.ENOSYS:
            raise
        raise DynbenchError(f"cannot lock {lock.lock_file}: its file system has no flock; put results_dir and "
                            "cache_dir on a local disk or on a file system with locks (README: Many jobs)") from None
    try:
        yield
    finally:
        lock.release()
