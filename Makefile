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

export WRANGLER_SEND_METRICS := false
export WASM_BINDGEN_BIN := $(CARGO_BIN)/wasm-bindgen
export WASM_OPT_BIN     := $(CURDIR)/node_modules/.bin/wasm-opt
export ESBUILD_BIN      := $(CURDIR)/node_modules/.bin/esbuild

WORKER_SOURCES := $(shell find src config -type f) Cargo.toml Cargo.lock

.PHONY: help tools dev test worker size lint fmt clean

help:
	@echo "make dev    build and serve the gateway on 127.0.0.1:$(DEV_PORT) with the mock provider (demo key: gw-demo-local-only)"
	@echo "make test   unit and end-to-end tests"
	@echo "make size   release wasm size, raw and gzipped"
	@echo "make lint   rustfmt and clippy, native and wasm32"

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

build/index.js: $(WORKER_SOURCES) | tools
	$(CARGO_BIN)/worker-build --release

size: worker
	@raw=$$(stat -c %s build/index_bg.wasm); gz=$$(gzip -9c build/index_bg.wasm | wc -c); \
	awk -v r=$$raw -v g=$$gz 'BEGIN { printf "release wasm: %d bytes raw (%.1f KiB), %d bytes gzipped (%.1f KiB)\n", r, r/1024, g, g/1024 }'

## make dev: migrations, the mock provider on :$(MOCK_PORT), the gateway on :$(DEV_PORT).
dev: tools worker
	CI=true $(WRANGLER) d1 migrations apply llm-edge-gateway --local --env dev --persist-to $(STATE)
	cargo build -q -p mock-provider
	@set -m; target/debug/mock-provider --port $(MOCK_PORT) & mock=$$!; \
	trap 'kill $$mock 2>/dev/null' EXIT INT TERM; \
	$(WRANGLER) dev --env dev --ip 127.0.0.1 --port $(DEV_PORT) --persist-to $(STATE) \
		--var "GATEWAY_CONFIG:$$(cat config/demo.json)"

## make test: unit tests, then the end-to-end tests (which start the mock and workerd).
test: tools worker
	cargo test --workspace

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --target wasm32-unknown-unknown --lib -- -D warnings

fmt:
	cargo fmt --all

clean:
	rm -rf build .tools .wrangler target
