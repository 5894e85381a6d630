# Two commands set everything up on a fresh machine (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: a looser spec would pull the CUDA build (gigabytes) on a CPU machine
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/atelier demo

# the studio on the demo's models (run `make demo` first), offline, at http://127.0.0.1:8000/
studio: $(VENV)/.installed
	$(BIN)/atelier serve --models atelier-demo

test: $(VENV)/.installed
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: $(VENV)/.installed
	$(BIN)/python -m pytest -m slow -q

.PHONY: install demo studio test test-slow
