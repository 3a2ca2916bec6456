#!/usr/bin/env bash
# Runs inside the VM (selftest/kselftest/run.sh boots it with vmexec): the
# kernel's drivers/net/hw selftests, unmodified, from the kernel source tree,
# against vmexec's topology (eth0 here, its link partner in netns peer).
#
# Usage: guest.sh PREP_DIR TIMEOUT_S RUN...
#   PREP_DIR   prepare.sh's output (tree, iproute2, iou-zcrx, BPF objects)
#   TIMEOUT_S  per-suite time limit
#   RUN        LABEL=NCDEVMEM_BINARY:SUITE[,SUITE...], e.g.
#              c=/cache/kernel-x/ncdevmem:devmem.py,nk_devmem.py
#
# Output: KTAP (TAP version 13, one test per suite run, each suite's own
# KTAP indented as kselftest's runner does), then one line per suite run:
#   # kselftest-result: LABEL SUITE pass=N fail=N skip=N retried=0|1 time=Ns
# which run.sh sums up. The VM's root is a tmpfs overlay, so the binaries
# copied next to the test scripts below never reach the host's tree.
set -uo pipefail

prep=$1 timeout_s=$2
shift 2
tree=$(readlink -f "$prep/tree")
ksft=$tree/tools/testing/selftests
hw=$ksft/drivers/net/hw

die() { echo "Bail out! kselftest guest: $*"; exit 1; }
[[ -f $hw/devmem.py ]] || die "no kernel selftests at $hw"
: "${DEVMEM_IFNAME:?vmexec topology missing}"

# The tests find their binaries and BPF objects next to themselves.
cp "$prep/hw/iou-zcrx" "$prep/hw/"*.bpf.o "$hw/" || die "copying into $hw"
cp "$prep/netlib/xdp_dummy.bpf.o" "$ksft/net/lib/" || die "copying into net/lib"

# iproute2 with netkit first in PATH, then only the system's directories:
# the scripts' "#!/usr/bin/env python3" must find Debian's python3 (with
# python3-yaml, as on a fresh bookworm), not a shim of the caller's PATH (a
# pyenv shim took 15-20 s per start under TCG; /usr/bin/python3 takes 1-5 s).
export PATH=$prep/iproute2/path:/usr/sbin:/usr/bin:/sbin:/bin
# Bytecode of the tests' libraries, compiled on the host by prepare.sh.
export PYTHONPYCACHEPREFIX=$prep/pycache
[[ -d /usr/share/iproute2 ]] || cp -r "$prep/iproute2/usr/share/iproute2" /usr/share/
# tc loads BPF objects through libbpf, which wants bpffs.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf || die "mount bpffs"

# drivers/net/README.rst: the DUT must be reachable at LOCAL_PREFIX_V6 from
# the endpoint. The netkit suites put their container at <prefix>2:2.
prefix6=2001:db8:2::
ip -n "$DEVMEM_PEER_NETNS" -6 route add "$prefix6/64" via "$DEVMEM_ADDR6" ||
	die "route to LOCAL_PREFIX_V6 in $DEVMEM_PEER_NETNS"

# The suites take ports from rand_port(), a bind(0) in the init netns, and
# their RX senders in the peer bind the same port as source, so the peer is
# the active closer and keeps TIME_WAIT sockets on those ports. A later case
# that draws such a port again cannot listen on it there (socat without
# reuseaddr: "bind ... Address already in use", seen once in
# userns_devmem.check_userns_tx_chunks). The endpoint keeps no TIME_WAIT.
ip netns exec "$DEVMEM_PEER_NETNS" sysctl -qw net.ipv4.tcp_max_tw_buckets=0 ||
	die "tcp_max_tw_buckets in $DEVMEM_PEER_NETNS"

# net.config next to the tests (env.py reads it from the test's directory;
# its parser takes values verbatim, so no quotes).
cat >"$hw/net.config" <<EOF
NETIF=$DEVMEM_IFNAME
LOCAL_V4=$DEVMEM_ADDR4
REMOTE_V4=$DEVMEM_PEER_ADDR4
LOCAL_V6=$DEVMEM_ADDR6
REMOTE_V6=$DEVMEM_PEER_ADDR6
LOCAL_PREFIX_V6=$prefix6/64
REMOTE_TYPE=netns
REMOTE_ARGS=$DEVMEM_PEER_NETNS
EOF

total=0
for run in "$@"; do
	suites=${run#*:}
	total=$((total + $(tr ',' '\n' <<<"$suites" | grep -c .)))
done
echo "TAP version 13"
echo "1..$total"
sed 's/^/# net.config: /' "$hw/net.config"
echo "# tools: $(ip -V), $(bpftool version | head -n1), $(clang --version 2>/dev/null | head -n1)"

n=0
results=()
for run in "$@"; do
	label=${run%%=*}
	rest=${run#*=}
	bin=${rest%%:*}
	suites=${rest#*:}
	[[ -x $bin ]] || die "ncdevmem $label: $bin is not executable"
	cp "$bin" "$hw/ncdevmem" || die "installing $bin as $hw/ncdevmem"
	for suite in ${suites//,/ }; do
		n=$((n + 1))
		name="selftests: drivers/net/hw: $suite"
		echo "# $name (ncdevmem: $label, $bin)"
		log=/tmp/kselftest-$label-$suite.log
		t0=$(date +%s)
		# The suite's KTAP, indented as kselftest's runner does, as it
		# comes. A suite that fails runs once more (retries=0 turns that
		# off), and both runs are in the output: nk_qlease.py's
		# test_destroy fails now and then under TCG when iou-zcrx's
		# completion queue fills before it reaps it (recvzc -ENOSPC, one
		# CQE per MSS frag), see selftest/README.md.
		retried=0
		for attempt in 1 2; do
			(cd "$hw" && PYTHONUNBUFFERED=1 timeout --kill-after=10 "$timeout_s" "./$suite") 2>&1 |
				tee "$log" | sed -u 's/^/# /'
			rc=${PIPESTATUS[0]}
			[[ $rc == 0 || $rc == 4 || $attempt == 2 || ${retries:-1} == 0 ]] && break
			echo "# $name failed (exit=$rc): running it once more"
			retried=1
		done
		dt=$(($(date +%s) - t0))
		totals=$(grep -E '^# Totals: ' "$log" | tail -n1)
		pass=0 fail=0 skip=0
		if [[ -n $totals ]]; then
			g() { sed -nE "s/.*[ ]$1:([0-9]+).*/\1/p" <<<"$totals"; }
			pass=$(($(g pass) + $(g xfail)))
			fail=$(($(g fail) + $(g xpass) + $(g error)))
			skip=$(g skip)
		fi
		case $rc in
		0) echo "ok $n $name" ;;
		4) echo "ok $n $name # SKIP"
		   # A suite skipped as a whole (its environment) prints no totals.
		   [[ -n $totals ]] || skip=1 ;;
		124 | 137) echo "not ok $n $name # TIMEOUT $timeout_s seconds"; fail=$((fail + 1)) ;;
		*) echo "not ok $n $name # exit=$rc"
		   # A suite that died without its totals still failed.
		   [[ -n $totals && $fail -gt 0 ]] || fail=$((fail + 1)) ;;
		esac
		results+=("# kselftest-result: $label $suite pass=$pass fail=$fail skip=$skip retried=$retried time=${dt}s")
	done
done
printf '%s\n' "${results[@]}"
