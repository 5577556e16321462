"""Decoding and the crop / pad / stretch resize rule, checked against plain NumPy expectations."""

import numpy as np
import pytest
from PIL import Image

from minicnn.data import CorruptImageError, DatasetFileNotFoundError, decode_image, resize_array
from minicnn.data.image import as_size


def bands(w, h):
    """A picture whose left, middle and right thirds are pure red, green, blue."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 3, 0] = 255
    img[:, w // 3: 2 * w // 3, 1] = 255
    img[:, 2 * w // 3:, 2] = 255
    return img


def test_as_size():
    assert as_size(5) == (5, 5) and as_size((3, 4)) == (3, 4) and as_size(None) is None
    with pytest.raises(ValueError):
        as_size((0, 3))


def test_crop_keeps_the_centre():
    img = bands(90, 30)                       # 3:1, crop to the centre 30x30 = the green band
    out = resize_array(img, 10, fit="crop")
    assert out.shape == (10, 10, 3)
    # the bilinear filter may blend one pixel at the box edges; the inside is pure green
    np.testing.assert_array_equal(out[:, 1:-1, 1], 255)
    np.testing.assert_array_equal(out[:, 1:-1, 0], 0)
    np.testing.assert_array_equal(out[:, 1:-1, 2], 0)
    assert out[..., 1].mean() > 245


def test_pad_keeps_everything_with_black_borders():
    img = np.full((30, 90, 3), 200, np.uint8)   # pad to 90x90: black bands of 30 above and below
    out = resize_array(img, 9, fit="pad").astype(int)
    assert out.shape == (9, 9, 3)
    np.testing.assert_array_equal(out[:2], 0)
    np.testing.assert_array_equal(out[7:], 0)
    np.testing.assert_array_equal(out[4], 200)
    assert abs(out.mean() - 200 / 3) < 3


def test_stretch_and_non_square_target():
    img = bands(90, 30)
    out = resize_array(img, (6, 9), fit="stretch")
    assert out.shape == (6, 9, 3)
    # nine columns, three per band: the middle column of each band is pure
    np.testing.assert_array_equal(out[:, 1], [[255, 0, 0]] * 6)
    np.testing.assert_array_equal(out[:, 4], [[0, 255, 0]] * 6)
    np.testing.assert_array_equal(out[:, 7], [[0, 0, 255]] * 6)


def test_grey_and_channel_axis_become_rgb():
    g = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for x in (g, g[:, :, None]):
        out = resize_array(x)
        assert out.shape == (3, 4, 3)
        for c in range(3):
            np.testing.assert_array_equal(out[..., c], g)
    with pytest.raises(ValueError, match="uint8"):
        resize_array(g.astype(np.float32))


@pytest.mark.parametrize("fit", ["crop", "pad", "stretch"])
def test_jpeg_draft_decode_close_to_full_decode(tmp_path, fit):
    rng = np.random.default_rng(0)
    img = np.clip(bands(600, 450).astype(int) // 2 + rng.integers(0, 60, (450, 600, 3)), 0, 255).astype(np.uint8)
    path = tmp_path / "x.jpg"
    Image.fromarray(img).save(path, quality=95)
    fast = decode_image(path, 64, fit).astype(int)
    with Image.open(path) as full:       # reference: full-size decode, then the same resize
        reference = resize_array(np.asarray(full.convert("RGB")), 64, fit).astype(int)
    assert fast.shape == (64, 64, 3)
    assert np.abs(fast - reference).mean() < 4


def test_grey_jpeg_and_16_bit_png(tmp_path):
    Image.fromarray(np.full((20, 30), 77, np.uint8)).save(tmp_path / "g.jpeg")
    out = decode_image(tmp_path / "g.jpeg")
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8 and abs(int(out.mean()) - 77) <= 1
    Image.fromarray(np.full((4, 5), 60000, np.uint16)).save(tmp_path / "d.png")
    assert decode_image(tmp_path / "d.png").shape == (4, 5, 3)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(DatasetFileNotFoundError, match="nope.jpg"):
        decode_image(tmp_path / "nope.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(CorruptImageError, match="bad.jpg"):
        decode_image(bad)
    Image.fromarray(bands(60, 40)).save(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptImageError, match="t.jpg"):
        decode_image(tmp_path / "t.jpg", 16)


def test_a_box_within_one_percent_is_cropped_not_resampled():
    img = np.random.default_rng(0).integers(0, 256, (225, 300, 3), dtype=np.uint8)
    out = resize_array(img, 224, fit="crop")          # box 225x225 -> centre 224x224
    np.testing.assert_array_equal(out, img[0:224, 37:261])   # box x = 37..261, 1 px spare
    far = resize_array(img, 200, fit="crop")            # 12% larger: resampled
    assert far.shape == (200, 200, 3) and not np.array_equal(far, img[12:212, 50:250])
