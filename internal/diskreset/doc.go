// Package diskreset sets a Linux guest's password with no agent in the
// guest, by editing its shut-off disk: the way OpenStack's libvirt driver
// once injected passwords and `virt-customize --root-password` does.
//
// The editing itself needs libguestfs (cgo and a shared library), which the
// fleetpass server must not link: it lives in the helper binary
// cmd/fleetpass-diskreset, which the server runs once per edit (Runner). The
// two talk over the helper's stdin and stdout: one Request line of JSON,
// then the password's bytes, and one Result line back. The password is
// never an argument, an environment variable or a file: it reaches the
// helper through a pipe, is hashed in memory there, and only its hash
// reaches the disk, through libguestfs's own channel to its appliance.
//
// This package holds what both ends share and what needs no cgo: the wire
// format, the Runner, and the rules of the edit (which hash method the
// guest uses, how its /etc/shadow line is replaced), which are tested and
// fuzzed here without libguestfs.
package diskreset
