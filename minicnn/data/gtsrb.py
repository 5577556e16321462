"""GTSRB German traffic signs (43 classes), the official ``Final_Training`` / ``Final_Test`` layout.

::

    GTSRB/Final_Training/Images/000NN/GT-000NN.csv, XXXXX_YYYYY.ppm   (XXXXX = track)
    GTSRB/Final_Test/Images/00000.ppm ...  labels in GT-final_test.csv

CSV files are ``;``-separated with header
``Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId``.  A track is 30
pictures of one physical sign, so training groups are ``<class>_<track>``:
validate by track, not by image.  ``roi=True`` crops each image to its ROI.
"""

from __future__ import annotations

import csv
import os

import numpy as np

from minicnn.data.base import Dataset
from minicnn.data.errors import DatasetError, DatasetFileNotFoundError
from minicnn.data.files import list_dirs
from minicnn.data.image import fit_image, to_8bit, to_rgb_array

GT_COLUMNS = ["Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId"]


def _read_gt(path: str) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter=";")
        missing = [c for c in GT_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {missing}; expected the ';'-separated header "
                               f"{';'.join(GT_COLUMNS)}")
        return list(reader)


class GTSRB(Dataset):
    """GTSRB ``split="train"`` (Final_Training) or ``"test"`` (Final_Test + GT-final_test.csv)."""

    def __init__(self, root: str | os.PathLike, split: str = "train", image_size=None,
                 fit: str = "crop", roi: bool = False):
        super().__init__(image_size, fit)
        root = os.fspath(root)
        if os.path.isdir(os.path.join(root, "GTSRB")):
            root = os.path.join(root, "GTSRB")
        self.root, self.split, self.roi = root, split, roi
        if split == "train":
            rows = self._train_rows()
        elif split == "test":
            rows = self._test_rows()
        else:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.paths = [r[0] for r in rows]
        self.labels = np.array([r[1] for r in rows], dtype=np.int64)
        self.groups = np.array([r[2] for r in rows], dtype=object)
        self.boxes = np.array([r[3] for r in rows], dtype=np.int64).reshape(-1, 4)
        n_classes = max(43, int(self.labels.max()) + 1 if len(rows) else 0)
        self.class_names = [f"{c:05d}" for c in range(n_classes)]

    def _train_rows(self):
        images = os.path.join(self.root, "Final_Training", "Images")
        if not os.path.isdir(images):
            raise DatasetFileNotFoundError(f"GTSRB training folder not found: {images}")
        rows = []
        for cls in list_dirs(images):
            if not cls.isdigit():
                continue
            gt = os.path.join(images, cls, f"GT-{cls}.csv")
            if not os.path.isfile(gt):
                raise DatasetFileNotFoundError(f"GTSRB annotation file not found: {gt}")
            entries = _read_gt(gt)
            if not entries:
                raise DatasetError(f"{gt} lists no images")
            for e in entries:
                if int(e["ClassId"]) != int(cls):
                    raise DatasetError(f"{gt}: {e['Filename']} has ClassId {e['ClassId']}, expected {int(cls)}")
                path = os.path.join(images, cls, e["Filename"])
                if not os.path.isfile(path):
                    raise DatasetFileNotFoundError(f"{gt} lists {e['Filename']}, not found at {path}")
                track = e["Filename"].split("_")[0]
                rows.append((path, int(cls), f"{cls}_{track}", _box(e)))
        if not rows:
            raise DatasetError(f"{images} holds no class folders 00000..00042")
        return rows

    def _test_rows(self):
        images = os.path.join(self.root, "Final_Test", "Images")
        candidates = [os.path.join(images, "GT-final_test.csv"),
                      os.path.join(self.root, "Final_Test", "GT-final_test.csv"),
                      os.path.join(self.root, "GT-final_test.csv")]
        gt = next((c for c in candidates if os.path.isfile(c)), None)
        if gt is None:
            raise DatasetFileNotFoundError(f"GTSRB test labels not found; expected GT-final_test.csv in one of "
                                           f"{candidates}")
        rows = []
        for e in _read_gt(gt):
            path = os.path.join(images, e["Filename"])
            if not os.path.isfile(path):
                raise DatasetFileNotFoundError(f"{gt} lists {e['Filename']}, not found at {path}")
            rows.append((path, int(e["ClassId"]), e["Filename"], _box(e)))
        return rows

    def fingerprint(self) -> str:
        return super().fingerprint() + ("-roi" if self.roi else "")

    def load_image(self, index: int) -> np.ndarray:
        if not self.roi:
            return super().load_image(index)
        from PIL import Image

        from minicnn.data.errors import CorruptImageError
        path = self.paths[index]
        try:
            with Image.open(path) as img:
                x1, y1, x2, y2 = (int(v) for v in self.boxes[index])
                img = img.crop((x1, y1, x2 + 1, y2 + 1))
                return to_rgb_array(fit_image(to_8bit(img), self.image_size, self.fit))
        except FileNotFoundError as err:
            raise DatasetFileNotFoundError(f"image file not found: {path}") from err
        except (OSError, ValueError, SyntaxError) as err:
            raise CorruptImageError(path, f"{type(err).__name__}: {err}") from err


def _box(e: dict[str, str]) -> tuple[int, int, int, int]:
    return int(e["Roi.X1"]), int(e["Roi.Y1"]), int(e["Roi.X2"]), int(e["Roi.Y2"])
