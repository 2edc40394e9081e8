# `make train` and `make test` set up .venv on first use, then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup train test test-slow bench report clean

setup: $(STAMP)

# --no-compile: pip byte-compiles every file of torch & co. one at a time (about half of the setup's 4 minutes);
# compileall does it on every core and leaves out the packages' own test suites (40 s on 2 cores). Uncompiled,
# where PYTHONDONTWRITEBYTECODE=1 is set (this machine, CI), every process compiled torch and Lightning anew: a
# run or a test worker took 25 s to import the lab, not 12. A file only a newer Python can compile is skipped.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-compile -e '.[dev]'
	$(PY) -m compileall -q -j 0 -x '/tests?/|/testing/_internal/' $(VENV)/lib > /dev/null || true
	touch $(STAMP)

train: $(STAMP)
	$(PY) train.py $(ARGS)

# Tests run in one worker per core (at most 8), each with its share of torch's threads (tests/conftest.py): most of a
# test is single-threaded Python (composition, Lightning's loop), so 2 workers on 2 cores take about half the time.
# WORKERS=0 runs them in this one process.
WORKERS ?= auto --maxprocesses=8
PYTEST := $(PY) -m pytest -n $(WORKERS) --dist worksteal

test: $(STAMP)
	$(PYTEST) $(ARGS)

test-slow: $(STAMP)
	$(PYTEST) -m slow $(ARGS)

bench: $(STAMP)
	$(PY) benchmarks/bench.py $(ARGS)

# make report SWEEP=multirun/<date>/<time>  (defaults to the newest sweep) [BASELINE="loss=bce ..."]
# SWEEP="multirun/new multirun/old": the report of multirun/new, with multirun/old's jobs in its tables.
# The newest sweep: the most recently written folder with Hydra's multirun.yaml (multirun/<date>/<time>/, or a
# hydra.sweep.dir=multirun/<name>), not a job folder or a report's after_<N>_epochs/ beside it.
NEWEST_SWEEP = $(shell ls -td multirun/*/multirun.yaml multirun/*/*/multirun.yaml 2>/dev/null | head -n 1 | xargs -r dirname)

report: $(STAMP)
	$(PY) -m dcgan_lab.report $(or $(SWEEP),$(NEWEST_SWEEP),$(error no sweep under multirun/ (no multirun.yaml): run python train.py -m ... first, or pass SWEEP=<sweep folder>)) $(foreach b,$(BASELINE),--baseline $(b))

clean:
	rm -rf outputs multirun/*/ .cache lightning_logs wandb .pytest_cache
