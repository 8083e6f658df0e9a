# Every target creates .venv and installs the project into it when needed, so each works
# alone on a fresh clone.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# glibc malloc page-fault churn costs 20-50% of single-thread training here (DESIGN §12;
# the same values as qmoe/malloc.py).
export MALLOC_MMAP_THRESHOLD_ ?= 1073741824
export MALLOC_TRIM_THRESHOLD_ ?= 1073741824
export RAY_USAGE_STATS_ENABLED ?= 0
export HF_HUB_OFFLINE ?= 1

.PHONY: install demo test test-slow test-all bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The main job: the curiosity alpha sweep on the built-in dataset (embedded local Ray), then
# the report. Run again, it resumes the same sweep (finished trials are never re-run).
DEMO ?= demo
demo: $(STAMP)
	@if $(VENV)/bin/qmoe status $(DEMO) >/dev/null 2>&1; then \
		$(VENV)/bin/qmoe resume $(DEMO); \
	else \
		$(VENV)/bin/qmoe sweep alpha --values 0.02,0.2,0.3 --name $(DEMO); \
	fi; status=$$?; $(VENV)/bin/qmoe report $(DEMO) && exit $$status

test: $(STAMP)
	$(VENV)/bin/pytest -m "not slow" -q

test-slow: $(STAMP)
	$(VENV)/bin/pytest -m "slow" -q

test-all: $(STAMP)
	$(VENV)/bin/pytest -q

# The fault-injection suite of issue 7 (kills, torn writes, damaged state, locks), slow tests included.
.PHONY: test-faults
test-faults: $(STAMP)
	$(VENV)/bin/pytest tests/faults -q

bench: $(STAMP)
	$(VENV)/bin/qmoe bench

clean:
	rm -rf $(VENV) .pytest_cache
