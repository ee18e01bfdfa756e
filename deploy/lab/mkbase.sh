#!/bin/bash
# Builds the lab's base initramfs: busybox, Debian's ip/tc/ipvsadm/nft with
# their shared libraries, the kernel module chain the scenarios load, and
# /init. Called by setup.sh; the project's own binaries are appended per run.
#
# Usage: mkbase.sh KERNEL_ROOT KERNEL_VERSION OUT.cpio
set -euo pipefail

kroot=$(cd "$1" && pwd)
kver=$2
out=$3
here=$(cd "$(dirname "$0")" && pwd)

tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir -p "$tree"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,proc,sys,dev,tmp,run,mnt/host,etc,root,var/run}

# busybox provides the shell and coreutils; Debian's iproute2 is installed
# as /usr/sbin/ip, and busybox's own ip applet is left out because it has no
# "netns" and would shadow the real one.
cp /bin/busybox "$tree/bin/busybox"
for applet in $(/bin/busybox --list); do
	case $applet in
	ip | tc | bridge | busybox) continue ;;
	esac
	[ -e "$tree/bin/$applet" ] || ln -s busybox "$tree/bin/$applet"
done
# The kernel loads modules on demand (an nftables expression, say) through
# /sbin/modprobe; without it such requests fail with ENOENT.
ln -s /bin/busybox "$tree/sbin/modprobe"

copy_with_libs() {
	local bin=$1 dest=$2
	mkdir -p "$tree$(dirname "$dest")"
	cp -L "$bin" "$tree$dest"
	ldd "$bin" | awk '/=>/ {print $3} /ld-linux/ {print $1}' | while read -r lib; do
		[ -n "$lib" ] && [ -e "$lib" ] || continue
		mkdir -p "$tree$(dirname "$lib")"
		cp -Ln "$lib" "$tree$lib"
	done
}
copy_with_libs /usr/bin/ip /usr/sbin/ip
copy_with_libs /usr/sbin/tc /usr/sbin/tc
copy_with_libs /usr/sbin/bridge /usr/sbin/bridge
copy_with_libs /usr/sbin/ipvsadm /usr/sbin/ipvsadm
copy_with_libs /usr/sbin/nft /usr/sbin/nft
copy_with_libs /usr/sbin/keepalived /usr/sbin/keepalived
# tc's netem reads its delay distributions from here.
if [ -d /usr/lib/x86_64-linux-gnu/tc ]; then
	mkdir -p "$tree/usr/lib/x86_64-linux-gnu"
	cp -r /usr/lib/x86_64-linux-gnu/tc "$tree/usr/lib/x86_64-linux-gnu/"
fi
# nft resolves protocol and service names through these.
cp /etc/protocols /etc/services "$tree/etc/" 2>/dev/null || true
echo "root:x:0:0:root:/root:/bin/sh" >"$tree/etc/passwd"
echo "root:x:0:" >"$tree/etc/group"
echo "127.0.0.1 localhost" >"$tree/etc/hosts"

# Only the module chain the scenarios need, with everything it depends on;
# the whole module tree would make every boot slower.
modules=(
	crc32c_generic
	ip_vs ip_vs_rr ip_vs_wrr ip_vs_wlc ip_vs_lc ip_vs_sh ip_vs_mh ip_vs_ftp
	nf_conntrack nf_defrag_ipv4 nf_defrag_ipv6 nf_nat
	nf_tables nft_hash nft_ct nft_numgen nft_objref nft_chain_nat nft_nat nft_masq nft_redir nft_fib_inet nft_fib_ipv4 nft_fib_ipv6 nft_reject_inet nft_limit nft_log nft_quota nft_connlimit nft_socket
	veth dummy bridge ipip ip6_tunnel sch_netem
	9p 9pnet_virtio virtio_pci
)
mkdir -p "$tree/lib/modules/$kver"
for m in "${modules[@]}"; do
	modprobe -d "$kroot" -S "$kver" --show-depends "$m" 2>/dev/null | awk '$1 == "insmod" {print $2}' || true
done | sort -u | while read -r ko; do
	rel=${ko#"$kroot"}
	mkdir -p "$tree$(dirname "$rel")"
	cp "$ko" "$tree$rel"
done
for f in modules.order modules.builtin modules.builtin.modinfo; do
	[ -f "$kroot/lib/modules/$kver/$f" ] && cp "$kroot/lib/modules/$kver/$f" "$tree/lib/modules/$kver/"
done
depmod -b "$tree" "$kver"
printf '%s\n' "${modules[@]}" >"$tree/etc/lab-modules"

install -m 0755 "$here/init" "$tree/init"

(cd "$tree" && find . -print0 | cpio --null -o -H newc --quiet) >"$out"
echo "base initramfs: $(du -h "$out" | cut -f1), $(find "$tree/lib/modules" -name '*.ko' | wc -l) modules"
