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

# `make test` (what CI runs): the quick suite, then the kernel tests three times more, each
# from an empty numba cache (a machine's first use): compiled for haswell (AVX2, no AVX-512),
# for x86-64 (no vector extension) and for this machine's CPU. So every kernel path a CPU can
# take is tested on any machine that has it, and the portable ones on every machine. The
# ahead-of-time kernels do not depend on numba's target: the quick suite builds and tests them.
# The training kernels (AdamW's update, dropout's mask) promise the same bits on every x86 CPU:
# their exactness tests run under each target too.
KERNEL_TESTS := tests/qmoe/native tests/qmoe/test_optim.py tests/qmoe/models/test_models_dropout.py \
	tests/qmoe/quant/test_qat_kernels.py tests/qmoe/quant/test_qat_training.py tests/qmoe/quant/test_qat_signs.py \
	--ignore=tests/qmoe/native/test_native_aot.py
# haswell's features, listed (an empty list would hide them from qmoe.native.target)
HASWELL_FEATURES := +64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+crc32,+cx16,+cx8,+f16c,+fma,+fsgsbase,+fxsr,+invpcid,+lzcnt,+mmx,+movbe,+pclmul,+popcnt,+rdrnd,+sahf,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave,+xsaveopt

test: $(STAMP)
	$(VENV)/bin/pytest -m "not slow" -q
	$(MAKE) --no-print-directory test-kernels

.PHONY: test-kernels
test-kernels: $(STAMP)
	@cache=$$(mktemp -d) && trap 'rm -rf "$$cache"' EXIT && set -e && \
	echo "kernel tests compiled for haswell (AVX2, no AVX-512), empty numba cache" && \
	NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES='$(HASWELL_FEATURES)' QMOE_TEST_CPU=haswell \
		NUMBA_CACHE_DIR="$$cache/haswell" $(VENV)/bin/pytest -m "not slow" -q $(KERNEL_TESTS) && \
	echo "kernel tests compiled for x86-64 (no vector extension), empty numba cache" && \
	NUMBA_CPU_NAME=x86-64 NUMBA_CPU_FEATURES= QMOE_TEST_CPU=x86-64 \
		NUMBA_CACHE_DIR="$$cache/x86-64" $(VENV)/bin/pytest -m "not slow" -q $(KERNEL_TESTS) && \
	echo "kernel tests compiled for this CPU, empty numba cache" && \
	NUMBA_CACHE_DIR="$$cache/host" $(VENV)/bin/pytest -m "not slow" -q $(KERNEL_TESTS)

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
