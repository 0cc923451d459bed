#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with the wheels the GPU machine lacks, for CPython 3.12 on x86-64 (README.md, "Carry").
#   bash bench/gpu/wheels.sh        (from the repo root, where pip reaches PyPI)
set -euo pipefail
d=.whl
mkdir -p "$d"
plat=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  plat+=(--platform "$p")
done
get() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" -d "$d" "$@"; }
# sd-scripts' own pins (requirements/sd-scripts.txt) and what they need beyond the machine's image
get transformers==4.54.1 diffusers==0.32.1 accelerate==1.6.0 huggingface-hub==0.34.3 tokenizers==0.21.4 \
  ftfy wcwidth voluptuous toml imagesize importlib-metadata lion-pytorch pytorch-optimizer \
  prodigy-plus-schedule-free prodigyopt schedulefree==1.4.1 open-clip-torch==3.3.0 \
  tensorboardX==2.6.5 tensorboard==2.20.0
get xformers==0.0.35 nvidia-cuda-runtime-cu12 bitsandbytes==0.50.2
# bitsandbytes ships a library per CUDA, ROCm and XPU version (~60 MB); the machine's torch is cu130: keep that one (and the CPU one)
bnb=$(ls "$d"/bitsandbytes-0.50.2-*.whl)
tmp=$(mktemp -d)
(cd "$tmp" && python3 -m zipfile -e "$OLDPWD/$bnb" . && find . -name 'libbitsandbytes_*.so' ! -name '*cuda130*' ! -name '*_cpu.so' -delete \
  && rm -f "$OLDPWD/$bnb" && python3 - "$OLDPWD/$bnb" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:
    for root, _, files in os.walk("."):
        for f in files:
            z.write(os.path.join(root, f), os.path.relpath(os.path.join(root, f), "."))
PY
)
rm -rf "$tmp"
du -sh "$d"
