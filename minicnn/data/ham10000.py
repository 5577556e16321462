"""HAM10000 skin lesions (Harvard Dataverse / Kaggle layout).

::

    root/HAM10000_metadata.csv        lesion_id,image_id,dx,dx_type,age,sex,localization[,dataset]
                                      (or Dataverse's tab-separated HAM10000_metadata.tab)
    root/HAM10000_images_part_1/ISIC_0024306.jpg ...
    root/HAM10000_images_part_2/...
    root/ham10000_images_part_{1,2}/  (Kaggle: lowercase duplicates, ignored)

Images are found anywhere under ``root`` by file name (``image_id + ".jpg"``);
when an id occurs twice (the Kaggle duplicates) the first path in sorted order
wins, which is the upper-case ``HAM10000_images_*`` folder.  Groups are the
``lesion_id``: one lesion has up to six images and must not cross splits.

The ISIC 2018 Task 3 test set can be read the same way with ``metadata=`` the
one-hot ground-truth CSV (header ``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC``); it
has no lesion ids, so each image is its own group.
"""

from __future__ import annotations

import csv
import os

import numpy as np

from minicnn.data.base import Dataset
from minicnn.data.errors import DatasetError, DatasetFileNotFoundError
from minicnn.data.files import walk_files

HAM_CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
HAM_COLUMNS = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
ISIC_ONEHOT_COLUMNS = ["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]


class HAM10000(Dataset):
    """HAM10000: 7 classes in the order akiec, bcc, bkl, df, mel, nv, vasc; groups = lesion_id.

    ``ds.metadata`` maps each CSV column to an array of its values (strings), in
    sample order; ``ds.image_ids`` are the ISIC ids.
    """

    def __init__(self, root: str | os.PathLike, image_size=None, fit: str = "crop",
                 metadata: str | os.PathLike | None = None):
        super().__init__(image_size, fit)
        self.root = os.fspath(root)
        if not os.path.isdir(self.root):
            raise DatasetFileNotFoundError(f"HAM10000 root folder not found: {self.root}")
        if metadata:
            self.metadata_path = os.fspath(metadata)
        else:  # Dataverse serves the ingested table as tab-separated .tab unless "original format" is asked
            candidates = [os.path.join(self.root, f"HAM10000_metadata{ext}") for ext in (".csv", ".tab", "")]
            self.metadata_path = next((c for c in candidates if os.path.isfile(c)), candidates[0])
        if not os.path.isfile(self.metadata_path):
            raise DatasetFileNotFoundError(
                f"HAM10000 metadata not found: {self.metadata_path} (expected the CSV with header "
                f"{','.join(HAM_COLUMNS)})")
        rows, header = _read_csv(self.metadata_path)
        if not rows:
            raise DatasetError(f"{self.metadata_path}: no images listed (only {'a header' if header else 'nothing'}; "
                               f"expected one line per image under {','.join(HAM_COLUMNS)})")
        self.class_names = list(HAM_CLASSES)
        if header[:1] == ["image"] and set(ISIC_ONEHOT_COLUMNS) <= set(header):
            image_ids, labels, groups = _parse_onehot(self.metadata_path, header, rows)
        else:
            image_ids, labels, groups = _parse_metadata(self.metadata_path, header, rows)
        self.metadata = {col: np.array([r[i] for r in rows], dtype=object) for i, col in enumerate(header)}
        self.image_ids = np.array(image_ids, dtype=object)
        self.labels = np.array(labels, dtype=np.int64)
        self.groups = np.array(groups, dtype=object)
        self.paths = self._find_images(image_ids)

    def _find_images(self, image_ids: list[str]) -> list[str]:
        by_id: dict[str, str] = {}
        for path in walk_files(self.root, (".jpg", ".jpeg", ".png")):
            by_id.setdefault(os.path.splitext(os.path.basename(path))[0], path)
        missing = [i for i in image_ids if i not in by_id]
        if missing:
            shown = ", ".join(f"{m}.jpg" for m in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise DatasetFileNotFoundError(
                f"{self.metadata_path} lists {len(missing)} image(s) not found under {self.root}: "
                f"{shown}{more} (expected e.g. HAM10000_images_part_1/<image_id>.jpg)")
        return [by_id[i] for i in image_ids]


def _read_csv(path: str) -> tuple[list[list[str]], list[str]]:
    """Header and rows of a comma- or tab-separated file (the header line decides which)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            first = f.readline()
            f.seek(0)
            reader = csv.reader(f, delimiter="\t" if first.count("\t") > first.count(",") else ",")
            header = [h.strip() for h in next(reader, [])]
            rows = [r for r in reader if any(cell.strip() for cell in r)]
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8 "
                           f"CSV") from err
    except csv.Error as err:
        raise DatasetError(f"{path}: not a readable CSV ({err})") from err
    for n, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise DatasetError(f"{path}, line {n}: {len(row)} fields but the header has {len(header)}")
    return rows, header


def _parse_metadata(path, header, rows):
    missing = [c for c in HAM_COLUMNS if c not in header]
    if missing:
        raise DatasetError(f"{path}: missing required column(s) {missing}; expected at least "
                           f"{','.join(HAM_COLUMNS)} (got {','.join(header)})")
    col = {c: header.index(c) for c in HAM_COLUMNS}
    image_ids, labels, groups = [], [], []
    seen = set()
    for n, row in enumerate(rows, start=2):
        dx = row[col["dx"]].strip()
        if dx not in HAM_CLASSES:
            raise DatasetError(f"{path}, line {n}: unknown dx {dx!r}; expected one of {HAM_CLASSES}")
        image_id = row[col["image_id"]].strip()
        if image_id in seen:
            raise DatasetError(f"{path}, line {n}: image_id {image_id} listed twice")
        seen.add(image_id)
        image_ids.append(image_id)
        labels.append(HAM_CLASSES.index(dx))
        groups.append(row[col["lesion_id"]].strip() or image_id)
    return image_ids, labels, groups


def _parse_onehot(path, header, rows):
    image_ids, labels = [], []
    for n, row in enumerate(rows, start=2):
        try:
            hot = [float(row[header.index(c.upper())]) for c in HAM_CLASSES]
        except ValueError as err:
            raise DatasetError(f"{path}, line {n}: expected 0.0/1.0 class columns ({err})") from err
        if sorted(hot) != [0.0] * 6 + [1.0]:
            raise DatasetError(f"{path}, line {n}: expected exactly one class column equal to 1.0, got {hot}")
        image_ids.append(row[0].strip())
        labels.append(hot.index(1.0))
    return image_ids, labels, list(image_ids)
