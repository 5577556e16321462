"""Helpers shared by the fault and bad-input tests: tiny data sets, tiny models, broken files.

Everything is small (16x16 images, a three-block network) so a training run takes a
second or two; the point of these tests is what happens around training, not accuracy.
"""

from __future__ import annotations

import contextlib
import os
import subprocess

import numpy as np
from PIL import Image

import minicnn
from minicnn import nn, optim


def blob_image(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 RGB noise with a bright square in quadrant ``label % 4`` (a tiny CNN can learn it)."""
    image = rng.integers(0, 80, (size, size, 3)).astype(np.uint8)
    h = size // 2
    r, q = divmod(label % 4, 2)
    image[r * h:(r + 1) * h, q * h:(q + 1) * h] = 230
    return image


def image_folder(root, classes=("a", "b", "c"), per_class: int = 8, size: int = 16, seed: int = 0,
                 ext: str = ".png") -> list[str]:
    """Write ``root/<class>/<class>_<k><ext>`` images; returns their paths, sorted."""
    rng = np.random.default_rng(seed)
    paths = []
    for label, name in enumerate(classes):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for k in range(per_class):
            path = os.path.join(root, name, f"{name}_{k:03d}{ext}")
            Image.fromarray(blob_image(label, size, rng)).save(path)
            paths.append(path)
    return sorted(paths)


def break_image(path, how: str) -> None:
    """Damage an image file in place: "truncated", "zero" (0 bytes) or "text" (not an image)."""
    with open(path, "rb") as f:
        data = f.read()
    if how == "truncated":
        data = data[:max(1, len(data) // 3)]
    elif how == "zero":
        data = b""
    elif how == "text":
        data = b"this is not an image\n"
    else:
        raise ValueError(how)
    with open(path, "wb") as f:
        f.write(data)


def tiny_vgg(classes: int = 3, size: int = 16, seed: int = 0, dropout: float = 0.25) -> nn.Sequential:
    """The experiments' tiny VGG with three blocks (4, 8, 8 filters); ``last_block`` freezes blocks 1-2."""
    from minicnn.experiments.models import tiny_vgg as build

    minicnn.seed(seed)
    nn.reset_names()
    return build((size, size, 3), classes, filters=(4, 8, 8), head_units=16, dropout=dropout, name="tiny")


def sgd(model, lr: float = 0.02, **kwargs) -> optim.SGD:
    return optim.SGD(list(model.named_parameters()), lr=lr, momentum=0.9, **kwargs)


def train_args(data, out, *extra, dataset: str = "folder", epochs: int = 2, size: int = 32) -> list[str]:
    """argv for a small ``minicnn train`` run of the tiny model."""
    return ["train", "--dataset", dataset, "--data", str(data), "--model", "tiny", "--image-size", str(size),
            "--epochs", str(epochs), "--batch-size", "8", "--out", str(out), "--verbose", "0",
            "--split-by", "image", "--lr", "0.01", *extra]


class MountFailed(RuntimeError):
    """tmpfs could not be mounted here (not root, or no CAP_SYS_ADMIN): use the fallback."""


@contextlib.contextmanager
def tmpfs(path, size: str = "1m", read_only: bool = False, fill=None):
    """Mount a small tmpfs at ``path`` for the block (``fill(path)`` runs before a read-only remount).

    Raises MountFailed where mounting is not allowed; always unmounts.
    """
    os.makedirs(path, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise MountFailed(done.stderr.strip() or f"mount exited {done.returncode}")
    try:
        if fill is not None:
            fill(path)
        if read_only:
            subprocess.run(["mount", "-o", f"remount,ro,size={size}", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def files_state(folder) -> dict[str, tuple[int, bytes]]:
    """{relative path: (mtime_ns, content)} of every file under ``folder``: to prove nothing changed."""
    found = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = (os.stat(path).st_mtime_ns, f.read())
    return found
