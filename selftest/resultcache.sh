#!/usr/bin/env bash
# Usage: selftest/resultcache.sh NAME COMMAND [ARG...]
#
# Runs COMMAND unless it already passed with exactly these inputs, the way
# `go test` caches a package's result: the key covers the content of every
# file of the checkout (tracked and untracked, .gitignore'd ones excepted),
# the Go version, the machine and RESULT_KEY (the Makefile puts the kernel
# directories there, whose names are hashes of their own inputs). A change
# to any of them runs COMMAND again. A pass is recorded, with its log, as
# ${XDG_CACHE_HOME:-~/.cache}/devmem/results/NAME-KEY; a failure is not.
#
# DEVMEM_RERUN=1 (what .ci/run sets) runs COMMAND even then (and records
# its pass like any other). Under make -n nothing is recorded.
set -euo pipefail

name=$1
shift
cache=${XDG_CACHE_HOME:-$HOME/.cache}/devmem/results
root=$(git rev-parse --show-toplevel 2>/dev/null || true)

# make -n runs this script too (its line runs $(MAKE)), and the COMMAND it
# runs only prints: that is no pass to record. make puts its one-letter
# flags first in MAKEFLAGS ("n", "kn -- X=1"; " --..." when there are none).
makeflags=${MAKEFLAGS:-}
if [[ -z $root || (${makeflags%% *} != -* && ${makeflags%% *} == *n*) ]]; then
	exec "$@"
fi

key=$({
	echo "$name"
	echo "${RESULT_KEY:-}"
	go version 2>/dev/null || true
	uname -m
	cd "$root"
	git ls-files -z -c -o --exclude-standard |
		sort -z | xargs -0 -r sha256sum 2>/dev/null || true
} | sha256sum | cut -c1-32)
stamp=$cache/$name-$key

if [[ -f $stamp/passed && ${DEVMEM_RERUN:-} != 1 ]]; then
	echo "$name: passed with these inputs at $(cat "$stamp/passed") (log: $stamp/log); DEVMEM_RERUN=1 runs it again"
	exit 0
fi

mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.run-$name.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$@" 2>&1 | tee "$tmp/log"
date -u '+%Y-%m-%d %H:%M:%S UTC' >"$tmp/passed"
rm -rf "$stamp"
mv "$tmp" "$stamp"
trap - EXIT
# Keep the newest 20 results per name.
ls -1dt "$cache/$name"-* 2>/dev/null | tail -n +21 | xargs -r rm -rf
