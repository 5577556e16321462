"""Checkpoints describe themselves: `minicnn evaluate` / `predict` need no flags and refuse contradictory ones."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os

import pytest

from minicnn.cli import main
from minicnn.io import load_checkpoint


def _report(text: str) -> str:
    """The per-class report block (accuracy line, table, confusion matrix) printed by train / evaluate."""
    start = text.index("test split:")
    end = text.find("\ndone in ", start)             # train's closing block follows the report
    return text[start:end if end > 0 else None].strip()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny caffe-preprocessed run on the HAM10000 stand-in (32 px), as `minicnn train` writes it:
    (its folder, what it printed)."""
    out = str(tmp_path_factory.mktemp("ham") / "run")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = main(["train", "--dataset", "synthetic-ham10000", "--model", "tiny", "--image-size", "32",
                   "--epochs", "2", "--batch-size", "16", "--optimizer", "adam", "--lr", "0.003",
                   "--preset", "all", "--preprocess", "caffe", "--out", out, "--verbose", "0"])
    assert rc == 0
    return out, printed.getvalue()


def test_train_checkpoints_carry_what_is_needed_to_use_them(run):
    from minicnn.data import HAM10000, load_split

    out, _ = run
    for name in ("best.h5", "last.h5"):
        info = load_checkpoint(os.path.join(out, name))["info"]
        assert info["class_names"] == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
        assert (info["image_size"], info["preprocess"], info["model"], info["dataset"]) == \
            (32, "caffe", "tiny", "ham10000")
        assert info["data"] == os.path.abspath(os.path.join(out, "standin"))
        # independent reference: the test ids as split.csv lists them, hashed here
        test = load_split(os.path.join(out, "split.csv"), HAM10000(info["data"], image_size=32))["test"]
        assert info["test_fingerprint"] == hashlib.sha256("\n".join(sorted(test.sources())).encode()).hexdigest()


def test_evaluate_with_no_flags_reproduces_the_run(run, capsys):
    """train reports the test split with the best weights restored; evaluate on best.h5, no flags, agrees."""
    out, printed = run
    assert main(["evaluate", os.path.join(out, "best.h5")]) == 0
    evaluated = _report(capsys.readouterr().out)
    assert evaluated == _report(printed)
    assert main(["evaluate", os.path.join(out, "best.h5"), "--preprocess", "caffe", "--image-size", "32"]) == 0
    assert _report(capsys.readouterr().out) == evaluated      # flags that agree change nothing


@pytest.mark.parametrize("flags, named", [
    (["--preprocess", "tf"], "--preprocess tf contradicts"),
    (["--image-size", "48"], "--image-size 48 contradicts"),
    (["--dataset", "xray"], "--dataset xray contradicts"),
])
def test_evaluate_refuses_a_contradictory_flag_by_name(run, capsys, flags, named):
    out, _ = run
    assert main(["evaluate", os.path.join(out, "best.h5"), *flags]) == 2
    err = capsys.readouterr().err
    assert named in err and "trained with" in err and err.count("\n") == 1


def test_evaluate_refuses_another_split(run, tmp_path, capsys):
    from minicnn.data import HAM10000, save_split, split

    out, _ = run
    ds = HAM10000(os.path.join(out, "standin"), image_size=32)
    other = str(tmp_path / "other.csv")
    save_split(other, split(ds, (0.6, 0.2, 0.2), by="group", seed=123))
    assert main(["evaluate", os.path.join(out, "best.h5"), "--split-file", other]) == 2
    assert "fingerprints differ" in capsys.readouterr().err


def test_predict_prints_class_names_and_refuses_contradictions(run, capsys):
    out, _ = run
    images = sorted(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(out, "standin"))
                    for f in fs if f.endswith(".jpg"))[:2]
    assert main(["predict", os.path.join(out, "best.h5"), *images, "--top", "7", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(lines) == 2
    for line in lines:
        assert sorted(t["class"] for t in line["top"]) == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
        assert sum(t["p"] for t in line["top"]) == pytest.approx(1.0, abs=1e-5)
    assert main(["predict", os.path.join(out, "best.h5"), images[0], "--preprocess", "torch"]) == 2
    assert "--preprocess torch contradicts" in capsys.readouterr().err


def test_the_ham_example_checkpoint_evaluates_with_no_flags(tmp_path, capsys, load_example):
    """examples/ham_finetune.py trains with caffe preprocessing: evaluate must use it, unasked."""
    import re

    ham = load_example("ham_finetune")
    assert ham.main(["--images", "70", "--image-size", "32", "--epochs", "1", "--out", str(tmp_path)]) == 0
    example_f1 = re.search(r"^macro F1 (\d\.\d{3})", capsys.readouterr().out, re.MULTILINE).group(1)
    assert load_checkpoint(str(tmp_path / "best.h5"))["info"]["preprocess"] == "caffe"
    assert main(["evaluate", str(tmp_path / "best.h5")]) == 0
    assert re.search(r"^macro avg\s+(\d\.\d{3})", capsys.readouterr().out, re.MULTILINE).group(1) == example_f1
    assert main(["evaluate", str(tmp_path / "best.h5"), "--preprocess", "tf"]) == 2
    assert "--preprocess tf contradicts" in capsys.readouterr().err


def test_model_checkpoint_writes_its_info_over_fits(tmp_path):
    """ModelCheckpoint(info=...) adds to fit(checkpoint_info=...) in its own file only."""
    import numpy as np

    from minicnn import nn, optim
    from minicnn.train import ModelCheckpoint, fit

    nn.reset_names()
    model = nn.Sequential([nn.Flatten(name="flatten"), nn.Dense(2, name="predictions")], name="lin")
    model.build((None, 4, 4, 3))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4, 4, 3)).astype(np.float32), np.arange(16) % 2
    own = ModelCheckpoint(str(tmp_path / "own.h5"), info={"preprocess": "caffe", "note": "mine"})
    fit(model, (x, y), (x, y), optim.SGD(list(model.named_parameters()), lr=0.01), epochs=1, verbose=0,
        callbacks=[own], checkpoint=str(tmp_path / "plain.h5"),
        checkpoint_info={"class_names": ["a", "b"], "preprocess": "tf"})
    assert load_checkpoint(str(tmp_path / "own.h5"))["info"] == {"class_names": ["a", "b"], "preprocess": "caffe",
                                                                 "note": "mine"}
    assert load_checkpoint(str(tmp_path / "plain.h5"))["info"] == {"class_names": ["a", "b"], "preprocess": "tf"}
