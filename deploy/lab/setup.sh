#!/bin/bash
# Installs what the lab needs on a Debian machine and prepares a cached guest
# kernel plus a base initramfs. Idempotent and fast on a second run: every
# step is skipped when its output already exists.
#
# Usage: deploy/lab/setup.sh [CACHE_DIR]     (default: <repo>/.cache/lab)
# Prints the path of the prepared kernel directory on its last line.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${1:-$repo/.cache/lab}
mkdir -p "$cache"

log() { echo "lab-setup: $*" >&2; }

# Debian packages the lab uses on the host. kmod gives depmod/modprobe for
# the guest tree; cpio packs the initramfs.
pkgs=(qemu-system-x86 busybox-static ipvsadm nftables iproute2 kmod cpio)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
apt_updated=0
apt_update() {
	if [ "$apt_updated" = 0 ]; then
		log "apt-get update"
		apt-get update -qq >&2
		apt_updated=1
	fi
}
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "lab-setup: missing packages ${missing[*]}; run as root or: apt-get install ${missing[*]}" >&2
		exit 1
	fi
	apt_update
	log "apt-get install ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi

# The guest kernel: the image package the linux-image-amd64 metapackage
# currently depends on, unpacked (not installed) into the cache.
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
if [ -z "$kpkg" ]; then
	apt_update
	kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
fi
if [ -z "$kpkg" ]; then
	echo "lab-setup: cannot resolve linux-image-amd64 to a kernel package; check /etc/apt/sources.list" >&2
	exit 1
fi
kdir=$cache/kernel/$kpkg
if [ ! -f "$kdir/.done" ]; then
	log "download $kpkg"
	rm -rf "$kdir"
	mkdir -p "$kdir/dl"
	(cd "$kdir/dl" && apt-get download "$kpkg" >&2 2>/dev/null) || {
		apt_update
		(cd "$kdir/dl" && apt-get download "$kpkg" >&2)
	}
	dpkg-deb -x "$kdir"/dl/*.deb "$kdir/root"
	rm -rf "$kdir/dl"
	kver=$(ls "$kdir/root/lib/modules")
	depmod -b "$kdir/root" "$kver"
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
	log "build base initramfs for $kver"
	"$here/mkbase.sh" "$kdir/root" "$kver" "$base.tmp" >&2
	mv "$base.tmp" "$base"
	echo "$want" >"$stamp"
fi
echo "$kdir"
