"""The Keras HDF5 reader on each layout of shared/specs/keras-h5-formats.md.

Two independent sides: files written here with raw h5py calls, straight from the
spec, are read by minicnn.io.keras_h5; and the writers in minicnn.io.keras_layouts
(used by save_keras_weights and the synthetic files) are checked attribute by
attribute against the spec.
"""

import json

import h5py
import numpy as np
import pytest

from minicnn.io import WeightsError, read_keras_weights
from minicnn.io.keras_h5 import split_class_suffix
from minicnn.io.keras_layouts import KerasLayer, snake_case, write_keras_h5
from minicnn.models.synthetic_weights import vgg16_keras_layers, write_synthetic_vgg16

RNG = np.random.default_rng(0)
CONV_W = RNG.standard_normal((3, 3, 3, 4)).astype(np.float32)
CONV_B = RNG.standard_normal(4).astype(np.float32)
DENSE_W = RNG.standard_normal((64, 5)).astype(np.float32)
DENSE_B = RNG.standard_normal(5).astype(np.float32)
EXPECTED = [("conv_a", [CONV_W, CONV_B]), ("dense_a", [DENSE_W, DENSE_B])]
EMPTY = np.zeros(0, np.float64)


def assert_layers(weights, expected=EXPECTED):
    assert [(layer.name, len(layer.arrays)) for layer in weights.layers] == [(n, len(a)) for n, a in expected]
    for layer, (_, arrays) in zip(weights.layers, expected):
        for found, want in zip(layer.arrays, arrays):
            assert found.dtype == np.float32 and np.array_equal(found, want)


# ---- raw h5py fixtures, one per layout, written from the spec -----------------------------

def raw_format_a(path):
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"conv_a", b"pool", b"flatten", b"dense_a"])  # fixed-length S7
        for name, (w, b) in (("conv_a", (CONV_W, CONV_B)), ("dense_a", (DENSE_W, DENSE_B))):
            g = f.create_group(name)
            g.attrs["weight_names"] = np.array([f"{name}_W_1:0".encode(), f"{name}_b_1:0".encode()])
            g.create_dataset(f"{name}_W_1:0", data=w)
            g.create_dataset(f"{name}_b_1:0", data=b)
        for name in ("pool", "flatten"):
            f.create_group(name).attrs["weight_names"] = EMPTY


def raw_legacy(group, keras3=False, chunked=False):
    suffix = "" if keras3 else ":0"
    group.attrs["backend"] = b"tensorflow"
    group.attrs["keras_version"] = b"3.15.1" if keras3 else b"2.21.0"
    names = [b"input_1", b"conv_a", b"pool", b"flatten", b"dense_a"]
    if chunked:  # Keras splits attributes over 64 KB as name0, name1, ...
        group.attrs["layer_names0"] = names[:2]
        group.attrs["layer_names1"] = names[2:]
    else:
        group.attrs["layer_names"] = names
    for name in ("dense_a", "conv_a"):  # creation order is irrelevant; @layer_names gives the order
        w, b = (CONV_W, CONV_B) if name == "conv_a" else (DENSE_W, DENSE_B)
        g = group.create_group(name)
        g.attrs["weight_names"] = [f"{name}/kernel{suffix}".encode(), f"{name}/bias{suffix}".encode()]
        g.create_dataset(f"{name}/kernel{suffix}", data=w)
        g.create_dataset(f"{name}/bias{suffix}", data=b)
    for name in ("input_1", "pool", "flatten", "top_level_model_weights"):
        group.create_group(name).attrs["weight_names"] = EMPTY


def raw_format_b(path, chunked=False):
    with h5py.File(path, "w") as f:
        raw_legacy(f, chunked=chunked)


def raw_full_model(path, keras3):
    with h5py.File(path, "w") as f:
        f.attrs["backend"] = "tensorflow"
        f.attrs["keras_version"] = "3.15.1" if keras3 else "2.21.0"
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {"layers": []}}).encode()
        raw_legacy(f.create_group("model_weights"), keras3=keras3)
        opt = f.create_group("optimizer_weights")
        opt.attrs["weight_names"] = [b"iteration:0"]
        opt.create_dataset("iteration:0", data=np.int64(3))


def raw_format_e(path, with_names=True, layers_key="layers"):
    with h5py.File(path, "w") as f:
        f.create_group("vars")
        for group_name, name, arrays in (("input_layer", "input_layer", []), ("conv2d", "conv_a", [CONV_W, CONV_B]),
                                         ("max_pooling2d", "pool", []), ("flatten", "flatten", []),
                                         ("dense", "dense_a", [DENSE_W, DENSE_B])):
            v = f.create_group(f"{layers_key}/{group_name}/vars")
            if with_names:
                v.attrs["name"] = name
            for i, array in enumerate(arrays):
                v.create_dataset(str(i), data=array)


@pytest.mark.parametrize("writer, fmt", [
    (raw_format_a, "A"), (raw_format_b, "B"), (lambda p: raw_format_b(p, chunked=True), "B"),
    (lambda p: raw_full_model(p, keras3=False), "C"), (lambda p: raw_full_model(p, keras3=True), "D"),
    (raw_format_e, "E"), (lambda p: raw_format_e(p, layers_key="_layer_checkpoint_dependencies"), "E"),
])
def test_reads_each_layout_written_from_the_spec(tmp_path, writer, fmt):
    path = tmp_path / "w.h5"
    writer(path)
    weights = read_keras_weights(path)
    assert weights.format == fmt
    assert_layers(weights)
    assert weights.parameter_count() == CONV_W.size + CONV_B.size + DENSE_W.size + DENSE_B.size


def test_format_c_model_config_is_parsed_as_json_and_optimizer_ignored(tmp_path):
    raw_full_model(tmp_path / "c.h5", keras3=False)
    weights = read_keras_weights(tmp_path / "c.h5")
    assert weights.model_config["class_name"] == "Sequential"
    assert weights.keras_version == "2.21.0" and weights.backend == "tensorflow"


def test_keras3_file_without_names_is_identified_by_class_order(tmp_path):
    raw_format_e(tmp_path / "e.h5", with_names=False)
    layers = read_keras_weights(tmp_path / "e.h5").layers
    assert [(layer.name, layer.class_key, layer.class_index) for layer in layers] == [
        (None, "conv2d", 0), (None, "dense", 0)]


def test_keras3_groups_are_sorted_by_numeric_suffix(tmp_path):
    with h5py.File(tmp_path / "e.h5", "w") as f:
        for k in range(12):  # HDF5 lists conv2d, conv2d_1, conv2d_10, conv2d_11, conv2d_2, ...
            v = f.create_group(f"layers/{'conv2d' if k == 0 else f'conv2d_{k}'}/vars")
            v.attrs["name"] = f"c{k}"
            v.create_dataset("0", data=np.full((1, 1, 1, 1), k, np.float32))
    assert [layer.name for layer in read_keras_weights(tmp_path / "e.h5").layers] == [f"c{k}" for k in range(12)]
    assert split_class_suffix("max_pooling2d_3") == ("max_pooling2d", 3)
    assert split_class_suffix("conv2d") == ("conv2d", 0)


def test_keras3_vars_are_sorted_numerically(tmp_path):
    with h5py.File(tmp_path / "e.h5", "w") as f:
        v = f.create_group("layers/dense/vars")
        v.attrs["name"] = "many"
        for i in (10, 2, 0, 1):
            v.create_dataset(str(i), data=np.full(1, i, np.float32))
    (layer,) = read_keras_weights(tmp_path / "e.h5").layers
    assert [float(a[0]) for a in layer.arrays] == [0, 1, 2, 10]


def test_nested_models_in_legacy_and_keras3_files(tmp_path):
    for fmt in "BCDE":
        path = tmp_path / f"n{fmt}.h5"
        top = fmt == "E"  # the top layers sit outside the nested model; once is enough (big arrays)
        write_synthetic_vgg16(path, fmt, include_top=top, input_shape=(32, 32, 3), nested=True, seed=3)
        flat = tmp_path / f"f{fmt}.h5"
        write_synthetic_vgg16(flat, fmt, include_top=top, input_shape=(32, 32, 3), seed=3)
        nested, plain = read_keras_weights(path), read_keras_weights(flat)
        by_name = {layer.name: layer.arrays for layer in nested.layers}
        assert set(by_name) == {layer.name for layer in plain.layers} and len(by_name) == (16 if top else 13)
        for layer in plain.layers:
            assert all(np.array_equal(a, b) for a, b in zip(layer.arrays, by_name[layer.name]))


def test_nested_legacy_group_lists_all_26_tensors(tmp_path):
    write_synthetic_vgg16(tmp_path / "d.h5", "D", nested=True, input_shape=(32, 32, 3))
    with h5py.File(tmp_path / "d.h5", "r") as f:
        names = f["model_weights/vgg16"].attrs["weight_names"]
        assert len(names) == 26 and names[0] == "block1_conv1/kernel"
        assert f["model_weights/vgg16/block1_conv1/kernel"].shape == (3, 3, 3, 64)


# ---- the writers of minicnn.io.keras_layouts, against the spec ---------------------------

def tiny_layers():
    return [KerasLayer("input_1", "InputLayer"), KerasLayer("conv_a", "Conv2D", [("kernel", CONV_W), ("bias", CONV_B)]),
            KerasLayer("pool", "MaxPooling2D"), KerasLayer("flatten", "Flatten"),
            KerasLayer("dense_a", "Dense", [("kernel", DENSE_W), ("bias", DENSE_B)])]


def test_writer_a_matches_spec(tmp_path):
    write_keras_h5(tmp_path / "a.h5", tiny_layers(), "A")
    with h5py.File(tmp_path / "a.h5", "r") as f:
        names = f.attrs["layer_names"]
        assert names.dtype.kind == "S" and list(names) == [b"conv_a", b"pool", b"flatten", b"dense_a"]
        assert "keras_version" not in f.attrs and "backend" not in f.attrs
        wn = f["conv_a"].attrs["weight_names"]
        assert wn.dtype.kind == "S" and list(wn) == [b"conv_a_W_1:0", b"conv_a_b_1:0"]
        ds = f["conv_a/conv_a_W_1:0"]
        assert ds.dtype == np.dtype("<f4") and ds.chunks is None and ds.compression is None and not ds.attrs
        empty = f["pool"].attrs["weight_names"]
        assert empty.dtype == np.float64 and empty.shape == (0,) and len(f["pool"]) == 0
    assert_layers(read_keras_weights(tmp_path / "a.h5"))


@pytest.mark.parametrize("fmt", ["B", "C", "D"])
def test_writer_legacy_matches_spec(tmp_path, fmt):
    write_keras_h5(tmp_path / "x.h5", tiny_layers(), fmt)
    colon = "" if fmt == "D" else ":0"
    with h5py.File(tmp_path / "x.h5", "r") as f:
        if fmt == "B":
            base = f
        else:
            assert "layer_names" not in f.attrs
            assert isinstance(f.attrs["keras_version"], str) and f.attrs["keras_version"][0] == ("3" if fmt == "D"
                                                                                                else "2")
            json.loads(f.attrs["model_config"])
            base = f["model_weights"]
            opt = f["optimizer_weights"]
            assert list(opt.attrs["weight_names"]) == (["sgd/iteration", "sgd/learning_rate"] if fmt == "D"
                                                       else ["iteration:0"])
        assert base.attrs["backend"] == "tensorflow"
        assert list(base.attrs["layer_names"]) == ["input_1", "conv_a", "pool", "flatten", "dense_a"]
        assert h5py.check_string_dtype(base.attrs.get_id("layer_names").dtype).length is None  # vlen
        assert list(base["dense_a"].attrs["weight_names"]) == [f"dense_a/kernel{colon}", f"dense_a/bias{colon}"]
        assert base[f"dense_a/dense_a/kernel{colon}"].shape == (64, 5)
        assert base["top_level_model_weights"].attrs["weight_names"].shape == (0,)
        assert base["input_1"].attrs["weight_names"].dtype == np.float64
    assert_layers(read_keras_weights(tmp_path / "x.h5"))


def test_writer_e_matches_spec(tmp_path):
    write_synthetic_vgg16(tmp_path / "e.h5", "E", include_top=True, input_shape=(32, 32, 3))
    with h5py.File(tmp_path / "e.h5", "r") as f:
        assert not f.attrs and "vars" in f
        assert f["layers/input_layer/vars"].attrs["name"] == "input_1" and len(f["layers/input_layer/vars"]) == 0
        assert f["layers/conv2d/vars"].attrs["name"] == "block1_conv1"
        assert f["layers/conv2d_12/vars"].attrs["name"] == "block5_conv3"
        assert f["layers/conv2d/vars/0"].shape == (3, 3, 3, 64) and f["layers/conv2d/vars/1"].shape == (64,)
        assert f["layers/max_pooling2d_4/vars"].attrs["name"] == "block5_pool"
        assert f["layers/dense_2/vars"].attrs["name"] == "predictions"
    assert snake_case("MaxPooling2D") == "max_pooling2d" and snake_case("GlobalAveragePooling2D") == \
        "global_average_pooling2d"


def test_every_layout_gives_the_same_vgg16_arrays(tmp_path):
    reference = vgg16_keras_layers(include_top=True, input_shape=(32, 32, 3), seed=5)
    expected = [(layer.name, [a for _, a in layer.weights]) for layer in reference if layer.weights]
    for fmt in "ABCDE":
        path = write_synthetic_vgg16(tmp_path / f"{fmt}.h5", fmt, include_top=True, input_shape=(32, 32, 3), seed=5)
        weights = read_keras_weights(path)
        assert weights.format == fmt
        assert_layers(weights, expected)


def test_notop_parameter_count_and_file_size_match_the_spec(tmp_path):
    path = write_synthetic_vgg16(tmp_path / "a.h5", "A", input_shape=(32, 32, 3))  # conv shapes: any input size
    assert read_keras_weights(path).parameter_count() == 14_714_688
    # the spec's reconstruction of the applications file (which Keras loads) is 58,888,896 bytes
    assert (tmp_path / "a.h5").stat().st_size == 58_888_896


# ---- files that are not Keras weights ---------------------------------------------------

def test_not_hdf5_and_truncated_and_foreign_hdf5(tmp_path):
    (tmp_path / "text.h5").write_text("hello, not HDF5\n" * 100)
    with pytest.raises(WeightsError, match=r"text\.h5.*not a readable HDF5 file.*signature"):
        read_keras_weights(tmp_path / "text.h5")
    path = write_synthetic_vgg16(tmp_path / "full.h5", "A", input_shape=(32, 32, 3))
    with open(path, "rb") as handle:
        data = handle.read()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=r"cut\.h5.*truncated"):
        read_keras_weights(tmp_path / "cut.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(WeightsError, match=r"other\.h5.*not Keras weights"):
        read_keras_weights(tmp_path / "other.h5")
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        read_keras_weights(tmp_path / "nope.h5")
    assert issubclass(WeightsError, ValueError)


def test_layer_listed_without_group_or_dataset(tmp_path):
    raw_format_a(tmp_path / "a.h5")
    with h5py.File(tmp_path / "a.h5", "a") as f:
        del f["dense_a/dense_a_b_1:0"]
    with pytest.raises(WeightsError, match=r"a\.h5.*'dense_a'.*dense_a_b_1:0.*missing"):
        read_keras_weights(tmp_path / "a.h5")
    with h5py.File(tmp_path / "a.h5", "a") as f:
        del f["dense_a"]
    with pytest.raises(WeightsError, match=r"'dense_a' is listed in @layer_names but has no group"):
        read_keras_weights(tmp_path / "a.h5")


def test_bad_model_config_json_is_an_error_not_eval(tmp_path):
    raw_full_model(tmp_path / "c.h5", keras3=False)
    with h5py.File(tmp_path / "c.h5", "a") as f:
        f.attrs["model_config"] = b"__import__('os').system('echo pwned')"
    with pytest.raises(WeightsError, match="model_config is not valid JSON"):
        read_keras_weights(tmp_path / "c.h5")


def test_keras_zip_archive(tmp_path):
    import zipfile
    raw_format_e(tmp_path / "model.weights.h5")
    with zipfile.ZipFile(tmp_path / "m.keras", "w") as archive:
        archive.writestr("config.json", "{}")
        archive.write(tmp_path / "model.weights.h5", "model.weights.h5")
    assert_layers(read_keras_weights(tmp_path / "m.keras"))
    with zipfile.ZipFile(tmp_path / "n.keras", "w") as archive:
        archive.writestr("config.json", "{}")
    with pytest.raises(WeightsError, match="without model.weights.h5"):
        read_keras_weights(tmp_path / "n.keras")
