#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# run.sh [bench flags]: every receiver of docs/PERFORMANCE.md (plain TCP,
# the optimized C devmem receiver fastrx, the kernel's C ncdevmem, our
# cmd/ncdevmem and the minimal library loop gorx) on the same transfers, in
# one VM boot; prints the tables. Flags go to selftest/bench (main.go), e.g.
#
#   selftest/bench/run.sh                               # make bench: 128 MiB, 3 runs
#   selftest/bench/run.sh -size 33554432 -runs 1        # CI's short form
#
# Kernel: $DEVMEM_KERNEL (bzImage or its directory), else the last line of
# selftest/kernel/build.sh. The C ncdevmem: $DEVMEM_C_NCDEVMEM, else
# ncdevmem next to the bzImage. $BENCH_SMP, $BENCH_MEM: the VM's CPUs and
# memory (2, 2G); $BENCH_TIMEOUT (90m).
#
# Another machine without Go, a compiler or apt (see docs/PERFORMANCE.md):
#
#   selftest/bench/run.sh --bundle DIR    # here: binaries, kernel, qemu .debs into DIR
#   DIR/run.sh [bench flags]              # there: runs from DIR alone
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)

# from_debs unpacks the bundle's .debs into DIR/debroot (never over /) and
# puts wrappers that run them with their libraries in DIR/tools: QEMU (with
# its firmware), and ethtool and ip where this machine lacks them (the guest
# runs on this machine's /, with this PATH).
from_debs() {
	local root=$1/debroot tools=$1/tools
	local libs="$root/lib/x86_64-linux-gnu:$root/usr/lib/x86_64-linux-gnu"
	if [ ! -x "$root/usr/bin/qemu-system-x86_64" ]; then
		mkdir -p "$root"
		for d in "$1"/debs/*.deb; do dpkg-deb -x "$d" "$root"; done
	fi
	mkdir -p "$tools"
	printf '#!/bin/sh\nLD_LIBRARY_PATH="%s" exec "%s" -L "%s" -L "%s" "$@"\n' \
		"$libs" "$root/usr/bin/qemu-system-x86_64" "$root/usr/share/qemu" "$root/usr/share/seabios" >"$tools/qemu-system-x86_64"
	chmod +x "$tools/qemu-system-x86_64"
	export DEVMEM_QEMU=$tools/qemu-system-x86_64
	for t in ethtool ip; do
		command -v $t >/dev/null || [ -x /usr/sbin/$t ] || [ -x /sbin/$t ] && continue
		local p
		p=$(ls "$root"/usr/sbin/$t "$root"/sbin/$t "$root"/bin/$t 2>/dev/null | head -n1) || true
		[ -n "$p" ] || continue
		printf '#!/bin/sh\nLD_LIBRARY_PATH="%s" exec "%s" "$@"\n' "$libs" "$p" >"$tools/$t"
		chmod +x "$tools/$t"
	done
	export PATH=$tools:$PATH
}

if [ -f "$here/BUNDLE" ]; then
	# Running from a bundle: everything is here.
	bin=$here/bin
	kernel=${DEVMEM_KERNEL:-$here/kernel/bzImage}
	c_ncdevmem=${DEVMEM_C_NCDEVMEM:-$here/kernel/ncdevmem}
	shim=$here/bin/countsys.so
	# BENCH_FROM_DEBS=1: use the bundled QEMU even where one is installed.
	if [ -n "${BENCH_FROM_DEBS:-}" ] || { [ -z "${DEVMEM_QEMU:-}" ] && ! command -v qemu-system-x86_64 >/dev/null; }; then
		from_debs "$here"
	fi
	cat "$here/BUNDLE"
else
	cd "$here/../.."
	export PATH=/usr/local/go/bin:$PATH
	bundle=
	if [ "${1:-}" = --bundle ]; then
		bundle=${2:?--bundle DIR}
		shift 2
	fi
	kernel=${DEVMEM_KERNEL:-$(selftest/kernel/build.sh | tail -n1)}
	kernel_dir=$kernel
	[ -d "$kernel_dir" ] || kernel_dir=$(dirname "$kernel")
	[ -d "$kernel" ] && kernel=$kernel/bzImage
	c_ncdevmem=${DEVMEM_C_NCDEVMEM:-$kernel_dir/ncdevmem}
	[ -x "$c_ncdevmem" ] || { echo "bench: no C ncdevmem at $c_ncdevmem (set DEVMEM_C_NCDEVMEM)" >&2; exit 1; }

	bin=$PWD/bin
	if [ -n "$bundle" ]; then
		mkdir -p "$bundle"
		bundle=$(cd "$bundle" && pwd)
		bin=$bundle/bin
	fi
	mkdir -p "$bin"
	# Static Go binaries: the VM runs them from this machine's /, and a
	# bundle runs them elsewhere.
	CGO_ENABLED=0 go build -o "$bin/vmexec" ./selftest/vmexec
	# $BENCH_NCDEVMEM: another build of our cmd/ncdevmem to measure.
	if [ -n "${BENCH_NCDEVMEM:-}" ]; then
		cp "$BENCH_NCDEVMEM" "$bin/ncdevmem"
	else
		CGO_ENABLED=0 go build -o "$bin/ncdevmem" ./cmd/ncdevmem
	fi
	CGO_ENABLED=0 go build -o "$bin/devmem-bench" ./selftest/bench
	CGO_ENABLED=0 go build -o "$bin/gorx" ./selftest/bench/gorx
	gcc -O2 -Wall -pthread -static -o "$bin/fastrx" selftest/bench/fastrx/fastrx.c
	gcc -O2 -Wall -shared -fPIC -o "$bin/countsys.so" selftest/bench/countsys/countsys.c -ldl
	shim=$bin/countsys.so

	if [ -n "$bundle" ]; then
		mkdir -p "$bundle/kernel" "$bundle/debs"
		cp "$kernel" "$bundle/kernel/bzImage"
		cp "$c_ncdevmem" "$bundle/kernel/ncdevmem"
		cp selftest/bench/run.sh "$bundle/run.sh"
		# QEMU and what it needs beyond a Debian base system (libc6 and
		# the loader stay the target's), plus ethtool and ip for the guest.
		pkgs=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
			--no-breaks --no-replaces --no-enhances qemu-system-x86 ethtool iproute2 |
			grep -v '^ ' | grep -v '^<' | sort -u |
			grep -vxE 'libc6|libgcc-s1|libstdc\+\+6|debconf|dpkg|perl-base|adduser|passwd|libcrypt1|init-system-helpers|lsb-base|sysvinit-utils|base-files|tar|coreutils|mawk|gcc-12-base|libselinux1|libpam.*|login|util-linux|debianutils|bash|grep|sed|findutils|diffutils|libc-bin|ucf|usrmerge|.*:i386')
		(cd "$bundle/debs" && apt-get download $pkgs >/dev/null)
		{
			echo "devmem-go bench bundle, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
			echo "kernel: $(cat "$kernel_dir/version" 2>/dev/null | head -n1)"
		} >"$bundle/BUNDLE"
		echo "bench: bundle in $bundle ($(du -sh "$bundle" | cut -f1)); run $bundle/run.sh [flags] on the target"
		exit 0
	fi
fi

echo "host: $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)), $(uname -r)"
echo "host load before: $(uptime)"
echo "kernel: $kernel; C ncdevmem: $c_ncdevmem"
start=$(date +%s)
# The VM sees this machine's /, so paths here are valid there.
"$bin/vmexec" -kernel "$kernel" -smp "${BENCH_SMP:-2}" -mem "${BENCH_MEM:-2G}" -timeout "${BENCH_TIMEOUT:-90m}" -- \
	"$bin/devmem-bench" -ours "$bin/ncdevmem" -theirs "$c_ncdevmem" -shim "$shim" \
	-fastrx "$bin/fastrx" -gorx "$bin/gorx" "$@"
echo "bench: $(( $(date +%s) - start )) s in the VM (boot included)"
echo "host load after: $(uptime)"
