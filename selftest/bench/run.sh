#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# run.sh [bench flags]: the kernel's C ncdevmem against our cmd/ncdevmem as
# the receiver of the same transfers, in one VM boot; prints the table that
# docs/PERFORMANCE.md carries. Flags go to selftest/bench (main.go), e.g.
#
#   selftest/bench/run.sh                               # make bench: 512 MiB, 3 runs, validation on and off
#   selftest/bench/run.sh -size 33554432 -runs 1        # CI's short form
#
# Kernel: $DEVMEM_KERNEL (bzImage or its directory), else the last line of
# selftest/kernel/build.sh. The C ncdevmem: $DEVMEM_C_NCDEVMEM, else
# ncdevmem next to the bzImage.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH=/usr/local/go/bin:$PATH

kernel=${DEVMEM_KERNEL:-$(selftest/kernel/build.sh | tail -n1)}
kernel_dir=$kernel
[ -d "$kernel_dir" ] || kernel_dir=$(dirname "$kernel")
c_ncdevmem=${DEVMEM_C_NCDEVMEM:-$kernel_dir/ncdevmem}
[ -x "$c_ncdevmem" ] || { echo "bench: no C ncdevmem at $c_ncdevmem (set DEVMEM_C_NCDEVMEM)" >&2; exit 1; }

mkdir -p bin
go build -o bin/vmexec ./selftest/vmexec
go build -o bin/ncdevmem ./cmd/ncdevmem
go build -o bin/devmem-bench ./selftest/bench
# The VM sees the host's /tmp, so the shim built here is loadable there.
tmp=$(mktemp -d /tmp/devmem-bench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
gcc -O2 -Wall -shared -fPIC -o "$tmp/countsys.so" selftest/bench/countsys/countsys.c -ldl

echo "host: $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)), $(uname -r)"
echo "kernel: $kernel; C ncdevmem: $c_ncdevmem; go: $(go version)"
start=$(date +%s)
bin/vmexec -kernel "$kernel" -timeout "${BENCH_TIMEOUT:-90m}" -- \
	"$PWD/bin/devmem-bench" -ours "$PWD/bin/ncdevmem" -theirs "$c_ncdevmem" -shim "$tmp/countsys.so" "$@"
echo "bench: $(( $(date +%s) - start )) s in the VM (boot included)"
