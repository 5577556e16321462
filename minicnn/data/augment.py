"""Seeded on-the-fly augmentation of uint8 H x W x 3 images.

Every geometric transform is an affine map, so a whole chain (flips, 90-degree
turns, small rotations, random resized crop, translation) is multiplied into
one 3x3 matrix A and the image is resampled once:

    out[i, j] = bilinear(src, A @ (j - cx, i - cy, 1) + (cx, cy))

(coordinates centred on the image).  Composition: if T1 is applied first and
T2 second, an output pixel of T2 reads T1's output at A2 p, which reads the
source at A1 A2 p, so A = A1 @ A2 @ ... in the order given.  Colour transforms
(brightness, contrast) map each value v -> f(v) and are folded into one
256-entry lookup table applied in the same pass.  The resampling loop is a
Numba kernel that releases the GIL, so loader threads run it in parallel.

Randomness: ``augment(image, rng)`` draws from the numpy Generator given;
``augment.apply(image, epoch, index)`` uses ``default_rng([seed, epoch, index])``,
and the DataLoader uses ``default_rng([augment.seed, loader.seed, epoch, index])``,
so a sample's augmentation depends only on the seeds, the epoch and its index:
a run can be repeated or resumed exactly, whatever the thread timing or order.
The output has the input's size (on a non-square image a 90-degree turn is
cut / filled at the borders).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

BORDERS = {"constant": 0, "edge": 1, "reflect": 2}
_IDENTITY_LUT = np.arange(256, dtype=np.uint8)


@njit(nogil=True, cache=True)
def _source_coordinate(x, size, border):
    """Where a sample at (possibly outside) coordinate x reads from; -1.0 means 'black'."""
    if 0.0 <= x <= size - 1:
        return x
    if border == 0:
        return -1.0 if (x < -1.0 or x > size) else x  # within one pixel: blend with black
    if border == 1 or size == 1:
        return min(max(x, 0.0), size - 1.0)
    period = 2.0 * (size - 1)
    x = abs(x) % period
    return period - x if x > size - 1 else x


@njit(nogil=True, cache=True)
def _border_pixel(src, x, y, lut, border, out, i, j):
    """out[i, j] for a source point (x, y) within one pixel of, or outside, the picture."""
    h, w, channels = src.shape
    x = _source_coordinate(x, w, border)
    y = _source_coordinate(y, h, border)
    if x == -1.0 or y == -1.0:
        for c in range(channels):
            out[i, j, c] = lut[0]
        return
    x0, y0 = math.floor(x), math.floor(y)
    x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
    fx, fy = x - x0, y - y0
    w00, w01 = (1.0 - fx) * (1.0 - fy), fx * (1.0 - fy)
    w10, w11 = (1.0 - fx) * fy, fx * fy
    if x0 < 0:        # only "constant" gets here: the outside neighbour is black
        x0, w00, w10 = 0, 0.0, 0.0
    if y0 < 0:
        y0, w00, w01 = 0, 0.0, 0.0
    if x0 == w - 1 and fx > 0.0:
        w01, w11 = 0.0, 0.0
    if y0 == h - 1 and fy > 0.0:
        w10, w11 = 0.0, 0.0
    for c in range(channels):
        v = w00 * src[y0, x0, c] + w01 * src[y0, x1, c] + w10 * src[y1, x0, c] + w11 * src[y1, x1, c]
        out[i, j, c] = lut[int(v + 0.5)]


@njit(nogil=True, cache=True)
def warp_affine(src, matrix, lut, border, out):
    """out[i, j, c] = lut[bilinear(src, matrix @ (j - cx, i - cy, 1) + (cx, cy))[c]].

    One pass over the output pixels, one thread; ``border`` 0 constant (black),
    1 edge, 2 reflect.  Along a row the source point moves by (a00, a10) per
    pixel, so it is updated by addition.  Most pixels read four neighbours
    inside the picture: that case indexes the flat C-order arrays directly;
    only pixels near or beyond the edges go through the border rule.
    """
    h, w, channels = src.shape
    oh, ow = out.shape[0], out.shape[1]
    flat_src, flat_out = src.reshape(-1), out.reshape(-1)
    row = w * channels
    cxo, cyo = (ow - 1) / 2.0, (oh - 1) / 2.0
    a00, a01, a10, a11 = matrix[0, 0], matrix[0, 1], matrix[1, 0], matrix[1, 1]
    # source point of output pixel (i, 0): A @ (-cxo, i - cyo) + t + (cxi, cyi)
    b0 = matrix[0, 2] + (w - 1) / 2.0 - a00 * cxo
    b1 = matrix[1, 2] + (h - 1) / 2.0 - a10 * cxo
    for i in range(oh):
        x = a01 * (i - cyo) + b0
        y = a11 * (i - cyo) + b1
        for j in range(ow):
            if 0.0 <= x < w - 1 and 0.0 <= y < h - 1:
                x0, y0 = int(x), int(y)
                fx, fy = x - x0, y - y0
                w00, w01 = (1.0 - fx) * (1.0 - fy), fx * (1.0 - fy)
                w10, w11 = (1.0 - fx) * fy, fx * fy
                p = y0 * row + x0 * channels
                q = (i * ow + j) * channels
                for c in range(channels):
                    v = (w00 * flat_src[p + c] + w01 * flat_src[p + channels + c]
                         + w10 * flat_src[p + row + c] + w11 * flat_src[p + row + channels + c])
                    flat_out[q + c] = lut[int(v + 0.5)]
            else:
                _border_pixel(src, x, y, lut, border, out, i, j)
            x += a00
            y += a10


# -- transforms: geometric ones return a 3x3 matrix (output -> source, centred coordinates) ----

def _scale(sx, sy):
    return np.array([[sx, 0.0, 0.0], [0.0, sy, 0.0], [0.0, 0.0, 1.0]])


def _rotation(degrees):
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _shift(tx, ty):
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def _exact_view(image: np.ndarray, matrix: np.ndarray | None) -> np.ndarray | None:
    """``image`` moved by ``matrix`` as a NumPy view, when that is a flip / quarter turn (else None).

    With A = [[a, b], [c, d]] and no shift, the output at (x, y) reads the source
    at (a x + b y, c x + d y); a = +-1, d = +-1 is a flip of each axis, b, c = +-1
    a transpose followed by flips (only for square images, whose shape it keeps).
    """
    if matrix is None:
        return image
    a, b, c, d = matrix[0, 0], matrix[0, 1], matrix[1, 0], matrix[1, 1]
    if matrix[0, 2] != 0 or matrix[1, 2] != 0:
        return None
    if b == 0 and c == 0 and abs(a) == 1 and abs(d) == 1:
        return image[:: int(d), :: int(a)]
    if a == 0 and d == 0 and abs(b) == 1 and abs(c) == 1 and image.shape[0] == image.shape[1]:
        return image.transpose(1, 0, 2)[:: int(b), :: int(c)]
    return None


class Transform:
    """A random transform; ``geometric`` ones give a matrix, the others a value map."""

    geometric = True

    def matrix(self, rng: np.random.Generator, h: int, w: int) -> np.ndarray | None:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class HorizontalFlip(Transform):
    """Mirror left-right with probability p: x -> -x."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def matrix(self, rng, h, w):
        return _scale(-1.0, 1.0) if rng.random() < self.p else None


class VerticalFlip(Transform):
    """Mirror top-bottom with probability p: y -> -y."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def matrix(self, rng, h, w):
        return _scale(1.0, -1.0) if rng.random() < self.p else None


class Rotate90(Transform):
    """Turn by k * 90 degrees, k uniform in {0, 1, 2, 3} (exact on square images)."""

    def matrix(self, rng, h, w):
        k = int(rng.integers(4))
        return _rotation(90.0 * k).round() if k else None


class Rotate(Transform):
    """Rotate by an angle uniform in [-degrees, degrees]."""

    def __init__(self, degrees: float = 15.0):
        self.degrees = degrees

    def matrix(self, rng, h, w):
        return _rotation(rng.uniform(-self.degrees, self.degrees))


class RandomResizedCrop(Transform):
    """Crop a random box (area fraction in ``scale``, aspect in ``ratio``) and stretch it to the image.

    Box width w' = W sqrt(s r), height h' = H sqrt(s / r) (clipped to the
    image), centre uniform over the positions where it fits; the map is
    x_src = (w'/W) x_out + offset.
    """

    def __init__(self, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3)):
        self.scale, self.ratio = tuple(scale), tuple(ratio)

    def matrix(self, rng, h, w):
        s = rng.uniform(*self.scale)
        r = math.exp(rng.uniform(math.log(self.ratio[0]), math.log(self.ratio[1])))
        fw, fh = min(1.0, math.sqrt(s * r)), min(1.0, math.sqrt(s / r))
        ox = rng.uniform(-1, 1) * (1 - fw) * (w - 1) / 2
        oy = rng.uniform(-1, 1) * (1 - fh) * (h - 1) / 2
        return _shift(ox, oy) @ _scale(fw, fh)


class Translate(Transform):
    """Shift by up to ``fraction`` of the width / height in each direction."""

    def __init__(self, fraction: float = 0.1):
        self.fraction = fraction

    def matrix(self, rng, h, w):
        tx, ty = rng.uniform(-self.fraction, self.fraction, size=2)
        return _shift(-tx * w, -ty * h)


class ColorJitter(Transform):
    """Brightness factor b in [1-brightness, 1+brightness], contrast c in [1-contrast, 1+contrast].

    v -> clip(c (b v - b m) + b m) with m the image mean: brightness scales,
    contrast stretches about the (brightened) mean.  Done as a lookup table.
    """

    geometric = False

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2):
        self.brightness, self.contrast = brightness, contrast

    def values(self, rng, values: np.ndarray, mean: float) -> np.ndarray:
        b = rng.uniform(1 - self.brightness, 1 + self.brightness)
        c = rng.uniform(1 - self.contrast, 1 + self.contrast)
        return c * (b * values - b * mean) + b * mean


class Augment:
    """A chain of transforms applied in order, e.g.

    ``Augment([HorizontalFlip(), Rotate90(), Rotate(10), ColorJitter()], seed=0)``.
    ``border`` says how pixels from outside the image are filled: "reflect", "edge" or "constant".
    """

    def __init__(self, transforms=(), seed: int = 0, border: str = "reflect"):
        self.transforms = list(transforms)
        if border not in BORDERS:
            raise ValueError(f"border must be one of {list(BORDERS)}, got {border!r}")
        self.seed, self.border = seed, border

    @classmethod
    def standard(cls, seed: int = 0, flips: bool = True, rot90: bool = True, degrees: float = 15.0,
                 crop_scale=(0.7, 1.0), translate: float = 0.05, brightness: float = 0.15,
                 contrast: float = 0.15, border: str = "reflect") -> Augment:
        """A sensible default for orientation-free medical pictures (dermoscopy, histology)."""
        t: list[Transform] = []
        if flips:
            t += [HorizontalFlip(), VerticalFlip()]
        if rot90:
            t.append(Rotate90())
        if degrees:
            t.append(Rotate(degrees))
        if crop_scale:
            t.append(RandomResizedCrop(crop_scale))
        if translate:
            t.append(Translate(translate))
        if brightness or contrast:
            t.append(ColorJitter(brightness, contrast))
        return cls(t, seed=seed, border=border)

    def rng(self, epoch: int, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, index])

    def apply(self, image: np.ndarray, epoch: int, index: int) -> np.ndarray:
        """Augment ``image`` as sample ``index`` of epoch ``epoch`` (a pure function of them)."""
        return self(image, self.rng(epoch, index))

    def __call__(self, image: np.ndarray, rng: np.random.Generator, out: np.ndarray | None = None) -> np.ndarray:
        """The augmented copy of ``image`` (written into ``out`` if given); ``image`` is not changed."""
        if image.dtype != np.uint8 or image.ndim != 3:
            raise ValueError(f"Augment expects a uint8 H x W x C image, got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        matrix, values = None, None
        for t in self.transforms:
            if t.geometric:
                m = t.matrix(rng, h, w)
                if m is not None:
                    matrix = m if matrix is None else matrix @ m
            else:
                if values is None:
                    values = np.arange(256, dtype=np.float64)
                sample = image[::4, ::4]
                values = t.values(rng, values, int(sample.sum()) / sample.size)
        if out is None:
            out = np.empty(image.shape, np.uint8)
        elif out.shape != image.shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous uint8 array of shape {image.shape}")
        lut = (_IDENTITY_LUT if values is None
               else np.minimum(np.maximum(np.rint(values), 0), 255).astype(np.uint8))
        exact = _exact_view(image, matrix)
        if exact is not None:           # flips and quarter turns only: a view, no resampling
            np.take(lut, exact, out=out)
        else:
            warp_affine(np.ascontiguousarray(image), np.ascontiguousarray(matrix), lut, BORDERS[self.border], out)
        return out

    def __repr__(self) -> str:
        return f"Augment({self.transforms!r}, seed={self.seed}, border={self.border!r})"
