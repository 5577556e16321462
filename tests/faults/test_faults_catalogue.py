"""The bad-input catalogue: every entry is one test, and tests/faults/README.md lists them.

Each bad input must end in a named error (one line from ``minicnn``, exit status 2) or,
where the run can go on, in a sample skipped and reported by path, or a warning; never a
traceback, never a silent wrong result.
"""

import os
import re
import shutil
import struct
import warnings
import zlib

import h5py
import numpy as np
import pytest
from faultkit import break_image, image_folder, train_args
from PIL import Image

from minicnn.cli import main
from minicnn.data import HAM10000, DataLoader, DatasetError, ImageFolder, decode_image, synthetic
from minicnn.io import WeightsError, load_keras_weights, save_checkpoint
from minicnn.models import write_synthetic_vgg16

CASES: list[str] = []     # filled by @case: the README table must name each


def case(*names):
    """Register the catalogue entries a test covers."""
    CASES.extend(names)
    return lambda test: test


def cli(argv):
    """(exit status, stderr) of ``minicnn ...`` run in this process."""
    import contextlib
    import io
    err = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        rc = main([str(a) for a in argv])
    return rc, err.getvalue()


def refused(argv, message):
    rc, err = cli(argv)
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.startswith("minicnn")]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("cat") / "data"
    image_folder(root, per_class=6)
    return root


@pytest.fixture(scope="module")
def ham(tmp_path_factory):
    root = tmp_path_factory.mktemp("cat") / "ham"
    synthetic.ham10000(root, n_images=28, image_size=(24, 20), min_per_class=2)
    return root


def ham_copy(ham, tmp_path, edit=None):
    root = tmp_path / "ham"
    shutil.copytree(ham, root)
    path = root / "HAM10000_metadata.csv"
    if edit is not None:
        with open(path, newline="") as f:
            text = f.read()
        with open(path, "w", newline="") as f:
            f.write(edit(text))
    return root


def ham_args(root, tmp_path):
    return train_args(root, tmp_path / "run", dataset="ham10000", epochs=1)


# ---- data folders ---------------------------------------------------------------------------

@case("missing data folder")
def test_missing_data_folder(tmp_path):
    refused(train_args(tmp_path / "nope", tmp_path / "run"), f"data folder not found: {tmp_path / 'nope'}")


@case("empty data folder")
def test_empty_data_folder(tmp_path):
    (tmp_path / "data").mkdir()
    refused(train_args(tmp_path / "data", tmp_path / "run"), "has 0 class sub-folder(s) []; a classifier needs at least 2")


@case("class folder without images")
def test_class_folder_without_images(tmp_path):
    image_folder(tmp_path / "data", per_class=3)
    for f in os.listdir(tmp_path / "data" / "b"):
        os.remove(tmp_path / "data" / "b" / f)
    refused(train_args(tmp_path / "data", tmp_path / "run"), f"class folder {tmp_path / 'data' / 'b'} holds no images")


@case("one class only")
def test_one_class_only(tmp_path):
    image_folder(tmp_path / "data", classes=("x",), per_class=4)
    refused(train_args(tmp_path / "data", tmp_path / "run"), "a classifier needs at least 2")


@case("HAM10000 tree read as class folders")
def test_ham_tree_as_folder(ham):
    with pytest.warns(UserWarning, match="looks like HAM10000 .*use --dataset ham10000"):
        ImageFolder(ham)


@case("chest_xray splits read as class folders")
def test_xray_splits_as_folder(tmp_path):
    image_folder(tmp_path / "data", classes=("train", "val", "test"), per_class=2)
    with pytest.warns(UserWarning, match="looks like the Kermany chest X-rays .*use --dataset xray"):
        ImageFolder(tmp_path / "data")


@case("HAM10000 root without its metadata CSV")
def test_ham_without_metadata(ham, tmp_path):
    root = ham_copy(ham, tmp_path)
    os.remove(root / "HAM10000_metadata.csv")
    refused(ham_args(root, tmp_path), "HAM10000 metadata not found")


@case("chest_xray tree with an empty class folder")
def test_xray_empty_class(tmp_path):
    synthetic.chest_xray(tmp_path / "x", n_train=6, n_val=0, n_test=4)
    refused(train_args(tmp_path / "x", tmp_path / "run", dataset="xray"), "holds no images")


@case("data set too small for the split")
def test_too_small_for_the_split(tmp_path):
    image_folder(tmp_path / "data", classes=("a", "b"), per_class=1)
    refused(train_args(tmp_path / "data", tmp_path / "run"), "too small for the split train 0.6/val 0.2/test 0.2")


@case("a class with no images in a split")
def test_class_missing_from_a_split(tmp_path):
    image_folder(tmp_path / "data", classes=("a", "b"), per_class=6)
    image_folder(tmp_path / "data", classes=("rare",), per_class=1, seed=3)
    from minicnn.data import split
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        split(ImageFolder(tmp_path / "data", image_size=16), (0.6, 0.2, 0.2), by="image")
    said = [str(w.message) for w in seen]
    assert any("the val part has no image of class(es) ['rare']" in m for m in said), said


@case("fewer images than the batch")
def test_fewer_images_than_the_batch(folder):
    from minicnn.data import split
    from minicnn.train.rundir import check_batch
    parts = split(ImageFolder(folder, image_size=16), (0.6, 0.2, 0.2), by="image")
    with pytest.warns(UserWarning, match="fewer than --batch-size 64: each epoch is a single batch"):
        check_batch(parts[0], 64)


# ---- metadata CSVs --------------------------------------------------------------------------

@case("metadata CSV missing a column")
def test_csv_missing_column(ham, tmp_path):
    root = ham_copy(ham, tmp_path, lambda t: t.replace(",dx,", ",diagnosis,", 1))
    refused(ham_args(root, tmp_path), "missing required column(s) ['dx']")


@case("metadata CSV with an unknown label")
def test_csv_unknown_label(ham, tmp_path):
    root = ham_copy(ham, tmp_path, lambda t: re.sub(r",(nv|mel),", ",melanoma,", t, count=1))
    refused(ham_args(root, tmp_path), "unknown dx 'melanoma'; expected one of")


@case("metadata CSV with a duplicate image id")
def test_csv_duplicate_id(ham, tmp_path):
    def dup(text):
        lines = text.splitlines(keepends=True)
        return "".join(lines + [lines[1]])
    root = ham_copy(ham, tmp_path, dup)
    refused(ham_args(root, tmp_path), "listed twice")


@case("metadata CSV with a ragged row")
def test_csv_ragged_row(ham, tmp_path):
    root = ham_copy(ham, tmp_path, lambda t: t.replace("\n", ",extra\n", 2).replace(",extra\n", "\n", 1))
    refused(ham_args(root, tmp_path), "fields but the header has")


@case("metadata CSV listing an image that is not there")
def test_csv_lists_a_missing_image(ham, tmp_path):
    root = ham_copy(ham, tmp_path)
    first = HAM10000(root).paths[0]
    for dirpath, _, names in os.walk(root):             # and its Kaggle lower-case duplicate
        if os.path.basename(first) in names:
            os.remove(os.path.join(dirpath, os.path.basename(first)))
    refused(ham_args(root, tmp_path), f"lists 1 image(s) not found under {root}: {os.path.basename(first)}")


@case("metadata CSV with only a header")
def test_csv_header_only(ham, tmp_path):
    root = ham_copy(ham, tmp_path, lambda t: t.splitlines(keepends=True)[0])
    refused(ham_args(root, tmp_path), "no images listed (only a header")


@pytest.mark.parametrize("variant", ["bom", "crlf"])
@case("metadata CSV with a BOM / Windows line ends")
def test_csv_bom_and_crlf_read_the_same(ham, tmp_path, variant):
    edit = (lambda t: "\ufeff" + t) if variant == "bom" else (lambda t: t.replace("\n", "\r\n"))
    plain, odd = HAM10000(ham), HAM10000(ham_copy(ham, tmp_path, edit))
    assert list(odd.image_ids) == list(plain.image_ids) and (odd.labels == plain.labels).all()
    assert list(odd.groups) == list(plain.groups)


# ---- images ---------------------------------------------------------------------------------

def _one_bad_image(tmp_path, how):
    paths = image_folder(tmp_path / "data", per_class=4)
    if how == "bomb":
        def chunk(kind, data):
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        with open(paths[2], "wb") as f:                 # a PNG that claims 40000 x 40000 pixels
            f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0))
                    + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    else:
        break_image(paths[2], how)
    loader = DataLoader(ImageFolder(tmp_path / "data", image_size=16), batch_size=4, progress=False,
                        report_path=tmp_path / "bad.txt")
    with pytest.warns(UserWarning, match=re.escape(paths[2])):
        n = sum(len(y) for _, y in loader)
    assert n == len(paths) - 1 and list(loader.bad_files) == [paths[2]]
    assert paths[2] in (tmp_path / "bad.txt").read_text()
    return loader.bad_files[paths[2]]


@case("truncated image")
def test_truncated_image(tmp_path):
    _one_bad_image(tmp_path, "truncated")


@case("zero-byte image")
def test_zero_byte_image(tmp_path):
    _one_bad_image(tmp_path, "zero")


@case("file that is not an image")
def test_not_an_image(tmp_path):
    assert "cannot identify image file" in _one_bad_image(tmp_path, "text")


@case("decompression bomb")
def test_decompression_bomb(tmp_path):
    assert "DecompressionBombError" in _one_bad_image(tmp_path, "bomb")


def _stripes():
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[:, :10] = (255, 0, 0)
    rgb[:, 10:20] = (0, 255, 0)
    return rgb


@case("CMYK JPEG")
def test_cmyk_jpeg(tmp_path):
    Image.fromarray(_stripes()).convert("CMYK").save(tmp_path / "c.jpg", quality=100)
    got = decode_image(tmp_path / "c.jpg")
    assert got.shape == (20, 30, 3)
    np.testing.assert_allclose(got[10, [5, 15, 25]], [[255, 0, 0], [0, 255, 0], [0, 0, 0]], atol=3)


@case("16-bit grey PNG")
def test_sixteen_bit_png(tmp_path):
    a = (np.arange(600).reshape(20, 30) * 100).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "g.png")
    got = decode_image(tmp_path / "g.png")
    expected = np.clip(a * (255.0 / a.max()), 0, 255).astype(np.uint8)    # maximum brought to 255
    np.testing.assert_array_equal(got[..., 0], expected)
    assert (got[..., 0] == got[..., 2]).all()


@case("grey image")
def test_grey_image(tmp_path):
    Image.fromarray(_stripes()).convert("L").save(tmp_path / "g.png")
    got = decode_image(tmp_path / "g.png")
    grey = np.asarray(Image.open(tmp_path / "g.png"))
    assert got.shape == (20, 30, 3) and all((got[..., c] == grey).all() for c in range(3))


@case("palette PNG")
def test_palette_png(tmp_path):
    Image.fromarray(_stripes()).convert("P").save(tmp_path / "p.png")
    np.testing.assert_array_equal(decode_image(tmp_path / "p.png"), _stripes())


@case("EXIF-rotated JPEG")
def test_exif_rotated_jpeg(tmp_path):
    image = Image.fromarray(_stripes())
    exif = image.getexif()
    exif[0x0112] = 6                                   # "rotate 90 clockwise to show"
    image.save(tmp_path / "r.jpg", exif=exif, quality=100)
    got = decode_image(tmp_path / "r.jpg")
    assert got.shape == (30, 20, 3)                    # upright, as a viewer shows it
    np.testing.assert_allclose(got[2, 10], [255, 0, 0], atol=40)   # the red stripe is now on top


# ---- weights files --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vgg(tmp_path_factory):
    from minicnn.models import vgg16
    folder = tmp_path_factory.mktemp("weights")
    good = write_synthetic_vgg16(folder / "good.h5", fmt="B")
    return vgg16(include_top=False, input_shape=(32, 32, 3)), good


def _variant(good, tmp_path, edit):
    path = tmp_path / "bad.h5"
    shutil.copyfile(good, path)
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def _refused_weights(model, path, message):
    before = {k: v.copy() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsError, match=re.escape(message)) as err:
        load_keras_weights(model, path)
    assert str(path) in str(err.value)
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)     # nothing half-loaded


@case("weights file that is not HDF5")
def test_weights_not_hdf5(folder, tmp_path):
    (tmp_path / "w.h5").write_text("not weights")
    refused(train_args(folder, tmp_path / "run", "--model", "vgg16", "--weights", tmp_path / "w.h5"),
            "not a readable HDF5 file")


@case("truncated weights file")
def test_weights_truncated(vgg, tmp_path):
    model, good = vgg
    with open(good, "rb") as f:
        data = f.read(os.path.getsize(good) // 2)
    (tmp_path / "t.h5").write_bytes(data)
    _refused_weights(model, tmp_path / "t.h5", "not a readable HDF5 file")


@case("mis-shaped weights")
def test_weights_mis_shaped(vgg, tmp_path):
    def edit(f):
        name = next(n for n in _datasets(f) if "block3_conv1" in n and f[n].ndim == 4)
        del f[name]
        f.create_dataset(name, data=np.zeros((3, 3, 64, 256), np.float32))
    _refused_weights(vgg[0], _variant(vgg[1], tmp_path, edit), "block3_conv1")


@case("NaN-filled weights")
def test_weights_nan(vgg, tmp_path):
    def edit(f):
        name = next(n for n in _datasets(f) if "block2_conv2" in n)
        f[name][...] = np.nan
    _refused_weights(vgg[0], _variant(vgg[1], tmp_path, edit), "values are NaN or infinite")


@case("weights of another model")
def test_weights_of_another_model(vgg, tmp_path):
    from minicnn.experiments.models import tiny_vgg
    from minicnn.io import save_keras_weights
    save_keras_weights(tiny_vgg((32, 32, 3), 3), tmp_path / "tiny.h5")
    _refused_weights(vgg[0], tmp_path / "tiny.h5", "is in the model but not in the file")


@case("minicnn checkpoint given as Keras weights")
def test_checkpoint_as_weights(vgg, tmp_path):
    save_checkpoint(tmp_path / "c.h5", vgg[0])
    _refused_weights(vgg[0], tmp_path / "c.h5", "an HDF5 file but not Keras weights")


@case("weights from a newer Keras (known layout)")
def test_weights_from_a_newer_keras(vgg, tmp_path):
    """A layout we know is read by its structure whatever version wrote it: values checked equal."""
    def edit(f):
        f.attrs["keras_version"] = "9.1.0"
    model, good = vgg
    path = _variant(good, tmp_path, edit)
    load_keras_weights(model, path)
    with h5py.File(good, "r") as f:
        name = next(n for n in _datasets(f) if "block1_conv1" in n and f[n].ndim == 4)
        np.testing.assert_array_equal(model.state_dict()["block1_conv1.kernel"], f[name][()])


def _datasets(f):
    found = []
    f.visititems(lambda n, o: found.append(n) if isinstance(o, h5py.Dataset) else None)
    return found


# ---- command-line numbers ---------------------------------------------------------------------

NUMBERS = [
    ("batch size 0", "--batch-size", "0", "--batch-size must be at least 1, got 0"),
    ("learning rate NaN", "--lr", "nan", "--lr must be a positive finite number, got nan"),
    ("negative learning rate", "--lr", "-0.01", "--lr must be a positive finite number, got -0.01"),
    ("image size 0", "--image-size", "0", "--image-size must be a positive number of pixels, got 0"),
    ("image size below the model's minimum", "--image-size", "16",
     "--image-size 16 is below what --model tiny takes: at least 32"),
    ("epochs 0", "--epochs", "0", "--epochs must be at least 1, got 0"),
    ("momentum 1 or more", "--momentum", "1.5", "--momentum must be in [0, 1), got 1.5"),
    ("gradient clipping threshold 0", "--clipnorm", "0", "SGD: clipnorm must be a finite number > 0, got 0.0"),
]
CASES.extend(name for name, *_ in NUMBERS)


@pytest.mark.parametrize("option,value,message", [n[1:] for n in NUMBERS], ids=[n[0] for n in NUMBERS])
def test_bad_numbers(folder, tmp_path, option, value, message):
    argv = train_args(folder, tmp_path / "run")
    i = argv.index(option) if option in argv else None
    if i is None:
        argv += [option, value]
    else:
        argv[i + 1] = value
    refused(argv, message)
    assert not (tmp_path / "run").exists()


@case("--resume without a checkpoint")
def test_resume_without_a_checkpoint(folder, tmp_path):
    refused(train_args(folder, tmp_path / "run", "--resume"), "--resume: no checkpoint")


def test_the_readme_table_lists_every_case():
    with open(os.path.join(os.path.dirname(__file__), "README.md"), encoding="utf-8") as f:
        table = f.read()
    missing = [name for name in CASES if f"| {name} |" not in table]
    assert not missing, f"tests/faults/README.md does not list {missing}"
    assert len(set(CASES)) >= 30


def test_dataset_error_is_a_value_error():
    assert issubclass(DatasetError, ValueError)       # so the CLI turns it into one line, exit status 2
