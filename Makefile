# Two commands do all set-up on a fresh machine:
#   make demo   create .venv, fetch the default model and corpus, run the main job
#   make test   create .venv, run the whole test suite (fast + integration)
#   make test-fast  only the tests not marked `integration` (see pyproject.toml), for quick iteration
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test test-fast lint bench clean-venv

$(BIN)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: on a machine without a GPU this is a CPU build; an
	# unpinned resolve would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/saex demo $(ARGS)
	$(BIN)/saex explore checkpoints/demo/sae

test: $(BIN)/.installed lint
	$(BIN)/python -m pytest -q $(ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .

# about 90 s on 2 cores (the whole suite: 6 to 9 min)
test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m "not integration" $(ARGS)

bench: $(BIN)/.installed
	$(BIN)/python bench/harvest.py
	$(BIN)/python bench/train_vs_saelens.py
	$(BIN)/python bench/train_vs_saelens.py --architecture batchtopk
	$(BIN)/python bench/time_to_quality.py
	$(BIN)/python bench/index.py

clean-venv:
	rm -rf $(VENV)
