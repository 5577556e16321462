"""Frozen-prefix feature cache.

When the first k layers of a Sequential model are frozen (no trainable
weight) and deterministic (no dropout), their output for an image never
changes during training. So instead of recomputing

    f(x) = layer_k-1( ... layer_0(x))

for every image in every epoch, the first epoch stores f(x) per image (in
memory, or in a memory-mapped file on disk when large) and later epochs feed
the stored rows straight into layer k. With blocks 1-4 of VGG16 frozen this
removes ~90% of the forward work of every epoch after the first.

The stored rows are the very arrays the first epoch computed. Training from the
cache gives the numbers recomputing gives up to float rounding only: a
convolution's output for one image can differ in its last bit with the other
images of its batch (the tiled kernels' summation order). So that a resumed run
still equals an uninterrupted one bit for bit, the cache logs which images were
computed together (``plan``); a checkpoint stores the log and, after a resume,
fit() recomputes the lost rows in those very groups (``refill``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile

import numpy as np

from minicnn.io.storage import fault_point, storage_error
from minicnn.nn import Dropout, Module
from minicnn.tensor import Tensor, no_grad


def _deterministic(layer: Module) -> bool:
    return not any(isinstance(leaf, Dropout) for leaf in layer.leaf_layers())


def _frozen(layer: Module) -> bool:
    return all(not p.trainable for p in layer.parameters())


def frozen_prefix(model: Module) -> int:
    """How many leading top-level layers of a Sequential are frozen and deterministic.

    The count stops before the first layer with a trainable weight, and never
    covers the whole model (the last layer always runs, so a loss has a graph).
    0 for models that are not Sequential.
    """
    layers = getattr(model, "layers", None)
    if not layers:
        return 0
    k = 0
    for layer in layers[:-1]:
        if not (_frozen(layer) and _deterministic(layer)):
            break
        k += 1
    # trailing parameter-free layers (pool, flatten) are cheap; keep them in the prefix anyway
    return k


def prefix_key(model: Module, k: int) -> str:
    """What cached prefix outputs depend on: k and the bytes of the first k layers' weights.

    fit() compares it every epoch, so frozen weights changed by a callback (or loaded
    from a file) are never used with the outputs of the old ones: the cache starts over.
    Hashing VGG16's blocks 1-4 (30 MB) takes a few tens of milliseconds per epoch.
    """
    h = hashlib.sha1(str(k).encode())
    for layer in model.layers[:k]:
        for p in layer.parameters():
            data = np.ascontiguousarray(p.numpy())
            h.update(f"{data.dtype.str}{data.shape}".encode())
            h.update(data.view(np.uint8).reshape(-1))
    return h.hexdigest()


class FeatureCache:
    """Rows of prefix outputs for N samples, filled lazily, read back by index.

    ``storage``: "memory", "disk" (np.memmap in ``directory``, default a
    temporary folder) or "auto" (memory below ``max_memory_bytes``).
    """

    def __init__(self, num_samples: int, storage: str = "auto", directory: str | None = None,
                 max_memory_bytes: int = 2 << 30):
        if storage not in ("auto", "memory", "disk"):
            raise ValueError(f"feature cache storage must be 'auto', 'memory' or 'disk', got {storage!r}")
        self.num_samples = num_samples
        self.storage, self.directory, self.max_memory_bytes = storage, directory, max_memory_bytes
        self.rows: np.ndarray | None = None
        self.filled = np.zeros(num_samples, bool)
        self.path: str | None = None
        self._tmpdir = None
        self.fill_log: list[np.ndarray] = []   # the index groups stored, in order

    @property
    def complete(self) -> bool:
        return bool(self.filled.all())

    def _allocate(self, row_shape, dtype) -> None:
        nbytes = self.num_samples * int(np.prod(row_shape)) * np.dtype(dtype).itemsize
        on_disk = self.storage == "disk" or (self.storage == "auto" and nbytes > self.max_memory_bytes)
        shape = (self.num_samples,) + tuple(row_shape)
        if not on_disk:
            self.rows = np.empty(shape, dtype)
            return
        if self.directory is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="minicnn-cache-")
            directory = self._tmpdir.name
        else:
            directory = self.directory
            os.makedirs(directory, exist_ok=True)
        try:
            fd, self.path = tempfile.mkstemp(suffix=".f32", dir=directory)
            if hasattr(os, "posix_fallocate"):   # reserve the blocks: a full disk fails here, not as SIGBUS
                os.posix_fallocate(fd, 0, max(1, nbytes))
            os.close(fd)
            self.rows = np.memmap(self.path, dtype=dtype, mode="w+", shape=shape)
        except OSError as err:
            if self.path and os.path.exists(self.path):
                os.remove(self.path)
            failed = storage_error(err, self.path or directory, f"the feature cache needs {nbytes} bytes; give "
                                   "fit(cache_dir=...) on a larger disk, or feature_cache='memory'")
            self.path = None
            if failed is not None:
                raise failed from err
            raise

    def store(self, indices: np.ndarray, features: np.ndarray) -> None:
        fault_point("feature")
        if self.rows is None:
            self._allocate(features.shape[1:], features.dtype)
        self.rows[indices] = features
        self.filled[indices] = True
        self.fill_log.append(np.asarray(indices, np.int64).copy())

    def plan(self) -> dict:
        """The groups of samples computed together so far: {"indices": concatenated, "sizes": per group}."""
        sizes = np.array([len(g) for g in self.fill_log], np.int64)
        indices = np.concatenate(self.fill_log) if self.fill_log else np.zeros(0, np.int64)
        return {"indices": indices, "sizes": sizes}

    def refill(self, plan: dict, compute) -> None:
        """Recompute the rows of ``plan`` group by group: ``compute(indices) -> (kept indices, rows)``."""
        indices, sizes = np.asarray(plan["indices"], np.int64), np.asarray(plan["sizes"], np.int64)
        for group in np.split(indices, np.cumsum(sizes)[:-1]) if len(sizes) else []:
            kept, rows = compute(group)
            if rows is not None:
                self.store(kept, rows)

    def has(self, indices: np.ndarray) -> bool:
        return self.rows is not None and bool(self.filled[indices].all())

    def get(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray(self.rows[indices])

    @property
    def nbytes(self) -> int:
        return 0 if self.rows is None else int(self.rows.nbytes)

    def close(self) -> None:
        """Drop the rows (and delete the disk file)."""
        self.rows = None
        self.filled[:] = False
        self.fill_log = []
        if self.path and os.path.exists(self.path):
            os.remove(self.path)
        self.path = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None


class PrefixCaching:
    """The feature-cache half of fit()'s Trainer: one FeatureCache per data source ("train", "val"),
    started over when the frozen prefix changes, refilled in its logged groups after a resume."""

    def _cache_for(self, key: str, source, k: int) -> FeatureCache | None:
        if not (self.feature_cache and k and source.indexable and not source.augmented):
            return None
        held = self._caches.get(key)
        version = prefix_key(self.model, k)       # the prefix's depth and the bytes of its weights
        if held is None or held[0] != version:    # changed (two-phase, a callback): start over
            if held is not None:
                held[1].close()
            held = (version, FeatureCache(len(source), self.feature_cache, self.cache_dir))
            self._caches[key] = held
            plan = self.resume_caches.pop(key, None)
            if plan is not None and plan["version"] == version:
                held[1].refill(plan, lambda idx: self._prefix_rows(source, idx, k))
        return held[1]

    def _prefix_rows(self, source, indices: np.ndarray, k: int):
        """(kept indices, prefix outputs) of the samples ``indices``, computed as one batch."""
        batch = source.fetch(indices)
        if batch is None:
            return indices, None
        kept, x, _ = batch
        with no_grad():
            h = self._layers(Tensor(np.asarray(x, self.dtype), device=self.device), 0, k)
        return kept, h.numpy()
