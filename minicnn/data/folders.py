"""Class-per-folder trees: the generic ImageFolder and the IICBU lymphoma set.

::

    root/<class>/**/*.<ext>        classes = sorted sub-folder names (dot-folders skipped)

Files are found recursively, sorted, extensions matched case-insensitively,
dot-files skipped.  An empty class folder is an error naming it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import numpy as np

from minicnn.data.base import Dataset
from minicnn.data.errors import DatasetError, DatasetFileNotFoundError
from minicnn.data.files import IMAGE_EXTENSIONS, list_dirs, walk_files


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
        if not self.class_names:
            raise DatasetError(f"{self.root} has no class sub-folders (expected root/<class>/<image>)")
        if classes is None:
            known = known_layout(self.root, self.class_names)
            if known:
                warnings.warn(f"{self.root}: {known}", UserWarning, stacklevel=2)
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


def known_layout(root: str, class_names: list[str]) -> str | None:
    """A message when the "class" folders of ``root`` are really a known data set's own folders.

    HAM10000's image folders (``HAM10000_images_part_1/2``) or the X-ray set's splits
    (``train/val/test``, or a ``chest_xray`` folder) would otherwise train a
    "part_1 vs part_2" or "train vs test" model without a word.
    """
    names = {c.lower() for c in class_names}
    if names and names <= {"ham10000_images_part_1", "ham10000_images_part_2"} or \
            os.path.isfile(os.path.join(root, "HAM10000_metadata.csv")):
        return (f"the class folders {class_names} are HAM10000's image folders, not classes: use "
                f"--dataset ham10000 (HAM10000(root)), which reads the labels from HAM10000_metadata.csv")
    if names and names <= {"train", "val", "test"} or names == {"chest_xray"}:
        return (f"the class folders {class_names} look like the chest X-ray set's splits, not classes: use "
                f"--dataset xray (ChestXRay(root)), or point the folder at one split holding NORMAL/PNEUMONIA")
    return None


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
