"""Interrupted within an epoch (SIGINT or SIGTERM, in training or in validation), resumed:
the same weights and history as a run never interrupted, bit for bit.

The signal is sent from inside the loss function at its n-th call, so it lands at an
exact, repeatable point: training batches and validation batches both call the loss.
"""

import os
import signal
import warnings

import numpy as np
import pytest
from faultkit import image_folder, sgd, tiny_vgg

from minicnn.data import Augment, DataLoader, ImageFolder, split
from minicnn.functional import softmax_cross_entropy
from minicnn.io import load_checkpoint
from minicnn.train import Callback, EarlyStopping, apply_preset, fit
from minicnn.train.state import Interrupted

TIMING = ("images_per_s", "time_s", "val_time_s")


def signal_at(call: int | None, signum=signal.SIGINT):
    """A cross-entropy loss that sends ``signum`` to this process at its ``call``-th call."""
    calls = [0]

    def loss(logits, y):
        calls[0] += 1
        if calls[0] == call:
            os.kill(os.getpid(), signum)
        return softmax_cross_entropy(logits, y)
    return loss


def numbers(history):
    return {k: v for k, v in history.history.items() if k not in TIMING}


def data_for(kind, root):
    if kind == "arrays":
        rng = np.random.default_rng(0)
        y = np.arange(40) % 3
        x = rng.normal(0, 1, (40, 16, 16, 3)).astype(np.float32) + y[:, None, None, None]
        return (x[:30], y[:30]), (x[30:], y[30:])
    image_folder(root, per_class=10)
    ds = ImageFolder(root, image_size=16)
    train, val = split(ds, (0.7, 0.3), by="image", seed=0)
    if kind == "dataset":
        return train, val
    return (DataLoader(train, batch_size=8, shuffle=True, augment=Augment.standard(seed=1), workers=2,
                       progress=False, seed=3),
            DataLoader(val, batch_size=8, workers=0, progress=False))


def run(kind, root, ckpt, loss, resume=None, preset=None):
    model = tiny_vgg()
    if preset:
        apply_preset(model, preset)
    train, val = data_for(kind, root)
    opt = sgd(model)
    stop = EarlyStopping("val_loss", patience=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = fit(model, train, val, opt, loss=loss, epochs=3, batch_size=8, verbose=0, callbacks=[stop],
                      checkpoint=ckpt, resume=resume, checkpoint_minutes=60)
    return model, history


# (source, preset, loss call that signals): training has 3 (arrays: 4) batches an epoch,
# validation 1-2; the calls fall in epoch 1, in validation, and in epoch 2
CASES = [("arrays", None, 2), ("arrays", None, 5), ("arrays", "last_block", 7), ("dataset", None, 3),
         ("dataset", "last_block", 5), ("loader", None, 2), ("loader", "last_block", 6)]


@pytest.mark.parametrize("kind,preset,call", CASES)
def test_interrupted_within_an_epoch_resumes_bit_identically(tmp_path, kind, preset, call):
    root = tmp_path / "data"
    ref_model, ref = run(kind, root, str(tmp_path / "ref.h5"), signal_at(None), preset=preset)
    ckpt = str(tmp_path / "last.h5")
    with pytest.raises(Interrupted) as stopped:
        run(kind, root, ckpt, signal_at(call), preset=preset)
    assert stopped.value.signum == signal.SIGINT and ckpt in str(stopped.value)
    state = load_checkpoint(ckpt)
    assert "partial" in state                       # stopped within an epoch, not at its end
    model, history = run(kind, root, ckpt, signal_at(None), resume=ckpt, preset=preset)
    assert numbers(history) == numbers(ref)
    a, b = model.state_dict(), ref_model.state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    ckpt = str(tmp_path / "last.h5")
    ref_model, ref = run("arrays", None, str(tmp_path / "ref.h5"), signal_at(None))
    with pytest.raises(Interrupted) as stopped:
        run("arrays", None, ckpt, signal_at(3, signal.SIGTERM))      # during batch 3 of epoch 1
    assert stopped.value.signum == signal.SIGTERM and "SIGTERM" in str(stopped.value)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL     # fit put the default back
    assert load_checkpoint(ckpt)["partial"]["batches"] == 3            # batch 3 was finished first
    model, history = run("arrays", None, ckpt, signal_at(None), resume=ckpt)
    assert numbers(history) == numbers(ref)
    a, b = model.state_dict(), ref_model.state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_periodic_checkpoints_within_an_epoch(tmp_path):
    """checkpoint_minutes=0: a checkpoint after every batch; each one resumes to the same end."""
    (x, y), _ = data_for("arrays", None)
    seen = []

    class Record(Callback):
        def on_batch_end(self, trainer, batch, logs):
            seen.append(load_checkpoint(ckpt)["partial"]["batches"] if os.path.exists(ckpt) else None)

    ckpt = str(tmp_path / "last.h5")
    model = tiny_vgg()
    fit(model, (x, y), None, sgd(model), epochs=1, batch_size=8, verbose=0, checkpoint=ckpt,
        checkpoint_minutes=0, callbacks=[Record()])
    assert seen == [None, 1, 2, 3]   # on_batch_end of batch b runs before batch b's checkpoint
    assert "partial" not in load_checkpoint(ckpt)   # the epoch's end replaced it


def test_a_run_that_stopped_early_stays_stopped_on_resume(tmp_path):
    (x, y), val = data_for("arrays", None)
    histories = []
    for resume in (None, str(tmp_path / "last.h5")):
        model = tiny_vgg()
        stop = EarlyStopping("loss", mode="max", patience=1)   # the loss falls: stops after epoch 2
        histories.append(fit(model, (x, y), val, sgd(model), epochs=6, batch_size=8, verbose=0,
                             callbacks=[stop], checkpoint=str(tmp_path / "last.h5"), resume=resume))
    assert len(histories[0]["loss"]) == 2 and numbers(histories[1]) == numbers(histories[0])
