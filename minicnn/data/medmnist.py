"""MedMNIST v2/v3 2D ``.npz`` files (DermaMNIST, PneumoniaMNIST, ... at 28, 64, 128, 224 px).

Keys ``{train,val,test}_{images,labels}``, all uint8: images (N, S, S, 3) or,
for greyscale sets such as PneumoniaMNIST, (N, S, S) with no channel axis;
labels (N, 1).  Read with ``allow_pickle=False``: an npz that needs pickle is
rejected.  MedMNIST carries no patient or lesion ids, so each image is its own
group (the official DermaMNIST split is by image and leaks lesions).
"""

from __future__ import annotations

import hashlib
import os
import zipfile

import numpy as np

from minicnn.data.base import ArrayDataset
from minicnn.data.errors import DatasetError, DatasetFileNotFoundError
from minicnn.data.ham10000 import HAM_CLASSES

SPLITS = ("train", "val", "test")
KNOWN_CLASSES = {
    "dermamnist": list(HAM_CLASSES),
    "pneumoniamnist": ["normal", "pneumonia"],
}


class MedMNIST(ArrayDataset):
    """One split (or a tuple of splits, or None = all) of a MedMNIST 2D npz file."""

    def __init__(self, path: str | os.PathLike, split: str | tuple[str, ...] | None = "train",
                 image_size=None, fit: str = "crop", class_names=None):
        self.path = os.fspath(path)
        wanted = list(SPLITS) if split is None else [split] if isinstance(split, str) else list(split)
        for s in wanted:
            if s not in SPLITS:
                raise ValueError(f"split must be one of {SPLITS} (or a tuple of them), got {s!r}")
        if not os.path.isfile(self.path):
            raise DatasetFileNotFoundError(f"MedMNIST file not found: {self.path}")
        images, labels, sources = [], [], []
        try:
            with np.load(self.path, allow_pickle=False) as npz:
                keys = set(npz.files)
                needed = [f"{s}_{kind}" for s in wanted for kind in ("images", "labels")]
                missing = [k for k in needed if k not in keys]
                if missing:
                    raise DatasetError(f"{self.path}: missing key(s) {missing}; a MedMNIST npz has "
                                       f"{{train,val,test}}_{{images,labels}} (this one has {sorted(keys)})")
                for s in wanted:
                    x, y = npz[f"{s}_images"], npz[f"{s}_labels"]
                    images.append(_check_images(self.path, s, x))
                    labels.append(_check_labels(self.path, s, y, len(x)))
                    sources += [f"{s}/{i}" for i in range(len(x))]
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            if isinstance(err, FileNotFoundError):
                raise
            raise DatasetError(f"{self.path}: not a readable .npz file ({err})") from err
        except ValueError as err:
            if isinstance(err, DatasetError):
                raise
            raise DatasetError(f"{self.path}: cannot read without pickle ({err}); MedMNIST arrays are "
                               f"plain uint8") from err
        shapes = {x.shape[1:] for x in images}
        if len(shapes) > 1:
            raise DatasetError(f"{self.path}: splits have different image shapes {sorted(shapes)}")
        if class_names is None:
            flavour = os.path.basename(self.path).split("_")[0].split(".")[0].lower()
            y_max = max((int(y.max()) for y in labels if y.size), default=0)
            class_names = KNOWN_CLASSES.get(flavour, [str(c) for c in range(y_max + 1)])
        self._sources = sources
        self.split = split
        super().__init__(np.concatenate(images), np.concatenate(labels), class_names,
                         groups=np.array(sources, dtype=object), image_size=image_size, fit=fit)

    def sources(self) -> list[str]:
        return list(self._sources)

    def _content_id(self) -> str:
        st = os.stat(self.path)
        key = f"{os.path.abspath(self.path)}|{st.st_size}|{st.st_mtime_ns}|{self.split}"
        return hashlib.sha1(key.encode()).hexdigest()


def _check_images(path, split, x):
    if x.dtype != np.uint8 or x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[3] not in (1, 3)):
        raise DatasetError(f"{path}: {split}_images must be uint8 (N, S, S) or (N, S, S, 3), "
                           f"got {x.dtype} {x.shape}")
    return x[..., 0] if x.ndim == 4 and x.shape[3] == 1 else x


def _check_labels(path, split, y, n):
    if y.ndim == 2 and y.shape[1] > 1:
        raise DatasetError(f"{path}: {split}_labels has shape {y.shape}: multi-label MedMNIST sets "
                           f"(ChestMNIST) are not supported; expected (N, 1)")
    y = y.reshape(-1)
    if len(y) != n or not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"{path}: {split}_labels must be {n} integers of shape (N, 1), "
                           f"got {y.dtype} {y.shape}")
    return y.astype(np.int64)
