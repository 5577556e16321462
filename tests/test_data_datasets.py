"""The readers on synthetic stand-ins with every trap of the real layouts, and their error messages."""

import csv
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from minicnn.data import (
    GTSRB,
    HAM10000,
    ChestXRay,
    DatasetError,
    DatasetFileNotFoundError,
    ImageFolder,
    Lymphoma,
    MedMNIST,
    synthetic,
)
from minicnn.data.chest_xray import parse_xray_name


@pytest.fixture(scope="module")
def ham_root(tmp_path_factory):
    return synthetic.ham10000(tmp_path_factory.mktemp("ham") / "HAM", n_images=40, seed=1)


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


# -- HAM10000 ----------------------------------------------------------------------------


def test_ham_reads_every_image_once_from_the_uppercase_folders(ham_root):
    ds = HAM10000(ham_root)
    rows = read_rows(os.path.join(ham_root, "HAM10000_metadata.csv"))
    assert rows[0][-1] == "dataset" and len(rows[0]) == 8          # the 8th column trap
    assert len(ds) == len(rows) - 1 == 40
    assert all(os.path.basename(os.path.dirname(p)).startswith("HAM10000_images_part_") for p in ds.paths)
    assert len(set(ds.paths)) == len(ds)
    assert ds.class_names == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    by_id = {r[1]: r for r in rows[1:]}
    for i in range(len(ds)):
        row = by_id[ds.image_ids[i]]
        assert ds.class_names[ds.labels[i]] == row[2] and ds.groups[i] == row[0]
        assert os.path.basename(ds.paths[i]) == row[1] + ".jpg"
    image, label = ds[0]
    assert image.dtype == np.uint8 and image.shape == (48, 64, 3) and label == ds.labels[0]
    assert HAM10000(ham_root, image_size=(20, 30))[-1][0].shape == (20, 30, 3)
    assert ds.metadata["localization"].shape == (40,)


def test_ham_lesions_have_several_images_and_one_dx(ham_root):
    ds = HAM10000(ham_root)
    groups, counts = np.unique(ds.groups, return_counts=True)
    assert counts.max() >= 2
    for g in groups[counts >= 2]:
        assert len(set(ds.labels[ds.groups == g])) == 1


def copy_with_csv(ham_root, tmp_path, edit):
    root = tmp_path / "copy"
    shutil.copytree(ham_root, root)
    path = root / "HAM10000_metadata.csv"
    rows = read_rows(path)
    rows = edit(rows)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return root


def test_ham_seven_column_file(ham_root, tmp_path):
    root = copy_with_csv(ham_root, tmp_path, lambda rows: [r[:7] for r in rows])
    assert len(HAM10000(root)) == 40


def test_ham_missing_column(ham_root, tmp_path):
    root = copy_with_csv(ham_root, tmp_path, lambda rows: [r[:5] + r[6:] for r in rows])  # drop sex
    with pytest.raises(DatasetError, match=r"HAM10000_metadata.csv.*missing required column.*'sex'"):
        HAM10000(root)


def test_ham_unknown_label(ham_root, tmp_path):
    def edit(rows):
        rows[3][2] = "melanoma"
        return rows
    root = copy_with_csv(ham_root, tmp_path, edit)
    with pytest.raises(DatasetError, match=r"line 4: unknown dx 'melanoma'"):
        HAM10000(root)


def test_ham_missing_image(ham_root, tmp_path):
    def edit(rows):
        rows[2][1] = "ISIC_9999999"
        return rows
    root = copy_with_csv(ham_root, tmp_path, edit)
    with pytest.raises(DatasetFileNotFoundError, match="ISIC_9999999.jpg") as err:
        HAM10000(root)
    assert isinstance(err.value, FileNotFoundError)


def test_ham_missing_metadata(tmp_path):
    with pytest.raises(DatasetFileNotFoundError, match="HAM10000_metadata.csv"):
        HAM10000(tmp_path)


def test_isic_onehot_ground_truth(ham_root, tmp_path):
    ds = HAM10000(ham_root)
    gt = tmp_path / "ISIC2018_Task3_GroundTruth.csv"
    with open(gt, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"])
        for image_id, label in zip(ds.image_ids[:10], ds.labels[:10]):
            order = ["mel", "nv", "bcc", "akiec", "bkl", "df", "vasc"]
            w.writerow([image_id] + [f"{float(ds.class_names[label] == c):.1f}" for c in order])
    isic = HAM10000(ham_root, metadata=gt)
    np.testing.assert_array_equal(isic.labels, ds.labels[:10])
    np.testing.assert_array_equal(isic.groups, ds.image_ids[:10])


# -- Kermany chest X-rays --------------------------------------------------------------------


@pytest.fixture(scope="module")
def xray_root(tmp_path_factory):
    return synthetic.chest_xray(tmp_path_factory.mktemp("cx"), n_train=30, n_val=4, n_test=12, seed=2)


def count_files(folder):
    return sum(1 for n in os.listdir(folder) if n.endswith(".jpeg") and not n.startswith("."))


@pytest.mark.parametrize("split,n", [("train", 30), ("val", 4), ("test", 12)])
def test_xray_reads_one_tree_and_skips_junk(xray_root, split, n):
    tree = os.path.join(xray_root, "chest_xray")
    assert os.path.isdir(os.path.join(tree, "chest_xray", split))          # the nested copy exists
    assert os.path.isdir(os.path.join(xray_root, "__MACOSX"))
    ds = ChestXRay(xray_root, split=split)
    assert len(ds) == n
    assert ds.class_names == ["NORMAL", "PNEUMONIA"]
    for label, cls in enumerate(ds.class_names):
        assert (ds.labels == label).sum() == count_files(os.path.join(tree, split, cls))
    assert all(not os.path.basename(p).startswith(".") for p in ds.paths)
    assert all(os.sep + "chest_xray" + os.sep + "chest_xray" + os.sep not in p for p in ds.paths)
    assert all(ds.class_names[y] in p for p, y in zip(ds.paths, ds.labels))


def test_xray_grey_and_rgb_files_become_rgb(xray_root):
    ds = ChestXRay(xray_root, "train")
    modes = {Image.open(p).mode for p in ds.paths}
    sizes = {Image.open(p).size for p in ds.paths}
    assert modes == {"L", "RGB"} and len(sizes) > 3
    for i in range(len(ds)):
        img, _ = ds[i]
        assert img.ndim == 3 and img.shape[2] == 3
        np.testing.assert_array_equal(img[..., 0], img[..., 2])   # grey in three channels
    resized = ChestXRay(xray_root, "train", image_size=32, fit="pad")
    assert {resized[i][0].shape for i in range(len(resized))} == {(32, 32, 3)}


def test_xray_root_can_be_the_tree_and_splits_merge(xray_root):
    inner = ChestXRay(os.path.join(xray_root, "chest_xray"), "test")
    assert len(inner) == 12
    merged = ChestXRay(xray_root, ("train", "val"))
    assert len(merged) == 34 and set(merged.split_of) == {"train", "val"}
    assert len(ChestXRay(xray_root, None)) == 46
    with pytest.raises(ValueError, match="split"):
        ChestXRay(xray_root, "validation")


def test_xray_patients(xray_root):
    ds = ChestXRay(xray_root, "train")
    assert (np.unique(ds.groups, return_counts=True)[1] > 1).any()
    assert parse_xray_name("person1_bacteria_1.jpeg", 1) == ("person1", "bacteria")
    assert parse_xray_name("person1_virus_6.jpeg", 1) == ("person1", "virus")
    assert parse_xray_name("IM-0115-0001.jpeg", 0) == ("IM-0115", "normal")
    assert parse_xray_name("NORMAL2-IM-1427-0001.jpeg", 0) == ("NORMAL2-IM-1427", "normal")
    assert parse_xray_name("VIRUS-1234567-0002.jpeg", 1) == ("1234567", "virus")
    assert parse_xray_name("odd.jpeg", 1) == ("odd", "unknown")


def test_mendeley_v2_and_v3(tmp_path):
    v2 = synthetic.chest_xray(tmp_path / "v2", variant="mendeley_v2", n_train=12, n_test=6)
    assert len(ChestXRay(v2, "train")) == 12
    with pytest.raises(DatasetFileNotFoundError, match=r"split 'val' not found.*\['train', 'test'\]"):
        ChestXRay(v2, "val")
    v3 = synthetic.chest_xray(tmp_path / "v3", variant="mendeley_v3", n_train=12, n_test=6)
    ds = ChestXRay(v3, "train")
    assert all(os.path.basename(p).split("-")[0] in ("NORMAL", "BACTERIA", "VIRUS") for p in ds.paths)
    assert set(ds.subtypes[ds.labels == 0]) == {"normal"}
    assert set(ds.subtypes[ds.labels == 1]) <= {"bacteria", "virus"}
    assert all(g.isdigit() for g in ds.groups)


def test_xray_errors(tmp_path):
    with pytest.raises(DatasetFileNotFoundError, match="train/ and test/"):
        ChestXRay(tmp_path)
    root = synthetic.chest_xray(tmp_path / "x", n_train=6, n_val=2, n_test=3, junk=False)
    normal = os.path.join(root, "chest_xray", "test", "NORMAL")
    for name in os.listdir(normal):
        os.remove(os.path.join(normal, name))
    with pytest.raises(DatasetError, match=r"test.NORMAL holds no images"):
        ChestXRay(root, "test")


# -- MedMNIST -------------------------------------------------------------------------------


def test_dermamnist(tmp_path):
    path = synthetic.medmnist(tmp_path / "dermamnist.npz", "dermamnist", size=28, n_train=21, n_val=7, n_test=14)
    ds = MedMNIST(path, "val")
    assert len(ds) == 7 and ds.class_names[0] == "akiec" and ds.class_names[-1] == "vasc"
    with np.load(path) as npz:
        np.testing.assert_array_equal(ds[3][0], npz["val_images"][3])
        np.testing.assert_array_equal(ds.labels, npz["val_labels"][:, 0])
    assert MedMNIST(path, "test", image_size=40)[0][0].shape == (40, 40, 3)
    assert len(MedMNIST(path, None)) == 42 and len(set(MedMNIST(path, None).groups)) == 42


def test_pneumoniamnist_without_channel_axis(tmp_path):
    path = synthetic.medmnist(tmp_path / "pneumoniamnist_64.npz", "pneumoniamnist", size=64, n_train=8,
                              n_val=4, n_test=4)
    with np.load(path) as npz:
        assert npz["train_images"].shape == (8, 64, 64) and npz["train_labels"].shape == (8, 1)
        raw = npz["train_images"][5]
    ds = MedMNIST(path, "train")
    assert ds.class_names == ["normal", "pneumonia"]
    img = ds[5][0]
    assert img.shape == (64, 64, 3)
    for c in range(3):
        np.testing.assert_array_equal(img[..., c], raw)


def test_medmnist_bad_files(tmp_path):
    np.savez(tmp_path / "dermamnist.npz", train_images=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"dermamnist.npz: missing key\(s\) \['train_labels'\]"):
        MedMNIST(tmp_path / "dermamnist.npz")
    np.savez(tmp_path / "pickled.npz", train_images=np.array([object()], dtype=object),
             train_labels=np.zeros((1, 1), np.uint8))
    with pytest.raises(DatasetError, match="pickled.npz"):
        MedMNIST(tmp_path / "pickled.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="junk.npz"):
        MedMNIST(tmp_path / "junk.npz")
    with pytest.raises(DatasetFileNotFoundError):
        MedMNIST(tmp_path / "absent.npz")


# -- folder trees ---------------------------------------------------------------------------


def test_image_folder(tmp_path):
    for cls, ext in (("b", ".PNG"), ("a", ".jpg")):
        os.makedirs(tmp_path / cls / "sub")
        Image.fromarray(np.zeros((5, 6, 3), np.uint8)).save(tmp_path / cls / f"x{ext}")
        Image.fromarray(np.zeros((5, 6), np.uint8)).save(tmp_path / cls / "sub" / f"y{ext}")
        (tmp_path / cls / ".DS_Store").write_bytes(b"junk")
        (tmp_path / cls / f"._x{ext}").write_bytes(b"junk")
        (tmp_path / cls / "notes.txt").write_text("no")
    os.makedirs(tmp_path / ".hidden")
    ds = ImageFolder(tmp_path)
    assert ds.class_names == ["a", "b"] and len(ds) == 4
    assert list(ds.labels) == [0, 0, 1, 1]
    assert [os.path.relpath(p, tmp_path) for p in ds.paths] == [
        os.path.join("a", "sub", "y.jpg"), os.path.join("a", "x.jpg"),
        os.path.join("b", "sub", "y.PNG"), os.path.join("b", "x.PNG")]
    assert ds[2][0].shape == (5, 6, 3)
    os.makedirs(tmp_path / "c")
    with pytest.raises(DatasetError, match=r"class folder .*c holds no images"):
        ImageFolder(tmp_path)


def test_lymphoma(tmp_path):
    root = synthetic.lymphoma(tmp_path, n_per_class=(4, 5, 3), images_per_case=2)
    ds = Lymphoma(root)
    assert ds.class_names == ["CLL", "FL", "MCL"] and len(ds) == 12
    assert all(p.endswith(".tif") for p in ds.paths)
    for p, g in zip(ds.paths, ds.groups):
        assert os.path.basename(p).startswith(g + "_")
    assert (np.unique(ds.groups, return_counts=True)[1] == 2).any()
    assert ds[0][0].shape == (60, 80, 3)
    assert len(Lymphoma(os.path.join(root, "lymphoma"))) == 12


def test_gtsrb(tmp_path):
    root = synthetic.gtsrb(tmp_path, n_classes=5, tracks=2, per_track=3, n_test_per_class=2)
    train = GTSRB(root, "train")
    assert len(train) == 30 and len(train.class_names) == 43
    assert np.bincount(train.labels).tolist() == [6] * 5
    assert len(set(train.groups)) == 10                         # 5 classes x 2 tracks
    test = GTSRB(root, "test", image_size=16, roi=True)
    assert len(test) == 10 and test[0][0].shape == (16, 16, 3)
    gt = os.path.join(root, "GTSRB", "Final_Training", "Images", "00002", "GT-00002.csv")
    with open(gt) as f:
        text = f.read()
    with open(gt, "w") as f:
        f.write(text.replace("ClassId", "Class"))
    with pytest.raises(DatasetError, match="GT-00002.csv: missing column"):
        GTSRB(root)


def test_gtsrb_roi_crops_the_box(tmp_path):
    root = synthetic.gtsrb(tmp_path, n_classes=2, tracks=1, per_track=2, n_test_per_class=1)
    full, roi = GTSRB(root), GTSRB(root, roi=True)
    x1, y1, x2, y2 = roi.boxes[1]
    np.testing.assert_array_equal(roi[1][0], full[1][0][y1:y2 + 1, x1:x2 + 1])
    assert roi.fingerprint() != full.fingerprint()


def test_ham_dataverse_tab_file(ham_root, tmp_path):
    root = tmp_path / "tab"
    shutil.copytree(ham_root, root)
    rows = read_rows(root / "HAM10000_metadata.csv")
    os.remove(root / "HAM10000_metadata.csv")
    with open(root / "HAM10000_metadata.tab", "w", newline="") as f:
        csv.writer(f, delimiter="\t").writerows(rows)
    ds, reference = HAM10000(root), HAM10000(ham_root)
    np.testing.assert_array_equal(ds.labels, reference.labels)
    np.testing.assert_array_equal(ds.groups, reference.groups)
