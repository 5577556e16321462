"""fit(): learning, freezing, the feature cache, resume, callbacks, bad input.

Models are tiny VGG-shaped networks (Keras block names) on 16x16 images so the
whole file runs in seconds. "Equal" means bit-identical: the cache and resume
must not change a single number.
"""

import csv
import os

import numpy as np
import pytest

import minicnn
from minicnn import nn, optim
from minicnn.train import (
    CSVLogger,
    EarlyStopping,
    ModelCheckpoint,
    ReduceLROnPlateau,
    apply_preset,
    evaluate,
    fit,
    frozen_prefix,
    param_groups,
    predict,
)
from minicnn.train.callbacks import Callback

TIMING = ("images_per_s", "time_s", "val_time_s")


def tiny_vgg(classes=3, dropout=0.25, seed=0, size=16):
    minicnn.seed(seed)
    nn.reset_names()
    layers = []
    for block, filters in enumerate((4, 8, 8), start=1):
        layers += [nn.Conv2D(filters, 3, activation="relu", name=f"block{block}_conv1"),
                   nn.MaxPool2D(name=f"block{block}_pool")]
    layers += [nn.Flatten(name="flatten"), nn.Dense(16, activation="relu", name="fc1"),
               nn.Dropout(dropout, name="dropout1"), nn.Dense(classes, name="predictions")]
    model = minicnn.Sequential(layers, name="tiny")  # a minicnn.Model (Keras-shaped methods)
    model.build((None, size, size, 3))
    return model


def blobs(n=96, classes=3, size=16, seed=0):
    """Class c: a bright square in quadrant c plus noise (learnable by a tiny CNN)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    rng.shuffle(y)
    x = rng.normal(0, 0.3, (n, size, size, 3)).astype(np.float32)
    h = size // 2
    for i, c in enumerate(y):
        r, q = divmod(int(c), 2)
        x[i, r * h:(r + 1) * h, q * h:(q + 1) * h, :] += 1.0
    return x, y.astype(np.int64)


def sgd(model, lr=0.02):
    return optim.SGD(list(model.named_parameters()), lr=lr, momentum=0.9)


def numbers(history):
    return {k: v for k, v in history.history.items() if k not in TIMING}


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


def test_fit_learns_and_records_history():
    x, y = blobs(120)
    model = tiny_vgg()
    h = fit(model, (x[:90], y[:90]), (x[90:], y[90:]), sgd(model, lr=0.02), epochs=6, batch_size=16,
            verbose=0, metrics=("macro_f1", "balanced_accuracy"))
    for key in ("loss", "accuracy", "macro_f1", "balanced_accuracy", "val_loss", "val_accuracy",
                "val_macro_f1", "val_balanced_accuracy", "lr", "images_per_s"):
        assert len(h[key]) == 6, key
    assert h["loss"][-1] < h["loss"][0]
    assert h["val_accuracy"][-1] >= 0.8
    out = evaluate(model, (x[90:], y[90:]))
    assert out["accuracy"] == pytest.approx(h["val_accuracy"][-1])
    assert out["loss"] == pytest.approx(h["val_loss"][-1], rel=1e-6)
    probs = predict(model, x[90:])
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(probs.argmax(axis=1), out["y_pred"])


def test_model_compile_fit_evaluate_predict_match_the_functions():
    """The Keras-shaped methods give exactly what train.fit / evaluate / predict give."""
    x, y = blobs(48)
    runs = []
    for keras_style in (True, False):
        minicnn.seed(3)
        model = tiny_vgg()
        if keras_style:
            model.compile("sgd", metrics=["accuracy", "macro_f1"], lr=0.05)
            h = model.fit(x[:32], y[:32], validation_data=(x[32:], y[32:]), epochs=2, batch_size=16, verbose=0)
            out, probs = model.evaluate(x[32:], y[32:]), model.predict(x[32:])
        else:
            opt = optim.SGD(list(model.named_parameters()), lr=0.05)
            h = fit(model, (x[:32], y[:32]), (x[32:], y[32:]), opt, epochs=2, batch_size=16, verbose=0,
                    metrics=["macro_f1"])
            out, probs = evaluate(model, (x[32:], y[32:])), predict(model, x[32:])
        runs.append(({k: v for k, v in h.history.items() if k not in TIMING}, out["loss"], probs))
    assert runs[0][0] == runs[1][0] and "val_macro_f1" in runs[0][0]
    assert runs[0][1] == runs[1][1]
    np.testing.assert_array_equal(runs[0][2], runs[1][2])


def test_model_compile_refuses_bad_settings():
    model = tiny_vgg()
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'"):
        model.compile("adamw")
    with pytest.raises(ValueError, match="unknown metrics"):
        model.compile("adam", metrics=["f2"])


@pytest.mark.parametrize("preset", ["last_block", "first_block", "first_last_blocks", "features"])
def test_frozen_weights_stay_bit_identical(preset):
    x, y = blobs(64)
    model = tiny_vgg()
    plan = apply_preset(model, preset)
    before = model.state_dict()
    frozen = {f"{layer}.{a}" for layer in plan.frozen_layers for a in ("kernel", "bias")} & set(before)
    expected_frozen = {"last_block": {"block1", "block2"}, "first_block": {"block2", "block3"},
                       "first_last_blocks": {"block2"}, "features": {"block1", "block2", "block3"}}[preset]
    assert {k.split("_")[0] for k in frozen} == expected_frozen
    fit(model, (x, y), None, sgd(model), epochs=2, batch_size=16, verbose=0)
    after = model.state_dict()
    for k in before:
        if k in frozen:
            np.testing.assert_array_equal(after[k], before[k], err_msg=k)
        else:
            assert not np.array_equal(after[k], before[k]), f"{k} should have trained"


def count_calls(layer):
    """Record the batch size of every run of ``layer``, alone or fused with the pool after it."""
    calls = []

    def wrap(name):
        original = getattr(layer, name)

        def counting(x, **kw):
            calls.append(x.shape[0])
            return original(x, **kw)
        setattr(layer, name, counting)

    wrap("forward")
    if hasattr(layer, "forward_pooled"):
        wrap("forward_pooled")
    return calls


@pytest.mark.parametrize("storage", ["memory", "disk"])
def test_feature_cache_gives_exactly_the_same_training(storage, tmp_path):
    x, y = blobs(80)
    runs = {}
    for cache in (None, storage):
        model = tiny_vgg()
        apply_preset(model, "last_block")
        assert frozen_prefix(model) == 4          # block1_conv1, block1_pool, block2_conv1, block2_pool
        calls = count_calls(model.layers[0])
        h = fit(model, (x[:60], y[:60]), (x[60:], y[60:]), sgd(model), epochs=3, batch_size=16, verbose=0,
                feature_cache=cache, cache_dir=str(tmp_path))
        runs[cache] = (numbers(h), model, sum(calls))
    assert runs[None][0] == runs[storage][0]
    assert_same_weights(runs[None][1], runs[storage][1])
    assert runs[None][2] == 3 * 80                  # recomputed every epoch (train 60 + val 20)
    assert runs[storage][2] == 80                   # each image through the frozen prefix once
    assert not os.listdir(tmp_path)                 # the disk cache is deleted at the end


def test_feature_cache_not_used_with_trainable_first_layer():
    model = tiny_vgg()
    apply_preset(model, "first_block")
    assert frozen_prefix(model) == 0


class InterruptAt(Callback):
    def __init__(self, epoch, batch):
        self.at = (epoch, batch)
        self.epoch = -1

    def on_epoch_begin(self, trainer, epoch):
        self.epoch = epoch

    def on_batch_end(self, trainer, batch, logs):
        if (self.epoch, batch) == self.at:
            raise KeyboardInterrupt


def resume_callbacks(tmp_path, name):
    return [EarlyStopping("val_accuracy", patience=3), ReduceLROnPlateau("val_loss", factor=0.5, patience=1),
            CSVLogger(tmp_path / f"{name}.csv")]


@pytest.mark.parametrize("preset", ["last_block", "all"])
def test_resume_equals_uninterrupted(tmp_path, preset):
    x, y = blobs(80)
    train, val = (x[:60], y[:60]), (x[60:], y[60:])

    model = tiny_vgg()
    apply_preset(model, preset)
    full = fit(model, train, val, sgd(model), epochs=5, batch_size=16, verbose=0,
               callbacks=resume_callbacks(tmp_path, "full"))

    # the same run, Ctrl-C in epoch 3: the checkpoint after epoch 2 survives
    ckpt = tmp_path / "last.h5"
    model2 = tiny_vgg()
    apply_preset(model2, preset)
    with pytest.raises(KeyboardInterrupt):
        fit(model2, train, val, sgd(model2), epochs=5, batch_size=16, verbose=0, checkpoint=str(ckpt),
            callbacks=resume_callbacks(tmp_path, "resumed") + [InterruptAt(2, 1)])

    # a new process would rebuild the model from scratch (other random weights, all unfrozen)
    model3 = tiny_vgg(seed=123)
    resumed = fit(model3, train, val, sgd(model3), epochs=5, batch_size=16, verbose=0, checkpoint=str(ckpt),
                  callbacks=resume_callbacks(tmp_path, "resumed") + [InterruptAt(-1, -1)], resume=str(ckpt))
    assert numbers(resumed) == numbers(full)
    assert_same_weights(model3, model)
    assert model3.trainable_flags() == model.trainable_flags()
    def rows(name):
        with open(tmp_path / name, newline="") as f:
            return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]
    assert len(rows("full.csv")) == 5 and rows("resumed.csv") == rows("full.csv")


def test_resume_with_other_callbacks_is_refused(tmp_path):
    x, y = blobs(32)
    model = tiny_vgg()
    ckpt = str(tmp_path / "c.h5")
    fit(model, (x, y), None, sgd(model), epochs=1, batch_size=16, verbose=0, checkpoint=ckpt)
    with pytest.raises(ValueError, match="same callbacks"):
        fit(model, (x, y), None, sgd(model), epochs=2, batch_size=16, verbose=0, checkpoint=ckpt,
            callbacks=[CSVLogger(tmp_path / "x.csv")], resume=ckpt)
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        fit(model, (x, y), None, sgd(model), epochs=2, verbose=0, resume=str(tmp_path / "nope.h5"))


def test_two_phase_unfreezes_and_lowers_lr_and_resumes(tmp_path):
    x, y = blobs(64)
    train, val = (x[:48], y[:48]), (x[48:], y[48:])

    def run(epochs, resume=None):
        model = tiny_vgg()
        plan = apply_preset(model, "two_phase", phase1_epochs=2)
        h = fit(model, train, val, sgd(model, lr=0.05), epochs=epochs, batch_size=16, verbose=0,
                callbacks=plan.callbacks(), checkpoint=str(tmp_path / "two.h5"), resume=resume)
        return model, h

    model, h = run(4)
    assert h["lr"] == pytest.approx([0.05, 0.05, 0.005, 0.005])
    assert all(model.trainable_flags().values())
    run(3)
    model2, h2 = run(4, resume=str(tmp_path / "two.h5"))
    assert numbers(h2) == numbers(h)
    assert_same_weights(model2, model)


def test_early_stopping_restores_best_weights(tmp_path):
    x, y = blobs(64)
    model = tiny_vgg()
    best = ModelCheckpoint(str(tmp_path / "best.h5"), monitor="val_loss", save_best_only=True)
    stop = EarlyStopping("val_loss", patience=2, restore_best_weights=True)
    # a learning rate so large that validation loss soon stops improving
    h = fit(model, (x[:48], y[:48]), (x[48:], y[48:]), sgd(model, lr=0.5), epochs=30, batch_size=16, verbose=0,
            callbacks=[stop, best])
    assert len(h["loss"]) < 30 and stop.stopped_epoch == len(h["loss"]) - 1
    assert int(np.argmin(h["val_loss"])) == stop.best_epoch
    from minicnn.io import read_checkpoint_weights
    arrays = read_checkpoint_weights(str(tmp_path / "best.h5"))[0]
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, arrays[k])


def test_progress_lines_come_before_what_callbacks_say_of_the_epoch(capsys):
    """The epoch's line is printed first, then the early-stopping message about it."""
    x, y = blobs(64)
    model = tiny_vgg()
    stop = EarlyStopping("val_loss", patience=1)
    h = fit(model, (x[:48], y[:48]), (x[48:], y[48:]), sgd(model, lr=0.5), epochs=30, batch_size=16, verbose=1,
            callbacks=[stop])
    lines = capsys.readouterr().err.splitlines()
    last = len(h["loss"])
    assert last < 30 and lines[-2].startswith(f"epoch {last}/30 - ") and lines[-1].startswith("early stopping")


def test_nan_loss_stops_naming_epoch_and_batch_and_keeps_checkpoint(tmp_path):
    from minicnn.functional import softmax_cross_entropy
    x, y = blobs(64)
    calls = []

    def poisoned(logits, labels):
        calls.append(1)
        loss = softmax_cross_entropy(logits, labels)
        return loss * float("nan") if len(calls) == 7 else loss   # 4 batches/epoch: epoch 2, batch 3

    model = tiny_vgg()
    ckpt = str(tmp_path / "last.h5")
    with pytest.warns(RuntimeWarning, match=r"epoch 2, batch 3.*last good checkpoint"):
        h = fit(model, (x, y), None, sgd(model), loss=poisoned, epochs=5, batch_size=16, verbose=0,
                checkpoint=ckpt)
    assert "epoch 2, batch 3" in h.stop_reason
    assert len(h["loss"]) == 1
    assert all(np.isfinite(v).all() for v in model.state_dict().values())
    from minicnn.io import load_checkpoint
    assert load_checkpoint(ckpt)["epoch"] == 1


def test_class_mismatch_is_a_clear_error():
    x, y = blobs(32, classes=3)
    model = tiny_vgg(classes=2)
    with pytest.raises(ValueError, match=r"'predictions' has 2 outputs but the training data has 3 classes"):
        fit(model, (x, y), epochs=1, verbose=0)


def test_grad_hook_runs_before_the_step():
    x, y = blobs(32)
    model = tiny_vgg()
    before = model.state_dict()
    seen = []

    def zero_grads(params):
        seen.append(sorted(n for n, _ in params))
        for _, p in params:
            p.grad = p.grad * 0
    fit(model, (x, y), None, optim.SGD(model.parameters(), lr=0.1), epochs=1, batch_size=16, verbose=0,
        grad_hook=zero_grads)
    assert len(seen) == 2 and "predictions.kernel" in seen[0]
    assert_same_weights_dict(model.state_dict(), before)


def assert_same_weights_dict(a, b):
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_per_group_learning_rates():
    x, y = blobs(16)
    model = tiny_vgg(dropout=0.0)
    groups = param_groups(model, 0.1, {"block*": 0.01})
    assert sorted(g["lr"] for g in groups) == pytest.approx([0.001, 0.1])
    grads = {}

    def keep(params):
        grads.update({n: p.grad.copy() for n, p in params})
    before = model.state_dict()
    fit(model, (x, y), None, optim.SGD(groups), epochs=1, batch_size=16, verbose=0, grad_hook=keep, shuffle=False)
    after = model.state_dict()
    for name, lr in (("block1_conv1.kernel", 0.001), ("fc1.kernel", 0.1)):   # plain SGD: p -= lr * g
        np.testing.assert_allclose(before[name] - after[name], lr * grads[name], rtol=1e-4, atol=1e-7)


def test_dataloader_source_trains_and_caches_without_augmentation():
    from minicnn.data import ArrayDataset, Augment, DataLoader
    rng = np.random.default_rng(0)
    y = np.arange(48) % 3
    images = rng.integers(0, 60, (48, 16, 16, 3)).astype(np.uint8)
    for i, c in enumerate(y):
        images[i, :, c * 5:(c + 1) * 5] = 250
    ds = ArrayDataset(images, y, class_names=["a", "b", "c"])
    for augment, prefix_passes in ((None, 48), (Augment.standard(seed=0), 2 * 48)):
        model = tiny_vgg()
        apply_preset(model, "last_block")
        calls = count_calls(model.layers[0])
        loader = DataLoader(ds, batch_size=16, shuffle=True, augment=augment, workers=0, progress=False)
        h = fit(model, loader, None, sgd(model), epochs=2, verbose=0)
        assert len(h["loss"]) == 2 and np.isfinite(h["loss"]).all()
        assert sum(calls) == prefix_passes


def test_ctrl_c_while_writing_a_checkpoint_finishes_the_file_first(tmp_path, monkeypatch):
    import signal

    import minicnn.io
    from minicnn.io import load_checkpoint
    real_save = minicnn.io.save_checkpoint
    seen = []

    def interrupted_save(path, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)          # Ctrl-C arrives in the middle of the write
        real_save(path, *args, **kwargs)
        seen.append(path)
    monkeypatch.setattr(minicnn.io, "save_checkpoint", interrupted_save)
    x, y = blobs(32)
    model = tiny_vgg()
    ckpt = str(tmp_path / "last.h5")
    with pytest.raises(KeyboardInterrupt):
        fit(model, (x, y), None, sgd(model), epochs=3, batch_size=16, verbose=0, checkpoint=ckpt)
    assert seen == [ckpt]                             # the write completed, then training stopped
    assert load_checkpoint(ckpt)["epoch"] == 1
