# MedAI — two commands for a new user:
#   make demo   set everything up, segment a real hippocampus MRI with the shipped model
#   make test   set everything up, run the whole test suite
# Everything installs into .venv; torch is pinned exactly (an unpinned torch pulls a multi-GB CUDA build).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
TORCH  := torch==2.13.0
export MEDAI_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: venv demo test test-fast compile312 bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e ".[test]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/medai demo

# Slicer >= 5.10 embeds Python 3.12: byte-compile every module with a 3.12 interpreter when one exists.
compile312:
	@py312=""; for c in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12; do \
	  if [ -x "$$(command -v $$c 2>/dev/null)" ] && $$c -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then py312=$$c; break; fi; \
	done; \
	if [ -n "$$py312" ]; then \
	  echo "byte-compiling every module with $$($$py312 --version) (Slicer's Python)"; \
	  PYTHONPYCACHEPREFIX=$$(mktemp -d) $$py312 -m compileall -q -f -x '/\.venv/' MedAI MedAISegment MedAIFusion Testing; \
	else echo "no Python 3.12 interpreter found: skipping the Slicer-Python syntax check"; fi

test: venv compile312
	$(PY) -m pytest -q --durations=15

test-fast: venv
	$(PY) -m pytest -q -m "not slow"

bench: venv
	$(PY) Testing/Benchmarks/run_benchmarks.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
