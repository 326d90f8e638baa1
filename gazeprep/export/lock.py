"""One writer per output folder: an exclusive, kernel-held lock on ``<out>/.gazeprep.lock``.

:func:`writer_lock` takes an advisory ``flock`` on a lock file inside the output folder and writes
the holder's pid into it (where ``flock`` is missing or the file system refuses locks, the build
warns and runs unlocked). A second process asking for the same folder fails at once with :class:`~gazeprep.errors.LockedError` naming that pid. The
kernel drops the lock when its holder exits for any reason (``kill -9`` included), so a stale lock
file never blocks the next run: only a live holder does.

The lock is re-entrant within one process (a build holds it and :func:`gazeprep.export.finalize`
takes it again): ``flock`` locks belong to an open file, so a second ``open`` in the same process
would otherwise conflict with the first. On release the holder deletes the lock file while still
holding the lock (a clean run leaves no trace in the folder); a process that locked a file which
was deleted meanwhile notices (its descriptor no longer matches the path) and starts again, so two
processes never both believe they hold the lock. After a ``kill -9`` the file stays, with the dead
holder's pid in it, unlocked: the next run takes it over.
"""

from __future__ import annotations

import errno
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from gazeprep.errors import LockedError, StorageError

LOCK_NAME = ".gazeprep.lock"

fcntl: ModuleType | None
try:  # POSIX
    import fcntl as _fcntl

    fcntl = _fcntl
except ImportError:  # pragma: no cover - Windows: no lock (a warning says so)
    fcntl = None


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock without waiting; False when another open file holds it."""
    if fcntl is None:  # pragma: no cover
        raise OSError(errno.ENOSYS, "no flock on this platform")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


# errnos of file systems that do not implement locks: the build goes on, unlocked, with a warning
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}

_held: dict[str, list] = {}  # resolved folder -> [fd (-1: no lock support), depth, lock file]
_guard = threading.Lock()


def lock_path(out_dir: str | Path) -> Path:
    """The lock file of the output folder ``out_dir``."""
    return Path(out_dir) / LOCK_NAME


def holder_pid(out_dir: str | Path) -> int | None:
    """The pid written by the current (or last, if it was killed) holder of ``out_dir``'s lock."""
    try:
        text = lock_path(out_dir).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (it was not deleted or replaced)."""
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _acquire(out: Path) -> int:
    """Lock ``out`` (created if missing); returns the lock file's descriptor (-1: no lock support)."""
    path = lock_path(out)
    for _ in range(100):  # a retry only happens when a holder deleted the file as we opened it
        try:
            out.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError.from_os_error(exc, exc.filename or path) from exc
        try:
            locked = _try_lock(fd)
        except OSError as exc:
            os.close(fd)
            if exc.errno in _NO_LOCKS:
                warnings.warn(
                    f"{path}: the file system does not support locks; nothing stops a second "
                    "build from writing into this folder at the same time",
                    stacklevel=4,
                )
                return -1
            raise StorageError.from_os_error(exc, path) from exc
        if not locked:
            os.close(fd)
            pid = holder_pid(out)
            who = f"pid {pid}" if pid is not None else "a process whose pid is not recorded yet"
            raise LockedError(
                f"{out} is locked by another gazeprep process writing to it ({who}); "
                "wait for it to finish, stop it, or choose another --out"
            )
        if not _same_file(fd, path):  # locked a file its holder had just deleted: start again
            os.close(fd)
            continue
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except OSError as exc:
            _release(fd, path)
            raise StorageError.from_os_error(exc, path) from exc
        return fd
    raise LockedError(f"{out}: could not take the writer lock ({path} keeps being replaced)")


def _release(fd: int, path: Path) -> None:
    if fd < 0:
        return
    try:
        path.unlink(missing_ok=True)  # still holding the lock: see the module docstring
    except OSError:
        pass  # a lock file left behind is harmless: the kernel drops the lock on close
    finally:
        os.close(fd)


@contextmanager
def writer_lock(out_dir: str | Path) -> Iterator[Path]:
    """Hold the exclusive writer lock of ``out_dir`` (created if missing) for the ``with`` block.

    Raises :class:`~gazeprep.errors.LockedError` at once, naming the holder's pid, when another
    process holds it; :class:`~gazeprep.errors.StorageError` when the lock file cannot be written.
    Yields the lock file's path. Re-entrant within one process.
    """
    out = Path(out_dir)
    key = str(out.resolve())
    with _guard:
        entry = _held.get(key)
        if entry is not None:
            entry[1] += 1
        else:
            _held[key] = [_acquire(out), 1, lock_path(out)]
    try:
        yield lock_path(out)
    finally:
        with _guard:
            entry = _held[key]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[key]
                _release(entry[0], entry[2])
