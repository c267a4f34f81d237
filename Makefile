# flowbound: `make book` builds the full reproduction, `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# The canonical MNIST files beside the project (see ../shared/data/mnist/SOURCE.md);
# without them the loader downloads the files and checks their MD5s.
SHARED_MNIST := $(abspath ../shared/data/mnist)
ifneq ($(wildcard $(SHARED_MNIST)/t10k-labels-idx1-ubyte.gz),)
export MNIST_DIR ?= $(SHARED_MNIST)
endif
export FLOWBOUND_CACHE ?= $(CURDIR)/.cache

.PHONY: setup book figures smoke-book test lint format clean clean-cache

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[book,dev]'
	touch $@

## book: execute every chapter with the `paper` profile and build the site (_build/html)
book: setup
	$(BIN)/flowbound book --profile paper

## figures: regenerate Figures 1-12 (paper profile) into _build/figures without the HTML;
## FIGS="5 6" picks some, PROFILE=smoke a smaller profile
FIGS ?= all
PROFILE ?= paper
figures: setup
	$(BIN)/flowbound figure $(FIGS) --profile $(PROFILE)

## smoke-book: the same with tiny sizes (_build/smoke/_build/html)
smoke-book: setup
	$(BIN)/flowbound book --profile smoke

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## test: lint, then the unit tests and a smoke build of the book
test: lint
	$(BIN)/python -m pytest

clean:
	rm -rf _build book/_executed

clean-cache:
	rm -rf $(FLOWBOUND_CACHE)
