# Pyra: make host | demo | serve | test | lint | bench
# The host (ComfyUI 0.3.75 + a pinned venv) is installed under .host/ by tools/host.py;
# COMFYUI_PATH=/path/to/ComfyUI uses an existing install instead (COMFYUI_PYTHON: its python).

SYS_PYTHON ?= python3
PY = $(shell $(SYS_PYTHON) tools/host.py python)
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

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

# CPU benchmarks only; GPU ones run on the lent H200 (benchmarks/README.md).
CPU_BENCH = progressive_quality:progressive-cpu highres_quality:highres-cpu schedule_quality:schedules-cpu \
	previews:previews-cpu
bench: host
	for b in $(CPU_BENCH); do $(PY) benchmarks/$${b%%:*}.py --json benchmarks/results/$${b##*:}.json || exit 1; done
	$(PY) benchmarks/decode.py --mode cpu --json benchmarks/results/decode-cpu.json
	$(PY) benchmarks/adapters.py --mode quality --json benchmarks/results/adapters-cpu.json

clean:
	rm -rf out .pytest_cache .ruff_cache
