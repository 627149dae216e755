# llm-edge-gateway — the two commands are `make dev` and `make test`. Every tool is
# installed here, from crates.io and npm only: nothing is downloaded from GitHub.

SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO_BIN      := $(or $(CARGO_HOME),$(HOME)/.cargo)/bin
WORKER_BUILD_V := 0.8.7
# wasm-bindgen-cli must match the wasm-bindgen the worker crate locked.
BINDGEN_V      := $(shell awk '/^name = "wasm-bindgen"$$/{getline; gsub(/[^0-9.]/,""); print; exit}' Cargo.lock)
WRANGLER       := node_modules/.bin/wrangler
STATE          := .wrangler/state
DEV_PORT       := 8787
MOCK_PORT      := 8788
DEV_INSPECTOR_PORT := 9229
# Seconds between the cron's runs under `make dev` (wrangler dev never runs crons itself).
DEV_CRON_S     := 300
# The admin token under `make dev` only (label:token); a deployment has none until the
# ADMIN_TOKEN secret is set.
DEV_ADMIN_TOKEN := dev:adm-demo-local-only

export WRANGLER_SEND_METRICS := false
export WASM_BINDGEN_BIN := $(CARGO_BIN)/wasm-bindgen
export WASM_OPT_BIN     := $(CURDIR)/node_modules/.bin/wasm-opt
export ESBUILD_BIN      := $(CURDIR)/node_modules/.bin/esbuild

WORKER_SOURCES := $(shell find src config -type f) Cargo.toml Cargo.lock

.PHONY: help tools dev test worker size lint fmt clean

help:
	@echo "make dev    build and serve the gateway on 127.0.0.1:$(DEV_PORT) with the mock provider (demo key: gw-demo-local-only, admin token: $(lastword $(subst :, ,$(DEV_ADMIN_TOKEN))))"
	@echo "make test   unit and end-to-end tests"
	@echo "make size   release wasm size, raw and gzipped"
	@echo "make lint   rustfmt, clippy (native and wasm32), and the one-way layers check"

## Tools: each step is skipped when what it installs is already there.
tools: .tools/rust-target .tools/worker-build-$(WORKER_BUILD_V) .tools/wasm-bindgen-$(BINDGEN_V) node_modules/.installed

.tools/rust-target:
	@mkdir -p .tools
	rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
	@touch $@

.tools/worker-build-$(WORKER_BUILD_V):
	@mkdir -p .tools
	@if [ "$$($(CARGO_BIN)/worker-build --version 2>/dev/null)" != "$(WORKER_BUILD_V)" ]; then \
		echo "installing worker-build $(WORKER_BUILD_V) (about 4 minutes)"; \
		cargo install --locked worker-build --version $(WORKER_BUILD_V); \
	fi
	@touch $@

# Not --locked: wasm-bindgen-cli's lock file pins a webpki-roots release the registry does not serve.
.tools/wasm-bindgen-$(BINDGEN_V):
	@mkdir -p .tools
	@if [ "$$($(CARGO_BIN)/wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $(BINDGEN_V)" ]; then \
		echo "installing wasm-bindgen-cli $(BINDGEN_V) (about 2 minutes)"; \
		cargo install wasm-bindgen-cli --version $(BINDGEN_V); \
	fi
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

## The worker: build/index.js + build/index_bg.wasm (wrangler's [build] runs `make -s worker`).
worker: build/index.js

# wasm-opt runs here rather than in worker-build, which forces --debuginfo and so ships the
# name section (13% of the bytes). The feature list is worker-build's: nothing newer than
# workerd supports. Binaryen's inlining is skipped: it grows the gzipped wasm by a tenth.
# local-cse and merge-similar-functions are skipped too: they shrink the raw wasm (by 27 KB)
# but make it compress worse (gzipped 363,849 -> 360,545 bytes without them), and the
# gzipped size is what a deploy is limited by.
# A second -Oz round takes 375 more bytes off the gzipped wasm for 4 s of build time;
# a third, or --converge, nothing more.
# --low-memory-unused lets binaryen fold constant offsets into loads and stores (2 KB
# gzipped): it may assume no address below 1024 is used, and rust-lld puts the 1 MB stack
# first, growing down from 1 MB to 0, so only a stack already overflowing reaches it.
WASM_OPT_FLAGS := -Oz -Oz --low-memory-unused --skip-pass=inlining-optimizing --skip-pass=local-cse \
	--skip-pass=merge-similar-functions --strip-debug --strip-producers \
	$(addprefix --enable-,mutable-globals sign-ext nontrapping-float-to-int bulk-memory \
		multivalue reference-types exception-handling)

build/index.js: $(WORKER_SOURCES) | tools
	$(CARGO_BIN)/worker-build --release
	$(WASM_OPT_BIN) $(WASM_OPT_FLAGS) build/index_bg.wasm -o build/index_bg.wasm

size: worker
	@raw=$$(stat -c %s build/index_bg.wasm); gz=$$(gzip -9c build/index_bg.wasm | wc -c); \
	awk -v r=$$raw -v g=$$gz 'BEGIN { printf "release wasm: %d bytes raw (%.1f KiB), %d bytes gzipped (%.1f KiB)\n", r, r/1024, g, g/1024 }'

## make dev: migrations, the mock provider on :$(MOCK_PORT), the gateway on :$(DEV_PORT), and
## the cron every $(DEV_CRON_S) s through wrangler's scheduled-event trigger.
dev: tools worker
	CI=true $(WRANGLER) d1 migrations apply llm-edge-gateway --local --env dev --persist-to $(STATE)
	cargo build -q -p mock-provider
	@set -m; target/debug/mock-provider --port $(MOCK_PORT) & mock=$$!; \
	config=$$(sed 's#127.0.0.1:8788#127.0.0.1:$(MOCK_PORT)#g' config/demo.json); \
	$(WRANGLER) dev --env dev --ip 127.0.0.1 --port $(DEV_PORT) --inspector-port $(DEV_INSPECTOR_PORT) \
		--persist-to $(STATE) --show-interactive-dev-session=false --var "GATEWAY_CONFIG:$$config" \
		--var "ADMIN_TOKEN:$(DEV_ADMIN_TOKEN)" </dev/null & dev=$$!; \
	while sleep $(DEV_CRON_S); do curl -s -o /dev/null http://127.0.0.1:$(DEV_PORT)/cdn-cgi/handler/scheduled; done & cron=$$!; \
	trap 'kill -TERM -$$dev -$$mock -$$cron 2>/dev/null' EXIT INT TERM; wait $$dev

## make test: unit tests, then the end-to-end tests (which start the mock and workerd).
test: tools worker
	cargo test --workspace

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --target wasm32-unknown-unknown --lib -- -D warnings
	cargo test -q --test layers

fmt:
	cargo fmt --all

clean:
	rm -rf build .tools .wrangler target

## make bench: the benchmarks, side by side with a trivial pass-through worker,
## Portkey's gateway and LiteLLM's proxy, in one run of about 10 minutes (installs the first
## time: wrk, nginx and perf from Debian, twiggy from crates.io, Portkey from npm, LiteLLM
## from PyPI into bench/.venv). Results: bench/results/<time>/ and BENCHMARKS.md. Knobs:
## BENCH_DURATION, BENCH_RUNS, BENCH_ONLY, BENCH_SKIP... (see bench/bench.mjs).
TWIGGY_V := 0.8.0
BENCH_PT := bench/passthrough

.PHONY: bench bench-tools bench-passthrough bench-peers bench-named bench-micro

bench: tools worker bench-tools bench-passthrough bench-peers bench-named
	cargo build --release -q -p mock-provider
	@out=bench/results/$$(date -u +%Y-%m-%dT%H-%M-%SZ); mkdir -p $$out; \
	cleanup() { for g in $$(cat $$out/pids 2>/dev/null); do kill -KILL -$$g 2>/dev/null; done; }; \
	set -m; BENCH_OUT=$$out node bench/bench.mjs & pid=$$!; \
	trap 'kill -TERM $$pid 2>/dev/null; wait $$pid; cleanup; exit 130' INT TERM; \
	wait $$pid; rc=$$?; [ $$rc -eq 0 ] || cleanup; exit $$rc

# Debian's packages (wrk, nginx, perf) and twiggy; each skipped when present. Installing
# nginx must not start a system nginx on every interface: service starts are refused
# while it installs (unless the machine already has a policy of its own).
bench-tools:
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	@command -v nginx >/dev/null || { \
		apt-get update -qq; policy=/usr/sbin/policy-rc.d; own=; \
		if [ ! -e $$policy ]; then printf '#!/bin/sh\nexit 101\n' > $$policy; chmod +x $$policy; own=1; fi; \
		apt-get install -y -qq nginx-light || apt-get install -y -qq nginx; rc=$$?; \
		[ -z "$$own" ] || rm -f $$policy; exit $$rc; }
	@command -v perf >/dev/null || { apt-get update -qq && apt-get install -y -qq linux-perf; } || \
		echo "perf is not installed: make bench will skip the CPU profile"
	@if [ "$$($(CARGO_BIN)/twiggy --version 2>/dev/null)" != "twiggy-opt $(TWIGGY_V)" ]; then \
		echo "installing twiggy $(TWIGGY_V) (about 2 minutes)"; cargo install --locked twiggy --version $(TWIGGY_V); fi

# The gateway's release build again, with its function names kept: what the CPU profile
# runs and twiggy reads (the shipped build strips them). Same code, same passes.
BENCH_NAMED := target/bench-named
bench-named: $(BENCH_NAMED)/index.js

$(BENCH_NAMED)/index.js: build/index.js
	$(CARGO_BIN)/worker-build --release --out-dir $(BENCH_NAMED)
	$(WASM_OPT_BIN) $(filter-out --strip-debug,$(WASM_OPT_FLAGS)) --debuginfo $(BENCH_NAMED)/index_bg.wasm -o $(BENCH_NAMED)/index_bg.wasm

# The trivial pass-through worker, built like the gateway. Its wasm-bindgen must be the
# CLI's version, which follows the gateway's Cargo.lock.
bench-passthrough: $(BENCH_PT)/build/index.js

$(BENCH_PT)/build/index.js: $(BENCH_PT)/src/lib.rs $(BENCH_PT)/Cargo.toml $(BENCH_PT)/Cargo.lock Cargo.lock | tools
	@v=$$(awk '/^name = "wasm-bindgen"$$/{getline; gsub(/[^0-9.]/,""); print; exit}' $(BENCH_PT)/Cargo.lock); \
	[ "$$v" = "$(BINDGEN_V)" ] || cargo update -q --manifest-path $(BENCH_PT)/Cargo.toml -p wasm-bindgen --precise $(BINDGEN_V)
	cd $(BENCH_PT) && $(CARGO_BIN)/worker-build --release

# The peers: Portkey from npm (bench/package-lock.json), LiteLLM from PyPI into bench/.venv.
bench-peers: bench/node_modules/.installed bench/.venv/.installed

bench/node_modules/.installed: bench/package.json bench/package-lock.json
	cd bench && npm ci --no-audit --no-fund
	@touch $@

bench/.venv/.installed: bench/requirements.txt
	@[ -x bench/.venv/bin/pip ] || python3 -m venv bench/.venv
	bench/.venv/bin/pip install -q --disable-pip-version-check -r bench/requirements.txt
	@touch $@

# The native microbenchmarks alone (criterion; `make bench` runs and reports them too).
bench-micro:
	cargo bench --bench hot_paths
