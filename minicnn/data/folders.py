"""Class-per-folder trees: the generic ImageFolder and the IICBU lymphoma set.

::

    root/<class>/**/*.<ext>        classes = sorted sub-folder names (dot-folders skipped)

Files are found recursively, sorted, extensions matched case-insensitively,
dot-files skipped.  An empty class folder is an error naming it, and so is a
tree with fewer than 2 classes (a 1-class model reaches accuracy 1.0 and means
nothing).  Class folders laid out like a data set minicnn reads with its own
reader (HAM10000's image parts, the X-rays' train/val/test) give a warning that
names the reader: ``part_1`` vs ``part_2`` is not a diagnosis.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable

import numpy as np

from minicnn.data.base import Dataset
from minicnn.data.errors import DatasetError, DatasetFileNotFoundError
from minicnn.data.files import IMAGE_EXTENSIONS, list_dirs, walk_files

_HAM_PART = re.compile(r"(ham10000_images_)?part_[12]", re.IGNORECASE)
_XRAY_SPLITS = {"train", "val", "test"}


def known_layout(root: str, class_names: list[str]) -> str | None:
    """A hint when ``root/<class>`` looks like a data set with its own reader, else None."""
    lowered = {c.lower() for c in class_names}
    if any(_HAM_PART.fullmatch(c) for c in class_names) or \
            os.path.isfile(os.path.join(root, "HAM10000_metadata.csv")):
        return ("it looks like HAM10000 (image part folders or HAM10000_metadata.csv), whose labels are in "
                "the metadata CSV: use --dataset ham10000 (minicnn.data.HAM10000)")
    if lowered & _XRAY_SPLITS and lowered <= _XRAY_SPLITS | {"chest_xray"} or lowered == {"chest_xray"}:
        return ("it looks like the Kermany chest X-rays (train/val/test folders, each with NORMAL and "
                "PNEUMONIA): use --dataset xray (minicnn.data.ChestXRay)")
    return None


class ImageFolder(Dataset):
    """``root/<class>/...`` images; groups from ``group_fn(path)`` (default: each file alone)."""

    def __init__(self, root: str | os.PathLike, image_size=None, fit: str = "crop",
                 classes: list[str] | None = None, extensions=IMAGE_EXTENSIONS,
                 group_fn: Callable[[str], str] | None = None):
        super().__init__(image_size, fit)
        self.root = os.fspath(root)
        if not os.path.isdir(self.root):
            raise DatasetFileNotFoundError(f"image folder root not found: {self.root}")
        self.class_names = list(classes) if classes is not None else list_dirs(self.root)
        hint = known_layout(self.root, self.class_names)
        if len(self.class_names) < 2:
            raise DatasetError(f"{self.root} has {len(self.class_names)} class sub-folder(s) "
                               f"{self.class_names}; a classifier needs at least 2 "
                               f"(expected root/<class>/<image>)" + (f"; {hint}" if hint else ""))
        if hint:
            warnings.warn(f"image folder {self.root}: class folders {self.class_names}: {hint}", stacklevel=2)
        paths, labels = [], []
        for label, cls in enumerate(self.class_names):
            folder = os.path.join(self.root, cls)
            if not os.path.isdir(folder):
                raise DatasetFileNotFoundError(f"class folder not found: {folder}")
            files = walk_files(folder, extensions)
            if not files:
                raise DatasetError(f"class folder {folder} holds no images with extensions {list(extensions)}")
            paths += files
            labels += [label] * len(files)
        self.paths = paths
        self.labels = np.array(labels, dtype=np.int64)
        group_fn = group_fn or (lambda p: os.path.relpath(p, self.root).replace(os.sep, "/"))
        self.groups = np.array([group_fn(p) for p in paths], dtype=object)


LYMPHOMA_CLASSES = ["CLL", "FL", "MCL"]


def lymphoma_case(path: str) -> str:
    """``sj-03-476_009.tif`` -> ``sj-03-476``: the case is the name before the last ``_``."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return stem.rsplit("_", 1)[0] if "_" in stem else stem


class Lymphoma(ImageFolder):
    """IICBU 2008 malignant lymphoma: ``lymphoma/{CLL,FL,MCL}/*.tif``; groups = case.

    ``root`` may be the ``lymphoma`` folder or its parent.
    """

    def __init__(self, root: str | os.PathLike, image_size=None, fit: str = "crop"):
        root = os.fspath(root)
        if os.path.isdir(os.path.join(root, "lymphoma")) and not os.path.isdir(os.path.join(root, "CLL")):
            root = os.path.join(root, "lymphoma")
        super().__init__(root, image_size, fit, classes=LYMPHOMA_CLASSES, group_fn=lymphoma_case)
