# syntax=docker/dockerfile:1.7
# bespoke: a folder of 24x24 pixel-art portraits in, an SDXL LoRA out, on kohya sd-scripts (CUDA 12.8).
# Each install step is one that the Makefile runs too, with the same files (`make sd-scripts`,
# `make kohya-env`), so a green CI means a sane image. docs/container.md explains every version.
# `make image-test` builds this same file with other build args for what CI machines cannot reach (a
# Debian base instead of the CUDA one, no NVIDIA apt packages, PyPI's torch, sd-scripts from a folder)
# and runs tools/image-test.sh in it, as the image workflow does against the real image.

# CUDA 12.8.1 "base": the CUDA runtime (cudart) plus the NVIDIA container settings, which refuse to start
# on a driver too old for 12.8. Not "runtime": torch's cu128 wheels bring cuBLAS, cuDNN and NCCL as
# nvidia-* packages, and the runtime flavour would be a second copy of about 3 GB.
ARG CUDA_BASE=nvidia/cuda:12.8.1-base-ubuntu24.04@sha256:133c78a0575303be34164d0b90137a042172bdf60696af01a3c424ab402d86e2

# ---- sd-scripts at the pin in bespoke/SD_SCRIPTS_COMMIT, fetched as `make sd-scripts` does -------------
FROM ${CUDA_BASE} AS sd-scripts
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG DEBIAN_FRONTEND=noninteractive
# Apt versions float with Ubuntu's security updates; the base image is pinned by digest instead.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git \
 && rm -rf /var/lib/apt/lists/*
ARG SD_SCRIPTS_REPO=https://github.com/kohya-ss/sd-scripts
# A folder holding sd-scripts at the pin (with .bespoke-commit), mounted into the build (podman build -v):
# copied instead of cloned, as `make sd-scripts` copies SD_SCRIPTS_SOURCE.
ARG SD_SCRIPTS_SOURCE=
COPY bespoke/SD_SCRIPTS_COMMIT /tmp/SD_SCRIPTS_COMMIT
RUN commit="$(tr -d '[:space:]' < /tmp/SD_SCRIPTS_COMMIT)" \
 && if [ -n "${SD_SCRIPTS_SOURCE}" ]; then \
      test "$(cat "${SD_SCRIPTS_SOURCE}/.bespoke-commit")" = "${commit}" \
      && cp -R "${SD_SCRIPTS_SOURCE}" /opt/sd-scripts && chmod -R u+w /opt/sd-scripts; \
    else \
      git init -q /opt/sd-scripts \
      && git -C /opt/sd-scripts fetch -q --depth 1 "${SD_SCRIPTS_REPO}" "${commit}" \
      && git -C /opt/sd-scripts checkout -q FETCH_HEAD \
      && test "$(git -C /opt/sd-scripts rev-parse HEAD)" = "${commit}" \
      && rm -rf /opt/sd-scripts/.git; \
    fi \
 && echo "${commit}" > /opt/sd-scripts/.bespoke-commit

# ---- the OS layer: Python 3.12, tini (PID 1), sshd (PUBLIC_KEY), make (make smoke-test), gcc with Python's
# headers (the fast profile's torch.compile builds Triton's launcher with them), and g++ with CUDA's headers
# (inductor's C++ kernel launcher includes cuda.h, cuda_runtime.h with its crt/ headers, cuda_bf16/fp8.h and
# CCCL's nv/target; the base flavour has none; the -12-8 suffix follows CUDA_BASE) ----
FROM ${CUDA_BASE} AS os
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG DEBIAN_FRONTEND=noninteractive
# Host keys that openssh-server makes on install are deleted: each container makes its own at start.
# /etc/bespoke-cuda-headers says whether CUDA's headers were installed (--verify-image checks them if so).
ARG CUDA_DEV_PACKAGES="cuda-cccl-12-8 cuda-crt-12-8 cuda-cudart-dev-12-8 cuda-driver-dev-12-8"
# hadolint ignore=DL3008,SC2086
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates ${CUDA_DEV_PACKAGES} \
    g++ gcc libc6-dev make openssh-server python3 python3-dev python3-venv tini \
 && rm -rf /var/lib/apt/lists/* /etc/ssh/ssh_host_* \
 && echo "${CUDA_DEV_PACKAGES}" > /etc/bespoke-cuda-headers

# ---- dependencies: exactly `make kohya-env`, with TORCH=cu128 in place of cpu, through the lock ---------
# Only the files this layer installs are copied: a change to any other file (torch-cpu.txt, lock-cpu.txt)
# leaves this ~4.5 GB layer cached.
FROM os AS venv
ARG PIP_VERSION=25.3
ARG TORCH=cu128
# TORCH_FROM=pypi (make image-test, whose machines cannot reach the PyTorch index): the same torch from PyPI,
# whose torch 2.10.0 is this cu128 build (its nvidia-*-cu12 and triton requirements are the lock's); only
# the local version label (+cu128) and the index line are dropped from the requirement files.
ARG TORCH_FROM=pytorch
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
WORKDIR /opt/bespoke
COPY requirements/lock-${TORCH}.txt requirements/torch-${TORCH}.txt requirements/sd-scripts.txt \
     requirements/tokenizer-data.txt requirements/
COPY tools/pypi-torch.sh tools/
RUN --mount=type=cache,target=/root/.cache/pip \
    if [ "${TORCH_FROM}" = pypi ]; then tools/pypi-torch.sh requirements; fi \
 && pip install -c requirements/lock-${TORCH}.txt --upgrade pip==${PIP_VERSION} setuptools \
 && pip install -c requirements/lock-${TORCH}.txt -r requirements/torch-${TORCH}.txt -r requirements/sd-scripts.txt
# bespoke's own [project] dependencies (all pinned), installed here so the code layer below adds none.
# pip check runs before tokenizer-data, which is installed --no-deps for its data file alone.
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
       > /tmp/bespoke-requirements.txt \
 && pip install -c requirements/lock-${TORCH}.txt -r /tmp/bespoke-requirements.txt \
 && pip check \
 && pip install --no-deps -r requirements/tokenizer-data.txt

# ---- the two CLIP tokenizers sd-scripts loads, in its --tokenizer_cache_dir layout (id with / as _), built
# offline by bespoke's own builder from open-clip's BPE file (tokenizer-data.txt): no Hub at build time -----
FROM venv AS tokenizers
COPY bespoke/ /tmp/src/bespoke/
RUN PYTHONPATH=/tmp/src python -c 'from pathlib import Path; from bespoke import tokens; tokens.build(Path("/opt/bespoke/tokenizers"))' \
 && rm -rf /tmp/src

# ---- the image ---------------------------------------------------------------------------------------
FROM venv AS image
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="bespoke" \
      org.opencontainers.image.description="SDXL LoRA training appliance for 24x24 pixel-art portraits (kohya sd-scripts, CUDA 12.8)" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="docker.io/nvidia/cuda:12.8.1-base-ubuntu24.04"
COPY --from=sd-scripts /opt/sd-scripts /opt/sd-scripts
COPY --from=tokenizers /opt/bespoke/tokenizers /opt/bespoke/tokenizers
# KOHYA_VENV tells the Makefile that /opt/venv is its kohya-env, so `make smoke-test` installs nothing
# and, with SD_SCRIPTS_DIR set, clones nothing. (DL3064 mistakes BESPOKE_TOKENIZER_DIR for a secret.)
# hadolint ignore=DL3064
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SD_SCRIPTS_DIR=/opt/sd-scripts \
    BESPOKE_TOKENIZER_DIR=/opt/bespoke/tokenizers \
    BESPOKE_WORKSPACE=/workspace \
    KOHYA_VENV=/opt/venv \
    HF_HUB_DISABLE_TELEMETRY=1
COPY . /opt/bespoke/
ARG TORCH_FROM=pytorch
# The build's own smoke check. `bespoke check` itself needs a GPU, a volume and data, none of which a
# build has; --verify-image checks what the build is responsible for (sd-scripts at the pin, the
# tokenizers, every pinned version installed, xformers built for this torch, the imports).
RUN if [ "${TORCH_FROM}" = pypi ]; then tools/pypi-torch.sh /opt/bespoke/requirements; fi \
 && pip install --no-cache-dir --no-deps --no-build-isolation -e /opt/bespoke \
 && touch /opt/venv/.installed \
 && mkdir -p /workspace \
 && bespoke --help > /dev/null \
 && bespoke --version \
 && bespoke check --help > /dev/null \
 && python -m entrypoint --verify-image
# Root, as RunPod runs images: sshd needs it, and a volume owned by anyone stays writable.
# `docker run --user "$(id -u):$(id -g)"` works too (docs/container.md).
EXPOSE 6006 22
ENTRYPOINT ["/usr/bin/tini", "--", "/opt/venv/bin/python", "-m", "entrypoint"]
CMD ["bespoke", "run"]
