# `make train` and `make test` set up .venv on first use, then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup train test test-slow bench report clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

train: $(STAMP)
	$(PY) train.py $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(ARGS)

bench: $(STAMP)
	$(PY) benchmarks/bench.py $(ARGS)

# make report SWEEP=multirun/<date>/<time>  (defaults to the newest sweep) [BASELINE="loss=bce ..."]
report: $(STAMP)
	$(PY) -m dcgan_lab.report $(or $(SWEEP),$(lastword $(sort $(wildcard multirun/*/*/)))) $(foreach b,$(BASELINE),--baseline $(b))

clean:
	rm -rf outputs multirun/*/ .cache lightning_logs wandb .pytest_cache
