# Two commands do all the set-up on a fresh clone with Python 3.11: `make train` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check
DATA   ?=
ARGS   ?=

.PHONY: train test bench clean

# The stamps make both targets quick once set up; they are redone when setup.cfg changes.
$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: setup.cfg pyproject.toml | $(PY)
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: setup.cfg pyproject.toml | $(PY)
	$(PIP) -e '.[dev]'
	touch $@ $(VENV)/.installed

train: $(VENV)/.installed
	$(PY) -m fastcifar.train $(if $(DATA),--data $(DATA)) $(ARGS)

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q

# CPU benchmarks (a few minutes each, on a quiet machine); output in bench/results/. Inference needs a trained run:
# python -m bench.inference --data PATH --model RUN/model.pkl
bench: $(VENV)/.installed
	$(PY) -m bench.speed $(if $(DATA),--data $(DATA)) --out bench/results/speed_cpu.json
	$(PY) -m bench.compute --out bench/results/compute_cpu.json
	$(PY) -m bench.memory --out bench/results/memory_cpu.json
	$(PY) -m bench.syncs $(if $(DATA),--data $(DATA)) --out bench/results/syncs_cpu.json
	$(PY) -m bench.epoch $(if $(DATA),--data $(DATA))
	$(PY) -m bench.precision $(if $(DATA),--data $(DATA))
	$(PY) -m bench.startup $(if $(DATA),--data $(DATA)) --out bench/results/startup_cpu.json

clean:
	rm -rf $(VENV) *.egg-info
