"""Miniature stand-ins for the real data sets, with the same layouts and the same traps.

None of the real sets can be downloaded on build machines, so tests and
examples run on these.  Each writer produces a faithful copy of the layout in
docs (``shared/specs/datasets.md``), traps included, with pictures whose classes
differ visibly (shape, colour, texture), so a small CNN can learn them.
Image sizes here are given as (W, H), like the "600x450" of the spec.

- ``ham10000(root)``: metadata CSV with the extra 8th ``dataset`` column, several
  images per lesion, images split over ``HAM10000_images_part_{1,2}`` plus the
  Kaggle lowercase duplicate folders and hmnist CSVs.
- ``chest_xray(root, variant="kaggle"|"mendeley_v2"|"mendeley_v3")``: Kermany tree,
  Kaggle's nested ``chest_xray/chest_xray`` copy, ``__MACOSX`` and ``._`` files,
  ``.DS_Store``, grey and some RGB JPEGs of different sizes, real file-name patterns.
- ``medmnist(path, flavour="dermamnist"|"pneumoniamnist")``: npz with the six keys;
  Pneumonia without a channel axis, labels (N, 1).
- ``lymphoma(root)``: ``lymphoma/{CLL,FL,MCL}/sj-..._NNN.tif`` RGB TIFFs and ``.DS_Store``.
- ``gtsrb(root)``: Final_Training (per-class GT CSV, tracks of .ppm) and Final_Test.
"""

from __future__ import annotations

import csv
import os
import shutil

import numpy as np
from PIL import Image

from minicnn.data.ham10000 import HAM_CLASSES

# -- drawing on normalised coordinates: u, v in [-1, 1] across the shorter side -------------------


def _coords(w: int, h: int):
    s = min(w, h) / 2.0
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    return (u - (w - 1) / 2) / s, (v - (h - 1) / 2) / s


def _noise(rng, h, w, amount):
    noise = rng.standard_normal(size=(h, w, 1), dtype=np.float32)
    noise *= amount
    return noise


def _paint(img, mask, color, texture=None):
    color = np.asarray(color, dtype=np.float32)
    img[mask] = color if texture is None else color * texture[mask][:, None]


# HAM10000 look of each class: (base colour, shape); textures differ too.
_HAM_LOOK = {
    "akiec": ((200, 90, 90), "square"),
    "bcc": ((235, 200, 210), "ring"),
    "bkl": ((140, 95, 60), "stripes"),
    "df": ((90, 60, 40), "small"),
    "mel": ((25, 20, 30), "star"),
    "nv": ((150, 100, 70), "disc"),
    "vasc": ((150, 20, 90), "dots"),
}


def draw_lesion(dx: str, w: int, h: int, rng: np.random.Generator, params: dict | None = None) -> np.ndarray:
    """A skin-coloured picture with a lesion whose shape and colour say ``dx``."""
    p = params or {}
    u, v = _coords(w, h)
    img = np.empty((h, w, 3), np.float32)
    img[:] = p.get("skin", (225, 180, 150))
    img *= 1 + _noise(rng, h, w, 0.03)
    cx, cy = p.get("center", (0.0, 0.0))
    r = p.get("radius", 0.5)
    cx, cy = cx + rng.normal(0, 0.03), cy + rng.normal(0, 0.03)
    du, dv = u - cx, v - cy
    d = np.sqrt(du**2 + dv**2)
    color, shape = _HAM_LOOK[dx]
    texture = 1 + _noise(rng, h, w, 0.06)[..., 0]
    if shape == "square":
        mask = np.maximum(np.abs(du), np.abs(dv)) < r * 0.8
        texture = texture * (1 + 0.25 * (rng.random((h, w)) > 0.7))
    elif shape == "ring":
        mask = (d > r * 0.55) & (d < r)
    elif shape == "stripes":
        mask = (du / 1.2) ** 2 + dv**2 < r**2
        texture = texture * (0.75 + 0.5 * (np.sin(du * 18) > 0))
    elif shape == "small":
        mask = d < r * 0.45
    elif shape == "star":
        theta = np.arctan2(dv, du)
        mask = d < r * (1 + 0.35 * np.sin(5 * theta + p.get("phase", 0.0)))
    elif shape == "disc":
        mask = d < r * 0.85
    else:  # dots
        mask = np.zeros((h, w), bool)
        for k in range(6):
            a = p.get("phase", 0.0) + k * np.pi / 3
            mask |= (u - cx - 0.5 * r * np.cos(a)) ** 2 + (v - cy - 0.5 * r * np.sin(a)) ** 2 < (0.22 * r) ** 2
    _paint(img, mask, color, texture)
    return np.clip(img, 0, 255).astype(np.uint8)


def draw_xray(pneumonia: bool, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """A grey chest: bright body, two dark lungs; pneumonia adds bright blotches inside a lung."""
    u, v = _coords(w, h)
    img = np.full((h, w), 60.0, np.float32)
    img[(u / 1.6) ** 2 + (v / 1.1) ** 2 < 1] = 170
    lungs = (((u + 0.45) / 0.32) ** 2 + (v / 0.7) ** 2 < 1) | (((u - 0.45) / 0.32) ** 2 + (v / 0.7) ** 2 < 1)
    img[lungs] = 45
    if pneumonia:
        side = rng.choice([-0.45, 0.45])
        for _ in range(4):
            bx, by = side + rng.normal(0, 0.1), rng.uniform(-0.4, 0.5)
            blob = (u - bx) ** 2 + (v - by) ** 2 < rng.uniform(0.02, 0.05)
            img[blob & lungs] = 190
        img[lungs] += 25 * rng.random(int(lungs.sum()))
    img += rng.normal(0, 6, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def draw_histology(cls: str, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """H&E-like: pink stroma with purple nuclei; CLL small dense, FL clustered, MCL large pale."""
    img = np.empty((h, w, 3), np.float32)
    img[:] = (230, 170, 200)
    img *= 1 + _noise(rng, h, w, 0.04)
    v, u = np.mgrid[0:h, 0:w]
    count, radius, color = {"CLL": (60, 0.025, (70, 30, 120)), "FL": (40, 0.035, (110, 50, 150)),
                            "MCL": (25, 0.06, (150, 90, 180))}[cls]
    s = min(w, h)
    if cls == "FL":  # nuclei packed into one follicle
        centre = rng.uniform(0.35, 0.65, size=2) * (w, h)
        pts = centre + rng.normal(0, 0.15 * s, size=(count, 2))
    else:
        pts = rng.uniform(0, 1, size=(count, 2)) * (w, h)
    r = max(1.0, radius * s)
    nuclei = np.zeros((h, w), bool)
    for x, y in pts:
        nuclei |= (u - x) ** 2 + (v - y) ** 2 < (r * rng.uniform(0.8, 1.2)) ** 2
    img[nuclei] = color
    return np.clip(img, 0, 255).astype(np.uint8)


_SIGN_COLORS = [(200, 30, 30), (30, 60, 200), (230, 200, 20), (30, 160, 60), (240, 240, 240), (120, 60, 160)]


def draw_sign(cls: int, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """A traffic-sign-like shape: class -> (outline shape, colour, inner bar orientation)."""
    u, v = _coords(w, h)
    u, v = u + rng.normal(0, 0.04), v + rng.normal(0, 0.04)
    img = np.empty((h, w, 3), np.float32)
    img[:] = rng.uniform(60, 140, size=3)
    shape, color, inner = cls % 4, _SIGN_COLORS[(cls // 4) % 6], cls // 24
    outline = [np.sqrt(u**2 + v**2) < 0.8, np.maximum(abs(u), abs(v)) < 0.7, abs(u) + abs(v) < 0.85,
               (v > -0.7) & (v < 0.6) & (abs(u) < (0.6 - v) * 0.65)][shape]
    img[outline] = color
    bar = (abs(v) < 0.12) & (abs(u) < 0.45) if inner == 0 else (abs(u) < 0.12) & (abs(v) < 0.45)
    img[bar & outline] = (20, 20, 20)
    img *= 1 + _noise(rng, h, w, 0.05)
    return np.clip(img, 0, 255).astype(np.uint8)


# -- writers -------------------------------------------------------------------------------


def _class_counts(n: int, proportions: np.ndarray, minimum: int) -> np.ndarray:
    """Split n into classes roughly by ``proportions``, each class getting at least ``minimum``."""
    k = len(proportions)
    if n < k * minimum:
        raise ValueError(f"need at least {k * minimum} images for {k} classes, got {n}")
    counts = np.full(k, minimum)
    extra = n - counts.sum()
    counts += np.floor(proportions / proportions.sum() * extra).astype(int)
    counts[np.argmax(proportions)] += n - counts.sum()
    return counts


HAM_PROPORTIONS = np.array([327, 514, 1099, 115, 1113, 6705, 142], dtype=float)  # akiec..vasc
_LOCALIZATIONS = ["abdomen", "acral", "back", "chest", "ear", "face", "foot", "genital", "hand",
                  "lower extremity", "neck", "scalp", "trunk", "unknown", "upper extremity"]
_KAGGLE_HMNIST_LABEL = {"akiec": 0, "bcc": 1, "bkl": 2, "df": 3, "nv": 4, "vasc": 5, "mel": 6}


def ham10000(root: str | os.PathLike, n_images: int = 70, image_size: tuple[int, int] = (64, 48),
             seed: int = 0, extra_column: bool = True, kaggle_duplicates: bool = True,
             min_per_class: int = 4, quality: int = 90) -> str:
    """Write a HAM10000 miniature to ``root``; returns ``root``.

    Lesions get 1 to 3 images (near-copies: same lesion parameters, new noise
    and jitter); dx is constant within a lesion.  ``image_size`` is (W, H).
    """
    root = os.fspath(root)
    rng = np.random.default_rng(seed)
    w, h = image_size
    parts = [os.path.join(root, "HAM10000_images_part_1"), os.path.join(root, "HAM10000_images_part_2")]
    for p in parts:
        os.makedirs(p, exist_ok=True)
    counts = _class_counts(n_images, HAM_PROPORTIONS, min_per_class)
    rows, image_no, lesion_no = [], 24306, 0
    for label, dx in enumerate(HAM_CLASSES):
        left = int(counts[label])
        while left:
            per_lesion = min(left, int(rng.choice([1, 1, 2, 3])))
            left -= per_lesion
            lesion_no += 1
            lesion = f"HAM_{lesion_no:07d}"
            params = {"center": tuple(rng.uniform(-0.25, 0.25, 2)), "radius": rng.uniform(0.45, 0.65),
                      "phase": rng.uniform(0, 6.28),
                      "skin": tuple(np.array((225, 180, 150)) * rng.uniform(0.85, 1.05))}
            meta = [rng.choice(["histo", "follow_up", "consensus", "confocal"]),
                    "" if rng.random() < 0.05 else f"{5 * rng.integers(0, 18):.1f}",
                    rng.choice(["male", "female", "unknown"], p=[0.54, 0.45, 0.01]), rng.choice(_LOCALIZATIONS)]
            for _ in range(per_lesion):
                image_id = f"ISIC_{image_no:07d}"
                image_no += 1
                folder = parts[0] if rng.random() < 0.5 else parts[1]
                Image.fromarray(draw_lesion(dx, w, h, rng, params)).save(
                    os.path.join(folder, image_id + ".jpg"), quality=quality)
                rows.append([lesion, image_id, dx, *meta] + (["vidir_molemax"] if extra_column else []))
    order = rng.permutation(len(rows))
    header = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
    with open(os.path.join(root, "HAM10000_metadata.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header + (["dataset"] if extra_column else []))
        writer.writerows(rows[i] for i in order)
    if kaggle_duplicates:
        for p in parts:
            shutil.copytree(p, os.path.join(root, os.path.basename(p).lower()), dirs_exist_ok=True)
        _hmnist(root, rows, rng)
    return root


def _hmnist(root, rows, rng):
    """hmnist_8_8_L.csv / hmnist_8_8_RGB.csv: pixels then label, in Kaggle's label map (no ids)."""
    for mode, channels in (("L", 1), ("RGB", 3)):
        with open(os.path.join(root, f"hmnist_8_8_{mode}.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow([f"pixel{i:04d}" for i in range(64 * channels)] + ["label"])
            for row in rows:
                writer.writerow(list(rng.integers(0, 256, 64 * channels)) + [_KAGGLE_HMNIST_LABEL[row[2]]])


def chest_xray(root: str | os.PathLike, variant: str = "kaggle", n_train: int = 40, n_val: int = 6,
               n_test: int = 16, image_size: tuple[int, int] = (72, 64), seed: int = 0,
               rgb_every: int = 5, junk: bool = True) -> str:
    """Write a Kermany miniature under ``root`` (``root/chest_xray/...``); returns ``root``.

    ``variant``: "kaggle" (train/val/test, nested ``chest_xray/chest_xray`` copy,
    ``__MACOSX``), "mendeley_v2" (``CellData/chest_xray/{train,test}``) or
    "mendeley_v3" (same, files named ``(NORMAL|BACTERIA|VIRUS)-<patient>-<n>.jpeg``).
    About 1/3 of each split is NORMAL; patients have 1-3 images; every
    ``rgb_every``-th file is saved as RGB; sizes vary around ``image_size`` (W, H).
    """
    if variant not in ("kaggle", "mendeley_v2", "mendeley_v3"):
        raise ValueError(f"variant must be kaggle, mendeley_v2 or mendeley_v3, got {variant!r}")
    root = os.fspath(root)
    rng = np.random.default_rng(seed)
    tree = os.path.join(root, "chest_xray") if variant == "kaggle" else os.path.join(root, "CellData",
                                                                                   "chest_xray")
    splits = {"train": n_train, "val": n_val, "test": n_test} if variant == "kaggle" else \
        {"train": n_train, "test": n_test}
    patient, file_no = 100, 0
    for split_name, n in splits.items():
        n_normal = max(1, n // 3)
        for cls, count in (("NORMAL", n_normal), ("PNEUMONIA", n - n_normal)):
            folder = os.path.join(tree, split_name, cls)
            os.makedirs(folder, exist_ok=True)
            left = count
            while left > 0:
                patient += 1
                per_patient = min(left, int(rng.integers(1, 4)))
                left -= per_patient
                kind = "normal" if cls == "NORMAL" else str(rng.choice(["bacteria", "virus"]))
                style = int(rng.integers(2))
                for k in range(1, per_patient + 1):
                    file_no += 1
                    name = _xray_name(variant, kind, style, patient, k, file_no)
                    fw = int(image_size[0] * rng.uniform(0.8, 1.3))
                    fh = int(image_size[1] * rng.uniform(0.8, 1.2))
                    img = Image.fromarray(draw_xray(cls == "PNEUMONIA", fw, fh, rng))
                    if rgb_every and file_no % rgb_every == 0:
                        img = img.convert("RGB")
                    img.save(os.path.join(folder, name), quality=90)
    if junk:
        _mac_junk(root, tree, nested=(variant == "kaggle"))
    return root


def _xray_name(variant, kind, style, patient, k, file_no):
    if variant == "mendeley_v3":
        return f"{kind.upper()}-{patient * 1000 + 3:07d}-{k:04d}.jpeg"
    if kind == "normal":
        return f"IM-{patient:04d}-{k:04d}.jpeg" if style else f"NORMAL2-IM-{patient:04d}-{k:04d}.jpeg"
    return f"person{patient}_{kind}_{file_no}.jpeg"


def _mac_junk(root, tree, nested):
    """The macOS leftovers of the real archives: ``._x`` resource forks, ``.DS_Store``, ``__MACOSX``."""
    if nested:  # Kaggle ships a second full copy inside the first
        shutil.copytree(tree, os.path.join(tree, os.path.basename(tree)), dirs_exist_ok=True)
    for dirpath, _, filenames in os.walk(tree):
        with open(os.path.join(dirpath, ".DS_Store"), "wb") as f:
            f.write(b"\x00\x00\x00\x01Bud1" + bytes(32))
        for name in filenames[:2]:
            if not name.startswith("."):
                with open(os.path.join(dirpath, "._" + name), "wb") as f:
                    f.write(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(16))
    mac = os.path.join(root, "__MACOSX", os.path.relpath(tree, root), "train", "NORMAL")
    os.makedirs(mac, exist_ok=True)
    with open(os.path.join(mac, "._IM-0001-0001.jpeg"), "wb") as f:
        f.write(b"\x00\x05\x16\x07junk")


def medmnist(path: str | os.PathLike, flavour: str = "dermamnist", size: int = 28, n_train: int = 70,
             n_val: int = 14, n_test: int = 21, seed: int = 0) -> str:
    """Write a MedMNIST-style npz (DermaMNIST: (N,S,S,3); PneumoniaMNIST: (N,S,S)); returns the path."""
    if flavour not in ("dermamnist", "pneumoniamnist"):
        raise ValueError(f"flavour must be dermamnist or pneumoniamnist, got {flavour!r}")
    rng = np.random.default_rng(seed)
    arrays = {}
    for split_name, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        if flavour == "dermamnist":
            labels = np.repeat(np.arange(7), _class_counts(n, HAM_PROPORTIONS, 1))
            images = np.stack([draw_lesion(HAM_CLASSES[y], size, size, rng) for y in labels])
        else:
            labels = np.repeat(np.arange(2), _class_counts(n, np.array([1.0, 3.0]), 1))
            images = np.stack([draw_xray(bool(y), size, size, rng) for y in labels])
        order = rng.permutation(n)
        arrays[f"{split_name}_images"] = images[order]
        arrays[f"{split_name}_labels"] = labels[order].astype(np.uint8).reshape(-1, 1)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def lymphoma(root: str | os.PathLike, n_per_class: tuple[int, int, int] = (10, 12, 11),
             image_size: tuple[int, int] = (80, 60), images_per_case: int = 3, seed: int = 0) -> str:
    """Write ``root/lymphoma/{CLL,FL,MCL}/sj-YY-NNN_MMM.tif`` (RGB TIFF) plus ``.DS_Store``; returns root."""
    root = os.fspath(root)
    rng = np.random.default_rng(seed)
    case = 400
    for cls, n in zip(("CLL", "FL", "MCL"), n_per_class):
        folder = os.path.join(root, "lymphoma", cls)
        os.makedirs(folder, exist_ok=True)
        for i in range(n):
            if i % images_per_case == 0:
                case += 1
                year = int(rng.integers(2, 6))
            name = f"sj-{year:02d}-{case}_{i % images_per_case + 1:03d}.tif"
            Image.fromarray(draw_histology(cls, *image_size, rng)).save(os.path.join(folder, name))
        with open(os.path.join(folder, ".DS_Store"), "wb") as f:
            f.write(b"\x00\x00\x00\x01Bud1")
    with open(os.path.join(root, "lymphoma", ".DS_Store"), "wb") as f:
        f.write(b"\x00\x00\x00\x01Bud1")
    return root


def gtsrb(root: str | os.PathLike, n_classes: int = 43, tracks: int = 2, per_track: int = 2,
          n_test_per_class: int = 2, image_size: tuple[int, int] = (32, 32), seed: int = 0) -> str:
    """Write ``root/GTSRB/Final_Training`` and ``Final_Test`` (.ppm, ``;`` CSVs); returns root."""
    root = os.fspath(root)
    rng = np.random.default_rng(seed)
    header = ["Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId"]
    base = os.path.join(root, "GTSRB")

    def write(folder, name, cls):
        w, h = (int(s * rng.uniform(0.9, 1.3)) for s in image_size)
        Image.fromarray(draw_sign(cls, w, h, rng)).save(os.path.join(folder, name))
        return [name, w, h, w // 10, h // 10, w - 1 - w // 10, h - 1 - h // 10, cls]

    for cls in range(n_classes):
        folder = os.path.join(base, "Final_Training", "Images", f"{cls:05d}")
        os.makedirs(folder, exist_ok=True)
        rows = [write(folder, f"{t:05d}_{k:05d}.ppm", cls) for t in range(tracks) for k in range(per_track)]
        _write_semicolon_csv(os.path.join(folder, f"GT-{cls:05d}.csv"), header, rows)
    test = os.path.join(base, "Final_Test", "Images")
    os.makedirs(test, exist_ok=True)
    labels = rng.permutation(np.repeat(np.arange(n_classes), n_test_per_class))
    rows = [write(test, f"{i:05d}.ppm", int(c)) for i, c in enumerate(labels)]
    _write_semicolon_csv(os.path.join(test, "GT-final_test.csv"), header, rows)
    return root


def _write_semicolon_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter=";")
        writer.writerow(header)
        writer.writerows(rows)


def truncate(path: str | os.PathLike, keep: float = 0.5) -> None:
    """Cut a file to ``keep`` of its length: a corrupt image, for testing error handling."""
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])
