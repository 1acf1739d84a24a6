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
# deepspeed is an sdist whose build imports torch: installed after it, without build isolation.
$(STAMP): requirements.lock pyproject.toml
	test -d $(VENV) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-build-isolation deepspeed==0.19.8
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

# Speed and memory against baselines measured in the same run (figures: benchmarks/README.md).
bench: $(STAMP)
	for b in benchmarks/*_bench.py; do python $$b || exit 1; done

# Re-resolve the exact environment after editing pyproject.toml dependencies.
lock:
	rm -rf /tmp/rgpt-lock && python3 -m venv /tmp/rgpt-lock
	/tmp/rgpt-lock/bin/pip install --quiet -e '.[test]'
	/tmp/rgpt-lock/bin/pip install --quiet --no-build-isolation deepspeed==0.19.8
	(head -3 requirements.lock; /tmp/rgpt-lock/bin/pip freeze --exclude-editable | grep -v -e '^rgpt' -e '^deepspeed==') \
		> requirements.lock.new
	mv requirements.lock.new requirements.lock

ui: $(STAMP)
	mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000

# Remove what the pipeline made (data/ and the committed reports stay).
clean:
	rm -rf outputs base_models models checkpoints .prefect mlflow.db mlartifacts dvc_plots
