# Two commands do all the set-up: `make run` and `make test` build .venv/ when it is missing.
PYTHON_BOOT ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hilserl-installed
export RMW_IMPLEMENTATION ?= rmw_fastrtps_cpp
export PYTHONUNBUFFERED := 1
# Idle OpenMP threads sleep instead of spinning: on 2 shared cores spinning made 2 torch threads 3x slower than 1.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: venv run test bench clean-venv

venv: $(STAMP)

# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): requirements.txt
	$(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -c "import site, pathlib; pathlib.Path(site.getsitepackages()[0], 'hilserl-src.pth').write_text('$(CURDIR)/src\n')"
	$(PY) -m pip check
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m hilserl bringup $(ARGS)

test: $(STAMP)
	$(PY) -m pytest test $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) bench/weight_sync.py
	$(PY) bench/learner_update.py
	$(PY) bench/sim_throughput.py
	$(PY) bench/actor_step.py

clean-venv:
	rm -rf $(VENV)
