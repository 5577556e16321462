"""Integrity: a flipped byte in a checkpoint is found on load and named; a damaged or
stale cache entry is found and rebuilt, never used."""

import os
import shutil
import warnings

import h5py
import numpy as np
import pytest
from faultkit import image_folder, sgd, tiny_vgg, train_args
from PIL import Image

import minicnn
from minicnn.cli import main
from minicnn.data import DataLoader, ImageFolder, decode_image
from minicnn.data.cache import DiskCache
from minicnn.functional import softmax_cross_entropy
from minicnn.io import WeightsError, load_checkpoint, save_checkpoint
from minicnn.train import Callback, apply_preset, fit


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = tiny_vgg()
    opt = sgd(model)
    loss = softmax_cross_entropy(model(np.ones((2, 16, 16, 3), np.float32)), np.array([0, 1]))
    loss.backward()
    opt.step()
    path = str(tmp_path_factory.mktemp("ckpt") / "c.h5")
    save_checkpoint(path, model, opt, epoch=3, history={"loss": [0.5, 0.25]})
    return path, model


def _flipped(path, out, position, bit=0):
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[position] ^= 1 << bit
    with open(out, "wb") as f:
        f.write(data)
    return out


def test_any_flipped_byte_is_detected_or_harmless(checkpoint, tmp_path):
    """200 seeded single-bit flips: each is a named WeightsError or loads the very same state.

    (Without the checksum trailer, libhdf5 itself crashed the process with a segmentation
    fault on some of these files.)"""
    path, model = checkpoint
    size = os.path.getsize(path)
    reference = load_checkpoint(path)
    rng = np.random.default_rng(17)
    detected = 0
    for position in rng.choice(size, 200, replace=False):
        damaged = _flipped(path, str(tmp_path / "d.h5"), int(position), int(rng.integers(8)))
        fresh = tiny_vgg(seed=1)
        try:
            state = load_checkpoint(damaged, fresh, sgd(fresh))
        except WeightsError as err:
            assert damaged in str(err) and "corrupt file" in str(err)
            detected += 1
            continue
        assert state["epoch"] == reference["epoch"] and state["history"] == reference["history"]
        for k, v in model.state_dict().items():
            np.testing.assert_array_equal(fresh.state_dict()[k], v)
    assert detected >= 180, detected            # the rest fell in the trailer's own spare text


def test_a_flip_in_weights_names_the_array(checkpoint, tmp_path):
    path, _ = checkpoint
    with h5py.File(path, "r") as f:
        offset = f["model/fc1.kernel"].id.get_offset()
    damaged = _flipped(path, str(tmp_path / "d.h5"), offset + 10)
    with pytest.raises(WeightsError, match=r"corrupt file: array /model/fc1.kernel fails its checksum"):
        load_checkpoint(damaged)


def test_resume_and_evaluate_refuse_a_damaged_checkpoint_by_name(tmp_path, capsys):
    image_folder(tmp_path / "data", per_class=6)
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(train_args(tmp_path / "data", out, "--preset", "all", epochs=1)) == 0
        for name in ("last.h5", "best.h5"):
            with h5py.File(out / name, "r") as f:
                offset = f["model/predictions.kernel"].id.get_offset()
            _flipped(str(out / name), str(out / name), offset)
        capsys.readouterr()
        assert main(train_args(tmp_path / "data", out, "--preset", "all", "--resume", epochs=2)) == 2
        assert f"{out / 'last.h5'}: corrupt file: array /model/predictions.kernel" in capsys.readouterr().err
        assert main(["evaluate", str(out / "best.h5")]) == 2
        assert f"{out / 'best.h5'}: corrupt file" in capsys.readouterr().err


def _images(loader):
    return np.concatenate([x for x, _ in loader])


def test_a_damaged_decoded_image_cache_entry_is_decoded_again_and_repaired(tmp_path):
    image_folder(tmp_path / "data", per_class=4)
    ds = ImageFolder(tmp_path / "data", image_size=16)
    truth = np.stack([decode_image(p, (16, 16)) for p in ds.paths])
    cache = tmp_path / "cache"
    np.testing.assert_array_equal(_images(DataLoader(ds, batch_size=4, cache_dir=cache, progress=False)), truth)
    DiskCache.open(cache, ds).close()
    final = DiskCache.stem_for(cache, ds) + ".npy"
    pixels = np.load(final, mmap_mode="r+")
    pixels[5, 3, 4, 1] ^= 0x10                 # one bit of sample 5, as a bad disk would
    pixels.flush()
    del pixels
    with pytest.warns(RuntimeWarning, match=r"sample 5 fails its checksum; decoding it again"):
        got = _images(DataLoader(ds, batch_size=4, cache_dir=cache, progress=False))
    np.testing.assert_array_equal(got, truth)
    DiskCache.open(cache, ds).close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # repaired on disk: no warning the next time
        np.testing.assert_array_equal(_images(DataLoader(ds, batch_size=4, cache_dir=cache, progress=False)),
                                      truth)
    DiskCache.open(cache, ds).close()


def test_a_repair_does_not_close_the_file_under_a_loader_thread_reading_it(tmp_path, monkeypatch):
    """Found when tried (CI, once): a loader thread inside get() while another thread's
    repair reopened the complete cache for writing read through a closed descriptor
    (EBADF). The repair must close no descriptor a reader may hold, and a reader that
    took the file before the swap must still read the right rows."""
    image_folder(tmp_path / "data", per_class=4)
    ds = ImageFolder(tmp_path / "data", image_size=16)
    truth = np.stack([decode_image(p, (16, 16)) for p in ds.paths])
    cache = tmp_path / "cache"
    _images(DataLoader(ds, batch_size=4, cache_dir=cache, progress=False))
    opened = DiskCache.open(cache, ds)
    try:
        reader = opened.images                    # what a thread in get() holds
        assert not reader.writable
        held = reader.fd
        closed, real_close = [], os.close
        monkeypatch.setattr(os, "close", lambda fd: (closed.append(fd), real_close(fd))[1])
        opened.put(5, truth[5])                   # a repair: reopens the cache for writing
        monkeypatch.setattr(os, "close", real_close)
        assert opened.images is not reader and held not in closed
        for i in (0, 5, 11):
            np.testing.assert_array_equal(reader.read(i), truth[i])
        opened.flush()
    finally:
        opened.close()


def test_a_source_replaced_with_size_and_mtime_kept_is_not_served_stale(tmp_path):
    paths = image_folder(tmp_path / "data", per_class=4, ext=".bmp")     # uncompressed: equal sizes
    cache = tmp_path / "cache"
    ds = ImageFolder(tmp_path / "data", image_size=16)
    _images(DataLoader(ds, batch_size=4, cache_dir=cache, progress=False))
    DiskCache.open(cache, ds).close()
    st = os.stat(paths[0])
    shutil.copyfile(paths[1], paths[0])         # same size, other pixels
    assert os.path.getsize(paths[0]) == st.st_size
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns))   # as cp -p / rsync -t would leave it
    ds = ImageFolder(tmp_path / "data", image_size=16)
    got = _images(DataLoader(ds, batch_size=4, cache_dir=cache, progress=False))
    np.testing.assert_array_equal(got[0], decode_image(paths[1], (16, 16)))
    DiskCache.open(cache, ds).close()


def test_a_cache_filled_for_other_preprocessing_is_never_served(tmp_path):
    """One cache folder, four decodings of one data set (size 16 / 12, crop / pad): each read gives
    its own decoding, also after the others were cached (none is served for another)."""
    rng = np.random.default_rng(1)
    for k in range(6):                              # 30 x 20: cropping and padding differ
        os.makedirs(tmp_path / "data" / "ab"[k % 2], exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)).save(tmp_path / "data" / "ab"[k % 2]
                                                                               / f"{k}.png")
    cache = tmp_path / "cache"
    settings = [(16, "crop"), (16, "pad"), (12, "crop"), (16, "crop")]     # the last: served from the cache
    for size, mode in settings:
        ds = ImageFolder(tmp_path / "data", image_size=size, fit=mode)
        truth = np.stack([decode_image(p, (size, size), fit=mode) for p in ds.paths])
        np.testing.assert_array_equal(_images(DataLoader(ds, batch_size=4, cache_dir=cache, progress=False)),
                                      truth)
        DiskCache.open(cache, ds).close()
    crop, pad = (np.stack([decode_image(p, (16, 16), fit=f) for p in ds.paths]) for f in ("crop", "pad"))
    assert not np.array_equal(crop, pad)
    assert len([n for n in os.listdir(cache) if n.endswith(".crc.npy")]) == 3


class ChangeFrozenWeights(Callback):
    """At the start of epoch 2, overwrite a frozen block-1 weight (as loading weights would)."""

    def on_epoch_begin(self, trainer, epoch):
        if epoch == 1:
            layer = trainer.model.layers[0]
            layer.kernel.data = layer.kernel.data * np.float32(0.5)


def test_feature_cache_is_rebuilt_when_frozen_weights_change():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(24, 16, 16, 3)).astype(np.float32), np.arange(24) % 3
    runs = []
    for cache in ("memory", None):
        model = tiny_vgg()
        apply_preset(model, "last_block")
        minicnn.seed(0)
        h = fit(model, (x, y), None, sgd(model), epochs=3, batch_size=8, verbose=0, feature_cache=cache,
                callbacks=[ChangeFrozenWeights()])
        runs.append(h["loss"])
    assert runs[0] == runs[1]                   # the cache gave what recomputing gives
