# byop's developer and CI entry points. `make test` is what CI runs.

SHELL := bash
.DEFAULT_GOAL := test

GO ?= go
# Written by scripts/setup.sh: BYOP_TEST_* addresses of the real services.
TEST_ENV := .cache/test.env
# Per test binary; the whole CI run has 90 minutes, set-up included.
TEST_TIMEOUT ?= 20m
# Extra `go test` flags, e.g. TEST_FLAGS='-run TestDeploy -v'.
TEST_FLAGS ?=
PKGS ?= ./...

.PHONY: setup test vet bench

## setup: install and start the services the tests use (idempotent)
setup:
	bash scripts/setup.sh

## test: set up, then run every test against the real services
test: setup
	source $(TEST_ENV) && $(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(TEST_FLAGS) $(PKGS)

## vet: go vet every package
vet:
	$(GO) vet $(PKGS)

# Flags for the bench harness, e.g. BENCH_FLAGS='-only P2,P4 -p2-rounds 9'.
BENCH_FLAGS ?=

## bench: set up, then measure byop against its floor (P1–P5, bench/README.md) and print one table
bench: setup
	$(GO) build -o .cache/bench/byop ./cmd/byop
	$(GO) build -o .cache/bench/byop-bench ./bench
	source $(TEST_ENV) && .cache/bench/byop-bench -byop .cache/bench/byop -buildctl .cache/bin/buildctl -dir .cache/bench/run $(BENCH_FLAGS)

# ---- demo ------------------------------------------------------------------
# Flags for hack/demo, e.g. DEMO_FLAGS=-once to stop as soon as the preview answers.
DEMO_FLAGS ?=

.PHONY: demo

## demo: set up, run byop on a sample pull request, print its preview URL (Ctrl-C stops)
demo: setup
	$(GO) build -o .cache/bin/byop ./cmd/byop
	$(GO) build -o .cache/bin/byop-demo ./hack/demo
	source $(TEST_ENV) && exec .cache/bin/byop-demo $(DEMO_FLAGS)
