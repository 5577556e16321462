"""benchmarks/device_check.sh without a GPU: one line, exit 0, and no pip, python or network."""

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "device_check.sh"
# Every program the GPU path would start: each stand-in leaves a mark if the script calls it.
WATCHED = ("pip", "pip3", "python", "python3", "curl", "wget", "pytest")


def fake_path(tmp_path: Path, nvidia_smi: bool) -> dict:
    """An environment whose PATH holds marking stand-ins (and a failing nvidia-smi if asked)
    ahead of only the folders of bash's own tools."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    names = WATCHED + (("nvidia-smi",) if nvidia_smi else ())
    for name in names:
        tool = bin_dir / name
        tool.write_text(f"#!/bin/sh\necho {name} >> {tmp_path / 'called'}\nexit 1\n")
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    system = [d for d in ("/usr/bin", "/bin") if Path(d).is_dir()]
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    env["OUT"] = str(tmp_path / "out")   # where results would go: must stay absent
    env["PATH"] = os.pathsep.join([str(bin_dir), *system])
    return env


@pytest.mark.parametrize("args, nvidia_smi", [([], False), ([], True), (["--dry-run"], False)],
                         ids=["no nvidia-smi", "nvidia-smi fails", "--dry-run"])
def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(tmp_path, args, nvidia_smi):
    if shutil.which("nvidia-smi") and not args:
        pytest.fail("this test expects a machine without nvidia-smi on the system PATH")
    env = fake_path(tmp_path, nvidia_smi)
    work = tmp_path / "cwd"
    work.mkdir()
    run = subprocess.run(["bash", str(SCRIPT), *args], check=False, cwd=work, env=env, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 1, run.stdout
    assert "no gpu" in lines[0].lower()
    assert run.stderr == ""
    called = tmp_path / "called"
    marks = called.read_text().split() if called.exists() else []
    assert [m for m in marks if m != "nvidia-smi"] == [], f"the no-GPU path started {marks}"
    assert not (tmp_path / "out").exists()   # no output folder made
    assert list(work.iterdir()) == []         # and nothing written where it ran


def test_an_unknown_argument_is_refused(tmp_path):
    run = subprocess.run(["bash", str(SCRIPT), "--fast"], check=False, env=fake_path(tmp_path, False),
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "--fast" in run.stderr


def test_the_step_check_flags_a_weight_whose_update_differs():
    import sys

    import numpy as np
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_step_check

    before = {"a": np.zeros(4, np.float32), "b": np.ones(3, np.float32)}
    cpu = {"a": np.full(4, 0.1, np.float32), "b": np.full(3, 0.9, np.float32)}   # updates 0.1, -0.1
    gpu = {"a": cpu["a"] * (1 + 1e-3), "b": cpu["b"] + np.float32(0.01)}          # b's update off by 10%
    result = gpu_step_check.compare(cpu, gpu, before, rtol=2e-2, atol=1e-6)
    assert result["out_of_tolerance"] == ["b"]
    assert result["worst_layer"] == "b"
    assert result["worst_update_error"] == pytest.approx(0.1, rel=1e-3)
