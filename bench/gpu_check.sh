#!/usr/bin/env bash
# The one command for a lent GPU machine (torch there, no network): installs the wheels of .whl/ (made by
# bench/gpu_wheels.sh; carry it), runs bench/gpu_check.py and keeps its log and JSON in $OUT.
#
#     bash bench/gpu_check.sh                                   # from the repository root
#     OUT=/tmp/x GPU_CHECK_ARGS="--device cpu --quick" bash bench/gpu_check.sh   # a CPU smoke test
#
# Extra arguments (after GPU_CHECK_ARGS) go to gpu_check.py. The exit status is gpu_check.py's.
set -o pipefail
cd "$(dirname "$0")/.." || exit 2
OUT="${OUT:-/tmp/gpu-out}"
SITE="${GPU_CHECK_SITE:-/tmp/site}"
mkdir -p "$OUT" "$SITE"

shopt -s nullglob
wheels=(.whl/*.whl)
if ((${#wheels[@]} == 0)); then
    echo "WARNING: no wheels in .whl/ (run bench/gpu_wheels.sh here and carry .whl)"
elif ! PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}"
then
    # pip missing or refusing: the wheels needed are pure Python, and a wheel is a zip of its installed files
    echo "WARNING: pip install failed; unpacking the wheels into $SITE"
    for wheel in "${wheels[@]}"; do
        python3 -m zipfile -e "$wheel" "$SITE" || echo "WARNING: could not unpack $wheel"
    done
fi
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

echo "## nvidia-smi"
nvidia-smi --format=csv --query-gpu=name,driver_version,memory.total,memory.used,utilization.gpu,clocks.sm,\
clocks.max.sm,power.draw,power.limit,temperature.gpu,mig.mode.current 2>&1 || nvidia-smi || echo "no nvidia-smi"
python3 -c "import open_clip, ftfy, wcwidth; print('open_clip', open_clip.__version__, 'from', open_clip.__file__)" \
    || echo "WARNING: open_clip does not import"

# shellcheck disable=SC2086  # GPU_CHECK_ARGS is a list of words
python3 bench/gpu_check.py --out "$OUT" ${GPU_CHECK_ARGS:-} "$@" 2>&1 | tee "$OUT/gpu_check.log"
