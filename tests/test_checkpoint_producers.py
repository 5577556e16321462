"""Every producer of checkpoints -- fit() with ModelCheckpoint, `minicnn train`, the X-ray example and
the thesis runner -- writes files that `minicnn evaluate` scores with no flags, to the metrics of the
run that wrote them (the HAM10000 example: tests/test_checkpoint_info.py); what `train` prints and
writes (summary, closing block, --keep, warm start from our own checkpoint, defaults in --help)."""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import re

import h5py
import numpy as np
import pytest

from minicnn.cli import main

HAM = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def evaluated(path: str, capsys, *flags) -> tuple[float, float]:
    """(accuracy, macro F1) that `minicnn evaluate path` prints."""
    capsys.readouterr()
    assert main(["evaluate", path, *flags]) == 0
    out = capsys.readouterr().out
    accuracy = float(re.search(r"images, accuracy (\d\.\d{3})", out).group(1))
    return accuracy, float(re.search(r"^macro avg\s+(\d\.\d{3})", out, re.MULTILINE).group(1))


def train(argv: list[str]) -> tuple[int, str]:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = main(["train", "--model", "tiny", "--image-size", "32", "--batch-size", "16", "--optimizer", "adam",
                   "--lr", "0.003", "--verbose", "0", *argv])
    return rc, printed.getvalue()


@pytest.mark.parametrize("given", [True, False])
def test_fit_with_model_checkpoint_evaluates_with_no_flags(tmp_path, capsys, given):
    """A user's own fit() on a DataLoader, with ModelCheckpoint(info=run_info(...)) or with nothing
    but what fit() tells from the DataLoader (classes, scaling, data set): the CLI agrees."""
    from minicnn.data import HAM10000, DataLoader, save_split, split, synthetic
    from minicnn.experiments.models import tiny_vgg
    from minicnn.train import ModelCheckpoint, evaluate, fit
    from minicnn.train.info import run_info

    root = str(tmp_path / "ham")
    synthetic.ham10000(root, n_images=70, image_size=(40, 32), min_per_class=6, kaggle_duplicates=False)
    ds = HAM10000(root, image_size=32)
    parts = split(ds, (0.6, 0.2, 0.2), by="image", seed=0)
    os.makedirs(tmp_path / "run")
    save_split(str(tmp_path / "run" / "split.csv"), parts)
    model = tiny_vgg((32, 32, 3), 7)
    best = str(tmp_path / "run" / "best.h5")
    info = run_info("ham10000", root, ds.class_names, 32, "torch", "tiny", parts[2]) if given else None

    def loader(part, shuffle=False):
        return DataLoader(part, batch_size=16, shuffle=shuffle, preprocess="torch", progress=False, workers=0)

    fit(model, loader(parts[0], True), loader(parts[1]), epochs=2, verbose=0,
        callbacks=[ModelCheckpoint(best, save_best_only=True, info=info)])
    with h5py.File(best, "r") as f:
        assert "optimizer" not in f                                   # a best file holds weights only
    from minicnn.io import load_checkpoint
    assert {k: v for k, v in load_checkpoint(best)["info"].items() if k in ("class_names", "preprocess", "data")} \
        == {"class_names": HAM, "preprocess": "torch", "data": os.path.abspath(root)}
    load_checkpoint(best, model)
    s = evaluate(model, loader(parts[2]))
    assert evaluated(best, capsys) == (round(s["accuracy"], 3), round(s["macro_f1"], 3))


@pytest.fixture(scope="module")
def ham_run(tmp_path_factory):
    """`minicnn train` on the HAM10000 stand-in, --keep best, under umask 027: (folder, what it printed)."""
    out = str(tmp_path_factory.mktemp("cli") / "ham")
    old = os.umask(0o027)
    try:
        rc, printed = train(["--dataset", "synthetic-ham10000", "--preset", "random", "--epochs", "3",
                             "--keep", "best", "--out", out])
    finally:
        os.umask(old)
    assert rc == 0
    return out, printed


def test_train_prints_the_summary_and_a_closing_block_of_what_it_wrote(ham_run, capsys):
    out, printed = ham_run
    assert 'Model "tiny_vgg"' in printed and re.search(r"params: [\d,]+ \(trainable [\d,]+, frozen 0\)", printed)
    closing = printed[printed.index("\ndone in "):]
    figures = ["curves.png", "confusion.png", "confusion_normalised.png", "gradcam_0.png", "gradcam_1.png"]
    for name in ["best.h5", "history.csv", "split.csv"] + [f"figures/{f}" for f in figures]:
        assert os.path.join(out, name) in closing and os.path.exists(os.path.join(out, name)), name
    with open(os.path.join(out, "history.csv"), newline="") as f:
        val_accuracy = [float(row["val_accuracy"]) for row in csv.DictReader(f)]
    best_epoch = 1 + int(np.argmax(val_accuracy))                    # the first best, as ModelCheckpoint keeps
    assert f"scored with the best weights ({os.path.join(out, 'best.h5')}: epoch {best_epoch} of 3)" in closing
    accuracy, macro = re.search(r"test: accuracy (\d\.\d{3}), macro F1 (\d\.\d{3})", closing).groups()
    assert evaluated(os.path.join(out, "best.h5"), capsys) == (float(accuracy), float(macro))


def test_keep_best_leaves_a_weights_only_file_with_the_umask_mode(ham_run):
    out, _ = ham_run
    assert not os.path.exists(os.path.join(out, "last.h5"))                        # --keep best
    with h5py.File(os.path.join(out, "best.h5"), "r") as f:
        assert "optimizer" not in f and "model" in f
    assert os.stat(os.path.join(out, "best.h5")).st_mode & 0o777 == 0o640          # umask 027, not 0600


def test_warm_start_from_our_own_checkpoint_names_the_layers(ham_run, tmp_path):
    """The X-ray run starts from the HAM10000 model (thesis Table 7.2): every layer but the 7-class head
    loads; with blocks 1-4 frozen they end exactly as in the HAM10000 checkpoint."""
    from minicnn.io import read_checkpoint_weights

    out, _ = ham_run
    ham_best = os.path.join(out, "best.h5")
    rc, printed = train(["--dataset", "synthetic-xray", "--preset", "last_block", "--epochs", "1",
                         "--weights", ham_best, "--out", str(tmp_path / "xray"), "--no-figures"])
    assert rc == 0
    line = next(x for x in printed.splitlines() if x.startswith("starting from "))
    assert f"{ham_best} (minicnn checkpoint): loaded 7 layers: block1_conv1, block2_conv1" in line
    assert "not loaded: predictions (shapes differ" in line
    ham, xray = read_checkpoint_weights(ham_best)[0], read_checkpoint_weights(str(tmp_path / "xray" / "last.h5"))[0]
    for block in (1, 2, 3, 4):
        np.testing.assert_array_equal(xray[f"block{block}_conv1.kernel"], ham[f"block{block}_conv1.kernel"])
    assert not np.array_equal(xray["block5_conv1.kernel"], ham["block5_conv1.kernel"])   # block 5 trained


def test_no_imagenet_file_says_so_and_suggests_settings_that_learn(tmp_path, monkeypatch, capsys):
    from minicnn.run_report import FROM_SCRATCH, starting_model

    monkeypatch.setenv("MINICNN_WEIGHTS", str(tmp_path / "none"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("HOME", str(tmp_path))
    args = argparse.Namespace(weights=None, preset="last_block", model="vgg16", image_size=32, lr=1e-4)
    _, source = starting_model(args, 7)
    err = capsys.readouterr().err
    assert source == "random weights (no ImageNet file found)"
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in err and "RANDOM weights" in err
    assert FROM_SCRATCH in err and "--preset random --optimizer adam" in FROM_SCRATCH


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "info", "summary", "export-onnx"])
def test_every_help_shows_the_defaults(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    from minicnn import cli
    sub = cli.build_parser()._subparsers._group_actions[0].choices[command]
    for action in sub._actions:
        if action.default not in (None, False, argparse.SUPPRESS) and action.help:
            assert f"(default: {action.default})" in text, (command, action.dest)
    if command == "evaluate":
        assert "--data DATA data set folder (default: the one the checkpoint was trained on)" in text


def test_the_xray_example_checkpoint_evaluates_with_no_flags(tmp_path, capsys, load_example):
    xray = load_example("xray_finetune")
    assert xray.main(["--images", "60", "--image-size", "32", "--epochs", "1", "--out", str(tmp_path)]) == 0
    macro = re.search(r"^macro F1 (\d\.\d{3})", capsys.readouterr().out, re.MULTILINE).group(1)
    assert evaluated(str(tmp_path / "best.h5"), capsys)[1] == float(macro)


def test_the_thesis_runner_checkpoint_evaluates_with_no_flags(tmp_path, capsys):
    from minicnn.experiments import quick_config, run_thesis

    cfg = quick_config("ham10000", str(tmp_path), epochs=1, standin_images=70, verbose=0, columns=["all"])
    run_thesis(cfg, log=lambda message: None)
    with open(tmp_path / "ham10000" / "runs" / "all_seed0.json") as f:
        s = json.load(f)["summary"]
    checkpoint = str(tmp_path / "ham10000" / "models" / "all_seed0.h5")
    assert evaluated(checkpoint, capsys) == (round(s["accuracy"], 3), round(s["macro_f1"], 3))


def test_info_shows_what_the_checkpoint_says_about_itself(ham_run, capsys):
    out, _ = ham_run
    assert main(["info", os.path.join(out, "best.h5")]) == 0
    text = capsys.readouterr().out
    assert "model config: sequential 'tiny_vgg', input [32, 32, 3], 16 layers: Conv2D MaxPool2D" in text
    assert f"info class_names: {HAM}" in text and "info preprocess: tf" in text and "info dataset: ham10000" in text
    assert "optimizer: None" in text                                                # best.h5: weights only


def test_keep_last_scores_and_says_the_last_weights(tmp_path, capsys):
    out = str(tmp_path / "run")
    rc, printed = train(["--dataset", "synthetic-ham10000", "--preset", "random", "--epochs", "2", "--patience", "0",
                         "--keep", "last", "--no-figures", "--out", out])
    assert rc == 0 and not os.path.exists(os.path.join(out, "best.h5"))
    with h5py.File(os.path.join(out, "last.h5"), "r") as f:
        assert "optimizer" in f                                                     # resumable
    closing = printed[printed.index("\ndone in "):]
    assert f"scored with the last weights ({os.path.join(out, 'last.h5')}: epoch 2)" in closing
    assert "figures/" not in closing
    accuracy, macro = re.search(r"test: accuracy (\d\.\d{3}), macro F1 (\d\.\d{3})", closing).groups()
    assert evaluated(os.path.join(out, "last.h5"), capsys) == (float(accuracy), float(macro))


def test_fit_tells_what_it_can_from_its_data(tmp_path):
    """data_info: a Dataset goes through fit's [-1, 1] default ("tf"); a DataLoader says its mode;
    a callable or arrays say nothing about the scaling."""
    from minicnn.data import HAM10000, DataLoader, split, synthetic
    from minicnn.train.info import data_info
    from minicnn.train.sources import as_source

    root = str(tmp_path / "ham")
    synthetic.ham10000(root, n_images=35, image_size=(16, 16), min_per_class=4, kaggle_duplicates=False)
    part = split(HAM10000(root, image_size=16), (0.6, 0.2, 0.2), by="image", seed=0)[0]
    where = {"class_names": HAM, "dataset": "ham10000", "data": os.path.abspath(root)}
    assert data_info(as_source(part)) == {**where, "preprocess": "tf"}
    assert data_info(as_source(DataLoader(part, preprocess="caffe", progress=False))) == {**where, "preprocess": "caffe"}
    assert data_info(as_source(DataLoader(part, preprocess=lambda b: b / 255.0, progress=False))) == where
    assert data_info(as_source((np.zeros((2, 4, 4, 3), np.float32), np.array([0, 1])))) == {}


def test_resume_of_a_finished_keep_best_run_is_refused_by_name(ham_run, capsys):
    """best.h5 (weights only) of a later epoch has no training state: --resume says so, changes nothing."""
    out, _ = ham_run
    before = os.stat(os.path.join(out, "best.h5")).st_mtime_ns
    rc, _ = train(["--dataset", "synthetic-ham10000", "--preset", "random", "--epochs", "3", "--keep", "best",
                   "--out", out, "--resume"])
    assert rc != 0
    err = capsys.readouterr().err
    assert f"{os.path.join(out, 'best.h5')} holds weights only" in err and "--overwrite" in err
    assert os.stat(os.path.join(out, "best.h5")).st_mtime_ns == before
