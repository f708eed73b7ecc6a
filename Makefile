# FL Testbed. `make install` once, then `make up && make train`; `make test` runs the tests.
PYTHON ?= python3.11
VENV ?= .venv
# Flower, the benchmark's peer, needs numpy 2 and protobuf 6: a virtualenv of its own
FLOWER_VENV ?= .venv-flower
BIN := $(VENV)/bin
FL := $(BIN)/fl
TFE_VERSION := 0.9.1

# auto: containers when a Docker engine answers, else one local process per player
BACKEND ?= auto
RESOLVED_BACKEND := $(shell if [ "$(BACKEND)" = auto ]; then docker info >/dev/null 2>&1 && echo docker || echo local; else echo $(BACKEND); fi)
OWNERS ?= 3
AGGREGATION ?= additive
EPOCHS ?= 10
DATASET ?= digits
# every other `fl train` setting, forwarded when set: make train LEARNING_RATE=0.1 ALGORITHM=fedsgd
TRAIN_SETTINGS := ROUNDS_PER_EPOCH BATCH_SIZE LOCAL_EPOCHS LEARNING_RATE HIDDEN_UNITS ALGORITHM PROXIMAL_MU \
	SERVER_OPTIMIZER SERVER_LEARNING_RATE WEIGHTING MAX_WEIGHT VALUE_RANGE OUT_OF_RANGE MAX_CLIPPED_FRACTION SEED \
	ROUND_TIMEOUT MIN_OWNERS SAVE DP_NOISE_MULTIPLIER DP_CLIP_NORM DP_DELTA DP_TARGET_EPSILON
# how `make up` gives the owners their data, forwarded when set: make up PARTITION=dirichlet ALPHA=0.3 SPLIT_SEED=1, or DATA=DIR
UP_SETTINGS := PARTITION ALPHA DATA
flag = $(if $($(1)),--$(subst _,-,$(shell echo $(1) | tr A-Z a-z)) $($(1)))
# the switches among them: set to 1, or left unset
TRAIN_SWITCHES := RESUME DP_CENTRAL
switch = $(if $(filter-out 1,$($(1))),$(error $(1)=$($(1)): set it to 1 or leave it unset),$(if $($(1)),--$(subst _,-,$(shell echo $(1) | tr A-Z a-z))))
# make run SCRIPT=examples/cnn_digits.py ARGS="--rounds 10": your script as the cluster's driver
SCRIPT ?=
ARGS ?=
# docker backend: mutual TLS through a sidecar per player unless TLS=off (for measuring what it costs);
# BACKEND=swarm: the players on the swarm's nodes (make swarm first), always mutual TLS
TLS ?= on
STATE_DIR ?= .fl
RESULTS ?= results

# make soak: a cluster of its own, SOAK_ROUNDS rounds, a player restarted every SOAK_FAULT_EVERY
SOAK_BACKEND ?= docker
SOAK_ROUNDS ?= 500
SOAK_FAULT_EVERY ?= 50
SOAK_AGGREGATION ?= pond

BENCH ?= quick
BENCH_BACKEND ?= local
PROFILES ?= lan

.PHONY: install images up train run bench soak down status logs swarm swarm-down test test-unit lint clean

install:
	./scripts/install-system-packages.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev,bench,dashboard]"
	# tfe declares a bare `tensorflow` dependency that would pull a TF it cannot import on
	$(BIN)/pip install -q --no-deps tf-encrypted==$(TFE_VERSION)
	$(BIN)/python -m fl.secure_random.build
	./scripts/fetch-prometheus.sh
	test -x $(FLOWER_VENV)/bin/python || $(PYTHON) -m venv $(FLOWER_VENV)
	$(FLOWER_VENV)/bin/pip install -q -r fl/bench/flower_app/requirements.txt
	@echo "installed: $(FL)"

images:
	./scripts/build-images.sh

up: $(if $(filter docker swarm,$(RESOLVED_BACKEND)),images)
	@echo "backend: $(RESOLVED_BACKEND) (BACKEND=$(BACKEND))"
	$(FL) up --backend $(RESOLVED_BACKEND) --owners $(OWNERS) --dataset $(DATASET) --state-dir $(STATE_DIR) \
		$(if $(filter off,$(TLS)),--no-tls,) \
		$(foreach setting,$(UP_SETTINGS),$(call flag,$(setting))) $(if $(SPLIT_SEED),--seed $(SPLIT_SEED),)

train:
	$(FL) train --aggregation $(AGGREGATION) --epochs $(EPOCHS) --state-dir $(STATE_DIR) \
		$(foreach setting,$(TRAIN_SETTINGS),$(call flag,$(setting))) $(foreach setting,$(TRAIN_SWITCHES),$(call switch,$(setting))) \
		--json $(RESULTS)/train-$(AGGREGATION).json

run:
	@test -n "$(SCRIPT)" || { echo "make run: say which script, e.g. make run SCRIPT=examples/cnn_digits.py" >&2; exit 2; }
	$(FL) run --state-dir $(STATE_DIR) $(SCRIPT) $(ARGS)

bench:
	$(FL) bench --mode $(BENCH) --backend $(BENCH_BACKEND) --profiles $(PROFILES) --out $(RESULTS)/bench

# outside CI: about 15 minutes on docker; memory per player and rounds lost in $(RESULTS)/soak/
soak: $(if $(filter docker,$(SOAK_BACKEND)),images)
	$(BIN)/python -m fl.bench.soak run --backend $(SOAK_BACKEND) --rounds $(SOAK_ROUNDS) --fault-every $(SOAK_FAULT_EVERY) \
		--aggregation $(SOAK_AGGREGATION) --out $(RESULTS)/soak

# VOLUMES=1: also the owners' shards and Prometheus's history
down:
	$(FL) down --state-dir $(STATE_DIR) $(if $(VOLUMES),--volumes,)

status:
	$(FL) status --state-dir $(STATE_DIR)

logs:
	$(FL) logs --state-dir $(STATE_DIR)

# Docker-in-Docker nodes joined to a swarm this engine manages: make swarm NODES=3
NODES ?= 3
swarm: images
	$(FL) swarm up --nodes $(NODES)

swarm-down:
	$(FL) swarm down

test:
	$(BIN)/python -m pytest

# no servers, no containers: under a minute
test-unit:
	$(BIN)/python -m pytest -m "not cluster"

lint:
	$(BIN)/ruff check fl tests
	$(BIN)/ruff format --check fl tests

clean:
	$(FL) down --volumes --state-dir $(STATE_DIR)
	rm -rf $(STATE_DIR) $(RESULTS)
