"""Data-parallel fit() under mpiexec (the mpich wheel of the test extra) against one process.

Each case runs tests/distributed_worker.py as ``mpiexec -n N`` and alone, in a
subprocess bounded by a timeout, and compares what rank 0 wrote. The reference
is the single process with the same global batch: the ranks must compute the
same mathematics, so weights and losses agree to float32 summation order
(1e-5 relative), frozen weights and count-based metrics exactly.
"""

import itertools
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minicnn import distributed as dist
from minicnn.distributed import launch
from minicnn.distributed.data_parallel import confusion, pairs_from_confusion, shard_bounds

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "distributed_worker.py")
COUNTS = ("accuracy", "macro_f1", "balanced_accuracy", "val_accuracy", "val_macro_f1", "val_balanced_accuracy")
LOSSES = ("loss", "val_loss", "lr")
TIMEOUT = 120


def mpiexec() -> str:
    near = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.path.exists(near):
        return near
    found = __import__("shutil").which("mpiexec")
    if found is None:
        raise RuntimeError("mpiexec not found: pip install -e '.[test]' installs the mpich wheel")
    return found


def env() -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "SLURM_", "PMIX_"))}
    e["PYTHONPATH"] = os.path.dirname(HERE) + os.pathsep + e.get("PYTHONPATH", "")
    e["MINICNN_NUM_THREADS"] = "1"
    return e


def run(ranks: int, result, *args, check=True, timeout=TIMEOUT) -> subprocess.CompletedProcess:
    cmd = [sys.executable, WORKER, "--result", str(result), *map(str, args)]
    if ranks:
        cmd = [mpiexec(), "-n", str(ranks)] + cmd
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done


def open_text(path) -> str:
    with open(path) as f:
        return f.read()


def load(path):
    out = dict(np.load(path))
    out["history"] = json.loads(str(out["history"]))
    return out


def assert_same_run(got, want, tol=1e-5):
    for key in want:
        if not key.startswith("w:"):
            continue
        a, b = got[key], want[key]
        if key.startswith("w:block1"):                      # frozen: never updated, never sent
            assert np.array_equal(a, b), key
        else:
            assert np.linalg.norm(a - b) <= tol * np.linalg.norm(b), (key, np.abs(a - b).max())
    for key in LOSSES:
        np.testing.assert_allclose(got["history"][key], want["history"][key], rtol=tol, err_msg=key)
    for key in COUNTS:
        assert got["history"][key] == want["history"][key], key


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    path = tmp_path_factory.mktemp("one") / "one.npz"
    run(0, path, "--epochs", 3)
    return load(path)


@pytest.mark.parametrize("ranks", [2, 3])
def test_ranks_equal_one_process(ranks, single, tmp_path):
    # 23 samples, global batch 8: batches of 8, 8, 7 split 4+4 / 3+3+2 ... and 4+3 / 3+2+2
    run(ranks, tmp_path / "r.npz", "--epochs", 3)
    got = load(tmp_path / "r.npz")
    assert_same_run(got, single)
    assert not np.array_equal(got["w:predictions.kernel"], single["w:block1_conv1.kernel"].sum())  # trained


def test_reduced_validation_equals_single_process_exactly(tmp_path):
    run(3, tmp_path / "r.npz", "--epochs", 1)
    got = load(tmp_path / "r.npz")
    np.testing.assert_array_equal(got["cm_reduced"], got["cm_alone"])     # the same weights, 11 samples
    assert got["cm_alone"].sum() == 11
    np.testing.assert_allclose(got["loss_reduced"], got["loss_alone"], rtol=1e-6)


def test_resume_two_ranks_and_one_rank_from_a_two_rank_checkpoint(tmp_path):
    run(2, tmp_path / "full.npz", "--epochs", 4)
    out2, out1 = tmp_path / "o2", tmp_path / "o1"
    run(2, tmp_path / "half.npz", "--epochs", 2, "--out", out2)
    out1.mkdir()
    for name in os.listdir(out2):
        (out1 / name).write_bytes((out2 / name).read_bytes())
    run(2, tmp_path / "r22.npz", "--epochs", 4, "--out", out2, "--resume", out2 / "last.h5")
    run(0, tmp_path / "r21.npz", "--epochs", 4, "--out", out1, "--resume", out1 / "last.h5")
    full = load(tmp_path / "full.npz")
    assert_same_run(load(tmp_path / "r22.npz"), full, tol=0)               # the same ranks: bit-identical
    assert_same_run(load(tmp_path / "r21.npz"), full)


def test_a_checkpoint_within_an_epoch_from_two_ranks_resumes_under_one(tmp_path):
    # rank 1 gets SIGTERM after batch 1 of epoch 2: both ranks stop after batch 2, rank 0 writes last.h5
    run(2, tmp_path / "full.npz", "--epochs", 3)
    stopped = run(2, tmp_path / "s.npz", "--epochs", 3, "--out", tmp_path / "o", "--signal-at", 2, 1, check=False)
    assert stopped.returncode != 0 and stopped.stderr.count("stopped in epoch 2 after batch 2") >= 2
    run(0, tmp_path / "r.npz", "--epochs", 3, "--out", tmp_path / "o", "--signal-at", 99, 1,
        "--resume", tmp_path / "o" / "last.h5")
    assert_same_run(load(tmp_path / "r.npz"), load(tmp_path / "full.npz"))


def test_a_rank_failing_in_epoch_2_ends_the_job_naming_it(tmp_path):
    start = time.monotonic()
    done = run(2, tmp_path / "f.npz", "--epochs", 4, "--fail-rank", 1, "--fail-epoch", 2, check=False, timeout=90)
    assert time.monotonic() - start < 60
    assert done.returncode != 0
    assert "minicnn rank 1 of 2: failed with RuntimeError: injected failure in epoch 2" in done.stderr
    assert not os.path.exists(tmp_path / "f.npz")


def test_a_bad_input_batch_seen_by_one_rank_ends_the_job(tmp_path):
    start = time.monotonic()
    done = run(2, tmp_path / "n.npz", "--nan-sample", 5, check=False, timeout=90)
    assert time.monotonic() - start < 60 and done.returncode != 0
    assert "failed with NonFiniteInput" in done.stderr and "minicnn rank " in done.stderr


def test_only_rank_0_writes_into_out(tmp_path):
    out = tmp_path / "out"
    run(3, tmp_path / "w.npz", "--epochs", 2, "--out", out)
    assert sorted(os.listdir(out)) == ["best.h5", "history.csv", "last.h5"]
    inside = {r: [p for p in json.loads(open_text(f"{tmp_path / 'w.npz'}.writes{r}.json"))
                  if p.startswith(str(out))] for r in range(3)}
    assert any(p.endswith("last.h5") for p in inside[0])                   # the recorder sees rank 0's writes
    assert inside[1] == [] and inside[2] == []
    rows = open_text(out / "history.csv").splitlines()
    assert len(rows) == 3                                                  # a header and 2 epochs, once


def test_sigterm_to_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    out = tmp_path / "out"
    cmd = [mpiexec(), "-n", "2", sys.executable, WORKER, "--result", str(tmp_path / "s.npz"), "--epochs", "500",
           "--out", str(out), "--slow"]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not (out / "last.h5").exists() or not os.path.exists(f"{tmp_path / 's.npz'}.pid1"):
            assert time.monotonic() < deadline and proc.poll() is None, "the run did not start"
            time.sleep(0.2)
        os.kill(int(open_text(f"{tmp_path / 's.npz'}.pid1")), signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert stderr.count("stopped (SIGTERM: stopped in epoch") == 2, stderr[-2000:]   # both, the same batch
    assert len({line.split("stopped (")[1] for line in stderr.splitlines() if "stopped (" in line}) == 1
    assert "failed with" not in stderr
    from minicnn.io import load_checkpoint
    assert load_checkpoint(str(out / "last.h5"))["epoch"] >= 1              # whole, loadable


# ---- bad input -------------------------------------------------------------------------------------


def test_more_ranks_than_samples_in_the_last_batch_is_refused(tmp_path):
    done = run(2, tmp_path / "x.npz", "--samples", 17, check=False)        # batches 8, 8, 1
    assert done.returncode != 0
    assert "2 ranks but the last batch holds only 1 samples" in done.stderr


def test_ranks_with_different_settings_are_refused_naming_the_rank(tmp_path):
    done = run(2, tmp_path / "x.npz", "--lr-per-rank", check=False)
    assert done.returncode != 0
    assert "the training settings differs between ranks" in done.stderr
    assert '"initial_lr": 0.02' in done.stderr and "ranks that differ from rank 0: [1]" in done.stderr


def test_resume_of_a_checkpoint_for_other_data_is_refused(tmp_path):
    run(2, tmp_path / "a.npz", "--epochs", 1, "--out", tmp_path / "o")
    done = run(0, tmp_path / "b.npz", "--epochs", 2, "--samples", 25, "--out", tmp_path / "o",
               "--resume", tmp_path / "o" / "last.h5", check=False)
    assert done.returncode != 0
    assert "written for {'samples': 23, 'global_batch': 8, 'batches': 3}" in done.stderr


def test_missing_mpi4py_under_mpiexec_says_how_to_install(monkeypatch):
    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)                     # import fails
    monkeypatch.setattr(dist, "_comm", None)
    with pytest.raises(dist.DistributedError, match=r"PMI_RANK is set.*pip install 'minicnn\[mpi\]'"):
        dist.init()


# ---- pieces --------------------------------------------------------------------------------------


def test_launch_detection_reads_the_launchers_variables(monkeypatch):
    for name in ("PMI_RANK", "PMI_SIZE", "MPI_LOCALNRANKS", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                 "OMPI_COMM_WORLD_LOCAL_SIZE", "PMIX_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_ID",
                 "SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE"):
        monkeypatch.delenv(name, raising=False)
    assert (launch.launched(), launch.env_world_size(), launch.local_ranks()) == (False, 1, 1)
    monkeypatch.setenv("SLURM_PROCID", "0")                                 # a one-task batch job
    monkeypatch.setenv("SLURM_NTASKS", "1")
    assert not launch.launched()
    monkeypatch.setenv("SLURM_NTASKS", "8")                                 # srun -n 8
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    monkeypatch.setenv("SLURM_TASKS_PER_NODE", "4(x2)")
    assert (launch.launched(), launch.env_world_size(), launch.local_ranks()) == (True, 8, 4)
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "3")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "6")
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "3")
    assert (launch.launcher_variable(), launch.env_rank(), launch.env_world_size(), launch.local_ranks()) == \
        ("OMPI_COMM_WORLD_RANK", 3, 6, 3)


def test_single_process_is_a_world_of_one_without_mpi4py():
    code = ("import sys; from minicnn import distributed as d; d.init(); "
            "print(d.world_size(), d.rank(), d.is_main(), 'mpi4py' in sys.modules, "
            "d.allreduce_mean([__import__('numpy').ones(2)])[0].tolist(), d.broadcast({'a': 1}))")
    out = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.stdout.split() == ["1", "0", "True", "False", "[1.0,", "1.0]", "{'a':", "1}"], out.stderr


@pytest.mark.parametrize("n, size", [(7, 3), (8, 8), (23, 2), (5, 4)])
def test_shards_cover_a_batch_once_in_order(n, size):
    bounds = [shard_bounds(n, size, r) for r in range(size)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    assert max(hi - lo for lo, hi in bounds) - min(hi - lo for lo, hi in bounds) <= 1


def test_gradient_buckets_run_from_the_last_weight_back_one_dtype_each_within_the_size():
    # the plan both the MPI (GradientBuckets) and the NCCL sums use
    from minicnn.nn.module import Parameter
    sizes = [(3, 3, 3, 64, np.float32), (64, np.float32), (257, 31, np.float32), (7, np.float64),
             (5, 5, np.float32), (1000, np.float32), (2, np.float32)]
    params = [(f"w{i}", Parameter(np.zeros(s[:-1], s[-1]))) for i, s in enumerate(sizes)]
    buckets = dist.plan_buckets(params, 4096)
    assert [[n for n, _ in b] for b in buckets] == [["w6", "w5"], ["w4"], ["w3"], ["w2"], ["w1"], ["w0"]]
    buckets = dist.plan_buckets(params, 1 << 20)
    assert [[n for n, _ in b] for b in buckets] == [["w6", "w5", "w4"], ["w3"], ["w2", "w1", "w0"]]
    for limit in (1, 300, 4096, 40000):
        buckets = dist.plan_buckets(params, limit)
        assert [n for b in buckets for n, _ in b] == [n for n, _ in reversed(params)]
        for b in buckets:
            assert len({p.dtype for _, p in b}) == 1
            assert len(b) == 1 or sum(p.data.nbytes for _, p in b) <= limit


def test_pairs_from_a_summed_confusion_matrix_give_the_same_metrics():
    from minicnn import metrics as M
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    halves = confusion(t[:20], p[:20], 4) + confusion(t[20:], p[20:], 4)
    t2, p2 = pairs_from_confusion(halves)
    assert M.f1_score(t2, p2, "macro") == M.f1_score(t, p, "macro")
    assert M.balanced_accuracy(t2, p2) == M.balanced_accuracy(t, p)


def test_ranks_on_one_machine_share_its_cores(monkeypatch):
    from minicnn.backends.cpu import schedule
    for name in ("MINICNN_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    cores = len(os.sched_getaffinity(0))
    alone = schedule.thread_count()
    monkeypatch.setenv("PMI_RANK", "1")
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setenv("MPI_LOCALNRANKS", "2")
    assert (alone, schedule.thread_count()) == (cores, max(1, cores // 2)) or cores < (os.cpu_count() or cores)
    monkeypatch.setenv("MINICNN_NUM_THREADS", "3")                          # the user's number wins
    assert schedule.thread_count() == 3


# ---- the commands ----------------------------------------------------------------------------------


def command(ranks: int, *args, timeout=300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", *map(str, args)]
    if ranks:
        cmd = [mpiexec(), "-n", str(ranks)] + cmd
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done


def history_rows(path) -> list[dict]:
    import csv
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_minicnn_train_under_mpiexec_equals_one_process(tmp_path):
    args = ("minicnn", "train", "--dataset", "synthetic-ham10000", "--model", "tiny", "--preset", "all",
            "--image-size", 32, "--epochs", 2, "--augment", "--verbose", 0)
    one = command(0, *args, "--out", tmp_path / "one")
    two = command(2, *args, "--out", tmp_path / "two")
    def report(done, out):                                            # the paths and the time differ
        text = done.stdout.replace(str(tmp_path / out), "OUT")
        return [line for line in text.splitlines() if not line.startswith("done in ")]

    assert report(two, "two") == report(one, "one")                   # the test report, printed once
    a, b = history_rows(tmp_path / "one" / "history.csv"), history_rows(tmp_path / "two" / "history.csv")
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b):
        for key in ("loss", "val_loss"):
            assert abs(float(ra[key]) - float(rb[key])) <= 1e-5 * abs(float(ra[key])), key
        for key in ("accuracy", "val_accuracy", "macro_f1", "val_macro_f1"):
            assert ra[key] == rb[key], key
    assert sorted(os.listdir(tmp_path / "two")) == sorted(os.listdir(tmp_path / "one"))


def test_thesis_parallel_configs_spreads_whole_runs_and_rank_0_writes_the_table(tmp_path):
    args = ("minicnn.experiments", "thesis", "--dataset", "xray", "--quick", "--columns", "majority", "random",
            "imagenet", "--verbose", 0)
    one = command(0, *args, "--out", tmp_path / "one")
    two = command(2, *args, "--out", tmp_path / "two", "--parallel", "configs")
    table = [line for line in one.stdout.splitlines() if line.startswith("|")]
    assert len(table) > 5 and [line for line in two.stdout.splitlines() if line.startswith("|")] == table
    for run in ("majority_seed0", "random_seed0", "imagenet_seed0"):      # each trained alone: identical
        with open(tmp_path / "one" / "xray" / "runs" / f"{run}.json") as f:
            a = json.load(f)
        with open(tmp_path / "two" / "xray" / "runs" / f"{run}.json") as f:
            b = json.load(f)
        assert a["summary"] == b["summary"]
        assert {k: v for k, v in a.get("history", {}).items() if "time" not in k and "per_s" not in k} == \
            {k: v for k, v in b.get("history", {}).items() if "time" not in k and "per_s" not in k}


def test_feature_cache_rows_are_shared_so_every_rank_has_them_all(tmp_path):
    code = ("import numpy as np; from minicnn import distributed as d; "
            "from minicnn.distributed.data_parallel import DataParallel; from minicnn.train.cache import FeatureCache; "
            "d.init(); c = FeatureCache(7, 'memory'); mine = np.arange(d.rank(), 7, 2); "
            "c.store(mine, np.repeat(mine[:, None].astype(np.float32), 3, 1) + 0.5); DataParallel().share_cache(c); "
            "ok = c.complete and np.array_equal(c.get(np.arange(7))[:, 0], np.arange(7) + 0.5); "
            "raise SystemExit(0 if ok else 3)")
    done = subprocess.run([mpiexec(), "-n", "2", sys.executable, "-c", code], env=env(), capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr                                # 3: a rank's rows were wrong
