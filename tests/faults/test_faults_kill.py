"""SIGKILL at seeded points of small ``minicnn train`` and ``thesis --quick`` runs, then resume:
the same weights, history and report as a run never killed, and no torn file.

CI runs a short plan (one kill per kind of point, plus a double kill); set
MINICNN_FAULTS_LONG=1 for the long one (about 50 kills, a few minutes). Kills tried and
survived are printed (pytest -s) and must all survive.
"""

import os

import pytest
from faultkit import image_folder, train_args
from harness import Job, kill_plan, outcome, run, survive

LONG = os.environ.get("MINICNN_FAULTS_LONG") == "1"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill-data")
    image_folder(root / "data", per_class=10)
    return root / "data"


def train_job(data, out, preset, env=None):
    return Job(["minicnn", *train_args(data, out, "--preset", preset, "--patience", "2", epochs=3)], str(out),
               resume_flag="--resume", checkpoints=("last.h5", "best.h5"), tables=("history.csv", "split.csv"),
               env=env or {})


def thesis_job(out):
    return Job(["minicnn.experiments", "thesis", "--dataset", "xray", "--quick", "--out", str(out), "--columns",
                "majority", "random", "--verbose", "0"], str(out),
               checkpoints=("xray/models/random_seed0.h5",), tables=("xray/runs/*.json", "xray/table_7_2.csv"),
               ignore=frozenset({"time_s", "images_per_s", "val_time_s", "seconds", "out"}), compare_stdout=False)


def _reference(job):
    done = run(job)
    assert done.returncode == 0, done.stderr
    return outcome(job, done.stdout)


def _survey(make_job, plans, reference):
    """(kills tried, survived, failures); a plan whose kill point the run never reached is not counted
    (e.g. checkpoint:6 of a run that stopped early), and must not happen in the short (CI) plans."""
    tried, survived, failures = 0, 0, []
    for kills in plans:
        ok, why = survive(make_job, kills, reference)
        if why.endswith("not reached"):
            if not LONG:
                failures.append(f"{kills}: {why} (the CI plan must reach every point)")
            continue
        tried += len(kills)
        survived += len(kills) if ok else 0
        if not ok:
            failures.append(f"{kills}: {why}")
    print(f"\nkills tried {tried}, survived {survived}")
    return tried, survived, failures


TRAIN_POINTS = {"batch": 9, "val_batch": 3, "checkpoint": 12, "write": 4, "feature": 4, "slow-write": 8}


@pytest.mark.parametrize("preset", ["last_block"] + (["all"] if LONG else []))
def test_train_survives_sigkill_anywhere(data, tmp_path, preset):
    reference = _reference(train_job(data, tmp_path / "reference", preset))
    count = iter(range(10_000))

    def fresh():
        return train_job(data, tmp_path / f"run{next(count)}", preset)
    if LONG:
        plans = [[k] for k in kill_plan(17, 36, TRAIN_POINTS)] + [kill_plan(s, 2, TRAIN_POINTS) for s in range(4)]
    else:   # one of each kind, then two kills in a row
        plans = [[f"{p}:{n}"] for p, n in (("batch", 4), ("val_batch", 2), ("checkpoint", 5), ("write", 3),
                                           ("feature", 2), ("slow-write", 3))] + [["batch", "checkpoint"]]
        plans[-1] = ["batch:2", "checkpoint:3"]
    tried, survived, failures = _survey(fresh, plans, reference)

    def epoch_end_only():   # checkpoints at epochs' ends only: best.h5 is written before last.h5
        return train_job(data, tmp_path / f"run{next(count)}", preset, {"MINICNN_CHECKPOINT_MINUTES": "10"})
    more = [["checkpoint:2"], ["checkpoint:3"]] if not LONG else [[f"checkpoint:{n}"] for n in range(1, 7)]
    tried2, survived2, failures2 = _survey(epoch_end_only, more, reference)
    print(f"in all: kills tried {tried + tried2}, survived {survived + survived2}")
    assert not failures + failures2, "\n".join(failures + failures2)
    assert tried + tried2 > 0 and survived + survived2 == tried + tried2


THESIS_POINTS = {"batch": 8, "decode": 90, "thesis_run": 2, "checkpoint": 10, "val_batch": 2}


def test_thesis_table_survives_sigkill_anywhere(tmp_path):
    reference = _reference(thesis_job(tmp_path / "reference"))
    count = iter(range(10_000))

    def fresh():
        return thesis_job(tmp_path / f"run{next(count)}")
    plans = ([[k] for k in kill_plan(18, 12, THESIS_POINTS)] if LONG else
             [["decode:40"], ["batch:5"], ["thesis_run:1"]])
    tried, survived, failures = _survey(fresh, plans, reference)
    assert not failures, "\n".join(failures)
    assert tried > 0 and survived == tried
