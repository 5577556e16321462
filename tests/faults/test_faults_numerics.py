"""Numerics and leaks: non-finite inputs and losses stop training by name with the last good
checkpoint kept; clipnorm / clipvalue / global_clipnorm as Keras (checked against float64
arithmetic written out here); RSS flat over a 20-epoch run."""

import json
import math
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from faultkit import image_folder, sgd, tiny_vgg, train_args

import minicnn
from minicnn import optim
from minicnn.data import ImageFolder
from minicnn.functional import softmax_cross_entropy
from minicnn.io import load_checkpoint
from minicnn.nn import Parameter
from minicnn.train import fit

# ---- gradient clipping ----------------------------------------------------------------------

GRADS = [np.array([[3.0, -4.0], [0.5, 0.25]], np.float32),      # norm 5.03: clipped by clipnorm=1
         np.array([0.1, -0.2, 0.05], np.float32)]                # norm 0.23: left alone


def clip64(grads, kind, c):
    """Keras' clipping, in float64."""
    g = [x.astype(np.float64) for x in grads]
    if kind == "clipvalue":
        return [np.clip(x, -c, c) for x in g]
    if kind == "clipnorm":
        return [x * c / max(np.sqrt((x * x).sum()), c) for x in g]
    total = math.sqrt(sum((x * x).sum() for x in g))
    return [x * c / max(total, c) for x in g]


def reference(kind, c, opt, steps):
    """Parameters after ``steps`` identical-gradient steps of Keras SGD(momentum) or Adam, float64."""
    p = [np.ones_like(x, np.float64) for x in GRADS]
    state = [[np.zeros_like(x), np.zeros_like(x)] for x in p]
    for t in range(1, steps + 1):
        for i, g in enumerate(clip64(GRADS, kind, c)):
            if opt == "sgd":                                  # v = m v - lr g; p += v
                state[i][0] = 0.9 * state[i][0] - 0.1 * g
                p[i] = p[i] + state[i][0]
            else:                                             # Keras Adam
                m, v = state[i]
                m[:] = 0.9 * m + 0.1 * g
                v[:] = 0.999 * v + 0.001 * g * g
                p[i] = p[i] - 0.01 * math.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t) * m / (np.sqrt(v) + 1e-7)
    return p


@pytest.mark.parametrize("opt", ["sgd", "adam"])
@pytest.mark.parametrize("kind,c", [("clipnorm", 1.0), ("clipvalue", 0.3), ("global_clipnorm", 2.0),
                                    ("clipnorm", 100.0)])
def test_gradient_clipping_matches_a_float64_computation(opt, kind, c):
    params = [Parameter(np.ones_like(g)) for g in GRADS]
    make = optim.SGD if opt == "sgd" else optim.Adam
    settings = {"lr": 0.1, "momentum": 0.9} if opt == "sgd" else {"lr": 0.01}
    optimizer = make(params, **settings, **{kind: c})
    for _ in range(3):
        for p, g in zip(params, GRADS):
            p.grad = g.copy()
        optimizer.step()
    for p, g, expected in zip(params, GRADS, reference(kind, c, opt, 3)):
        np.testing.assert_allclose(p.numpy(), expected, rtol=2e-6, atol=2e-7)
        np.testing.assert_array_equal(p.grad, g)             # the stored gradient itself is not changed


def test_only_one_kind_of_clipping_and_positive_thresholds():
    params = [Parameter(np.ones(3, np.float32))]
    with pytest.raises(ValueError, match="only one of clipnorm, global_clipnorm and clipvalue may be set"):
        optim.SGD(params, clipnorm=1.0, clipvalue=1.0)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="clipnorm must be a finite number > 0"):
            optim.Adam(params, clipnorm=bad)


def test_train_cli_clips_the_gradients_as_asked(tmp_path):
    """minicnn train --clipnorm / --clipvalue reach the optimizer: a huge threshold changes no bit, a
    tiny clipnorm holds every weight within steps * lr * c of where it started (SGD, no momentum)."""
    from minicnn.cli import main
    from minicnn.experiments.models import build_model
    from minicnn.io import read_checkpoint_weights

    image_folder(tmp_path / "data", per_class=6)

    def trained(name, *extra):
        out = tmp_path / name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert main(train_args(tmp_path / "data", out, "--preset", "all", "--momentum", "0", "--patience",
                                   "0", *extra, epochs=1)) == 0
        return list(read_checkpoint_weights(str(out / "last.h5"))[0].values())

    minicnn.seed(0)                                  # what minicnn train --seed 0 builds first
    initial = [p.numpy().copy() for p in build_model("tiny", 32, 3, None).parameters()]
    free, huge, tiny = trained("free"), trained("huge", "--clipvalue", "1e9"), trained("tiny", "--clipnorm", "1e-12")
    assert all(np.array_equal(a, b) for a, b in zip(free, huge))
    assert max(float(np.abs(a - w).max()) for a, w in zip(free, initial)) > 1e-4      # unclipped: it moved
    steps, lr = 2, 0.01                               # 10 training images in batches of 8
    for a, w in zip(tiny, initial):
        assert np.linalg.norm(a.astype(np.float64) - w) <= steps * lr * 1e-12 * 1.01


# ---- non-finite inputs and losses -------------------------------------------------------------

def test_nan_in_an_input_batch_stops_naming_batch_and_sample(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(24, 16, 16, 3)).astype(np.float32), np.arange(24) % 3
    x[13, 2, 3, 1] = np.nan
    x[13, 4, 4, 0] = np.inf
    model = tiny_vgg()
    ckpt = str(tmp_path / "last.h5")
    with pytest.warns(RuntimeWarning, match=r"input batch 2 of epoch 1 holds 2 NaN or infinite value\(s\), "
                                            r"in sample\(s\) index 13"):
        h = fit(model, (x, y), None, sgd(model), epochs=2, batch_size=8, verbose=0, checkpoint=ckpt,
                checkpoint_minutes=0, shuffle=False)
    assert "index 13" in h.stop_reason
    assert all(np.isfinite(v).all() for v in model.state_dict().values())
    assert load_checkpoint(ckpt)["partial"]["batches"] == 1   # the last good batch's checkpoint


def test_nan_in_a_transformed_image_names_its_file(tmp_path):
    paths = image_folder(tmp_path / "data", per_class=4)
    ds = ImageFolder(tmp_path / "data", image_size=16)
    bad = ds.paths.index(paths[5])

    def transform(images):
        out = images.astype(np.float32) / 255
        out[np.all(images == images_of_bad, axis=(1, 2, 3))] = np.nan
        return out
    from minicnn.data import decode_image
    images_of_bad = decode_image(paths[5], (16, 16))
    model = tiny_vgg()
    with pytest.warns(RuntimeWarning, match=paths[5].replace(".", r"\.")):
        h = fit(model, ds, None, sgd(model), epochs=1, batch_size=8, verbose=0, transform=transform,
                shuffle=False)
    assert paths[5] in h.stop_reason and bad >= 0


def test_loss_that_becomes_nan_at_batch_k_keeps_the_last_good_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 16, 16, 3)).astype(np.float32), np.arange(32) % 3
    calls = [0]
    weights_before_batch = {}

    def loss(logits, labels):
        calls[0] += 1
        if calls[0] == 7:                                      # epoch 2, batch 3
            weights_before_batch.update({k: v.copy() for k, v in model.state_dict().items()})
            return softmax_cross_entropy(logits, labels) * float("nan")
        return softmax_cross_entropy(logits, labels)
    model = tiny_vgg()
    ckpt = str(tmp_path / "last.h5")
    with pytest.warns(RuntimeWarning, match=r"loss became nan at epoch 2, batch 3.*last good checkpoint: "
                                            + ckpt.replace(".", r"\.")):
        h = fit(model, (x, y), None, sgd(model), loss=loss, epochs=3, batch_size=8, verbose=0,
                checkpoint=ckpt, checkpoint_minutes=0)
    assert len(h["loss"]) == 1 and "epoch 2, batch 3" in h.stop_reason
    state = load_checkpoint(ckpt)
    assert state["epoch"] == 1 and state["partial"]["batches"] == 2      # after batch 2 of epoch 2
    from minicnn.io import read_checkpoint_weights
    stored, _, _ = read_checkpoint_weights(ckpt)
    for k, v in weights_before_batch.items():                 # the update of the NaN batch never happened
        np.testing.assert_array_equal(stored[k], v)
        np.testing.assert_array_equal(model.state_dict()[k], v)


# ---- memory ---------------------------------------------------------------------------------

RSS_RUN = """
    import json, os, sys, warnings
    sys.path.insert(0, {tests!r})
    import psutil
    from faultkit import image_folder, sgd, tiny_vgg
    from minicnn.data import DataLoader, ImageFolder, split
    from minicnn.train import Callback, CSVLogger, apply_preset, fit
    image_folder({data!r}, per_class=40, size=24)
    train, val = split(ImageFolder({data!r}, image_size=16), (0.75, 0.25), by="image")
    rss = []
    class Rss(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            rss.append(psutil.Process().memory_info().rss)
    model = tiny_vgg()
    apply_preset(model, "last_block")                     # the feature cache too
    warnings.simplefilter("ignore")
    fit(model, DataLoader(train, batch_size=8, shuffle=True, workers=2, progress=False),
        DataLoader(val, batch_size=8, workers=2, progress=False), sgd(model), epochs=20, verbose=0,
        callbacks=[Rss(), CSVLogger({csv!r})], checkpoint={ckpt!r}, checkpoint_minutes=0)
    print(json.dumps(rss))
"""


def test_rss_stays_flat_over_twenty_epochs(tmp_path):
    code = RSS_RUN.format(tests=os.path.dirname(__file__), data=str(tmp_path / "data"),
                          csv=str(tmp_path / "h.csv"), ckpt=str(tmp_path / "last.h5"))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": os.getcwd()}, check=False)
    assert done.returncode == 0, done.stderr
    rss = json.loads(done.stdout.strip().splitlines()[-1])
    growth = max(rss[2:]) / rss[1] - 1                        # after epoch 2 (caches and pools are warm)
    print(f"\nRSS after epoch 2: {rss[1] / 2**20:.1f} MiB, most after: {max(rss[2:]) / 2**20:.1f} MiB, "
          f"growth {100 * growth:.2f}% (epochs 1-20: {[round(r / 2**20, 1) for r in rss]})")
    assert len(rss) == 20 and growth < 0.05
