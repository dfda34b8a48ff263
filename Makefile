# The two commands: `make run` and `make test`. Everything else is a helper for them.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PORT   ?= 8501

.PHONY: run test install install-dev sample bench clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt requirements-warehouse.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## Generate the sample book (data/sample/) if it is missing, then start the app.
run: install
	$(PY) -m health sample
	$(PY) -m streamlit run app.py --server.port $(PORT) --browser.gatherUsageStats false

## Install everything and run the whole suite.
test: install-dev
	$(PY) -m pytest -q

## Scoring speed and memory at 10k and 100k accounts (see bench/).
bench: install-dev
	$(PY) bench/score_bench.py
	$(PY) bench/app_bench.py
	$(PY) bench/pushdown_bench.py

clean:
	rm -rf $(VENV) data/sample .pytest_cache
