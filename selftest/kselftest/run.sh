#!/usr/bin/env bash
# make kselftest: the kernel's own devmem, netkit and io_uring zcrx selftests
# (tools/testing/selftests/drivers/net/hw of the tree the test kernel was
# built from, unmodified) in one VM boot, against vmexec's netdevsim pair.
#
# Usage: selftest/kselftest/run.sh   (from the repository root)
# Environment:
#   DEVMEM_KERNEL  kernel dir or its bzImage (default: selftest/kernel/build.sh)
#   SUITES         suites to run (default: all five below)
#   NCDEVMEM       the ncdevmem to put next to the suites: c (the kernel
#                  build's), go (our cmd/ncdevmem, built here) or a path;
#                  several are run one after the other. Default: every
#                  suite with c, then the suites that run ncdevmem
#                  (devmem.py nk_devmem.py userns_devmem.py) with go.
#                  nk_qlease.py and iou-zcrx.py run iou-zcrx, never ncdevmem:
#                  with go they would repeat the C run, so a go or path run
#                  includes them only when SUITES names them.
#   KSELFTEST_TIMEOUT  per-suite limit in seconds (default 900)
#   VMEXEC         vmexec binary (default: built into bin/vmexec)
# Prints KTAP, a summary line per suite and finally
#   N passed, N failed, N skipped
# counted in test cases. Exit status 0 only when nothing failed.
set -euo pipefail
export PATH=/usr/local/go/bin:$PATH

all_suites="devmem.py nk_devmem.py userns_devmem.py nk_qlease.py iou-zcrx.py"
# The suites that run ncdevmem (the other two run iou-zcrx only).
ncdevmem_suites=" devmem.py nk_devmem.py userns_devmem.py "

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
log() { printf 'kselftest: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
start=$SECONDS

suites=${SUITES:-$all_suites}
for s in $suites; do
	[[ " $all_suites " == *" $s "* ]] || die "unknown suite $s (known: $all_suites)"
done

if [[ -n ${DEVMEM_KERNEL:-} ]]; then
	kernel=$DEVMEM_KERNEL
	[[ -d $kernel ]] || kernel=$(dirname "$kernel")
else
	kernel=$(selftest/kernel/build.sh | tail -n1)
fi
kernel=$(cd "$kernel" && pwd)
[[ -f $kernel/bzImage ]] || die "no bzImage in $kernel"

t0=$SECONDS
prep=$(selftest/kselftest/prepare.sh "$kernel" | tail -n1)
log "prepared in $((SECONDS - t0)) s: $prep"

mkdir -p bin
vmexec=${VMEXEC:-}
if [[ -z $vmexec ]]; then
	vmexec=$repo/bin/vmexec
	go build -o "$vmexec" ./selftest/vmexec
fi

# ncdevmem_bin LABEL: the binary for c, go or a path.
ncdevmem_bin() {
	case $1 in
	c)
		[[ -x $kernel/ncdevmem ]] || die "$kernel has no ncdevmem"
		echo "$kernel/ncdevmem"
		;;
	go)
		go build -o "$repo/bin/ncdevmem" ./cmd/ncdevmem || die "go build ./cmd/ncdevmem"
		echo "$repo/bin/ncdevmem"
		;;
	*)
		[[ -x $1 ]] || die "NCDEVMEM=$1: not c, go or an executable"
		(cd "$(dirname "$1")" && echo "$PWD/$(basename "$1")")
		;;
	esac
}

runs=()
add_run() { # LABEL SUITES...
	local label=$1 bin list
	shift
	(($#)) || return 0
	bin=$(ncdevmem_bin "$label")
	list=$(tr ' ' ',' <<<"$*")
	[[ $label == c || $label == go ]] || label=custom
	runs+=("$label=$bin:$list")
}
if [[ -z ${NCDEVMEM:-} ]]; then
	add_run c $suites
	go_suites=()
	for s in $suites; do
		[[ $ncdevmem_suites == *" $s "* ]] && go_suites+=("$s")
	done
	add_run go "${go_suites[@]}"
else
	for tool in $NCDEVMEM; do
		# With another ncdevmem, the iou-zcrx suites would only repeat.
		list=()
		for s in $suites; do
			if [[ $tool == c || $ncdevmem_suites == *" $s "* || -n ${SUITES:-} ]]; then
				list+=("$s")
			fi
		done
		add_run "$tool" "${list[@]}"
	done
fi
((${#runs[@]})) || die "nothing to run"

per_suite=${KSELFTEST_TIMEOUT:-900}
n=0
for r in "${runs[@]}"; do n=$((n + $(tr ',' '\n' <<<"${r#*:}" | wc -l))); done
vm_timeout=$((n * per_suite + 300))

out=$(mktemp "${TMPDIR:-/tmp}/kselftest.XXXXXX")
trap 'rm -f "$out"' EXIT
log "kernel $kernel; runs: ${runs[*]}"
t0=$SECONDS
status=0
"$vmexec" -kernel "$kernel" -timeout "${vm_timeout}s" -- \
	/bin/bash "$repo/selftest/kselftest/guest.sh" "$prep" "$per_suite" "${runs[@]}" |
	tee "$out" || status=$?
vm_s=$((SECONDS - t0))

pass=0 fail=0 skip=0 seen=0
echo "# kselftest summary (ncdevmem, suite: cases; time)"
while read -r _ _ label suite p f s r t; do
	p=${p#pass=} f=${f#fail=} s=${s#skip=} r=${r#retried=} t=${t#time=}
	note=
	((r == 1)) && note="  (passed on its second run)"
	((r == 1 && f > 0)) && note="  (failed twice)"
	printf '# %-3s %-18s %2d passed, %2d failed, %2d skipped  %6s%s\n' \
		"$label" "$suite" "$p" "$f" "$s" "$t" "$note"
	pass=$((pass + p)) fail=$((fail + f)) skip=$((skip + s)) seen=$((seen + 1))
done < <(grep '^# kselftest-result: ' "$out" || true)
if ((seen < n)); then
	echo "# $((n - seen)) suite run(s) reported nothing (vmexec status $status)"
	fail=$((fail + n - seen))
fi
((status == 0)) || echo "# vmexec exited with status $status (a kernel WARN/oops, a timeout or a VM failure: see above)"
echo "# VM $vm_s s, total $((SECONDS - start)) s"
echo "$pass passed, $fail failed, $skip skipped"
((fail == 0 && status == 0))
