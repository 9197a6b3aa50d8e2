# Pyra: make host | demo | serve | test | lint | bench   [HOST=<version> | HOST=all for test]
# The host matrix (tools/host.py): 0.3.76-dev (PyPI snapshot), 0.8.1 and 0.33.0 (../shared/hosts/), each under
# .host/<version>/ with its own pinned venv. The default HOST is the newest whose source is present.
# COMFYUI_PATH=/path/to/ComfyUI uses an existing install instead (COMFYUI_PYTHON: its python).

SYS_PYTHON ?= python3
HOST ?= $(shell $(SYS_PYTHON) tools/host.py default)
HOSTS := $(shell $(SYS_PYTHON) tools/host.py hosts)
export PYRA_HOST := $(HOST)
PY = $(shell PYRA_HOST=$(HOST) $(SYS_PYTHON) tools/host.py python)
PYTEST_ARGS ?=

.PHONY: host test-host demo serve test lint bench clean

host:
	$(SYS_PYTHON) tools/host.py install

test-host:
	$(SYS_PYTHON) tools/host.py install --test

demo: test-host
	$(PY) tools/demo.py

serve: host
	$(PY) tools/serve.py

lint: test-host
	$(PY) -m ruff check .

ifeq ($(HOST),all)
# Every host of the matrix in turn, each with its own install; fails at the end if any host failed.
test:
	@failed=""; for h in $(HOSTS); do \
	  echo "=== Pyra test suite on ComfyUI $$h ==="; start=$$(date +%s); \
	  if $(MAKE) --no-print-directory test HOST=$$h; then r=passed; else r=FAILED; failed="$$failed $$h"; fi; \
	  echo "=== ComfyUI $$h: $$r in $$(( $$(date +%s) - start )) s ==="; \
	done; \
	if [ -n "$$failed" ]; then echo "=== failed on:$$failed ==="; exit 1; fi
else
test: lint
	$(PY) -m pytest $(PYTEST_ARGS)
endif

# CPU benchmarks only; GPU ones run on the lent H200 (benchmarks/README.md).
CPU_BENCH = progressive_quality:progressive-cpu highres_quality:highres-cpu schedule_quality:schedules-cpu \
	previews:previews-cpu
bench: host
	for b in $(CPU_BENCH); do $(PY) benchmarks/$${b%%:*}.py --json benchmarks/results/$${b##*:}.json || exit 1; done
	$(PY) benchmarks/decode.py --mode cpu --json benchmarks/results/decode-cpu.json
	$(PY) benchmarks/adapters.py --mode quality --json benchmarks/results/adapters-cpu.json

clean:
	rm -rf out .pytest_cache .ruff_cache
