#!/usr/bin/env bash
# Gives libguestfs's appliance a kernel on a machine that boots some other
# kernel (a VM of a cloud, a CI runner, a container): supermin builds the
# appliance from the host's packages, and needs a Debian kernel and its
# modules, which such a machine does not have. The kernel package is
# extracted, not installed (no initramfs build, nothing in /boot), like the
# guest kernel in build-image.sh.
#
# Usage: guestfs-kernel.sh [CACHE]   (default /var/cache/fleetpass/guestfs)
#
# Prints the environment libguestfs needs, one NAME=VALUE a line:
#   SUPERMIN_KERNEL, SUPERMIN_MODULES, SUPERMIN_KERNEL_VERSION  the kernel
#   LIBGUESTFS_CACHEDIR                                          the built appliance
#                                                                (about 700 MB), kept
# A machine with a kernel of its own in /boot and /lib/modules prints only
# LIBGUESTFS_CACHEDIR. The extraction is cached under CACHE/kernel-VERSION
# and costs nothing the second time. Needs root (or write access to CACHE)
# and the machine's Debian mirror the first time.
set -euo pipefail

CACHE=${1:-/var/cache/fleetpass/guestfs}
mkdir -p "$CACHE/appliance"
log() { echo "guestfs-kernel: $*" >&2; }

# supermin lstat()s /lib/modules even when SUPERMIN_MODULES points
# elsewhere.
mkdir -p /lib/modules

own=$(uname -r)
if [[ -e /boot/vmlinuz-$own && -d /lib/modules/$own/kernel ]]; then
	echo "LIBGUESTFS_CACHEDIR=$CACHE/appliance"
	exit 0
fi

exec 9>"$CACHE/.lock"
flock 9

# (awk reads all its input: an early exit could SIGPIPE apt-cache, which
# pipefail would turn into a failure.)
kernel_pkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ && !n++ {print $2}'; }
KPKG=$(kernel_pkg)
if [[ -z $KPKG ]]; then
	apt-get update -qq
	KPKG=$(kernel_pkg)
fi
KVER=${KPKG#linux-image-}
DIR=$CACHE/kernel-$KVER
if [[ ! -e $DIR/lib/modules/$KVER/modules.dep ]]; then
	log "extracting $KPKG into $DIR"
	tmp=$(mktemp -d "$CACHE/.tmp-kernel.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	(
		cd "$tmp"
		if ! apt-get download "$KPKG" >/dev/null 2>&1; then
			apt-get update -qq
			apt-get download "$KPKG" >/dev/null
		fi
		mkdir root
		dpkg-deb -x "$KPKG"_*.deb root
		rm -f "$KPKG"_*.deb
		# The .deb carries no modules.dep.
		depmod -b root "$KVER"
	)
	rm -rf "$DIR"
	mv "$tmp/root" "$DIR"
	# Other kernel versions' extractions (and their appliances) are stale.
	for old in "$CACHE"/kernel-*; do
		[[ $old == "$DIR" ]] || rm -rf "$old"
	done
fi
echo "SUPERMIN_KERNEL=$DIR/boot/vmlinuz-$KVER"
echo "SUPERMIN_MODULES=$DIR/lib/modules/$KVER"
echo "SUPERMIN_KERNEL_VERSION=$KVER"
echo "LIBGUESTFS_CACHEDIR=$CACHE/appliance"
