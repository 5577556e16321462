"""The thesis runner end to end on generated stand-ins (quick mode), its resume, the
published numbers file, and the train / evaluate / predict / experiments commands."""

import csv
import os

import numpy as np
import pytest

from minicnn.experiments import load_published, published_table, quick_config, run_thesis
from minicnn.experiments.cli import main as experiments_main


def test_published_numbers_are_the_thesis_tables():
    data = load_published()
    ham, xray = published_table("ham10000"), published_table("xray")
    assert ham["classes"] == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert set(ham["columns"]) == {"decision_tree", "random_forest", "random", "all", "last_block", "first_block",
                                   "first_last_blocks"}
    assert all(len(c["f1"]) == 7 for c in ham["columns"].values())
    assert ham["columns"]["all"]["micro_f1"] == 0.81 and ham["columns"]["all"]["macro_f1"] == 0.60
    assert ham["columns"]["random"]["f1"][5] == 0.88 and ham["columns"]["first_block"]["macro_f1"] == 0.11
    assert xray["columns"]["imagenet"]["f1"] == [0.91, 0.97] and xray["columns"]["ham10000"]["macro_f1"] == 0.93
    assert data["setup"]["learning_rate"] == 1e-4 and data["setup"]["early_stopping"]["patience"] == 5
    with pytest.raises(ValueError, match="not 'gtsrb'"):
        published_table("gtsrb")


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_quick_tables_every_column_resume_and_ham_to_xray_transfer(tmp_path, capsys):
    out = str(tmp_path)
    ham = quick_config("ham10000", out, epochs=1, standin_images=70, verbose=0)
    paths = run_thesis(ham, log=lambda m: None)
    with open(paths["markdown"]) as f:
        md = f.read()
    for title in ("Majority Class", "Decision Tree", "Random Forest", "CNN Random Weights", "All Layers Trainable",
                  "Last Block Trainable", "First Block Trainable", "First and Last Blocks Trainable"):
        assert title in md
    for row in ("| akiec |", "| vasc |", "| micro avg |", "| macro avg |", "| balanced accuracy |"):
        assert row in md
    assert ".81 |" in md or "/ .81" in md                          # the thesis' value beside ours
    rows = read_rows(paths["csv"])
    assert len(rows) == (7 + 3) * 8
    by = {(r["row"], r["column"]): r for r in rows}
    assert float(by[("macro avg", "all")]["thesis"]) == 0.60 and by[("macro avg", "majority")]["thesis"] == ""
    for r in rows:
        assert r["ours_mean"] != "" and 0 <= float(r["ours_mean"]) <= 1
    figs = {os.path.basename(p) for p in paths["figures"]}
    assert {"fig7_1_training_accuracy.png", "fig8_1_first_conv.png", "gradcam_0.png", "confusion_all.png"} <= figs

    # resume: finished runs are not redone; a deleted run is redone alone
    runs_dir = os.path.join(out, "ham10000", "runs")
    stamps = {f: os.path.getmtime(os.path.join(runs_dir, f)) for f in os.listdir(runs_dir)}
    os.remove(os.path.join(runs_dir, "last_block_seed0.json"))
    log = []
    run_thesis(quick_config("ham10000", out, epochs=1, standin_images=70, verbose=0), log=log.append)
    assert sum("running" in m for m in log) == 1 and any("last_block seed 0: running" in m for m in log)
    for f, t in stamps.items():
        if f != "last_block_seed0.json":
            assert os.path.getmtime(os.path.join(runs_dir, f)) == t

    # X-ray: the HAM10000 column starts from the HAM10000 'all' model found in the same out folder
    rc = experiments_main(["thesis", "--dataset", "xray", "--quick", "--out", out, "--epochs", "1",
                           "--verbose", "0"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "CNN HAM10000 Weights" in printed and "| PNEUMONIA |" in printed
    xrows = read_rows(os.path.join(out, "xray", "table_7_2.csv"))
    assert {r["column"] for r in xrows} == {"majority", "decision_tree", "random_forest", "random", "imagenet",
                                            "ham10000"}
    assert all(r["ours_mean"] != "" for r in xrows)


def test_experiment_bad_input(tmp_path, capsys):
    assert experiments_main(["thesis", "--dataset", "ham10000", "--data", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
    assert experiments_main(["thesis", "--dataset", "ham10000"]) == 2
    assert "--data is required" in capsys.readouterr().err
    assert experiments_main(["thesis", "--dataset", "xray", "--quick", "--columns", "last_block"]) == 2


def test_cli_train_evaluate_predict(tmp_path, capsys):
    from minicnn.cli import main
    out = str(tmp_path / "run")
    rc = main(["train", "--dataset", "synthetic-xray", "--model", "tiny", "--image-size", "32", "--epochs", "2",
               "--batch-size", "16", "--optimizer", "adam", "--lr", "0.003", "--out", out, "--verbose", "0",
               "--preset", "all"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "test split" in text and "macro avg" in text and "PNEUMONIA" in text
    for name in ("last.h5", "best.h5", "history.csv", "split.csv"):
        assert os.path.exists(os.path.join(out, name)), name
    assert main(["evaluate", os.path.join(out, "best.h5"), "--confusion", str(tmp_path / "cm.png")]) == 0
    assert "confusion matrix" in capsys.readouterr().out and os.path.exists(tmp_path / "cm.png")
    images = sorted(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(out, "standin"))
                    for f in fs if f.endswith(".jpeg") and not f.startswith("."))[:2]
    cam = str(tmp_path / "cam.png")
    assert main(["predict", os.path.join(out, "best.h5"), *images, "--gradcam", cam, "--json"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(lines) == 2 and os.path.exists(cam) and os.path.exists(str(tmp_path / "cam_1.png"))
    # resume a finished run: nothing left to do, still exits cleanly
    assert main(["train", "--dataset", "synthetic-xray", "--model", "tiny", "--image-size", "32", "--epochs", "2",
                 "--batch-size", "16", "--optimizer", "adam", "--lr", "0.003", "--out", out, "--verbose", "0",
                 "--preset", "all", "--resume"]) == 0
    assert main(["train", "--dataset", "synthetic-xray", "--model", "tiny", "--image-size", "32", "--epochs", "2",
                 "--out", out, "--verbose", "0", "--preset", "all", "--resume"]) == 2
    err = capsys.readouterr().err                      # the changed settings, each with both values
    assert "--optimizer was 'adam', now 'sgd'" in err and "--lr was 0.003, now 0.0001" in err


def test_cli_errors_are_one_line_with_exit_status_2(tmp_path, capsys):
    from minicnn.cli import main
    assert main(["train", "--dataset", "ham10000", "--data", str(tmp_path / "nope"), "--model", "tiny"]) == 2
    assert "data folder not found" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "none.h5"), "x.jpg"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["train", "--dataset", "synthetic-xray", "--model", "tiny", "--weights",
                 str(tmp_path / "w.h5"), "--out", str(tmp_path / "o")]) == 2
    for command in ("train", "evaluate", "predict", "experiments"):
        with pytest.raises(SystemExit) as e:
            main([command, "--help"])
        assert e.value.code == 0
    capsys.readouterr()


def test_quick_tiny_model_can_learn_the_standin(tmp_path):
    """The stand-in is learnable: a tiny CNN beats the majority class clearly in a few epochs."""
    from minicnn import optim
    from minicnn.data import ArrayDataset
    from minicnn.data.synthetic import draw_lesion
    from minicnn.experiments.models import tiny_vgg
    from minicnn.train import evaluate, fit
    rng = np.random.default_rng(0)
    classes = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    y = np.arange(70) % 7
    images = np.stack([draw_lesion(classes[c], 32, 32, rng) for c in y])
    ds = ArrayDataset(images, y, class_names=classes)
    model = tiny_vgg((32, 32, 3), 7, dropout=0.0)
    fit(model, ds, None, optim.Adam(model.parameters(), lr=3e-3), epochs=6, batch_size=14, verbose=0)
    assert evaluate(model, ds)["macro_f1"] > 0.5


def load_example(name):
    import importlib.util
    path = os.path.join(os.path.dirname(__file__), "..", "examples", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ham_example_runs_end_to_end_small(tmp_path, capsys):
    """The HAM10000 example on a small stand-in (the full default run is the 2-4 minute demo)."""
    ham = load_example("ham_finetune")
    assert ham.main(["--images", "70", "--image-size", "32", "--epochs", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "F1 on the test split" in out and "majority class" in out and "| " not in out
    for name in ("accuracy.png", "confusion.png", "gradcam_0.png"):
        assert os.path.exists(tmp_path / "figures" / name)


@pytest.mark.parametrize("name", ["ham_finetune", "xray_finetune"])
def test_examples_refuse_a_missing_weights_file_before_any_work(name, tmp_path):
    example = load_example(name)
    with pytest.raises(SystemExit, match="weights file not found: .*missing.h5"):
        example.main(["--weights", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()                 # no stand-in written, nothing trained


def test_digits_example_runs(capsys):
    digits = load_example("digits_from_scratch")
    assert digits.main(["--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "macro avg" in out
    accuracy = float(out.split("test accuracy ")[1].split()[0])
    assert accuracy > 0.8
