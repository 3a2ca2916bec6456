#!/usr/bin/env bash
# Build the devmem test kernel: Linux 7.x from Debian's linux-source package,
# tinyconfig + config.fragment, netdevsim patched into a devmem-capable NIC
# (the patch series in patches/, listed in patches/series), plus the
# kernel's own C ncdevmem selftest.
#
# Usage: selftest/kernel/build.sh
#   The last line on stdout is the output directory, holding
#     bzImage  ncdevmem  config  version
#   All progress goes to stderr. A cached result is returned in seconds.
#
# Environment:
#   DEVMEM_KERNEL_FLAVOUR  "debug": also apply config.debug (KASAN, lockdep,
#                        DEBUG_NET, page pool debugging), in its own build
#                        dir, cached as kernel-debug-<hash>
#   XDG_CACHE_HOME       cache root (default ~/.cache); everything lives in
#                        $XDG_CACHE_HOME/devmem/
#   KERNEL_SRC=DIR       build this kernel tree instead of the Debian package
#                        (the series is applied unless already applied)
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
RECIPE_VERSION="devmem-kernel-recipe-2"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fragment=$here/config.fragment
patchdir=$here/patches
seriesfile=$patchdir/series
flavour=${DEVMEM_KERNEL_FLAVOUR:-}
debugfrag=$here/config.debug
cache=${XDG_CACHE_HOME:-$HOME/.cache}/devmem
mirror=${DEVMEM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=${DEVMEM_DEBIAN_SUITE:-trixie-backports}
jobs=${DEVMEM_JOBS:-$(nproc)}
start=$SECONDS

log() { printf 'build.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ ${1:-} == -h || ${1:-} == --help ]] && { sed -n '2,28p' "$0" >&2; exit 0; }
[[ -f $fragment ]] || die "missing $fragment"
[[ -f $seriesfile ]] || die "missing $seriesfile"
case $flavour in
"") fragments=("$fragment") ;;
debug)
	[[ -f $debugfrag ]] || die "missing $debugfrag"
	fragments=("$fragment" "$debugfrag")
	;;
*) die "DEVMEM_KERNEL_FLAVOUR=$flavour: only \"debug\" (or empty) is known" ;;
esac
mkdir -p "$cache"

# The series, in order: one patch file name per line, # comments.
patches=()
while IFS= read -r line; do
	line=${line%%#*}
	line=${line//[[:space:]]/}
	[[ -n $line ]] || continue
	[[ -f $patchdir/$line ]] || die "series names $line, which is not in $patchdir"
	patches+=("$patchdir/$line")
done <"$seriesfile"
((${#patches[@]})) || die "$seriesfile lists no patches"

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
# The applied series is recorded in the tree as .devmem-series/ (a copy of
# the series file and its patches). A tree patched by an older build.sh has
# .devmem-patch (the single netdevsim-devmem.patch) instead.

# Files a set of patches touch (their +++ names, a/ b/ prefixes dropped).
patch_files() {
	sed -n 's|^+++ b/\([^[:space:]]*\).*|\1|p' "$@" | sort -u
}

# series_applied TREE PATCH...: true when TREE has exactly these patches
# applied on top of what they were made against, checked by reverting them,
# last first, in a scratch copy of the files they touch.
series_applied() {
	local tree=$1 tmp f i ok=0
	shift
	tmp=$(mktemp -d)
	while IFS= read -r f; do
		[[ -e $tree/$f ]] || continue
		mkdir -p "$tmp/${f%/*}"
		cp "$tree/$f" "$tmp/$f"
	done < <(patch_files "$@")
	for ((i = $# ; i >= 1; i--)); do
		patch -d "$tmp" -p1 -R -s -f <"${!i}" >/dev/null 2>&1 || { ok=1; break; }
	done
	rm -rf "$tmp"
	return $ok
}

# revert_series TREE PATCH...: revert for real, last patch first.
revert_series() {
	local tree=$1 i
	shift
	for ((i = $# ; i >= 1; i--)); do
		patch -d "$tree" -p1 -R -s -f <"${!i}" >&2 || return 1
	done
}

apply_series() {
	local tree=$1 p
	for p in "${patches[@]}"; do
		log "applying $(basename "$p")"
		patch -d "$tree" -p1 -N -s -f <"$p" >&2 ||
			die "$(basename "$p") does not apply to $tree"
	done
}

record_series() {
	local stamp=$1/.devmem-series
	rm -rf "$stamp" "$1/.devmem-patch"
	mkdir -p "$stamp"
	cp "$seriesfile" "${patches[@]}" "$stamp/"
}

# The patches recorded in a stamp dir, in order.
stamp_patches() {
	local line
	while IFS= read -r line; do
		line=${line%%#*}
		line=${line//[[:space:]]/}
		[[ -n $line ]] && echo "$1/$line"
	done <"$1/series"
}

# Bring the tree $1 to pristine + current series. Returns 1 if the tree must
# be re-extracted.
sync_series() {
	local tree=$1 stamp=$1/.devmem-series old=()
	if [[ -d $stamp ]] && cmp -s "$stamp/series" "$seriesfile"; then
		local same=1 p
		for p in "${patches[@]}"; do
			cmp -s "$p" "$stamp/$(basename "$p")" || same=0
		done
		((same)) && return 0
	fi
	# Already applied (a tree patched by hand, by git, or by a build.sh
	# killed before it recorded): just record it.
	if series_applied "$tree" "${patches[@]}"; then
		log "series already applied to $tree, recording it"
		record_series "$tree"
		return 0
	fi
	if [[ -d $stamp ]]; then
		mapfile -t old < <(stamp_patches "$stamp")
		log "reverting the previously applied series (${#old[@]} patches)"
		revert_series "$tree" "${old[@]}" || return 1
		rm -rf "$stamp"
	elif [[ -f $tree/.devmem-patch ]]; then
		log "reverting the previously applied netdevsim-devmem.patch"
		revert_series "$tree" "$tree/.devmem-patch" || return 1
		rm -f "$tree/.devmem-patch"
	fi
	apply_series "$tree"
	record_series "$tree"
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
	for f in "${fragments[@]}"; do sha <"$f"; done
	sha <"$seriesfile"
	for p in "${patches[@]}"; do sha <"$p"; done
} | sha)
out=$cache/kernel${flavour:+-$flavour}-$hash

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
	if ! sync_series "$tree"; then
		log "cached tree is inconsistent, unpacking again"
		rm -rf "$bdir" "$bdir-debug"
		extract_tree "$deb" "$root"
		tree=$(echo "$root"/linux-source-*)
		sync_series "$tree"
	fi
else
	if series_applied "$tree" "${patches[@]}"; then
		log "series already applied to $tree"
	else
		apply_series "$tree"
	fi
fi

[[ -n $flavour ]] && bdir=$bdir-$flavour
mkdir -p "$bdir"
kmake() { nice make -s -C "$tree" O="$bdir" "$@" >&2; }

log "configuring (tinyconfig + ${fragments[*]##*/}) in $bdir"
kmake tinyconfig
"$tree/scripts/kconfig/merge_config.sh" -m -O "$bdir" "$bdir/.config" \
	"${fragments[@]}" >/dev/null
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
done < <(cat "${fragments[@]}")
if ((${#missing[@]})); then
	for m in "${missing[@]}"; do
		got=$(grep -E "^(# )?${m%%=*}[= ]" "$bdir/.config" || echo "absent")
		log "config option did not take: $m (got: $got)"
	done
	die "${#missing[@]} config fragment option(s) missing from .config"
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

tmp=$(mktemp -d "$out.tmp.XXXXXX")
cp "$bdir/arch/x86/boot/bzImage" "$tmp/bzImage"
cp "$sel/ncdevmem" "$tmp/ncdevmem"
cp "$bdir/.config" "$tmp/config"
{
	echo "source: $srcid"
	echo "kernelrelease: $(make -s -C "$tree" O="$bdir" kernelrelease 2>/dev/null)"
	echo "recipe: $RECIPE_VERSION"
	echo "flavour: ${flavour:-default}"
	for p in "${patches[@]}"; do
		echo "patch: $(basename "$p") $(sha <"$p")"
	done
	for f in "${fragments[@]}"; do
		echo "fragment: $(basename "$f") $(sha <"$f")"
	done
	echo "hash: $hash"
	echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$tmp/version"
chmod 0755 "$tmp"
rm -rf "$out"
mv -T "$tmp" "$out"
log "done in $((SECONDS - start)) s: $out"
echo "$out"
