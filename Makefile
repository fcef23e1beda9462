# stasis: build, demo and test entry points. Run as root on Debian 12.

SHELL := /bin/bash
# rustup installs cargo here; a non-login shell (CI) may not have it in PATH.
export PATH := $(HOME)/.cargo/bin:$(PATH)

CARGO ?= cargo
# runc: the runtime delegated verbs go to (and the tests' reference);
# busybox-static: the tests' and the demo's rootfs; gcc/libc6-dev: C test
# workloads; jq: the demo; containerd (ctr and the runc v2 shim): the
# containerd tests, the stasis shim's tests and examples/containerd*.sh;
# podman (brings conmon): the podman tests and example; criu: podman refuses
# to checkpoint or restore unless a criu >= 3.11 answers its version query
# (stasis never runs criu).
APT_PACKAGES := runc busybox-static gcc libc6-dev jq containerd podman criu
# make test starts with a bounded run of the image decoder's fuzz target.
CI_FUZZ_SECONDS ?= 30

.PHONY: all deps build demo test bench clean

all: build

# Idempotent: apt-get runs only when a package is missing.
deps:
	@missing=""; \
	for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "make deps: run as root to install:$$missing" >&2; exit 1; fi; \
	  echo "make deps: installing$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update && apt-get install -y --no-install-recommends $$missing; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "make deps: cargo not found: install a Rust toolchain >= 1.89 (rustup)" >&2; exit 1; }

build:
	$(CARGO) build --release --workspace

demo: deps build
	bash examples/demo.sh

# Integration tests start real containers: root, and one at a time.
test: deps build
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(CI_FUZZ_SECONDS)
	$(CARGO) test --release --workspace -- --test-threads=1

# Checkpoint/restore speed beside runc+CRIU on the shared workloads and the
# scaling series (needs ../shared/bench, or BENCH_DIR); BENCH_REPS=3 by default.
# runc+CRIU runs with the first criu that passes `criu check`; Debian 12's
# does not on this kernel, so bench/criu.py builds Debian unstable's CRIU
# source (signature and hashes checked) into .build/criu once.
bench: deps build
	python3 bench/run.py

# Fuzz the image decoder (checkpoint/fuzz, target `decode`) for FUZZ_SECONDS,
# seeded with real images (checkpoint/fuzz/seeds); a crash fails the target
# and leaves its input in checkpoint/fuzz/artifacts/decode/. cargo-fuzz
# passes nightly-only flags (-Z sanitizer=address ...): RUSTC_BOOTSTRAP=1
# accepts them on the stable toolchain. It also sets RUSTFLAGS, which
# overrides the static linking of .cargo/config.toml (sanitizers cannot link
# statically). libFuzzer itself is C++: g++ is installed if missing.
FUZZ_SECONDS ?= 60
fuzz:
	@$(MAKE) --no-print-directory deps APT_PACKAGES=g++
	@command -v cargo-fuzz >/dev/null || $(CARGO) install --locked cargo-fuzz
	cd checkpoint/fuzz && mkdir -p corpus/decode && \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run decode corpus/decode seeds -- \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=4096

clean:
	$(CARGO) clean
