#!/usr/bin/env bash
# Prepare what the kernel's devmem/netkit/zcrx selftests need besides the
# kernel: a netkit-capable iproute2, liburing with zcrx, iou-zcrx built
# against it, and the BPF objects the suites load, all from the kernel
# source tree the test kernel was built from.
#
# Usage: selftest/kselftest/prepare.sh KERNEL_DIR
#   KERNEL_DIR is a build.sh output directory (its `version` file names the
#   source the kernel was built from). The last stdout line is the output
#   directory:
#     tree        the kernel source tree (a symlink; read only)
#     iproute2/   Debian's iproute2 from bookworm-backports, unpacked (ip, tc)
#     hw/         iou-zcrx, nk_forward.bpf.o, nk_primary_rx_redirect.bpf.o
#     netlib/     xdp_dummy.bpf.o (nk_qlease.py loads it from net/lib)
#     versions    what went in
#   cached under ${XDG_CACHE_HOME:-~/.cache}/devmem/kselftest-<hash>, the hash
#   covering this script, the package versions, the compiler and the sources.
#
# Debian packages come through a private apt index under
# ${XDG_CACHE_HOME:-~/.cache}/devmem/kselftest-apt (the system's apt
# configuration is left alone), the way build.sh fetches the kernel source:
#   iproute2        bookworm-backports (built for bookworm; has netkit)
#   liburing-dev    the newest version among trixie, forky and sid whose
#                   liburing.h has io_uring_register_ifq (zcrx); linked
#                   statically, so nothing of it is needed at run time
#   linux-libc-dev  the version of the kernel source package (its uAPI
#                   headers, which liburing's and the tests' sources expect)
# clang, bpftool and libbpf-dev (bpf_helpers.h) come from bookworm (make deps).
#
# Environment: XDG_CACHE_HOME, DEVMEM_DEBIAN_MIRROR, DEVMEM_APT_MAX_AGE (as
# build.sh).
set -euo pipefail

RECIPE_VERSION="devmem-kselftest-recipe-2"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/devmem
mirror=${DEVMEM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
start=$SECONDS

log() { printf 'kselftest-prepare: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
sha() { sha256sum | cut -c1-64; }

[[ $# == 1 ]] || die "usage: $0 KERNEL_DIR"
kdir=$(cd "$1" && pwd) || die "no kernel directory $1"
[[ -f $kdir/version ]] || die "$kdir/version is missing (not a build.sh output dir?)"

# ------------------------------------------------------ the source tree --
# build.sh writes "source: deb PKG VERSION" or "source: tree DIR KVER".
read -r _ kind a b < <(grep '^source: ' "$kdir/version") ||
	die "no source line in $kdir/version"
case $kind in
deb)
	srcpkg=$a srcver=$b
	tree=$(echo "$cache/tree/${srcpkg}_${srcver//[:~+]/_}"/linux-source-*)
	;;
tree)
	tree=$a srcver=
	;;
*) die "cannot parse the source line of $kdir/version" ;;
esac
hw=tools/testing/selftests/drivers/net/hw
[[ -d $tree ]] && tree=$(readlink -f "$tree")
[[ -f $tree/$hw/devmem.py ]] ||
	die "the kernel source tree ($kind $a $b) is not at $tree; selftest/kernel/build.sh unpacks it"

for c in gcc clang bpftool dpkg-deb apt-get apt-cache; do
	command -v "$c" >/dev/null || die "$c is missing (make deps installs it)"
done
[[ -f /usr/include/bpf/bpf_helpers.h ]] || die "libbpf-dev is missing (make deps installs it)"
/usr/bin/python3 -c 'import yaml' 2>/dev/null ||
	die "/usr/bin/python3 has no yaml module (make deps installs python3-yaml)"

# --------------------------------------------------------- private apt --
aptdir=$cache/kselftest-apt
apt_opts=(
	-o "Dir::Etc::sourcelist=$aptdir/sources.list"
	-o "Dir::Etc::sourceparts=/dev/null"
	-o "Dir::State::Lists=$aptdir/lists"
	-o "Dir::State::status=/dev/null"
	-o "Dir::Cache=$aptdir/cache"
	-o "Debug::NoLocking=true"
	-o "APT::Get::List-Cleanup=false"
)
[[ $(id -u) == 0 ]] && apt_opts+=(-o "APT::Sandbox::User=root")

apt_refresh() {
	mkdir -p "$aptdir/lists/partial" "$aptdir/cache/archives/partial"
	local s list=
	for s in bookworm-backports trixie trixie-backports forky sid; do
		list+="deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $s main"$'\n'
	done
	[[ -f $aptdir/sources.list && $(cat "$aptdir/sources.list")$'\n' == "$list" ]] ||
		printf '%s' "$list" >"$aptdir/sources.list"
	local stamp=$aptdir/lists/.devmem-updated age=1000000000
	[[ -f $stamp ]] && cmp -s "$stamp" "$aptdir/sources.list" &&
		age=$(($(date +%s) - $(stat -c %Y "$stamp")))
	if ((age > ${DEVMEM_APT_MAX_AGE:-21600})); then
		log "apt-get update (private index under $aptdir)"
		if timeout 300 apt-get "${apt_opts[@]}" -q update >&2; then
			cp "$aptdir/sources.list" "$stamp"
		else
			log "warning: apt index update failed, using what is cached"
		fi
	fi
}

# One apt-cache call (seconds each, on these indexes) answers every lookup,
# kept until the index is refreshed.
madison() {
	local m=$aptdir/madison.txt stamp=$aptdir/lists/.devmem-updated
	if [[ ! -f $m || $stamp -nt $m ]]; then
		apt-cache "${apt_opts[@]}" madison iproute2 liburing-dev linux-libc-dev \
			>"$m.tmp" 2>/dev/null || true
		mv "$m.tmp" "$m"
	fi
	cat "$m"
}

# versions PKG [SUITE_REGEX]: the package's versions in the index, newest first.
versions() {
	madison | awk -F'|' -v pkg="$1" -v re="${2:-.}" '
		{ gsub(/ /, "", $1); gsub(/ /, "", $2) }
		$1 == pkg && $3 ~ re { print $2 }' | sort -Vr -u
}

debs=$cache/kselftest-debs
# fetch PKG VERSION: prints the cached .deb's path, downloading it once.
fetch() {
	local f
	f=$debs/${1}_${2//:/%3a}_amd64.deb
	if [[ ! -f $f ]]; then
		log "downloading $1=$2"
		mkdir -p "$debs"
		local tmp
		tmp=$(mktemp -d "$debs/dl.XXXXXX")
		(cd "$tmp" && apt-get "${apt_opts[@]}" -q download "$1=$2" >&2) ||
			{ rm -rf "$tmp"; return 1; }
		mv "$tmp"/*.deb "$f"
		rmdir "$tmp"
	fi
	echo "$f"
}

# cached PKG: the newest cached .deb's version of PKG (offline fallback).
cached() {
	local f
	for f in "$debs/$1"_*_amd64.deb; do
		[[ -f $f ]] || continue
		f=${f##*/}
		f=${f#"$1"_}
		f=${f%_amd64.deb}
		echo "${f//%3a/:}"
	done | sort -Vr | head -n1
}

apt_refresh

iproute_ver=$(versions iproute2 'bookworm-backports' | head -n1)
[[ -n $iproute_ver ]] || iproute_ver=$(cached iproute2)
[[ -n $iproute_ver ]] || die "no iproute2 in bookworm-backports and none cached"

# liburing: newest first; the first whose header has zcrx wins.
uring_cands=$(versions liburing-dev 'trixie|forky|sid')
[[ -n $uring_cands ]] || uring_cands=$(cached liburing-dev)
[[ -n $uring_cands ]] || die "no liburing-dev found and none cached"

if [[ -n $srcver ]] && versions linux-libc-dev | grep -qxF "$srcver"; then
	libc_dev_ver=$srcver
elif [[ -n $srcver && -f $debs/linux-libc-dev_${srcver//:/%3a}_amd64.deb ]]; then
	libc_dev_ver=$srcver
else
	libc_dev_ver=$(versions linux-libc-dev 'trixie-backports|sid' | head -n1)
	[[ -n $libc_dev_ver ]] || libc_dev_ver=$(cached linux-libc-dev)
	[[ -n $libc_dev_ver ]] || die "no linux-libc-dev found"
	log "linux-libc-dev $srcver not available, using $libc_dev_ver"
fi

srcs=("$tree/$hw/iou-zcrx.c" "$tree/$hw/nk_forward.bpf.c"
	"$tree/$hw/nk_primary_rx_redirect.bpf.c"
	"$tree/tools/testing/selftests/net/lib/xdp_dummy.bpf.c")

# The newest zcrx-capable liburing decides the hash, so pick it first.
work=$(mktemp -d "${TMPDIR:-/tmp}/kselftest-prepare.XXXXXX")
trap 'rm -rf "$work"' EXIT
uring_ver=
for v in $uring_cands; do
	deb=$(fetch liburing-dev "$v") || continue
	verdict=$deb.zcrx # "yes" or "no", so that a cached run unpacks nothing
	if [[ ! -f $verdict ]]; then
		rm -rf "$work/uring" && mkdir -p "$work/uring"
		dpkg-deb -x "$deb" "$work/uring"
		if grep -qs 'io_uring_register_ifq' "$work/uring/usr/include/liburing.h"; then
			echo yes >"$verdict"
		else
			echo no >"$verdict"
		fi
	fi
	if [[ $(cat "$verdict") == yes ]]; then
		uring_ver=$v
		break
	fi
	log "liburing-dev $v has no zcrx (io_uring_register_ifq)"
done
[[ -n $uring_ver ]] || die "no liburing-dev with zcrx found"

hash=$({
	echo "$RECIPE_VERSION"
	sha <"$0"
	echo "iproute2 $iproute_ver liburing-dev $uring_ver linux-libc-dev $libc_dev_ver"
	echo "tree $tree"
	cat "${srcs[@]}" | sha
	gcc --version | head -n1
	clang --version | head -n1
	/usr/bin/python3 --version
	dpkg-query -W -f='${Version}\n' libbpf-dev 2>/dev/null || true
} | sha)
out=$cache/kselftest-$hash

if [[ -f $out/versions && -x $out/hw/iou-zcrx ]]; then
	log "cached: $out"
	echo "$out"
	exit 0
fi

log "building into $out"
tmp=$out.tmp.$$
rm -rf "$tmp"
mkdir -p "$tmp/hw" "$tmp/netlib" "$work/hdr"

deb=$(fetch iproute2 "$iproute_ver")
dpkg-deb -x "$deb" "$tmp/iproute2"
# ip, tc and their data files; the rest (docs, man pages) goes. path/ holds
# relative links to the two binaries, to put first in PATH.
rm -rf "$tmp/iproute2/usr/share/doc" "$tmp/iproute2/usr/share/man"
mkdir -p "$tmp/iproute2/path"
for t in ip tc; do
	bin=$(cd "$tmp/iproute2" && find . -path ./path -prune -o -type f -name "$t" -print | sort | head -n1)
	[[ -n $bin ]] || die "iproute2 $iproute_ver has no $t"
	ln -sfn "../${bin#./}" "$tmp/iproute2/path/$t"
done
"$tmp/iproute2/path/ip" -V >&2 || die "iproute2 $iproute_ver does not run here (check its Depends against this system)"
help=$("$tmp/iproute2/path/ip" link help 2>&1 || true)
grep -qw netkit <<<"$help" ||
	die "iproute2 $iproute_ver has no netkit link type"

deb=$(fetch linux-libc-dev "$libc_dev_ver")
dpkg-deb -x "$deb" "$work/hdr"
khdr=$work/hdr/usr/include
# The uAPI of the kernel the tests run on, before glibc's older copy.
kinc=(-isystem "$khdr" -isystem "$khdr/x86_64-linux-gnu")

rm -rf "$work/uring" && mkdir -p "$work/uring"
dpkg-deb -x "$(fetch liburing-dev "$uring_ver")" "$work/uring"
log "building iou-zcrx against liburing $uring_ver (static)"
gcc -O2 -Wall -Wno-unused-variable "${kinc[@]}" -I"$work/uring/usr/include" \
	-o "$tmp/hw/iou-zcrx" "$tree/$hw/iou-zcrx.c" \
	"$work/uring/usr/lib/x86_64-linux-gnu/liburing.a" >&2

# As tools/testing/selftests/net/bpf.mk: clang --target=bpf, the system's
# include dirs appended (asm/ etc.), bpf_helpers.h from libbpf-dev.
mapfile -t sysinc < <(clang -v -E - </dev/null 2>&1 |
	sed -n '/<...> search starts here:/,/End of search list./{ s| \(/.*\)|-idirafter\n\1|p }')
bpfcc() {
	log "clang --target=bpf $(basename "$1")"
	clang -O2 -g --target=bpf -I"$khdr" "${sysinc[@]}" -c "$1" -o "$2" >&2
}
bpfcc "$tree/$hw/nk_forward.bpf.c" "$tmp/hw/nk_forward.bpf.o"
bpfcc "$tree/$hw/nk_primary_rx_redirect.bpf.c" "$tmp/hw/nk_primary_rx_redirect.bpf.o"
bpfcc "$tree/tools/testing/selftests/net/lib/xdp_dummy.bpf.c" "$tmp/netlib/xdp_dummy.bpf.o"

# The libraries' bytecode, so that the VM (TCG) does not compile them for
# every suite; guest.sh points PYTHONPYCACHEPREFIX here (the tree itself is
# not written).
PYTHONPYCACHEPREFIX=$tmp/pycache /usr/bin/python3 -m compileall -q \
	"$tree/tools/net/ynl/pyynl" "$tree/tools/testing/selftests/net/lib/py" \
	"$tree/tools/testing/selftests/drivers/net/lib/py" \
	"$tree/tools/testing/selftests/drivers/net/hw/lib/py" \
	"$tree/$hw/devmem_lib.py" >&2 || die "compileall"

ln -sfn "$tree" "$tmp/tree"
{
	echo "recipe: $RECIPE_VERSION"
	echo "kernel: $kdir"
	echo "tree: $tree"
	echo "iproute2: $iproute_ver"
	echo "liburing-dev: $uring_ver"
	echo "linux-libc-dev: $libc_dev_ver"
	echo "gcc: $(gcc --version | head -n1)"
	echo "clang: $(clang --version | head -n1)"
	echo "bpftool: $(bpftool version 2>/dev/null | head -n1)"
	echo "hash: $hash"
	echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$tmp/versions"
rm -rf "$out"
mv -T "$tmp" "$out"
log "done in $((SECONDS - start)) s: $out"
echo "$out"
