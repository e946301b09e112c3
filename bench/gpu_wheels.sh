#!/usr/bin/env bash
# Download the wheels that `import model, model.train.trainer` needs and a bare GPU machine lacks
# (torch, torchvision, numpy, safetensors, tqdm, regex ... are there) into .whl/, for bench/gpu_check.sh.
#
#     bash bench/gpu_wheels.sh        # from the repository root; .whl/ is git-ignored
#
# open_clip_torch's other requirements (huggingface_hub, timm) are imported inside try/except by
# open_clip and not needed for the architectures used here; ftfy needs wcwidth.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.7.0)
mkdir -p .whl
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
ls -l .whl
du -sh .whl
