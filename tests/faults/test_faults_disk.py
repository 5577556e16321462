"""A full disk, a file-size limit and a read-only folder, for real.

The full disk is a small tmpfs mounted by the test (we run as root, as CI does); the
file-size limit is ``ulimit -f`` (RLIMIT_FSIZE, with SIGXFSZ ignored so the write
fails with EFBIG) in a subprocess, which needs no privileges. Where mounting is not
allowed, the tmpfs tests run the ``ulimit -f`` variant instead and say so.
Each must end in one clear error naming the file (and the free space), the last good
checkpoint intact, and no temporary file left behind.
"""

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from faultkit import MountFailed, files_state, image_folder, sgd, tiny_vgg, tmpfs, train_args

from minicnn.cli import main
from minicnn.data import DataLoader, ImageFolder
from minicnn.io import load_checkpoint, save_checkpoint
from minicnn.io.storage import StorageError
from minicnn.train import apply_preset, fit


def leftovers(folder):
    return [n for n in os.listdir(folder) if n.endswith(".tmp") or ".tmp" in n]


def limited(code: str, limit_bytes: int) -> subprocess.CompletedProcess:
    """Run Python ``code`` in a subprocess whose files may not grow past ``limit_bytes``.

    The code calls ``limit()`` itself once its kernels are compiled (Numba's cache files
    are bigger than the limit and must not be what fails).
    """
    prelude = textwrap.dedent(f"""
        import resource, signal
        def limit():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, ({limit_bytes}, {limit_bytes}))
    """)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.getcwd()}, check=False)


CHECKPOINT_CODE = """
    import sys, numpy as np
    sys.path.insert(0, {tests!r})
    from faultkit import tiny_vgg
    from minicnn.io import save_checkpoint, load_checkpoint
    from minicnn.io.storage import StorageError
    path = {path!r}
    model = tiny_vgg()
    save_checkpoint(path, model, epoch=1)
    limit()
    try:
        save_checkpoint(path, model, epoch=2, big=np.ones(1 << 18, np.float32))   # 1 MiB more
    except StorageError as err:
        print("ERROR", err)
    print("EPOCH", load_checkpoint(path)["epoch"])
"""


def _check_checkpoint_failure(folder, message):
    assert "ERROR cannot write" in message and os.path.join(str(folder), "ckpt.h5") in message
    assert "free on" in message and "the previous file is intact" in message
    assert "EPOCH 1" in message                    # the old checkpoint still loads
    assert leftovers(folder) == []


def _checkpoint_under_ulimit(folder):
    os.makedirs(folder, exist_ok=True)
    done = limited(CHECKPOINT_CODE.format(tests=os.path.dirname(__file__), path=str(folder / "ckpt.h5")),
                   256 << 10)
    assert done.returncode == 0, done.stderr
    assert "file too large" in done.stdout
    _check_checkpoint_failure(folder, done.stdout)


def test_checkpoint_on_a_full_disk(tmp_path):
    try:
        with tmpfs(tmp_path / "fs", size="512k") as fs:
            model = tiny_vgg()
            path = os.path.join(fs, "ckpt.h5")
            save_checkpoint(path, model, epoch=1)
            with pytest.raises(StorageError) as err:
                save_checkpoint(path, model, epoch=2, big=np.ones(1 << 18, np.float32))
            message = str(err.value)
            assert "no space left" in message
            _check_checkpoint_failure(fs, f"ERROR {message}\nEPOCH {load_checkpoint(path)['epoch']}")
    except MountFailed as why:
        print(f"tmpfs not mountable here ({why}): running the ulimit -f variant instead")
        _checkpoint_under_ulimit(tmp_path / "limited")


def test_checkpoint_over_a_file_size_limit(tmp_path):
    _checkpoint_under_ulimit(tmp_path)


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    """A data folder and a finished one-epoch run (not on a small disk)."""
    root = tmp_path_factory.mktemp("disk")
    image_folder(root / "data", per_class=6)
    assert main(train_args(root / "data", root / "run", "--preset", "all", "--patience", "0", epochs=1)) == 0
    return root


def _after_failed_resume(out, err):
    assert "minicnn: error: cannot write " + str(out) in err and "free on" in err, err
    assert load_checkpoint(os.path.join(out, "last.h5"))["epoch"] == 1
    assert leftovers(out) == []
    with open(os.path.join(out, "history.csv")) as f:
        assert len(f.read().splitlines()) in (2, 3)       # header + 1 or 2 whole rows, nothing torn


def test_cli_run_on_a_full_disk_exits_74_and_keeps_the_checkpoint(one_epoch, tmp_path, capsys):
    used = sum(os.path.getsize(one_epoch / "run" / n) for n in os.listdir(one_epoch / "run"))
    argv = train_args(one_epoch / "data", None, "--preset", "all", "--patience", "0", "--resume", epochs=2)
    try:
        with tmpfs(tmp_path / "fs", size=str(used + (64 << 10)),
                   fill=lambda fs: shutil.copytree(one_epoch / "run", os.path.join(fs, "run"))) as fs:
            out = os.path.join(fs, "run")
            argv[argv.index("--out") + 1] = out
            capsys.readouterr()
            assert main(argv) == 74
            err = capsys.readouterr().err
            assert "no space left" in err
            _after_failed_resume(out, err)
    except MountFailed as why:
        print(f"tmpfs not mountable here ({why}): running the ulimit -f variant instead")
        _cli_under_ulimit(one_epoch, tmp_path)


def _cli_under_ulimit(one_epoch, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(one_epoch / "run", out)
    argv = train_args(one_epoch / "data", out, "--preset", "all", "--patience", "0", "--resume", epochs=2)
    code = f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from faultkit import tiny_vgg, sgd
        from minicnn.functional import softmax_cross_entropy
        from minicnn.experiments.models import build_model
        import numpy as np
        model = build_model("tiny", 32, 3)          # compile the kernels before the limit
        opt = sgd(model)
        loss = softmax_cross_entropy(model(np.zeros((2, 32, 32, 3), np.float32)), np.zeros(2, np.int64))
        loss.backward(); opt.step()
        limit()
        from minicnn.cli import main
        sys.exit(main({argv!r}))
    """
    done = limited(code, 200 << 10)                  # history.csv fits, a 318 KB checkpoint does not
    assert done.returncode == 74, done.stderr
    assert "file too large" in done.stderr
    _after_failed_resume(str(out), done.stderr)


def test_cli_run_over_a_file_size_limit_exits_74(one_epoch, tmp_path):
    _cli_under_ulimit(one_epoch, tmp_path)


def test_cli_run_into_a_read_only_folder_exits_74_naming_it(one_epoch, tmp_path, capsys):
    try:
        with tmpfs(tmp_path / "fs", size="4m", read_only=True,
                   fill=lambda fs: shutil.copytree(one_epoch / "run", os.path.join(fs, "run"))) as fs:
            out = os.path.join(fs, "run")
            before = files_state(out)
            capsys.readouterr()
            assert main(train_args(one_epoch / "data", out, "--preset", "all", "--resume", epochs=2)) == 74
            err = capsys.readouterr().err
            assert f"cannot write {out}" in err and "read-only file system" in err
            assert files_state(out) == before
    except MountFailed as why:
        pytest.fail(f"cannot mount a read-only tmpfs here ({why}); this test needs root, as CI has")


def test_decoded_image_cache_on_a_full_disk(tmp_path):
    image_folder(tmp_path / "data", per_class=6)
    ds = ImageFolder(tmp_path / "data", image_size=64)   # 18 x 64 x 64 x 3 = 216 KiB of pixels
    try:
        with tmpfs(tmp_path / "fs", size="96k") as fs:
            with pytest.raises(StorageError) as err:
                DataLoader(ds, batch_size=8, cache_dir=fs, progress=False)
            assert ".partial.npy" in str(err.value) and "no space left" in str(err.value)
            assert [n for n in os.listdir(fs) if n.endswith(".npy")] == []
    except MountFailed as why:
        pytest.fail(f"cannot mount a tmpfs here ({why}); this test needs root, as CI has")


def test_feature_cache_on_a_full_disk(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(600, 16, 16, 3)).astype(np.float32), np.arange(600) % 3
    model = tiny_vgg()
    apply_preset(model, "last_block")               # prefix output 4x4x8 floats = 512 B per image: 300 KB
    try:
        with tmpfs(tmp_path / "fs", size="128k") as fs:
            with pytest.raises(StorageError) as err:
                fit(model, (x, y), None, sgd(model), epochs=1, verbose=0, feature_cache="disk", cache_dir=fs)
            assert str(fs) in str(err.value) and "feature cache needs" in str(err.value)
            assert os.listdir(fs) == []
    except MountFailed as why:
        pytest.fail(f"cannot mount a tmpfs here ({why}); this test needs root, as CI has")
