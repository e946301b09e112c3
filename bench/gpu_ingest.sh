#!/usr/bin/env bash
# GPU decoding (--decoder nvdec) measured on a lent GPU machine, in one prepared run (bench/gpu_ingest.py).
#
#     bash bench/gpu_ingest.sh prepare     # here, once: wheels and data into build/gpu_ingest/ (git-ignored)
#     bash bench/gpu_ingest.sh             # there, with build/gpu_ingest carried: install, check, measure
#
# "prepare" downloads the wheels the machine lacks (PyNvVideoCodec, open_clip and the indexer's catalog
# libraries, for its Python 3.12) and writes the media and the CPU path's reference frames (PyAV, here).
# The run installs the wheels into /tmp/site, prints nvidia-smi, runs gpu_ingest.py with extra arguments
# passed on, and keeps its log and JSON in $OUT. Exit status: gpu_ingest.py's (2: it cannot run there).
set -o pipefail
cd "$(dirname "$0")/.." || exit 2
DIR=build/gpu_ingest
if [[ "${1:-}" == "prepare" ]]; then
    set -e
    mkdir -p "$DIR/wheels"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DIR/wheels" \
        PyNvVideoCodec==2.2.4 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.7.0 SQLAlchemy==2.1.9 alembic==1.20.1 \
        Mako==1.4.3 pydantic==2.13.4 pydantic_core==2.46.4 pydantic-settings==2.14.1 python-dotenv==1.2.2 \
        platformdirs==4.14.9 annotated-types==0.7.0 typing-inspection==0.4.2
    # PyNvVideoCodec's wheel carries FFmpeg's source, samples and three copies of each library: the loader
    # needs one (its soname), and what travels to the machine is limited to 64 MiB
    python3 - "$DIR"/wheels/pynvvideocodec-*.whl <<'PY'
import re, sys, zipfile
for wheel in sys.argv[1:]:
    drop = re.compile(r"(^samples/|\.data/|/lib(avformat|avutil)\.so(\.\d+\.\d+\.\d+)?$)")
    with zipfile.ZipFile(wheel) as source:
        kept = [i for i in source.infolist() if not drop.search(i.filename)]
        files = {i.filename: source.read(i) for i in kept}
    for name in files:
        if name.endswith(".dist-info/RECORD"):
            lines = files[name].decode().splitlines(keepends=True)
            files[name] = "".join(l for l in lines if not drop.search(l.split(",")[0])).encode()
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as target:
        for info in kept:
            target.writestr(info, files[info.filename])
PY
    [[ -f "$DIR/data/reference.json" ]] || python3 bench/gpu_ingest.py --make-data "$DIR/data"
    du -sh "$DIR"/*
    exit 0
fi
OUT="${OUT:-/tmp/gpu-out}"
SITE="${GPU_INGEST_SITE:-/tmp/site}"
mkdir -p "$OUT" "$SITE"
shopt -s nullglob
wheels=("$DIR"/wheels/*.whl)
if ((${#wheels[@]} == 0)); then
    echo "WARNING: no wheels in $DIR/wheels (run 'bash bench/gpu_ingest.sh prepare' here and carry $DIR)"
elif ! PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}"
then
    echo "WARNING: pip install failed; unpacking the wheels into $SITE"
    for wheel in "${wheels[@]}"; do python3 -m zipfile -e "$wheel" "$SITE" || echo "WARNING: could not unpack $wheel"; done
fi
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
echo "## nvidia-smi"
nvidia-smi --format=csv --query-gpu=name,driver_version,memory.total,clocks.max.sm,mig.mode.current 2>&1 \
    || echo "no nvidia-smi"
python3 -c "import cv2; print('OpenCV', cv2.__version__)" || echo "WARNING: OpenCV does not import"
python3 bench/gpu_ingest.py --data "$DIR/data" --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_ingest.log"
