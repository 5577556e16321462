"""Kill a small ``minicnn train`` / ``thesis --quick`` run with SIGKILL, resume it, compare.

A *kill* is (point, n): the run is started in a subprocess with
``MINICNN_TEST_KILL_AT=point:n`` and SIGKILLs itself the n-th time it passes that
point (minicnn.io.storage.fault_point: a training batch, a validation batch, the
rename of a finished checkpoint, any other file write, an image going into the
decoded-image cache, a batch going into the feature cache, the end of one thesis
configuration). The point "slow-write:n" is a kill from outside: checkpoint writes
are slowed down ($MINICNN_TEST_SLOW_WRITE) and the harness sends SIGKILL while the
n-th temporary checkpoint file exists.

After the kill every file in the output folder must be whole (each .h5 loads with its
checksum, each CSV and JSON parses); then the same command (with --resume for train)
runs to the end, possibly after more kills, and its final weights, history and test
report must equal those of a run never killed, bit for bit.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from minicnn.io import load_checkpoint, read_checkpoint_weights

TIMING = {"time_s", "images_per_s", "val_time_s", "seconds"}
ENV = {"MINICNN_CHECKPOINT_MINUTES": "0", "MINICNN_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


@dataclass
class Job:
    """A command to run to its end, and what of its output folder must match the reference."""

    argv: list[str]                      # after ``python -m``
    out: str
    resume_flag: str | None = None       # added when a checkpoint exists ("--resume" for train)
    checkpoints: tuple[str, ...] = ()    # .h5 files (relative to out) whose weights are compared
    tables: tuple[str, ...] = ()         # CSV / JSON files (relative, globs) whose numbers are compared
    ignore: frozenset = frozenset(TIMING)   # keys of those tables that may differ (times, paths)
    compare_stdout: bool = True
    env: dict = field(default_factory=dict)
    trace: list = field(default_factory=list)

    def command(self, resume: bool) -> list[str]:
        extra = [self.resume_flag] if resume and self.resume_flag else []
        return [sys.executable, "-m", *self.argv, *extra]


def _env(extra: dict) -> dict:
    return {**os.environ, "PYTHONPATH": os.getcwd(), **ENV, **extra}


def run(job: Job, kill: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the job once (resuming when it has a checkpoint), killed at ``kill`` if given."""
    resume = bool(job.resume_flag) and any(os.path.exists(os.path.join(job.out, n)) for n in ("last.h5", "best.h5"))
    cmd = job.command(resume)
    if kill is None or not kill.startswith("slow-write:"):
        env = _env({**job.env, **({"MINICNN_TEST_KILL_AT": kill} if kill else {})})
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        job.trace.append((kill, done.returncode))
        return done
    return _kill_during_slow_write(job, cmd, int(kill.split(":")[1]), timeout)


def _kill_during_slow_write(job: Job, cmd, n: int, timeout: float) -> subprocess.CompletedProcess:
    child = subprocess.Popen(cmd, env=_env({**job.env, "MINICNN_TEST_SLOW_WRITE": "0.4"}), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while child.poll() is None and time.monotonic() < deadline:
        temps = set(glob.glob(os.path.join(job.out, "**", ".*.h5.*.tmp"), recursive=True))
        seen |= temps
        if len(seen) >= n and temps:
            child.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    out, err = child.communicate(timeout=timeout)
    job.trace.append((f"slow-write:{n}", child.returncode))
    return subprocess.CompletedProcess(cmd, child.returncode, out, err)


def torn_files(out: str) -> list[str]:
    """Files in ``out`` that do not read back whole (temporary files are not counted as files)."""
    bad = []
    for path in glob.glob(os.path.join(out, "**", "*"), recursive=True):
        name = os.path.basename(path)
        if os.path.isdir(path) or name.endswith(".tmp") or "standin" in path or "decoded" in path:
            continue
        try:
            if name.endswith(".h5"):
                load_checkpoint(path)
            elif name.endswith(".csv"):
                with open(path, newline="") as f:
                    rows = list(csv.reader(f))
                if not rows or len({len(r) for r in rows if r}) != 1:
                    raise ValueError("ragged rows")
            elif name.endswith(".json"):
                with open(path) as f:
                    json.load(f)
        except Exception as err:  # noqa: BLE001 (any failure to read back is a torn file)
            bad.append(f"{path}: {type(err).__name__}: {err}")
    return bad


def _without(value, ignore):
    if isinstance(value, dict):
        return {k: _without(v, ignore) for k, v in value.items() if k not in ignore}
    if isinstance(value, list):
        return [_without(v, ignore) for v in value]
    return value


def _table(path: str, ignore):
    if path.endswith(".json"):
        with open(path) as f:
            return _without(json.load(f), ignore)
    with open(path, newline="") as f:
        return _without(list(csv.DictReader(f)), ignore)


def outcome(job: Job, stdout: str) -> dict:
    """What must not depend on kills: weights of the checkpoints, the tables, the printed report."""
    result = {"stdout": stdout} if job.compare_stdout else {}
    for name in job.checkpoints:
        arrays, trainable, _ = read_checkpoint_weights(os.path.join(job.out, name))
        result[name] = ({k: v.tobytes() for k, v in arrays.items()}, trainable)
    for pattern in job.tables:
        for path in sorted(glob.glob(os.path.join(job.out, pattern))):
            result[os.path.relpath(path, job.out)] = _table(path, job.ignore)
    return result


def differences(a: dict, b: dict) -> list[str]:
    return [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def kill_plan(seed: int, count: int, points: dict[str, int]) -> list[str]:
    """``count`` kills "point:n" drawn with ``random.Random(seed)``; points = {point: largest n}."""
    rng = random.Random(seed)
    names = sorted(points)
    return [f"{p}:{rng.randint(1, points[p])}" for p in (names[i % len(names)] for i in range(count))]


def survive(make_job, kills: list[str], reference: dict) -> tuple[bool, str]:
    """Run a fresh job killed at each of ``kills`` in turn (one process each), then to its end.

    Returns (survived, why not). A kill whose point the run never reached is not a kill:
    the run simply finished (that is reported as "not reached").
    """
    job = make_job()
    for kill in kills:
        done = run(job, kill)
        if done.returncode == 0:
            return True, f"{kill} not reached"
        if done.returncode != -signal.SIGKILL:
            return False, f"{kill}: exit {done.returncode}: {done.stderr[-2000:]}"
        torn = torn_files(job.out)
        if torn:
            return False, f"{kill}: torn files {torn}"
    done = run(job)
    if done.returncode != 0:
        return False, f"resume after {kills}: exit {done.returncode}: {done.stderr[-2000:]}"
    leftover = glob.glob(os.path.join(job.out, "**", ".*.tmp"), recursive=True)
    if leftover:
        return False, f"temporary files left after the run finished: {leftover}"
    diff = differences(outcome(job, done.stdout), reference)
    return (not diff), (f"differs from the uninterrupted run in {diff}" if diff else "")
