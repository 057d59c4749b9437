# The targets CI runs (.ci/run calls `make ci`); each is also what a developer runs by hand.
CARGO ?= cargo
# Where the test cluster (tests/cluster) keeps its state; started and stopped by `make test`.
CLUSTER_DIR ?= $(CURDIR)/.cache/cluster

.PHONY: ci test test-build test-netns lint fmt demo bench cluster-up cluster-down cluster-shell

## Everything CI checks: formatting, lints, all tests.
ci: lint test

## All tests. Everything is built and fetched first; then, inside a network namespace of their
## own (tests/cluster/netns: loopback only, Pod addresses 198.18.0.0/15), the real Kubernetes
## test cluster with its node is started and smoke-checked, every workspace test runs against
## it (unit, property and integration tests: real proxies, backends, Prometheus, the API server,
## Pods running as local processes), and the cluster is stopped.
test: test-build
	tests/cluster/netns $(MAKE) --no-print-directory test-netns

## What the tests run, built before entering the namespace (which has no route to registries).
test-build:
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --all-targets --no-run
	tests/cluster/build >/dev/null
	cd tests/cluster/gateway-api && go mod download sigs.k8s.io/gateway-api

## Inside the namespace: cluster up + smoke check, the tests, cluster down.
test-netns:
	@status=0; tests/cluster/smoke $(CLUSTER_DIR) || status=$$?; \
	if [ $$status -eq 0 ]; then \
	  KUBECONFIG=$(CLUSTER_DIR)/kubeconfig $(CARGO) test --workspace --all-targets || status=$$?; \
	fi; \
	tests/cluster/down $(CLUSTER_DIR); exit $$status

## Starts the test cluster in its own network namespace and proves it works; `make cluster-shell`
## opens a shell in that namespace (kubectl, curl to Pod addresses), `make cluster-down` stops it.
## (The namespace lives as long as the cluster's processes in it.)
cluster-up: test-build
	tests/cluster/netns tests/cluster/smoke $(CLUSTER_DIR)

cluster-shell:
	tests/cluster/shell $(CLUSTER_DIR)

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
