# The targets CI runs (.ci/run calls `make ci`); each is also what a developer runs by hand.
CARGO ?= cargo
# Where the test cluster (tests/cluster) keeps its state; started and stopped by `make test`.
CLUSTER_DIR ?= $(CURDIR)/.cache/cluster

.PHONY: ci test lint fmt demo bench cluster-up cluster-down

## Everything CI checks: formatting, lints, all tests.
ci: lint test

## All tests: a real Kubernetes API server (tests/cluster) is started first and stopped after;
## then unit, property and integration tests (real proxies, backends, Prometheus, the API server).
test: cluster-up
	KUBECONFIG=$(CLUSTER_DIR)/kubeconfig $(CARGO) test --workspace --all-targets; \
	  status=$$?; tests/cluster/down $(CLUSTER_DIR); exit $$status

## Starts the test cluster and proves it works (Gateway API CRDs, RBAC, controller-manager).
cluster-up:
	tests/cluster/smoke $(CLUSTER_DIR)

cluster-down:
	tests/cluster/down $(CLUSTER_DIR)

## Formatting and clippy, warnings are errors.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## The demo: a whole canary release on this machine.
demo:
	$(CARGO) run --release --bin serin -- demo

## Micro benchmarks of the routing decision; load benchmarks are benches/run and benches/mirror.
bench:
	$(CARGO) bench -p serin-proxy --bench decision
