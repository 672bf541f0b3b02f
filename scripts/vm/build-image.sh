#!/usr/bin/env bash
# Builds the small Debian (bookworm) guest that internal/vmtest boots under
# libvirt + QEMU (TCG: the test machines have no /dev/kvm):
#
#   OUT/vmlinuz     Debian's stock kernel, extracted from its .deb
#   OUT/initrd.img  busybox + the few virtio/ext4 modules; mounts /dev/vda
#   OUT/rootfs.img  raw ext4: debootstrap minbase + qemu-guest-agent, sshd,
#                   acpid, busybox (as init)
#
# Usage: build-image.sh OUT      (needs root, debootstrap and network access
# to the machine's Debian mirror; takes one to two minutes, most of it
# debootstrap)
#
# internal/vmtest runs this script and caches OUT under a key derived from
# this file's hash, so any edit here rebuilds the image on the next test run.
#
# Why busybox init and not systemd: under TCG a systemd boot takes minutes;
# this guest is ready (sshd + qemu-ga) about 8 s after QEMU starts.
#
# The guest, at boot (/etc/rc.vm):
#   - mounts the optional second disk /dev/vdb (the per-VM "seed", made by
#     vmtest with mkfs.ext4 -d) read-only at /seed, and, when it carries
#     fleetpass-agent, installs it; an inittab entry then runs
#     /usr/local/sbin/fleetpass-agent-wrapper, which enrols once and runs it;
#   - prints "VM-READY <uptime> boot_id=<id>" on the serial console.
# A test can make it ignore shutdown requests (ACPI power button and
# qemu-ga's guest-shutdown) by creating /run/ignore-shutdown; /run is a
# tmpfs, so the next boot forgets it.
set -euo pipefail

OUT=${1:?usage: build-image.sh OUT}
# The machine's own apt source: the test machines reach only their mirror.
MIRROR=${MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${OUT%/}.work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

log() { echo "build-image: $*" >&2; }

# 1. Guest userland.
log "debootstrap $SUITE from $MIRROR"
R=$WORK/rootfs
debootstrap --variant=minbase \
	--include=qemu-guest-agent,openssh-server,iproute2,busybox,acpid \
	"$SUITE" "$R" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
	tail -n 30 "$WORK/debootstrap.log" >&2
	exit 1
}

# 2. Kernel and a static busybox for the initrd: extracted, not installed.
log "kernel and busybox-static"
mkdir -p kpkg && cd kpkg
# The kernel package linux-image-amd64 points to today, e.g.
# linux-image-6.1.0-56-amd64.
# (awk reads all its input: an early exit could SIGPIPE apt-cache, which
# pipefail would turn into a failure.)
kernel_pkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ && !n++ {print $2}'; }
KPKG=$(kernel_pkg)
if [[ -z $KPKG ]] || ! apt-get download "$KPKG" busybox-static >/dev/null 2>&1; then
	# The package lists are missing or stale on a fresh machine.
	apt-get update -qq
	KPKG=$(kernel_pkg)
	apt-get download "$KPKG" busybox-static >/dev/null
fi
KVER=${KPKG#linux-image-}
dpkg-deb -x "$KPKG"_*.deb kernel
dpkg-deb -x busybox-static_*.deb bb
BB=$WORK/kpkg/bb/bin/busybox
cd "$WORK"
cp "kpkg/kernel/boot/vmlinuz-$KVER" "$OUT/vmlinuz"

# 3. initrd: Debian builds virtio and ext4 as modules, so load them, wait for
# the root disk and switch_root into busybox init on it. modules.dep lines
# list a module's dependencies, so copying every file on its line is enough.
log "initrd for $KVER"
MODS="crc32c_generic virtio_pci virtio_blk ext4 virtio_net virtio_console button evdev virtio-rng"
SRC=kpkg/kernel/lib/modules/$KVER
I=$WORK/initrd
mkdir -p "$I"/{bin,proc,sys,dev,newroot} "$I/lib/modules/$KVER"
cp "$BB" "$I/bin/busybox"
[[ -f $SRC/modules.dep ]] || "$BB" depmod -b "$WORK/kpkg/kernel" "$KVER"
for m in $MODS; do
	for f in $(grep -E "/$m\.ko(\.xz)?:" "$SRC/modules.dep" | tr -d ':'); do
		mkdir -p "$I/lib/modules/$KVER/$(dirname "$f")"
		cp "$SRC/$f" "$I/lib/modules/$KVER/$f"
	done
done
"$BB" depmod -b "$I" "$KVER"
cat >"$I/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $MODS; do modprobe \$m; done
i=0; while [ ! -b /dev/vda ] && [ \$i -lt 100 ]; do sleep 0.1; i=\$((i+1)); done
mount -t ext4 -o rw /dev/vda /newroot || { echo "initrd: cannot mount /dev/vda"; exec sh; }
umount /proc /sys; mount --move /dev /newroot/dev
exec switch_root /newroot /bin/busybox init
EOF
chmod 0755 "$I/init"
(cd "$I" && find . | "$BB" cpio -o -H newc 2>/dev/null | gzip -1) >"$OUT/initrd.img"

# 4. Guest configuration.
log "guest configuration"
cat >"$R/etc/inittab" <<'EOF'
::sysinit:/etc/rc.vm
::respawn:/usr/local/sbin/qemu-ga-wrapper
::respawn:/usr/local/sbin/fleetpass-agent-wrapper
ttyS0::respawn:/bin/busybox getty -L 115200 ttyS0 vt100
::shutdown:/etc/rc.vm-stop
EOF

cat >"$R/etc/rc.vm" <<'EOF'
#!/bin/sh
export PATH=/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc; mount -t sysfs sys /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /dev/shm
mount -o remount,rw /
# udev would normally make the virtio-serial names qemu-ga opens.
mkdir -p /dev/virtio-ports
for p in /sys/class/virtio-ports/*; do
	n=$(cat "$p/name" 2>/dev/null) && [ -n "$n" ] && ln -sf "../${p##*/}" "/dev/virtio-ports/$n"
done
# The per-VM seed disk (optional): read-only, so the guest cannot alter it.
hostname vmguest
if [ -b /dev/vdb ]; then
	mkdir -p /seed
	if mount -t ext4 -o ro /dev/vdb /seed; then
		[ -s /seed/name ] && hostname "$(cat /seed/name)"
		if [ -f /seed/fleetpass-agent ]; then
			cp /seed/fleetpass-agent /usr/local/sbin/fleetpass-agent.new &&
				chmod 0755 /usr/local/sbin/fleetpass-agent.new &&
				mv /usr/local/sbin/fleetpass-agent.new /usr/local/sbin/fleetpass-agent
		fi
	fi
fi
# User-mode (slirp) network: the guest is 10.0.2.15 and the host's loopback
# is 10.0.2.2 (vmtest passes restrict=off for that).
ip link set lo up; ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
mkdir -p /run/sshd; /usr/sbin/sshd
/usr/sbin/acpid
echo "VM-READY $(cut -d' ' -f1 /proc/uptime) boot_id=$(cat /proc/sys/kernel/random/boot_id)" >/dev/ttyS0
EOF

cat >"$R/etc/rc.vm-stop" <<'EOF'
#!/bin/sh
echo "VM-STOPPING" >/dev/ttyS0
killall fleetpass-agent sshd acpid 2>/dev/null
# Read-only before poweroff, so what the agent changed (passwords) survives.
sync; mount -o remount,ro /; sync
EOF

# Respawned by init. A domain defined without the agent channel has no port:
# idle then, rather than have init restart a failing qemu-ga in a loop.
cat >"$R/usr/local/sbin/qemu-ga-wrapper" <<'EOF'
#!/bin/sh
P=/dev/virtio-ports/org.qemu.guest_agent.0
[ -e "$P" ] || exec sleep infinity
exec /usr/sbin/qemu-ga -m virtio-serial -p "$P"
EOF

# Respawned by init. Without an agent it idles, so init does not spin. The
# token is read from the seed's file, never passed in argv (every process
# can read argv). Enrolment happens once: the state file marks it done.
cat >"$R/usr/local/sbin/fleetpass-agent-wrapper" <<'EOF'
#!/bin/sh
export PATH=/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
A=/usr/local/sbin/fleetpass-agent
LOG=/var/log/fleetpass-agent.log
[ -x "$A" ] && [ -f /seed/server ] || exec sleep infinity
if [ ! -f /var/lib/fleetpass-agent/state.json ]; then
	echo "FLEETPASS-AGENT enroll $(cat /seed/server)" | tee -a "$LOG" >/dev/ttyS0
	if ! "$A" enroll --server "$(cat /seed/server)" --token-file /seed/token \
		--tls-fingerprint "$(cat /seed/fingerprint 2>/dev/null)" \
		--hostname "$(cat /seed/name)" >>"$LOG" 2>&1; then
		echo "FLEETPASS-AGENT enroll failed, see $LOG" | tee -a "$LOG" >/dev/ttyS0
		sleep 5 # init respawns us: retry, but not in a tight loop
		exit 1
	fi
fi
echo "FLEETPASS-AGENT run" | tee -a "$LOG" >/dev/ttyS0
exec "$A" run >>"$LOG" 2>&1
EOF

# Shutdown paths. qemu-ga's guest-shutdown execs "/sbin/shutdown -h -P +0"
# and wants exit 0; acpid runs powerbtn on the ACPI power button. Both obey
# the test switch /run/ignore-shutdown.
cat >"$R/sbin/shutdown" <<'EOF'
#!/bin/sh
if [ -e /run/ignore-shutdown ]; then
	echo "VM-IGNORED-SHUTDOWN shutdown $*" >/dev/ttyS0
	exit 0
fi
case "$*" in
*-r*) (sleep 1; /bin/busybox reboot) & ;;
*) (sleep 1; /bin/busybox poweroff) & ;;
esac
exit 0
EOF
mkdir -p "$R/etc/acpi/events"
cat >"$R/etc/acpi/powerbtn" <<'EOF'
#!/bin/sh
if [ -e /run/ignore-shutdown ]; then
	echo "VM-IGNORED-SHUTDOWN acpi" >/dev/ttyS0
	exit 0
fi
exec /bin/busybox poweroff
EOF
printf 'event=button/power.*\naction=/etc/acpi/powerbtn\n' >"$R/etc/acpi/events/powerbtn"
ln -sf /bin/busybox "$R/sbin/poweroff"
ln -sf /bin/busybox "$R/sbin/reboot"
ln -sf /bin/busybox "$R/sbin/halt"
chmod 0755 "$R/etc/rc.vm" "$R/etc/rc.vm-stop" "$R/sbin/shutdown" "$R/etc/acpi/powerbtn" \
	"$R/usr/local/sbin/fleetpass-agent-wrapper" "$R/usr/local/sbin/qemu-ga-wrapper"

printf 'PermitRootLogin yes\nPasswordAuthentication yes\nUseDNS no\n' >"$R/etc/ssh/sshd_config.d/vmtest.conf"
echo vmguest >"$R/etc/hostname"
echo '/dev/vda / ext4 rw 0 1' >"$R/etc/fstab"
# Both users start locked ("*"): only a password set by the test (through
# qemu-ga or fleetpass) lets anyone in.
chroot "$R" /usr/sbin/useradd -m -s /bin/bash ciuser
chroot "$R" /usr/sbin/usermod -p '*' root
chroot "$R" /usr/sbin/usermod -p '*' ciuser
rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/* \
	"$R"/usr/share/doc/* "$R"/usr/share/man/* "$R"/usr/share/locale/*

# 5. The ext4 image straight from the tree: no mount or loop device needed.
log "rootfs.img"
rm -f "$OUT/rootfs.img"
mkfs.ext4 -q -F -L root -d "$R" "$OUT/rootfs.img" 512M >/dev/null
# QEMU runs as libvirt-qemu and opens these read-only.
chmod 0644 "$OUT"/vmlinuz "$OUT"/initrd.img "$OUT"/rootfs.img
log "done: $(du -sh --apparent-size "$OUT" | cut -f1) apparent in $OUT"
