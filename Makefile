# `make test` sets up everything on a fresh machine (venv, torch, the project, system packages)
# and runs the tests. `make quickstart` runs the quickstart sweep on the embedded SQLite storage.
# GPU users: make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
PYTEST_WORKERS ?= 2

RUNS ?= 20

.PHONY: runtime install system lint test test-latest test-oldest fuzz flakes quickstart bench bench-peers clean wheelhouse

# What running needs (torch, the project); `make test` adds the dev tools and the test servers' drivers.
$(VENV)/.runtime: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: an open range with no torch installed would pull a multi-GB CUDA build
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed: $(VENV)/.runtime
	$(PY) -m pip install -q -e ".[dev,postgres,s3,tensorboard,notebook]"
	touch $@

# The fused training kernel compiles on first use (25-30 s, once per machine); do it here, not mid-run.
runtime: $(VENV)/.runtime
	$(PY) -m digitsum.fused

install: $(VENV)/.installed
	$(PY) -m digitsum.fused

system:
	bash tests/system-deps.sh

# The gates first (ruff's rules and format, mypy; configured in pyproject.toml), then the tests.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Two pytest workers (pytest-xdist), one test file each at a time: the suite's many waits (servers,
# processes, a lock held 20 s) overlap with the other worker's training. PYTEST_WORKERS=0 runs one.
test: system install lint
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=10 $(PYTEST_ARGS)

# The whole suite on the newest release the package index serves of every dependency (torch too,
# lifting this machine's cap on it), in a venv of its own: a check that the ranges in pyproject.toml
# still hold upward. It prints the versions it ran with first.
LATEST_VENV ?= .venv-latest
test-latest:
	rm -rf $(LATEST_VENV)
	PIP_CONSTRAINT=/dev/null $(MAKE) install VENV=$(LATEST_VENV) TORCH_SPEC=torch
	$(LATEST_VENV)/bin/python -m pip list 2>/dev/null | grep -iE '^(torch|optuna|optuna-dashboard|pandas|plotly|typer|numpy|scipy|tensorboard|cmaes) '
	$(MAKE) test VENV=$(LATEST_VENV)

# The same at the other end: every runtime dependency at the lower bound pyproject.toml states
# (tests/lower_bounds.py pins them; the dev tools stay newest).
OLDEST_VENV ?= .venv-oldest
test-oldest:
	rm -rf $(OLDEST_VENV) $(OLDEST_VENV).constraints
	python3 tests/lower_bounds.py > $(OLDEST_VENV).constraints
	PIP_CONSTRAINT=$(CURDIR)/$(OLDEST_VENV).constraints $(MAKE) install VENV=$(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip list 2>/dev/null | grep -iE '^(torch|optuna|optuna-dashboard|pandas|plotly|typer|numpy|scipy|tensorboard|cmaes) '
	$(MAKE) test VENV=$(OLDEST_VENV)

# For a GPU node with no network and its own Python and torch (docs/scaling.md): every wheel the project
# needs apart from torch, for that Python, and the project's own wheel, into one folder;
# bench/gpu_check.sh installs them with pip install --no-index --no-deps (WHEELHOUSE=wheelhouse).
WHEELHOUSE ?= wheelhouse
WHEEL_PYTHON ?= 3.12
wheelhouse: $(VENV)/.runtime
	rm -rf $(WHEELHOUSE) && mkdir -p $(WHEELHOUSE)
	$(PY) bench/wheelhouse.py > $(WHEELHOUSE)/requirements.txt
	$(PY) -m pip download -q -d $(WHEELHOUSE) -r $(WHEELHOUSE)/requirements.txt --only-binary=:all: \
	  --python-version $(WHEEL_PYTHON) --implementation cp --platform manylinux_2_28_x86_64 \
	  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform linux_x86_64
	$(PY) -m pip wheel -q --no-deps -w $(WHEELHOUSE) .
	@echo "$$(ls $(WHEELHOUSE)/*.whl | wc -l) wheels for Python $(WHEEL_PYTHON) in $(WHEELHOUSE)/"

# The fuzzers' long profile: new random inputs every time (make test runs a short, fixed set); failing
# inputs are kept in .hypothesis/ and tried first next time. SWEEP_FUZZ_EXAMPLES=N sets the examples per test.
fuzz: install
	SWEEP_FUZZ=long $(PY) -m pytest -m fuzz --hypothesis-show-statistics $(PYTEST_ARGS)

# The flake hunt: every test that starts processes, servers or a browser, RUNS times (passes per test),
# with the same two pytest workers as `make test`.
flakes: system install
	$(PY) tests/flakes.py --runs $(RUNS) -- -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The first run: the quickstart sweep on the embedded SQLite storage (studies/sweep.db), then its report.
quickstart: runtime
	$(VENV)/bin/sweep run studies/quickstart.yaml
	$(VENV)/bin/sweep report quickstart
	@echo
	@echo "Open reports/quickstart.html in a browser; docs/tutorial.md reads it with you. Next:"
	@echo "  $(VENV)/bin/sweep dashboard                       # every trial live in optuna-dashboard, http://127.0.0.1:8080"
	@echo "  $(VENV)/bin/sweep run studies/compare-cells.yaml  # RNN vs LSTM vs GRU on equal budgets"

bench: install
	$(PY) bench/run_all.py

# The quickstart's search run by the tools a user would pick instead (a plain Optuna script, Ray Tune)
# and by `sweep run --stack 1/4`, side by side; Ray lives in a venv of its own, never in `make test`'s.
PEERS_VENV ?= .venv-peers
RAY_SPEC ?= ray[tune]==2.60.0
bench-peers:
	$(MAKE) runtime VENV=$(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install -q "$(RAY_SPEC)"
	$(PEERS_VENV)/bin/python bench/bench_peers.py $(PEERS_ARGS)

clean:
	rm -rf $(VENV) $(LATEST_VENV) $(OLDEST_VENV) $(PEERS_VENV) $(OLDEST_VENV).constraints .pytest_cache
