"""Bad data-set inputs found by trying minicnn as a new user would (issue #17): each ends in a named error
or warning, before anything is trained or written."""

import os
import warnings

import numpy as np
import pytest
from PIL import Image

from minicnn import cli
from minicnn.data import ArrayDataset, DatasetError, ImageFolder, split


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


# ---- a data set too small for the split: refused before training, --out untouched ------------------

def _array_ds(labels, groups=None):
    labels = np.asarray(labels)
    return ArrayDataset(np.zeros((len(labels), 2, 2, 3), np.uint8), labels, ["a", "b"], groups=groups)


# Midpoint rule by hand. By image: class a's two images have midpoints 1/4 and 3/4, b's one 1/2, so
# (0.6, 0.2, 0.2) fills train and val and leaves test empty; (0.8, 0.2) puts all three in train.
# By group: g0 (both a's) and g1 (the b) each have midpoint 1/2, so val and test stay empty.
@pytest.mark.parametrize("fractions,by,empty", [((0.6, 0.2, 0.2), "image", "test"),
                                                ((0.6, 0.2, 0.2), "group", "val"),
                                                ((0.8, 0.2), "image", "val")])
def test_split_refuses_an_empty_part(fractions, by, empty):
    ds = _array_ds([0, 1, 0], groups=["g0", "g1", "g0"])
    with pytest.raises(DatasetError, match=rf"too small for the split .* by {by}: the {empty} part would be empty"):
        split(ds, fractions, by=by)


def test_split_refuses_a_class_missing_from_training():
    # the one image of class b has midpoint 1/2, past the train bound 0.34: it goes to val
    labels = [0] * 40 + [1]
    with pytest.raises(DatasetError, match=r"the train part has no image of class\(es\) \['b'\]"):
        split(_array_ds(labels), (0.34, 0.33, 0.33), by="image")


def test_split_warns_when_a_class_misses_val_or_test():
    labels = [0] * 20 + [1] * 2                     # two b images cannot fill train, val and test
    with pytest.warns(UserWarning, match=r"part has no image of class\(es\) \['b'\]"):
        parts = split(_array_ds(labels), (0.6, 0.2, 0.2), by="image")
    assert sorted(np.concatenate([p.indices for p in parts]).tolist()) == list(range(22))


def test_a_zero_fraction_part_may_be_empty():
    parts = split(_array_ds([0, 1, 0, 1]), (0.5, 0.5, 0.0), by="image")
    assert [len(p) for p in parts] == [2, 2, 0]


@pytest.mark.parametrize("out_exists", [False, True])
def test_cli_refuses_three_images_before_writing_into_out(tmp_path, capsys, out_exists):
    root = _tree(tmp_path / "data", {"a": 2, "b": 1})
    out = tmp_path / "run"
    if out_exists:
        out.mkdir()
    status = cli.main(["train", "--dataset", "folder", "--data", root, "--model", "tiny", "--preset", "random",
                       "--image-size", "32", "--epochs", "1", "--out", str(out), "--verbose", "0"])
    assert status == 2
    err = capsys.readouterr().err
    # each file its own group: a's at midpoints 1/4 and 3/4 (train, val), b's at 1/2 (train): no test
    assert f"{root} ImageFolder(3 images" in err and "the test part would be empty" in err
    assert (sorted(os.listdir(out)) == []) if out_exists else not out.exists()
