"""DataLoader: order as a function of (seed, epoch), resume, threads, the disk cache, bad files."""

import os
import warnings

import numpy as np
import pytest

from minicnn.data import (
    HAM10000,
    Augment,
    ClassBalancedSampler,
    CorruptImageError,
    DataLoader,
    DatasetError,
    ImageFolder,
    split,
    synthetic,
)
from minicnn.data import cache as cache_module
from minicnn.data.cache import DiskCache
from minicnn.preprocess import preprocess_input


@pytest.fixture(scope="module")
def ham_root(tmp_path_factory):
    return synthetic.ham10000(tmp_path_factory.mktemp("ham") / "HAM", n_images=30, seed=2, image_size=(40, 30))


def forget_open_caches():
    """What a new process sees: no cache objects open, no locks held by this one."""
    for cache in list(cache_module._OPEN.values()):
        cache.close()


def collect(loader):
    return [(x.copy(), y.copy()) for x, y in loader]


def test_batches_cover_the_data_in_order(ham_root):
    ds = HAM10000(ham_root, image_size=16)
    batches = collect(DataLoader(ds, batch_size=8, workers=0, progress=False))
    assert [len(y) for _, y in batches] == [8, 8, 8, 6]
    x = np.concatenate([b[0] for b in batches])
    assert x.dtype == np.uint8 and x.shape == (30, 16, 16, 3)
    for i in (0, 13, 29):
        np.testing.assert_array_equal(x[i], ds[i][0])
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), ds.labels)
    assert len(DataLoader(ds, batch_size=8, drop_last=True)) == 3
    assert [len(y) for _, y in DataLoader(ds, batch_size=8, drop_last=True, progress=False)] == [8, 8, 8]


def test_shuffle_and_augment_depend_on_seed_and_epoch_only(ham_root):
    ds = HAM10000(ham_root, image_size=16)
    kw = {"batch_size": 7, "shuffle": True, "augment": Augment.standard(seed=1), "seed": 3, "progress": False}
    serial = DataLoader(ds, workers=0, **kw)
    threaded = DataLoader(ds, workers=2, **kw)
    e0, e1 = collect(serial), collect(serial)           # epochs 0 and 1 (advances by itself)
    threaded.set_epoch(1)
    t1 = collect(threaded)
    for (a, la), (b, lb) in zip(e1, t1):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(e0[0][1], e1[0][1])
    # resume epoch 1 from batch 2: the same batches as an uninterrupted epoch
    threaded.set_epoch(1, start_batch=2)
    resumed = collect(threaded)
    assert len(resumed) == len(e1) - 2
    for (a, _), (b, _) in zip(e1[2:], resumed):
        np.testing.assert_array_equal(a, b)
    assert threaded.epoch == 2


def test_state_dict_mid_epoch(ham_root):
    ds = HAM10000(ham_root, image_size=8)
    loader = DataLoader(ds, batch_size=4, shuffle=True, workers=1, progress=False)
    loader.set_epoch(5)
    it = iter(loader)
    first = [next(it)[1] for _ in range(3)]
    state = loader.state_dict()
    rest = [y for _, y in it]
    assert state == {"epoch": 5, "start_batch": 3}
    again = DataLoader(ds, batch_size=4, shuffle=True, workers=0, progress=False)
    again.set_epoch(**state)
    for a, b in zip(rest, [y for _, y in again]):
        np.testing.assert_array_equal(a, b)
    assert len(first) + len(rest) == len(loader)


def test_preprocess_and_sampler(ham_root):
    ds = HAM10000(ham_root, image_size=8)
    x, _ = next(iter(DataLoader(ds, batch_size=5, preprocess="caffe", workers=0, progress=False)))
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, preprocess_input(np.stack([ds[i][0] for i in range(5)]), "caffe"))
    sampler = ClassBalancedSampler(ds.labels, num_samples=21, seed=0)
    loader = DataLoader(ds, batch_size=10, sampler=sampler, workers=0, progress=False)
    labels = np.concatenate([y for _, y in loader])
    np.testing.assert_array_equal(labels, ds.labels[sampler.indices(0)])
    with pytest.raises(ValueError, match="sampler"):
        DataLoader(ds, shuffle=True, sampler=sampler)


def test_disk_cache_means_no_decoding_after_the_first_pass(ham_root, tmp_path, monkeypatch):
    ds = HAM10000(ham_root, image_size=(12, 10))
    train, val = split(ds, (0.7, 0.3), seed=0)
    cache = tmp_path / "cache"
    first = collect(DataLoader(train, batch_size=6, cache_dir=cache, workers=2, progress=False))
    files = sorted(os.listdir(cache))
    assert any(f.endswith(".partial.npy") for f in files)           # val not decoded yet: no final file
    collect(DataLoader(val, batch_size=6, cache_dir=cache, workers=2, progress=False))
    final = [f for f in os.listdir(cache) if f.endswith(".npy") and "." not in f[:-4]]
    assert len(final) == 1 and not any(f.endswith(".partial.npy") for f in os.listdir(cache))
    arr = np.load(cache / final[0], mmap_mode="r")
    assert arr.shape == (30, 12, 10, 3)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded a file although the cache is complete")

    monkeypatch.setattr(HAM10000, "load_image", no_decoding)
    forget_open_caches()                                               # as in a new process
    again = collect(DataLoader(train, batch_size=6, cache_dir=cache, workers=2, progress=False))
    for (a, la), (b, lb) in zip(first, again):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)


def test_cache_key_follows_size_and_files(ham_root, tmp_path):
    a = HAM10000(ham_root, image_size=8).fingerprint()
    assert a == HAM10000(ham_root, image_size=8).fingerprint()
    assert a != HAM10000(ham_root, image_size=9).fingerprint()
    assert a != HAM10000(ham_root, image_size=8, fit="pad").fingerprint()
    with pytest.raises(DatasetError, match="image_size"):
        DiskCache.open(tmp_path, HAM10000(ham_root))


def test_interrupted_first_pass_resumes(ham_root, tmp_path, monkeypatch):
    ds = HAM10000(ham_root, image_size=8)
    loader = DataLoader(ds, batch_size=5, cache_dir=tmp_path, workers=0, progress=False)
    it = iter(loader)
    next(it), next(it)
    it.close()                                      # stop early: state flushed for what was done
    state = np.load(next(tmp_path / f for f in os.listdir(tmp_path) if f.endswith(".state.npy")))
    assert state.sum() >= 10 and state.sum() < 30
    forget_open_caches()
    decoded = []
    original = HAM10000.load_image
    monkeypatch.setattr(HAM10000, "load_image", lambda self, i: decoded.append(i) or original(self, i))
    collect(DataLoader(ds, batch_size=5, cache_dir=tmp_path, workers=0, progress=False))
    assert len(decoded) == 30 - state.sum() and min(decoded) >= 10


@pytest.fixture
def broken_folder(tmp_path):
    root = synthetic.lymphoma(tmp_path / "lym", n_per_class=(3, 3, 3))
    ds = ImageFolder(os.path.join(root, "lymphoma"))
    synthetic.truncate(ds.paths[1], 0.3)
    with open(ds.paths[7], "wb") as f:
        f.write(b"garbage")
    return ds


def test_corrupt_images_are_skipped_and_reported(broken_folder, tmp_path):
    ds = broken_folder
    ds.image_size = (8, 8)
    loader = DataLoader(ds, batch_size=4, cache_dir=tmp_path / "c", workers=2, progress=False)
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        batches = collect(loader)
    assert sum(len(y) for _, y in batches) == 7
    assert set(loader.bad_files) == {ds.paths[1], ds.paths[7]}
    report = (tmp_path / "c" / "bad_images.txt").read_text()
    assert ds.paths[1] in report and ds.paths[7] in report and report.startswith("# 2 unreadable")
    # later epochs skip them from the cache state, without reopening the files
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert sum(len(y) for _, y in collect(loader)) == 7


def test_strict_raises_naming_the_file(broken_folder):
    loader = DataLoader(broken_folder, batch_size=4, workers=2, strict=True, progress=False)
    with pytest.raises(CorruptImageError, match=os.path.basename(broken_folder.paths[1])):
        collect(loader)


def test_mixed_sizes_need_image_size(tmp_path):
    root = synthetic.chest_xray(tmp_path, n_train=6, n_val=2, n_test=3, junk=False)
    from minicnn.data import ChestXRay
    with pytest.raises(DatasetError, match="image_size"):
        collect(DataLoader(ChestXRay(root), batch_size=6, workers=0, progress=False))


def test_return_index_and_progress_bar_on_first_pass_only(ham_root, capsys):
    ds = HAM10000(ham_root, image_size=8)
    loader = DataLoader(ds, batch_size=8, shuffle=True, workers=0, return_index=True)
    seen = []
    for x, y, idx in loader:
        np.testing.assert_array_equal(y, ds.labels[idx])
        np.testing.assert_array_equal(x[0], ds[int(idx[0])][0])
        seen += idx.tolist()
    assert sorted(seen) == list(range(len(ds)))
    assert "decoding" in capsys.readouterr().err
    list(loader)
    assert "batch" not in capsys.readouterr().err


def test_medmnist_through_the_cache(tmp_path):
    from minicnn.data import MedMNIST
    path = synthetic.medmnist(tmp_path / "pneumoniamnist.npz", "pneumoniamnist", size=28, n_train=10, n_val=2,
                              n_test=2)
    ds = MedMNIST(path, "train", image_size=20)
    first = collect(DataLoader(ds, batch_size=4, cache_dir=tmp_path / "c", workers=2, progress=False))
    again = collect(DataLoader(ds, batch_size=4, cache_dir=tmp_path / "c", workers=2, progress=False))
    for (a, _), (b, _) in zip(first, again):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first[0][0][1], ds[1][0])
    assert first[0][0].shape == (4, 20, 20, 3)


def test_a_cache_being_filled_by_another_process_is_left_alone(ham_root, tmp_path):
    import fcntl
    ds = HAM10000(ham_root, image_size=8)
    stem = DiskCache.stem_for(tmp_path, ds)
    with open(stem + ".lock", "a") as other:       # another open file = another holder, as another process
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.warns(UserWarning, match="another process is filling the cache"):
            loader = DataLoader(ds, batch_size=10, cache_dir=tmp_path, workers=0, progress=False)
        assert loader.cache is None
        assert sum(len(y) for _, y in loader) == 30
        assert not os.path.exists(stem + ".partial.npy")
    # once released, the cache fills; when complete it is opened read-only without the lock
    collect(DataLoader(ds, batch_size=10, cache_dir=tmp_path, workers=0, progress=False))
    forget_open_caches()
    with open(stem + ".lock", "a") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert DataLoader(ds, batch_size=10, cache_dir=tmp_path, workers=0, progress=False).cache.complete
