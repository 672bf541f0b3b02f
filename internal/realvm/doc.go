// Package realvm proves fleetpass on real virtual machines: the real
// `fleetpass serve` binary manages a real libvirtd (qemu:///system) that
// boots small Debian guests under QEMU in software emulation, with the
// QEMU guest agent, sshd and the fleetpass agent inside. Every reset is
// checked by SSH logins with the new password and the old one.
//
// The package holds tests only. They need root and the packages that
// scripts/install-test-deps.sh installs; `go test -short` skips them. The
// guest image is built once and cached (see internal/vmtest).
package realvm
