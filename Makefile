# Two commands do everything on a fresh machine:
#   make demo   - install what is missing, then run the main job
#   make test   - install what is missing (test tools too), lint, then run the tests
# torch==2.13.0 is installed first on its own: on our CPU machines that is a local CPU
# build, so nothing downloads a CUDA torch. GPU machines: `pip install .[gpu]` instead.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: demo lint test test-all test-photos activemq bench bench-small install clean

$(VENV)/.system-deps:
	@mkdir -p $(VENV)
	@if ! $(PYTHON) -c "import venv, ensurepip" >/dev/null 2>&1; then \
	  echo "installing python3-venv"; apt-get update -qq && apt-get install -y -qq python3-venv; fi
	@# tests/web drive Debian's Chromium (browsers cannot be downloaded by Playwright here)
	@command -v chromium >/dev/null 2>&1 || (echo "installing chromium"; apt-get update -qq && apt-get install -y -qq chromium chromium-driver)
	@touch $@

# tests/mosip start private brokers from Debian's ActiveMQ (5.17, OpenJDK 17; the STOMP
# connector is added by the tests). Checked on every run, not behind the stamp above, so a
# machine set up before the MOSIP tests existed still gets it.
activemq:
	@test -f /usr/share/activemq/bin/activemq.jar || (echo "installing activemq"; apt-get update -qq && apt-get install -y -qq activemq)

# Real photographs of the same people in different captures (face_recognition 1.3.0's source
# distribution, fetched with pip into ~/.cache/dedup-test-photos at set-up; never committed).
test-photos: $(VENV)/.installed
	@$(PY) -m tests.support.real_photos

$(VENV)/.installed: pyproject.toml $(VENV)/.system-deps
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[dev]"
	@touch $@

install: $(VENV)/.installed

# The main job: a temporary deployment on the embedded PostgreSQL, real photos, the queue.
demo: $(VENV)/.installed
	$(VENV)/bin/dedup demo

# A small scale test of the gallery index (see `dedup bench --help` and benchmarks/).
bench-small: $(VENV)/.installed
	$(VENV)/bin/dedup bench --gallery-size 100000 --queries 2000 --profile face-like --seed 1

# ruff and mypy, configured in pyproject.toml ([tool.ruff], [tool.mypy]); both run, so one
# failing run shows every finding.
lint: $(VENV)/.installed
	@status=0; $(VENV)/bin/ruff check . || status=1; $(VENV)/bin/mypy || status=1; exit $$status

# CI runs exactly this (.ci/run): lint first, then the tests.
test: lint activemq test-photos
	$(PY) -m pytest $(PYTEST_ARGS)

# Slow tests too (minutes): large galleries, the full profile fits.
test-all: $(VENV)/.installed activemq test-photos
	$(PY) -m pytest -m "slow or not slow" $(PYTEST_ARGS)

# The recorded gallery scale tests (about an hour on 2 cores; results in benchmarks/results/).
bench: $(VENV)/.installed
	PATH=$(abspath $(VENV))/bin:$$PATH benchmarks/run_gallery_benches.sh
	$(PY) benchmarks/plot_bench.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
