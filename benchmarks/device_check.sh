#!/usr/bin/env bash
# One short check of minicnn on a machine with one NVIDIA GPU (the lent H200: CUDA 13 driver,
# 16 cores, python3 3.12 with numba, numba-cuda, cupy-cuda13x, torch, pytest; no internet).
#
#   bash benchmarks/device_check.sh [--dry-run]
#
# With no GPU (no nvidia-smi, or nvidia-smi fails) or with --dry-run it prints one line and
# exits 0, touching nothing (no pip, no network, no output folder).
#
# On a GPU machine, in at most DEVICE_CHECK_SECONDS (default 480) in all, it
#   1. installs the wheels carried in benchmarks/device_wheels/ (made here by
#      benchmarks/prepare_device_wheels.sh; ignored by git, so the device tool must carry it)
#      into a private --target folder, offline (--no-index), if there are any;
#   2. runs, each under its own time cap and what is left of the total:
#        env               the GPU, driver and package versions
#        gpu_tests         python -m pytest -m gpu (NUMBA_ENABLE_CUDASIM=0: the real GPU)
#        gpu_step          benchmarks/gpu_step_check.py: one VGG16 training step, cuda vs cpu
#        nccl              benchmarks/nccl_check.py: minicnn.distributed.nccl's bucketed GPU sum, one rank
#        kernels_vs_cudnn  benchmarks/kernels_vs_cudnn.py --configs 64x32 --repeats 3
#        gpu_vs_cpu        benchmarks/gpu_vs_cpu.py --size 64, few steps
#        threads           benchmarks/threads.py --threads 1,4,16: the CPU backend's thread scaling
#                          on the device's 16 cores, against PyTorch's (not a GPU check; few machines
#                          here have that many cores)
#   3. writes into one folder ($OUT if set, else ./device_check_out) two files: device_check.log
#      (every step's full output) and device_check.json (each step's command, exit status,
#      seconds, output tail, and its last output line parsed when it is JSON). Two files,
#      because the device tool returns at most 8.
# Exit status: 0 if every step that ran passed, else 1.
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ "${1:-}" = "--dry-run" ]; then
    echo "device_check: dry run (--dry-run): no GPU used, nothing run."
    exit 0
elif [ -n "${1:-}" ]; then
    echo "device_check: unknown argument '$1' (expected --dry-run or nothing)" >&2
    exit 2
fi
if ! command -v nvidia-smi >/dev/null 2>&1 || ! GPU=$(nvidia-smi -L 2>/dev/null) || [ -z "$GPU" ]; then
    echo "device_check: no GPU here (nvidia-smi missing or failing): nothing run."
    exit 0
fi

PY=${PYTHON:-python3}
TOTAL=${DEVICE_CHECK_SECONDS:-480}
DEADLINE=$(( $(date +%s) + TOTAL ))
DEST=${OUT:-$ROOT/device_check_out}
mkdir -p "$DEST"
LOG=$DEST/device_check.log
WORK=$(mktemp -d)
RECORDS=$WORK/records.jsonl
: > "$LOG"
: > "$RECORDS"
echo "device_check: $GPU; total budget ${TOTAL}s; results in $DEST" | tee -a "$LOG"

SITE=$WORK/site
export PYTHONPATH=$ROOT
if compgen -G "$ROOT/benchmarks/device_wheels/*.whl" >/dev/null; then
    # Offline: only the carried wheels, each exactly as carried, into a private folder.
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" "$ROOT"/benchmarks/device_wheels/*.whl >>"$LOG" 2>&1; then
        export PYTHONPATH=$ROOT:$SITE
    else
        echo "device_check: installing benchmarks/device_wheels/*.whl failed (see the log)" | tee -a "$LOG"
    fi
fi
export PYTHONUNBUFFERED=1 NUMBA_ENABLE_CUDASIM=0

record() {  # name rc milliseconds output-file command...
    "$PY" - "$@" >>"$RECORDS" <<'EOF'
import json, sys
name, rc, ms, out, *cmd = sys.argv[1:]
text = open(out, errors="replace").read()
lines = [line for line in text.splitlines() if line.strip()]
parsed = None
if lines:
    try:
        parsed = json.loads(lines[-1])
    except ValueError:
        pass
print(json.dumps({"step": name, "command": " ".join(cmd), "rc": int(rc), "seconds": int(ms) / 1000,
                  "result": parsed, "output_tail": "\n".join(lines[-40:])}))
EOF
}

step() {  # name cap-seconds command...
    local name=$1 cap=$2 left out start rc
    shift 2
    left=$(( DEADLINE - $(date +%s) ))
    out=$WORK/$name.out
    if [ "$left" -lt 15 ]; then
        echo "skipped: the total budget of ${TOTAL}s is spent" > "$out"
        record "$name" 124 0 "$out" "$@"
        return
    fi
    [ "$cap" -gt "$left" ] && cap=$left
    echo "== $name (at most ${cap}s): $*" | tee -a "$LOG"
    start=$(date +%s%N)
    (cd "$ROOT" && timeout --kill-after=10 "$cap" "$@") >"$out" 2>&1
    rc=$?
    cat "$out" >>"$LOG"
    echo "== $name: exit $rc" | tee -a "$LOG"
    record "$name" "$rc" $(( ($(date +%s%N) - start) / 1000000 )) "$out" "$@"
}

step env 60 "$PY" -c '
import importlib.metadata as md, json, subprocess
names = ["numpy", "numba", "numba-cuda", "cupy-cuda13x", "torch", "pytest"]
versions = {}
for n in names:
    try:
        versions[n] = md.version(n)
    except md.PackageNotFoundError:
        versions[n] = None
smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                      "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
print(json.dumps({"gpu": smi, "packages": versions}))'
step gpu_tests 150 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests
step gpu_step 120 "$PY" benchmarks/gpu_step_check.py --size 64 --batch 4
step nccl 60 "$PY" benchmarks/nccl_check.py
step kernels_vs_cudnn 120 "$PY" benchmarks/kernels_vs_cudnn.py --configs 64x32 --repeats 3
step gpu_vs_cpu 120 "$PY" benchmarks/gpu_vs_cpu.py --size 64 --gpu-batch 32 --cpu-batch 4 --steps 3 --cpu-steps 1
step threads 120 "$PY" benchmarks/threads.py --threads 1,4,16 --size 64 --batch 4 --steps 2
"$PY" - "$RECORDS" "$DEST/device_check.json" <<'EOF' | tee -a "$LOG"
import json, os, sys
steps = [json.loads(line) for line in open(sys.argv[1])]
summary = {"ok": all(s["rc"] == 0 for s in steps), "steps": steps}
tmp = sys.argv[2] + ".tmp"
with open(tmp, "w") as fh:
    json.dump(summary, fh, indent=2)
os.replace(tmp, sys.argv[2])
print("device_check: " + ", ".join(f"{s['step']} rc={s['rc']}" for s in steps))
sys.exit(0 if summary["ok"] else 1)
EOF
status=${PIPESTATUS[0]}
rm -rf "$WORK"
exit $status
