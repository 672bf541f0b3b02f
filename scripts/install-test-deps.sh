#!/usr/bin/env bash
# Installs the Debian packages the real tests need, and nothing when they
# are all there (so it is cheap to run before every test run):
#   openssh-server    sshd for guesttest's throwaway guests
#   qemu-guest-agent  qemu-ga, the real agent those guests run
#   chromium          the console's browser tests
#   qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-daemon-driver-qemu
#   libvirt-clients debootstrap
#                     real VMs (internal/vmtest): libvirtd driving QEMU, and
#                     scripts/vm/build-image.sh's guest image
#   openipmi ipmitool ipmi_sim, a real IPMI 2.0 (lanplus) BMC on loopback
#                     whose chassis commands run the test's own hook
#                     (internal/ipmitest), and ipmitool as a second client
#   libguestfs-tools golang-guestfs-dev
#                     disk resets (cmd/fleetpass-diskreset): libguestfs, its
#                     headers for the cgo build, and its appliance's packages;
#                     the appliance kernel is extracted below
#   curl openssl      the signed-request examples of docs/examples, run by
#                     the server tests
#   postgresql        PostgreSQL 15+: the store's conformance suite and the
#                     server and CLI suites on PostgreSQL (internal/pgtest
#                     runs throwaway clusters of its own)
# The system's sshd is not started: guesttest runs sshd of its own, inside
# each guest. Nor are libvirtd and virtlogd: vmtest starts them when a test
# needs them. Nor is the system's PostgreSQL cluster: pgtest starts its own.
# --no-install-recommends leaves out dnsmasq, so libvirt's
# default NAT network is never set up. Needs root (or sudo).
set -euo pipefail

packages=(openssh-server qemu-guest-agent chromium
	qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-daemon-driver-qemu
	libvirt-clients debootstrap
	openipmi ipmitool
	libguestfs-tools golang-guestfs-dev
	curl openssl
	postgresql)

sudo=()
if [[ $(id -u) -ne 0 ]]; then
	if ! command -v sudo >/dev/null; then
		echo "install-test-deps: run as root (or install sudo)" >&2
		exit 1
	fi
	sudo=(sudo)
fi

missing=()
for p in "${packages[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	if [[ $status != installed ]]; then
		missing+=("$p")
	fi
done

if ((${#missing[@]})); then
	echo "install-test-deps: installing ${missing[*]}" >&2
	# Keep package scripts from starting services (openssh-server's
	# postinst would start the system's sshd on port 22, libvirt's would
	# start libvirtd). Debian's policy-rc.d protocol: exit status 101
	# means "action forbidden".
	policy=/usr/sbin/policy-rc.d
	if [[ ! -e $policy ]]; then
		trap '"${sudo[@]}" rm -f "$policy"' EXIT
		printf '#!/bin/sh\n# Written by install-test-deps.sh for the duration of an install.\nexit 101\n' |
			"${sudo[@]}" tee "$policy" >/dev/null
		"${sudo[@]}" chmod 0755 "$policy"
	fi
	export DEBIAN_FRONTEND=noninteractive
	"${sudo[@]}" apt-get update -qq
	"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# sshd refuses to start without its privilege separation directory, which
# systemd's tmpfiles would create on a booted system. (guesttest's guests
# have a private /run of their own and make it there.)
if [[ ! -d /run/sshd ]]; then
	"${sudo[@]}" mkdir -p -m 0755 /run/sshd
fi

# libguestfs's appliance needs a kernel and its modules, which a machine
# booted from some other kernel (a CI runner, a cloud VM) lacks: extract
# Debian's, cached in /var/cache/fleetpass/guestfs (about 10 s the first
# time, nothing later). The tests read its output for SUPERMIN_KERNEL and
# its siblings.
"${sudo[@]}" /bin/bash "$(dirname "$0")/vm/guestfs-kernel.sh" >/dev/null
