"""Bad data-set inputs found by trying minicnn as a new user would (issue #17): each ends in a named error
or warning, before anything is trained or written."""

import os
import warnings

import numpy as np
import pytest
from PIL import Image

from minicnn import cli
from minicnn.data import DatasetError, ImageFolder


def _tree(root, layout: dict) -> str:
    """root/<class>/img<i>.png for {class: n_images}; returns root."""
    rng = np.random.default_rng(0)
    for cls, n in layout.items():
        os.makedirs(os.path.join(root, cls), exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(root, cls, f"img{i}.png"))
    return str(root)


# ---- --dataset folder: fewer than 2 classes, known layouts ---------------------------------------

@pytest.mark.parametrize("layout", [{"only": 5}, {}])
def test_folder_with_fewer_than_two_classes_is_refused(tmp_path, layout):
    root = _tree(tmp_path / "data", layout)
    os.makedirs(root, exist_ok=True)
    with pytest.raises(DatasetError, match=rf"{root} has {len(layout)} class sub-folder\(s\) "
                                           rf"{list(layout)!r}.*at least 2".replace("[", r"\[")):
        ImageFolder(root)


def test_single_nested_chest_xray_folder_says_which_reader(tmp_path):
    root = _tree(tmp_path, {"chest_xray": 2})
    with pytest.raises(DatasetError, match=r"1 class sub-folder.*--dataset xray"):
        ImageFolder(root)


@pytest.mark.parametrize("layout,extra,wanted", [
    ({"HAM10000_images_part_1": 2, "HAM10000_images_part_2": 2}, None, "--dataset ham10000"),
    ({"part_1": 2, "part_2": 2}, None, "--dataset ham10000"),
    ({"images_a": 2, "images_b": 2}, "HAM10000_metadata.csv", "--dataset ham10000"),
    ({"train": 2, "val": 1, "test": 2}, None, "--dataset xray"),
    ({"train": 2, "test": 2}, None, "--dataset xray"),         # Mendeley v2 has no val
])
def test_known_layouts_warn_naming_folder_and_reader(tmp_path, layout, extra, wanted):
    root = _tree(tmp_path / "d", layout)
    if extra:
        (tmp_path / "d" / extra).write_text("lesion_id,image_id,dx\n")
    with pytest.warns(UserWarning, match=rf"image folder {root}: .*{wanted}"):
        ds = ImageFolder(root)
    assert ds.class_names == sorted(layout)       # a warning, not a refusal: the user may mean it


def test_ordinary_class_folders_do_not_warn(tmp_path):
    root = _tree(tmp_path, {"cats": 2, "dogs": 2, "partial": 1, "training_set": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(ImageFolder(root)) == 6


def test_cli_refuses_a_one_class_folder(tmp_path, capsys):
    root = _tree(tmp_path / "data", {"nv": 6})
    out = tmp_path / "run"
    status = cli.main(["train", "--dataset", "folder", "--data", root, "--model", "tiny", "--preset", "random",
                       "--image-size", "32", "--epochs", "1", "--out", str(out), "--verbose", "0"])
    assert status == 2
    assert "1 class sub-folder(s) ['nv']" in capsys.readouterr().err
    assert not out.exists()
