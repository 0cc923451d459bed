#!/usr/bin/env bash
# tools/pypi-torch.sh DIR: make DIR's torch requirement files name PyPI's build of the same torch, for
# `make image-test` (the Dockerfile's TORCH_FROM=pypi), whose machines cannot reach the PyTorch index.
# PyPI's torch 2.10.0 is the cu128 build (its nvidia-*-cu12 and triton pins are lock-cu128.txt's), so only
# the local version labels (+cu128) and the index line go; every version stays the lock's.
set -euo pipefail
dir="${1:?usage: tools/pypi-torch.sh DIR}"
sed -i -e 's/^\([A-Za-z0-9_.-]*==[^+ ]*\)+cu128/\1/' -e '/^--extra-index-url/d' "$dir"/torch-cu128.txt "$dir"/lock-cu128.txt
