"""DataLoader: batches of (images, labels) arrays, decoded and augmented in background threads.

Order.  The samples of epoch e are ``sampler.indices(e)`` if a sampler is
given, else ``default_rng([seed, e]).permutation(n)`` when shuffling, else
0..n-1; they are cut into batches of ``batch_size``.  Augmentation of sample i
in epoch e draws from ``default_rng([augment.seed, seed, e, i])``.  So the
batches of an epoch are a function of (seed, epoch) alone: ``set_epoch(e,
start_batch=b)`` replays epoch e from batch b, which is how training resumes.
Iterating without ``set_epoch`` moves to the next epoch after each full pass.

Work.  Each batch is one job for a thread pool (``workers`` threads, ``prefetch``
batches queued per worker).  PIL decoding and the Numba resampling kernel
release the GIL, so threads give real parallelism.  With ``cache_dir`` the
decoded, resized images go to a memory-mapped ``.npy`` (minicnn.data.cache):
only the first pass decodes files.

Bad files.  An image that cannot be decoded is skipped (its batch is one
shorter), counted in ``loader.bad_files`` and listed in ``report_path``
(default ``cache_dir/bad_images.txt``); with ``strict=True`` it raises
CorruptImageError naming the file.
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from minicnn.data.augment import Augment
from minicnn.data.base import Dataset, base_of
from minicnn.data.cache import DiskCache
from minicnn.data.errors import CorruptImageError, DatasetError
from minicnn.io.storage import atomic_write_text


class DataLoader:
    """Iterate ``(images, labels)``: images uint8 (B, H, W, 3), or float32 after ``preprocess``.

    With ``return_index=True`` it yields ``(images, labels, indices)``, the
    indices being positions in ``dataset`` (to match predictions to files).
    """

    def __init__(self, dataset: Dataset, batch_size: int = 32, shuffle: bool = False,
                 augment: Augment | None = None, sampler=None, workers: int = 2, seed: int = 0,
                 drop_last: bool = False, cache_dir: str | os.PathLike | None = None,
                 preprocess: str | Callable[[np.ndarray], np.ndarray] | None = None, prefetch: int = 2,
                 strict: bool = False, report_path: str | os.PathLike | None = None,
                 progress: bool = True, return_index: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if sampler is not None and shuffle:
            raise ValueError("give either shuffle=True or a sampler, not both")
        self.dataset, self.batch_size, self.shuffle = dataset, batch_size, shuffle
        self.augment, self.sampler, self.workers, self.seed = augment, sampler, workers, seed
        self.drop_last, self.prefetch, self.strict, self.progress = drop_last, prefetch, strict, progress
        self.return_index = return_index
        self.preprocess = _preprocess_fn(preprocess)
        self.base, self.base_indices = base_of(dataset)
        self.cache = DiskCache.open(cache_dir, self.base) if cache_dir is not None else None
        if report_path is None and cache_dir is not None:
            report_path = os.path.join(os.fspath(cache_dir), "bad_images.txt")
        self.report_path = None if report_path is None else os.fspath(report_path)
        self.bad_files: dict[str, str] = {}
        self.epoch, self.start_batch, self.passes = 0, 0, 0
        self.batches_done = 0

    # -- order -------------------------------------------------------------------
    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """The next iteration yields epoch ``epoch``, starting at batch ``start_batch``."""
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def state_dict(self) -> dict[str, int]:
        """Where the loader is: resume with ``set_epoch(**state)``."""
        return {"epoch": self.epoch, "start_batch": self.batches_done}

    def order(self, epoch: int) -> np.ndarray:
        """Positions (into ``dataset``) of epoch ``epoch``, in order."""
        n = len(self.dataset)
        if self.sampler is not None:
            return np.asarray(self.sampler.indices(epoch), dtype=np.int64)
        if self.shuffle:
            return np.random.default_rng([self.seed, epoch]).permutation(n)
        return np.arange(n)

    def batches(self, epoch: int) -> list[np.ndarray]:
        order = self.order(epoch)
        cuts = range(0, len(order), self.batch_size)
        batches = [order[i:i + self.batch_size] for i in cuts]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    # -- loading -----------------------------------------------------------------
    def load(self, position: int) -> np.ndarray:
        """Decoded (cached) image of dataset sample ``position``, before augmentation."""
        index = int(self.base_indices[position])
        if self.cache is None:
            return self.base.load_image(index)
        image = self.cache.get(index)
        if image is None:
            try:
                image = self.base.load_image(index)
            except CorruptImageError as err:
                self.cache.mark_bad(index, err.path, err.reason)
                raise
            self.cache.put(index, image)
        return image

    def _make_batch(self, positions: np.ndarray, epoch: int):
        images, kept = [], []          # decoded images and their positions in the data set
        for p in positions:
            try:
                images.append(self.load(p))
            except CorruptImageError as err:
                if self.strict:
                    raise
                self.bad_files[err.path] = err.reason
                continue
            kept.append(int(p))
        if not images:
            return None
        shapes = {im.shape for im in images}
        if len(shapes) > 1:
            raise DatasetError(f"images of different shapes {sorted(shapes)} in one batch: give the data set "
                               f"image_size=(H, W)")
        if self.augment is None:
            batch = np.stack(images)
        else:
            batch = np.empty((len(images),) + images[0].shape, np.uint8)
            for k, (image, p) in enumerate(zip(images, kept)):
                rng = np.random.default_rng([self.augment.seed, self.seed, epoch, p])
                self.augment(image, rng, out=batch[k])
        if self.preprocess is not None:
            batch = self.preprocess(batch)
        kept = np.asarray(kept, dtype=np.int64)
        return (batch, self.dataset.labels[kept], kept) if self.return_index else (batch, self.dataset.labels[kept])

    def __iter__(self):
        epoch, start = self.epoch, self.start_batch
        batches = self.batches(epoch)[start:]
        self.batches_done = start
        bar = None
        if self.progress and self.passes == 0:
            from tqdm import tqdm
            decoding = self.cache is None or not self.cache.complete
            bar = tqdm(total=len(batches), desc="decoding" if decoding else f"epoch {epoch}",
                       unit="batch", leave=False)
        pool = ThreadPoolExecutor(self.workers) if self.workers > 0 else None
        pending: deque = deque()
        completed = False
        try:
            jobs = iter(batches)
            ahead = max(1, self.workers * self.prefetch)
            for positions in jobs:
                pending.append(pool.submit(self._make_batch, positions, epoch) if pool
                               else _Done(self._make_batch(positions, epoch)))
                if len(pending) >= ahead:
                    break
            while pending:
                result = pending.popleft().result()
                positions = next(jobs, None)
                if positions is not None:
                    pending.append(pool.submit(self._make_batch, positions, epoch) if pool
                                   else _Done(self._make_batch(positions, epoch)))
                self.batches_done += 1
                if bar is not None:
                    bar.update(1)
                if result is not None:
                    yield result
            completed = True
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            if bar is not None:
                bar.close()
            if self.cache is not None:
                self.cache.flush()
            self._report()
            if completed:
                self.passes += 1
                self.epoch, self.start_batch, self.batches_done = epoch + 1, 0, 0

    def _report(self) -> None:
        if not self.bad_files:
            return
        if self.report_path is not None:
            os.makedirs(os.path.dirname(os.path.abspath(self.report_path)), exist_ok=True)
            atomic_write_text(self.report_path, f"# {len(self.bad_files)} unreadable image(s), skipped\n" +
                              "".join(f"{path}\t{reason}\n" for path, reason in sorted(self.bad_files.items())))
        where = f"; listed in {self.report_path}" if self.report_path else ""
        warnings.warn(f"skipped {len(self.bad_files)} unreadable image(s): {describe_bad_files(self.bad_files)}"
                      f"{where}", stacklevel=3)


def describe_bad_files(bad: dict[str, str], shown: int = 5) -> str:
    """``path (reason), ...`` for the first ``shown`` unreadable files, then how many more."""
    items = sorted(bad.items())
    text = "; ".join(f"{path} ({reason})" for path, reason in items[:shown])
    return text + (f"; and {len(items) - shown} more" if len(items) > shown else "")


class _Done:
    """A finished 'future' for the synchronous (workers=0) path."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


def _preprocess_fn(preprocess):
    if preprocess is None or callable(preprocess):
        return preprocess
    from minicnn.preprocess import MODES, preprocess_input
    if preprocess not in MODES:
        raise ValueError(f"preprocess must be None, a callable or one of {MODES}, got {preprocess!r}")
    return lambda batch: preprocess_input(batch, mode=preprocess)
