#!/bin/bash
# Installs what the lab needs on a Debian machine and prepares a cached guest
# kernel plus a base initramfs. Idempotent and fast on a second run: every
# step is skipped when its output already exists.
#
# Usage: deploy/lab/setup.sh [CACHE_DIR]     (default: <repo>/.cache/lab)
# Prints the path of the prepared kernel directory on its last line (standard
# output). On standard error it prints one line per step it runs (nothing
# when there is nothing to do); what apt-get, dpkg, depmod and mkbase.sh say
# goes to CACHE_DIR/setup.log, whose last lines are shown if a step fails.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${1:-$repo/.cache/lab}
mkdir -p "$cache"
logfile=$cache/setup.log
# The log as a person would type it: relative to the repository when inside.
shown=${logfile#"$repo"/}

say() { echo "lab-setup: $*" >&2; }

# logged DESCRIPTION COMMAND...: runs COMMAND with its output appended to
# the log and returns its status.
started=0
logged() {
	local what=$1
	shift
	if [ "$started" = 0 ]; then
		printf '\n=== %s: deploy/lab/setup.sh %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "$cache" >>"$logfile"
		started=1
	fi
	printf -- '--- %s\n$ %s\n' "$what" "$*" >>"$logfile"
	"$@" >>"$logfile" 2>&1 </dev/null
}

# step DESCRIPTION COMMAND...: says what it does on one line, runs COMMAND
# with its output in the log, and on failure shows the log's tail and exits
# with COMMAND's status.
step() {
	say "$1 (output in $shown)"
	local rc=0
	logged "$@" || rc=$?
	if [ "$rc" != 0 ]; then
		say "FAILED: $1 (exit $rc); the last lines of $shown:"
		tail -n 25 "$logfile" | sed 's/^/    /' >&2
		exit "$rc"
	fi
}

# Debian packages the lab uses on the host. kmod gives depmod/modprobe for
# the guest tree; cpio packs the initramfs; keepalived is the baseline the
# scenarios compare with (copied into the guest, never run on the host: its
# unit starts only with an /etc/keepalived/keepalived.conf).
pkgs=(qemu-system-x86 busybox-static ipvsadm nftables iproute2 kmod cpio keepalived)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
apt_updated=0
apt_update() {
	if [ "$apt_updated" = 0 ]; then
		step "apt-get update" apt-get update -q
		apt_updated=1
	fi
}
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		say "missing packages ${missing[*]}; run as root or: apt-get install ${missing[*]}"
		exit 1
	fi
	apt_update
	step "apt-get install ${missing[*]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

# The guest kernel: the image package the linux-image-amd64 metapackage
# currently depends on, unpacked (not installed) into the cache.
kernel_pkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}'; }
kpkg=$(kernel_pkg)
if [ -z "$kpkg" ]; then
	apt_update
	kpkg=$(kernel_pkg)
fi
if [ -z "$kpkg" ]; then
	say "cannot resolve linux-image-amd64 to a kernel package; check /etc/apt/sources.list"
	exit 1
fi
kdir=$cache/kernel/$kpkg
if [ ! -f "$kdir/.done" ]; then
	rm -rf "$kdir"
	mkdir -p "$kdir/dl"
	download() { (cd "$kdir/dl" && apt-get download "$kpkg"); }
	say "download $kpkg (output in $shown)"
	if ! logged "download $kpkg" download; then
		# An old package list may name a kernel the mirror has dropped.
		apt_update
		step "download $kpkg again" download
	fi
	debs=("$kdir"/dl/*.deb)
	step "unpack $kpkg" dpkg-deb -x "${debs[0]}" "$kdir/root"
	rm -rf "$kdir/dl"
	kver=$(ls "$kdir/root/lib/modules")
	step "depmod $kver" depmod -b "$kdir/root" "$kver"
	ln -sf "root/boot/vmlinuz-$kver" "$kdir/vmlinuz"
	echo "$kver" >"$kdir/version"
	touch "$kdir/.done"
fi
kver=$(cat "$kdir/version")

# The base initramfs: everything but the project's own binaries, which the Go
# lab API appends per run as a second cpio archive.
base=$kdir/base.cpio
stamp=$kdir/base.stamp
want=$(cat "$here/mkbase.sh" "$here/init" | sha256sum | cut -c1-16)
if [ ! -f "$base" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
	step "build the base initramfs for $kver" "$here/mkbase.sh" "$kdir/root" "$kver" "$base.tmp"
	mv "$base.tmp" "$base"
	echo "$want" >"$stamp"
fi
echo "$kdir"
