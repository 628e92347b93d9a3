# realm-lite: `make demo` runs the quick end-to-end path, `make test` passes the tests.
# Both create .venv on first use (Python 3.11 + pip; torch pinned to the 2.13.0 CPU build).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export PYTHONHASHSEED := 0

.PHONY: demo test install clean
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[cpu,dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

demo: install
	rm -rf runs/demo
	$(VENV)/bin/realm-lite demo --preset quick --out runs/demo

test: install
	$(PY) -m pytest tests notebooks --nbval-lax -q

clean:
	rm -rf runs .pytest_cache
