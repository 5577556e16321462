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
so a sample's augmentation depends only on (seed, epoch, index): a run can be
repeated or resumed exactly, whatever the thread timing or batch order.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

BORDERS = {"constant": 0, "edge": 1, "reflect": 2}


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
def warp_affine(src, matrix, lut, border, out):
    """out[i, j, c] = lut[bilinear(src, matrix @ (j - cx, i - cy, 1) + (cx, cy))[c]].

    One pass over the output pixels; ``border`` 0 constant (black), 1 edge, 2 reflect.
    The bilinear weights are computed once per pixel and shared by the channels.
    """
    h, w, channels = src.shape
    oh, ow = out.shape[0], out.shape[1]
    cxi, cyi = (w - 1) / 2.0, (h - 1) / 2.0
    cxo, cyo = (ow - 1) / 2.0, (oh - 1) / 2.0
    a00, a01, a02 = matrix[0, 0], matrix[0, 1], matrix[0, 2] + cxi
    a10, a11, a12 = matrix[1, 0], matrix[1, 1], matrix[1, 2] + cyi
    for i in range(oh):
        yo = i - cyo
        for j in range(ow):
            xo = j - cxo
            x = _source_coordinate(a00 * xo + a01 * yo + a02, w, border)
            y = _source_coordinate(a10 * xo + a11 * yo + a12, h, border)
            if x == -1.0 or y == -1.0:
                for c in range(channels):
                    out[i, j, c] = lut[0]
                continue
            x0, y0 = int(math.floor(x)), int(math.floor(y))
            fx, fy = x - x0, y - y0
            x1, y1 = x0 + 1, y0 + 1
            w00, w01 = (1.0 - fx) * (1.0 - fy), fx * (1.0 - fy)
            w10, w11 = (1.0 - fx) * fy, fx * fy
            if x0 < 0 or y0 < 0 or x1 >= w or y1 >= h:
                # at the border: drop neighbours outside (only "constant" keeps them black)
                if x0 < 0:
                    x0, w00, w10 = 0, 0.0, 0.0
                if y0 < 0:
                    y0, w00, w01 = 0, 0.0, 0.0
                if x1 >= w:
                    x1, w01, w11 = w - 1, 0.0, 0.0
                if y1 >= h:
                    y1, w10, w11 = h - 1, 0.0, 0.0
            for c in range(channels):
                v = (w00 * src[y0, x0, c] + w01 * src[y0, x1, c]
                     + w10 * src[y1, x0, c] + w11 * src[y1, x1, c])
                out[i, j, c] = lut[int(v + 0.5)]


# -- transforms: geometric ones return a 3x3 matrix (output -> source, centred coordinates) ----

def _scale(sx, sy):
    return np.array([[sx, 0.0, 0.0], [0.0, sy, 0.0], [0.0, 0.0, 1.0]])


def _rotation(degrees):
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _shift(tx, ty):
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


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

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
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
                values = t.values(rng, values, float(image[::4, ::4].mean()))
        if matrix is None and values is None:
            return image.copy()
        lut = (np.arange(256, dtype=np.uint8) if values is None
               else np.clip(np.rint(values), 0, 255).astype(np.uint8))
        if matrix is None:
            return lut[image]
        out = np.empty_like(image)
        warp_affine(np.ascontiguousarray(image), np.ascontiguousarray(matrix), lut, BORDERS[self.border], out)
        return out

    def __repr__(self) -> str:
        return f"Augment({self.transforms!r}, seed={self.seed}, border={self.border!r})"
