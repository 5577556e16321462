"""Callbacks on a stand-in trainer: their rules, step by step, without training anything."""

import io
import os

import numpy as np
import pytest

from minicnn.baselines import pixel_features, run_baselines, split_80_20
from minicnn.train import CSVLogger, EarlyStopping, ProgressBar, ReduceLROnPlateau, TerminateOnNaN
from minicnn.train.callbacks import NonFiniteLoss


class FakeModel:
    def __init__(self):
        self.w = np.zeros(2)

    def state_dict(self):
        return {"w": self.w.copy()}

    def load_state_dict(self, d):
        self.w = d["w"].copy()


class FakeOptimizer:
    def __init__(self, lrs):
        self.param_groups = [{"lr": lr} for lr in lrs]


class FakeTrainer:
    def __init__(self, lrs=(0.1,)):
        self.model, self.optimizer = FakeModel(), FakeOptimizer(lrs)
        self.stop_training, self.initial_epoch, self.epochs, self.samples_per_epoch = False, 0, 3, 10
        self.messages = []
        self.running = {"loss": 1.0, "accuracy": 0.5, "images_per_s": 10.0}

    def log(self, m):
        self.messages.append(m)


def test_early_stopping_patience_and_restore():
    t = FakeTrainer()
    es = EarlyStopping("val_accuracy", patience=2)
    for epoch, acc in enumerate([0.5, 0.7, 0.6, 0.65]):
        t.model.w[:] = epoch
        es.on_epoch_end(t, epoch, {"val_accuracy": acc})
        assert t.stop_training == (epoch == 3)
    es.on_train_end(t)
    np.testing.assert_array_equal(t.model.w, [1, 1])            # weights of the best epoch (index 1)
    assert es.best_epoch == 1 and "has not improved for 2 epochs" in t.messages[0]


def test_early_stopping_start_from_epoch_and_missing_key():
    t = FakeTrainer()
    es = EarlyStopping("val_loss", patience=1, start_from_epoch=2)
    for epoch, loss in enumerate([1.0, 2.0, 3.0]):
        es.on_epoch_end(t, epoch, {"val_loss": loss})
    assert not t.stop_training and es.best == 3.0                 # epochs 0-1 not counted
    with pytest.raises(KeyError, match="pass validation data"):
        EarlyStopping("val_accuracy").on_epoch_end(t, 0, {"loss": 1.0})


def test_reduce_lr_on_plateau_keeps_group_ratios_and_floor():
    t = FakeTrainer(lrs=(0.1, 0.01))
    cb = ReduceLROnPlateau("val_loss", factor=0.5, patience=2, min_lr=0.004)
    lrs = []
    for epoch, loss in enumerate([1.0, 1.0, 1.0, 1.0, 1.0, 0.5]):
        cb.on_epoch_end(t, epoch, {"val_loss": loss})
        lrs.append([g["lr"] for g in t.optimizer.param_groups])
    assert lrs[1] == [0.1, 0.01]
    assert lrs[2] == pytest.approx([0.05, 0.005])                # 2 epochs without improvement
    assert lrs[4] == pytest.approx([0.025, 0.004])               # second cut, floor at min_lr
    assert lrs[5] == pytest.approx([0.025, 0.004])
    state = cb.state_dict()
    other = ReduceLROnPlateau("val_loss")
    other.load_state_dict(state)
    assert other.best == 0.5 and other.wait == 0


def test_terminate_on_nan_names_epoch_and_batch():
    cb = TerminateOnNaN()
    cb.on_epoch_begin(None, 4)
    cb.check_loss(0, 1.5)
    with pytest.raises(NonFiniteLoss, match="epoch 5, batch 3"):
        cb.check_loss(2, float("inf"))


def test_csv_logger_restart_and_resume(tmp_path):
    path = tmp_path / "log.csv"
    t = FakeTrainer()
    log = CSVLogger(path)
    log.on_train_begin(t)
    for e in range(3):
        log.on_epoch_end(t, e, {"loss": 1.0 / (e + 1), "val_loss": 2.0})
    lines = path.read_text().splitlines()
    assert lines[0] == "epoch,loss,val_loss" and len(lines) == 4
    t.initial_epoch = 2                                            # resuming after epoch 2: row 3 goes
    resumed = CSVLogger(path)
    resumed.on_train_begin(t)
    assert path.read_text().splitlines() == lines[:3]
    t.initial_epoch = 0                                            # a fresh run starts the file over
    CSVLogger(path).on_train_begin(t)
    assert not path.exists()


def test_progress_bar_one_line_per_epoch_when_not_a_terminal():
    stream = io.StringIO()
    bar = ProgressBar(verbose=1, stream=stream)
    t = FakeTrainer()
    bar.on_train_begin(t)
    for e in range(2):
        bar.on_epoch_begin(t, e)
        bar.on_batch_end(t, 0, {"loss": 1.0, "size": 10})
        bar.on_epoch_end(t, e, {"loss": 0.5, "accuracy": 0.75, "images_per_s": 123.4})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch 1/3") and "accuracy 0.7500" in lines[1] and "123.4 img/s" in lines[1]
    silent = io.StringIO()
    quiet = ProgressBar(verbose=0, stream=silent)
    quiet.on_train_begin(t)
    quiet.on_epoch_end(t, 0, {"loss": 1.0})
    assert silent.getvalue() == ""


def test_baselines_split_features_and_scores():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    tr, te = split_80_20(len(y), y, seed=0)
    assert len(te) == 12 and set(tr).isdisjoint(te) and np.bincount(y[te]).tolist() == [4, 4, 4]
    images = rng.integers(0, 50, (60, 8, 8, 3)).astype(np.uint8)
    images[y == 1, :4] = 250                                       # class 1: bright top half
    images[y == 2, :, :4] = 250                                    # class 2: bright left half
    assert pixel_features(images, size=4).shape == (60, 4 * 4 * 3)
    np.testing.assert_allclose(pixel_features(images[:1], size=4)[0, 0], images[0, :2, :2, 0].mean())
    res = run_baselines(images, y, 3, seed=0, n_estimators=20)
    assert res["decision_tree"]["accuracy"] == 1.0 and res["random_forest"]["accuracy"] == 1.0
    assert res["majority"]["accuracy"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="unknown baseline"):
        run_baselines(images, y, 3, names=["svm"])


class Terminal(io.StringIO):
    def __init__(self, columns):
        super().__init__()
        self.columns = columns

    def isatty(self):
        return True


@pytest.mark.parametrize("columns", [150, 0])
def test_progress_bar_draws_a_bar_then_the_epoch_on_its_own_line(columns, monkeypatch):
    """A 150-column terminal gets the bar and then every metric, validation too, on its own line;
    a pty of width 0 gets the line without a bar."""
    monkeypatch.setattr(os, "get_terminal_size", lambda fd=None: os.terminal_size((columns, 24)))
    monkeypatch.setattr(Terminal, "fileno", lambda self: 2, raising=False)
    stream = Terminal(columns)
    bar = ProgressBar(verbose=1, stream=stream)
    t = FakeTrainer()
    bar.on_train_begin(t)
    bar.on_epoch_begin(t, 0)
    for b in range(2):
        t.running = {"loss": 0.9 - b / 10, "accuracy": 0.5, "images_per_s": 42.0}
        bar.on_batch_end(t, b, {"loss": 1.0, "size": 5})
    if columns:
        bar.bar.refresh()
        drawn = stream.getvalue().split("\r")[-1]                  # the bar as last drawn
        assert "10/10" in drawn and "loss 0.8000, acc 0.500" in drawn and drawn.count("img/s") == 1
    else:
        assert bar.bar is None
    logs = {"loss": 0.8, "accuracy": 0.5, "macro_f1": 0.4, "images_per_s": 42.0, "time_s": 1.5, "val_loss": 0.9,
            "val_accuracy": 0.625, "val_macro_f1": 0.5, "val_time_s": 0.25}
    bar.on_epoch_end(t, 0, logs)
    text = stream.getvalue()
    last = text.replace("\r", "\n").splitlines()[-1]
    assert last == ("epoch 1/3 - loss 0.8000 - accuracy 0.5000 - macro_f1 0.4000 - 42.0 img/s - 1.5 s - "
                    "val_loss 0.9000 - val_accuracy 0.6250 - val_macro_f1 0.5000 - val 0.2 s")
    assert ("/10 [" in text) == (columns > 0)                     # the bar, only where it can be drawn
