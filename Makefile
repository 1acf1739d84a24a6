# The two commands a user needs:  `make pipeline`  and  `make test`.
# Everything else here is what they are made of.
SHELL := /bin/bash
VENV := .venv
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# One BLAS thread per process: the machine has 2 cores and the stages run their own workers.
export OMP_NUM_THREADS ?= 1

.PHONY: venv data pipeline test bench lock ui clean

venv: $(STAMP)

# torch comes from the CPU wheel on this machine's disk (pip looks there; uv/poetry do not).
$(STAMP): requirements.lock pyproject.toml
	test -d $(VENV) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# Produce the raw corpus for the active profile (params.yaml: profile) and record it in data.dvc.
# A second run with the same params writes nothing.
data: $(STAMP)
	python flows/download.py
	dvc add data --quiet

# Run every stage of dvc.yaml on the corpus; a second run is a no-op.
pipeline: data
	dvc repro

test: $(STAMP)
	pytest

bench: $(STAMP)
	python benchmarks/balance_bench.py

# Re-resolve the exact environment after editing pyproject.toml dependencies.
lock:
	rm -rf /tmp/rgpt-lock && python3 -m venv /tmp/rgpt-lock
	/tmp/rgpt-lock/bin/pip install --quiet -e '.[test]'
	/tmp/rgpt-lock/bin/pip freeze --exclude-editable | grep -v '^rgpt' > requirements.lock.new
	mv requirements.lock.new requirements.lock

ui: $(STAMP)
	mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000

clean:
	rm -rf outputs reports .prefect mlflow.db mlartifacts
