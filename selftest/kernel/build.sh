#!/usr/bin/env bash
# Build the devmem test kernel: Linux 7.x from Debian's linux-source package,
# tinyconfig + config.fragment, netdevsim patched into a devmem-capable NIC
# (netdevsim-devmem.patch), plus the kernel's own C ncdevmem selftest.
#
# Usage: selftest/kernel/build.sh
#   The last line on stdout is the output directory, holding
#     bzImage  ncdevmem  config  version
#   All progress goes to stderr. A cached result is returned in seconds.
#
# Environment:
#   XDG_CACHE_HOME       cache root (default ~/.cache); everything lives in
#                        $XDG_CACHE_HOME/devmem/
#   KERNEL_SRC=DIR       build this kernel tree instead of the Debian package
#                        (the patch is applied unless already applied)
#   DEVMEM_DEBIAN_MIRROR Debian mirror (default http://deb.debian.org/debian)
#   DEVMEM_DEBIAN_SUITE  suite holding linux-source-7.x (trixie-backports)
#   DEVMEM_KERNEL_PKG    source package to use (default: linux-source-7.3 if
#                        available, else the highest linux-source-7.N)
#   DEVMEM_APT_MAX_AGE   seconds before the private apt index is refreshed
#                        (default 21600)
#   DEVMEM_JOBS          make -j (default nproc)
set -euo pipefail
# Run from make (make test), MAKELEVEL>0 makes the selftests' lib.mk leave
# OUTPUT empty, so ncdevmem would be built as /ncdevmem: start afresh.
unset MAKELEVEL MAKEFLAGS MFLAGS

# Bump whenever this script changes how the kernel is built.
RECIPE_VERSION="devmem-kernel-recipe-1"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fragment=$here/config.fragment
patchfile=$here/netdevsim-devmem.patch
cache=${XDG_CACHE_HOME:-$HOME/.cache}/devmem
mirror=${DEVMEM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=${DEVMEM_DEBIAN_SUITE:-trixie-backports}
jobs=${DEVMEM_JOBS:-$(nproc)}
start=$SECONDS

log() { printf 'build.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ ${1:-} == -h || ${1:-} == --help ]] && { sed -n '2,24p' "$0" >&2; exit 0; }
[[ -f $fragment ]] || die "missing $fragment"
[[ -f $patchfile ]] || die "missing $patchfile"
mkdir -p "$cache"

sha() { sha256sum | cut -c1-64; }

# ---------------------------------------------------------------- tools --
ensure_tools() {
	local missing=() c p
	for c in make gcc flex bison bc cpio perl xz tar patch python3 \
		dpkg-deb apt-get flock; do
		command -v "$c" >/dev/null 2>&1 || missing+=("$c")
	done
	[[ -e /usr/include/libelf.h || -e /usr/include/gelf.h ]] ||
		missing+=(libelf-dev)
	[[ -e /usr/include/stdio.h ]] || missing+=(libc6-dev)
	/usr/bin/python3 -c 'import yaml, jsonschema' >/dev/null 2>&1 ||
		missing+=(python3-yaml)
	((${#missing[@]})) || return 0

	if [[ $(id -u) != 0 || ! -f /etc/debian_version ]]; then
		die "missing build tools: ${missing[*]} (install them, e.g. apt-get install flex bison libelf-dev bc cpio make gcc libc6-dev python3-yaml python3-jsonschema xz-utils patch)"
	fi
	local pkgs=(make gcc libc6-dev flex bison bc cpio perl xz-utils tar
		    patch python3 python3-yaml python3-jsonschema libelf-dev
		    dpkg apt util-linux)
	local need=()
	for p in "${pkgs[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
			grep -q 'install ok installed' || need+=("$p")
	done
	log "installing build tools: ${need[*]}"
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
		--no-install-recommends "${need[@]}" >&2; then
		apt-get update -q >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
			--no-install-recommends "${need[@]}" >&2
	fi
}

# ------------------------------------------------------- private apt ----
aptdir=$cache/apt
apt_opts=(
	-o "Dir::Etc::sourcelist=$aptdir/sources.list"
	-o "Dir::Etc::sourceparts=/dev/null"
	-o "Dir::State::Lists=$aptdir/lists"
	-o "Dir::Cache=$aptdir/cache"
	-o "Debug::NoLocking=true"
	-o "APT::Get::List-Cleanup=false"
)
[[ $(id -u) == 0 ]] && apt_opts+=(-o "APT::Sandbox::User=root")

apt_refresh() {
	mkdir -p "$aptdir/lists/partial" "$aptdir/cache/archives/partial"
	local line="deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main"
	[[ -f $aptdir/sources.list && $(cat "$aptdir/sources.list") == "$line" ]] ||
		printf '%s\n' "$line" >"$aptdir/sources.list"
	local stamp=$aptdir/lists/.devmem-updated age=1000000000
	[[ -f $stamp && $(cat "$stamp") == "$line" ]] &&
		age=$(($(date +%s) - $(stat -c %Y "$stamp")))
	if ((age > ${DEVMEM_APT_MAX_AGE:-21600})); then
		log "apt-get update ($suite, private index under $aptdir)"
		if timeout 120 apt-get "${apt_opts[@]}" -q update >&2; then
			printf '%s\n' "$line" >"$stamp"
		else
			log "warning: apt index update failed, using what is cached"
		fi
	fi
}

# Prints "PKG VERSION" from the private index, or nothing.
apt_pick() {
	local names pkg ver
	names=$(apt-cache "${apt_opts[@]}" pkgnames linux-source-7. 2>/dev/null |
		grep -E '^linux-source-7\.[0-9]+$' | sort -V) || true
	[[ -n $names ]] || return 0
	if [[ -n ${DEVMEM_KERNEL_PKG:-} ]]; then
		pkg=$DEVMEM_KERNEL_PKG
	elif grep -qx linux-source-7.3 <<<"$names"; then
		pkg=linux-source-7.3
	else
		pkg=$(tail -n1 <<<"$names")
	fi
	ver=$(apt-cache "${apt_opts[@]}" show "$pkg" 2>/dev/null |
		sed -n 's/^Version: //p' | sort -V | tail -n1) || true
	[[ -n $ver ]] && echo "$pkg $ver"
}

# Prints "PKG VERSION" of the best cached .deb, or nothing.
cached_pick() {
	local f best=
	for f in "$cache"/src/linux-source-7.*_*_all.deb; do
		[[ -f $f ]] || continue
		f=${f##*/}
		if [[ -n ${DEVMEM_KERNEL_PKG:-} && ${f%%_*} != "$DEVMEM_KERNEL_PKG" ]]; then
			continue
		fi
		best+="$f"$'\n'
	done
	[[ -n $best ]] || return 0
	f=$(grep '^linux-source-7\.3_' <<<"$best" | sort -V | tail -n1) || true
	[[ -n $f ]] || f=$(sort -V <<<"$best" | sed '/^$/d' | tail -n1)
	f=${f%_all.deb}
	echo "${f%%_*} ${f#*_}"
}

debfile() { echo "$cache/src/${1}_${2//:/%3a}_all.deb"; }

fetch_deb() {
	local pkg=$1 ver=$2 deb tmp
	deb=$(debfile "$pkg" "$ver")
	[[ -f $deb ]] && return 0
	log "downloading $pkg=$ver"
	mkdir -p "$cache/src"
	tmp=$(mktemp -d "$cache/src/dl.XXXXXX")
	(cd "$tmp" && apt-get "${apt_opts[@]}" -q download "$pkg=$ver" >&2)
	mv "$tmp"/*.deb "$deb"
	rmdir "$tmp"
}

# --------------------------------------------------------------- patch --
patch_applied() { patch -d "$1" -p1 -R -s -f --dry-run <"$2" >/dev/null 2>&1; }

# Bring the cached tree $1 to pristine + current patch, tracking the applied
# patch in $1/.devmem-patch. Returns 1 if the tree must be re-extracted.
sync_patch() {
	local tree=$1 stamp=$1/.devmem-patch
	if [[ -f $stamp ]]; then
		cmp -s "$stamp" "$patchfile" && return 0
		log "reverting the previously applied patch"
		patch -d "$tree" -p1 -R -s -f <"$stamp" >&2 || return 1
		rm -f "$stamp"
	fi
	log "applying $(basename "$patchfile")"
	if ! patch -d "$tree" -p1 -N -s -f <"$patchfile" >&2; then
		die "netdevsim-devmem.patch does not apply to $tree"
	fi
	cp "$patchfile" "$stamp"
}

extract_tree() {
	local deb=$1 root=$2 tmp
	log "unpacking $(basename "$deb")"
	rm -rf "$root"
	tmp=$root.tmp
	rm -rf "$tmp"
	mkdir -p "$tmp"
	dpkg-deb --fsys-tarfile "$deb" |
		tar -xO --wildcards './usr/src/linux-source-*.tar.xz' |
		tar -xJ -C "$tmp"
	mv "$tmp" "$root"
}

# --------------------------------------------------------------- main ---
ensure_tools

if [[ -n ${KERNEL_SRC:-} ]]; then
	tree=$(cd "$KERNEL_SRC" && pwd)
	[[ -f $tree/Makefile && -d $tree/drivers/net/netdevsim ]] ||
		die "KERNEL_SRC=$KERNEL_SRC is not a kernel tree"
	kver=$(make -s -C "$tree" kernelversion 2>/dev/null | tail -n1)
	srcid="tree $tree $kver"
	bdir=$cache/build/src-$(printf '%s' "$tree" | sha | cut -c1-16)
else
	apt_refresh
	pick=$(apt_pick)
	if [[ -z $pick ]]; then
		pick=$(cached_pick)
		[[ -n $pick ]] || die "cannot resolve linux-source-7.x from $mirror $suite and nothing is cached"
		log "using cached $pick"
	fi
	read -r pkg ver <<<"$pick"
	srcid="deb $pkg $ver"
fi

hash=$({
	echo "$RECIPE_VERSION"
	echo "$srcid"
	sha <"$fragment"
	sha <"$patchfile"
} | sha)
out=$cache/kernel-$hash

if [[ -f $out/bzImage && -f $out/ncdevmem ]]; then
	log "cached: $out"
	echo "$out"
	exit 0
fi

exec 9>"$cache/build.lock"
log "waiting for the build lock"
flock 9
if [[ -f $out/bzImage && -f $out/ncdevmem ]]; then
	echo "$out"
	exit 0
fi

if [[ -z ${KERNEL_SRC:-} ]]; then
	fetch_deb "$pkg" "$ver"
	deb=$(debfile "$pkg" "$ver")
	key=${pkg}_${ver//[:~+]/_}
	root=$cache/tree/$key
	bdir=$cache/build/$key
	tree=$(echo "$root"/linux-source-* 2>/dev/null)
	if [[ ! -f $tree/Makefile ]]; then
		rm -rf "$bdir"
		extract_tree "$deb" "$root"
		tree=$(echo "$root"/linux-source-*)
	fi
	if ! sync_patch "$tree"; then
		log "cached tree is inconsistent, unpacking again"
		rm -rf "$bdir"
		extract_tree "$deb" "$root"
		tree=$(echo "$root"/linux-source-*)
		sync_patch "$tree"
	fi
else
	if patch_applied "$tree" "$patchfile"; then
		log "patch already applied to $tree"
	else
		log "applying $(basename "$patchfile") to $tree"
		patch -d "$tree" -p1 -N -s -f <"$patchfile" >&2 ||
			die "patch does not apply to $tree"
	fi
fi

mkdir -p "$bdir"
kmake() { nice make -s -C "$tree" O="$bdir" "$@" >&2; }

log "configuring (tinyconfig + config.fragment) in $bdir"
kmake tinyconfig
"$tree/scripts/kconfig/merge_config.sh" -m -O "$bdir" "$bdir/.config" \
	"$fragment" >/dev/null
kmake olddefconfig

missing=()
while IFS= read -r line; do
	line=${line%%#*}
	line=${line//[[:space:]]/}
	[[ $line == CONFIG_*=* ]] || continue
	name=${line%%=*}
	val=${line#*=}
	if [[ $val == n ]]; then
		grep -q "^$name=" "$bdir/.config" && missing+=("$line")
	else
		grep -qx -- "$line" "$bdir/.config" || missing+=("$line")
	fi
done <"$fragment"
if ((${#missing[@]})); then
	for m in "${missing[@]}"; do
		got=$(grep -E "^(# )?${m%%=*}[= ]" "$bdir/.config" || echo "absent")
		log "config option did not take: $m (got: $got)"
	done
	die "${#missing[@]} config.fragment option(s) missing from .config"
fi

log "building bzImage (make -j$jobs)"
t0=$SECONDS
kmake -j"$jobs" bzImage
log "bzImage built in $((SECONDS - t0)) s"

log "building ncdevmem"
kmake headers
sel=$tree/tools/testing/selftests/drivers/net/hw
PATH=/usr/bin:$PATH nice make -s -C "$sel" \
	KHDR_INCLUDES="-isystem $bdir/usr/include" "$sel/ncdevmem" >&2

tmp=$(mktemp -d "$cache/kernel-$hash.tmp.XXXXXX")
cp "$bdir/arch/x86/boot/bzImage" "$tmp/bzImage"
cp "$sel/ncdevmem" "$tmp/ncdevmem"
cp "$bdir/.config" "$tmp/config"
{
	echo "source: $srcid"
	echo "kernelrelease: $(make -s -C "$tree" O="$bdir" kernelrelease 2>/dev/null)"
	echo "recipe: $RECIPE_VERSION"
	echo "patch-sha256: $(sha <"$patchfile")"
	echo "fragment-sha256: $(sha <"$fragment")"
	echo "hash: $hash"
	echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$tmp/version"
chmod 0755 "$tmp"
rm -rf "$out"
mv -T "$tmp" "$out"
log "done in $((SECONDS - start)) s: $out"
echo "$out"
