# Anonymized-medical-data enclave appliance — developer and CI entry points.
# `make help` lists the targets. Everything builds with one profile (release): tests, the
# demo and the benchmarks all run on optimised code, and CI builds the tree once.

CARGO      ?= cargo
CARGOFLAGS ?= --release --locked
BIN        := target/release

.DEFAULT_GOAL := help

.PHONY: help deps build check test e2e demo bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

deps: ## Install the system packages the tests need: nftables, iproute2, ethtool, PostgreSQL (as root)
	@missing=""; \
	command -v nft >/dev/null 2>&1 || missing="$$missing nftables"; \
	command -v ip  >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v ethtool >/dev/null 2>&1 || missing="$$missing ethtool"; \
	command -v runuser >/dev/null 2>&1 || missing="$$missing util-linux"; \
	{ command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || missing="$$missing postgresql"; \
	command -v psql >/dev/null 2>&1 || missing="$$missing postgresql-client"; \
	if [ -z "$$missing" ]; then echo "deps: system packages present"; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "deps: installing$$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else echo "deps: not root, not installing$$missing; tests that need them skip with a reason"; fi

build: ## Build every binary (release profile)
	$(CARGO) build $(CARGOFLAGS) --workspace

check: ## Formatting and lints (cargo fmt --check, clippy -D warnings)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy $(CARGOFLAGS) --workspace --all-targets -- -D warnings

test: deps check ## Lints, then every test of the workspace (what CI runs)
	$(CARGO) test $(CARGOFLAGS) --workspace

e2e: deps build ## Five hosts as network namespaces behind their rule sets, the whole flow (root)
	@[ "$$(id -u)" = 0 ] || { echo "make e2e needs root (network namespaces, nftables)"; exit 2; }
	ENCLAVE_E2E_REQUIRED=1 $(CARGO) test $(CARGOFLAGS) --workspace --test five_hosts -- --nocapture --test-threads 1

demo: build ## Run the main flow end to end on embedded synthetic data (and `make e2e` as root)
	bash tests/demo/demo.sh $(BIN)
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory e2e; else echo "demo: not root, the five-host harness (make e2e) skipped"; fi

bench: build ## Benchmarks, each beside a baseline measured in the same run
	$(BIN)/enclave-bench envelope
	$(BIN)/enclave-bench diode
	$(BIN)/enclave-bench synth
	$(BIN)/enclave-bench anonymize
	$(BIN)/enclave-bench persons
	$(BIN)/enclave-bench ingest
	$(BIN)/enclave-bench intake --whole-store

clean: ## Remove build output
	$(CARGO) clean
