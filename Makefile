# Entry points: `make test` (everything, from a fresh Debian bookworm as
# root) and `make demo`. See selftest/README.md for how the VM harness works.

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
export PATH := /usr/local/go/bin:$(PATH)

GO     ?= go
BIN    := $(abspath bin)
VMEXEC := $(BIN)/vmexec
# The test kernel: DEVMEM_KERNEL (a bzImage or its directory) wins, else
# selftest/kernel/build.sh, which caches, so asking again costs seconds.
KERNEL_BUILD := selftest/kernel/build.sh

# Debian packages: the kernel build (flex ... xz-utils), its C ncdevmem (YNL
# needs python3-yaml/jsonschema), the VM (qemu) and what runs inside it
# (ethtool, socat, iproute2); make kselftest's BPF objects (clang, libbpf-dev
# for bpf_helpers.h) and tools (bpftool; unshare from util-linux). Its newer
# iproute2 and liburing come from selftest/kselftest/prepare.sh.
DEB_PACKAGES := qemu-system-x86 flex bison libelf-dev libssl-dev bc cpio make gcc libc6-dev patch \
	xz-utils perl ethtool socat iproute2 python3 python3-yaml python3-jsonschema \
	debian-archive-keyring ca-certificates \
	clang libbpf-dev bpftool util-linux

.PHONY: all deps kernel kernel-debug unit unit-run vmtest vmtest-run vmtest-debug vmtest-debug-run kselftest test demo demo-c bench clean $(VMEXEC)

all: test

# The debug kernel (cold: the longest step) builds at nice 19 in the
# background while unit, vmtest and kselftest run, on the cycles the TCG
# guests leave idle; vmtest-debug waits for it. A failure stops the build.
test: deps kernel
	@mkdir -p $(BIN); log=$(BIN)/kernel-debug.log; \
	echo "test: building the debug kernel in the background (log: $$log)"; \
	setsid bash -c '$(MAKE) --no-print-directory kernel-debug' > "$$log" 2>&1 & bg=$$!; \
	trap 'kill -- -$$bg 2>/dev/null' EXIT; \
	$(MAKE) --no-print-directory unit vmtest kselftest; \
	echo "test: waiting for the debug kernel"; \
	wait $$bg || { tail -n 30 "$$log"; echo "test: the debug kernel did not build" >&2; exit 1; }; \
	trap - EXIT; tail -n 2 "$$log"; \
	$(MAKE) --no-print-directory vmtest-debug

deps:
	@missing=$$(for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "deps: installing" $$missing; \
		sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		$$sudo apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q $$missing; \
	fi
	@command -v $(GO) >/dev/null || { echo "deps: Go not found; expected it in /usr/local/go/bin" >&2; exit 1; }

kernel:
	@if [ -n "$$DEVMEM_KERNEL" ]; then \
		echo "kernel: using DEVMEM_KERNEL=$$DEVMEM_KERNEL"; \
	elif [ -x $(KERNEL_BUILD) ]; then \
		$(KERNEL_BUILD); \
	else \
		echo "kernel: $(KERNEL_BUILD) is missing; set DEVMEM_KERNEL=path/to/bzImage" >&2; exit 1; \
	fi

# The debug flavour (config.debug: KASAN, lockdep, DEBUG_NET, refcount
# trackers), built and cached next to the normal kernel; DEVMEM_KERNEL_DEBUG
# (a bzImage or its directory) skips the build.
kernel-debug:
	@if [ -n "$$DEVMEM_KERNEL_DEBUG" ]; then \
		echo "kernel-debug: using DEVMEM_KERNEL_DEBUG=$$DEVMEM_KERNEL_DEBUG"; \
	else \
		DEVMEM_KERNEL_FLAVOUR=debug $(KERNEL_BUILD); \
	fi

# staticcheck, installed once into a cached GOBIN (v0.8 is the release for
# Go 1.26); the versioned name makes a version bump reinstall.
STATICCHECK_VERSION := v0.8.2
GOBIN_CACHE := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/devmem/gobin
STATICCHECK := $(GOBIN_CACHE)/staticcheck-$(STATICCHECK_VERSION)

# Every GOOS/GOARCH the module must build on: go vet type-checks each
# (tests included), which is a build without the link.
VET_PLATFORMS := linux/386 linux/amd64 linux/arm linux/arm64 linux/loong64 \
	linux/mips linux/mipsle linux/mips64 linux/mips64le linux/ppc64 linux/ppc64le \
	linux/riscv64 linux/s390x darwin/arm64 windows/amd64 freebsd/amd64 \
	openbsd/amd64 netbsd/amd64 plan9/amd64 js/wasm wasip1/wasm aix/ppc64 \
	solaris/amd64 illumos/amd64 dragonfly/amd64 android/arm64

$(STATICCHECK):
	@mkdir -p $(GOBIN_CACHE)
	GOBIN=$(GOBIN_CACHE) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	mv $(GOBIN_CACHE)/staticcheck $@

# A target that passed with the same inputs (every file of the checkout, Go
# version, kernels) is not run again, like go test's cache; DEVMEM_RERUN=1
# runs it anyway (.ci/run does). See selftest/resultcache.sh.
RESULTCACHE := selftest/resultcache.sh

unit: $(STATICCHECK)
	@$(RESULTCACHE) unit $(MAKE) --no-print-directory unit-run

# A count, not a duration: with -fuzztime=5s, go1.26's coordinator can fail
# a clean run with "context deadline exceeded" at the deadline (golang/go#75804,
# fixed in go1.27); it did once here. 50000 inputs take about 5 s on CI's machine.
FUZZ_EXECS ?= 50000x
unit-run:
	$(GO) vet ./...
	$(GO) vet -tags vmtest ./...
	$(STATICCHECK) ./...
	$(STATICCHECK) -tags vmtest ./...
	@for p in $(VET_PLATFORMS); do \
		echo "GOOS=$${p%/*} GOARCH=$${p#*/} $(GO) vet ./..."; \
		GOOS=$${p%/*} GOARCH=$${p#*/} $(GO) vet ./... || exit 1; \
	done
	$(GO) test -race ./...
	@if grep -qs '^func FuzzParseControl(' *_test.go; then \
		echo "$(GO) test -run='^$$' -fuzz=FuzzParseControl -fuzztime=$(FUZZ_EXECS) ."; \
		$(GO) test -run='^$$' -fuzz=FuzzParseControl -fuzztime=$(FUZZ_EXECS) .; \
	fi

# One vmexec binary serves every package; phony so it is always current
# (go build is a cache hit when nothing changed).
$(VMEXEC):
	@mkdir -p $(BIN)
	$(GO) build -o $@ ./selftest/vmexec

# kernel_dir prints the kernel directory (DEVMEM_KERNEL or build.sh's last line).
kernel_dir = $${DEVMEM_KERNEL:-$$($(KERNEL_BUILD) | tail -n1)}

# vmexec's own tests run on the host and boot VMs themselves; the other
# packages' tests run inside the VM, one package (one boot) at a time: all
# of them where the kernel matters, only the VM tests of the root package
# (its unit tests ran on the host under -race), none of the packages that
# never touch the kernel (cuda without a GPU, internal/...).
MODULE := github.com/devmem-go/devmem
VM_PACKAGES = $$($(GO) list ./... | grep -v -x -e '$(MODULE)' -e '$(MODULE)/selftest/vmexec' -e '$(MODULE)/cuda' -e '$(MODULE)/internal/.*')
ROOT_VM_TESTS := ^TestVM
vmtest: $(VMEXEC)
	@kernel="$(kernel_dir)" && [ -n "$$kernel" ] && \
	DEVMEM_KERNEL="$$kernel" RESULT_KEY="$$kernel" $(RESULTCACHE) vmtest $(MAKE) --no-print-directory vmtest-run

vmtest-run: $(VMEXEC)
	@kernel="$(kernel_dir)" && [ -n "$$kernel" ] && export DEVMEM_KERNEL="$$kernel" && \
	echo "vmtest: kernel $$kernel" && \
	$(GO) test -count=1 ./selftest/vmexec/ && \
	$(GO) build -o $(BIN)/ncdevmem ./cmd/ncdevmem && \
	DEVMEM_NCDEVMEM_BIN=$(BIN)/ncdevmem \
	$(GO) test -tags vmtest -exec $(VMEXEC) -count=1 -v -run '$(ROOT_VM_TESTS)' . && \
	$(GO) test -tags vmtest -exec $(VMEXEC) -count=1 -p 1 -v $(VM_PACKAGES) && \
	echo "vmtest: a GOARCH=386 receiver on the 64-bit kernel (compat control messages)" && \
	GOARCH=386 $(GO) test -tags vmtest -exec $(VMEXEC) -count=1 -v -run 'TestVMRX' . && \
	echo "vmtest: the pod topology (netkit + leased queue in a userns-owned netns) set up by vmexec -pod" && \
	$(GO) test -tags vmtest -exec "$(VMEXEC) -pod userns" -count=1 -v -run TestVMPodFromVmexec ./selftest

# The teardown and reliability subset on the debug kernel: a KASAN, lockdep
# or refcount-tracker report is a kernel WARN/BUG, which fails the run.
kernel_debug_dir = $${DEVMEM_KERNEL_DEBUG:-$$(DEVMEM_KERNEL_FLAVOUR=debug $(KERNEL_BUILD) | tail -n1)}
DEBUG_NIC_TESTS  ?= TestTeardown|TestRestartOnReconfig|TestRingPrefill|TestRXHWAllQueues|TestRXHWGRO
DEBUG_ROOT_TESTS ?= TestVMBindingSurvivesGC|TestVMDMABufCloseRaces|TestVMRXNoFDLeak|TestVMBindRXErrors
vmtest-debug: $(VMEXEC)
	@kernel="$(kernel_debug_dir)" && [ -n "$$kernel" ] && \
	DEVMEM_KERNEL_DEBUG="$$kernel" RESULT_KEY="$$kernel $(DEBUG_NIC_TESTS) $(DEBUG_ROOT_TESTS)" \
	$(RESULTCACHE) vmtest-debug $(MAKE) --no-print-directory vmtest-debug-run

vmtest-debug-run: $(VMEXEC)
	@kernel="$(kernel_debug_dir)" && [ -n "$$kernel" ] && export DEVMEM_KERNEL="$$kernel" && \
	export DEVMEM_VM_APPEND=pci=noacpi && \
	echo "vmtest-debug: kernel $$kernel" && \
	$(GO) test -tags vmtest -exec $(VMEXEC) -count=1 -v -run '$(DEBUG_NIC_TESTS)' ./selftest/nictest && \
	$(GO) test -tags vmtest -exec $(VMEXEC) -count=1 -v -run '$(DEBUG_ROOT_TESTS)' .

# The kernel's own devmem/netkit/zcrx selftests (drivers/net/hw of the tree
# the kernel was built from, unmodified) in one VM boot; see selftest/README.md.
# One suite with one ncdevmem: make kselftest SUITES=devmem.py NCDEVMEM=c|go|PATH
SUITES ?=
NCDEVMEM ?=
kselftest: $(VMEXEC)
	@kernel="$(kernel_dir)" && [ -n "$$kernel" ] && \
	DEVMEM_KERNEL="$$kernel" VMEXEC=$(VMEXEC) SUITES="$(SUITES)" NCDEVMEM="$(NCDEVMEM)" \
	RESULT_KEY="$$kernel $(SUITES) $(NCDEVMEM)" $(RESULTCACHE) kselftest selftest/kselftest/run.sh

# Our cmd/ncdevmem receives a validated stream from the peer netns
# (selftest/demo drives both ends inside the VM).
demo: $(VMEXEC)
	$(GO) build -o $(BIN)/ncdevmem ./cmd/ncdevmem
	$(GO) build -o $(BIN)/demo ./selftest/demo
	@kernel="$(kernel_dir)" && [ -n "$$kernel" ] && \
	$(VMEXEC) -kernel "$$kernel" -- $(BIN)/demo

# The same with the kernel's own C ncdevmem, as a reference: it receives and
# validates a 64 MiB socat stream from the peer netns into a udmabuf.
demo-c: $(VMEXEC)
	$(GO) build -o $(BIN)/hdsplit ./selftest/vmexec/hdsplit
	@kernel="$(kernel_dir)" && [ -n "$$kernel" ] && \
	$(VMEXEC) -kernel "$$kernel" -- /bin/sh $(abspath selftest/vmexec/demo_c_ncdevmem.sh)

# Plain TCP, the optimized C devmem receiver, the kernel's C ncdevmem, our
# cmd/ncdevmem and the library loop in one boot (docs/PERFORMANCE.md).
# BENCH_FLAGS go to the in-VM driver, e.g. "-size 33554432 -runs 1" (CI).
bench:
	selftest/bench/run.sh $(BENCH_FLAGS)

# Everything make bench needs, prebuilt, with the kernel and QEMU's .debs, in
# BENCH_BUNDLE, for a machine without Go, gcc or apt: BENCH_BUNDLE/run.sh there.
.PHONY: bench-bundle
bench-bundle:
	selftest/bench/run.sh --bundle $${BENCH_BUNDLE:?set BENCH_BUNDLE=dir}

clean:
	rm -rf $(BIN)
