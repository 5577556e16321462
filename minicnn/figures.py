"""The thesis' figures as PNG files: matplotlib when installed, else plain Pillow drawing.

- :func:`training_curves`    accuracy per epoch of several runs (thesis Fig. 7.1:
                             ImageNet weights red dashed, random weights blue solid)
- :func:`activation_maps`    an image beside first-conv-layer activations of several
                             models (thesis Fig. 8.1)
- :func:`confusion_matrix`   counts (and row-normalised colours) with class names
- :func:`gradcam_overlay`    a Grad-CAM heatmap blended over its image

The functions take arrays (histories, activations, heatmaps) and only draw;
computing activations and Grad-CAM is in minicnn.train.explain.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

STYLES = [("tab:red", "--"), ("tab:blue", "-"), ("tab:green", "-."), ("tab:orange", ":"), ("tab:purple", "-")]
_PIL_COLOURS = [(214, 39, 40), (31, 119, 180), (44, 160, 44), (255, 127, 14), (148, 103, 189)]


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _prepare(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return path


def colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB uint8 with a blue-cyan-yellow-red ramp ("jet"-like).

    Piecewise linear: each channel is clip(1.5 - |4 v - k|, 0, 1) with
    k = 3 (red), 2 (green), 1 (blue).
    """
    v = np.clip(np.asarray(values, np.float64), 0.0, 1.0)
    rgb = np.stack([np.clip(1.5 - np.abs(4 * v - k), 0, 1) for k in (3, 2, 1)], axis=-1)
    return (rgb * 255).round().astype(np.uint8)


def to_uint8_image(image: np.ndarray) -> np.ndarray:
    """Any (H, W[, 1|3]) image, float in [-1, 1] / [0, 1] / [0, 255] or uint8, as (H, W, 3) uint8."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3):
        raise ValueError(f"image must be (H, W), (H, W, 1) or (H, W, 3), got shape {a.shape}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    if a.dtype == np.uint8:
        return a
    a = a.astype(np.float64)
    lo, hi = float(a.min()), float(a.max())
    if lo >= -1.0 and hi <= 1.0 and lo < 0:
        a = (a + 1.0) * 127.5          # the thesis' [-1, 1] scaling
    elif hi <= 1.0:
        a = a * 255.0
    return np.clip(a, 0, 255).round().astype(np.uint8)


def normalise(a: np.ndarray) -> np.ndarray:
    """(a - min) / (max - min), or zeros for a constant array."""
    a = np.asarray(a, np.float64)
    span = a.max() - a.min()
    return (a - a.min()) / span if span > 0 else np.zeros_like(a)


# ---- Figure 7.1 ---------------------------------------------------------------------

def training_curves(histories: Mapping[str, Mapping[str, Sequence[float]]], path: str | os.PathLike,
                    metric: str = "accuracy", title: str | None = None) -> str:
    """One line per run: ``histories[label][metric]`` against epoch (1, 2, ...).

    ``histories`` values are History.history dicts (e.g. {"accuracy": [...], "val_accuracy": [...]}).
    """
    path = _prepare(path)
    series = {}
    for label, h in histories.items():
        if metric not in h:
            raise ValueError(f"history {label!r} has no {metric!r}; it has {sorted(h)}")
        series[label] = np.asarray(h[metric], np.float64)
    title = title or f"Training {metric.replace('_', ' ')}"
    if have_matplotlib():
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(6, 4))
        for (label, ys), (colour, dash) in zip(series.items(), STYLES * 4):
            ax.plot(np.arange(1, len(ys) + 1), ys, dash, color=colour, label=label, linewidth=2)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric.replace("_", " "))
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path
    return _pil_curves(series, path, title)


def _pil_curves(series: dict[str, np.ndarray], path: str, title: str) -> str:
    w, h, m = 600, 400, 50
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    d.rectangle([m, m, w - m, h - m], outline="black")
    all_y = np.concatenate([s for s in series.values() if s.size] or [np.zeros(1)])
    lo, hi = float(all_y.min()), float(all_y.max())
    hi = hi if hi > lo else lo + 1
    n = max(len(s) for s in series.values())
    for k, (label, ys) in enumerate(series.items()):
        colour = _PIL_COLOURS[k % len(_PIL_COLOURS)]
        pts = [(m + (w - 2 * m) * (i / max(n - 1, 1)), h - m - (h - 2 * m) * (y - lo) / (hi - lo))
               for i, y in enumerate(ys)]
        if len(pts) > 1:
            d.line(pts, fill=colour, width=2)
        d.text((m + 10, m + 10 + 14 * k), label, fill=colour)
    d.text((m, 15), title, fill="black")
    d.text((5, m), f"{hi:.2f}", fill="black")
    d.text((5, h - m - 10), f"{lo:.2f}", fill="black")
    d.text((w // 2, h - 30), "epoch", fill="black")
    img.save(path)
    return path


# ---- Figure 8.1 ---------------------------------------------------------------------

def activation_maps(image: np.ndarray, activations: Mapping[str, np.ndarray], path: str | os.PathLike,
                    channel: int | None = None, title: str | None = None) -> str:
    """Panel (a) the image, then one panel per model: its activation map.

    ``activations[label]`` is one image's layer output (H, W, C). The panel shows
    channel ``channel``, or with None the mean over channels (how strongly the
    layer responds at each position), each normalised to [0, 1].
    """
    path = _prepare(path)
    maps = {}
    for label, a in activations.items():
        a = np.asarray(a)
        if a.ndim == 4 and a.shape[0] == 1:
            a = a[0]
        if a.ndim != 3:
            raise ValueError(f"activation {label!r} must be (H, W, C) for one image, got {a.shape}")
        maps[label] = normalise(a.mean(axis=2) if channel is None else a[:, :, channel])
    panels = {"(a) image": to_uint8_image(image)}
    for k, (label, m) in enumerate(maps.items()):
        panels[f"({chr(ord('b') + k)}) {label}"] = m
    if have_matplotlib():
        plt = _pyplot()
        fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.3))
        for ax, (label, p) in zip(np.atleast_1d(axes), panels.items()):
            ax.imshow(p, cmap=None if p.ndim == 3 else "viridis")
            ax.set_title(label, fontsize=9)
            ax.axis("off")
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path
    tiles = [Image.fromarray(p if p.ndim == 3 else colormap(p)).resize((160, 160), Image.NEAREST)
             for p in panels.values()]
    return _pil_row(tiles, list(panels), path)


def _pil_row(tiles: list, labels: list[str], path: str) -> str:
    w = sum(t.width for t in tiles) + 10 * (len(tiles) + 1)
    img = Image.new("RGB", (w, tiles[0].height + 40), "white")
    d = ImageDraw.Draw(img)
    x = 10
    for tile, label in zip(tiles, labels):
        img.paste(tile, (x, 30))
        d.text((x, 10), label, fill="black")
        x += tile.width + 10
    img.save(path)
    return path


# ---- confusion matrix --------------------------------------------------------------

def confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: str | os.PathLike,
                     title: str = "Confusion matrix") -> str:
    """Rows: true class, columns: predicted class. Cell colour is the row-normalised
    rate (recall along the diagonal); the text is the count."""
    path = _prepare(path)
    m = np.asarray(matrix)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] != len(class_names):
        raise ValueError(f"matrix must be ({len(class_names)}, {len(class_names)}) for the class names given, "
                         f"got {m.shape}")
    rates = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    if have_matplotlib():
        plt = _pyplot()
        size = 2 + 0.6 * len(class_names)
        fig, ax = plt.subplots(figsize=(size + 1, size))
        im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
        ax.set_yticks(range(len(class_names)), class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, str(int(m[i, j])), ha="center", va="center",
                        color="white" if rates[i, j] > 0.5 else "black", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046)
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path
    cell, left, top = 48, 80, 40
    n = len(class_names)
    img = Image.new("RGB", (left + cell * n + 10, top + cell * n + 10), "white")
    d = ImageDraw.Draw(img)
    d.text((left, 10), title, fill="black")
    for i in range(n):
        d.text((5, top + cell * i + cell // 2 - 5), class_names[i][:10], fill="black")
        for j in range(n):
            shade = int(255 * (1 - rates[i, j]))
            box = [left + cell * j, top + cell * i, left + cell * (j + 1), top + cell * (i + 1)]
            d.rectangle(box, fill=(shade, shade, 255), outline="grey")
            d.text((box[0] + 5, box[1] + cell // 2 - 5), str(int(m[i, j])),
                   fill="white" if rates[i, j] > 0.5 else "black")
    img.save(path)
    return path


# ---- Grad-CAM ------------------------------------------------------------------------

def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a [0, 1] heatmap (any size; bilinearly resized to the image) over an image.

    out = (1 - alpha) * image + alpha * colormap(heatmap), as (H, W, 3) uint8.
    """
    img = to_uint8_image(image)
    hm = Image.fromarray((normalise(heatmap) * 255).astype(np.uint8)).resize(
        (img.shape[1], img.shape[0]), Image.BILINEAR)
    colour = colormap(np.asarray(hm, np.float64) / 255.0)
    return ((1 - alpha) * img + alpha * colour).round().astype(np.uint8)


def gradcam_overlay(image: np.ndarray, heatmap: np.ndarray, path: str | os.PathLike,
                    title: str | None = None) -> str:
    """Save the image, the heatmap and their blend side by side as one PNG."""
    path = _prepare(path)
    img = to_uint8_image(image)
    blend = overlay(img, heatmap)
    panels = {"image": img, "Grad-CAM": colormap(normalise(heatmap)), "overlay": blend}
    if have_matplotlib():
        plt = _pyplot()
        fig, axes = plt.subplots(1, 3, figsize=(9, 3.3))
        for ax, (label, p) in zip(axes, panels.items()):
            ax.imshow(p)
            ax.set_title(label, fontsize=9)
            ax.axis("off")
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path
    tiles = [Image.fromarray(p).resize((160, 160), Image.BILINEAR) for p in panels.values()]
    return _pil_row(tiles, list(panels), path)
