"""Augmentation: exact flips and turns, bilinear warps against scipy.ndimage, colour maps, determinism."""

import math

import numpy as np
import pytest
from scipy import ndimage

from minicnn.data import (
    Augment,
    ColorJitter,
    HorizontalFlip,
    RandomResizedCrop,
    Rotate,
    Rotate90,
    Translate,
    VerticalFlip,
)


@pytest.fixture
def img():
    return np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)


def test_flips_are_exact(img):
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(Augment([HorizontalFlip(p=1)])(img, rng), img[:, ::-1])
    np.testing.assert_array_equal(Augment([VerticalFlip(p=1)])(img, rng), img[::-1])
    np.testing.assert_array_equal(Augment([HorizontalFlip(p=0)])(img, rng), img)


def test_flip_then_turn_is_numpy_rot90_of_flip(img):
    seen = set()
    for s in range(12):
        draw = np.random.default_rng(s)
        draw.random()
        k = int(draw.integers(4))
        seen.add(k)
        out = Augment([HorizontalFlip(p=1), Rotate90()])(img, np.random.default_rng(s))
        np.testing.assert_array_equal(out, np.rot90(img[:, ::-1], k))
    assert seen == {0, 1, 2, 3}


def scipy_reference(img, matrix, mode):
    """Resample with scipy: out[i, j] = bilinear(img, A (j - c, i - c) + c), round half up."""
    h, w = img.shape[:2]
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    ii, jj = np.mgrid[0:h, 0:w].astype(float)
    pts = np.stack([jj - c[0], ii - c[1]])
    src = np.einsum("ab,bhw->ahw", matrix[:2, :2], pts) + (matrix[:2, 2] + c)[:, None, None]
    out = np.empty(img.shape)
    for ch in range(3):
        out[..., ch] = ndimage.map_coordinates(img[..., ch].astype(float), [src[1], src[0]], order=1,
                                               mode=mode, cval=0.0)
    return np.floor(out + 0.5).astype(int)


@pytest.mark.parametrize("border,mode", [("reflect", "mirror"), ("edge", "nearest"),
                                         ("constant", "grid-constant")])
@pytest.mark.parametrize("transform", [Rotate(30), Translate(0.2), RandomResizedCrop((0.3, 0.6))])
def test_warps_match_scipy(img, border, mode, transform):
    for s in range(4):
        matrix = transform.matrix(np.random.default_rng(s), *img.shape[:2])
        out = Augment([transform], border=border)(img, np.random.default_rng(s)).astype(int)
        ref = scipy_reference(img, matrix, mode)
        diff = np.abs(out - ref)
        assert diff.max() <= 1 and (diff > 0).mean() < 0.02     # only ties of the rounding differ


def test_rotation_angle_and_crop_box():
    rng = np.random.default_rng(1)
    m = Rotate(10).matrix(rng, 20, 20)
    assert abs(math.degrees(math.atan2(m[1, 0], m[0, 0]))) <= 10
    for s in range(20):
        m = RandomResizedCrop((0.2, 0.5)).matrix(np.random.default_rng(s), 30, 40)
        corners = np.array([[-19.5, -14.5, 1], [19.5, 14.5, 1]]) @ m.T
        assert (np.abs(corners[:, 0]) <= 19.5 + 1e-9).all() and (np.abs(corners[:, 1]) <= 14.5 + 1e-9).all()
        fw, fh = abs(m[0, 0]), abs(m[1, 1])
        assert 0.2 - 1e-9 <= fw * fh or min(fw, fh) == 1.0


def test_identity_crop_is_exact(img):
    out = Augment([RandomResizedCrop(scale=(1, 1), ratio=(1, 1))])(img, np.random.default_rng(0))
    np.testing.assert_array_equal(out, img)


def test_color_jitter_formula(img):
    draw = np.random.default_rng(7)
    b, c = draw.uniform(0.7, 1.3), draw.uniform(0.6, 1.4)
    m = img[::4, ::4].mean()
    v = np.arange(256.0)
    lut = np.clip(np.rint(c * (b * v - b * m) + b * m), 0, 255).astype(np.uint8)
    out = Augment([ColorJitter(0.3, 0.4)])(img, np.random.default_rng(7))
    np.testing.assert_array_equal(out, lut[img])


def test_geometry_and_colour_in_one_pass(img):
    aug = Augment([HorizontalFlip(p=1), ColorJitter(0.3, 0.0)])
    draw = np.random.default_rng(3)
    draw.random()
    b = draw.uniform(0.7, 1.3)
    # contrast 0: c = 1, so v -> b v
    lut = np.clip(np.rint(b * np.arange(256.0)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(aug(img, np.random.default_rng(3)), lut[img[:, ::-1]])


def test_determinism_and_variety(img):
    aug = Augment.standard(seed=4)
    a = aug.apply(img, epoch=2, index=5)
    np.testing.assert_array_equal(a, aug.apply(img, epoch=2, index=5))
    assert not np.array_equal(a, aug.apply(img, epoch=3, index=5))
    assert not np.array_equal(a, aug.apply(img, epoch=2, index=6))
    assert not np.array_equal(a, Augment.standard(seed=5).apply(img, epoch=2, index=5))
    assert a.dtype == np.uint8 and a.shape == img.shape


def test_input_checks(img):
    with pytest.raises(ValueError, match="uint8"):
        Augment([HorizontalFlip()])(img.astype(float), np.random.default_rng(0))
    with pytest.raises(ValueError, match="border"):
        Augment(border="wrap")
    before = img.copy()
    Augment.standard().apply(img, 0, 0)
    np.testing.assert_array_equal(img, before)


def test_exact_fast_path_agrees_with_the_kernel(img):
    from minicnn.data.augment import _exact_view, warp_affine
    lut = np.arange(256, dtype=np.uint8)
    for k in range(4):
        for flip in (1.0, -1.0):
            t = math.radians(90 * k)
            m = np.array([[round(math.cos(t)) * flip, -round(math.sin(t)), 0.0],
                          [round(math.sin(t)) * flip, round(math.cos(t)), 0.0], [0.0, 0.0, 1.0]])
            view = _exact_view(img, m)
            assert view is not None
            slow = np.empty_like(img)
            warp_affine(img, m, lut, 2, slow)
            np.testing.assert_array_equal(view, slow)
    assert _exact_view(img, np.array([[1.0, 0, 0.5], [0, 1, 0], [0, 0, 1]])) is None
    assert _exact_view(img[:, :10], np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])) is None
