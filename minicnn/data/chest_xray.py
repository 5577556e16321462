"""Kermany pediatric chest X-rays (Kaggle "chest-xray-pneumonia", Mendeley v2 / v3).

::

    chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg     (Mendeley v2/v3: no val)

``root`` may be the ``chest_xray`` folder itself or any folder above it: we
take the shallowest folder that holds ``train/`` and ``test/``, so the nested
Kaggle copy ``chest_xray/chest_xray/`` and ``__MACOSX/`` are never read, and
dot-files (``._x.jpeg``, ``.DS_Store``) are skipped.  Pictures are mostly
greyscale, some RGB: every image comes out as uint8 H x W x 3.

Groups are patients, parsed from file names:
``person12_bacteria_3.jpeg`` -> ``person12``, ``IM-0115-0001.jpeg`` -> ``IM-0115``,
``NORMAL2-IM-1427-0001.jpeg`` -> ``NORMAL2-IM-1427``, Mendeley v3
``VIRUS-1234567-0002.jpeg`` -> ``1234567``; an unparsed name is its own group.
``ds.subtypes`` holds normal / bacteria / virus.
"""

from __future__ import annotations

import os
import re
from collections import deque

import numpy as np

from minicnn.data.base import Dataset
from minicnn.data.errors import DatasetError, DatasetFileNotFoundError
from minicnn.data.files import is_junk, list_dirs, walk_files

XRAY_CLASSES = ["NORMAL", "PNEUMONIA"]
SPLITS = ("train", "val", "test")

_PATIENT_PATTERNS = [
    re.compile(r"^(person\d+)_(bacteria|virus)_\d+", re.IGNORECASE),
    re.compile(r"^(NORMAL2-IM-\d+)-\d+", re.IGNORECASE),
    re.compile(r"^(IM-\d+)-\d+", re.IGNORECASE),
    re.compile(r"^(NORMAL|BACTERIA|VIRUS)-(\d+)-\d+", re.IGNORECASE),
]


def parse_xray_name(filename: str, label: int) -> tuple[str, str]:
    """(patient id, subtype) from a Kermany file name."""
    stem = os.path.splitext(os.path.basename(filename))[0]
    m = _PATIENT_PATTERNS[0].match(stem)
    if m:
        return m.group(1), m.group(2).lower()
    m = _PATIENT_PATTERNS[3].match(stem)
    if m:
        return m.group(2), m.group(1).lower()
    for pattern in _PATIENT_PATTERNS[1:3]:
        m = pattern.match(stem)
        if m:
            return m.group(1), "normal" if label == 0 else "unknown"
    return stem, "normal" if label == 0 else "unknown"


def find_xray_tree(root: str, max_depth: int = 4) -> str:
    """The shallowest folder under ``root`` holding ``train/`` and ``test/`` (breadth first)."""
    queue = deque([(root, 0)])
    while queue:
        folder, depth = queue.popleft()
        subdirs = list_dirs(folder)
        if "train" in subdirs and "test" in subdirs:
            return folder
        if depth < max_depth:
            queue.extend((os.path.join(folder, d), depth + 1) for d in subdirs if not is_junk(d))
    raise DatasetFileNotFoundError(
        f"no chest_xray tree under {root}: expected a folder with train/ and test/ "
        f"(each holding NORMAL/ and PNEUMONIA/)")


class ChestXRay(Dataset):
    """Kermany X-rays of one official split (or several, e.g. ``("train", "val")``, or None = all).

    Classes NORMAL (0), PNEUMONIA (1); groups = patients; ``ds.split_of`` says
    which official split each sample came from.
    """

    def __init__(self, root: str | os.PathLike, split: str | tuple[str, ...] | None = "train",
                 image_size=None, fit: str = "crop"):
        super().__init__(image_size, fit)
        if not os.path.isdir(root):
            raise DatasetFileNotFoundError(f"chest X-ray root folder not found: {root}")
        self.tree = find_xray_tree(os.fspath(root))
        self.root = self.tree
        available = [s for s in SPLITS if s in list_dirs(self.tree)]
        if split is None:
            wanted = available
        else:
            wanted = [split] if isinstance(split, str) else list(split)
        for s in wanted:
            if s not in SPLITS:
                raise ValueError(f"split must be one of {SPLITS} (or a tuple of them), got {s!r}")
            if s not in available:
                raise DatasetFileNotFoundError(
                    f"split {s!r} not found: no folder {os.path.join(self.tree, s)} (this copy has "
                    f"{available}; Mendeley versions have no val split)")
        self.class_names = list(XRAY_CLASSES)
        paths, labels, split_of = [], [], []
        for s in wanted:
            for label, cls in enumerate(XRAY_CLASSES):
                folder = os.path.join(self.tree, s, cls)
                if not os.path.isdir(folder):
                    raise DatasetFileNotFoundError(f"missing class folder {folder} (expected "
                                                   f"{s}/NORMAL and {s}/PNEUMONIA)")
                files = walk_files(folder)
                if not files:
                    raise DatasetError(f"class folder {folder} holds no images")
                paths += files
                labels += [label] * len(files)
                split_of += [s] * len(files)
        parsed = [parse_xray_name(p, lab) for p, lab in zip(paths, labels)]
        self.paths = paths
        self.labels = np.array(labels, dtype=np.int64)
        self.groups = np.array([g for g, _ in parsed], dtype=object)
        self.subtypes = np.array([t for _, t in parsed], dtype=object)
        self.split_of = np.array(split_of, dtype=object)
        self.split = split
