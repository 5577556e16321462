"""Checkpoints: an exact round trip, an exact resume, atomic writes, clear refusals."""

import os

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minicnn
from minicnn import functional as F
from minicnn import nn, optim
from minicnn.io import WeightsError, load_checkpoint, save_checkpoint
from minicnn.io import checkpoint as ckpt
from minicnn.models.synthetic_weights import write_synthetic_vgg16

X = np.random.default_rng(2).random((6, 8, 8, 3), dtype=np.float32)
Y = np.array([0, 1, 2, 0, 1, 2])


def small_model():
    model = nn.Sequential([nn.Conv2D(4, 3, activation="relu", name="conv_a"), nn.MaxPool2D(name="pool"),
                           nn.Flatten(name="flatten"), nn.Dense(8, "relu", name="fc"),
                           nn.Dropout(0.5, name="drop"), nn.Dense(3, name="out")], name="small")
    return model.build((None, 8, 8, 3))


def train_steps(model, opt, steps):
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = F.softmax_cross_entropy(model(X), Y)
        loss.backward()
        opt.step()


def assert_tree_equal(a, b):
    assert type(a) is type(b), (a, b)
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_tree_equal(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_tree_equal(x, y)
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b)
    else:
        assert a == b


@pytest.mark.parametrize("make_opt", [lambda p: optim.Adam(p, lr=1e-2),
                                      lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True)])
def test_round_trip_is_exact(tmp_path, make_opt):
    minicnn.seed(3)
    model = small_model()
    model.freeze("conv_a")
    opt = make_opt(model.parameters())
    train_steps(model, opt, 2)
    state = {"epoch": 7, "history": {"loss": [1.5, 0.75, float("nan")], "val_acc": [0.5, float("inf")]},
             "best": np.float32(0.25), "counts": np.arange(5, dtype=np.int16), "flags": (True, None, "x"),
             "nested": {3: {"a": np.zeros((2, 0))}, "k": [np.ones(2), 1]}, "note": "text", "step": np.int64(12)}
    save_checkpoint(tmp_path / "c.h5", model, opt, **state)
    rng_at_save = minicnn.random.get_state()

    minicnn.seed(99)
    fresh = small_model()
    fresh_opt = make_opt(fresh.parameters())
    loaded = load_checkpoint(tmp_path / "c.h5", fresh, fresh_opt)
    assert loaded.pop("model_config") is None  # a plain Sequential has no get_config
    assert_tree_equal(loaded.pop("rng_state"), rng_at_save)
    assert_tree_equal(loaded, state)
    assert_tree_equal(fresh.state_dict(), model.state_dict())
    assert fresh.trainable_flags() == model.trainable_flags() and not fresh.get_layer("conv_a").kernel.trainable
    assert_tree_equal(fresh_opt.state_dict(), opt.state_dict())


def test_resume_continues_exactly(tmp_path):
    minicnn.seed(5)
    model = small_model()
    opt = optim.Adam(model.parameters(), lr=1e-2)
    train_steps(model, opt, 3)
    save_checkpoint(tmp_path / "c.h5", model, opt, epoch=3)
    train_steps(model, opt, 3)  # dropout draws from minicnn.random: the RNG state matters
    straight = model.state_dict()

    minicnn.seed(1234)
    resumed = small_model()
    resumed_opt = optim.Adam(resumed.parameters(), lr=1e-2)
    state = load_checkpoint(tmp_path / "c.h5", resumed, resumed_opt, restore_rng=True)
    assert state["epoch"] == 3
    train_steps(resumed, resumed_opt, 3)
    assert_tree_equal(resumed.state_dict(), straight)


def test_vgg16_checkpoint_keeps_its_config(tmp_path):
    from minicnn.models import vgg16, vgg16_from_config
    model = vgg16(input_shape=(32, 32, 3), head="gap", classes=2)
    save_checkpoint(tmp_path / "v.h5", model, epoch=1)
    state = load_checkpoint(tmp_path / "v.h5")
    rebuilt = vgg16_from_config(state["model_config"])
    load_checkpoint(tmp_path / "v.h5", rebuilt)
    assert_tree_equal(rebuilt.state_dict(), model.state_dict())
    assert rebuilt.get_config() == model.get_config()


def test_a_failed_write_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    model = small_model()
    path = tmp_path / "c.h5"
    save_checkpoint(path, model, epoch=1)
    original = path.read_bytes()

    def crash(*args, **kwargs):
        raise RuntimeError("power cut")

    monkeypatch.setattr(ckpt, "encode_tree", crash)  # dies in the middle of writing the file
    with pytest.raises(RuntimeError, match="power cut"):
        save_checkpoint(path, model, epoch=2)
    monkeypatch.undo()
    monkeypatch.setattr(os, "replace", crash)  # dies after writing, before the rename
    with pytest.raises(RuntimeError, match="power cut"):
        save_checkpoint(path, model, epoch=3)
    monkeypatch.undo()
    assert path.read_bytes() == original and load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5"]  # no temporary files left


def test_refusals(tmp_path):
    model = small_model()
    save_checkpoint(tmp_path / "c.h5", model, epoch=1)
    other = nn.Sequential([nn.Conv2D(4, 3, name="conv_a"), nn.Flatten(name="flatten"), nn.Dense(3, name="out")])
    other.build((None, 8, 8, 3))
    before = other.state_dict()
    with pytest.raises(WeightsError) as info:
        load_checkpoint(tmp_path / "c.h5", other)
    message = str(info.value)
    assert "c.h5" in message and "'fc.kernel' (64, 8) is in the checkpoint but not in the model" in message
    assert "'out.kernel': expected shape (256, 3), found (8, 3)" in message
    assert_tree_equal(other.state_dict(), before)
    with pytest.raises(WeightsError, match="no optimizer state"):
        load_checkpoint(tmp_path / "c.h5", model, optim.SGD(model.parameters()))
    keras = write_synthetic_vgg16(tmp_path / "k.h5", "A", input_shape=(32, 32, 3))
    with pytest.raises(WeightsError, match=r"k\.h5: not a minicnn checkpoint"):
        load_checkpoint(keras)
    (tmp_path / "junk.h5").write_text("junk")
    with pytest.raises(WeightsError, match="not a readable HDF5 file"):
        load_checkpoint(tmp_path / "junk.h5")
    with pytest.raises(TypeError, match=r"state\['bad'\]: cannot store a object"):
        save_checkpoint(tmp_path / "x.h5", model, bad=object())
    with pytest.raises(ValueError, match="key 'a/b' cannot be stored"):
        save_checkpoint(tmp_path / "x.h5", model, history={"a/b": 1})
    with pytest.raises(TypeError, match="arrays must be numeric"):
        save_checkpoint(tmp_path / "x.h5", model, names=np.array(["a"], dtype=object))
    assert not (tmp_path / "x.h5").exists() and not list(tmp_path.glob(".*.tmp"))


def test_long_history_beyond_the_attribute_limit(tmp_path):
    history = {"batch_loss": [float(v) for v in np.random.default_rng(0).random(20_000)], "note": "x" * 70_000}
    save_checkpoint(tmp_path / "c.h5", small_model(), history=history)
    assert_tree_equal(load_checkpoint(tmp_path / "c.h5")["history"], history)


def test_layout_is_plain_hdf5_without_pickles(tmp_path):
    model = small_model()
    opt = optim.Adam(model.parameters())
    train_steps(model, opt, 1)
    save_checkpoint(tmp_path / "c.h5", model, opt, epoch=1)
    with h5py.File(tmp_path / "c.h5", "r") as f:
        assert f.attrs["format"] == "minicnn-checkpoint"
        assert f["model/conv_a.kernel"].shape == (3, 3, 3, 4) and bool(f["model/conv_a.kernel"].attrs["trainable"])
        assert f["state"].attrs["epoch"] == "1"

        def no_objects(name, item):
            if isinstance(item, h5py.Dataset):
                assert item.dtype.kind in "biufc", name
        f.visititems(no_objects)


# ---- any nested state survives the HDF5 encoding unchanged --------------------------------

KEYS = st.one_of(st.integers(-5, 1000), st.text("abcXYZ019_-. ", min_size=1, max_size=8)).filter(
    lambda k: k not in (".",))
DTYPES = st.sampled_from([np.bool_, np.int8, np.int64, np.uint16, np.float16, np.float32, np.float64, np.complex64])
ARRAYS = st.builds(lambda dtype, shape, seed: np.random.default_rng(seed).normal(size=shape).astype(dtype) * 3,
                   DTYPES, st.lists(st.integers(0, 3), max_size=3).map(tuple), st.integers(0, 2**16))
SCALARS = st.builds(lambda a: a.reshape(-1)[0] if a.size else a.dtype.type(0), ARRAYS)
JSON = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True), st.text(max_size=6))


def unique_str_keys(d):
    return len({str(k) for k in d}) == len(d)


TREES = st.recursive(
    st.one_of(JSON, ARRAYS, SCALARS, st.lists(JSON, max_size=3)),
    lambda children: st.one_of(st.lists(children, max_size=3), st.lists(children, max_size=3).map(tuple),
                               st.dictionaries(KEYS, children, max_size=3).filter(unique_str_keys)),
    max_leaves=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(KEYS, TREES, max_size=4).filter(unique_str_keys))
def test_any_state_tree_round_trips(tree):
    with h5py.File("mem.h5", "w", driver="core", backing_store=False) as f:
        ckpt.encode_tree(f.create_group("state"), tree)
        assert_tree_equal(ckpt.decode_tree(f["state"]), tree)
