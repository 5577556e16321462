#!/usr/bin/env bash
# Fetch, here (where pip can reach PyPI), the wheels the GPU machine lacks, into
# benchmarks/device_wheels/ (ignored by git) for benchmarks/device_check.sh to install offline.
#
#   bash benchmarks/prepare_device_wheels.sh [NAME==VERSION ...]
#
# The lent H200's image (python3 3.12, x86-64) holds everything minicnn and the check use
# (numba, numba-cuda, cupy-cuda13x, h5py, pillow, scikit-learn, pytest, torch; see the device
# notes' package list), but its numpy 2.5.2 removed np.row_stack, which its numba-cuda 0.30.4
# still names: compiling any CUDA kernel fails with AttributeError (seen on 2026-12-04). So with
# no arguments this fetches numpy 2.4.6, the version the CPU machines run. Name packages only
# when the machine lacks one or has the wrong version, and name each of their missing
# dependencies too: pip runs with --no-deps so nothing else comes.
# The wheels travel with the working tree, which may be 64 MiB in all: the script fails when
# the folder pushes the tree (tracked + untracked, not ignored) past that.
set -eu

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=$ROOT/benchmarks/device_wheels
LIMIT=$(( 64 * 1024 * 1024 ))
PY=${PYTHON:-python3}

if [ "$#" -eq 0 ]; then
    set -- numpy==2.4.6
fi
for spec in "$@"; do
    case "$spec" in
        *==*) ;;
        *) echo "prepare_device_wheels: '$spec' needs an exact version (NAME==VERSION)" >&2; exit 2 ;;
    esac
done

mkdir -p "$DIR"
# The machine's python3 is CPython 3.12 on x86-64 glibc: ask for exactly those wheels.
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
           manylinux1_x86_64 any; do
    platforms+=(--platform "$tag")
done
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$DIR" "$@"

wheels=$(du -sb "$DIR" | cut -f1)
tree=$(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- | tail -1 | cut -f1)
total=$(( wheels + tree ))
echo "prepare_device_wheels: wheels $(( wheels / 1024 )) KiB + working tree $(( tree / 1024 )) KiB" \
     "= $(( total / 1024 )) KiB of the 65536 KiB a device call carries"
if [ "$total" -gt "$LIMIT" ]; then
    echo "prepare_device_wheels: over the 64 MiB carry limit: drop a wheel from $DIR" >&2
    exit 1
fi
