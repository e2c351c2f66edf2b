# prunekit: `make demo` shows the whole path, `make test` installs and runs every check.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# CPU build, installed before anything else so no package pulls a CUDA torch.
# On GPU nodes install a CUDA torch (>= 2.10) instead; see README.
TORCH_SPEC ?= torch==2.13.0
PYTEST_WORKERS ?= 2

.PHONY: install proto lint typecheck test soak demo bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[server,ray,dev]"
	touch $@

proto: install
	$(PY) scripts/gen_protos.py

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(PY) -m mypy

test: install lint typecheck
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile -q

# The long runs of what `make test` runs briefly: fuzzing with many random examples, and the fault
# suite with storage down for 60 s (against the default 30 s lease where a test says so).
soak: install
	PRUNEKIT_FUZZ_EXAMPLES=20000 $(PY) -m pytest -q -p no:cacheprovider tests/fuzz
	PRUNEKIT_FAULT_OUTAGE_S=60 $(PY) -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadfile tests/faults

demo: install
	$(PY) scripts/demo.py

bench: install
	$(PY) bench/upload_throughput.py
	$(PY) bench/quantization_speed.py
	$(PY) bench/finetune_recovery.py
	$(PY) bench/contention.py
	$(PY) bench/service_load.py

clean:
	rm -rf $(VENV) .prunekit-data demo-out .pytest_cache .mypy_cache .ruff_cache
