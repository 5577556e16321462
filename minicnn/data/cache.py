"""A disk cache of decoded, resized images: one ``.npy`` per (data set, size).

The pixels are read and written with pread / pwrite at each image's offset, not through
a memory map: a mapped 1.5 GB cache (HAM10000 at 224x224) would count every page it
touched in the process's resident memory; read this way they stay in the kernel's page
cache and the process holds a few batches (benchmarks/cache_rss.py). The file is an
ordinary .npy (``np.load(path, mmap_mode="r")`` opens it).

Files in ``cache_dir`` for a data set with fingerprint K (see
``Dataset.fingerprint``: source files, their sizes and times, image size, fit):

- ``K.npy``          (N, H, W, 3) uint8, appears (by an atomic rename) only when
                     every sample has been decoded or found unreadable;
- ``K.partial.npy``  the same array while it is being filled;
- ``K.state.npy``    uint8 per sample: 0 not yet decoded, 1 cached, 2 unreadable;
- ``K.crc.npy``      uint32 per sample: the CRC-32 of its pixels, checked on every read;
                     an entry that fails it (a damaged disk, a stray write) is decoded
                     again from its source and rewritten, with a warning naming it;
- ``K.bad.json``     {index: reason} for the unreadable ones.

The state is written (atomically: temp file + ``os.replace``) only after the
pixels have been flushed, so "1" always means the pixels are on disk; an
interrupted first pass resumes where it stopped.  One cache object is shared
per file within a process, so a train and a val loader of one data set fill the
same cache.  A complete cache is read-only and can be shared by any number of
processes; filling one takes an exclusive lock (``K.lock``), and a second
process that finds it taken runs without the cache (with a warning) instead of
writing into the same file.
"""

from __future__ import annotations

import errno
import io
import json
import os
import threading
import warnings
import zlib

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one process per cache there
    fcntl = None

import numpy as np

from minicnn.data.base import Dataset
from minicnn.data.errors import CorruptImageError, DatasetError
from minicnn.io.storage import atomic_write_bytes, atomic_write_text, fault_point, storage_error

_OPEN: dict[str, DiskCache] = {}
_OPEN_LOCK = threading.Lock()

TODO, CACHED, BAD = 0, 1, 2
FORMAT = "v2"          # v2: with per-image CRC-32 (older caches are not read, they have no checksums)


def _atomic_save(path: str, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write_bytes(path, buffer.getvalue())


def _new_npy(path: str, shape: tuple) -> None:
    """A new uint8 .npy of ``shape`` with its blocks reserved, so a full disk is an error now (naming
    the file), not a failed write of some image later."""
    try:
        del_map = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
        del del_map                                  # header written, file sized: unmap at once
        if hasattr(os, "posix_fallocate"):
            with open(path, "rb+") as f:
                os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    except OSError as err:
        if os.path.exists(path):
            os.remove(path)
        raise storage_error(err, path, "the decoded-image cache needs that much room; or give another "
                                       "cache_dir") or err


class _Rows:
    """The images (rows) of a uint8 .npy file, read and written with pread / pwrite."""

    def __init__(self, path: str, writable: bool):
        self.path = path
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            self.shape, fortran, dtype = read(f)
            self.offset = f.tell()
        if dtype != np.uint8 or fortran:
            raise DatasetError(f"cache file {path} holds {dtype} {'Fortran' if fortran else ''} data, expected "
                               f"uint8 images; delete it")
        self.row = int(np.prod(self.shape[1:]))
        self.writable = writable
        self._fd: int | None = None

    @property
    def fd(self) -> int:
        """The open file (opened again on use after ``close``: a loader may outlive its cache's close)."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR if self.writable else os.O_RDONLY)
        return self._fd

    def read(self, index: int) -> np.ndarray:
        out = np.empty(self.shape[1:], np.uint8)
        if os.preadv(self.fd, [out], self.offset + index * self.row) != self.row:
            out[...] = 0                               # a file cut short: the checksum will say so
        return out

    def write(self, index: int, image: np.ndarray) -> None:
        data = np.ascontiguousarray(image, np.uint8)
        if os.pwrite(self.fd, data, self.offset + index * self.row) != self.row:
            raise OSError(errno.ENOSPC, "short write", self.path)

    def sync(self) -> None:
        if self.writable and self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class DiskCache:
    """Decoded images of one data set at one size, memory-mapped from ``cache_dir``."""

    @classmethod
    def open(cls, cache_dir: str | os.PathLike, dataset: Dataset) -> DiskCache | None:
        """The (process-wide shared) cache of ``dataset`` (a base data set, not a Subset).

        None (and a warning) when another process is filling the same cache.
        """
        if dataset.image_size is None:
            raise DatasetError(f"a disk cache needs fixed-size images: give {type(dataset).__name__} "
                               f"image_size=(H, W)")
        os.makedirs(cache_dir, exist_ok=True)
        stem = cls.stem_for(cache_dir, dataset)
        with _OPEN_LOCK:
            if stem not in _OPEN:
                try:
                    _OPEN[stem] = cls(stem, len(dataset), dataset.image_size)
                except BlockingIOError:
                    warnings.warn(f"another process is filling the cache {stem}.*; decoding without it",
                                  stacklevel=3)
                    return None
            return _OPEN[stem]

    @staticmethod
    def stem_for(cache_dir: str | os.PathLike, dataset: Dataset) -> str:
        """The path (without suffix) of ``dataset``'s cache files in ``cache_dir``."""
        return os.path.join(os.fspath(cache_dir), f"{type(dataset).__name__.lower()}-{FORMAT}-{dataset.fingerprint()}")

    def __init__(self, stem: str, n: int, size: tuple[int, int]):
        self.stem, self.n, self.shape = stem, n, (n, size[0], size[1], 3)
        self.final, self.partial = f"{stem}.npy", f"{stem}.partial.npy"
        self.state_path, self.bad_path = f"{stem}.state.npy", f"{stem}.bad.json"
        self.crc_path = f"{stem}.crc.npy"
        self.lock = threading.Lock()
        self.dirty = False
        self._lock_file = None
        self._retired: list = []                   # replaced readers, closed with the cache
        self.state = self._load_state()
        if not self._final_is_complete():
            self._take_process_lock()
            self.state = self._load_state()        # re-read: the previous holder may have finished
        self.bad = self._load_bad() if self.state is not None else {}
        self.crc = self._load_crc() if self.state is not None else None
        if self.crc is None:                       # no checksums: nothing cached can be trusted
            if self._lock_file is None:
                self._take_process_lock()
            self.state = None
            self.crc = np.zeros(n, dtype=np.uint32)
        if self._final_is_complete():
            self.images = _Rows(self.final, writable=False)
        elif os.path.isfile(self.partial) and self.state is not None:
            self.images = _Rows(self.partial, writable=True)
        else:
            self.state = np.zeros(n, dtype=np.uint8)
            _new_npy(self.partial, self.shape)
            self.images = _Rows(self.partial, writable=True)
        if self.images.shape != self.shape:
            raise DatasetError(f"cache file {self.images.path} has shape {self.images.shape}, "
                               f"expected {self.shape}; delete it")

    def _final_is_complete(self) -> bool:
        return os.path.isfile(self.final) and self.state is not None and bool((self.state != TODO).all())

    def _take_process_lock(self) -> None:
        """Hold ``K.lock`` while this process may write; BlockingIOError if another process has it."""
        self._lock_file = open(f"{self.stem}.lock", "a")  # noqa: SIM115 (kept open: the lock lives with it)
        if fcntl is None:
            return
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise

    def _load_bad(self) -> dict[int, str]:
        if not os.path.isfile(self.bad_path):
            return {}
        with open(self.bad_path, encoding="utf-8") as f:
            return {int(k): v for k, v in json.load(f).items()}

    def _load_crc(self) -> np.ndarray | None:
        if not os.path.isfile(self.crc_path):
            return None
        crc = np.load(self.crc_path, allow_pickle=False)
        return crc.copy() if crc.shape == (self.n,) and crc.dtype == np.uint32 else None

    def _load_state(self) -> np.ndarray | None:
        if not os.path.isfile(self.state_path):
            return None
        state = np.load(self.state_path, allow_pickle=False)
        return state.copy() if state.shape == (self.n,) and state.dtype == np.uint8 else None

    @property
    def complete(self) -> bool:
        return bool((self.state != TODO).all())

    def get(self, index: int) -> np.ndarray | None:
        """A copy of the cached image, None if not cached yet; CorruptImageError if known bad."""
        s = self.state[index]
        if s == CACHED:
            images = self.images                  # one object throughout: another thread may swap it
            image = images.read(index)
            if zlib.crc32(image) == self.crc[index]:
                return image
            warnings.warn(f"decoded-image cache {images.path}: sample {index} fails its checksum; "
                          f"decoding it again from its source", RuntimeWarning, stacklevel=3)
            return None
        if s == BAD:
            path, _, reason = self.bad.get(index, "?\t?").partition("\t")
            raise CorruptImageError(path, reason)
        return None

    def put(self, index: int, image: np.ndarray) -> None:
        if image.shape != self.shape[1:]:
            raise DatasetError(f"image {index} has shape {image.shape}, cache expects {self.shape[1:]}")
        with self.lock:
            if not self.images.writable and not self._reopen_writable():
                return                              # another process holds the cache: leave it be
            fault_point("decode")
            try:
                self.images.write(index, image)
            except OSError as err:
                raise storage_error(err, self.images.path) or err
            self.crc[index] = zlib.crc32(np.ascontiguousarray(image))
            self.state[index] = CACHED
            self.dirty = True

    def _reopen_writable(self) -> bool:
        """A complete (read-only) cache about to be repaired: take the lock, open it for writing."""
        try:
            self._take_process_lock()
        except BlockingIOError:
            return False
        self._swap_images(_Rows(self.final, writable=True))
        return True

    def _swap_images(self, new: _Rows) -> None:
        """Use ``new`` from now on. The old file stays open until the cache closes: a loader
        thread may be reading through it right now (closing it under that read failed
        with EBADF, and a reused descriptor number could even read another file)."""
        self._retired.append(self.images)
        self.images = new

    def mark_bad(self, index: int, path: str, reason: str) -> None:
        with self.lock:
            self.bad[index] = f"{path}\t{reason}"
            self.state[index] = BAD
            self.dirty = True

    def flush(self) -> None:
        """Push pixels to disk, then the state; rename the array to its final name once complete."""
        with self.lock:
            if not self.dirty:
                return
            self.images.sync()
            _atomic_save(self.crc_path, self.crc)  # checksums first: "cached" must never lack one
            _atomic_save(self.state_path, self.state)
            atomic_write_text(self.bad_path, json.dumps({str(k): v for k, v in self.bad.items()}))
            if self.complete and os.path.isfile(self.partial):
                os.replace(self.partial, self.final)  # the open descriptor still points at the same file
            if self.complete:
                self._release_process_lock()           # complete: read-only from now on
                self._swap_images(_Rows(self.final, writable=False))
            self.dirty = False

    def _release_process_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()                    # closing the file drops the flock
            self._lock_file = None

    def close(self) -> None:
        """Flush, let other processes fill the cache, and forget this object (a later open re-reads)."""
        self.flush()
        self._release_process_lock()
        for rows in self._retired + [self.images]:
            rows.close()
        self._retired.clear()
        with _OPEN_LOCK:
            if _OPEN.get(self.stem) is self:
                del _OPEN[self.stem]
