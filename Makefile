# The targets CI runs (.ci/run calls `make ci`); each is also what a developer runs by hand.
CARGO ?= cargo

.PHONY: ci test lint fmt demo bench

## Everything CI checks: formatting, lints, all tests.
ci: lint test

## All tests (unit, integration over loopback, end to end).
test:
	$(CARGO) test --workspace --all-targets

## Formatting and clippy, warnings are errors.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Micro benchmarks of the routing decision.
bench:
	$(CARGO) bench -p serin-proxy --bench decision
