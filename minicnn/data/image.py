"""Decoding and resizing single images to uint8 H x W x 3 arrays.

Resizing keeps the aspect ratio: the image is first brought to the target's
aspect ratio (a square for a square target), by

- ``fit="crop"``: cutting the centre out of the longer side, or
- ``fit="pad"``: adding black borders around the shorter side, or
- ``fit="stretch"``: nothing (the image is distorted),

then scaled with PIL's bilinear filter (which averages over the footprint of
each output pixel when shrinking, so there is no aliasing).  When that box is
at most 1% larger than the target (as with 600x450 JPEGs drafted to 300x225
for 224x224), its centre is cut out instead: a change of scale under 1%, for
about a third of the decoding time.

JPEG decoding uses PIL's draft mode: the decoder can produce the picture at
1/2, 1/4 or 1/8 of its size directly from the DCT coefficients, which is much
cheaper than decoding at full size and then shrinking.  We ask for the
smallest draft that still covers the target size, so quality is unchanged.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
from PIL import Image, ImageOps

from minicnn.data.errors import CorruptImageError, DatasetError, DatasetFileNotFoundError

FITS = ("crop", "pad", "stretch")
NEAR_SIZE = 1.01  # a box up to this factor larger than the target is cropped, not resampled
_ORIENTATION = 0x0112  # the EXIF tag saying how the stored picture must be turned to be upright


def as_size(image_size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """Normalise ``image_size`` (an int ``S`` or a pair ``(H, W)``) to ``(H, W)``."""
    if image_size is None:
        return None
    if isinstance(image_size, (int, np.integer)):
        size = (int(image_size), int(image_size))
    else:
        size = tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image_size must be a positive int or a pair (H, W), got {image_size!r}")
    return size


def check_fit(fit: str) -> str:
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    return fit


def _fit_box(width: int, height: int, size: tuple[int, int], fit: str) -> tuple[int, int, int, int]:
    """The box (left, top, right, bottom) of the source to scale onto ``size``.

    For "pad" the box reaches outside the picture; PIL fills that part with black.
    """
    out_h, out_w = size
    if fit == "stretch":
        return 0, 0, width, height
    target_ratio = out_w / out_h
    if fit == "crop":
        box_w, box_h = min(width, round(height * target_ratio)), min(height, round(width / target_ratio))
    else:
        box_w, box_h = max(width, round(height * target_ratio)), max(height, round(width / target_ratio))
    left, top = (width - box_w) // 2, (height - box_h) // 2
    return left, top, left + box_w, top + box_h


def fit_image(img: Image.Image, size: tuple[int, int] | None, fit: str = "crop") -> Image.Image:
    """Crop or pad ``img`` to the aspect ratio of ``size`` (H, W), then resize to it."""
    if size is None or (img.height, img.width) == size:
        return img
    left, top, right, bottom = _fit_box(img.width, img.height, size, fit)
    box_w, box_h = right - left, bottom - top
    if left >= 0 and top >= 0 and size[1] <= box_w <= size[1] * NEAR_SIZE and size[0] <= box_h <= size[0] * NEAR_SIZE:
        left, top = left + (box_w - size[1]) // 2, top + (box_h - size[0]) // 2
        return img.crop((left, top, left + size[1], top + size[0]))
    if fit == "pad" and (left < 0 or top < 0):
        canvas = Image.new(img.mode, (right - left, bottom - top))
        canvas.paste(img, (-left, -top))
        img, left, top, right, bottom = canvas, 0, 0, canvas.width, canvas.height
    return img.resize((size[1], size[0]), Image.Resampling.BILINEAR, box=(left, top, right, bottom))


def _draft_request(width: int, height: int, size: tuple[int, int], fit: str) -> tuple[int, int]:
    """The smallest full-picture size whose fitted box still covers ``size``."""
    left, top, right, bottom = _fit_box(width, height, size, fit)
    scale = max(size[1] / (right - left), size[0] / (bottom - top))
    return math.ceil(width * scale), math.ceil(height * scale)


def to_8bit(img: Image.Image) -> Image.Image:
    """Any PIL mode -> mode "L" (grey) or "RGB"; 16/32-bit grey is scaled so its maximum fits in 0..255."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        a = np.asarray(img, dtype=np.float64)
        top = a.max() if a.size and a.max() > 255 else 255.0
        return Image.fromarray(np.clip(a * (255.0 / top), 0, 255).astype(np.uint8))
    if img.mode in ("L", "RGB"):
        return img
    return img.convert("RGB")


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> uint8 H x W x 3 (grey repeated into three channels)."""
    img = to_8bit(img)
    if img.mode == "L":
        return np.repeat(np.asarray(img, dtype=np.uint8)[:, :, None], 3, axis=2)
    return np.asarray(img, dtype=np.uint8)


def decode_image(path: str | os.PathLike, image_size=None, fit: str = "crop") -> np.ndarray:
    """Read one image file as uint8 H x W x 3, resized to ``image_size`` if given.

    The EXIF orientation is applied (the picture comes out upright, as a viewer shows
    it). Raises DatasetFileNotFoundError if the file is missing and CorruptImageError
    (naming the file) if it cannot be decoded, is a decompression bomb (over twice
    PIL's pixel limit) or is truncated.
    """
    size = as_size(image_size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                turned = img.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8)   # stored a quarter turn off
                if size is not None and img.format == "JPEG":
                    want = (size[1], size[0]) if turned else size
                    img.draft(img.mode, _draft_request(img.width, img.height, want, fit))
                img.load()
                upright = ImageOps.exif_transpose(img)      # as a viewer shows it (camera / phone photos)
                return to_rgb_array(fit_image(to_8bit(upright), size, fit))
    except FileNotFoundError as err:
        raise DatasetFileNotFoundError(f"image file not found: {path}") from err
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        raise CorruptImageError(str(path), f"{type(err).__name__}: {err}") from err


def resize_array(image: np.ndarray, image_size=None, fit: str = "crop") -> np.ndarray:
    """Resize an in-memory image (H x W, H x W x 1 or H x W x 3 uint8) the same way."""
    size = as_size(image_size)
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise DatasetError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise DatasetError(f"expected an image of shape (H, W), (H, W, 1) or (H, W, 3), got {image.shape}")
    if size is None or image.shape[:2] == size:
        return np.ascontiguousarray(image)
    return to_rgb_array(fit_image(Image.fromarray(image), size, fit))
