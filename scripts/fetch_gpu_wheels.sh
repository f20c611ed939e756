#!/usr/bin/env bash
# Fill .whl/ with the wheels the lent GPU machine lacks (Python 3.12, x86-64; it has torch, triton,
# transformers, einops, timm and pytest-xdist but not these), for scripts/gpu_check.sh. .whl/ is
# kept out of git through .git/info/exclude and travels with the device tool's `carry`.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>"$(git rev-parse --git-path info/exclude)"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
    open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
ls -l .whl
