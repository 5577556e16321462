"""The dataset interface shared by every reader, plus Subset and ArrayDataset.

A dataset is a list of samples.  ``ds[i]`` returns ``(image, label)`` with
``image`` a uint8 H x W x 3 array (grey pictures repeated into 3 channels) and
``label`` an int index into ``ds.class_names``.  Alongside, as arrays of
length ``len(ds)``:

- ``ds.labels``  int64 class index of each sample,
- ``ds.groups``  str id of the unit that must not be split (lesion, patient,
  case, track; the sample's own id when there is none),
- ``ds.paths``   the source file of each sample (None for in-memory data).

``image_size=(H, W)`` (or an int) makes ``ds[i]`` return resized images; see
minicnn.data.image for the crop / pad / stretch rule.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import numpy as np

from minicnn.data.errors import DatasetError
from minicnn.data.image import as_size, check_fit, decode_image, resize_array


class Dataset:
    """Base class: subclasses fill ``class_names``, ``labels``, ``groups`` and ``paths``."""

    class_names: list[str]
    labels: np.ndarray
    groups: np.ndarray
    paths: list[str] | None = None
    root: str | None = None

    def __init__(self, image_size: int | tuple[int, int] | None = None, fit: str = "crop"):
        self.image_size = as_size(image_size)
        self.fit = check_fit(fit)

    # -- the sample interface ------------------------------------------------
    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        index = self._check_index(index)
        return self.load_image(index), int(self.labels[index])

    def load_image(self, index: int) -> np.ndarray:
        """Decode sample ``index`` as uint8 H x W x 3, resized to ``image_size``."""
        return decode_image(self.paths[index], self.image_size, self.fit)

    def _check_index(self, index) -> int:
        n = len(self)
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"dataset index must be an int, got {type(index).__name__}")
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} samples")
        return int(index) % n

    # -- description ------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self) -> np.ndarray:
        """Number of samples of each class, in ``class_names`` order."""
        return np.bincount(self.labels, minlength=self.num_classes)

    def sources(self) -> list[str]:
        """A stable id of every sample: its path relative to ``root`` (for split CSVs)."""
        if self.paths is None:
            return [str(i) for i in range(len(self))]
        if self.root is None:
            return [os.path.abspath(p) for p in self.paths]
        return [os.path.relpath(p, self.root).replace(os.sep, "/") for p in self.paths]

    def fingerprint(self) -> str:
        """Hash of what decoded pixels depend on: sources, file sizes and times (modified, changed), size, fit.

        The disk cache is keyed by it, so editing or replacing a file, or asking
        for another size, never returns stale pixels.
        """
        h = hashlib.sha1()
        h.update(f"{type(self).__name__}|{self.image_size}|{self.fit}|{len(self)}".encode())
        if self.paths is not None:
            for p in self.paths:
                try:
                    st = os.stat(p)
                    # ctime too: a file replaced with its size and mtime restored (cp -p, rsync -t)
                    h.update(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}\n".encode())
                except OSError:
                    h.update(f"{os.path.abspath(p)}|missing\n".encode())
        else:
            h.update(self._content_id().encode())
        return h.hexdigest()[:20]

    def _content_id(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        counts = ", ".join(f"{c}: {n}" for c, n in zip(self.class_names, self.class_counts()))
        return f"{type(self).__name__}({len(self)} images; {counts})"


class Subset(Dataset):
    """The samples ``indices`` (into ``parent``) of another dataset, in that order."""

    def __init__(self, parent: Dataset, indices: Sequence[int] | np.ndarray, name: str | None = None):
        self.parent = parent
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= len(parent)):
            raise IndexError(f"subset indices must lie in [0, {len(parent)}), got "
                             f"{self.indices.min()}..{self.indices.max()}")
        self.name = name
        self.class_names = parent.class_names
        self.labels = parent.labels[self.indices]
        self.groups = parent.groups[self.indices]
        self.root = parent.root
        self.paths = None if parent.paths is None else [parent.paths[i] for i in self.indices]

    # image size and fit are the parent's, so one decoded cache serves all subsets
    @property
    def image_size(self):
        return self.parent.image_size

    @property
    def fit(self):
        return self.parent.fit

    def load_image(self, index: int) -> np.ndarray:
        return self.parent.load_image(int(self.indices[index]))

    def sources(self) -> list[str]:
        parent_sources = self.parent.sources()
        return [parent_sources[i] for i in self.indices]

    def base(self) -> tuple[Dataset, np.ndarray]:
        """The underlying (non-subset) dataset and this subset's indices into it."""
        if isinstance(self.parent, Subset):
            root, idx = self.parent.base()
            return root, idx[self.indices]
        return self.parent, self.indices

    def fingerprint(self) -> str:
        return self.parent.fingerprint()

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return f"Subset{label} of {super().__repr__()}"


def base_of(dataset: Dataset) -> tuple[Dataset, np.ndarray]:
    """(underlying dataset, indices into it) for a dataset or a (nested) Subset."""
    if isinstance(dataset, Subset):
        return dataset.base()
    return dataset, np.arange(len(dataset), dtype=np.int64)


class ArrayDataset(Dataset):
    """Images held in memory: an (N, H, W), (N, H, W, 1) or (N, H, W, 3) uint8 array."""

    def __init__(self, images: np.ndarray, labels, class_names: Sequence[str] | None = None,
                 groups=None, image_size=None, fit: str = "crop"):
        super().__init__(image_size, fit)
        images = np.asarray(images)
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and
                                                                     images.shape[3] not in (1, 3)):
            raise DatasetError(f"expected uint8 images of shape (N, H, W[, 1 or 3]), got "
                               f"{images.dtype} {images.shape}")
        if len(images) != len(labels):
            raise DatasetError(f"{len(images)} images but {len(labels)} labels")
        if class_names is None:
            class_names = [str(c) for c in range(int(labels.max()) + 1 if labels.size else 0)]
        if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise DatasetError(f"labels must lie in 0..{len(class_names) - 1} "
                               f"({len(class_names)} classes), got {labels.min()}..{labels.max()}")
        self.images = images
        self.labels = labels
        self.class_names = list(class_names)
        self.groups = (np.array([str(i) for i in range(len(labels))], dtype=object) if groups is None
                       else np.asarray(groups, dtype=object))

    def load_image(self, index: int) -> np.ndarray:
        return resize_array(self.images[index], self.image_size, self.fit)

    def _content_id(self) -> str:
        h = hashlib.sha1(np.ascontiguousarray(self.images).view(np.uint8).data)
        h.update(self.labels.tobytes())
        return h.hexdigest()
