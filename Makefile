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

bench: host
	@echo "No benchmarks yet: they arrive with the GPU issues (benchmarks/<topic>.py)."

clean:
	rm -rf out .pytest_cache .ruff_cache
