# RecOp developer entry points. `make up` and `make test` are the two that matter.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: up down status test unit lint crds parts images e2e-realnode venv sysdeps reliability

# The embedding servers' hot path: a Rust extension (native/) that pip builds with maturin
# from PyPI and crates.io; cargo's build cache lives outside the tree.
CARGO_TARGET_DIR ?= $(or $(RECOP_CACHE),$(HOME)/.cache/recop)/cargo
NATIVE := native/pyproject.toml native/Cargo.toml native/Cargo.lock $(wildcard native/src/*.rs)

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml $(NATIVE)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	PATH="$(HOME)/.cargo/bin:$$PATH" CARGO_TARGET_DIR=$(CARGO_TARGET_DIR) \
		$(BIN)/pip install -q ./native
	touch $@

sysdeps:
	scripts/install-system-deps

## Start the local default (control plane, S3, broker, operator, a model) and leave it up.
up: venv sysdeps
	$(BIN)/recop-dev up

status: venv
	$(BIN)/recop-dev status

down: venv
	$(BIN)/recop-dev down

## Build or fetch the real local parts into ~/.cache/recop (seconds once cached).
parts: venv sysdeps
	$(BIN)/python -m devstack.cluster build
	$(BIN)/python -m devstack.minio build
	$(BIN)/python -m devstack.kafka build
	$(BIN)/python -m devstack.triton
	$(BIN)/python -m devstack.gateway_api build
	$(BIN)/python -m devstack.node build

## RecOp's images from operator/Dockerfile and embedding/Dockerfile with buildah, on a
## Debian-made base (seconds when nothing changed): devstack/images.py.
images: venv sysdeps
	$(BIN)/python -m devstack.images

## The real node's e2e tests (root, network namespaces, buildah): e2e/test_realnode*.py.
e2e-realnode: venv sysdeps
	$(BIN)/python -m devstack.node build
	$(BIN)/pytest e2e/test_realnode.py e2e/test_realnode_helm.py

lint: venv
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m recop.crdgen --check

crds: venv
	$(BIN)/python -m recop.crdgen

## Fast tests only: pure logic, no servers.
unit: venv
	$(BIN)/pytest -m "not e2e and not integration"

## Everything: lint, then unit, integration (real S3, broker, ...) and e2e (real control plane).
test: lint parts
	$(BIN)/pytest -m "not slow"

## Every fault and bad-input test, slow ones and the soak included: bench/RELIABILITY.md.
reliability: venv parts
	$(BIN)/python -m bench.reliability
