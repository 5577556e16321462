"""A disk cache of decoded, resized images: one memory-mapped ``.npy`` per (data set, size).

Files in ``cache_dir`` for a data set with fingerprint K (see
``Dataset.fingerprint``: source files, their sizes and times, image size, fit):

- ``K.npy``          (N, H, W, 3) uint8, appears (by an atomic rename) only when
                     every sample has been decoded or found unreadable;
- ``K.partial.npy``  the same array while it is being filled;
- ``K.state.npy``    uint8 per sample: 0 not yet decoded, 1 cached, 2 unreadable;
- ``K.bad.json``     {index: reason} for the unreadable ones.

The state is written (atomically: temp file + ``os.replace``) only after the
pixels have been flushed, so "1" always means the pixels are on disk; an
interrupted first pass resumes where it stopped.  One cache object is shared
per file within a process, so a train and a val loader of one data set fill the
same cache.  Separate processes should not fill one cache at the same time.
"""

from __future__ import annotations

import json
import os
import threading

import numpy as np

from minicnn.data.base import Dataset
from minicnn.data.errors import CorruptImageError, DatasetError

_OPEN: dict[str, DiskCache] = {}
_OPEN_LOCK = threading.Lock()

TODO, CACHED, BAD = 0, 1, 2


def _atomic_save(path: str, array: np.ndarray) -> None:
    tmp = f"{path}.tmp{os.getpid()}.npy"
    np.save(tmp, array)
    os.replace(tmp, path)


class DiskCache:
    """Decoded images of one data set at one size, memory-mapped from ``cache_dir``."""

    @classmethod
    def open(cls, cache_dir: str | os.PathLike, dataset: Dataset) -> DiskCache:
        """The (process-wide shared) cache of ``dataset`` (a base data set, not a Subset)."""
        if dataset.image_size is None:
            raise DatasetError(f"a disk cache needs fixed-size images: give {type(dataset).__name__} "
                               f"image_size=(H, W)")
        os.makedirs(cache_dir, exist_ok=True)
        stem = os.path.join(os.fspath(cache_dir), f"{type(dataset).__name__.lower()}-{dataset.fingerprint()}")
        with _OPEN_LOCK:
            if stem not in _OPEN:
                _OPEN[stem] = cls(stem, len(dataset), dataset.image_size)
            return _OPEN[stem]

    def __init__(self, stem: str, n: int, size: tuple[int, int]):
        self.stem, self.n, self.shape = stem, n, (n, size[0], size[1], 3)
        self.final, self.partial = f"{stem}.npy", f"{stem}.partial.npy"
        self.state_path, self.bad_path = f"{stem}.state.npy", f"{stem}.bad.json"
        self.lock = threading.Lock()
        self.state = self._load_state()
        self.bad: dict[int, str] = {}
        if os.path.isfile(self.bad_path):
            with open(self.bad_path, encoding="utf-8") as f:
                self.bad = {int(k): v for k, v in json.load(f).items()}
        if os.path.isfile(self.final) and self.state is not None and (self.state != TODO).all():
            self.images = np.load(self.final, mmap_mode="r")
        elif os.path.isfile(self.partial) and self.state is not None:
            self.images = np.lib.format.open_memmap(self.partial, mode="r+")
        else:
            self.state = np.zeros(n, dtype=np.uint8)
            self.bad = {}
            self.images = np.lib.format.open_memmap(self.partial, mode="w+", dtype=np.uint8, shape=self.shape)
        if self.images.shape != self.shape:
            raise DatasetError(f"cache file {self.stem}.*.npy has shape {self.images.shape}, "
                               f"expected {self.shape}; delete it")
        self.dirty = False

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
            return np.array(self.images[index])
        if s == BAD:
            path, _, reason = self.bad.get(index, "?\t?").partition("\t")
            raise CorruptImageError(path, reason)
        return None

    def put(self, index: int, image: np.ndarray) -> None:
        if image.shape != self.shape[1:]:
            raise DatasetError(f"image {index} has shape {image.shape}, cache expects {self.shape[1:]}")
        self.images[index] = image
        self.state[index] = CACHED
        self.dirty = True

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
            if isinstance(self.images, np.memmap) and self.images.mode != "r":
                self.images.flush()
            _atomic_save(self.state_path, self.state)
            tmp = f"{self.bad_path}.tmp{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({str(k): v for k, v in self.bad.items()}, f)
            os.replace(tmp, self.bad_path)
            if self.complete and os.path.isfile(self.partial):
                os.replace(self.partial, self.final)  # the open map still points at the same file
            self.dirty = False
