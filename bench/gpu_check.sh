#!/usr/bin/env bash
# The GPU check in one command (docs/benchmarks.md, "GPU check").
#   bench/gpu_check.sh [OUTDIR]            on the GPU machine: install .whl/ (bench/gpu_wheels.sh),
#       run the CUDA tests and the loss and training benchmarks; JSON and a log in OUTDIR (default
#       $OUT). Finishes within 8 minutes and stops itself before 9.
#   bench/gpu_check.sh --dry-run [OUTDIR]  on a CPU machine: check that the wheel set resolves for the
#       GPU machine and run every step without CUDA (tiny benchmark shapes).
# Options: --skip-wheels (dry run without .whl/), --only STEP,... (wheels,probe,pytest,loss,train).
# PYTHON picks the interpreter (default python3; on the GPU machine that is the one with torch);
# SITE the folder the wheels go to (default /tmp/site).
set -u
start=$(date +%s)
repo=$(cd "$(dirname "$0")/.." && pwd)
dry=0; extra=(); out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1; extra+=(--dry-run) ;;
    --skip-wheels) extra+=(--skip-wheels) ;;
    --only) [ $# -ge 2 ] || { echo "gpu_check.sh: --only needs a list of steps" >&2; exit 2; }
            for s in ${2//,/ }; do
              case "$s" in wheels|probe|pytest|loss|train) ;;
                *) echo "gpu_check.sh: unknown step(s) $s; steps are wheels,probe,pytest,loss,train" >&2; exit 2 ;;
              esac
            done
            extra+=(--only "$2"); shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) [ -z "$out" ] || { echo "gpu_check.sh: one output folder only" >&2; exit 2; }; out=$1 ;;
  esac
  shift
done
out=${out:-${OUT:-}}
[ -n "$out" ] || { echo "gpu_check.sh: give an output folder (or set OUT)" >&2; exit 2; }
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac  # relative to where it was called from
mkdir -p "$out" || exit 2
cd "$repo"
py=${PYTHON:-python3}
log="$out/gpu_check.log"
site=${SITE:-/tmp/site}
if [ $dry = 0 ]; then
  n=$(ls .whl/*.whl 2>/dev/null | wc -l)
  echo "== installing $n wheels from .whl/ into $site" | tee -a "$log"
  if [ "$n" -gt 0 ]; then
    # The device notes' invocation: no index, no dependencies (bench/gpu_wheels.txt names them all).
    timeout 90 "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" .whl/*.whl >>"$log" 2>&1 || echo "wheel install FAILED (see $log)" | tee -a "$log"
  else
    echo "no wheels in .whl/: run bench/gpu_wheels.sh where PyPI is reachable, and carry .whl" | tee -a "$log"
  fi
  export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# The driver keeps every step inside 480 s from $start; this is the backstop (525 s < 9 minutes).
left=$((525 - ($(date +%s) - start)))
timeout -k 5 "$left" "$py" bench/gpu_check.py --out "$out" --start "$start" ${extra[@]+"${extra[@]}"}
