"""The thesis' figures as PNG files, drawn with Pillow (a dependency already; no plotting library).

- :func:`training_curves`    one metric per epoch for several runs (thesis Fig. 7.1)
- :func:`loss_and_accuracy`  a run's loss beside its accuracy, training and validation
- :func:`activation_maps`    an image beside first-conv-layer activations of several models (Fig. 8.1)
- :func:`confusion_matrix`   counts or row-normalised rates, true classes down, predicted across
- :func:`gradcam_overlay`    a Grad-CAM heatmap beside and over its image

Every axis has a label and numbered ticks. The functions take arrays and only draw
(activations and Grad-CAM are computed in minicnn.train.explain). Each PNG records
the text it shows and where (``texts(path)``: [text, x0, y0, x1, y1] boxes), so
tests and tools can check a label is there without reading pixels blindly.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

COLOURS = [(214, 39, 40), (31, 119, 180), (44, 160, 44), (255, 127, 14), (148, 103, 189)]
DASHES = [None, (8, 5), (3, 4), (12, 4, 3, 4)]       # solid, dashed, dotted, dash-dot (pixels on/off)
TEXT_KEY = "minicnn:texts"


def _font(size: int):
    return ImageFont.load_default(size=size)


class _Canvas:
    """A white image that remembers the text boxes it drew (saved into the PNG)."""

    def __init__(self, width: int, height: int):
        self.image = Image.new("RGB", (width, height), "white")
        self.draw = ImageDraw.Draw(self.image)
        self.boxes: list[list] = []

    def text(self, xy, text: str, size: int = 13, anchor: str = "la", fill=(0, 0, 0), rotate: bool = False):
        font = _font(size)
        if not rotate:
            self.draw.text(xy, text, font=font, fill=fill, anchor=anchor)
            box = self.draw.textbbox(xy, text, font=font, anchor=anchor)
        else:                       # a vertical label: drawn on its own strip, turned 90 degrees
            width, height = self.draw.textbbox((0, 0), text, font=font, anchor="lt")[2:]
            strip = Image.new("RGB", (width + 2, height + 2), "white")
            ImageDraw.Draw(strip).text((0, 0), text, font=font, fill=fill, anchor="lt")
            strip = strip.rotate(90, expand=True)
            # centred on xy, or with anchor "mb" standing on it (column labels)
            left = int(xy[0] - strip.width / 2)
            top = int(xy[1] - strip.height) if anchor == "mb" else int(xy[1] - strip.height / 2)
            self.image.paste(strip, (left, top))
            box = (left, top, left + strip.width, top + strip.height)
        self.boxes.append([text, *map(int, box)])

    def save(self, path: str) -> str:
        info = PngInfo()
        info.add_text(TEXT_KEY, json.dumps(self.boxes))
        self.image.save(path, pnginfo=info)
        return path


def texts(path: str | os.PathLike) -> list[list]:
    """The [text, x0, y0, x1, y1] boxes a figure of this module drew."""
    with Image.open(path) as im:
        return json.loads(im.text.get(TEXT_KEY, "[]"))


def _prepare(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return path


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [lo, hi] (steps of 1, 2 or 5 x 10^k)."""
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step + 1e-9) * step
    ticks = [first + i * step for i in range(math.ceil((hi - first) / step - 1e-9) + 1)]
    return [round(t, 10) for t in ticks]


def _dashed(draw, points, colour, dash, width=2):
    if dash is None:
        draw.line(points, fill=colour, width=width, joint="curve")
        return
    pattern, k, left, on = list(dash), 0, dash[0], True
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        length, done = math.hypot(x1 - x0, y1 - y0), 0.0
        while done < length:
            step = min(left, length - done)
            a, b = done / length, (done + step) / length
            if on:
                draw.line([(x0 + a * (x1 - x0), y0 + a * (y1 - y0)), (x0 + b * (x1 - x0), y0 + b * (y1 - y0))],
                          fill=colour, width=width)
            done, left = done + step, left - step
            if left <= 1e-9:
                k, on = (k + 1) % len(pattern), not on
                left = pattern[k]


def _panel(canvas: _Canvas, box, series: Mapping[str, tuple], xlabel: str, ylabel: str, title: str) -> None:
    """Axes in ``box`` (left, top, right, bottom) with one line per series {label: (ys, colour, dash)}."""
    left, top, right, bottom = box
    x0, x1, y1 = left + 62, right - 10, bottom - 46                      # room for ticks and labels
    legend = _legend_places(series, x0, x1, top + 34)                   # a row under the title, off the data
    y0 = max(y for _, y in legend.values()) + 16
    values = np.concatenate([np.asarray(ys, np.float64) for ys, _, _ in series.values()] or [np.zeros(1)])
    finite = values[np.isfinite(values)]
    ticks = nice_ticks(float(finite.min()) if finite.size else 0.0, float(finite.max()) if finite.size else 1.0)
    lo, hi = ticks[0], ticks[-1]
    n = max((len(ys) for ys, _, _ in series.values()), default=1)
    xticks = [int(t) for t in nice_ticks(1, max(n, 2), min(n, 8)) if 1 <= t <= max(n, 2) and t == int(t)]

    def px(epoch):
        return x0 + (x1 - x0) * (epoch - 1) / max(n - 1, 1)

    def py(v):
        return y1 - (y1 - y0) * (v - lo) / (hi - lo)

    d = canvas.draw
    for t in ticks:
        d.line([(x0, py(t)), (x1, py(t))], fill=(225, 225, 225))
        canvas.text((x0 - 6, py(t)), f"{t:g}", 12, anchor="rm")
    for t in xticks:
        d.line([(px(t), y1), (px(t), y1 + 4)], fill=(0, 0, 0))
        canvas.text((px(t), y1 + 6), str(t), 12, anchor="mt")
    d.rectangle([x0, y0, x1, y1], outline=(0, 0, 0))
    for k, (label, (ys, colour, dash)) in enumerate(series.items()):
        points = [(px(i + 1), py(v)) for i, v in enumerate(ys) if np.isfinite(v)]
        if len(points) > 1:
            _dashed(d, points, colour, dash)
        for x, y in points:
            d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        lx, ly = legend[label]
        _dashed(d, [(lx, ly), (lx + 28, ly)], colour, dash)
        canvas.text((lx + 34, ly), label, 12, anchor="lm", fill=colour)
    canvas.text(((x0 + x1) / 2, top + 6), title, 15, anchor="mt")
    canvas.text(((x0 + x1) / 2, bottom - 22), xlabel, 13, anchor="mt")
    canvas.text((left + 12, (y0 + y1) / 2), ylabel, 13, rotate=True)


def _legend_places(series: Mapping[str, tuple], x0: float, x1: float, y: float) -> dict:
    """{label: (x, y)} of each legend entry: left to right, wrapping to a new row at x1."""
    places, x = {}, x0
    for label in series:
        width = 34 + _font(12).getbbox(label)[2] + 24
        if x > x0 and x + width > x1:
            x, y = x0, y + 18
        places[label], x = (x, y), x + width
    return places or {"": (x0, y)}


def _styled(runs: Mapping[str, Sequence[float]], dashes=None) -> dict:
    return {label: (ys, COLOURS[k % len(COLOURS)], (dashes or DASHES)[k % len(dashes or DASHES)])
            for k, (label, ys) in enumerate(runs.items())}


# ---- Figure 7.1 and a run's curves -------------------------------------------------------

def training_curves(histories: Mapping[str, Mapping[str, Sequence[float]]], path: str | os.PathLike,
                    metric: str = "accuracy", title: str | None = None) -> str:
    """One line per run: ``histories[label][metric]`` against epoch (1, 2, ...)."""
    path = _prepare(path)
    runs = {}
    for label, h in histories.items():
        if metric not in h:
            raise ValueError(f"history {label!r} has no {metric!r}; it has {sorted(h)}")
        runs[label] = list(h[metric])
    canvas = _Canvas(640, 420)
    _panel(canvas, (0, 0, 640, 420), _styled(runs), "epoch", metric.replace("_", " "),
           title or f"Training {metric.replace('_', ' ')}")
    return canvas.save(path)


def loss_and_accuracy(history: Mapping[str, Sequence[float]], path: str | os.PathLike,
                      title: str | None = None) -> str:
    """Loss (left) and accuracy (right) per epoch, training solid and validation dashed."""
    path = _prepare(path)
    missing = [k for k in ("loss", "accuracy") if k not in history]
    if missing:
        raise ValueError(f"history has no {missing}; it has {sorted(history)}")
    canvas = _Canvas(1100, 420 + (30 if title else 0))
    top = 30 if title else 0
    for k, metric in enumerate(("loss", "accuracy")):
        runs = {"training": list(history[metric])}
        if f"val_{metric}" in history:
            runs["validation"] = list(history[f"val_{metric}"])
        _panel(canvas, (550 * k, top, 550 * (k + 1), top + 420), _styled(runs), "epoch", metric,
               f"{metric} per epoch")
    if title:
        canvas.text((550, 6), title, 16, anchor="mt")
    return canvas.save(path)


# ---- images: activations, Grad-CAM --------------------------------------------------------

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


def _tiles(panels: Mapping[str, np.ndarray], path: str, title: str | None, size: int = 200,
           note: str = "maps: blue low, red high (each scaled to its own range)") -> str:
    """Images side by side, each titled, under an optional overall title, with a note below."""
    top = 34 if title else 6
    canvas = _Canvas(len(panels) * (size + 14) + 14, top + size + 52)
    canvas.text((14, top + size + 32), note, 11)
    for k, (label, p) in enumerate(panels.items()):
        rgb = p if p.ndim == 3 else colormap(p)
        x = 14 + k * (size + 14)
        canvas.image.paste(Image.fromarray(rgb).resize((size, size), Image.BILINEAR), (x, top + 26))
        canvas.text((x + size / 2, top + 4), label, 13, anchor="mt")
    if title:
        canvas.text((canvas.image.width / 2, 8), title, 15, anchor="mt")
    return canvas.save(path)


def activation_maps(image: np.ndarray, activations: Mapping[str, np.ndarray], path: str | os.PathLike,
                    channel: int | None = None, title: str | None = None) -> str:
    """Panel (a) the image, then one panel per model: its activation map.

    ``activations[label]`` is one image's layer output (H, W, C). The panel shows
    channel ``channel``, or with None the mean over channels (how strongly the
    layer responds at each position), each normalised to [0, 1].
    """
    path = _prepare(path)
    panels = {"(a) image": to_uint8_image(image)}
    for k, (label, a) in enumerate(activations.items()):
        a = np.asarray(a)
        if a.ndim == 4 and a.shape[0] == 1:
            a = a[0]
        if a.ndim != 3:
            raise ValueError(f"activation {label!r} must be (H, W, C) for one image, got {a.shape}")
        panels[f"({chr(ord('b') + k)}) {label}"] = normalise(a.mean(axis=2) if channel is None else a[:, :, channel])
    return _tiles(panels, path, title)


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
    """The image, the heatmap and their blend side by side; ``title`` names the class explained
    and its probability (``gradcam_title``)."""
    path = _prepare(path)
    img = to_uint8_image(image)
    panels = {"image": img, "Grad-CAM": colormap(normalise(heatmap)), "overlay": overlay(img, heatmap)}
    return _tiles(panels, path, title)


def gradcam_title(layer: str, predicted: str, probability: float, true: str | None = None) -> str:
    """"block5_conv3: predicted mel (p = 0.83), true nv"."""
    return f"{layer}: predicted {predicted} (p = {probability:.2f})" + (f", true {true}" if true else "")


# ---- confusion matrix --------------------------------------------------------------

def confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: str | os.PathLike,
                     title: str = "Confusion matrix", normalize: bool = False) -> str:
    """Rows: true class, columns: predicted class; both labelled with the class names. Cell
    colour is the row-normalised rate (recall on the diagonal); the text is the count, or
    with ``normalize`` the rate."""
    path = _prepare(path)
    m = np.asarray(matrix)
    n = len(class_names)
    if m.ndim != 2 or m.shape != (n, n):
        raise ValueError(f"matrix must be ({n}, {n}) for the class names given, got {m.shape}")
    rates = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    widest = max(_font(12).getbbox(str(c))[2] for c in class_names)
    cell, left, top = 56, 46 + widest, 60 + widest
    canvas = _Canvas(left + cell * n + 30, top + cell * n + 60)
    d = canvas.draw
    for i in range(n):
        y = top + cell * i
        canvas.text((left - 6, y + cell / 2), str(class_names[i]), 12, anchor="rm")
        canvas.text((left + cell * i + cell / 2, top - 6), str(class_names[i]), 12, anchor="mb", rotate=True)
        for j in range(n):
            shade = int(255 * (1 - rates[i, j]))
            box = [left + cell * j, y, left + cell * (j + 1), y + cell]
            d.rectangle(box, fill=(shade, int(shade * 0.9 + 25), 255), outline=(160, 160, 160))
            text = f"{rates[i, j]:.2f}" if normalize else str(int(m[i, j]))
            canvas.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), text, 13, anchor="mm",
                        fill=(255, 255, 255) if rates[i, j] > 0.5 else (0, 0, 0))
    canvas.text((left + cell * n / 2, 8), title + (" (row-normalised)" if normalize else ""), 15, anchor="mt")
    canvas.text((left + cell * n / 2, 28), "predicted", 13, anchor="mt")
    canvas.text((12, top + cell * n / 2), "true", 13, rotate=True)
    canvas.text((left, top + cell * n + 10), "colour: share of the true class's images", 11)
    return canvas.save(path)
