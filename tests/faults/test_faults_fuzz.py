"""Fuzzing every reader of user files with hypothesis: no exception escapes but minicnn's named ones.

Readers: Keras HDF5 weights, minicnn checkpoints, metadata CSVs (HAM10000, split files), and
the image decoder. Inputs are valid files mutated (bytes flipped, cut, overwritten; HDF5
objects and attributes deleted or replaced with other types and shapes) and random bytes.

Third-party HDF5 files are mutated through h5py (structure and values), not byte by byte:
libhdf5 itself can crash the process on some damaged bytes (found here), which no Python
code can catch; our own checkpoints carry a checksum trailer checked before HDF5 reads
them, so those are fuzzed byte by byte too.

About a minute in all; MINICNN_FUZZ_LONG=1 runs ten times as many examples. The number of
inputs tried is printed (pytest -s).
"""

import os
import shutil
import tempfile

import h5py
import numpy as np
import pytest
from faultkit import tiny_vgg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from minicnn.data import HAM10000, DatasetError, decode_image, load_split, synthetic
from minicnn.io import WeightsError, load_checkpoint, load_keras_weights, save_checkpoint, save_keras_weights

SCALE = 10 if os.environ.get("MINICNN_FUZZ_LONG") == "1" else 1
FUZZ = settings(max_examples=250 * SCALE, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
TRIED: dict[str, int] = {}


def count(name):
    TRIED[name] = TRIED.get(name, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    print(f"\nfuzz inputs tried: {TRIED} (total {sum(TRIED.values())})")


@pytest.fixture(scope="module")
def work():
    folder = tempfile.mkdtemp(prefix="minicnn-fuzz-")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def mutate(data: bytes, edits) -> bytes:
    """Apply (kind, position fraction, value) edits: flip a byte, overwrite a run, cut the file."""
    data = bytearray(data)
    for kind, where, value in edits:
        if not data:
            break
        i = min(int(where * len(data)), len(data) - 1)
        if kind == "flip":
            data[i] ^= (value % 255) + 1
        elif kind == "run":
            data[i:i + 8] = bytes([value % 256]) * 8
        else:
            del data[i:]
    return bytes(data)


EDITS = st.lists(st.tuples(st.sampled_from(["flip", "flip", "run", "cut"]), st.floats(0, 1), st.integers(0, 255)),
                 min_size=1, max_size=4)


# ---- image decoding ---------------------------------------------------------------------------

def _seed_images():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (12, 10, 3)).astype(np.uint8)
    seeds = {}
    for fmt, mode in (("PNG", "RGB"), ("JPEG", "RGB"), ("PNG", "P"), ("BMP", "RGB"), ("TIFF", "RGB"),
                      ("GIF", "P"), ("PNG", "I;16")):
        image = Image.fromarray(pixels).convert(mode) if mode != "I;16" else \
            Image.fromarray(pixels[..., 0].astype(np.uint16) * 200)
        import io
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        seeds[fmt + mode] = buffer.getvalue()
    return seeds


IMAGES = _seed_images()


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
@FUZZ
@given(seed=st.sampled_from(sorted(IMAGES)), edits=EDITS, size=st.sampled_from([None, (8, 8), (5, 7)]))
def test_fuzz_image_decoder(work, seed, edits, size):
    count("image")
    path = os.path.join(work, "x.img")
    with open(path, "wb") as f:
        f.write(mutate(IMAGES[seed], edits))
    try:
        image = decode_image(path, size)
    except DatasetError:
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    if size is not None:
        assert image.shape[:2] == size


@FUZZ
@given(data=st.binary(max_size=300))
def test_fuzz_image_decoder_random_bytes(work, data):
    count("image-random")
    path = os.path.join(work, "r.img")
    with open(path, "wb") as f:
        f.write(data)
    try:
        decode_image(path, (8, 8))
    except DatasetError:
        pass


# ---- metadata CSVs ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ham(work):
    root = os.path.join(work, "ham")
    synthetic.ham10000(root, n_images=28, image_size=(12, 10), min_per_class=4)  # splittable
    shutil.copyfile(os.path.join(root, "HAM10000_metadata.csv"), os.path.join(work, "good.csv"))
    return root


def _read(path):
    with open(path, "rb") as f:
        return f.read()


CELL = st.one_of(st.text(max_size=12), st.sampled_from(["nv", "mel", "bkl", "ISIC_0000000", "", ",", '"', "\t"]))


@FUZZ
@given(edits=EDITS, header=st.booleans(), rows=st.lists(st.lists(CELL, max_size=9), max_size=5),
       tail=st.binary(max_size=20))
def test_fuzz_ham10000_metadata(ham, edits, header, rows, tail):
    count("metadata-csv")
    root, good = ham, _read(os.path.join(os.path.dirname(ham), "good.csv"))
    text = mutate(good, edits)
    if header:   # or a made-up table under the real header
        lines = good.split(b"\n", 1)[0] + b"\n"
        text = lines + b"\n".join(",".join(r).encode("utf-8", "surrogatepass") for r in rows) + tail
    with open(os.path.join(root, "HAM10000_metadata.csv"), "wb") as f:
        f.write(text)
    try:
        ds = HAM10000(root)
    except DatasetError:
        return
    assert len(ds.labels) == len(ds.paths) == len(ds.groups) > 0


@FUZZ
@given(edits=EDITS)
def test_fuzz_split_file(ham, work, edits):
    count("split-csv")
    from minicnn.data import save_split, split
    root = ham
    shutil.copyfile(os.path.join(work, "good.csv"), os.path.join(root, "HAM10000_metadata.csv"))
    ds = HAM10000(root)
    path = os.path.join(work, "split.csv")
    save_split(path, split(ds, (0.6, 0.2, 0.2), by="image"))
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(mutate(data, edits))
    try:
        parts = load_split(path, ds)
    except DatasetError:
        return
    assert all(len(p) >= 0 for p in parts.values())


# ---- checkpoints (ours: byte by byte) -----------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(work):
    model = tiny_vgg()
    path = os.path.join(work, "good.h5")
    save_checkpoint(path, model, epoch=2, history={"loss": [1.0, 0.5]})
    return model, path


@FUZZ
@given(edits=EDITS)
def test_fuzz_checkpoint_bytes(checkpoint, work, edits):
    count("checkpoint-bytes")
    model, good = checkpoint
    path = os.path.join(work, "c.h5")
    with open(path, "wb") as f:
        f.write(mutate(_read(good), edits))
    fresh = tiny_vgg(seed=1)
    try:
        state = load_checkpoint(path, fresh)
    except WeightsError:
        return
    assert state["epoch"] == 2                     # not detected: the damage was where nothing is read
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[k], v)


# ---- HDF5 structure: checkpoints without a trailer and Keras weight files ---------------------------

def _objects(f):
    found = []
    f.visititems(lambda name, obj: found.append(name))
    return found


VALUES = st.one_of(st.integers(-5, 5), st.text(max_size=20), st.binary(max_size=10),
                   st.sampled_from(['["a", "b"]', "null", "{}", '{"x": 1}', "[1, 2]", "nan"]),
                   st.lists(st.integers(0, 3), max_size=3))
ACTIONS = st.lists(st.tuples(st.sampled_from(["delete", "attr", "reshape", "retype", "zap_attr"]),
                             st.floats(0, 1), VALUES), min_size=1, max_size=3)


def restructure(path, actions):
    """Apply structural edits through h5py: delete an object, set or delete an attribute,
    replace a dataset by one of another shape or dtype."""
    with h5py.File(path, "r+") as f:
        for action, where, value in actions:
            names = _objects(f)
            target = names[min(int(where * len(names)), len(names) - 1)] if names else None
            if action == "delete":                  # moved out of sight: del f[...] can crash libhdf5
                if target:
                    f.move(target, f"/gone{len(names)}_{target.replace('/', '_')}")
                continue
            obj = f[target] if target else f
            if action == "attr":
                keys = list(obj.attrs) or ["x"]
                if isinstance(value, (str, bytes)):
                    value = value.replace("\0" if isinstance(value, str) else b"\0", type(value)())  # HDF5: no NUL
                obj.attrs[keys[int(where * 7) % len(keys)]] = np.asarray(value) if isinstance(value, list) else value
            elif action == "zap_attr" and len(obj.attrs):
                del obj.attrs[list(obj.attrs)[int(where * 7) % len(obj.attrs)]]
            elif action in ("reshape", "retype") and isinstance(obj, h5py.Dataset):
                data = np.asarray(obj[()])
                new = data.reshape(-1)[:3] if action == "reshape" else data.astype(np.int32)
                obj = None
                f.move(target, f"/gone{len(names)}_{target.replace('/', '_')}")
                f.create_dataset(target, data=new)


@FUZZ
@given(actions=ACTIONS)
def test_fuzz_checkpoint_structure(checkpoint, work, actions):
    count("checkpoint-structure")
    path = os.path.join(work, f"s{TRIED['checkpoint-structure']}.h5")   # a new file each time
    shutil.copyfile(checkpoint[1], path)
    restructure(path, actions)                     # h5py rewrites the file: the trailer is gone
    try:
        load_checkpoint(path, tiny_vgg(seed=1))
    except WeightsError:
        pass


@pytest.fixture(scope="module")
def keras_file(work):
    from minicnn.experiments.models import tiny_vgg as keras_tiny
    model = keras_tiny((32, 32, 3), 3)
    path = os.path.join(work, "keras.h5")
    save_keras_weights(model, path)
    return path


@FUZZ
@given(actions=ACTIONS, cut=st.one_of(st.none(), st.floats(0, 1)))
def test_fuzz_keras_weights(keras_file, work, actions, cut):
    count("keras-weights")
    from minicnn.experiments.models import tiny_vgg as keras_tiny
    path = os.path.join(work, f"k{TRIED['keras-weights']}.h5")
    shutil.copyfile(keras_file, path)
    restructure(path, actions)
    if cut is not None:
        with open(path, "rb+") as f:
            f.truncate(int(cut * os.path.getsize(path)))
    try:
        load_keras_weights(keras_tiny((32, 32, 3), 3), path)
    except WeightsError:
        pass
