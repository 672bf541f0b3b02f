// Package vmtest boots real virtual machines for tests: a small Debian
// guest (busybox init, sshd, qemu-guest-agent, acpid) under a real libvirtd
// driving QEMU. The test machines have no /dev/kvm, so the domains are
// type='qemu' (TCG software emulation); a boot to a ready guest agent takes
// about 9 s on an idle 2-core machine.
//
// # Setup
//
// Libvirtd skips the test under `go test -short`. Otherwise it fails (it
// does not skip) when the process is not root or when the packages are
// missing; scripts/install-test-deps.sh installs them. It starts virtlogd
// and libvirtd (pid files /run/virtlogd.pid and /run/libvirtd.pid, no
// --listen) unless they run already, under the lock file
// /run/fleetpass-vmtest.lock, because `go test ./...` runs several test
// binaries at once. The daemons are left running when the tests end: other
// test binaries may be using them, and a running libvirtd costs little.
// Libvirtd also removes domains named fpt-* (and their files) whose owning
// test process is gone, left behind by crashed runs.
//
// Image builds the guest with scripts/vm/build-image.sh, or reuses it: the
// kernel, initrd and rootfs image are cached in $FLEETPASS_VM_CACHE
// (default /var/cache/fleetpass/vm) under a key derived from the script's
// hash, so editing the script rebuilds. The first build takes one to two
// minutes and needs the machine's Debian mirror; later runs take
// milliseconds. Entries for other versions of the script are removed by
// the next build once unused for a week.
//
// # VMs
//
// DefineVM defines a persistent domain (not started) with a throwaway qcow2
// overlay over the cached rootfs, a serial console logged to a file, the
// org.qemu.guest_agent.0 channel (unless VMOptions.NoAgentChannel), SSH
// forwarded from a free port on 127.0.0.1, and, with VMOptions.Agent, a
// read-only seed disk that makes the guest install and enrol
// fleetpass-agent at boot. The test's cleanup destroys and undefines the
// domain and removes its files.
//
// The guest can reach the host's loopback interface at 10.0.2.2 (GuestURL),
// so a fleetpass server listening on 127.0.0.1 in the test is reachable
// from the agent in the guest.
//
// A VM's methods start, destroy and observe it (Start, Destroy, State,
// WaitState, AgentPing, WaitAgent, WaitSSH), set passwords through the
// guest agent (SetPassword, via libvirt's API so that no password appears
// in any process's argv) and check them the way a user would (SSH,
// CanLogin, ErrAuthFailed). IgnoreShutdown makes the guest ignore ACPI and agent
// shutdown requests until its next boot. Every wait takes a timeout and
// fails the test with the tail of the serial console on expiry.
//
// Users root and ciuser exist in the guest with locked passwords, so only a
// password set by the test lets anyone log in.
//
// For the test's own libvirt calls (shutdown modes, events), Connect gives
// a go-libvirt client and VM.Domain names the domain. Restart restarts
// libvirtd under running domains, for tests of a daemon restart in the
// middle of an operation; it affects every test binary sharing libvirtd.
// DebugQEMULog makes libvirtd log its QEMU driver (guest agent commands
// included) at debug level to a file until the test stops it, then
// restores libvirtd's previous log filters and outputs, so a test can look
// for what crossed libvirtd.
//
// Note that libvirt's agent-mode shutdown of a guest that ignores it
// (IgnoreShutdown) blocks for 60 s, waiting for the guest to stop, and then
// fails with "Guest agent is not responding"; the ACPI mode returns at once.
package vmtest
