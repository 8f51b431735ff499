#!/usr/bin/env bash
# Download the wheels the GPU machine lacks (bench/gpu_wheels.txt: one pinned version each) for
# CPython 3.12 manylinux x86_64, without their dependencies, into .whl/ (git-ignored), then print
# the set's total size. Needs PyPI; run it where pip reaches it, before a GPU check:
#   bench/gpu_wheels.sh            (PYTHON=... picks the interpreter whose pip downloads; default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
dest=.whl
mkdir -p "$dest"
# Only what the list names stays in the folder: a stale wheel of another version would stop the
# install on the machine (two versions of one package).
rm -f "$dest"/*.whl
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$dest" -r bench/gpu_wheels.txt
ls -l "$dest"/*.whl | awk '{print $5, $9}'
echo "$(ls "$dest"/*.whl | wc -l) wheels, $(du -cb "$dest"/*.whl | tail -1 | awk '{printf "%.1f MiB", $1 / 1048576}') in $dest/ (carry limit 64 MiB with the working tree)"
