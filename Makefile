# One-command set-up on a fresh machine: `make demo` (main job) and `make test` (test suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system-deps demo test lint format bench clean

# Debian tools the tests use as real peers/checkers: dcmtk (dcmdump, storescu, storescp),
# dicom3tools (dciodvfy) and Chromium (the web viewer test, driven by Playwright).
SYSTEM_PACKAGES := dcmtk dicom3tools chromium
system-deps:
	@if ! command -v dcmdump >/dev/null 2>&1 || ! command -v dciodvfy >/dev/null 2>&1 \
	    || ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null; \
	  else \
	    echo "Please install the Debian packages $(SYSTEM_PACKAGES) (sudo apt-get install $(SYSTEM_PACKAGES))"; \
	  fi; \
	fi

# torch is installed first and pinned to the CPU wheel so no CUDA build is ever pulled.
$(STAMP): pyproject.toml constraints-cpu.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints-cpu.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints-cpu.txt -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP) system-deps

demo: setup
	$(BIN)/ductai demo --out demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) demo .pytest_cache .ruff_cache
