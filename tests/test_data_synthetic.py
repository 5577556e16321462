"""The synthetic stand-ins carry the traps of the real layouts, and their classes are learnable."""

import csv
import os
import time

import numpy as np
from PIL import Image

from minicnn.data import HAM10000, ChestXRay, Lymphoma, MedMNIST, resize_array, split, synthetic


def nearest_centroid_accuracy(train_x, train_y, test_x, test_y):
    """Accuracy of a nearest-class-mean classifier on 8x8 thumbnails: a floor for what a CNN can do."""
    def feats(x):
        return np.stack([resize_array(im, 8, "stretch") for im in x]).reshape(len(x), -1) / 255.0
    ftr, fte = feats(train_x), feats(test_x)
    classes = np.unique(train_y)
    centroids = np.stack([ftr[train_y == c].mean(0) for c in classes])
    pred = classes[((fte[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)]
    return (pred == test_y).mean()


def test_ham_traps_and_speed(tmp_path):
    t = time.perf_counter()
    root = synthetic.ham10000(tmp_path, n_images=100, seed=0)
    assert time.perf_counter() - t < 10
    names = set(os.listdir(root))
    assert {"HAM10000_images_part_1", "HAM10000_images_part_2", "ham10000_images_part_1",
            "ham10000_images_part_2", "HAM10000_metadata.csv", "hmnist_8_8_L.csv", "hmnist_8_8_RGB.csv"} <= names
    assert sorted(os.listdir(tmp_path / "ham10000_images_part_1")) == sorted(
        os.listdir(tmp_path / "HAM10000_images_part_1"))
    with open(tmp_path / "HAM10000_metadata.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization", "dataset"]
    lesions = [r[0] for r in rows[1:]]
    assert max(lesions.count(x) for x in set(lesions)) >= 2
    assert all(r[0].startswith("HAM_") and len(r[0]) == 11 and r[1].startswith("ISIC_") for r in rows[1:])
    assert {r[2] for r in rows[1:]} == {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"}
    with Image.open(next(iter((tmp_path / "HAM10000_images_part_1").iterdir()))) as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (64, 48)


def test_ham_classes_are_learnable(tmp_path):
    ds = HAM10000(synthetic.ham10000(tmp_path, n_images=140, seed=1))
    train, test = split(ds, (0.7, 0.3), seed=0)
    acc = nearest_centroid_accuracy([train[i][0] for i in range(len(train))], train.labels,
                                    [test[i][0] for i in range(len(test))], test.labels)
    assert acc > 0.6          # chance (majority class) is about 0.5, random 1/7


def test_xray_traps(tmp_path):
    root = synthetic.chest_xray(tmp_path, n_train=20, n_val=4, n_test=8)
    tree = tmp_path / "chest_xray"
    assert sorted(os.listdir(tree)) == [".DS_Store", "chest_xray", "test", "train", "val"]
    assert (tmp_path / "__MACOSX").is_dir()
    names = os.listdir(tree / "train" / "PNEUMONIA") + os.listdir(tree / "train" / "NORMAL")
    assert any(n.startswith("._") for n in names) and ".DS_Store" in names
    assert any(n.startswith("person") and "_bacteria_" in n for n in names)
    assert any(n.startswith("IM-") for n in names) or any(n.startswith("NORMAL2-IM-") for n in names)
    ds = ChestXRay(root, None)
    train, test = ChestXRay(root, "train"), ChestXRay(root, "test")
    assert len(ds) == 32
    acc = nearest_centroid_accuracy([resize_array(train[i][0], 32) for i in range(len(train))], train.labels,
                                    [resize_array(test[i][0], 32) for i in range(len(test))], test.labels)
    assert acc >= 0.75


def test_medmnist_learnable(tmp_path):
    path = synthetic.medmnist(tmp_path / "pneumoniamnist.npz", "pneumoniamnist", n_train=60, n_val=4, n_test=30)
    tr, te = MedMNIST(path, "train"), MedMNIST(path, "test")
    acc = nearest_centroid_accuracy([tr[i][0] for i in range(len(tr))], tr.labels,
                                    [te[i][0] for i in range(len(te))], te.labels)
    assert acc >= 0.8


def test_lymphoma_traps_and_learnable(tmp_path):
    root = synthetic.lymphoma(tmp_path, n_per_class=(12, 12, 12))
    assert os.path.isfile(tmp_path / "lymphoma" / "CLL" / ".DS_Store")
    name = sorted(os.listdir(tmp_path / "lymphoma" / "FL"))[1]
    assert name.startswith("sj-") and name.endswith(".tif")
    ds = Lymphoma(root)
    with Image.open(ds.paths[0]) as im:
        assert im.format == "TIFF" and im.mode == "RGB"
    train, test = split(ds, (0.6, 0.4), seed=0)
    acc = nearest_centroid_accuracy([train[i][0] for i in range(len(train))], train.labels,
                                    [test[i][0] for i in range(len(test))], test.labels)
    assert acc > 0.6          # chance is 1/3
