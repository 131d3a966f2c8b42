# Two commands do all the set-up:  `make assistant`  and  `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: assistant test setup setup-dev lint models default-model

assistant: setup          ## install the runtime and start the assistant on the default model
	$(BIN)/llasm-assistant $(ARGS)

test: setup-dev           ## install test dependencies and run the tests
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

setup:
	@scripts/setup.sh runtime

setup-dev:
	@scripts/setup.sh dev

models: setup             ## assemble and print the default base models
	$(BIN)/llasm-train base-models

lint: setup-dev
	$(BIN)/ruff check .

default-model: setup-dev  ## the default model's recipe on this CPU: data, training, bundle, evaluation
	scripts/default_model.sh
