# FL Testbed. `make install` once, then `make up && make train`; `make test` runs the tests.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
FL := $(BIN)/fl
TFE_VERSION := 0.9.1

OWNERS ?= 3
AGGREGATION ?= additive
EPOCHS ?= 10
DATASET ?= digits
STATE_DIR ?= .fl
RESULTS ?= results

.PHONY: install up train down status logs test lint clean

install:
	./scripts/install-system-packages.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	# tfe declares a bare `tensorflow` dependency that would pull a TF it cannot import on
	$(BIN)/pip install -q --no-deps tf-encrypted==$(TFE_VERSION)
	$(BIN)/python -m fl.secure_random.build
	@echo "installed: $(FL)"

up:
	$(FL) up --backend local --owners $(OWNERS) --state-dir $(STATE_DIR)
	$(FL) split --dataset $(DATASET) --config $(STATE_DIR)/cluster.json

train:
	$(FL) train --aggregation $(AGGREGATION) --epochs $(EPOCHS) --config $(STATE_DIR)/cluster.json --json $(RESULTS)/train-$(AGGREGATION).json

down:
	$(FL) down --state-dir $(STATE_DIR)

status:
	$(FL) status --state-dir $(STATE_DIR)

logs:
	tail -n 20 $(STATE_DIR)/logs/*.log

test:
	$(BIN)/python -m pytest

lint:
	$(BIN)/ruff check fl tests
	$(BIN)/ruff format --check fl tests

clean: down
	rm -rf $(STATE_DIR) $(RESULTS)
