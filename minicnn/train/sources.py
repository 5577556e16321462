"""Where fit() gets its batches: arrays, minicnn.data datasets, or any loader.

A *source* knows its length and labels and yields ``(indices, x, y)`` batches.
``indices`` (positions in the source) let the frozen-prefix feature cache
store one row per image; a source that cannot tell them (a plain iterable
loader) yields None and is never cached.

- ``(x, y)`` arrays: x (N, H, W, C) float (used as given), y (N,) ints.
- a minicnn.data Dataset: images are loaded with ``ds[i]`` and passed through
  ``transform`` (default: the thesis' scaling of uint8 pixels to [-1, 1]).
- a minicnn.data DataLoader: its order, augmentation and threads are used;
  uint8 batches go through ``transform``.
- anything else with ``__iter__`` yielding ``(x, y)`` batches: used as is.

Shuffling draws from ``minicnn.random``, so a saved random state resumes the
same order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from minicnn import random as mrandom


def scale_to_unit_range(images: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [-1, 1]: x / 127.5 - 1 (the thesis' rescaling)."""
    return np.asarray(images, np.float32) / np.float32(127.5) - np.float32(1.0)


class Source:
    labels: np.ndarray
    class_names: list[str] | None = None
    indexable = True           # batches carry indices (cacheable)
    augmented = False          # images change from epoch to epoch (not cacheable)
    reports_bad_files = False  # warns about unreadable files itself (the DataLoader does)

    @property
    def bad_files(self) -> dict[str, str]:
        """{path: reason} of the images skipped so far because they could not be decoded."""
        return {}

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    resumable = True           # batches(start=b) can begin an epoch at its batch b
    cursor = 0                 # after a yielded batch: the ``start`` that resumes right after it

    def batches(self, batch_size: int, shuffle: bool, epoch: int = 0,
                start: int = 0) -> Iterator[tuple[np.ndarray | None, np.ndarray, np.ndarray]]:
        """The epoch's batches from batch ``start`` on (the order is drawn in full, then cut)."""
        n = len(self)
        order = mrandom.generator().permutation(n) if shuffle else np.arange(n)
        for b in range(start, -(-n // batch_size)):
            batch = self.fetch(order[b * batch_size:(b + 1) * batch_size])
            self.cursor = b + 1
            if batch is not None:
                yield batch

    def fetch(self, indices: np.ndarray):
        """``(indices, x, y)`` of the samples ``indices`` that load (None if none does)."""
        return (indices, *self.take(indices))

    def sample_shape(self) -> tuple[int, ...]:
        return self.take(np.arange(1))[0].shape[1:]


class ArraySource(Source):
    def __init__(self, x, y, class_names=None):
        x, y = np.asarray(x), np.asarray(y).reshape(-1)
        if x.ndim < 2:
            raise ValueError(f"x must be an array of samples (N, ...), got shape {x.shape}")
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} samples but y has {len(y)} labels")
        if len(x) == 0:
            raise ValueError("the data set is empty")
        if not np.issubdtype(y.dtype, np.integer) and not np.all(np.mod(y, 1) == 0):
            raise ValueError("labels must be integer class indices (not one-hot or float)")
        self.x = x if x.dtype in (np.float32, np.float64) else x.astype(np.float32)
        self.labels = y.astype(np.int64)
        self.class_names = list(class_names) if class_names is not None else None

    def take(self, indices):
        return self.x[indices], self.labels[indices]


class DatasetSource(Source):
    """A minicnn.data Dataset (``ds[i] -> (uint8 image, label)``), transformed per batch."""

    def __init__(self, dataset, transform: Callable[[np.ndarray], np.ndarray] | None = None):
        if len(dataset) == 0:
            raise ValueError(f"the data set {dataset!r} is empty")
        self.dataset = dataset
        self.transform = transform or scale_to_unit_range
        self.labels = np.asarray(dataset.labels, np.int64)
        self.class_names = list(getattr(dataset, "class_names", []) or []) or None
        self.augmented = bool(getattr(dataset, "augment", None))
        self._bad: dict[str, str] = {}

    @property
    def bad_files(self):
        return self._bad

    def take(self, indices):
        images = np.stack([self.dataset[int(i)][0] for i in indices])
        return self.transform(images), self.labels[indices]

    def fetch(self, indices):
        """Skips (and records by path) images that cannot be decoded, as the DataLoader does."""
        from minicnn.data.errors import CorruptImageError

        images, kept = [], []
        for i in indices:
            try:
                images.append(self.dataset[int(i)][0])
            except CorruptImageError as err:
                self._bad[err.path] = err.reason
                continue
            kept.append(int(i))
        if not kept:
            return None
        kept = np.asarray(kept, np.int64)
        return kept, self.transform(np.stack(images)), self.labels[kept]


class DataLoaderSource(Source):
    """minicnn.data.DataLoader: its own order (a function of its seed and the epoch),
    augmentation and threads. Each batch carries the positions of the images it
    holds (the loader reports them), so a batch one shorter because an unreadable
    file was skipped still lines up with the feature cache."""

    reports_bad_files = True

    def __init__(self, loader, transform=None):
        self.loader = loader
        self.transform = transform or scale_to_unit_range
        ds = loader.dataset
        self.labels = np.asarray(ds.labels, np.int64)
        self.class_names = list(getattr(ds, "class_names", []) or []) or None
        self.augmented = loader.augment is not None
        if len(self.labels) == 0:
            raise ValueError(f"the data set {ds!r} is empty")

    @property
    def bad_files(self):
        return self.loader.bad_files

    def batches(self, batch_size, shuffle, epoch=0, start=0):
        self.loader.set_epoch(epoch, start_batch=start)
        asked = self.loader.return_index
        self.loader.return_index = True          # the positions of the images each batch kept
        try:
            for x, y, idx in self.loader:
                y = np.asarray(y).reshape(-1).astype(np.int64)
                x = self.transform(x) if np.asarray(x).dtype == np.uint8 else np.asarray(x)
                self.cursor = self.loader.batches_done
                yield np.asarray(idx, np.int64), x, y
        finally:
            self.loader.return_index = asked

    def take(self, indices):
        images = np.stack([self.loader.load(int(i)) for i in indices])
        return self.transform(images), self.labels[indices]

    def fetch(self, indices):
        """The samples ``indices`` as the loader makes a batch of them (its preprocessing; skipping
        unreadable files), as unaugmented training or validation sees them."""
        previous = self.loader.return_index
        self.loader.return_index = True
        try:
            made = self.loader._make_batch(np.asarray(indices, np.int64), self.loader.epoch)
        finally:
            self.loader.return_index = previous
        if made is None:
            return None
        x, y, kept = made
        x = self.transform(x) if np.asarray(x).dtype == np.uint8 else np.asarray(x)
        return np.asarray(kept, np.int64), x, np.asarray(y, np.int64)


class LoaderSource(Source):
    """Any other iterable of (x, y) batches, re-iterated every epoch (never cached)."""

    indexable = False
    resumable = False

    def __init__(self, loader, transform=None):
        self.loader = loader
        self.transform = transform or scale_to_unit_range
        self.augmented = True
        ds = getattr(loader, "dataset", None)
        if ds is not None and hasattr(ds, "labels"):
            self.labels = np.asarray(ds.labels, np.int64)
            self.class_names = list(getattr(ds, "class_names", []) or []) or None
        else:
            self.labels = np.concatenate([np.asarray(y).reshape(-1) for _, y in loader]).astype(np.int64)

    def batches(self, batch_size, shuffle, epoch=0, start=0):
        if start:
            raise ValueError("a plain iterable of batches cannot start an epoch at batch "
                             f"{start}: resume it from an epoch's end")
        for batch in self.loader:
            x, y = np.asarray(batch[0]), np.asarray(batch[1]).reshape(-1).astype(np.int64)
            yield None, (self.transform(x) if x.dtype == np.uint8 else x), y

    def take(self, indices):
        raise TypeError("this loader cannot fetch samples by index")

    def sample_shape(self):
        return np.asarray(next(iter(self.loader))[0]).shape[1:]


def as_source(data, transform=None) -> Source:
    """Wrap (x, y) arrays, a Dataset or a loader as a Source (see the module docstring)."""
    if isinstance(data, Source):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and not hasattr(data, "labels"):
        return ArraySource(*data)
    if hasattr(data, "labels") and hasattr(data, "__getitem__") and hasattr(data, "class_names"):
        return DatasetSource(data, transform)
    if all(hasattr(data, a) for a in ("set_epoch", "batches", "augment", "dataset", "bad_files")):
        return DataLoaderSource(data, transform)
    if hasattr(data, "__iter__"):
        return LoaderSource(data, transform)
    raise TypeError(f"training data must be (x, y) arrays, a minicnn.data Dataset or an iterable of "
                    f"(x, y) batches; got {type(data).__name__}")
