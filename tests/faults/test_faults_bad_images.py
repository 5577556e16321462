"""One unreadable image among many: skipped, named by path, counted; on every path.

Before this was fixed, the frozen-prefix feature cache (the default ``last_block``
preset) crashed with a NumPy broadcast error as soon as a batch came back one image
short, and the DataLoader's warning named no file.
"""

import os
import warnings

import numpy as np
import pytest
from faultkit import break_image, image_folder, sgd, tiny_vgg, train_args

from minicnn.cli import main
from minicnn.data import DataLoader, ImageFolder
from minicnn.train import apply_preset, evaluate, fit


def _train(data, cached: bool):
    model = tiny_vgg()
    apply_preset(model, "last_block")               # blocks 1-2 frozen: the feature cache is used
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        history = fit(model, data, None, sgd(model), epochs=2, batch_size=8, verbose=0,
                      feature_cache="memory" if cached else None)
    return history, " ".join(str(w.message) for w in seen)


@pytest.mark.parametrize("how", ["truncated", "zero", "text"])
@pytest.mark.parametrize("through", ["dataloader", "dataset"])
@pytest.mark.parametrize("cached", [True, False])
def test_bad_image_is_skipped_and_named_on_every_path(tmp_path, how, through, cached):
    paths = image_folder(tmp_path / "data")
    bad = paths[5]
    break_image(bad, how)
    ds = ImageFolder(tmp_path / "data", image_size=16)
    data = DataLoader(ds, batch_size=8, shuffle=True, workers=0, progress=False) if through == "dataloader" else ds
    history, warned = _train(data, cached)
    assert len(history["loss"]) == 2 and np.isfinite(history["loss"]).all()
    assert list(history.bad_files) == [bad]
    assert bad in warned and "skipped 1 unreadable image" in warned


def test_feature_cache_rows_line_up_after_a_skipped_image(tmp_path):
    """Cached epochs must train on the same numbers as recomputed ones, skipped image or not."""
    paths = image_folder(tmp_path / "data")
    break_image(paths[3], "truncated")
    ds = ImageFolder(tmp_path / "data", image_size=16)
    runs = []
    for cache in ("memory", None):
        model = tiny_vgg()
        apply_preset(model, "last_block")
        loader = DataLoader(ds, batch_size=8, shuffle=True, workers=0, progress=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            h = fit(model, loader, None, sgd(model), epochs=3, verbose=0, feature_cache=cache)
        runs.append((h["loss"], model.state_dict()))
    assert runs[0][0] == runs[1][0]
    for k in runs[0][1]:
        np.testing.assert_array_equal(runs[0][1][k], runs[1][1][k], err_msg=k)


def test_evaluate_reports_skipped_images(tmp_path):
    paths = image_folder(tmp_path / "data")
    break_image(paths[-1], "zero")
    ds = ImageFolder(tmp_path / "data", image_size=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = evaluate(tiny_vgg(), DataLoader(ds, batch_size=8, workers=0, progress=False))
    assert list(out["bad_files"]) == [paths[-1]] and len(out["y_true"]) == len(paths) - 1


def test_cli_last_block_run_skips_names_and_counts_a_bad_image(tmp_path, capsys):
    paths = image_folder(tmp_path / "data", per_class=10)
    bad = paths[7]
    break_image(bad, "truncated")
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(train_args(tmp_path / "data", out, "--preset", "last_block"))
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "1 unreadable image(s) skipped" in err and bad in err
    report = (out / "bad_images.txt").read_text()
    assert report.startswith("# 1 unreadable image(s), skipped") and bad in report
    assert os.path.exists(out / "best.h5")


def test_ham_example_trains_on_with_a_bad_image_and_names_it(tmp_path, capsys):
    """examples/ham_finetune.py (the default last_block preset) used to crash on one unreadable image."""
    import importlib.util

    from minicnn.data import HAM10000, synthetic
    root = tmp_path / "ham"
    synthetic.ham10000(root, n_images=70, image_size=(40, 32))
    bad = HAM10000(root).paths[3]
    break_image(bad, "truncated")
    path = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "ham_finetune.py")
    spec = importlib.util.spec_from_file_location("example_ham_bad_image", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert example.main(["--data", str(root), "--image-size", "32", "--epochs", "1",
                             "--out", str(tmp_path / "out")]) == 0
    assert any(bad in str(w.message) for w in seen)
    assert "F1 on the test split" in capsys.readouterr().out
