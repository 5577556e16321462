"""Seeded, stratified train/val/test splits, by group (no leakage) or by image, saved as CSV.

Grouped split (the default).  Every sample belongs to a group (lesion,
patient, case, track).  Groups are stratified by their majority label: within
each class the groups are shuffled with ``np.random.default_rng(seed)`` and
laid end to end on [0, 1], each group taking a length proportional to its
number of images; a group goes to split k when its midpoint falls in
[F_{k-1}, F_k), F being the cumulative fractions.  So every class is divided
in the requested proportions (up to one group), and a group never crosses
splits.

``by="image"`` does the same with every image its own group: the thesis
protocol (60/20/20 by image), which leaks near-copies of a lesion across splits.

A data set too small for the split is refused before anyone trains on it: a
part with a positive fraction that would be empty, or a class with no sample
in the training part, is a DatasetError naming the part (and the class); a
class absent from another part only warns (its recall there is undefined).
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from minicnn.data.base import Dataset, Subset, base_of
from minicnn.data.errors import DatasetError, DatasetFileNotFoundError
from minicnn.io.storage import atomic_write_text

DEFAULT_NAMES = {2: ("train", "val"), 3: ("train", "val", "test")}


def split(dataset: Dataset, fractions: Sequence[float] = (0.6, 0.2, 0.2), by: str = "group",
          seed: int = 0, stratify: bool = True) -> tuple[Subset, ...]:
    """Split ``dataset`` into ``len(fractions)`` Subsets (named train/val/test for 3 parts)."""
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.ndim != 1 or len(fractions) < 2 or (fractions < 0).any() or abs(fractions.sum() - 1) > 1e-6:
        raise ValueError(f"fractions must be >= 2 non-negative numbers summing to 1, got {fractions.tolist()}")
    if by not in ("group", "image"):
        raise ValueError(f"by must be 'group' or 'image', got {by!r}")
    n = len(dataset)
    keys = dataset.groups if by == "group" else np.arange(n)
    _, group_of = np.unique(np.asarray(keys).astype(str), return_inverse=True)
    n_groups = int(group_of.max()) + 1 if n else 0
    sizes = np.bincount(group_of, minlength=n_groups)
    k = max(dataset.num_classes, int(dataset.labels.max()) + 1 if n else 1)
    # majority label of each group: argmax over a (group, class) count table
    table = np.bincount(group_of * k + dataset.labels, minlength=n_groups * k).reshape(n_groups, k)
    strata = table.argmax(axis=1) if stratify else np.zeros(n_groups, dtype=np.int64)

    rng = np.random.default_rng(seed)
    bounds = np.cumsum(fractions)
    part_of_group = np.empty(n_groups, dtype=np.int64)
    for stratum in np.unique(strata):
        members = rng.permutation(np.flatnonzero(strata == stratum))
        cum = np.cumsum(sizes[members])
        midpoints = (cum - sizes[members] / 2) / cum[-1]
        part_of_group[members] = np.minimum(np.searchsorted(bounds, midpoints, side="right"), len(bounds) - 1)

    part = part_of_group[group_of]
    names = DEFAULT_NAMES.get(len(fractions), tuple(f"split{i}" for i in range(len(fractions))))
    subsets = tuple(Subset(dataset, np.flatnonzero(part == i), name=names[i]) for i in range(len(fractions)))
    _check_parts(dataset, subsets, fractions, by, n_groups)
    if by == "group":
        check_no_leakage(*subsets)
    return subsets


def _check_parts(dataset: Dataset, subsets: tuple, fractions: np.ndarray, by: str, n_groups: int) -> None:
    """Refuse an empty part or a class missing from training; warn when a class misses another part."""
    asked = "/".join(f"{s.name} {f:g}" for s, f in zip(subsets, fractions))
    unit = "group" if by == "group" else "image"
    root = getattr(dataset, "root", None)
    where = f"{root} {dataset!r}" if root else repr(dataset)
    for s, f in zip(subsets, fractions):
        if f > 0 and len(s) == 0:
            raise DatasetError(f"{where}: too small for the split {asked} by {unit}: the {s.name} part "
                               f"would be empty ({len(dataset)} images"
                               + (f" in {n_groups} groups" if by == "group" else "")
                               + "); add images or change the fractions")
    present = np.flatnonzero(np.bincount(dataset.labels, minlength=dataset.num_classes))
    for s, f in zip(subsets, fractions):
        missing = [dataset.class_names[c] for c in np.setdiff1d(present, s.labels)]
        if f > 0 and missing:
            message = (f"{where}: split {asked} by {unit}: the {s.name} part has no image of class(es) "
                       f"{missing} (too few {unit}s of them)")
            if s is subsets[0]:
                raise DatasetError(message + "; a model cannot learn a class it never sees")
            warnings.warn(message, stacklevel=3)


def check_no_leakage(*subsets: Dataset) -> None:
    """Raise DatasetError if any group id occurs in more than one of ``subsets``."""
    seen: dict[str, int] = {}
    for i, s in enumerate(subsets):
        for g in set(np.asarray(s.groups).astype(str).tolist()):
            if g in seen and seen[g] != i:
                raise DatasetError(f"group {g!r} occurs in split {seen[g]} and split {i}: the splits leak")
            seen[g] = i


def _named(subsets) -> list[tuple[str, Subset]]:
    if isinstance(subsets, Mapping):
        return list(subsets.items())
    names = DEFAULT_NAMES.get(len(subsets), ())
    return [(s.name or (names[i] if i < len(names) else f"split{i}"), s) for i, s in enumerate(subsets)]


def save_split(path: str | os.PathLike, subsets: Mapping[str, Dataset] | Sequence[Subset]) -> None:
    """Write ``split,index,source,label,group`` rows (one per sample) to a CSV, atomically.

    ``source`` is the sample's path relative to the data set root (or its id in
    the npz), so the file still applies when the data set moves.
    """
    path = os.fspath(path)
    rows = []
    for name, subset in _named(subsets):
        base, idx = base_of(subset)
        sources = base.sources()
        for i in idx:
            rows.append([name, int(i), sources[i], base.class_names[base.labels[i]], base.groups[i]])
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["split", "index", "source", "label", "group"])
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())


def load_split(path: str | os.PathLike, dataset: Dataset) -> dict[str, Subset]:
    """Rebuild the subsets saved by ``save_split`` on ``dataset``, matching rows by source.

    Raises DatasetError naming the CSV line when a source is not in ``dataset``
    or its label differs, so a split is never silently applied to other data.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DatasetFileNotFoundError(f"split file not found: {path}")
    position = {s: i for i, s in enumerate(dataset.sources())}
    try:
        return _read_split(path, dataset, position)
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); is it a split file?") from err
    except csv.Error as err:
        raise DatasetError(f"{path}: not a readable CSV ({err})") from err


def _read_split(path: str, dataset: Dataset, position: dict) -> dict[str, Subset]:
    """load_split's reading of the rows."""
    parts: dict[str, list[int]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"split", "source", "label"} - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(f"{path}: missing column(s) {sorted(missing)}; expected "
                               f"split,index,source,label,group")
        for line, row in enumerate(reader, start=2):
            i = position.get(row["source"])
            if i is None:
                raise DatasetError(f"{path}, line {line}: sample {row['source']!r} is not in {dataset!r}")
            actual = dataset.class_names[dataset.labels[i]]
            if actual != row["label"]:
                raise DatasetError(f"{path}, line {line}: {row['source']} has label {row['label']!r} in the "
                                   f"split file but {actual!r} in the data set")
            parts.setdefault(row["split"], []).append(i)
    return {name: Subset(dataset, idx, name=name) for name, idx in parts.items()}
