"""The run folder: nothing in --out changes before a run is known to start, no run replaces
another's checkpoints without --overwrite, --resume refuses changed settings by name, one
run per folder at a time, and data sets that cannot make a run fail before it starts."""

import csv
import os
import signal
import socket
import subprocess
import sys
import time
import warnings

import pytest
from faultkit import files_state, image_folder, train_args

from minicnn.cli import main
from minicnn.data import ImageFolder


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A data folder and a finished 2-epoch run in it."""
    root = tmp_path_factory.mktemp("rundir")
    image_folder(root / "data", per_class=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(train_args(root / "data", root / "run", "--preset", "all")) == 0
    return root


def quiet_main(argv):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return main(argv)


@pytest.mark.parametrize("extra,message", [
    ([], "already holds a run (last.h5, best.h5): pass --resume to continue it, --overwrite"),
    (["--split-by", "group", "--seed", "4"], "already holds a run"),
    (["--overwrite", "--lr", "nan"], "--lr must be a positive finite number, got nan"),
    (["--overwrite", "--weights", "/nonexistent/w.h5", "--model", "vgg16"], "weights file not found"),
    (["--resume", "--batch-size", "4"], "--batch-size was 8, now 4"),
    (["--resume", "--overwrite"], "contradict"),
    (["--resume", "--clipnorm", "1"], "--clipnorm was None, now 1.0"),
    (["--overwrite", "--clipnorm", "1", "--clipvalue", "1"],
     "only one of clipnorm, global_clipnorm and clipvalue may be set, got ['clipnorm', 'clipvalue']"),
    (["--overwrite", "--global-clipnorm", "-1"], "global_clipnorm must be a finite number > 0, got -1.0"),
])
def test_a_refused_run_changes_nothing_in_out(finished, capsys, extra, message):
    out = finished / "run"
    before = files_state(out)
    capsys.readouterr()
    assert quiet_main(train_args(finished / "data", out, "--preset", "all", *extra)) == 2
    assert message in capsys.readouterr().err
    assert files_state(out) == before              # split.csv above all: its test part goes with best.h5


def test_overwrite_replaces_the_run(tmp_path, capsys):
    image_folder(tmp_path / "data", per_class=6)
    out = tmp_path / "run"
    assert quiet_main(train_args(tmp_path / "data", out, "--preset", "all")) == 0
    (out / "bad_images.txt").write_text("# from the old run\n")
    old_split = (out / "split.csv").read_text()
    assert quiet_main(train_args(tmp_path / "data", out, "--preset", "all", "--overwrite", "--seed", "5")) == 0
    assert (out / "split.csv").read_text() != old_split and not (out / "bad_images.txt").exists()


def test_resume_refuses_a_changed_lr_unless_allowed_and_then_uses_it(tmp_path, capsys):
    image_folder(tmp_path / "data", per_class=6)
    out = tmp_path / "run"
    assert quiet_main(train_args(tmp_path / "data", out, "--preset", "all", "--patience", "0")) == 0
    capsys.readouterr()
    argv = train_args(tmp_path / "data", out, "--preset", "all", "--patience", "0", "--resume", "--lr", "0.02",
                      epochs=3)
    assert quiet_main(argv) == 2
    err = capsys.readouterr().err
    assert "--lr was 0.01, now 0.02" in err and "--allow-changed lr" in err
    assert quiet_main(argv + ["--allow-changed", "lr"]) == 0
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["lr"]) for r in rows] == [0.01, 0.01, 0.02]
    assert "--lr changed on resume (0.01 -> 0.02)" in capsys.readouterr().err


def test_more_epochs_on_resume_is_not_a_change(tmp_path, capsys):
    image_folder(tmp_path / "data", per_class=6)
    out = tmp_path / "run"
    assert quiet_main(train_args(tmp_path / "data", out, "--preset", "all", "--patience", "0")) == 0
    assert quiet_main(train_args(tmp_path / "data", out, "--preset", "all", "--patience", "0", "--resume",
                                 "--verbose", "1", epochs=3)) == 0
    with open(out / "history.csv") as f:
        assert len(list(csv.DictReader(f))) == 3


def test_folder_with_one_class_is_refused(tmp_path, capsys):
    image_folder(tmp_path / "data", classes=("only",), per_class=6)
    assert quiet_main(train_args(tmp_path / "data", tmp_path / "run")) == 2
    assert "has 1 class sub-folder(s) ['only']; a classifier needs at least 2" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()           # the folder it made for its lock is gone again


@pytest.mark.parametrize("classes,hint", [
    (("HAM10000_images_part_1", "HAM10000_images_part_2"), "--dataset ham10000"),
    (("test", "train", "val"), "--dataset xray")])
def test_folder_shaped_like_a_known_data_set_warns(tmp_path, classes, hint):
    image_folder(tmp_path / "data", classes=classes, per_class=2)
    with pytest.warns(UserWarning, match=hint):
        ImageFolder(tmp_path / "data")


def test_data_set_too_small_for_the_split_fails_before_training(tmp_path, capsys):
    image_folder(tmp_path / "data", classes=("a", "b"), per_class=1)
    assert quiet_main(train_args(tmp_path / "data", tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert "too small for the split train 0.6/val 0.2/test 0.2" in err and "part would be empty" in err
    assert not (tmp_path / "run").exists()


def _hold_lock(out):
    code = ("import sys, time; from minicnn.train.rundir import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert child.stdout.readline().strip() == "locked"
    return child


def test_a_second_run_on_the_same_out_fails_at_once_and_a_stale_lock_is_taken_over(tmp_path, capsys):
    image_folder(tmp_path / "data", per_class=6)
    out = tmp_path / "run"
    owner = _hold_lock(out)
    try:
        start = time.monotonic()
        assert quiet_main(train_args(tmp_path / "data", out)) == 2
        assert time.monotonic() - start < 5
        err = capsys.readouterr().err
        assert f"is in use by another run (pid {owner.pid} on {socket.gethostname()}" in err
    finally:
        owner.send_signal(signal.SIGKILL)           # dies holding it: the lock file stays behind
        owner.wait()
    assert (out / ".minicnn.lock").exists()
    assert quiet_main(train_args(tmp_path / "data", out, "--preset", "all")) == 0
    assert f"took over the lock of a run that is gone (pid {owner.pid}" in capsys.readouterr().err
    assert not (out / ".minicnn.lock").exists()
