"""Writing files so that a full disk or a read-only folder is a clear error, never a torn file.

``StorageError`` (an OSError) names the file, what went wrong and, for a full disk,
how much space is left. ``atomic_write`` (and its ``_bytes`` / ``_text`` forms) writes a
file (checkpoint, ONNX model, CSV, JSON, report) to a temporary name in the same folder
and renames it over the target, so a crash or a full disk leaves the old file or the
new one, never half of one, and no temporary file behind.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import tempfile

FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)
# h5py reports some HDF5 write failures as an OSError or RuntimeError whose text carries the errno
_H5_ERRNO = re.compile(r"errno = (\d+)")


class StorageError(OSError):
    """A file could not be written: disk full, file too large, read-only or no permission."""

    def __init__(self, path: str, message: str, code: int | None = None):
        self.path = path
        super().__init__(code, message, path)
        self.message = message

    def __str__(self) -> str:
        return self.message


def error_code(err: BaseException | None) -> int | None:
    """The errno of an OSError, also when h5py only put it in the message text, or in the error
    that the one raised happened while handling (HDF5 fails again closing a file it could not flush)."""
    seen = 0
    while err is not None and seen < 5:
        if isinstance(err, OSError) and err.errno:
            return err.errno
        match = _H5_ERRNO.search(str(err))
        if match:
            return int(match.group(1))
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


def free_space(path: str) -> str:
    """Free bytes on the file system holding ``path`` (its nearest existing parent), for messages."""
    folder = os.path.abspath(path)
    while folder and not os.path.exists(folder):
        folder = os.path.dirname(folder)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "unknown"
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if free < 1024 or unit == "TiB":
            return f"{free:.0f} {unit}" if unit == "bytes" else f"{free:.1f} {unit}"
        free /= 1024
    return "unknown"


def storage_error(err: BaseException, path: str, kept: str | None = None) -> StorageError | None:
    """The StorageError to raise for ``err`` met while writing ``path``; None if it is another error.

    ``kept``: what survives (e.g. "the previous checkpoint is intact"), said in the message.
    """
    code = error_code(err)
    tail = f"; {kept}" if kept else ""
    if code in FULL:
        what = "file too large for the file system or `ulimit -f`" if code == errno.EFBIG else "no space left"
        return StorageError(path, f"cannot write {path}: {what} ({free_space(path)} free on "
                                  f"{os.path.dirname(os.path.abspath(path))}){tail}", code)
    if code in DENIED:
        return StorageError(path, f"cannot write {path}: {os.strerror(code).lower()} (is the folder "
                                  f"read-only or owned by someone else?){tail}", code)
    return None


_KILL_AT = os.environ.get("MINICNN_TEST_KILL_AT")   # "point:n", read once
_PASSED: dict[str, int] = {}


def fault_point(name: str) -> None:
    """A test hook: with $MINICNN_TEST_KILL_AT = "name:n" the process SIGKILLs itself the n-th time
    it passes the point ``name`` (the fault-injection tests use it to die at exact places:
    "batch", "val_batch", "checkpoint", "write", "decode", "feature", "thesis_run"). Unset: nothing."""
    if _KILL_AT is None or _KILL_AT.partition(":")[0] != name:
        return
    _PASSED[name] = _PASSED.get(name, 0) + 1
    if _PASSED[name] == int(_KILL_AT.partition(":")[2]):
        os.kill(os.getpid(), signal.SIGKILL)


def _sync_folder(folder: str) -> None:
    """fsync a folder, so that a rename into it survives a power cut (where the platform allows)."""
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike, fill, before_rename=None, point: str = "write") -> None:
    """Call ``fill(tmp_path)`` to write a temporary file next to ``path``, fsync it, then rename it
    over ``path``: a reader sees the old file or the new one, never a torn one.

    A full disk, a file-size limit or a read-only folder is a StorageError naming ``path`` and
    the free space; the temporary file is removed whatever fails. ``before_rename()`` runs with
    the temporary file complete (a test hook); ``point`` names the fault_point passed just
    before the rename.
    """
    path = os.path.abspath(os.fspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                   dir=os.path.dirname(path))
        os.close(fd)
        fill(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if before_rename is not None:
            before_rename()
        fault_point(point)
        os.replace(tmp, path)
        tmp = None
        _sync_folder(os.path.dirname(path))
    except BaseException as err:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        kept = "the previous file is intact" if os.path.exists(path) else None
        failed = storage_error(err, path, kept) if isinstance(err, OSError) else None
        if failed is not None:
            raise failed from err
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """``atomic_write`` of ``text`` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes, before_rename=None, point: str = "write") -> None:
    """``atomic_write`` of ``data``."""
    def fill(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
    atomic_write(path, fill, before_rename, point)
